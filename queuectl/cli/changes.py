"""Changing jobs: `cancel` (`kill`), `retry`, `restart`, `purge` (`clean`), `rm` and the dead-letter queue.

Each move is the API's (queuectl.Spool); this module reports it, one line per job.
Every command that takes ids takes unique prefixes of them too.
"""

from __future__ import annotations

import click

from ..core.errors import InvalidJob, QueueError, WrongState
from ..core.job import shorten
from ..core.spool import id_of
from . import Command, Duration, QueueGroup, fail, open_spool, print_json
from .completion import complete_ids
from .ids import page
from .inspection import limit_options, listing, note

CANCELLABLE = ("pending", "failed", "processing")
# Fields a restarted job does not take from the one it re-runs: its identity, the outcome of its
# runs, and what a schedule or a dependency gave that one run.
RUN_FIELDS = ("id", "state", "attempts", "created_at", "updated_at", "run_at", "next_run_at", "started_at",
              "finished_at", "last_duration", "last_exit_code", "last_error", "worker", "history", "after",
              "waiting_on", "schedule", "slot", "catch_up", "progress", "restarted_from", "hook")


def _cancel_one(spool, job_id: str, *, running_only: bool = False) -> None:
    job_id = spool.resolve(job_id)
    if running_only:
        state = spool.find(job_id)
        if state != "processing":
            raise WrongState(f"job {job_id} is {state}, not running; 'queuectl cancel {job_id}' cancels it")
    previous = spool.cancel(job_id)
    if previous != "processing":
        click.echo(f"{job_id}: cancelled ({previous} -> dead)")
        return
    from ..follow import wait_settled
    settled = wait_settled(spool, job_id)
    if settled is None:
        click.echo(f"{job_id}: stop requested; its worker moves it to dead/")
    else:
        click.echo(f"{job_id}: stopped and cancelled (running -> {settled})")


@click.command(cls=Command)
@click.argument("job_ids", nargs=-1)
@click.option("--all", "cancel_all", is_flag=True, help="Every unfinished job (pending, failed, running).")
@click.option("--state", "-s", "states", multiple=True, type=click.Choice(CANCELLABLE),
              help="With --all: only jobs in this state (repeatable).")
@click.option("--group", "-g", metavar="NAME", help="With --all: only the jobs of this group.")
@click.pass_context
def cancel(ctx, job_ids, cancel_all, states, group):
    """Move pending or failed jobs to dead/ as cancelled; a running job is stopped first."""
    if bool(job_ids) == cancel_all:
        raise click.UsageError("give job ids or --all")
    if not cancel_all and (states or group):
        raise click.UsageError("--state and --group go with --all")
    spool = open_spool(ctx)
    if cancel_all:
        jobs, _ = page(spool, list(states or CANCELLABLE), limit=None, group=group)
        job_ids = tuple(str(job["id"]) for job in jobs)
        if not job_ids:
            click.echo("nothing to cancel")
            return
    failures = 0
    for job_id in job_ids:
        try:
            _cancel_one(spool, job_id)
        except QueueError as exc:
            if not cancel_all:
                raise
            failures += 1  # it finished (or went) meanwhile
            click.echo(f"queuectl: {exc}", err=True)
    if failures:
        raise SystemExit(1)


@click.command(cls=Command)
@click.argument("job_ids", nargs=-1, required=True)
@click.pass_context
def kill(ctx, job_ids):
    """Stop running jobs and cancel them (pueue's kill); a job that is not running is refused."""
    spool = open_spool(ctx)
    for job_id in job_ids:
        _cancel_one(spool, job_id, running_only=True)


@click.command(cls=Command)
@click.argument("job_ids", nargs=-1, required=True)
@click.pass_context
def retry(ctx, job_ids):
    """Run failed jobs now, without waiting for their backoff."""
    spool = open_spool(ctx)
    for job_id in job_ids:
        job = spool.retry(job_id)
        click.echo(f"{job['id']}: failed -> pending")


@click.command(cls=Command)
@click.argument("job_ids", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print the new jobs as a JSON array instead of their ids.")
@click.option("--in-place", is_flag=True,
              help="Put the same job back in pending/ instead (attempts reset, history kept).")
@click.pass_context
def restart(ctx, job_ids, as_json, in_place):
    """Run finished (completed or dead) jobs again, each as a NEW job.

    The new job has the same command and fields, a fresh id, no runs yet,
    and `restarted_from` naming the job it re-runs, which stays as it is.
    Prints "OLD -> NEW" per job. With --in-place the job itself goes back
    to pending/ under its id, its attempts reset and its history kept.
    """
    spool = open_spool(ctx)
    if in_place:
        again = []
        for job_id in job_ids:
            full = spool.resolve(job_id)
            previous = spool.find(full)
            again.append(spool.restart_in_place(full))
            if not as_json:
                click.echo(f"{full}: {previous} -> pending")
        if as_json:
            print_json(again)
        return
    made = []
    for job_id in job_ids:
        old = spool.get(job_id)
        if old.get("state") not in ("completed", "dead"):
            raise WrongState(f"job {old['id']} is {old.get('state')}; restart re-runs completed or dead jobs")
        fields = {key: value for key, value in old.items() if key not in RUN_FIELDS}
        if not isinstance(fields.get("command"), str):
            raise InvalidJob(f"job {old['id']} has no command to run again (a file that was never a valid job)")
        new = spool.enqueue({**fields, "restarted_from": old["id"]})
        made.append(new)
        if not as_json:
            click.echo(f"{old['id']} -> {new['id']}")
    if as_json:
        print_json(made)


def _purge(ctx, completed: bool, dead: bool, older_than) -> None:
    states = [state for state, chosen in (("completed", completed), ("dead", dead)) if chosen]
    needed: list[str] = []
    removed = open_spool(ctx).purge(states, older_than, needed)
    click.echo(f"purged {removed} job(s)")
    if needed:
        click.echo(f"kept {len(needed)} completed job(s) that waiting jobs depend on: "
                   f"{shorten(' '.join(needed), 200)}", err=True)


@click.command(cls=Command)
@click.option("--completed", is_flag=True, help="Delete completed jobs.")
@click.option("--dead", is_flag=True, help="Delete dead jobs.")
@click.option("--older-than", type=Duration(), help="Only jobs last changed this long ago (7d, 12h, 1h30m).")
@click.pass_context
def purge(ctx, completed, dead, older_than):
    """Delete finished jobs and their logs.

    A completed job that a pending or failed job waits for (`after`) is kept:
    a line on stderr names those kept, and the exit code stays 0.
    """
    if not (completed or dead):
        raise click.UsageError("choose --completed, --dead or both")
    _purge(ctx, completed, dead, older_than)


@click.command(cls=Command)
@click.option("--completed", is_flag=True, help="Only completed jobs [default: completed and dead].")
@click.option("--dead", is_flag=True, help="Only dead jobs [default: completed and dead].")
@click.option("--older-than", type=Duration(), help="Only jobs last changed this long ago (7d, 12h, 1h30m).")
@click.pass_context
def clean(ctx, completed, dead, older_than):
    """Delete every finished job and its log (pueue's clean): `purge --completed --dead`."""
    both = not (completed or dead)
    _purge(ctx, completed or both, dead or both, older_than)


@click.command(cls=Command)
@click.argument("job_ids", nargs=-1, required=True)
@click.pass_context
def rm(ctx, job_ids):
    """Delete finished jobs (completed or dead) and their logs, one by one (purge for a few ids).

    A pending, failed or running job is refused, not cancelled: `queuectl
    cancel ID` first, which keeps it in dead/ for a look, then `rm`.
    """
    spool = open_spool(ctx)
    for job_id in job_ids:
        full = spool.resolve(job_id)
        state = spool.find(full)
        if state not in ("completed", "dead"):
            raise WrongState(f"job {full} is {state}; cancel it first ('queuectl cancel {full}'), then rm")
        if not spool.remove(full):
            fail(f"job {full} stays: a worker is busy with it (a hook) or a waiting job depends on it")
        click.echo(f"{full}: removed")


@click.group(cls=QueueGroup)
def dlq():
    """The dead-letter queue: jobs out of retries, invalid or cancelled."""


@dlq.command("list")
@limit_options
@click.option("--json", "as_json", is_flag=True, help="A JSON array of job objects.")
@click.pass_context
def dlq_list(ctx, limit, show_all, as_json):
    """Dead jobs with the reason each one died (a line on stderr says when rows were cut)."""
    jobs, cut = listing(ctx, ["dead"], limit, show_all, "dead jobs")
    if as_json:
        print_json(jobs)
    elif not jobs:
        click.echo("the dead-letter queue is empty")
    else:
        width = max(10, *(len(str(job.get("id"))) for job in jobs))
        click.echo(f"{'ID':<{width}}  {'ATT':>3}  {'REASON':<40}  COMMAND")
        for job in jobs:
            click.echo(f"{str(job.get('id')):<{width}}  {job.get('attempts', 0)!s:>3}  "
                       f"{shorten(job.get('last_error') or '-', 40):<40}  {shorten(job.get('command') or '-', 40)}")
    note(cut)


@dlq.command("retry")
@click.argument("job_ids", nargs=-1, shell_complete=complete_ids("dead"))
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
    spool = open_spool(ctx)
    if retry_all:
        job_ids = sorted(id_of(name) for name in spool.names("dead"))
    retried = invalid = failures = 0
    for job_id in job_ids:
        try:
            job_id = spool.dlq_retry(job_id)["id"]
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
        fail("the dead-letter queue is empty")
    if invalid:
        click.echo(f"queuectl: retried {retried} dead job(s); skipped {invalid} invalid record(s), "
                   f"which cannot be retried", err=True)
    if failures:
        raise SystemExit(1)
    if not retried:
        fail("nothing to retry: the dead-letter queue holds only invalid records")
