"""Workers of a shared spool: claims spread over the first due jobs, and a lost claim costs no pause."""

from __future__ import annotations

import itertools
import zlib

import pytest

from queuectl import intake, jobstep
from queuectl.core import lifecycle
from queuectl.intake import Intake
from queuectl.watch import FolderWatch
from queuectl.worker import Worker


class Picked(Exception):
    """Raised by the stubbed job step: the worker's first pick is known, stop there."""


def names_in_different_lanes() -> tuple[str, str]:
    lanes: dict[int, str] = {}
    for number in itertools.count():
        name = f"w{number}"
        lane = zlib.crc32(name.encode()) % jobstep.SPREAD
        if lanes and lane not in lanes and lane != 0:
            return next(iter(lanes.values())), name
        lanes.setdefault(lane, name)
    raise AssertionError("unreachable")


def test_two_workers_of_a_shared_spool_do_not_pick_the_same_first_job(spool, monkeypatch):
    spool.set_config("shared", "true")
    for number in range(20):
        spool.enqueue({"id": f"job-{number:02d}", "command": "true"})
    picks: list[tuple[str, str]] = []

    def first_pick(self, state, job_id):
        picks.append((self.name, job_id))
        raise Picked
    monkeypatch.setattr(jobstep.JobStep, "process", first_pick)
    for name in names_in_different_lanes():
        # Each worker lists the same 20 due jobs (the stub claims nothing), as two workers
        # started together on two hosts would.
        with pytest.raises(Picked):
            Worker(spool, name=name, burst=True).run()
    assert len(picks) == 2
    assert picks[0][1] != picks[1][1], picks
    assert all(job_id < f"job-{jobstep.SPREAD:02d}" for _, job_id in picks)  # among the first few only


def test_the_top_priority_is_never_passed_over_by_the_spread(spool, monkeypatch):
    spool.set_config("shared", "true")
    for number in range(10):
        spool.enqueue({"id": f"job-{number:02d}", "command": "true"})
    spool.enqueue({"id": "urgent", "command": "true", "priority": 5})
    picks: list[str] = []

    def first_pick(self, state, job_id):
        picks.append(job_id)
        raise Picked
    monkeypatch.setattr(jobstep.JobStep, "process", first_pick)
    for name in names_in_different_lanes():
        with pytest.raises(Picked):
            Worker(spool, name=name, burst=True).run()
    assert picks == ["urgent", "urgent"]


def test_a_lost_claim_on_a_shared_spool_costs_no_pause_no_listing_and_no_read(spool, monkeypatch):
    """The worker goes on to the next due job at once: seen in the order of what it does, not in time."""
    spool.set_config("shared", "true")
    ids = [spool.enqueue({"id": f"job-{number}", "command": "true"})["id"] for number in range(3)]
    events: list[tuple[str, str]] = []
    held: list = []
    real_claim, real_peek = lifecycle.claim, intake._peek
    real_scan, real_wait = Intake.scan, FolderWatch.wait

    def claim(spool_, state, job_id, worker, now):
        events.append(("claim", job_id))
        if not held:
            # Another worker holds this job's lock (as on another GlusterFS client): this claim is lost.
            held.append(spool.lock(state, job_id + ".json"))
        elif held[0] is not None and held[0].fd >= 0:
            held[0].unlock()  # that worker gave it back: a later look finds it due again
        return real_claim(spool_, state, job_id, worker, now)

    def peek(path):
        events.append(("read", path.rsplit("/", 1)[-1]))
        return real_peek(path)

    def scan(self):
        events.append(("listing", ""))
        return real_scan(self)

    def wait(self, timeout, also=()):
        events.append(("wait", ""))
        return real_wait(self, timeout, also)
    monkeypatch.setattr(jobstep.lifecycle, "claim", claim)
    monkeypatch.setattr(intake, "_peek", peek)
    monkeypatch.setattr(Intake, "scan", scan)
    monkeypatch.setattr(FolderWatch, "wait", wait)
    worker = Worker(spool, until_empty=True)
    assert worker.run() == 0
    assert all(spool.find(job_id) == "completed" for job_id in ids)
    assert worker.step.lost_claims == 1
    claims = [index for index, event in enumerate(events) if event[0] == "claim"]
    lost, following = claims[0], claims[1]
    # Right after the lost claim, the next claim, of another job: nothing read, listed or waited for between.
    assert following == lost + 1, events[lost:following + 1]
    assert events[following][1] != events[lost][1]
