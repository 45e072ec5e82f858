"""Retention: workers delete old finished jobs in bounded batches, and cap each job's log.

Promises (docs/guide/retention.md):
- `keep_completed` / `keep_dead` (config) say which jobs of completed/ and
  dead/ stay: an age ("7d": changed in the last 7 days), a count ("1000":
  the 1000 last changed), or both ("7d,1000": a job goes when it is older
  than 7 days OR beyond the newest 1000); "" keeps everything (default);
- only completed/ and dead/ are ever read here: a pending, failed or
  running job is never touched. Each deletion owns the file's flock first
  (as `purge` does), so a job whose worker still runs its completion hook
  is skipped, and so is one whose hook is `started` while its worker is
  alive (a flock may not reach another host);
- a sweep does a bounded amount of work (one listing of the folder when a
  new round starts, then at most BATCH units: a stat is 1, a deletion
  DELETE_COST; and at most BUDGET seconds): a worker with a large backlog
  to prune still claims jobs between sweeps (docs/guide/retention.md);
- `cap_log` keeps a log over `max_log_bytes` as its head and its tail with
  one marker line between; the worker applies it after each attempt (and
  its hook), when it alone writes that log.
Fails: an OSError stops the batch; the next sweep goes on from a fresh listing.
"""

from __future__ import annotations

import os
import time
from typing import Any

from ..core import fsops, lifecycle
from ..core.fsops import open_nofollow
from ..core.job import parse_keep
from ..core.spool import id_of

BATCH = 10_000     # work units per sweep at most: a stat costs 1, a deletion DELETE_COST
DELETE_COST = 10   # a deletion locks, reads and unlinks two files: about ten stats' worth
BUDGET = 0.05      # seconds of one sweep spent on retention at most
RESCAN_EVERY = 60  # seconds between listings once a folder is within its limits


def cap_log(path: str, max_bytes: int, tmp_dir: str) -> bool:
    """Shrink the log at `path` to its head and tail around a marker line; True if it was over the cap."""
    if max_bytes <= 0:
        return False
    try:
        fd = open_nofollow(path)
    except OSError:
        return False
    try:
        size = os.fstat(fd).st_size
        if size <= max_bytes:
            return False
        head_size = max_bytes // 2
        tail_size = max_bytes - head_size
        head = os.pread(fd, head_size, 0)
        tail = os.pread(fd, tail_size, size - tail_size)
    finally:
        os.close(fd)
    marker = f"\n=== queuectl: {size - head_size - tail_size} bytes cut (max_log_bytes {max_bytes}) ===\n"
    fsops.publish(tmp_dir, path, head + marker.encode() + tail, durable=False, replace=True)
    return True


class Pruner:
    """One worker's retention state: a listing being stat-ed, then the jobs to delete, across sweeps."""

    def __init__(self, spool):
        self.spool = spool
        self.work: dict[str, dict[str, Any]] = {}

    def sweep(self, now: float | None = None) -> int:
        """Do one bounded batch of retention; returns how many jobs were deleted."""
        now = time.time() if now is None else now
        settings = self.spool.config
        deadline = time.monotonic() + BUDGET
        budget = [BATCH]
        deleted = 0
        for state, key in (("completed", "keep_completed"), ("dead", "keep_dead")):
            try:
                age, count = parse_keep(settings.get(key, ""))
            except ValueError:
                continue
            if age is None and count is None:
                self.work.pop(state, None)
                continue
            deleted += self._step(state, age, count, now, deadline, budget)
        return deleted

    def _step(self, state: str, age: float | None, count: int | None, now: float, deadline: float,
              budget: list[int]) -> int:
        work = self.work.get(state)
        if work is None or (not work["names"] and not work["doomed"] and now >= work["rescan_at"]):
            names = self.spool.names(state)
            if age is None and count is not None and len(names) <= count:  # within its count: nothing to stat
                self.work[state] = {"names": [], "stats": [], "doomed": [], "rescan_at": now + RESCAN_EVERY}
                return 0
            work = self.work[state] = {"names": names, "stats": [], "doomed": [], "rescan_at": now + RESCAN_EVERY}
        directory = self.spool.dir(state)
        while work["names"] and budget[0] > 0 and time.monotonic() < deadline:
            name = work["names"].pop()
            budget[0] -= 1
            try:
                work["stats"].append((os.lstat(os.path.join(directory, name)).st_mtime, name))
            except FileNotFoundError:
                continue
            if not work["names"]:
                work["doomed"] = _doomed(work.pop("stats"), age, count, now)
                work["stats"] = []
        deleted = 0
        while work["doomed"] and budget[0] > 0 and time.monotonic() < deadline:
            budget[0] -= DELETE_COST
            name, by_count = work["doomed"].pop()
            deleted += self._delete(state, name, None if by_count else age, now)
        return deleted

    def _delete(self, state: str, name: str, age: float | None, now: float) -> int:
        """`age`: the job was chosen for being older than this, which is checked again under its lock."""
        return int(lifecycle.delete_finished(self.spool, state, id_of(name), older_than=age))


def _doomed(stats: list[tuple[float, str]], age: float | None, count: int | None,
            now: float) -> list[tuple[str, bool]]:
    """(name, chosen by the count rule) of the jobs to delete, newest first (they are popped from the end)."""
    stats.sort()  # oldest first
    beyond = len(stats) - count if count is not None else 0
    doomed = [(name, index < beyond) for index, (mtime, name) in enumerate(stats)
              if index < beyond or (age is not None and now - mtime >= age)]
    doomed.reverse()
    return doomed
