"""`queuectl enqueue`: jobs from an argument, --command, stdin or a file of JSON lines.

Every job passes the library's one gate (`Spool.enqueue`, job.build); a
batch (`-` or --file) is all or nothing, and an error names its line.
"""

from __future__ import annotations

import json
import os
import sys

import click

from ..errors import InvalidJob, QueueError
from ..job import iso, parse_time, prepare_fields
from . import Command, Duration, open_spool, print_json


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


@click.command(cls=Command)
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
    spool = open_spool(ctx)
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
            print_json(stored)
            return
        for job in stored:
            click.echo(job["id"])
        return
    fields = _parse_job_argument(job) if job is not None else command
    one = spool.enqueue(fields, id=job_id, if_absent=if_absent, **options)
    print_json(one) if as_json else click.echo(one["id"])
