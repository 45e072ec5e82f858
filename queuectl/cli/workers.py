"""`queuectl worker start | stop | list`: running workers in the foreground, stopping and listing them."""

from __future__ import annotations

import click

from . import QueueGroup, open_spool, print_json
from .inspection import ago


@click.group(cls=QueueGroup)
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
    from ..events import EventLog
    from ..supervisor import run_workers
    log = EventLog(log_format, quiet=quiet)
    then_exit = getattr(ctx.find_root().command, "owns_process", False)
    raise SystemExit(run_workers(open_spool(ctx), count=count, burst=burst, until_empty=until_empty, log=log,
                                 then_exit=then_exit))


@worker.command("stop")
@click.option("--now", is_flag=True, help="Stop running jobs too; they are retried later.")
@click.option("--wait/--no-wait", default=True, show_default=True, help="Wait until the workers have exited.")
@click.pass_context
def worker_stop(ctx, now, wait):
    """Ask every worker of this spool to exit after its current job."""
    from ..registry import records, request_stop, wait_stopped
    spool = open_spool(ctx)
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
    from ..registry import records
    from ..workflow import is_paused, paused_groups
    spool = open_spool(ctx)
    live = records(spool)
    if as_json:
        print_json(live)
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
                   f"{str(record.get('mode', '?')):<6}  {ago(record.get('started')):>8}  {record.get('job') or '-'}")
