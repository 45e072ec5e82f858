"""A worker's gate: what may start now, held in memory so a claim never rescans folders.

Dependencies (dependencies.py) and groups (groups.py) seen from one
worker: jobs that wait for others, jobs parked behind a full or paused
group, and rings of `after` found as jobs start to wait.
"""

from __future__ import annotations

import heapq
import os
from collections.abc import Callable

from . import lifecycle
from .dependencies import dependency_states, end_ring, find_ring
from .groups import (
    GROUP_PATTERN,
    NO_SLOT,
    PAUSE_FILE,
    Badge,
    Slot,
    is_paused,
    limit_path,
    read_limit,
    slot_names,
    take_slot,
)
from .job import is_valid_id

# How often a worker looks again at jobs parked behind a full or paused group,
# or at a paused spool, when no change in a watched folder woke it first
# (another host's changes raise no inotify event here).
PARK_POLL = 1.0


# -- a worker's view ---------------------------------------------------------------

class Gate:
    """What a worker keeps in memory to start only what may start, without rescanning folders per claim.

    - waiting: pending jobs whose `after` is not all completed, keyed by the
      ids they wait for; a change in completed/ or dead/ (or a safety scan)
      looks at those ids only;
    - parked: jobs of a full or paused group, per group, in claim order; a
      settle anywhere, a change in groups/ or PARK_POLL puts back as many as
      the group has free slots.
    `add(folder, job_id, priority, due)` puts a job back into the worker's order.
    Jobs are known by id, as in the worker's order.DueIndex.
    """

    def __init__(self, spool, add: Callable[[str, str, int, float], None], worker: str = ""):
        self.spool = spool
        self.add = add
        self.worker = worker
        self.badge: Badge | None = None  # made when the worker takes its first slot
        self.group_of: dict[str, tuple[str, int, float]] = {}           # id -> (group, priority, due)
        self.waiting: dict[str, tuple[str, int, float, set[str]]] = {}  # id -> (folder, priority, due, ids)
        self.waiters: dict[str, set[str]] = {}                          # id -> ids waiting for it
        self.parked: dict[str, list[tuple[int, float, str, str]]] = {}  # group -> heap of (-pri, due, id, folder)
        self.full: set[str] = set()
        self.limits: dict[str, tuple[tuple, int | None]] = {}  # group -> (stat of NAME.json, limit)
        self.poked = False
        self.next_poll = 0.0

    def __contains__(self, name: str) -> bool:
        return name in self.waiting or name in self.group_of

    def names(self) -> set[str]:
        return set(self.waiting) | set(self.group_of)

    def forget(self, name: str) -> None:
        self.group_of.pop(name, None)
        entry = self.waiting.pop(name, None)
        if entry is not None:
            for dep in entry[3]:
                names = self.waiters.get(dep)
                if names is not None:
                    names.discard(name)
                    if not names:
                        del self.waiters[dep]

    def hold(self, folder: str, name: str, job: dict, priority: int, due: float) -> bool:
        """Note the job's group; True when it must not enter the order now (it waits, or went to dead/).

        `name` is the job's id (as everywhere in the gate).
        """
        self.forget(name)
        if job.get("held") is True:
            return True  # until `release` rewrites the file, which the watch reports (lifecycle.hold)
        group = job.get("group")
        if isinstance(group, str) and GROUP_PATTERN.fullmatch(group):
            self.group_of[name] = (group, priority, due)
        after = job.get("after")
        if folder != "pending" or not after or not isinstance(after, list):
            return False
        unfinished = set()
        for dep, state in dependency_states(self.spool, job):
            if state == "dead" or state is None:
                self._dependency_died(name, dep)
                return True
            if state != "completed":
                unfinished.add(dep)
        if not unfinished:
            return False
        ring = find_ring(self.spool, name, after)
        if ring:
            self.forget(name)
            end_ring(self.spool, ring)  # every job of it to dead/: none of them can ever start
            return True
        self.waiting[name] = (folder, priority, due, unfinished)
        for dep in unfinished:
            self.waiters.setdefault(dep, set()).add(name)
        return True

    def _dependency_died(self, job_id: str, dep: str) -> None:
        self.forget(job_id)
        lifecycle.dependency_died(self.spool, job_id, dep)  # a rescan looks again if it was not moved

    def changed(self, kind: str, folder: str, name: str) -> None:
        """A change in a watched folder (see worker.WATCHED)."""
        if kind == "gone":
            return
        if folder != "pending" or kind == "moved":
            self.poked = True  # a settle, a give-back, a limit or a pause changed: a slot may be free
        if folder in ("completed", "dead") and name.endswith(".json"):
            self._landed(name.removesuffix(".json"), folder)

    def _landed(self, dep: str, state: str | None) -> None:
        """Job `dep` is completed, dead or gone (None): wake what waited for it."""
        waiting = self.waiters.pop(dep, None)
        for waiter in waiting or ():
            entry = self.waiting.get(waiter)
            if entry is None:
                continue
            if state != "completed":
                self._dependency_died(waiter, dep)
                continue
            entry[3].discard(dep)
            if not entry[3]:
                del self.waiting[waiter]
                self.add(entry[0], waiter, entry[1], entry[2])

    def recheck(self) -> None:
        """The safety scan: look at every id something waits for (changes from other hosts raise no event)."""
        for dep in list(self.waiters):
            state = self.spool.find(dep) if is_valid_id(dep) else None
            if state in ("completed", "dead", None):
                self._landed(dep, state)

    # -- groups and pause, at claim time --

    def spool_paused(self) -> bool:
        return os.path.lexists(os.path.join(self.spool.root, PAUSE_FILE))

    def admit(self, state: str, job_id: str, worker: str) -> Slot | None:
        """A slot for the job about to be claimed (NO_SLOT when its group has no limit); None: it was parked."""
        entry = self.group_of.get(job_id)
        if entry is None:
            return NO_SLOT
        group, priority, due = entry
        if group in self.full or is_paused(self.spool, group):
            self._park(group, priority, due, job_id, state)
            return None
        limit = self._limit(group)
        if limit is None:
            return NO_SLOT
        if self.badge is None:
            self.badge = Badge(self.spool, worker)
        slot = take_slot(self.spool, group, limit, self.badge)
        if slot is None:
            self.full.add(group)
            self._park(group, priority, due, job_id, state)
        else:
            # Claimed next: forgotten now, so its own "gone" event costs no stat (a lost claim re-reads it).
            self.group_of.pop(job_id, None)
        return slot

    def _limit(self, group: str) -> int | None:
        """The group's limit, read again only when groups/NAME.json changed (one stat per claim)."""
        try:
            info = os.stat(limit_path(self.spool, group))
        except FileNotFoundError:
            self.limits.pop(group, None)
            return None
        key = (info.st_ino, info.st_mtime_ns, info.st_size)
        cached = self.limits.get(group)
        if cached is None or cached[0] != key:
            cached = self.limits[group] = (key, read_limit(self.spool, group))
        return cached[1]

    def _park(self, group: str, priority: int, due: float, name: str, state: str) -> None:
        heapq.heappush(self.parked.setdefault(group, []), (-priority, due, name, state))

    def unpark(self, now: float) -> None:
        """Put back as many parked jobs per group as it has free slots (after a settle, a change or PARK_POLL)."""
        if not self.parked or (not self.poked and now < self.next_poll):
            return
        self.poked = False
        self.next_poll = now + PARK_POLL
        for group in list(self.parked):
            if is_paused(self.spool, group):
                continue
            limit = self._limit(group)
            free = len(self.parked[group]) if limit is None else limit - len(slot_names(self.spool, group))
            if free <= 0:
                self.full.add(group)
                continue
            self.full.discard(group)
            heap = self.parked[group]
            for _ in range(min(free, len(heap))):
                negative_priority, due, name, state = heapq.heappop(heap)
                if self.group_of.get(name, (None,))[0] == group:
                    self.add(state, name, -negative_priority, due)
            if not heap:
                del self.parked[group]

    def close(self) -> None:
        """At the worker's exit: its badge goes (no slot of its links it any more)."""
        if self.badge is not None:
            self.badge.close()
            self.badge = None

    def holding(self) -> bool:
        """Whether any job is held back (waiting for a dependency, or parked behind its group)."""
        return bool(self.waiting or self.parked)

    def may_unblock(self, now: float) -> bool:
        """For a burst worker about to exit: whether a held-back job may still start soon.

        True when a parked job's group has room now (it is put back), or a
        waiting job waits for one that is running (its outcome may not have
        landed yet, e.g. still in this worker's group commit).
        """
        if self.parked:
            self.poked = True
            before = len(self.parked), sum(len(heap) for heap in self.parked.values())
            self.unpark(now)
            if (len(self.parked), sum(len(heap) for heap in self.parked.values())) != before:
                return True
        return any(self.spool.find(dep) == "processing" for dep in self.waiters if is_valid_id(dep))

    def next_wake(self, now: float) -> float | None:
        """When to look again at parked jobs or a paused spool, if nothing wakes the worker before."""
        if self.parked or self.spool_paused():
            return max(now, self.next_poll) if self.parked else now + PARK_POLL
        return None
