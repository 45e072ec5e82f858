"""The order in which a worker claims jobs, kept in memory.

Due jobs only; highest priority first; then earliest due time; then id
(docs/decisions/order.md). Each job file is parsed once when it appears (start-up scan
or inotify change), and its key is kept here, so a claim costs a heap pop,
not a directory scan. Entries are removed lazily: a file that vanished or
changed leaves a stale heap item that is skipped when popped.
"""

from __future__ import annotations

import heapq
import zlib

# How many due jobs a worker of a shared spool looks through for one of its own lane (pop_due):
# at first, per live worker; at most.
WINDOW_PER_LANE = 4
MAX_WINDOW = 512


def lane_of(job_id: str, lanes: int) -> int:
    """The lane of a job among `lanes` (crc32 of its id): the same on every host."""
    return zlib.crc32(job_id.encode()) % lanes


def window_for(lanes: int) -> int:
    return 1 if lanes <= 1 else WINDOW_PER_LANE * lanes


class DueIndex:
    def __init__(self) -> None:
        self._ready: list[tuple[int, float, str, str]] = []       # (-priority, due, job_id, state)
        self._scheduled: list[tuple[float, int, str, str]] = []   # (due, -priority, job_id, state)
        self._current: dict[str, tuple[int, float, str]] = {}     # job_id -> (-priority, due, state)

    def __len__(self) -> int:
        return len(self._current)

    def __contains__(self, job_id: str) -> bool:
        return job_id in self._current

    def add(self, state: str, job_id: str, priority: int, due: float, now: float) -> None:
        key = (-priority, due, state)
        if self._current.get(job_id) == key:
            return
        self._current[job_id] = key
        if due <= now:
            heapq.heappush(self._ready, (-priority, due, job_id, state))
        else:
            heapq.heappush(self._scheduled, (due, -priority, job_id, state))

    def discard(self, job_id: str, state: str | None = None) -> None:
        """Forget `job_id`; with `state`, only while it is indexed in that folder."""
        current = self._current.get(job_id)
        if current is not None and (state is None or current[2] == state):
            del self._current[job_id]

    def _live(self, negative_priority: int, due: float, job_id: str, state: str) -> bool:
        return self._current.get(job_id) == (negative_priority, due, state)

    def _promote(self, now: float) -> None:
        while self._scheduled and self._scheduled[0][0] <= now:
            due, negative_priority, job_id, state = heapq.heappop(self._scheduled)
            if self._live(negative_priority, due, job_id, state):
                heapq.heappush(self._ready, (negative_priority, due, job_id, state))

    def pop_due(self, now: float, lane: int = 0, lanes: int = 1, window: int = 1) -> tuple[str, str] | None:
        """The best due job as (state, job_id), removed from the index; None if none is due.

        With `lanes` > 1 (the live workers of a shared spool, this one being
        number `lane` of them): the first job of its lane (lane_of) among
        the first `window` due jobs of the best job's priority; when none
        there is, the (lane modulo their number)-th of them. Workers with one
        view of the queue so each take their own jobs instead of all racing
        for the same file (docs/guide/several-hosts.md). A higher priority
        is never passed over; within a priority a job starts at most
        `window` places before an older one.
        """
        self._promote(now)
        window = 1 if lanes <= 1 else max(1, window)
        passed: list[tuple[int, float, str, str]] = []
        found: tuple[int, float, str, str] | None = None
        while self._ready and len(passed) < window:
            item = heapq.heappop(self._ready)
            if not self._live(*item):
                continue
            if passed and item[0] != passed[0][0]:
                heapq.heappush(self._ready, item)  # the band ended before a job of this lane
                break
            if lanes <= 1 or lane_of(item[2], lanes) == lane:
                found = item
                break
            passed.append(item)
        if found is None and passed:
            found = passed.pop(lane % len(passed))
        for item in passed:
            heapq.heappush(self._ready, item)
        if found is None:
            return None
        del self._current[found[2]]
        return found[3], found[2]

    def has_due(self, now: float) -> bool:
        """Whether a job is due now (stale heap items are dropped on the way)."""
        self._promote(now)
        while self._ready and not self._live(*self._ready[0]):
            heapq.heappop(self._ready)
        return bool(self._ready)

    def next_due(self) -> float | None:
        """When the earliest scheduled job becomes due (stale items may make it early, never late)."""
        while self._scheduled and not self._live(self._scheduled[0][1], self._scheduled[0][0],
                                                   self._scheduled[0][2], self._scheduled[0][3]):
            heapq.heappop(self._scheduled)
        return self._scheduled[0][0] if self._scheduled else None

    def ids(self) -> set[str]:
        return set(self._current)
