"""The queuectl command line: parse, call the library, print.

Promises: every command of docs/guide/commands.md, each with its help;
errors the library raises on purpose (QueueError) and OS errors become one
line on stderr and exit code 1; click's usage errors exit 2; `--spool` and
`--allow-shared-spool` work before or after any command.

This module holds the root group and what every command shares. Each
command lives in a module of this package that is imported only when the
command runs (or when `--help` lists them all): click builds a command's
options when its module runs, so an `enqueue` that built all of them would
pay for every command at start-up. `COMMANDS` names each module. Commands
that need the worker, watchdog or the dashboard import them inside the
command too.
"""

from __future__ import annotations

import errno
import json
import os
import sys
from typing import Any

import click

from ..api import AmbiguousId, Spool
from ..core.errors import JobNotFound, QueueError
from ..core.units import parse_duration as parse_seconds

# Each top-level command: the module of this package that defines it, and its function there.
COMMANDS = {
    "enqueue": "enqueue:enqueue",
    "status": "inspection:status", "list": "inspection:list_jobs", "show": "inspection:show",
    "logs": "inspection:logs",
    "cancel": "changes:cancel", "retry": "changes:retry", "purge": "changes:purge", "dlq": "changes:dlq",
    "config": "settings:config",
    "worker": "workers:worker",
    "group": "workflows:group_cmd", "pause": "workflows:pause", "resume": "workflows:resume", "wait": "workflows:wait",
    "resource": "workflows:resource_cmd",
    "schedule": "schedules:schedule",
    "dashboard": "tools:dashboard", "metrics": "tools:metrics", "doctor": "tools:doctor",
    "schema": "tools:schema", "demo": "tools:demo",
    "completion": "completion:completion", "shell-init": "shell:shell_init",
    "restart": "changes:restart", "rm": "changes:rm", "clean": "changes:clean",
    "hold": "control:hold", "release": "control:release", "start": "control:start", "suspend": "control:suspend",
    "edit": "control:edit",
}

# Names pueue and task-spooler users type, each another name of one command (the same object), except
# `follow` (logs -f) and `kill` (cancel, running jobs only), small commands of their own in the same modules.
ALIASES = {"add": "enqueue", "ls": "list", "log": "logs", "follow": "inspection:follow", "kill": "changes:kill"}


def _show_help(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(ctx.get_help(), color=ctx.color)
        ctx.exit()


def _show_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        from importlib.metadata import version  # read only when asked: an import every command would pay
        click.echo(f"queuectl, version {version('queuectl')}", color=ctx.color)
        ctx.exit()


class Command(click.Command):
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


class ClosedPipe(Exception):
    """stdout's reader went away (`| head`): QueueGroup.main ends the process quietly."""


class QueueGroup(Command, click.Group):
    """Turns the library's deliberate errors and OS errors into one line and exit 1.

    `lazy_commands` maps a command's name to "module:function" in this
    package; the module is imported when the command is looked up.
    """

    command_class = Command
    group_class = type  # a subgroup made with @group.group() is a QueueGroup too
    owns_process = False

    def __init__(self, *args: Any, lazy_commands: dict[str, str] | None = None,
                 aliases: dict[str, str] | None = None, **attrs: Any):
        super().__init__(*args, **attrs)
        self.lazy_commands = lazy_commands or {}
        self.aliases = aliases or {}

    def main(self, args: Any = None, *rest: Any, **options: Any) -> Any:
        # Arguments from sys.argv: this is the program, and the process ends with
        # the command (`worker start` relies on it). An in-process caller, such as
        # click's CliRunner, passes its arguments and keeps its process as it was.
        self.owns_process = args is None
        if not self.owns_process:
            return super().main(args, *rest, **options)
        try:
            try:
                return super().main(args, *rest, **options)  # ends in SystemExit
            finally:
                sys.stdout.flush()  # inside the guard: the last bytes may meet the closed pipe too
        except (ClosedPipe, BrokenPipeError):
            # `queuectl list | head -1`: the reader has what it wanted. Exit as a process killed by
            # SIGPIPE would (128 + 13), with no message; stdout goes to /dev/null so that the
            # interpreter's own flush at exit finds nothing to write to the closed pipe.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise SystemExit(141) from None

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        target = self.aliases.get(cmd_name)
        if command is None and target is not None and ":" not in target:
            command = self.get_command(ctx, target)  # an alias: the same command object under another name
        elif command is None and (cmd_name in self.lazy_commands or target is not None):
            module, _, name = (target or self.lazy_commands[cmd_name]).partition(":")
            # The import statement's own machinery, which `python -X importtime` reports (importlib's is not).
            command = getattr(__import__(f"{__name__}.{module}", fromlist=[name]), name)
            self.add_command(command, cmd_name)
        if command is not None:
            _accept_root_options(command)
        return command

    def list_commands(self, ctx: click.Context) -> list[str]:
        # An alias of a listed command is shown on its command's line ("list (ls)"), not as a row of its own.
        shown = {*self.commands, *self.lazy_commands, *(name for name, target in self.aliases.items()
                                                        if ":" in target)}
        return sorted(name for name in shown if name not in self.aliases or ":" in self.aliases[name])

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        found = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is None or command.hidden:
                continue
            others = [alias for alias, target in self.aliases.items() if target == name]
            found.append((f"{name} ({', '.join(others)})" if others else name, command))
        widest = max((len(shown) for shown, _ in found), default=0)
        rows = [(shown, command.get_short_help_str(limit=formatter.width - 6 - widest)) for shown, command in found]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple:
        name = args[0] if args else ""
        if args and not name.startswith("-") and self.get_command(ctx, name) is None:
            known = [*self.list_commands(ctx), *self.aliases]
            import difflib  # only for a mistyped command: every other start-up goes without it

            close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
            hint = f" Did you mean {' or '.join(repr(match) for match in close)}?" if close else ""
            ctx.fail(f"No such command {name!r}.{hint}")
        return super().resolve_command(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except AmbiguousId as exc:
            fail(f"{exc}; type more of the id")
        except JobNotFound as exc:
            fail(str(exc))
        except QueueError as exc:
            fail(str(exc))
        except OSError as exc:
            if exc.errno == errno.EPIPE:
                # Not an OSError any more: click would print nothing yet exit 1.
                raise ClosedPipe() from None
            fail(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc))
        except KeyboardInterrupt:
            raise SystemExit(130) from None


def fail(message: str) -> None:
    click.echo(f"queuectl: error: {message}", err=True)
    raise SystemExit(1)


def open_spool(ctx: click.Context) -> Spool:
    """The spool is opened (and created) only by commands that use it."""
    options = ctx.find_root().obj
    if "spool" not in options:
        spool = Spool(options["path"], allow_shared=options["allow_shared"])
        for warning in spool.warnings:
            click.echo(f"queuectl: warning: {warning}", err=True)
        options["spool"] = spool
    return options["spool"]


def print_json(document: Any) -> None:
    click.echo(json.dumps(document, indent=2, ensure_ascii=False))


def parse_duration(text: str) -> float:
    """`90`, `90s`, `15m`, `1h30m`, `2d` as seconds (queuectl/core/units.py: the same spellings everywhere)."""
    try:
        return parse_seconds(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


class Duration(click.ParamType):
    """Seconds, written as 90, 90s, 15m, 1h30m or 2d."""

    name = "DURATION"

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        return value if isinstance(value, float) else parse_duration(str(value))


def limit_fields(**texts: str | None) -> dict:
    """--memory, --cpu-time, --max-files as job fields (docs/guide/limits.md); a bad one is a usage error."""
    fields = {}
    for name, text in texts.items():
        if text is None:
            continue
        from ..core.limits import parse_field  # only for a job that sets a limit: enqueue's start-up stays as it was
        try:
            fields[name] = parse_field(name, text)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--" + name.replace("_", "-")) from None
    return fields


def warn(message: str) -> None:
    click.echo(f"queuectl: warning: {message}", err=True)


def resolve(spool: Spool, prefix: str) -> str:
    """A job id from a unique prefix of it (or of its part after the last '-'): the API's resolve."""
    return spool.resolve(prefix)


def no_worker_note(spool: Spool) -> None:
    """One line on stderr when no worker serves the spool: a job enqueued or awaited would wait for ever.

    A spool with no worker record at all needs no more than a listing of
    workers/ (so `enqueue` does not load the registry); records are judged
    alive or gone by the registry, as `worker list` does.
    """
    try:
        entries = os.listdir(os.path.join(spool.root, "workers"))
    except OSError:
        entries = []
    # Worker records are workers/<name>.json; stop.json is the stop request (docs/spool-format.md).
    recorded = any(entry.endswith(".json") and not entry.startswith(".") and entry != "stop.json"
                   for entry in entries)
    if not recorded or not spool.workers():
        warn("no worker is running on this spool; start one: queuectl worker start --detach")


@click.group(cls=QueueGroup, lazy_commands=COMMANDS, aliases=ALIASES,
             context_settings={"help_option_names": ["-h", "--help"]})
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
