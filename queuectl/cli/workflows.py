"""Groups and pauses (`group set | list`, `pause`, `resume`) and `wait` for jobs to finish."""

from __future__ import annotations

import difflib
import sys

import click

from ..core.errors import JobNotFound
from . import Command, Duration, QueueGroup, no_worker_note, open_spool, print_json, warn
from .ids import page


@click.group("group", cls=QueueGroup)
def group_cmd():
    """Groups of jobs with a limit on how many run at once."""


@group_cmd.command("set")
@click.argument("name")
@click.option("--limit", type=click.IntRange(min=0),
              help="At most this many jobs of the group run at once, on every worker and host; 0 removes the limit.")
@click.option("--rate", metavar="N/WINDOW",
              help="At most N starts in any sliding window (10/1m, 5/2s), on every worker and host; 0 removes it.")
@click.pass_context
def group_set(ctx, name, limit, rate):
    """Set a group's limit and/or rate (groups/NAME.json)."""
    if limit is None and rate is None:
        raise click.UsageError("give --limit N, --rate N/WINDOW, or both")
    spool = open_spool(ctx)
    if rate is not None:
        stored = spool.set_group_rate(name, rate)
        click.echo(f"group {name}: rate {stored}" if stored else f"group {name}: no rate")
    if limit is not None:
        spool.set_group_limit(name, limit or None)
        click.echo(f"group {name}: limit {limit}" if limit else f"group {name}: no limit")


@group_cmd.command("list")
@click.option("--json", "as_json", is_flag=True, help="A JSON array of groups.")
@click.pass_context
def group_list(ctx, as_json):
    """Groups with a limit, a pause or running jobs: limit, running, slots held, paused."""
    found = open_spool(ctx).groups()
    if as_json:
        print_json(found)
        return
    if not found:
        click.echo("no groups")
        return
    width = max(10, *(len(group["name"]) for group in found))
    click.echo(f"{'GROUP':<{width}}  {'LIMIT':>5}  {'RUNNING':>7}  {'SLOTS':>5}  {'RATE':>8}  "
               f"{'IN WINDOW':>9}  PAUSED")
    for group in found:
        limit = group["limit"] if group["limit"] is not None else "-"
        in_window = group["starts_in_window"] if group["rate"] else "-"
        click.echo(f"{group['name']:<{width}}  {limit!s:>5}  {group['running']:>7}  {group['slots']:>5}  "
                   f"{group['rate'] or '-':>8}  {in_window!s:>9}  {'yes' if group['paused'] else 'no'}")
        for holder in group["holders"]:
            click.echo(f"  {holder['slot']}: worker {holder['worker']}, job {holder['job'] or '-'}")


def _check_known(spool, group: str) -> None:
    """A warning for a group no job, limit or pause names: most likely a typo (pausing ahead is allowed)."""
    known = {entry["name"] for entry in spool.groups()}
    if group in known:
        return
    # Every unfinished job is read: `pause` is rare, and a typo is worth finding.
    jobs, _ = page(spool, ["pending", "processing", "failed"], limit=None)
    known |= {job["group"] for job in jobs if isinstance(job.get("group"), str)}
    if group in known:
        return
    close = difflib.get_close_matches(group, sorted(known), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f" (known: {', '.join(sorted(known)) or 'none'})"
    warn(f"no job, limit or pause names group {group!r} yet{hint}")


@click.command(cls=Command)
@click.option("--group", metavar="NAME", help="Pause only this group (a name no job uses yet gets a warning).")
@click.option("--running", is_flag=True,
              help="Instead: suspend every running job (SIGSTOP) until 'resume --running'.")
@click.pass_context
def pause(ctx, group, running):
    """Workers start nothing new (from the spool, or the group); running jobs go on (--running stops them)."""
    spool = open_spool(ctx)
    if running:
        if group is not None:
            raise click.UsageError("--running and --group exclude each other")
        from .control import suspend_running
        suspend_running(spool)
        return
    if group is not None:
        _check_known(spool, group)
    changed = spool.pause(group)
    what = f"group {group}" if group else "spool"
    click.echo(f"{what} paused" if changed else f"{what} was paused already")


@click.command(cls=Command)
@click.argument("job_ids", nargs=-1)
@click.option("--group", metavar="NAME", help="Resume only this group.")
@click.option("--running", is_flag=True, help="Instead: continue every suspended job (SIGCONT).")
@click.pass_context
def resume(ctx, job_ids, group, running):
    """Workers start jobs again (from the spool, or the group); with ids or --running, suspended jobs go on."""
    spool = open_spool(ctx)
    if job_ids or running:
        if group is not None or (job_ids and running):
            raise click.UsageError("give job ids, --running or --group")
        from .control import resume_jobs
        resume_jobs(spool, tuple(job_ids), running)
        return
    changed = spool.resume(group)
    what = f"group {group}" if group else "spool"
    click.echo(f"{what} resumed" if changed else f"{what} was not paused")


@click.command(cls=Command)
@click.argument("job_ids", nargs=-1)
@click.option("--timeout", type=Duration(), help="Give up after this long (exit 124): 30s, 10m, 1h30m.")
@click.option("--all", "every", is_flag=True,
              help="Without ids: also jobs scheduled for later (run_at); otherwise only the jobs due now.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.pass_context
def wait(ctx, job_ids, timeout, every, quiet):
    """Block until these jobs (or the jobs due now) are finished. IDs may be unique prefixes.

    \b
    Without ids: the jobs running, failed (awaiting a retry) or pending and
    due now, and those that arrive meanwhile; not jobs scheduled for later
    (--all waits for them too), never jobs finished before.
    Exit 0: every awaited job completed; 1: one ended in dead/; 124: --timeout
    passed first; 2: an unknown id.
    """
    from ..follow import wait_for
    spool = open_spool(ctx)
    ids = []
    for job_id in job_ids:
        try:
            ids.append(spool.resolve(job_id))
        except JobNotFound as exc:
            click.echo(f"queuectl: error: {exc}", err=True)
            raise SystemExit(2) from None
    progress = None if quiet or not sys.stderr.isatty() else _progress_printer()
    outcome = wait_for(spool, ids or None, timeout=timeout, progress=progress, scheduled=every,
                       idle_note=lambda: no_worker_note(spool))
    if progress:
        click.echo("", err=True)
    if outcome.timed_out:
        click.echo(f"queuectl: timed out with {outcome.unfinished} job(s) unfinished", err=True)
        raise SystemExit(124)
    click.echo(f"{outcome.completed} completed, {outcome.dead} dead")
    if outcome.dead:
        raise SystemExit(1)


def _progress_printer():
    def show(done: int, total: int) -> None:
        filled = int(30 * done / total) if total else 30
        click.echo(f"\r[{'#' * filled}{'.' * (30 - filled)}] {done}/{total} finished", nl=False, err=True)
    return show


@click.group("resource", cls=QueueGroup)
def resource_cmd():
    """What each host has (GPUs, licences, ...) for jobs that need some (`enqueue --needs gpu=2`)."""


@resource_cmd.command("set")
@click.argument("name")
@click.argument("count", type=click.IntRange(min=0))
@click.option("--host", metavar="HOST", help="Declare for this host [default: this one: $QUEUECTL_HOST or its name].")
@click.pass_context
def resource_set(ctx, name, count, host):
    """This host has COUNT of NAME (indexes 0 to COUNT-1); 0 removes it (resources/hosts/HOST.json)."""
    have = open_spool(ctx).declare_resource(name, count, host)
    click.echo(", ".join(f"{key} {value}" for key, value in have.items()) or "no resources declared")


@resource_cmd.command("list")
@click.option("--json", "as_json", is_flag=True, help="A JSON array of hosts.")
@click.pass_context
def resource_list(ctx, as_json):
    """Each host's resources: declared, held, and which job holds which index."""
    found = open_spool(ctx).resources()
    if as_json:
        print_json(found)
        return
    if not found:
        click.echo("no resources (declare them with 'queuectl resource set NAME COUNT')")
        return
    for host in found:
        for entry in host["resources"]:
            click.echo(f"{host['host']}  {entry['name']}  {len(entry['held'])}/{entry['declared']} held")
            for holder in entry["held"]:
                click.echo(f"  {entry['name']} {holder['index']}: worker {holder['worker']}, "
                           f"job {holder['job'] or '-'}")
