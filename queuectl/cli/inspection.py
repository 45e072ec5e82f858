"""Reading the spool: `status`, `list`, `show`, `logs` (and `follow`), and the tables they print.

Nothing here changes a job; a listing cut by --limit says so on stderr.
Human tables show local time as `ls -l` does (--utc for UTC); --json keeps
the job files' ISO-8601 UTC.
"""

from __future__ import annotations

import os
import shutil
import sys
import time

import click

from ..core.job import FINISHED, STATES, iso, parse_time, shorten
from ..core.units import format_duration
from . import Command, no_worker_note, open_spool, print_json
from .ids import LIST_STATES, SORTS, page, shown_state, waiting_on

DEFAULT_LIMIT = 50  # rows a listing shows unless told otherwise
SIX_MONTHS = 182 * 86400  # ls -l shows the year instead of the time for files older than this
MIN_COMMAND = 20  # a command column narrower than this is not worth cutting the others for


def ago(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return duration(time.time() - timestamp)


def duration(seconds: float) -> str:
    if seconds < 0:
        return "in " + duration(-seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.1f}s"


def _seconds(value: object) -> float | None:
    """An ISO time of a job file as seconds since the epoch; None when absent or unreadable."""
    if not isinstance(value, str):
        return None
    try:
        return parse_time(value)
    except Exception:
        return None


def clock(value: object, utc: bool = False, now: float | None = None) -> str:
    """`Dec  4 22:19` as `ls -l` shows a time (the year instead of the time when over six months away)."""
    stamp = value if isinstance(value, (int, float)) else _seconds(value)
    if stamp is None:
        return "-"
    moment = time.gmtime(stamp) if utc else time.localtime(stamp)
    recent = abs((now or time.time()) - stamp) < SIX_MONTHS
    return time.strftime("%b %e %H:%M" if recent else "%b %e  %Y", moment)


def countdown(seconds: float) -> str:
    """`59m`, `12s`: a wait in whole seconds (a countdown in tenths would only flicker)."""
    return format_duration(float(max(0, round(seconds))))


def state_text(spool, job: dict, now: float) -> str:
    """`completed`, `running`, `scheduled in 59m`, `retry in 12s`, `waiting`."""
    state = shown_state(spool, job, now)
    if state == "scheduled":
        due = _seconds(job.get("run_at"))
        return f"scheduled in {countdown(due - now)}" if due else state
    if state == "failed":
        due = _seconds(job.get("next_run_at"))
        return f"retry in {countdown(due - now)}" if due and due > now else "retry due"
    if state == "processing":
        if job.get("id") in suspended_ids(spool):
            return "suspended"
        report = job_progress(spool, job)
        return f"running {report[0]:.0f}%" if report else "running"
    return state


def suspended_ids(spool) -> set[str]:
    """The running jobs asked to stop (`suspend`); read once per command."""
    if spool.root not in _SUSPENDED:
        _SUSPENDED[spool.root] = spool.suspended()
    return _SUSPENDED[spool.root]


_SUSPENDED: dict[str, set[str]] = {}


def job_progress(spool, job: dict) -> tuple[float, float | None] | None:
    """A running job's latest percent and the seconds left at its rate so far (docs/guide/limits.md,
    "Progress"); None when it reports none."""
    from ..run import progress
    started = _seconds(job.get("started_at"))
    if job.get("state") != "processing" or started is None:
        return None
    found = progress.read(spool.root, str(job.get("id")), since=started)
    if found is None:
        return None
    percent, when = found
    return percent, progress.remaining(percent, when, first=(0.0, started))


def run_time(job: dict, now: float) -> str:
    if job.get("state") == "processing":
        started = _seconds(job.get("started_at"))
        return format_duration(max(0.0, now - started)) if started else "-"
    last = job.get("last_duration")
    return format_duration(float(last)) if isinstance(last, (int, float)) and not isinstance(last, bool) else "-"


def exit_text(job: dict) -> str:
    code = job.get("last_exit_code")
    if code is None:
        return "-" if not job.get("history") else "sig" if any(h.get("signal") for h in job["history"][-1:]) else "-"
    return str(code)


def output_width() -> int | None:
    """Columns a table may take: $COLUMNS, else the terminal's; None (no limit) when stdout is not a terminal."""
    if os.environ.get("COLUMNS", "").isdigit() or sys.stdout.isatty():
        return shutil.get_terminal_size().columns
    return None


def job_table(spool, jobs: list[dict], utc: bool = False) -> None:
    """ID, STATE, GROUP, ATT, EXIT, RUN, CREATED, COMMAND; the command takes the width that is left."""
    if not jobs:
        click.echo("no jobs")
        return
    now = time.time()
    rows = []
    for job in jobs:
        command = " ".join(str(job.get("command") or "-").split())
        waits = waiting_on(spool, job)
        if waits and shown_state(spool, job, now) == "waiting":
            command += "  (after " + ", ".join(f"{dep['id']}: {dep['state']}" for dep in waits) + ")"
        rows.append([str(job.get("id")), state_text(spool, job, now), str(job.get("group") or "-"),
                     str(job.get("attempts", 0)), exit_text(job), run_time(job, now),
                     clock(job.get("created_at"), utc, now), command])
    header = ["ID", "STATE", "GROUP", "ATT", "EXIT", "RUN", "CREATED (UTC)" if utc else "CREATED", "COMMAND"]
    widths = [max(len(header[i]), *(len(row[i]) for row in rows)) for i in range(7)]
    right = {3, 4, 5}
    used = sum(widths) + 2 * 7
    total = output_width()
    room = None if total is None else max(MIN_COMMAND, total - used)

    def line(cells: list[str]) -> str:
        parts = [cell.rjust(widths[i]) if i in right else cell.ljust(widths[i]) for i, cell in enumerate(cells[:7])]
        command = cells[7] if room is None else shorten(cells[7], room)
        return "  ".join([*parts, command])
    click.echo(line(header))
    for row in rows:
        click.echo(line(row))


# -- inspection --------------------------------------------------------------

@click.command(cls=Command)
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@click.pass_context
def status(ctx, as_json):
    """Counts per state, live workers and recent outcomes."""
    from ..stats import summary
    report = summary(open_spool(ctx))
    if as_json:
        print_json(report)
        return
    click.echo(f"spool       {report['spool']}")
    for state in STATES:
        extra = ""
        if state == "pending" and (report["scheduled"] or report["waiting"]):
            parts = [f"{report[kind]} {kind}" for kind in ("scheduled", "waiting") if report[kind]]
            extra = f"  ({', '.join(parts)})"
        click.echo(f"{state:<11} {report['counts'][state]}{extra}")
    click.echo(f"workers     {len(report['workers'])} live{worker_hosts(report['workers'])}")
    spool = open_spool(ctx)
    if report["counts"]["processing"]:
        for job in page(spool, ["processing"], limit=DEFAULT_LIMIT)[0]:
            click.echo(f"running     {job.get('id')}: {state_text(spool, job, time.time())}")
    if report["paused"]:
        click.echo("paused      yes: workers start nothing new ('queuectl resume')")
    for group in report["groups"]:
        limit = group["limit"] if group["limit"] is not None else "no limit"
        rate = f", rate {group['rate']} ({group['starts_in_window']} in window)" if group.get("rate") else ""
        click.echo(f"group {group['name']:<15} {group['running']} running, limit {limit}{rate}"
                   f"{', paused' if group['paused'] else ''}")
    for host in report.get("resources", []):
        for entry in host["resources"]:
            holders = ", ".join(f"{held['index']}: {held['job'] or held['worker']}" for held in entry["held"])
            click.echo(f"resource    {host['host']} {entry['name']}: {len(entry['held'])}/{entry['declared']} held"
                       f"{' (' + holders + ')' if holders else ''}")
    click.echo(f"oldest pending  {ago(report['oldest_pending'])}")
    next_at = report["next_scheduled"]
    click.echo(f"next scheduled  {iso(next_at) + ' (' + duration(next_at - time.time()) + ')' if next_at else '-'}")
    for entry in report.get("schedules", []):
        when = "paused" if entry["paused"] else entry["next_run"] or "-"
        click.echo(f"schedule        {entry['name']}: next run {when}")
    finished = report["recent_finished"]
    if finished:
        click.echo(f"success rate    {report['success_rate'] * 100:.0f}% of the last {finished} finished jobs, "
                   f"mean duration {duration(report['mean_duration'] or 0)}")
    else:
        click.echo("success rate    - (no finished jobs yet)")


def limit_options(command):
    """--limit N (0 for all) and --all, shared by the listings."""
    command = click.option("--all", "show_all", is_flag=True, help="Every job (the same as --limit 0).")(command)
    return click.option("--limit", "-n", type=click.IntRange(min=0), default=DEFAULT_LIMIT, show_default=True,
                        help="At most this many jobs, newest first; 0 for all.")(command)


def listing(ctx: click.Context, states: list[str] | None, limit: int, show_all: bool, noun: str,
            group: str | None = None, sort: str = "created") -> tuple[list[dict], str]:
    """A page of jobs, and the line that says rows were cut ("" when none were).

    The line goes to stderr after the rows, so `--json` keeps stdout one JSON document.
    """
    cap = None if show_all or limit == 0 else limit
    jobs, total = page(open_spool(ctx), states, limit=cap, group=group, sort=sort)
    if cap is None or total <= cap:
        return jobs, ""
    return jobs, f"queuectl: showing {len(jobs)} of {total} {noun}; --limit 0 for all"


def note(line: str) -> None:
    if line:
        click.echo(line, err=True)


def annotate(spool, job: dict) -> dict:
    """The job with `waiting_on` (the `after` jobs not completed yet) when it waits for any."""
    waits = waiting_on(spool, job)
    return {**job, "waiting_on": waits} if waits else job


@click.command("list", cls=Command)
@click.option("--state", "-s", "states", multiple=True, type=click.Choice(LIST_STATES),
              help="Only jobs in this state (repeatable). waiting, scheduled and held are pending jobs "
                   "that wait for others, for their time, or for a release.")
@click.option("--group", "-g", metavar="NAME", help="Only the jobs of this group.")
@click.option("--sort", type=click.Choice(SORTS), default="created", show_default=True,
              help="created: newest enqueued first; updated: latest changed first; id: by id; "
                   "priority: highest first.")
@limit_options
@click.option("--utc", is_flag=True, help="Times in UTC instead of local time.")
@click.option("--json", "as_json", is_flag=True, help="A JSON array of job objects (times in ISO-8601 UTC).")
@click.pass_context
def list_jobs(ctx, states, group, sort, limit, show_all, utc, as_json):
    """Jobs, newest first: id, state, group, attempts, exit code, run time, created, command.

    The command takes the terminal width the other columns leave ($COLUMNS
    wins; in a pipe it is never cut). When rows were cut by --limit, a line
    on stderr says how many jobs there are.
    """
    noun = f"{'/'.join(states)} jobs" if states else "jobs"
    jobs, cut = listing(ctx, list(states) or None, limit, show_all, noun, group=group, sort=sort)
    spool = open_spool(ctx)
    if as_json:
        print_json([annotate(spool, job) for job in jobs])
    else:
        job_table(spool, jobs, utc)
    note(cut)


SHOWN_FIRST = ("id", "state", "command", "group", "priority", "attempts", "max_retries", "created_at",
               "updated_at", "run_at", "next_run_at", "started_at", "finished_at", "last_duration",
               "last_exit_code", "last_error", "worker")
TIME_FIELDS = ("created_at", "updated_at", "run_at", "next_run_at", "started_at", "finished_at")


@click.command(cls=Command)
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="The job file as one JSON object (with `waiting_on`).")
@click.option("--utc", is_flag=True, help="Times in UTC instead of local time.")
@click.pass_context
def show(ctx, job_id, as_json, utc):
    """One job: its fields, then its history (one row per attempt). JOB_ID may be a unique prefix."""
    spool = open_spool(ctx)
    job = annotate(spool, spool.get(job_id))
    if as_json:
        print_json(job)
        return
    now = time.time()
    fields = [key for key in SHOWN_FIRST if job.get(key) not in (None, "", [], {})]
    fields += sorted(key for key in job if key not in SHOWN_FIRST and key != "history"
                     and job[key] not in (None, "", [], {}))
    width = max(len(key) for key in fields)
    for key in fields:
        value = job[key]
        if key == "state":
            text = state_text(spool, job, now)
            report = job_progress(spool, job)
            if report is not None and report[1] is not None:
                text += f", about {countdown(report[1])} left"
        elif key in TIME_FIELDS:
            text = f"{clock_full(value, utc)}  ({value})"
        elif key == "last_duration" and isinstance(value, (int, float)):
            text = format_duration(float(value))
        elif key == "waiting_on":
            text = ", ".join(f"{dep['id']} ({dep['state']})" for dep in value)
        elif isinstance(value, (dict, list)):
            text = " ".join(f"{k}={v}" for k, v in value.items()) if isinstance(value, dict) else \
                ", ".join(map(str, value))
        else:
            text = str(value)
        click.echo(f"{key:<{width}}  {text}")
    history = job.get("history") or []
    if not history:
        return
    click.echo("")
    click.echo(f"{'#':>3}  {'STARTED':<19}  {'RUN':>6}  {'EXIT':>4}  {'WORKER':<24}  ERROR")
    for entry in history:
        if "edited_at" in entry or "restarted_at" in entry:
            what = ("edited " + ", ".join(f"{key}" for key in entry.get("changed") or {})
                    if "edited_at" in entry else f"restarted in place (was {entry.get('from')})")
            when = entry.get("edited_at") or entry.get("restarted_at")
            click.echo(f"{'-':>3}  {clock_full(when, utc):<19}  {what}")
            continue
        started, finished = _seconds(entry.get("started_at")), _seconds(entry.get("finished_at"))
        took = format_duration(finished - started) if started and finished else "-"
        code = entry.get("exit_code")
        code_text = str(code) if code is not None else ("sig" + str(entry["signal"]) if entry.get("signal") else "-")
        click.echo(f"{entry.get('attempt', '-')!s:>3}  {clock_full(entry.get('started_at'), utc):<19}  "
                   f"{took:>6}  {code_text:>4}  {str(entry.get('worker') or '-'):<24}  "
                   f"{shorten(entry.get('error') or '-', 60)}")


def clock_full(value: object, utc: bool = False) -> str:
    stamp = _seconds(value)
    if stamp is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(stamp) if utc else time.localtime(stamp))


def outcome_line(job: dict, now: float | None = None) -> str:
    """`exit 3 -> failed, retry in 4s`, `exit 0 -> completed`: how the latest run ended; "" while none has."""
    state = job.get("state")
    if state in ("pending", "processing") or not job.get("history") and state != "dead":
        return ""
    code = job.get("last_exit_code")
    history = job.get("history") or [{}]
    signal = history[-1].get("signal")
    how = f"exit {code}" if code is not None else f"signal {signal}" if signal else "no exit code"
    if state == "failed":
        due = _seconds(job.get("next_run_at"))
        later = (now or time.time())
        return f"{how} -> failed, retry in {countdown(due - later)}" if due else f"{how} -> failed"
    reason = "" if state == "completed" or not job.get("last_error") else f" ({shorten(job['last_error'], 80)})"
    return f"{how} -> {state}{reason}"


def tail_lines(data: bytes, count: int) -> bytes:
    if count <= 0:
        return b""
    lines = data.splitlines(keepends=True)
    return b"".join(lines[-count:])


TAIL_READ = 1 << 20  # bytes read from a log's end for --tail: its last lines are in there unless they are huge


@click.command(cls=Command)
@click.argument("job_id")
@click.option("--follow", "-f", is_flag=True,
              help="Keep printing until the job finishes; exit 0 if it completed, 1 if it went to dead/.")
@click.option("--tail", "-n", "tail", type=click.IntRange(min=0), metavar="N", help="Only the last N lines.")
@click.pass_context
def logs(ctx, job_id, follow, tail):
    """The job's stdout and stderr, every attempt, then its outcome on stderr.

    The closing line (`queuectl: exit 3 -> failed, retry in 4s`) goes to
    stderr so that stdout stays the job's own output. JOB_ID may be a unique
    prefix.
    """
    spool = open_spool(ctx)
    job_id = spool.resolve(job_id)
    out = sys.stdout.buffer
    if not follow:
        data = spool.read_log(job_id, tail_bytes=TAIL_READ) if tail is not None else spool.read_log(job_id)
        out.write(tail_lines(data, tail) if tail is not None else data)
        out.flush()
        _closing(spool.get(job_id))
        return
    from ..follow import follow_log
    if spool.find(job_id) not in FINISHED:
        no_worker_note(spool)
    first = True
    for chunk in follow_log(spool, job_id):
        if first and tail is not None:
            chunk = tail_lines(chunk, tail)
        first = False
        out.write(chunk)
        out.flush()
    job = spool.get(job_id)
    _closing(job)
    if job.get("state") != "completed":
        raise SystemExit(1)


def _closing(job: dict) -> None:
    line = outcome_line(job)
    if line:
        click.echo(f"queuectl: {line}", err=True)


@click.command(cls=Command)
@click.argument("job_id")
@click.option("--tail", "-n", "tail", type=click.IntRange(min=0), metavar="N", help="Start with the last N lines.")
@click.pass_context
def follow(ctx, job_id, tail):
    """The same as `logs -f` (pueue's follow): print the log as it grows until the job finishes."""
    ctx.invoke(logs, job_id=job_id, follow=True, tail=tail)


def worker_hosts(records: list) -> str:
    """ " (hostA: 2 shared, hostB: 1 local)": where the live workers run and in which mode."""
    if not records:
        return ""
    counts: dict[tuple[str, str], int] = {}
    for record in records:
        key = (str(record.get("host", "?")), str(record.get("mode", "?")))
        counts[key] = counts.get(key, 0) + 1
    return " (" + ", ".join(f"{host}: {count} {mode}" for (host, mode), count in sorted(counts.items())) + ")"
