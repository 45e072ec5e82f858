"""Changing jobs: `cancel`, `retry`, `purge` and the dead-letter queue (`dlq list`, `dlq retry`).

Each move is lifecycle.py's; this module reports it, one line per job.
"""

from __future__ import annotations

import click

from ..errors import InvalidJob, QueueError
from ..job import shorten
from ..spool import id_of
from . import Command, Duration, QueueGroup, fail, open_spool, print_json
from .completion import complete_ids
from .inspection import limit_options, listing, note


@click.command(cls=Command)
@click.argument("job_ids", nargs=-1, required=True)
@click.pass_context
def cancel(ctx, job_ids):
    """Move pending or failed jobs to dead/ as cancelled; a running job is stopped first."""
    from ..lifecycle import cancel as cancel_job
    spool = open_spool(ctx)
    for job_id in job_ids:
        previous = cancel_job(spool, job_id)
        if previous != "processing":
            click.echo(f"{job_id}: cancelled ({previous} -> dead)")
            continue
        from ..follow import wait_settled
        settled = wait_settled(spool, job_id)
        if settled is None:
            click.echo(f"{job_id}: stop requested; its worker moves it to dead/")
        else:
            click.echo(f"{job_id}: stopped and cancelled (running -> {settled})")


@click.command(cls=Command)
@click.argument("job_ids", nargs=-1, required=True)
@click.pass_context
def retry(ctx, job_ids):
    """Run failed jobs now, without waiting for their backoff."""
    from .. import lifecycle
    spool = open_spool(ctx)
    for job_id in job_ids:
        lifecycle.retry(spool, job_id)
        click.echo(f"{job_id}: failed -> pending")


@click.command(cls=Command)
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
    from ..lifecycle import purge as purge_jobs
    needed: list[str] = []
    removed = purge_jobs(open_spool(ctx), states, older_than, needed)
    click.echo(f"purged {removed} job(s)")
    if needed:
        click.echo(f"kept {len(needed)} completed job(s) that waiting jobs depend on: "
                   f"{shorten(' '.join(needed), 200)}", err=True)


@click.group(cls=QueueGroup)
def dlq():
    """The dead-letter queue: jobs out of retries, invalid or cancelled."""


@dlq.command("list")
@limit_options
@click.option("--json", "as_json", is_flag=True, help="A JSON array of job objects.")
@click.pass_context
def dlq_list(ctx, limit, show_all, as_json):
    """Dead jobs with the reason each one died (a line on stderr says when rows were cut)."""
    jobs, cut = listing(ctx, "dead", limit, show_all, "dead jobs")
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
    from .. import lifecycle
    spool = open_spool(ctx)
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
        fail("the dead-letter queue is empty")
    if invalid:
        click.echo(f"queuectl: retried {retried} dead job(s); skipped {invalid} invalid record(s), "
                   f"which cannot be retried", err=True)
    if failures:
        raise SystemExit(1)
    if not retried:
        fail("nothing to retry: the dead-letter queue holds only invalid records")
