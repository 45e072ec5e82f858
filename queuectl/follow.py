"""Watching jobs from the outside: `wait` and `logs --follow`.

Both read the spool the way `ls` would, a few times a second; they are
tools for a person at a terminal, not part of a worker's hot path.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from .core.errors import InvalidJob, JobNotFound
from .core.job import FINISHED, STATES, check_id, parse_time
from .core.spool import id_of

SETTLE_MARGIN = 5.0
POLL = 0.1
ACTIVE = ("pending", "processing", "failed")


@dataclass
class WaitOutcome:
    completed: int = 0
    dead: int = 0
    unfinished: int = 0
    timed_out: bool = False


def wait_for(spool, job_ids: list[str] | None, *, timeout: float | None = None,
             progress: Callable[[int, int], None] | None = None, scheduled: bool = False,
             idle_note: Callable[[], None] | None = None) -> WaitOutcome:
    """Block until the given jobs are completed or dead; the outcome counts only those jobs.

    With no ids: the jobs running, failed (a retry to come) or pending and
    due now, and those that arrive so while waiting; `scheduled` adds the
    pending jobs whose run_at is later. Jobs finished before the wait began
    are not awaited, so an old dead job does not make every wait fail.
    `idle_note` is called once when unfinished jobs are awaited (to say when
    no worker runs).
    """
    deadline = time.monotonic() + timeout if timeout is not None else None
    explicit = job_ids is not None
    tracked: dict[str, str] = {}  # id -> latest state seen
    skipped: set[str] = set()  # pending jobs scheduled for later, not awaited
    for job_id in job_ids or []:
        check_id(job_id)
        if spool.find(job_id) is None:
            raise JobNotFound(f"no job with id {job_id!r}")
        tracked[job_id] = "pending"
    noted = False
    while True:
        where = {id_of(name): state for state in STATES for name in spool.names(state)}
        if not explicit:
            now = time.time()
            for job_id, state in where.items():
                if state in ACTIVE and job_id not in tracked and job_id not in skipped:
                    if state == "pending" and not scheduled and not _due(spool, job_id, now):
                        skipped.add(job_id)
                        continue
                    tracked[job_id] = state
        outcome = WaitOutcome()
        for job_id in tracked:
            found = where.get(job_id)
            if found is None and tracked[job_id] not in FINISHED:
                raise JobNotFound(f"job {job_id!r} disappeared (purged?)")
            state = found or tracked[job_id]  # finished, then purged or pruned: it still ended so
            tracked[job_id] = state
            if state == "completed":
                outcome.completed += 1
            elif state == "dead":
                outcome.dead += 1
            else:
                outcome.unfinished += 1
        if progress:
            progress(outcome.completed + outcome.dead, len(tracked))
        if not outcome.unfinished:
            return outcome
        if not noted and idle_note is not None:
            idle_note()
            noted = True
        if deadline is not None and time.monotonic() >= deadline:
            outcome.timed_out = True
            return outcome
        time.sleep(POLL)


def _due(spool, job_id: str, now: float) -> bool:
    """Whether a pending job may start now (no run_at, or one that has passed)."""
    job = spool.read("pending", job_id + ".json")
    if job is None:
        return True  # moved on meanwhile: it was due
    run_at = job.get("run_at")
    if not isinstance(run_at, str):
        return True
    try:
        return parse_time(run_at) <= now
    except InvalidJob:
        return True


def follow_log(spool, job_id: str) -> Iterator[bytes]:
    """The log as it grows, until the job is finished and everything is printed."""
    if spool.find(job_id) is None:
        raise JobNotFound(f"no job with id {job_id!r}")
    offset = 0
    while True:
        state = spool.find(job_id)
        if state is None:
            raise JobNotFound(f"job {job_id!r} disappeared (purged?)")
        finished = state in FINISHED
        chunk = spool.read_log(job_id, offset=offset)
        if chunk:
            offset += len(chunk)
            yield chunk
        elif finished:
            return
        else:
            time.sleep(POLL)


def wait_settled(spool, job_id: str) -> str | None:
    """After a cancel request: the state the running job settles in, or None.

    None when no live worker owns the job (its flock is free: recovery will
    settle it) or when it is not settled `kill_grace` plus SETTLE_MARGIN
    seconds later (the worker notices the request within a second, then
    gives the job kill_grace to exit).
    """
    deadline = time.monotonic() + spool.config["kill_grace"] + SETTLE_MARGIN
    while spool.find(job_id) == "processing":
        unowned = spool.lock("processing", job_id + ".json")
        if unowned is not None:
            unowned.unlock()
            return None
        if time.monotonic() >= deadline:
            return None
        time.sleep(POLL)
    return spool.find(job_id)
