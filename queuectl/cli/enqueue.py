"""`queuectl enqueue`: jobs from an argument, --command, stdin or a file of JSON lines.

Every job passes the library's one gate (`Spool.enqueue`, job.build); a
batch (`-` or --file) is all or nothing, and an error names its line.
"""

from __future__ import annotations

import json
import os
import sys

import click

from ..core.errors import InvalidJob, QueueError
from ..core.job import iso, parse_needs, parse_time, prepare_fields
from . import Command, Duration, limit_fields, no_worker_note, open_spool, print_json, warn

JSON_HINT = ("to run it as a shell command instead, pass it with --command '...' or after --: "
             "queuectl enqueue -- '{ echo a; } > f'")


def _parse_job_argument(text: str) -> dict | str:
    """An argument starting with `{` is a JSON job; anything else is the command itself."""
    if not text.lstrip().startswith("{"):
        return text
    try:
        return json.loads(text)
    except ValueError as exc:
        raise InvalidJob(f"invalid JSON job: {exc}; {JSON_HINT}") from None


def _env_pairs(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
    """--env KEY=VALUE options as a dict; a later KEY wins."""
    pairs: dict[str, str] = {}
    for value in values:
        name, equals, text = value.partition("=")
        if not equals or not name:
            raise click.BadParameter(f"{value!r} is not KEY=VALUE")
        pairs[name] = text
    return pairs


class _Documents:
    """Jobs from a stream of JSON documents: JSON lines, pretty-printed objects (what `show --json`
    prints), or arrays of objects, in any mix. `line` is the line of the document being handled (None
    once all are read), so an error can name it."""

    def __init__(self, stream, source: str):
        self.stream, self.source = stream, source
        self.line: int | None = None

    def read(self) -> list[tuple[int, dict]]:
        """Every job with the line its document starts on."""
        found = []
        for fields in self._documents():
            assert self.line is not None
            found.append((self.line, fields))
        self.line = None
        return found

    def each(self, jobs: list[tuple[int, dict]]):
        """The jobs in order, `line` telling where the one being handled came from."""
        for self.line, fields in jobs:
            yield fields
        self.line = None

    def _documents(self):
        text = self.stream.read()
        decoder = json.JSONDecoder()
        position = 0
        while True:
            while position < len(text) and text[position].isspace():
                position += 1
            if position >= len(text):
                break
            self.line = text.count("\n", 0, position) + 1
            try:
                document, position = decoder.raw_decode(text, position)
            except ValueError as exc:
                raise InvalidJob(f"invalid JSON: {exc.args[0].split(':')[0]}") from None
            for fields in document if isinstance(document, list) else [document]:
                if not isinstance(fields, dict):
                    raise InvalidJob("a job is a JSON object (an array holds objects)")
                yield fields


class EnqueueCommand(Command):
    """Notes whether the words came after `--`: then even one starting with `{` is a command, not JSON."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["enqueue.literal"] = "--" in args
        # The older form, one quoted command or JSON job (or `-`) with options after it, keeps working:
        # options are read after the first word only when that word is a whole command by itself.
        found, _, _ = self.make_parser(ctx).parse_args(args=list(args))
        words = found.get("words")
        words = words if isinstance(words, (list, tuple)) else ()
        if "--" not in args and words and (words[0] == "-" or words[0].lstrip().startswith("{")
                                            or any(char.isspace() for char in words[0])):
            ctx.allow_interspersed_args = True
        return super().parse_args(ctx, args)


# Options end at the first word of the command: `queuectl enqueue ls -la` runs `ls -la`, as pueue add does.
@click.command(cls=EnqueueCommand, context_settings={"allow_interspersed_args": False})
@click.argument("words", nargs=-1)
@click.option("--command", "-c", help="The shell command (instead of WORDS).")
@click.option("--id", "job_id", help="Job id (default: generated, sortable by time).")
@click.option("--priority", "-p", type=int, help="Higher runs first [default: 0].")
@click.option("--max-retries", type=click.IntRange(min=0), help="Retries after the first failure [default: config].")
@click.option("--timeout", type=Duration(), help="Time before the job is killed: 90, 10m, 1h30m [default: config].")
@click.option("--run-at", help="Do not start before this ISO-8601 time (local time without an offset).")
@click.option("--delay", type=Duration(), help="Do not start before this delay (30s, 15m, 1h30m, 2d).")
@click.option("--cwd", metavar="DIR",
              help="Run the command in this folder (a relative one is taken from here). One that does not "
                   "exist here gets a warning: a worker on another host may have it.")
@click.option("--env", "env", metavar="KEY=VALUE", multiple=True, callback=_env_pairs,
              help="Set a variable in the job's environment (repeatable).")
@click.option("--file", "-f", "file", type=click.File("r"),
              help="Many jobs: JSON objects, one per line or pretty-printed, or JSON arrays of them.")
@click.option("--after", "after", multiple=True, metavar="ID[,ID...]",
              help="Start only once these jobs have completed (repeatable; unique id prefixes work).")
@click.option("--group", "group", metavar="NAME", help="Run within this group's limit (see 'group set').")
@click.option("--unique", "unique", metavar="KEY",
              help="Refuse the job while another job with this key is pending, running or failed.")
@click.option("--if-absent", is_flag=True,
              help="With --unique (or a unique_key in the JSON): print the existing job's id and exit 0.")
@click.option("--on-success", metavar="CMD", help="Hook command run after the job completes.")
@click.option("--on-failure", metavar="CMD", help="Hook command run after a failed run that will be retried.")
@click.option("--on-dead", metavar="CMD", help="Hook command run after the job goes to dead/.")
@click.option("--hold", "held", is_flag=True, help="Do not start the job until 'queuectl release ID'.")
@click.option("--needs", "needs", multiple=True, metavar="NAME=N[,...]",
              help="Resources the job needs on its host, e.g. gpu=2 (see 'resource set'); repeatable.")
@click.option("--memory", metavar="SIZE", help="Memory limit of the job: 512M, 2G [default: config].")
@click.option("--cpu-time", metavar="TIME", help="CPU time limit of the job: 90, 10m [default: config].")
@click.option("--max-files", metavar="N", help="Open files limit of the job [default: config].")
@click.option("--json", "as_json", is_flag=True,
              help="Print the stored job as JSON instead of its id (a JSON array for - or --file).")
@click.pass_context
def enqueue(ctx, words, command, job_id, priority, max_retries, timeout, run_at, delay, cwd, env, file, after,
            group, unique, if_absent, on_success, on_failure, on_dead, held, needs, memory, cpu_time, max_files,
            as_json):
    """Enqueue a job: a command (`make -j4 test`), JSON ('{"command": "make"}'), or '-' for many.

    \b
    queuectl enqueue echo hello world        the words are the command
    queuectl enqueue -- make -j4 test        the same, options after -- are the command's
    queuectl enqueue 'make && make test'     one argument: run by /bin/sh -c as written
    queuectl enqueue '{"command": "make"}'   an argument starting with { is a JSON job
    queuectl show --json ID | queuectl enqueue -    JSON objects or arrays, pretty or one per line

    Options apply to every job of a batch and win over the JSON's fields;
    --env adds to the job's own env object. Options must come before the
    command's first word.
    """
    literal = ctx.meta.get("enqueue.literal", False)
    batch = file is not None or (words == ("-",) and not literal)
    if len(words) > 1:
        import shlex  # only for a command given as several words

        job: str | None = shlex.join(words)
    else:
        job = words[0] if words else None
    if sum(x is not None for x in (job, command, file)) != 1:
        raise click.UsageError("give exactly one of a COMMAND, --command or --file")
    if run_at is not None and delay is not None:
        raise click.UsageError("--run-at and --delay exclude each other")
    after_ids = [part.strip() for value in after for part in value.split(",") if part.strip()]
    spool = open_spool(ctx)
    if cwd:
        cwd = os.path.abspath(os.path.expanduser(cwd))
        if not os.path.isdir(cwd):
            warn(f"--cwd {cwd}: no such folder here; the job fails where a worker has none either")
    options = dict(priority=priority, max_retries=max_retries, timeout=timeout, delay=delay,
                   run_at=iso(parse_time(run_at)) if run_at else None, env=env, cwd=cwd,
                   after=[spool.resolve(dep) for dep in after_ids] or None, group=group, unique=unique,
                   needs=parse_needs(needs) if needs else None)
    hooks = {name: value for name, value in (("on_success", on_success), ("on_failure", on_failure),
                                             ("on_dead", on_dead)) if value is not None}
    hooks.update(limit_fields(memory=memory, cpu_time=cpu_time, max_files=max_files))
    if held:
        hooks["held"] = True

    def with_hooks(fields: dict | str) -> dict | str:
        if not hooks:
            return fields
        return {**({"command": fields} if isinstance(fields, str) else fields), **hooks}

    def check_if_absent(jobs: list) -> None:
        if if_absent and unique is None and not any(isinstance(j, dict) and "unique_key" in j for j in jobs):
            raise click.UsageError("--if-absent needs --unique KEY (or a unique_key in the job)")

    if batch:
        if job_id is not None:
            raise click.UsageError("--id applies to a single job")
        reader = _Documents(file, file.name) if file is not None else _Documents(sys.stdin, "stdin")
        try:
            jobs = reader.read()
            check_if_absent([fields for _, fields in jobs])
            stored = spool.enqueue_many((prepare_fields(with_hooks(fields), **options) for fields in reader.each(jobs)),
                                        if_absent=if_absent)
        except QueueError as exc:
            if reader.line is None:
                raise
            raise type(exc)(f"{reader.source} line {reader.line}: {exc} (no job enqueued)") from None
        if as_json:
            print_json(stored)
        else:
            for one in stored:
                click.echo(one["id"])
    else:
        fields = command if job is None else job if literal or len(words) > 1 else _parse_job_argument(job)
        check_if_absent([fields])
        one = spool.enqueue(with_hooks(fields), id=job_id, if_absent=if_absent, **options)
        print_json(one) if as_json else click.echo(one["id"])
    no_worker_note(spool)
