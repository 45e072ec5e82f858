"""Watching jobs from the outside: `wait` and `logs --follow`.

Both read the spool the way `ls` would, a few times a second; they are
tools for a person at a terminal, not part of a worker's hot path.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from .errors import JobNotFound
from .job import FINISHED, check_id

SETTLE_MARGIN = 5.0
POLL = 0.1
ACTIVE = ("pending", "processing", "failed")


@dataclass
class WaitOutcome:
    completed: int = 0
    dead: int = 0
    unfinished: int = 0
    timed_out: bool = False


def wait_for(spool, job_ids: list[str], *, timeout: float | None = None,
             progress: Callable[[int, int], None] | None = None) -> WaitOutcome:
    """Block until the given jobs (or, with none given, every job) are completed or dead."""
    for job_id in job_ids:
        check_id(job_id)
        if spool.find(job_id) is None:
            raise JobNotFound(f"no job with id {job_id!r}")
    deadline = time.monotonic() + timeout if timeout is not None else None
    while True:
        outcome = _tally(spool, job_ids)
        if progress:
            progress(outcome.completed + outcome.dead, outcome.completed + outcome.dead + outcome.unfinished)
        if not outcome.unfinished:
            return outcome
        if deadline is not None and time.monotonic() >= deadline:
            outcome.timed_out = True
            return outcome
        time.sleep(POLL)


def _tally(spool, job_ids: list[str]) -> WaitOutcome:
    if not job_ids:
        counts = spool.counts()
        return WaitOutcome(completed=counts["completed"], dead=counts["dead"],
                           unfinished=sum(counts[state] for state in ACTIVE))
    outcome = WaitOutcome()
    for job_id in job_ids:
        state = spool.find(job_id)
        if state == "completed":
            outcome.completed += 1
        elif state == "dead":
            outcome.dead += 1
        elif state is None:
            raise JobNotFound(f"job {job_id!r} disappeared (purged?)")
        else:
            outcome.unfinished += 1
    return outcome


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
            unowned.release()
            return None
        if time.monotonic() >= deadline:
            return None
        time.sleep(POLL)
    return spool.find(job_id)
