"""Errors a network file system returns for a moment (docs/guide/several-hosts.md): the step is skipped and
tried again, and the worker stays."""

from __future__ import annotations

import errno
import sys
from collections.abc import Callable
from typing import Any

from .fsops import STALE

TRANSIENT = (*STALE, errno.EINTR, errno.ENOENT, errno.EEXIST, errno.EAGAIN, errno.ETIMEDOUT)
TRANSIENT_PAUSE = 0.2  # seconds before a step that failed this way is tried again
# Another host's worker got there first: the name is gone, or the cached name leads nowhere.
LOST_RACE = (errno.ENOENT, *STALE)


def is_transient(exc: OSError) -> bool:
    return exc.errno in TRANSIENT


def note(worker: str, exc: OSError) -> None:
    """One line on stderr for a passing error that cost a step."""
    print(f"queuectl: worker {worker}: {exc.strerror or exc} ({exc.filename or 'spool'}); trying again",
          file=sys.stderr)


def step_ok(worker: str, step: Callable[..., Any], *args: Any) -> bool:
    """Run one step of the loop; a network file system's passing error (ESTALE...) only skips it.

    The step is tried again from the paths next time round, so the worker
    never exits and restarts over it.
    """
    try:
        step(*args)
    except OSError as exc:
        if not is_transient(exc):
            raise
        note(worker, exc)
        return False
    return True
