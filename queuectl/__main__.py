"""Where the `queuectl` program starts: the console script and `python -m queuectl`.

A command is a short process, and Python's cyclic collector would spend
its start-up walking the objects that importing the CLI creates (click's,
the spool's, the job format's): a twentieth of an enqueue, and it frees
nothing, since what an import makes lives until the process ends. So the
collector is off while the CLI is imported; `gc.freeze()` then sets those
objects aside for good (no later collection, and no collection at exit,
walks them again), and the collector is back on before any command runs,
a worker's loop included (docs/decisions/startup.md).
"""

import gc

gc.disable()

from .cli import main as cli  # noqa: E402 - imported with the collector off, as said above

gc.freeze()
gc.enable()


def main() -> None:
    """Run the command line (the console script's entry point)."""
    cli(prog_name="queuectl")


if __name__ == "__main__":
    main()
