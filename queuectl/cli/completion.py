"""`queuectl completion bash|zsh|fish`: the shell's completion script, and what it completes.

The script is click's own: the shell runs `queuectl` with
`_QUEUECTL_COMPLETE` set for every <TAB>, and click answers from the
command tree. Commands that take job ids attach `complete_ids(...)` to their
argument, so the ids come from the spool's folders (docs/guide/completion.md).

A completion reads folder listings only: it never opens a job file, never
creates the spool and never fails; an error completes nothing, since a
traceback would land in the middle of the user's command line.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import click

from ..core.job import STATES
from ..core.spool import id_of, job_name, resolve_path
from . import Command

SHELLS = ("bash", "zsh", "fish")
COMPLETE_VAR = "_QUEUECTL_COMPLETE"


def spool_root(ctx: click.Context) -> str:
    """The spool a command line names: `queuectl --spool PATH`, else $QUEUECTL_SPOOL, else the default."""
    root = ctx.find_root()
    path = root.params.get("path") or (root.obj or {}).get("path")
    return resolve_path(path)


def ids_in(root: str, states: tuple[str, ...]) -> list[str]:
    """The ids of the jobs in these state folders, sorted; a missing or unreadable folder has none."""
    found: set[str] = set()
    for state in states:
        try:
            names = os.listdir(os.path.join(root, state))
        except OSError:
            continue
        found.update(id_of(name) for name in names if job_name(name))
    return sorted(found)


def complete_ids(*states: str) -> Callable[[click.Context, click.Parameter, str], list[str]]:
    """A `shell_complete` function offering the ids in these folders (every state when none is named)."""
    folders = states or STATES

    def complete(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
        typed = ctx.params.get(param.name or "") or ()
        chosen = set(typed) if isinstance(typed, tuple | list) else {typed}
        return [job_id for job_id in ids_in(spool_root(ctx), folders)
                if job_id.startswith(incomplete) and job_id not in chosen]

    return complete


@click.command(cls=Command)
@click.argument("shell", type=click.Choice(SHELLS))
def completion(shell: str) -> None:
    """Print the completion script for SHELL (bash, zsh or fish); see docs/guide/completion.md."""
    from click.shell_completion import get_completion_class  # only this command needs it

    from . import main

    script_class = get_completion_class(shell)
    if script_class is None:  # click knows every name SHELLS lists
        raise click.UsageError(f"no completion for {shell}")
    click.echo(script_class(main, {}, "queuectl", COMPLETE_VAR).source())
