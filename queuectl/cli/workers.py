"""`queuectl worker start | stop | list`: running workers in the foreground, stopping and listing them."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import click

from ..core.job import iso
from ..core.registry import MAX_WORKERS
from . import QueueGroup, fail, open_spool, print_json
from .inspection import ago

# In workers/, beside the records (`<name>.json`, `.lock`): no job id names a file there, and the
# registry reads only .json records (docs/spool-format.md).
DETACHED_LOG = "workers/detached.log"
DETACH_WAIT = 10.0  # seconds to see the detached workers' records before saying they did not start


def _detach(ctx: click.Context, count: int, burst: bool, until_empty: bool, quiet: bool, log_format: str) -> None:
    spool = open_spool(ctx)
    root = ctx.find_root().obj
    before = {record["name"] for record in spool.workers()}
    argv = [sys.executable, "-m", "queuectl", "--spool", spool.root, *(["--allow-shared-spool"]
            if root.get("allow_shared") else []), "worker", "start", "--count", str(count),
            "--log-format", log_format, *(["--burst"] if burst else []),
            *(["--until-empty"] if until_empty else []), *(["--quiet"] if quiet else [])]
    log_path = os.path.join(spool.root, DETACHED_LOG)
    log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                                   close_fds=True)
    finally:
        os.close(log)
    deadline = time.monotonic() + DETACH_WAIT
    while time.monotonic() < deadline:
        started = [record for record in spool.workers() if record["name"] not in before]
        if len(started) >= count or process.poll() is not None:
            break
        time.sleep(0.05)
    if process.poll() not in (None, 0):
        fail(f"the workers did not start (exit {process.returncode}); see {log_path}")
    click.echo(f"started {count} worker(s) in the background (pid {process.pid}); log: {log_path}; "
               f"stop them with 'queuectl worker stop'")


@click.group(cls=QueueGroup)
def worker():
    """Start, stop and list workers."""


@worker.command("start")
@click.option("--count", "-n", type=click.IntRange(min=1, max=MAX_WORKERS), default=1, show_default=True,
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
@click.option("--detach", "-d", is_flag=True,
              help=f"Run the workers in the background and return; their lines go to <spool>/{DETACHED_LOG}, "
                   "and 'queuectl worker stop' ends them.")
@click.pass_context
def worker_start(ctx, count, burst, until_empty, quiet, log_format, detach):
    """Run workers in the foreground until stopped (--detach: in the background).

    Ctrl-C, SIGTERM or SIGHUP finishes the running jobs, a second one (or
    SIGQUIT) stops them. Prints a banner and one line per job start and end.
    With --detach the workers run on after the terminal closes, writing
    those lines to <spool>/workers/detached.log; 'queuectl worker stop'
    ends them, 'queuectl worker list' shows them.
    """
    if detach:
        _detach(ctx, count, burst, until_empty, quiet, log_format)
        return
    from ..core.events import EventLog
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
    spool = open_spool(ctx)
    live = spool.stop_workers(now=now)
    if not live:
        click.echo("no live workers")
        return
    click.echo(f"stop requested for {len(live)} worker(s)")
    if wait:
        spool.stop_workers(now=now, wait=True)
        click.echo("all workers stopped")


@worker.command("list")
@click.option("--json", "as_json", is_flag=True, help="A JSON array of worker records.")
@click.pass_context
def worker_list(ctx, as_json):
    """Live workers: pid, host, uptime, current job."""
    from ..stats import paused
    spool = open_spool(ctx)
    live = spool.workers()
    if as_json:
        print_json([iso_times(record) for record in live])
        return
    spool_paused, groups = paused(spool)
    if spool_paused:
        click.echo("spool paused: workers start nothing new ('queuectl resume')")
    for group in groups:
        click.echo(f"group {group} paused")
    if not live:
        click.echo("no live workers")
        return
    click.echo(f"{'PID':>7}  {'HOST':<20}  {'MODE':<6}  {'UPTIME':>8}  JOB")
    for record in live:
        click.echo(f"{record.get('pid', '?')!s:>7}  {str(record.get('host', '?')):<20}  "
                   f"{str(record.get('mode', '?')):<6}  {ago(record.get('started')):>8}  {record.get('job') or '-'}")


def iso_times(record: dict) -> dict:
    """A worker record for JSON: its epoch-second times as ISO-8601 UTC, as every other time is."""
    return {key: iso(value) if key in ("started", "heartbeat") and isinstance(value, (int, float)) else value
            for key, value in record.items()}
