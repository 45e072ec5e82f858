"""Controlling single jobs: `hold`, `release`, `start`, `suspend`, `edit` (and `resume ID`, `pause --running`).

Each change is the API's (queuectl.Spool), a lifecycle transition made under
the job's lock; this module reports it, one line per job.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import tempfile
from collections.abc import Callable

import click

from ..core.errors import InvalidJob, QueueError
from . import Command, open_spool


def _each(spool, job_ids: tuple[str, ...], act: Callable[[str], bool], done: str, already: str, *,
          resolve: bool = True) -> None:
    """`act` on each job (ids resolved from their prefixes), one line each: `done`, or `already` when it did nothing."""
    for job_id in job_ids:
        full = spool.resolve(job_id) if resolve else job_id
        click.echo(f"{full}: {done}" if act(full) else f"{full}: {already}")


@click.command(cls=Command)
@click.argument("job_ids", nargs=-1, required=True)
@click.pass_context
def hold(ctx, job_ids):
    """Keep pending or failed jobs from starting until `release` (list -s held shows them)."""
    spool = open_spool(ctx)
    _each(spool, job_ids, spool.hold, "held", "was held already")


@click.command(cls=Command)
@click.argument("job_ids", nargs=-1, required=True)
@click.pass_context
def release(ctx, job_ids):
    """Let held jobs start when they are due."""
    spool = open_spool(ctx)
    _each(spool, job_ids, spool.release, "released", "was not held")


@click.command(cls=Command)
@click.argument("job_ids", nargs=-1, required=True)
@click.pass_context
def start(ctx, job_ids):
    """Run waiting, delayed or held jobs now: clears run_at / next_run_at and releases a hold.

    A job's `after` dependencies and its group's limit still apply.
    """
    spool = open_spool(ctx)
    for job_id in job_ids:
        job = spool.start(job_id)
        click.echo(f"{job['id']}: due now")


@click.command(cls=Command)
@click.argument("job_ids", nargs=-1, required=True)
@click.pass_context
def suspend(ctx, job_ids):
    """Stop running jobs' processes (SIGSTOP) until `resume ID`; their stopped time does not count
    against their timeout."""
    spool = open_spool(ctx)
    _each(spool, job_ids, spool.suspend, "suspended", "was suspended already")


def suspend_running(spool) -> None:
    """`pause --running`: a suspend request for every running job."""
    from .ids import page
    jobs, _ = page(spool, ["processing"], limit=None)
    if not jobs:
        click.echo("no running job to suspend")
    for job in jobs:
        try:
            asked = spool.suspend(job["id"])
        except QueueError as exc:  # it finished meanwhile
            click.echo(f"queuectl: {exc}", err=True)
            continue
        click.echo(f"{job['id']}: suspended" if asked else f"{job['id']}: was suspended already")


def resume_jobs(spool, job_ids: tuple[str, ...], every: bool) -> None:
    """`resume ID...` / `resume --running`: the suspend requests go; workers send SIGCONT."""
    if every:
        job_ids = tuple(sorted(spool.suspended()))
        if not job_ids:
            click.echo("no suspended job")
    _each(spool, job_ids, spool.resume_job, "resumed", "was not suspended", resolve=not every)


def _assignment(text: str) -> tuple[str, object]:
    key, equals, value = text.partition("=")
    if not equals or not key:
        raise click.BadParameter(f"{text!r} is not key=value", param_hint="--set")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def _editor() -> list[str]:
    return shlex.split(os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi")


def _edit_in_editor(fields: dict) -> dict:
    """The fields after the user's editor is done with them, as pretty JSON in a temporary file."""
    handle, path = tempfile.mkstemp(prefix="queuectl-edit-", suffix=".json")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(json.dumps(fields, indent=2, ensure_ascii=False) + "\n")
        try:
            code = subprocess.call([*_editor(), path])
        except OSError as exc:
            raise InvalidJob(f"cannot run the editor {_editor()[0]!r}: {exc.strerror}; "
                             f"set $VISUAL or $EDITOR") from None
        if code != 0:
            raise InvalidJob(f"the editor exited with status {code}; the job is unchanged")
        with open(path, encoding="utf-8") as source:
            text = source.read()
    finally:
        os.unlink(path)
    try:
        return json.loads(text)
    except ValueError as exc:
        raise InvalidJob(f"the edited job is not valid JSON ({exc}); the job is unchanged") from None


@click.command(cls=Command)
@click.argument("job_id")
@click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE",
              help="Set a field without an editor (repeatable); VALUE is read as JSON when it parses, "
                   "else as a string.")
@click.pass_context
def edit(ctx, job_id, assignments):
    """Change a pending, failed or dead job's own fields in $VISUAL / $EDITOR (vi), or with --set.

    The result is checked like an enqueue and written atomically under the
    job's lock; each change is recorded in its history. id, state, attempts,
    history and unique_key cannot be edited; a running job is refused.
    """
    spool = open_spool(ctx)
    pairs = [_assignment(text) for text in assignments]

    def change(fields: dict) -> dict:
        if pairs:
            return {**fields, **dict(pairs)}
        return _edit_in_editor(fields)

    full = spool.resolve(job_id)
    changed = spool.edit(full, change)
    if not changed:
        click.echo(f"{full}: nothing changed")
        return
    for key, (old, new) in changed.items():
        click.echo(f"{full}: {key}: {json.dumps(old)} -> {json.dumps(new)}")
