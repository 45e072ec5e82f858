"""What the dashboard and `queuectl metrics` read from the spool, at a cost that stays flat at 100,000 jobs.

- `Scanner.scan()` reads each state folder's entries once and returns a
  `Snapshot`: the number of jobs per state and, for the settled folders
  (completed/, failed/, dead/), each file's mtime. A job file is rewritten
  when it settles, so its mtime is the settle time, which is what the
  per-minute chart needs. Only files with a new name or a new inode since
  the previous scan are stat'ed: after the first scan a scan costs one
  readdir per folder, and no job file is parsed. The memory this takes is
  about 200 bytes per settled job.
- A name on the same inode as at the last scan is not always the same
  file: ext4 hands a freed inode number to the next new file, so a job
  that failed, was retried and failed again between two scans can come
  back under its name on the inode it had. The dashboard's scanner
  (`watch=True`) therefore also reads inotify on the settled folders and
  stats again every name that arrived since the last scan (all of them
  when the kernel dropped events). Where inotify does not see the writes
  (a spool other hosts share) and in one-shot commands it trusts name and
  inode alone.
- The scanner counts settles: every name present at its first scan, plus
  every name that has appeared in a settled folder since. Scans run when
  someone asks (a page refresh, a Prometheus scrape), so a job that fails
  and is retried between two scans counts once.
- `throughput()` buckets settle times per minute; `recent_durations()` reads
  `last_duration` from the latest settled jobs only.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
import os
import threading
import time
from dataclasses import dataclass

from .core.job import STATES
from .core.spool import job_name

SETTLED = ("completed", "failed", "dead")
DEPARTED_KEPT = 2 * 3600  # seconds a departed file's settle time stays for the chart (it shows one hour)
FAILURES = ("failed", "dead")


@dataclass(frozen=True)
class Snapshot:
    """The spool's folders as one scan saw them; never changed after the scan."""

    counts: dict[str, int]
    settle_times: dict[str, dict[str, tuple[int, float]]]  # state -> name -> (inode, mtime)
    settles_seen: dict[str, int]
    # Settle times of files that left their folder since this scanner began (purged, pruned, retried):
    # what settled still settled, so the chart keeps them for its hour.
    departed: dict[str, tuple[float, ...]] = dataclasses.field(default_factory=dict)


class Scanner:
    """Scans a spool, remembering settle times between scans; safe to share between threads."""

    def __init__(self, spool, *, watch: bool = False):
        self.spool = spool
        # One scan at a time: the cache stays consistent, and parallel
        # requests wait for each other instead of fighting for the GIL.
        self._lock = threading.Lock()
        self._settle_times: dict[str, dict[str, tuple[int, float]]] = {state: {} for state in SETTLED}
        self._settles_seen = dict.fromkeys(SETTLED, 0)
        self._departed: dict[str, list[float]] = {state: [] for state in SETTLED}
        self._watch = _arrivals(spool) if watch else None

    def scan(self) -> Snapshot:
        with self._lock:
            arrived = self._arrived()
            counts = {state: len(self.spool.names(state)) for state in ("pending", "processing")}
            for state in SETTLED:
                self._settle_times[state] = self._scan_settled(state, arrived[state])
                counts[state] = len(self._settle_times[state])
            return Snapshot({state: counts[state] for state in STATES},
                            dict(self._settle_times), dict(self._settles_seen),
                            {state: tuple(times) for state, times in self._departed.items()})

    def close(self) -> None:
        if self._watch is not None:
            self._watch.close()
            self._watch = None

    def _arrived(self) -> dict[str, set[str] | None]:
        """Per settled folder, the names that arrived since the last scan; None: any may have."""
        arrived: dict[str, set[str] | None] = {state: set() for state in SETTLED}
        if self._watch is None:
            return arrived
        from .watch import RESCAN
        for change in self._watch.changes():
            if change == RESCAN:
                return dict.fromkeys(SETTLED)
            kind, state, name = change
            names = arrived[state]
            if kind != "gone" and names is not None:
                names.add(name)
        return arrived

    def _scan_settled(self, state: str, arrived: set[str] | None) -> dict[str, tuple[int, float]]:
        folder = self.spool.dir(state)
        try:
            with os.scandir(folder) as entries:
                inodes = {entry.name: entry.inode() for entry in entries}
        except FileNotFoundError:
            inodes = {}
        known = self._settle_times[state]
        # The same name on the same inode is the same file, unless it arrived since
        # the last scan: then its inode number may be a freed one handed out again.
        current = {name: seen for name, seen in known.items()
                   if inodes.get(name) == seen[0] and arrived is not None and name not in arrived}
        for name in inodes.keys() - current.keys():
            if not job_name(name):
                continue
            try:
                info = os.lstat(os.path.join(folder, name))
            except FileNotFoundError:
                continue
            current[name] = (info.st_ino, info.st_mtime)
            self._settles_seen[state] += name not in known or known[name][1] != info.st_mtime
        horizon = time.time() - DEPARTED_KEPT
        departed = [seen[1] for name, seen in known.items()
                    if (name not in current or current[name][1] != seen[1]) and seen[1] >= horizon]
        self._departed[state] = [mtime for mtime in self._departed[state] if mtime >= horizon] + departed
        return current


def _arrivals(spool):
    """inotify on the settled folders of a spool this host alone writes; None elsewhere."""
    from .core import fstype
    from .watch import FolderWatch
    if fstype.mode(spool) != "local":
        return None  # inotify never sees another host's writes: name and inode alone
    try:
        return FolderWatch({state: spool.dir(state) for state in SETTLED})
    except OSError:
        return None  # out of inotify watches or instances: name and inode alone


def throughput(snapshot: Snapshot, now: float, minutes: int = 60) -> list[dict]:
    """Completions and failures per minute, oldest first, the last bucket holding `now`."""
    first = (int(now) // 60 - minutes + 1) * 60
    completed = [0] * minutes
    failed = [0] * minutes
    for state, series in (("completed", completed), *((state, failed) for state in FAILURES)):
        times = [mtime for _, mtime in snapshot.settle_times[state].values()]
        for mtime in [*times, *snapshot.departed.get(state, ())]:
            bucket = int((mtime - first) // 60)
            if 0 <= bucket < minutes:
                series[bucket] += 1
    return [{"minute": first + 60 * index, "completed": completed[index], "failed": failed[index]}
            for index in range(minutes)]


def recent_durations(spool, snapshot: Snapshot, limit: int = 200) -> list[float]:
    """`last_duration` of the `limit` jobs that settled last (reads at most `limit` files)."""
    latest = heapq.nlargest(
        limit,
        ((mtime, state, name) for state in SETTLED
         for name, (_, mtime) in snapshot.settle_times[state].items()))
    durations = []
    for _, state, name in latest:
        job = spool.read(state, name)
        duration = job.get("last_duration") if job else None
        if isinstance(duration, (int, float)) and not isinstance(duration, bool) \
                and math.isfinite(duration):
            durations.append(float(duration))
    return durations
