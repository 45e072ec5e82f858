"""The queuectl command line: parse, call the library, print.

Commands that need the worker, watchdog or the dashboard import them inside
the command, so `enqueue`, `list` and `status` start as fast as click does.
Errors the library raises on purpose (QueueError) become one line on
stderr and exit code 1; click's usage errors exit 2.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import click

from . import __version__
from .errors import InvalidJob, QueueError
from .job import STATES, iso, parse_time, shorten
from .spool import Spool, id_of, prepare_fields

DEFAULT_LIMIT = 50  # rows a listing shows unless told otherwise


def _show_help(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(ctx.get_help(), color=ctx.color)
        ctx.exit()


def _show_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(f"queuectl, version {__version__}", color=ctx.color)
        ctx.exit()


class _Command(click.Command):
    """A command whose -h/--help option has its text in plain English.

    click's own help and version options translate their text through
    gettext, whose first lookup imports locale: start-up time every command
    would pay, for a help text nobody asked for.
    """

    _plain_help: click.Option | None = None

    def get_help_option(self, ctx: click.Context) -> click.Option | None:
        names = self.get_help_option_names(ctx)
        if not names or not self.add_help_option:
            return None
        if self._plain_help is None:  # one object: click orders eager callbacks by identity
            self._plain_help = click.Option(names, is_flag=True, is_eager=True, expose_value=False,
                                            callback=_show_help, help="Show this message and exit.")
        return self._plain_help


class QueueGroup(_Command, click.Group):
    """Turns the library's deliberate errors and OS errors into one line and exit 1."""

    command_class = _Command
    group_class = type  # subgroups (worker, config, dlq) are QueueGroups too
    owns_process = False

    def main(self, args: Any = None, *rest: Any, **options: Any) -> Any:
        # Arguments from sys.argv: this is the program, and the process ends with
        # the command (`worker start` relies on it). An in-process caller, such as
        # click's CliRunner, passes its arguments and keeps its process as it was.
        self.owns_process = args is None
        return super().main(args, *rest, **options)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            _accept_root_options(command)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except QueueError as exc:
            _fail(str(exc))
        except OSError as exc:
            _fail(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc))
        except KeyboardInterrupt:
            raise SystemExit(130) from None


def _fail(message: str) -> None:
    click.echo(f"queuectl: error: {message}", err=True)
    raise SystemExit(1)


def _spool(ctx: click.Context) -> Spool:
    """The spool is opened (and created) only by commands that use it."""
    options = ctx.find_root().obj
    if "spool" not in options:
        spool = Spool(options["path"], allow_shared=options["allow_shared"])
        for warning in spool.warnings:
            click.echo(f"queuectl: warning: {warning}", err=True)
        options["spool"] = spool
    return options["spool"]


def _print_json(document: Any) -> None:
    click.echo(json.dumps(document, indent=2, ensure_ascii=False))


def _ago(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return _duration(time.time() - timestamp)


def _duration(seconds: float) -> str:
    if seconds < 0:
        return "in " + _duration(-seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.1f}s"


def _job_table(jobs: list[dict]) -> None:
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


def _seconds(text: str) -> float:
    """`90`, `90s`, `15m`, `2h`, `7d` as seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    value = text.strip().lower()
    scale = units.get(value[-1:], None)
    number = value[:-1] if scale else value
    try:
        seconds = float(number) * (scale or 1)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a duration like 30s, 15m, 2h or 7d") from None
    if seconds < 0:
        raise click.BadParameter("a duration must not be negative")
    return seconds


class _Path(click.ParamType):
    """click.Path, built when a value comes: its constructor translates its name through gettext.

    Built in a decorator, it would make every command import locale at start-up.
    """

    def __init__(self, **options: Any):
        self.options = options
        self.name = ("directory" if options.get("file_okay") is False else
                     "file" if options.get("dir_okay") is False else "path")

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        return click.Path(**self.options).convert(value, param, ctx)

    def shell_complete(self, ctx: click.Context, param: click.Parameter, incomplete: str) -> list:
        return click.Path(**self.options).shell_complete(ctx, param, incomplete)


class Duration(click.ParamType):
    name = "DURATION"

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        return value if isinstance(value, float) else _seconds(str(value))


@click.group(cls=QueueGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--spool", "path", metavar="PATH", envvar="QUEUECTL_SPOOL",
              help="Spool folder [default: $QUEUECTL_SPOOL, else ~/.local/share/queuectl/spool].")
@click.option("--allow-shared-spool", "allow_shared", is_flag=True,
              help="Use a spool that group or others can write to (they can run commands as you).")
@click.option("--version", is_flag=True, is_eager=True, expose_value=False, callback=_show_version,
              help="Show the version and exit.")
@click.pass_context
def main(ctx: click.Context, path: str | None, allow_shared: bool) -> None:
    """A background job queue for shell commands, kept in a folder of JSON files."""
    ctx.obj = {"path": path, "allow_shared": allow_shared}


# -- enqueue -----------------------------------------------------------------

def _parse_job_argument(text: str) -> dict | str:
    """An argument starting with `{` is a JSON job; anything else is the command itself."""
    if not text.lstrip().startswith("{"):
        return text
    try:
        return json.loads(text)
    except ValueError as exc:
        raise InvalidJob(f"invalid JSON job: {exc}") from None


def _env_pairs(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
    """--env KEY=VALUE options as a dict; a later KEY wins."""
    pairs: dict[str, str] = {}
    for value in values:
        name, equals, text = value.partition("=")
        if not equals or not name:
            raise click.BadParameter(f"{value!r} is not KEY=VALUE")
        pairs[name] = text
    return pairs


class _JsonLines:
    """Jobs from JSON lines; `line` is the line being handled (None once all are read), so an error can name it."""

    def __init__(self, stream, source: str):
        self.stream, self.source = stream, source
        self.line: int | None = None

    def __iter__(self):
        for number, text in enumerate(self.stream, 1):
            if not text.strip():
                continue
            self.line = number
            try:
                fields = json.loads(text)
            except ValueError as exc:
                raise InvalidJob(f"invalid JSON: {exc}") from None
            yield fields
        self.line = None


@main.command()
@click.argument("job", required=False)
@click.option("--command", "-c", help="The shell command (instead of JOB).")
@click.option("--id", "job_id", help="Job id (default: generated, sortable by time).")
@click.option("--priority", "-p", type=int, help="Higher runs first [default: 0].")
@click.option("--max-retries", type=click.IntRange(min=0), help="Retries after the first failure [default: config].")
@click.option("--timeout", type=click.FloatRange(min=0), help="Seconds before the job is killed [default: config].")
@click.option("--run-at", help="Do not start before this ISO-8601 time (local time without an offset).")
@click.option("--delay", type=Duration(), help="Do not start before this delay (30s, 15m, 2h).")
@click.option("--cwd", metavar="DIR", help="Run the command in this folder (a relative one is taken from here).")
@click.option("--env", "env", metavar="KEY=VALUE", multiple=True, callback=_env_pairs,
              help="Set a variable in the job's environment (repeatable).")
@click.option("--file", "-f", "file", type=click.File("r"), help="Many jobs: one JSON object per line.")
@click.option("--after", "after", multiple=True, metavar="ID[,ID...]",
              help="Start only once these jobs have completed (repeatable).")
@click.option("--group", "group", metavar="NAME", help="Run within this group's limit (see 'group set').")
@click.option("--unique", "unique", metavar="KEY",
              help="Refuse the job while another job with this key is pending, running or failed.")
@click.option("--if-absent", is_flag=True, help="With --unique: print the existing job's id and exit 0.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the stored job as JSON instead of its id (a JSON array for - or --file).")
@click.pass_context
def enqueue(ctx, job, command, job_id, priority, max_retries, timeout, run_at, delay, cwd, env, file, after, group,
            unique, if_absent, as_json):
    """Enqueue a job: JSON ('{"command": "make"}'), a command ('make'), or '-' for JSON lines on stdin.

    Options apply to every job of a batch and win over the JSON's fields;
    --env adds to the job's own env object.
    """
    if sum(x is not None for x in (job, command, file)) != 1:
        raise click.UsageError("give exactly one of JOB, --command or --file")
    if run_at is not None and delay is not None:
        raise click.UsageError("--run-at and --delay exclude each other")
    after_ids = [part.strip() for value in after for part in value.split(",") if part.strip()]
    options = dict(priority=priority, max_retries=max_retries, timeout=timeout, delay=delay,
                   run_at=iso(parse_time(run_at)) if run_at else None, env=env,
                   cwd=os.path.abspath(os.path.expanduser(cwd)) if cwd else None, after=after_ids or None,
                   group=group, unique=unique)
    spool = _spool(ctx)
    if file is not None or job == "-":
        if job_id is not None:
            raise click.UsageError("--id applies to a single job")
        reader = _JsonLines(file, file.name) if file is not None else _JsonLines(sys.stdin, "stdin")
        try:
            stored = spool.enqueue_many((prepare_fields(fields, **options) for fields in reader), if_absent=if_absent)
        except QueueError as exc:
            if reader.line is None:
                raise
            raise type(exc)(f"{reader.source} line {reader.line}: {exc} (no job enqueued)") from None
        if as_json:
            _print_json(stored)
            return
        for job in stored:
            click.echo(job["id"])
        return
    fields = _parse_job_argument(job) if job is not None else command
    one = spool.enqueue(fields, id=job_id, if_absent=if_absent, **options)
    _print_json(one) if as_json else click.echo(one["id"])


# -- inspection --------------------------------------------------------------

@main.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@click.pass_context
def status(ctx, as_json):
    """Counts per state, live workers and recent outcomes."""
    from .stats import summary
    report = summary(_spool(ctx))
    if as_json:
        _print_json(report)
        return
    click.echo(f"spool       {report['spool']}")
    for state in STATES:
        extra = ""
        if state == "pending" and (report["scheduled"] or report["waiting"]):
            parts = [f"{report[kind]} {kind}" for kind in ("scheduled", "waiting") if report[kind]]
            extra = f"  ({', '.join(parts)})"
        click.echo(f"{state:<11} {report['counts'][state]}{extra}")
    click.echo(f"workers     {len(report['workers'])} live{_worker_hosts(report['workers'])}")
    if report["paused"]:
        click.echo("paused      yes: workers start nothing new ('queuectl resume')")
    for group in report["groups"]:
        limit = group["limit"] if group["limit"] is not None else "no limit"
        click.echo(f"group {group['name']:<15} {group['running']} running, limit {limit}"
                   f"{', paused' if group['paused'] else ''}")
    click.echo(f"oldest pending  {_ago(report['oldest_pending'])}")
    next_at = report["next_scheduled"]
    click.echo(f"next scheduled  {iso(next_at) + ' (' + _duration(next_at - time.time()) + ')' if next_at else '-'}")
    for entry in report.get("schedules", []):
        when = "paused" if entry["paused"] else entry["next_run"] or "-"
        click.echo(f"schedule        {entry['name']}: next run {when}")
    finished = report["recent_finished"]
    if finished:
        click.echo(f"success rate    {report['success_rate'] * 100:.0f}% of the last {finished} finished jobs, "
                   f"mean duration {_duration(report['mean_duration'] or 0)}")
    else:
        click.echo("success rate    - (no finished jobs yet)")


def _limit_options(command):
    """--limit N (0 for all) and --all, shared by the listings."""
    command = click.option("--all", "show_all", is_flag=True, help="Every job (the same as --limit 0).")(command)
    return click.option("--limit", "-n", type=click.IntRange(min=0), default=DEFAULT_LIMIT, show_default=True,
                        help="At most this many jobs, newest id first; 0 for all.")(command)


def _listing(ctx: click.Context, state: str | None, limit: int, show_all: bool, noun: str) -> tuple[list[dict], str]:
    """A page of jobs, and the line that says rows were cut ("" when none were).

    The line goes to stderr after the rows, so `--json` keeps stdout one JSON document.
    """
    cap = None if show_all or limit == 0 else limit
    jobs, total = _spool(ctx).newest(state, cap)
    if cap is None or total <= cap:
        return jobs, ""
    return jobs, f"queuectl: showing {len(jobs)} of {total} {noun}; --limit 0 for all"


def _note(line: str) -> None:
    if line:
        click.echo(line, err=True)


@main.command("list")
@click.option("--state", "-s", type=click.Choice(STATES), help="Only jobs in this state.")
@_limit_options
@click.option("--json", "as_json", is_flag=True, help="A JSON array of job objects.")
@click.pass_context
def list_jobs(ctx, state, limit, show_all, as_json):
    """Jobs: id, state, attempts, priority, last update, command.

    When rows were cut by --limit, a line on stderr says how many jobs there are.
    """
    from .workflow import annotate
    jobs, cut = _listing(ctx, state, limit, show_all, f"{state} jobs" if state else "jobs")
    jobs = [annotate(_spool(ctx), job) for job in jobs]
    _print_json(jobs) if as_json else _job_table(jobs)
    _note(cut)


@main.command()
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="The job file as JSON (the default output).")
@click.pass_context
def show(ctx, job_id, as_json):
    """The whole job, as stored (a waiting job also shows `waiting_on`: what it waits for)."""
    from .workflow import annotate
    spool = _spool(ctx)
    _print_json(annotate(spool, spool.get(job_id)))


@main.command()
@click.argument("job_id")
@click.option("--follow", "-f", is_flag=True, help="Keep printing until the job finishes.")
@click.pass_context
def logs(ctx, job_id, follow):
    """The job's stdout and stderr, every attempt."""
    spool = _spool(ctx)
    if not follow:
        sys.stdout.buffer.write(spool.read_log(job_id))
        return
    from .follow import follow_log
    for chunk in follow_log(spool, job_id):
        sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()


# -- changing jobs -----------------------------------------------------------

@main.command()
@click.argument("job_ids", nargs=-1, required=True)
@click.pass_context
def cancel(ctx, job_ids):
    """Move pending or failed jobs to dead/ as cancelled; a running job is stopped first."""
    from .lifecycle import cancel as cancel_job
    spool = _spool(ctx)
    for job_id in job_ids:
        previous = cancel_job(spool, job_id)
        if previous != "processing":
            click.echo(f"{job_id}: cancelled ({previous} -> dead)")
            continue
        from .follow import wait_settled
        settled = wait_settled(spool, job_id)
        if settled is None:
            click.echo(f"{job_id}: stop requested; its worker moves it to dead/")
        else:
            click.echo(f"{job_id}: stopped and cancelled (running -> {settled})")


@main.command()
@click.argument("job_ids", nargs=-1, required=True)
@click.pass_context
def retry(ctx, job_ids):
    """Run failed jobs now, without waiting for their backoff."""
    from . import lifecycle
    spool = _spool(ctx)
    for job_id in job_ids:
        lifecycle.retry(spool, job_id)
        click.echo(f"{job_id}: failed -> pending")


@main.command()
@click.option("--completed", is_flag=True, help="Delete completed jobs.")
@click.option("--dead", is_flag=True, help="Delete dead jobs.")
@click.option("--older-than", type=Duration(), help="Only jobs last changed this long ago (7d, 12h).")
@click.pass_context
def purge(ctx, completed, dead, older_than):
    """Delete finished jobs and their logs.

    A completed job that a pending or failed job waits for (`after`) is kept:
    a line on stderr names those kept, and the exit code stays 0.
    """
    states = [state for state, chosen in (("completed", completed), ("dead", dead)) if chosen]
    if not states:
        raise click.UsageError("choose --completed, --dead or both")
    from .lifecycle import purge as purge_jobs
    needed: list[str] = []
    removed = purge_jobs(_spool(ctx), states, older_than, needed)
    click.echo(f"purged {removed} job(s)")
    if needed:
        click.echo(f"kept {len(needed)} completed job(s) that waiting jobs depend on: "
                   f"{shorten(' '.join(needed), 200)}", err=True)


@main.group()
def dlq():
    """The dead-letter queue: jobs out of retries, invalid or cancelled."""


@dlq.command("list")
@_limit_options
@click.option("--json", "as_json", is_flag=True, help="A JSON array of job objects.")
@click.pass_context
def dlq_list(ctx, limit, show_all, as_json):
    """Dead jobs with the reason each one died (a line on stderr says when rows were cut)."""
    jobs, cut = _listing(ctx, "dead", limit, show_all, "dead jobs")
    if as_json:
        _print_json(jobs)
    elif not jobs:
        click.echo("the dead-letter queue is empty")
    else:
        width = max(10, *(len(str(job.get("id"))) for job in jobs))
        click.echo(f"{'ID':<{width}}  {'ATT':>3}  {'REASON':<40}  COMMAND")
        for job in jobs:
            click.echo(f"{str(job.get('id')):<{width}}  {job.get('attempts', 0)!s:>3}  "
                       f"{shorten(job.get('last_error') or '-', 40):<40}  {shorten(job.get('command') or '-', 40)}")
    _note(cut)


@dlq.command("retry")
@click.argument("job_ids", nargs=-1)
@click.option("--all", "retry_all", is_flag=True, help="Every job in the dead-letter queue.")
@click.pass_context
def dlq_retry(ctx, job_ids, retry_all):
    """Move dead jobs back to pending with their attempts reset.

    With --all, records of files that were never valid jobs cannot be
    retried: each is skipped with a line on stderr, and the exit code is 0
    when every other dead job was retried. Exit 1 when a dead job could not
    be retried, or when there was nothing to retry (no dead job, or only
    invalid records).
    """
    if bool(job_ids) == retry_all:
        raise click.UsageError("give job ids or --all")
    from . import lifecycle
    spool = _spool(ctx)
    if retry_all:
        job_ids = sorted(id_of(name) for name in spool.names("dead"))
    retried = invalid = failures = 0
    for job_id in job_ids:
        try:
            lifecycle.dlq_retry(spool, job_id)
        except InvalidJob as exc:
            if not retry_all:
                raise
            invalid += 1  # nothing to retry: the record keeps a file that was never a job
            click.echo(f"queuectl: skipped: {exc}", err=True)
            continue
        except QueueError as exc:
            if not retry_all:
                raise
            failures += 1
            click.echo(f"queuectl: error: {exc}", err=True)
            continue
        retried += 1
        click.echo(f"{job_id}: dead -> pending")
    if retry_all and not job_ids:
        _fail("the dead-letter queue is empty")
    if invalid:
        click.echo(f"queuectl: retried {retried} dead job(s); skipped {invalid} invalid record(s), "
                   f"which cannot be retried", err=True)
    if failures:
        raise SystemExit(1)
    if not retried:
        _fail("nothing to retry: the dead-letter queue holds only invalid records")


# -- configuration -----------------------------------------------------------

@main.group()
def config():
    """Read and change config.json."""


@config.command("get")
@click.argument("key", required=False)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def config_get(ctx, key, as_json):
    """One setting, or all of them."""
    from .config import canonical_key
    settings = _spool(ctx).config
    if key is None:
        _print_settings(settings, as_json)
        return
    value = settings[canonical_key(key)]
    _print_json(value) if as_json else click.echo(json.dumps(value))


def _print_settings(settings: dict, as_json: bool) -> None:
    if as_json:
        _print_json(settings)
        return
    for name, value in sorted(settings.items()):
        click.echo(f"{name} = {json.dumps(value)}")


@config.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def config_list(ctx, as_json):
    """Every setting with its current value."""
    _print_settings(_spool(ctx).config, as_json)


config.add_command(config_list, "show")


# Negative numbers are values to check and refuse with the valid range, not unknown options.
@config.command("set", context_settings={"ignore_unknown_options": True})
@click.argument("key")
@click.argument("value")
@click.pass_context
def config_set(ctx, key, value):
    """Change a setting; later jobs and retries use it."""
    name, stored = _spool(ctx).set_config(key, value)
    click.echo(f"{name} = {json.dumps(stored)}")


# -- workers -----------------------------------------------------------------

@main.group()
def worker():
    """Start, stop and list workers."""


@worker.command("start")
@click.option("--count", "-n", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes to run.")
@click.option("--burst", is_flag=True,
              help="Exit as soon as no job is due now: jobs scheduled for later and failed jobs waiting "
                   "for their retry time do not keep the workers running.")
@click.option("--until-empty", is_flag=True,
              help="Exit once every job is finished: pending/ (scheduled jobs included), failed/ (waiting "
                   "retries included) and processing/ hold no job.")
@click.option("--quiet", "-q", is_flag=True, help="No banner and no line per job on stderr (errors only).")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="Lines on stderr for people, or one JSON object per line.")
@click.pass_context
def worker_start(ctx, count, burst, until_empty, quiet, log_format):
    """Run workers in the foreground until stopped.

    Ctrl-C, SIGTERM or SIGHUP finishes the running jobs, a second one (or
    SIGQUIT) stops them. Prints a banner and one line per job start and end.
    """
    from .events import EventLog
    from .supervisor import run_workers
    log = EventLog(log_format, quiet=quiet)
    then_exit = getattr(ctx.find_root().command, "owns_process", False)
    raise SystemExit(run_workers(_spool(ctx), count=count, burst=burst, until_empty=until_empty, log=log,
                                 then_exit=then_exit))


@worker.command("stop")
@click.option("--now", is_flag=True, help="Stop running jobs too; they are retried later.")
@click.option("--wait/--no-wait", default=True, show_default=True, help="Wait until the workers have exited.")
@click.pass_context
def worker_stop(ctx, now, wait):
    """Ask every worker of this spool to exit after its current job."""
    from .registry import records, request_stop, wait_stopped
    spool = _spool(ctx)
    live = records(spool)
    request_stop(spool, now=now)
    if not live:
        click.echo("no live workers")
        return
    click.echo(f"stop requested for {len(live)} worker(s)")
    if wait:
        wait_stopped(spool, [record["name"] for record in live])
        click.echo("all workers stopped")


@worker.command("list")
@click.option("--json", "as_json", is_flag=True, help="A JSON array of worker records.")
@click.pass_context
def worker_list(ctx, as_json):
    """Live workers: pid, host, uptime, current job."""
    from .registry import records
    from .workflow import is_paused, paused_groups
    spool = _spool(ctx)
    live = records(spool)
    if as_json:
        _print_json(live)
        return
    if is_paused(spool):
        click.echo("spool paused: workers start nothing new ('queuectl resume')")
    for group in paused_groups(spool):
        click.echo(f"group {group} paused")
    if not live:
        click.echo("no live workers")
        return
    click.echo(f"{'PID':>7}  {'HOST':<20}  {'MODE':<6}  {'UPTIME':>8}  JOB")
    for record in live:
        click.echo(f"{record.get('pid', '?')!s:>7}  {str(record.get('host', '?')):<20}  "
                   f"{str(record.get('mode', '?')):<6}  {_ago(record.get('started')):>8}  {record.get('job') or '-'}")


def _worker_hosts(records: list) -> str:
    """ " (hostA: 2 shared, hostB: 1 local)": where the live workers run and in which mode."""
    if not records:
        return ""
    counts: dict[tuple[str, str], int] = {}
    for record in records:
        key = (str(record.get("host", "?")), str(record.get("mode", "?")))
        counts[key] = counts.get(key, 0) + 1
    return " (" + ", ".join(f"{host}: {count} {mode}" for (host, mode), count in sorted(counts.items())) + ")"


# -- workflows: groups and pauses -------------------------------------------

@main.group("group")
def group_cmd():
    """Groups of jobs with a limit on how many run at once."""


@group_cmd.command("set")
@click.argument("name")
@click.option("--limit", type=click.IntRange(min=0), required=True,
              help="At most this many jobs of the group run at once, on every worker and host; 0 removes the limit.")
@click.pass_context
def group_set(ctx, name, limit):
    """Set a group's limit (groups/NAME.json)."""
    from .workflow import check_group, set_limit
    set_limit(_spool(ctx), check_group(name), limit or None)
    click.echo(f"group {name}: limit {limit}" if limit else f"group {name}: no limit")


@group_cmd.command("list")
@click.option("--json", "as_json", is_flag=True, help="A JSON array of groups.")
@click.pass_context
def group_list(ctx, as_json):
    """Groups with a limit, a pause or running jobs: limit, running, slots held, paused."""
    from .workflow import groups
    found = groups(_spool(ctx))
    if as_json:
        _print_json(found)
        return
    if not found:
        click.echo("no groups")
        return
    width = max(10, *(len(group["name"]) for group in found))
    click.echo(f"{'GROUP':<{width}}  {'LIMIT':>5}  {'RUNNING':>7}  {'SLOTS':>5}  PAUSED")
    for group in found:
        limit = group["limit"] if group["limit"] is not None else "-"
        click.echo(f"{group['name']:<{width}}  {limit!s:>5}  {group['running']:>7}  {group['slots']:>5}  "
                   f"{'yes' if group['paused'] else 'no'}")
        for holder in group["holders"]:
            click.echo(f"  {holder['slot']}: worker {holder['worker']}, job {holder['job'] or '-'}")


@main.command()
@click.option("--group", metavar="NAME", help="Pause only this group.")
@click.pass_context
def pause(ctx, group):
    """Workers start nothing new (from the spool, or the group); running jobs go on."""
    from .workflow import check_group, pause_path
    from .workflow import pause as pause_spool
    spool = _spool(ctx)
    if group is not None:
        check_group(group)
    changed = pause_spool(spool, group)
    what = f"group {group}" if group else "spool"
    click.echo(f"{what} paused ({pause_path(spool, group)})" if changed else f"{what} was paused already")


@main.command()
@click.option("--group", metavar="NAME", help="Resume only this group.")
@click.pass_context
def resume(ctx, group):
    """Workers start jobs again (from the spool, or the group)."""
    from .workflow import check_group
    from .workflow import resume as resume_spool
    if group is not None:
        check_group(group)
    changed = resume_spool(_spool(ctx), group)
    what = f"group {group}" if group else "spool"
    click.echo(f"{what} resumed" if changed else f"{what} was not paused")


@main.command()
@click.argument("job_ids", nargs=-1)
@click.option("--timeout", type=Duration(), help="Give up after this long (exit 1).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.pass_context
def wait(ctx, job_ids, timeout, quiet):
    """Block until these jobs (or the whole queue) are finished; exit 1 if any is dead."""
    from .follow import wait_for
    spool = _spool(ctx)
    progress = None if quiet or not sys.stderr.isatty() else _progress_printer()
    outcome = wait_for(spool, list(job_ids), timeout=timeout, progress=progress)
    if progress:
        click.echo("", err=True)
    if outcome.timed_out:
        _fail(f"timed out with {outcome.unfinished} job(s) unfinished")
    click.echo(f"{outcome.completed} completed, {outcome.dead} dead")
    if outcome.dead:
        raise SystemExit(1)


def _progress_printer():
    def show(done: int, total: int) -> None:
        filled = int(30 * done / total) if total else 30
        click.echo(f"\r[{'#' * filled}{'.' * (30 - filled)}] {done}/{total} finished", nl=False, err=True)
    return show


# -- schedules (README "Recurring jobs") --------------------------------------

@main.group()
def schedule():
    """Recurring jobs: each due slot of a schedule is enqueued once, as job NAME-<slot time>."""


def _schedule_env(pairs: tuple[str, ...]) -> dict[str, str] | None:
    """A schedule's --env NAME=VALUE options as its job's `env`, None when there are none."""
    env = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{pair!r} is not NAME=VALUE", param_hint="--env")
        env[name] = value
    return env or None


@schedule.command("add")
@click.argument("name")
@click.argument("command")
@click.option("--cron", help="Cron expression: 5 fields, or 6 with seconds first ('*/5 * * * *').")
@click.option("--every", help="A fixed period instead of --cron: 1s, 30s, 5m, 2h, 1d (aligned to 1970 UTC).")
@click.option("--tz", help="Time zone of --cron (IANA name, e.g. Europe/Berlin) [default: UTC].")
@click.option("--missed", type=click.Choice(("skip", "once", "all")), default="skip", show_default=True,
              help="Slots missed while no worker ran: skip them, run once, or run all (at most 100).")
@click.option("--grace", type=Duration(), help="A slot later than this is missed, not late [default: 60s].")
@click.option("--priority", "-p", type=int, help="Job priority [default: 0].")
@click.option("--max-retries", type=click.IntRange(min=0), help="Retries of each run [default: config].")
@click.option("--timeout", type=click.FloatRange(min=0), help="Seconds before a run is killed [default: config].")
@click.option("--cwd", help="Working folder of each run.")
@click.option("--env", "env", multiple=True, metavar="NAME=VALUE", help="Environment of each run (repeatable).")
@click.option("--on-success", help="Completion hook after a run succeeds.")
@click.option("--on-failure", help="Completion hook after a run fails (and will be retried).")
@click.option("--on-dead", help="Completion hook after a run goes to dead/.")
@click.option("--paused", is_flag=True, help="Create it paused.")
@click.pass_context
def schedule_add(ctx, name, command, cron, every, tz, missed, grace, priority, max_retries, timeout, cwd, env,
                 on_success, on_failure, on_dead, paused):
    """Add schedule NAME running COMMAND at every slot of --cron or --every."""
    from . import schedules
    if (cron is None) == (every is None):
        raise click.UsageError("give exactly one of --cron and --every")
    template = {"command": command}
    for key, value in (("priority", priority), ("max_retries", max_retries), ("timeout", timeout),
                       ("cwd", cwd), ("env", _schedule_env(env)), ("on_success", on_success),
                       ("on_failure", on_failure), ("on_dead", on_dead)):
        if value is not None:
            template[key] = value
    fields = {"cron": cron, "every": every, "tz": tz, "missed": missed, "paused": paused, "job": template}
    if grace is not None:
        fields["grace"] = grace
    added = schedules.get(_spool(ctx), schedules.add(_spool(ctx), name, fields)["name"])
    click.echo(f"{name}: next run {added['next_run'] or '-'}")


def _schedule_when(entry: dict) -> str:
    if entry.get("cron"):
        return entry["cron"] + (f" ({entry['tz']})" if entry.get("tz") else "")
    return f"every {entry['every']}s"


@schedule.command("list")
@click.option("--json", "as_json", is_flag=True, help="A JSON array of schedules.")
@click.pass_context
def schedule_list(ctx, as_json):
    """Schedules with their next run; invalid files with the reason."""
    from . import schedules
    entries = schedules.listing(_spool(ctx))
    if as_json:
        _print_json(entries)
        return
    if not entries:
        click.echo("no schedules")
        return
    width = max(8, *(len(entry["name"]) for entry in entries))
    click.echo(f"{'NAME':<{width}}  {'WHEN':<28}  {'MISSED':<6}  {'NEXT RUN':<24}  COMMAND")
    for entry in entries:
        if "error" in entry:
            click.echo(f"{entry['name']:<{width}}  invalid: {shorten(entry['error'], 80)}")
            continue
        next_run = "paused" if entry["paused"] else entry["next_run"] or "-"
        click.echo(f"{entry['name']:<{width}}  {shorten(_schedule_when(entry), 28):<28}  {entry['missed']:<6}  "
                   f"{next_run:<24}  {shorten(entry['job'].get('command') or '-', 40)}")


@schedule.command("show")
@click.argument("name")
@click.pass_context
def schedule_show(ctx, name):
    """The schedule as stored, with its last fired slot and next run."""
    from . import schedules
    _print_json(schedules.get(_spool(ctx), name))


@schedule.command("rm")
@click.argument("names", nargs=-1, required=True)
@click.pass_context
def schedule_rm(ctx, names):
    """Remove schedules (jobs already enqueued stay)."""
    from . import schedules
    for name in names:
        schedules.remove(_spool(ctx), name)
        click.echo(f"{name}: removed")


@schedule.command("pause")
@click.argument("names", nargs=-1, required=True)
@click.pass_context
def schedule_pause(ctx, names):
    """Stop enqueuing; slots that pass while paused are skipped."""
    from . import schedules
    for name in names:
        schedules.set_paused(_spool(ctx), name, True)
        click.echo(f"{name}: paused")


@schedule.command("resume")
@click.argument("names", nargs=-1, required=True)
@click.pass_context
def schedule_resume(ctx, names):
    """Enqueue again from the next slot on."""
    from . import schedules
    for name in names:
        entry = schedules.set_paused(_spool(ctx), name, False)
        click.echo(f"{name}: resumed, next run {entry['next_run'] or '-'}")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.pass_context
def dashboard(ctx, host, port):
    """Serve the web dashboard (Ctrl-C stops it)."""
    from .dashboard.server import serve
    serve(_spool(ctx), host=host, port=port)


@main.command()
@click.option("--output", "-o", metavar="FILE", type=_Path(dir_okay=False, writable=True),
              help="Write FILE atomically (a temporary file renamed over it) instead of printing: "
                   "for node_exporter's textfile collector.")
@click.pass_context
def metrics(ctx, output):
    """The Prometheus text of the dashboard's /metrics, without a server.

    Counters count the settled jobs in the spool now (a dashboard adds the
    arrivals it sees); the duration summary reads the latest settled jobs only.
    """
    from .metrics import render, write_file
    text = render(_spool(ctx))
    if output is None:
        click.echo(text, nl=False)
    else:
        write_file(output, text)


@main.command()
@click.option("--repair", is_flag=True, help="Fix what is safe to fix.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def doctor(ctx, repair, as_json):
    """Check the spool for damage; exit 1 when something is wrong."""
    from .doctor import check
    # The doctor opens a spool others can write to, if only to report it and, with --repair, close it.
    findings = check(Spool(ctx.find_root().obj["path"], allow_shared=True), repair=repair)
    if as_json:
        _print_json(findings)
    else:
        for finding in findings:
            fixed = " [repaired]" if finding.get("repaired") else ""
            click.echo(f"{finding['problem']}: {finding['path']} - {finding['detail']}{fixed}")
        if not findings:
            click.echo("spool is healthy")
        from .registry import records
        for record in records(Spool(ctx.find_root().obj["path"], allow_shared=True)):
            click.echo(f"worker {record['name']} on {record.get('host', '?')}: {record.get('mode', '?')} mode")
    if any(not finding.get("repaired") for finding in findings):
        raise SystemExit(1)


@main.command()
def schema():
    """Print the JSON Schema of a job file (validate a file before dropping it in)."""
    from .schema import schema_text
    click.echo(schema_text(), nl=False)


@main.command()
@click.option("--count", "-n", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--example", type=_Path(exists=True, file_okay=False), default=None,
              help="Folder of example jobs [default: spool.example/ of the source tree].")
@click.pass_context
def demo(ctx, count, example):
    """Copy the example jobs into the spool, drain them with workers, print the status."""
    from .demo import run_demo
    spool = _spool(ctx)
    for line in run_demo(spool, count=count, example=example):
        click.echo(line)
    ctx.invoke(status)


# -- root options after the subcommand ----------------------------------------

def _set_root(name: str):
    """A subcommand's --spool / --allow-shared-spool sets the root's value; given twice, the later one wins."""
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        if value:
            ctx.find_root().obj[name] = value
    return callback


def _accept_root_options(command: click.Command) -> None:
    """`queuectl list --spool X` works as `queuectl --spool X list` does, in every (nested) command.

    QueueGroup.get_command adds them to the command it looks up: built for
    every command at import, they would cost every start-up.
    """
    if any(param.name == "spool" for param in command.params):
        return  # done already (an alias, config show, is the same command object)
    command.params.extend([
        click.Option(["--spool"], metavar="PATH", expose_value=False, callback=_set_root("path"),
                     help="Spool folder (as `queuectl --spool PATH`)."),
        click.Option(["--allow-shared-spool"], is_flag=True, expose_value=False,
                     callback=_set_root("allow_shared"),
                     help="As `queuectl --allow-shared-spool`."),
    ])
