"""Reading the spool: `status`, `list`, `show`, `logs`, and the tables they print.

Nothing here changes a job; a listing cut by --limit says so on stderr.
"""

from __future__ import annotations

import sys
import time

import click

from ..job import STATES, iso, shorten
from . import Command, open_spool, print_json

DEFAULT_LIMIT = 50  # rows a listing shows unless told otherwise


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


def job_table(jobs: list[dict]) -> None:
    if not jobs:
        click.echo("no jobs")
        return
    width = max(10, *(len(str(job.get("id"))) for job in jobs))
    click.echo(f"{'ID':<{width}}  {'STATE':<10}  {'ATT':>3}  {'PRI':>4}  {'UPDATED':<24}  COMMAND")
    for job in jobs:
        state, command = job.get("state", "?"), shorten(job.get("command") or "-", 50)
        if job.get("waiting_on"):  # a derived display: the file stays in pending/
            state = "waiting"
            command += "  (after " + ", ".join(f"{dep['id']}: {dep['state']}" for dep in job["waiting_on"]) + ")"
        click.echo(f"{str(job.get('id')):<{width}}  {state:<10}  "
                   f"{job.get('attempts', 0)!s:>3}  {job.get('priority', 0)!s:>4}  "
                   f"{str(job.get('updated_at') or '-'):<24}  {command}")



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
    if report["paused"]:
        click.echo("paused      yes: workers start nothing new ('queuectl resume')")
    for group in report["groups"]:
        limit = group["limit"] if group["limit"] is not None else "no limit"
        click.echo(f"group {group['name']:<15} {group['running']} running, limit {limit}"
                   f"{', paused' if group['paused'] else ''}")
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
                        help="At most this many jobs, newest id first; 0 for all.")(command)


def listing(ctx: click.Context, state: str | None, limit: int, show_all: bool, noun: str) -> tuple[list[dict], str]:
    """A page of jobs, and the line that says rows were cut ("" when none were).

    The line goes to stderr after the rows, so `--json` keeps stdout one JSON document.
    """
    cap = None if show_all or limit == 0 else limit
    jobs, total = open_spool(ctx).newest(state, cap)
    if cap is None or total <= cap:
        return jobs, ""
    return jobs, f"queuectl: showing {len(jobs)} of {total} {noun}; --limit 0 for all"


def note(line: str) -> None:
    if line:
        click.echo(line, err=True)


@click.command("list", cls=Command)
@click.option("--state", "-s", type=click.Choice(STATES), help="Only jobs in this state.")
@limit_options
@click.option("--json", "as_json", is_flag=True, help="A JSON array of job objects.")
@click.pass_context
def list_jobs(ctx, state, limit, show_all, as_json):
    """Jobs: id, state, attempts, priority, last update, command.

    When rows were cut by --limit, a line on stderr says how many jobs there are.
    """
    from ..workflow import annotate
    jobs, cut = listing(ctx, state, limit, show_all, f"{state} jobs" if state else "jobs")
    jobs = [annotate(open_spool(ctx), job) for job in jobs]
    print_json(jobs) if as_json else job_table(jobs)
    note(cut)


@click.command(cls=Command)
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="The job file as JSON (the default output).")
@click.pass_context
def show(ctx, job_id, as_json):
    """The whole job, as stored (a waiting job also shows `waiting_on`: what it waits for)."""
    from ..workflow import annotate
    spool = open_spool(ctx)
    print_json(annotate(spool, spool.get(job_id)))


@click.command(cls=Command)
@click.argument("job_id")
@click.option("--follow", "-f", is_flag=True, help="Keep printing until the job finishes.")
@click.pass_context
def logs(ctx, job_id, follow):
    """The job's stdout and stderr, every attempt."""
    spool = open_spool(ctx)
    if not follow:
        sys.stdout.buffer.write(spool.read_log(job_id))
        return
    from ..follow import follow_log
    for chunk in follow_log(spool, job_id):
        sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()



def worker_hosts(records: list) -> str:
    """ " (hostA: 2 shared, hostB: 1 local)": where the live workers run and in which mode."""
    if not records:
        return ""
    counts: dict[tuple[str, str], int] = {}
    for record in records:
        key = (str(record.get("host", "?")), str(record.get("mode", "?")))
        counts[key] = counts.get(key, 0) + 1
    return " (" + ", ".join(f"{host}: {count} {mode}" for (host, mode), count in sorted(counts.items())) + ")"
