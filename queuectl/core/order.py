"""The order in which a worker claims jobs, kept in memory.

Due jobs only; highest priority first; then earliest due time; then id
(docs/decisions/order.md). Each job file is parsed once when it appears (start-up scan
or inotify change), and its key is kept here, so a claim costs a heap pop,
not a directory scan. Entries are removed lazily: a file that vanished or
changed leaves a stale heap item that is skipped when popped.
"""

from __future__ import annotations

import heapq


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

    def pop_due(self, now: float, lane: int = 0) -> tuple[str, str] | None:
        """The best due job as (state, job_id), removed from the index; None if none is due.

        `lane` > 0 takes the lane-th next job instead (0 is the best), counted
        among the due jobs of the best job's priority only (modulo their
        number when the band is shorter): workers of a shared spool each take
        a different one of the first few, so they do not all race for the
        same file (docs/guide/several-hosts.md). A higher priority
        is never passed over; within a band the order is kept only roughly.
        """
        self._promote(now)
        passed: list[tuple[int, float, str, str]] = []
        found: tuple[str, str] | None = None
        while self._ready:
            item = heapq.heappop(self._ready)
            negative_priority, due, job_id, state = item
            if not self._live(negative_priority, due, job_id, state):
                continue
            if passed and negative_priority != passed[0][0]:
                heapq.heappush(self._ready, item)  # the band ended before the lane: take its best
                break
            if len(passed) == lane:
                del self._current[job_id]
                found = state, job_id
                break
            passed.append(item)
        if found is None and passed:
            taken = passed.pop(lane % len(passed))
            del self._current[taken[2]]
            found = taken[3], taken[2]
        for item in passed:
            heapq.heappush(self._ready, item)
        return found

    def next_due(self) -> float | None:
        """When the earliest scheduled job becomes due (stale items may make it early, never late)."""
        while self._scheduled and not self._live(self._scheduled[0][1], self._scheduled[0][0],
                                                   self._scheduled[0][2], self._scheduled[0][3]):
            heapq.heappop(self._scheduled)
        return self._scheduled[0][0] if self._scheduled else None

    def ids(self) -> set[str]:
        return set(self._current)
