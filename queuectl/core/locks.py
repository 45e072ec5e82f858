"""Named lock files, through filelock: a worker's lock, and exclusive edits of the spool's shared files.

Where a lock is a file of its own, filelock takes it: a worker's
`workers/<name>.lock` (held for the worker's whole life; other processes
probe it to see whether the worker lives: workerfiles.holds_lock), and
`named_lock` around a read-modify-write of `config.json`, a schedule, a
group's limit, or doctor's repairs. A job file is never locked this way:
filelock creates the file it locks, and a job keeps its own flock on its
own inode (docs/decisions/locks.md).

Only the commands that take such a lock import this module: filelock
costs more to load than a whole `queuectl enqueue`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from filelock import FileLock, Timeout

from .errors import SpoolError
from .workerfiles import lock_path

EDIT_TIMEOUT = 10.0  # seconds an edit waits for another process's edit of the same file
LOCK_MODE = 0o600  # the spool is private to its user (docs/spool-format.md)


def _lock(path: str, timeout: float) -> FileLock:
    # flock only: a soft lock (a file naming its pid) would not be seen by the probes of
    # workerfiles.holds_lock, nor released by a process killed with SIGKILL.
    return FileLock(path, timeout=timeout, mode=LOCK_MODE, fallback_to_soft=False)


def take_worker_lock(spool, name: str) -> FileLock:
    """Take worker `name`'s lock for this process's life; `release()` it (or exit) to let go.

    Raises SpoolError when a live worker holds the name.
    """
    lock = _lock(lock_path(spool, name), 0)
    try:
        lock.acquire(blocking=False)
    except Timeout:
        raise SpoolError(f"worker name {name} is taken by a live worker") from None
    return lock


def spool_lock(spool, what: str, *, timeout: float | None = None) -> contextlib.AbstractContextManager[None]:
    """`named_lock` on `<spool>/<what>.lock`: "config.json" (config set), "schedules" (schedule
    edits), "groups" (group limits, rates and pauses), "resources" (a host's
    declared resources), "doctor" (doctor --repair). At the spool's top,
    where no job id can reach, and never removed."""
    return named_lock(os.path.join(spool.root, what + ".lock"), timeout=EDIT_TIMEOUT if timeout is None else timeout,
                      what=what)


@contextlib.contextmanager
def named_lock(path: str, *, timeout: float = EDIT_TIMEOUT, what: str | None = None) -> Iterator[None]:
    """Hold the lock file `path` (created if needed, left in place) inside the block.

    For a read-modify-write of a file several processes may edit at once:
    the lock file sits beside it (e.g. `config.json.lock` next to
    `config.json`). Raises SpoolError, naming `what` and the lock file,
    when another process holds it for `timeout` seconds.
    """
    lock = _lock(path, timeout)
    try:
        lock.acquire()
    except Timeout:
        raise SpoolError(f"{what or os.path.basename(path)} is being changed by another process "
                         f"(it holds {path}); try again") from None
    except OSError as exc:
        raise SpoolError(f"cannot lock {path}: {exc.strerror or exc}") from None
    try:
        yield
    finally:
        lock.release()
