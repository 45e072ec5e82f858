"""Groups and pauses (`group set | list`, `pause`, `resume`) and `wait` for jobs to finish."""

from __future__ import annotations

import sys

import click

from . import Command, Duration, QueueGroup, fail, open_spool, print_json


@click.group("group", cls=QueueGroup)
def group_cmd():
    """Groups of jobs with a limit on how many run at once."""


@group_cmd.command("set")
@click.argument("name")
@click.option("--limit", type=click.IntRange(min=0), required=True,
              help="At most this many jobs of the group run at once, on every worker and host; 0 removes the limit.")
@click.pass_context
def group_set(ctx, name, limit):
    """Set a group's limit (groups/NAME.json)."""
    from ..workflow import check_group, set_limit
    set_limit(open_spool(ctx), check_group(name), limit or None)
    click.echo(f"group {name}: limit {limit}" if limit else f"group {name}: no limit")


@group_cmd.command("list")
@click.option("--json", "as_json", is_flag=True, help="A JSON array of groups.")
@click.pass_context
def group_list(ctx, as_json):
    """Groups with a limit, a pause or running jobs: limit, running, slots held, paused."""
    from ..workflow import groups
    found = groups(open_spool(ctx))
    if as_json:
        print_json(found)
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


@click.command(cls=Command)
@click.option("--group", metavar="NAME", help="Pause only this group.")
@click.pass_context
def pause(ctx, group):
    """Workers start nothing new (from the spool, or the group); running jobs go on."""
    from ..workflow import check_group, pause_path
    from ..workflow import pause as pause_spool
    spool = open_spool(ctx)
    if group is not None:
        check_group(group)
    changed = pause_spool(spool, group)
    what = f"group {group}" if group else "spool"
    click.echo(f"{what} paused ({pause_path(spool, group)})" if changed else f"{what} was paused already")


@click.command(cls=Command)
@click.option("--group", metavar="NAME", help="Resume only this group.")
@click.pass_context
def resume(ctx, group):
    """Workers start jobs again (from the spool, or the group)."""
    from ..workflow import check_group
    from ..workflow import resume as resume_spool
    if group is not None:
        check_group(group)
    changed = resume_spool(open_spool(ctx), group)
    what = f"group {group}" if group else "spool"
    click.echo(f"{what} resumed" if changed else f"{what} was not paused")


@click.command(cls=Command)
@click.argument("job_ids", nargs=-1)
@click.option("--timeout", type=Duration(), help="Give up after this long (exit 1).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.pass_context
def wait(ctx, job_ids, timeout, quiet):
    """Block until these jobs (or the whole queue) are finished; exit 1 if any is dead."""
    from ..follow import wait_for
    spool = open_spool(ctx)
    progress = None if quiet or not sys.stderr.isatty() else _progress_printer()
    outcome = wait_for(spool, list(job_ids), timeout=timeout, progress=progress)
    if progress:
        click.echo("", err=True)
    if outcome.timed_out:
        fail(f"timed out with {outcome.unfinished} job(s) unfinished")
    click.echo(f"{outcome.completed} completed, {outcome.dead} dead")
    if outcome.dead:
        raise SystemExit(1)


def _progress_printer():
    def show(done: int, total: int) -> None:
        filled = int(30 * done / total) if total else 30
        click.echo(f"\r[{'#' * filled}{'.' * (30 - filled)}] {done}/{total} finished", nl=False, err=True)
    return show
