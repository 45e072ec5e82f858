"""`queuectl shell-init`: a shell function that enqueues at the cost of one `mv`.

`eval "$(queuectl shell-init)"` defines `queuectl_enqueue`, which runs the
`queuectl-enqueue` script (docs/guide/commands.md) inside the calling shell
(a subshell, so its variables and `exit` stay there) instead of as a program.
What the script would start programs for is done here, once: the spool's
folders are checked private (as every command checks them) and the boot
time is noted, so that the script's clock is /proc/uptime read by the shell
itself. Each job then starts one program, the `mv` into pending/ (and `sync`
when the spool is durable).
"""

from __future__ import annotations

import os
import shlex
import shutil
import sysconfig
import time

import click

from ..core.errors import QueueError
from . import Command, open_spool

SCRIPT = "queuectl-enqueue"


def script_path() -> str:
    """Where `queuectl-enqueue` is installed: on PATH, else in this Python's scripts folder."""
    found = shutil.which(SCRIPT)
    if found:
        return os.path.abspath(found)
    candidate = os.path.join(sysconfig.get_path("scripts"), SCRIPT)
    if os.access(candidate, os.X_OK):
        return candidate
    raise QueueError(f"{SCRIPT} is not installed beside queuectl (reinstall the package)")


def boot_ms() -> int | None:
    """The wall clock at boot in milliseconds, as now minus /proc/uptime; None without /proc."""
    try:
        with open("/proc/uptime", "rb") as handle:
            up = float(handle.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return round(time.time() * 1000 - up * 1000)


@click.command("shell-init", cls=Command)
@click.option("--name", default="queuectl_enqueue", show_default=True, metavar="NAME",
              help="The name of the shell function.")
@click.pass_context
def shell_init(ctx: click.Context, name: str) -> None:
    """Print a shell function that enqueues without starting Python.

    Use it as `eval "$(queuectl shell-init)"`, then `queuectl_enqueue 'make
    test'`: the options of queuectl-enqueue, the spool of this command unless
    --spool says otherwise. The spool's modes are checked now, not at each
    job: run it again after changing them.
    """
    if not name.isidentifier() or not name.isascii():
        raise click.BadParameter(f"{name!r} is not a shell function name (letters, digits, _)",
                                 param_hint="--name")
    spool = open_spool(ctx)
    script = script_path()
    root = os.path.abspath(spool.root)  # given to the script as --spool: it compares it as it is
    boot = boot_ms()
    checked = f"QUEUECTL_ENQUEUE_CHECKED={shlex.quote(root)}"
    clock = f" QUEUECTL_ENQUEUE_BOOT_MS={boot}" if boot is not None else ""
    if any(ord(char) < 32 or ord(char) == 127 for char in root):
        # The script refuses such a path; printed here, a newline would end the comment line
        # below and the rest of the path would run at `eval`.
        raise QueueError(f"{SCRIPT} takes no spool path with a newline or control character: {root!r}")
    click.echo("\n".join([
        f"# {name}: enqueue into {root} from this shell (queuectl shell-init; see {SCRIPT} --help).",
        f"{name}() (",
        f"\t{checked}{clock}",
        f"\tset -- --spool {shlex.quote(root)} \"$@\"",
        f"\t. {shlex.quote(script)}",
        ")",
    ]))
