"""The files a worker keeps in workers/, by name: its lock, its record and its lease.

The bottom of the workers' modules: lease.py (who is alive) and
registry.py (listing workers, stop and cancel requests) both build on it.
A worker holds the flock of `<name>.lock` for its whole life (taken with
filelock: locks.take_worker_lock); here anyone probes it without
creating it, to see whether that worker lives (docs/decisions/locks.md).
"""

from __future__ import annotations

import errno
import json
import os
from typing import Any

from .fsops import STALE, close_quietly, lock_fd, open_nofollow, publish

LEASE_SUFFIX = ".lease"


def lock_path(spool, name: str) -> str:
    return os.path.join(spool.dir("workers"), name + ".lock")


def record_path(spool, name: str) -> str:
    return os.path.join(spool.dir("workers"), name + ".json")


def lease_path(spool, name: str) -> str:
    return os.path.join(spool.dir("workers"), name + LEASE_SUFFIX)


def holds_lock(spool, name: str) -> bool:
    """True while the worker `name` holds its lock (proof of life on its own host only).

    A probe: a second open file description's non-blocking flock, released
    at once. Not through filelock, which would create the lock file of a
    worker that is gone.
    """
    probe = -1
    try:
        # Opened, never created: a live worker's lock file exists for its whole life.
        probe = open_nofollow(lock_path(spool, name))
        return not lock_fd(probe)
    except OSError as exc:
        if exc.errno == errno.ENOENT or exc.errno in STALE:
            return False  # removed by its worker's exit meanwhile (seen late through a network client's cache)
        raise
    finally:
        if probe >= 0:
            close_quietly(probe)


def write_record(spool, name: str, record: dict[str, Any]) -> None:
    """A worker's record needs no fsync (a power cut kills the worker too)."""
    publish(spool.dir("tmp"), record_path(spool, name), json.dumps(record).encode(), durable=False, replace=True)


def read_record(spool, name: str) -> dict[str, Any] | None:
    try:
        with open(record_path(spool, name), encoding="utf-8") as handle:
            record = json.load(handle)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def remove_files(spool, name: str) -> None:
    """A worker's record, lock and lease (a dead worker's, for doctor; a live one's lease is gone already)."""
    for path in (record_path(spool, name), lock_path(spool, name), lease_path(spool, name)):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
