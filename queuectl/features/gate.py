"""A worker's gate: what may start now, held in memory so a claim never rescans folders.

Dependencies (dependencies.py) and groups (groups.py) seen from one
worker: jobs that wait for others, jobs parked behind a full or paused
group, and rings of `after` found as jobs start to wait.
"""

from __future__ import annotations

import heapq
import os
import re
import time
from collections.abc import Callable

from ..core import lifecycle
from ..core.job import is_valid_id
from . import rates, resources
from .dependencies import dependency_states, end_ring, find_ring
from .groups import (
    GROUP_PATTERN,
    NO_SLOT,
    PAUSE_FILE,
    Badge,
    Slot,
    is_paused,
    limit_path,
    read_settings,
    slot_names,
    take_slot,
)

# How often a worker looks again at jobs parked behind a full or paused group,
# or at a paused spool, when no change in a watched folder woke it first
# (another host's changes raise no inotify event here).
PARK_POLL = 1.0


# -- a worker's view ---------------------------------------------------------------

class Settings:
    """A worker's cache of group limits and rates and of this host's declared resources, each read
    again only when its file changed (one stat per claim, not a read)."""

    def __init__(self, spool):
        self.spool = spool
        self.limits: dict[str, tuple[tuple, int | None, rates.Window | None]] = {}  # group -> (stat, limit, rate)
        self.have: tuple[tuple, dict[str, int]] | None = None  # this host's declaration, by its file's stat

    def of_group(self, group: str) -> tuple[int | None, rates.Window | None]:
        """The group's limit and rate, read again only when groups/NAME.json changed (one stat per claim)."""
        try:
            info = os.stat(limit_path(self.spool, group))
        except FileNotFoundError:
            self.limits.pop(group, None)
            return None, None
        key = (info.st_ino, info.st_mtime_ns, info.st_size)
        cached = self.limits.get(group)
        if cached is None or cached[0] != key:
            settings = read_settings(self.spool, group)
            limit = settings.get("limit")
            limit = limit if isinstance(limit, int) and not isinstance(limit, bool) and limit >= 1 else None
            rate = rates.from_json(settings.get("rate"))
            window = rates.Window(os.path.join(self.spool.root, "groups"), rate) if rate else None
            cached = self.limits[group] = (key, limit, window)
        return cached[1], cached[2]

    def limit(self, group: str) -> int | None:
        return self.of_group(group)[0]

    def declared(self) -> dict[str, int]:
        """This host's declared resources, read again only when its file changed."""
        path = resources.declaration_path(self.spool, resources.host_name())
        try:
            info = os.stat(path)
            key: tuple = (info.st_ino, info.st_mtime_ns, info.st_size)
        except FileNotFoundError:
            key = ()
        if self.have is None or self.have[0] != key:
            self.have = (key, resources.declared(self.spool, resources.host_name()))
        return self.have[1]


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
        self.settings = Settings(spool)
        self.needs_of: dict[str, dict[str, int]] = {}  # id -> the resources the job needs (resources.py)
        self.unfit: dict[str, tuple[str, int, float]] = {}  # id -> (folder, priority, due): needs more than declared
        self.rate_wake: float | None = None  # when a rate-limited group's next token frees
        self.poked = False
        self.next_poll = 0.0

    def __contains__(self, name: str) -> bool:
        return name in self.waiting or name in self.group_of

    def names(self) -> set[str]:
        return set(self.waiting) | set(self.group_of)

    def forget(self, name: str) -> None:
        self.group_of.pop(name, None)
        self.needs_of.pop(name, None)
        self.unfit.pop(name, None)
        entry = self.waiting.pop(name, None)
        if entry is not None:
            for dep in entry[3]:
                names = self.waiters.get(dep)
                if names is not None:
                    names.discard(name)
                    if not names:
                        del self.waiters[dep]

    def keeps_back(self, folder: str, name: str, job: dict, priority: int, due: float) -> bool:
        """Note the job's group; True when it must not enter the order now (it waits, or went to dead/).

        `name` is the job's id (as everywhere in the gate).
        """
        self.forget(name)
        if job.get("held") is True:
            return True  # until `release` rewrites the file, which the watch reports (lifecycle.hold)
        needs = job.get("needs")
        if isinstance(needs, dict) and needs:
            self.needs_of[name] = needs
            self.group_of.setdefault(name, ("", priority, due))  # "": no group, parked under "" for resources
        group = job.get("group")
        if isinstance(group, str) and re.fullmatch(GROUP_PATTERN, group):
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
        return os.path.lexists(f"{self.spool.root}/{PAUSE_FILE}")

    def admit(self, state: str, job_id: str, worker: str, now: float = 0.0) -> Slot | None:
        """What the job about to be claimed holds: its group's slot, its resource indexes and a start of
        its group's rate (NO_SLOT when it needs none of them); None: it was parked (or does not fit here).
        `now`: the start's time, the job's `started_at`."""
        entry = self.group_of.get(job_id)
        if entry is None:
            return NO_SLOT
        group, priority, due = entry
        if group and (group in self.full or is_paused(self.spool, group)):
            self._park(group, priority, due, job_id, state)
            return None
        limit, window = self.settings.of_group(group) if group else (None, None)
        slot = NO_SLOT
        if limit is not None:
            if self.badge is None:
                self.badge = Badge(self.spool, worker)
            taken = take_slot(self.spool, group, limit, self.badge)
            if taken is None:
                self.full.add(group)
                self._park(group, priority, due, job_id, state)
                return None
            slot = taken
        needs = self.needs_of.get(job_id)
        if needs:
            have = self.settings.declared()
            if not resources.fits(needs, have):
                slot.release()
                self.unfit[job_id] = (state, priority, due)  # `show` says why; a new declaration puts it back
                return None
            if self.badge is None:
                self.badge = Badge(self.spool, worker)
            indexes = resources.take(self.spool, resources.host_name(), needs, have, self.badge)
            if indexes is None:
                slot.release()
                self._park("", priority, due, job_id, state)
                return None
            slot = slot.join(indexes)
        if window is not None:
            started, frees_at = window.take(now or time.time(), worker, self.spool.dir("tmp"))
            if started is None:
                slot.release()
                self._park(group, priority, due, job_id, state)
                self.rate_wake = frees_at if self.rate_wake is None else min(self.rate_wake, frees_at)
                return None
            slot = slot.join(Slot(start=started))  # a holding of its own: NO_SLOT is shared
        # Claimed next: forgotten now, so its own "gone" event costs no stat (a lost claim re-reads it).
        self.group_of.pop(job_id, None)
        self.needs_of.pop(job_id, None)
        return slot

    def _park(self, group: str, priority: int, due: float, name: str, state: str) -> None:
        heapq.heappush(self.parked.setdefault(group, []), (-priority, due, name, state))

    def unpark(self, now: float) -> None:
        """Put back as many parked jobs per group as it has free slots (after a settle, a change or PARK_POLL)."""
        if not (self.parked or self.unfit) or (not self.poked and now < self.next_poll
                                               and (self.rate_wake is None or now < self.rate_wake)):
            return
        self.poked = False
        self.next_poll = now + PARK_POLL
        self.rate_wake = None
        if self.unfit:
            have = self.settings.declared()
            for name, (state, priority, due) in list(self.unfit.items()):
                if resources.fits(self.needs_of.get(name, {}), have):
                    del self.unfit[name]
                    self.add(state, name, priority, due)
        for group in list(self.parked):
            if group and is_paused(self.spool, group):
                continue
            limit = self.settings.limit(group) if group else None
            free = len(self.parked[group]) if limit is None else limit - len(slot_names(self.spool, group))
            if free <= 0:
                self.full.add(group)
                continue
            self.full.discard(group)
            heap = self.parked[group]
            for _ in range(min(free, len(heap))):
                negative_priority, due, name, state = heapq.heappop(heap)
                if self.group_of.get(name, (None,))[0] == group or (group == "" and name in self.group_of):
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
        if any(self.settings.of_group(group)[1] is not None and not is_paused(self.spool, group)
               for group in self.parked if group):
            return True  # a rate's token frees within its window
        if self.parked:
            self.poked = True
            before = len(self.parked), sum(len(heap) for heap in self.parked.values())
            self.unpark(now)
            if (len(self.parked), sum(len(heap) for heap in self.parked.values())) != before:
                return True
        return any(self.spool.find(dep) == "processing" for dep in self.waiters if is_valid_id(dep))

    def next_wake(self, now: float) -> float | None:
        """When to look again at parked jobs or a paused spool, if nothing wakes the worker before."""
        if self.parked or self.unfit or self.spool_paused():
            wake = max(now, self.next_poll) if self.parked or self.unfit else now + PARK_POLL
            return min(wake, self.rate_wake) if self.rate_wake is not None else wake
        return None
