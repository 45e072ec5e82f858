"""Workers of a shared spool: claims spread over the first due jobs, and a lost claim costs no pause."""

from __future__ import annotations

import pytest

from queuectl import intake, jobstep, watch
from queuectl.core import lifecycle, order
from queuectl.core.workerfiles import lease_path
from queuectl.intake import Intake
from queuectl.watch import FolderWatch
from queuectl.worker import Worker


class Picked(Exception):
    """Raised by the stubbed job step: the worker's first pick is known, stop there."""


def beating_lease(spool, name: str) -> None:
    """Another worker's lease, as its worker writes it: a judge that sees it first counts it as beating."""
    with open(lease_path(spool, name), "w", encoding="ascii") as handle:
        handle.write(f"{name} {0:020d}\n")


def first_picks(spool, monkeypatch, names: list[str]) -> list[tuple[str, str]]:
    """The first job each worker would claim, each seeing the others' leases beat (as on two hosts)."""
    picks: list[tuple[str, str]] = []

    def first_pick(self, state, job_id):
        picks.append((self.name, job_id))
        raise Picked
    monkeypatch.setattr(jobstep.JobStep, "process", first_pick)
    for name in names:
        for other in names:
            if other != name:
                beating_lease(spool, other)
        # Each worker lists the same due jobs (the stub claims nothing).
        with pytest.raises(Picked):
            Worker(spool, name=name, burst=True).run()
    return picks


def test_workers_of_a_shared_spool_each_take_the_first_job_of_their_own_lane(spool, monkeypatch):
    spool.set_config("shared", "true")
    for number in range(40):
        spool.enqueue({"id": f"job-{number:02d}", "command": "true"})
    names = ["hostA-1", "hostA-2", "hostB-1"]
    picks = first_picks(spool, monkeypatch, names)
    assert len({job_id for _, job_id in picks}) == 3, picks  # no two race for one file
    for lane, (_, job_id) in enumerate(picks):  # names sorted: lane = place
        assert order.lane_of(job_id, 3) == lane
        assert all(order.lane_of(f"job-{number:02d}", 3) != lane for number in range(int(job_id[-2:])))


def test_the_top_priority_is_never_passed_over_by_the_lanes(spool, monkeypatch):
    spool.set_config("shared", "true")
    for number in range(10):
        spool.enqueue({"id": f"job-{number:02d}", "command": "true"})
    spool.enqueue({"id": "urgent", "command": "true", "priority": 5})
    picks = first_picks(spool, monkeypatch, ["w1", "w2"])
    assert [job_id for _, job_id in picks] == ["urgent", "urgent"]


def test_a_worker_alone_takes_the_best_job(spool, monkeypatch):
    spool.set_config("shared", "true")
    for number in range(10):
        spool.enqueue({"id": f"job-{number:02d}", "command": "true"})
    assert first_picks(spool, monkeypatch, ["only"]) == [("only", "job-00")]


def test_the_window_grows_while_other_lanes_claims_are_lost_and_shrinks_when_they_are_won(spool):
    step = Worker(spool, name="w2", burst=True).step
    step.share_with({"w1", "w3", "w4"})
    assert (step.lane, step.lanes, step.window) == (1, 4, order.window_for(4))
    own = next(f"j{n}" for n in range(100) if order.lane_of(f"j{n}", 4) == 1)
    other = next(f"j{n}" for n in range(100) if order.lane_of(f"j{n}", 4) != 1)
    step._learn_window(own, lost=True)
    assert step.window == order.window_for(4)  # its own lane: another worker's fallback, nothing learnt
    for _ in range(20):
        step._learn_window(other, lost=True)  # the jobs ahead were taken since its last listing
    assert step.window == order.MAX_WINDOW
    step._learn_window(other, lost=False)  # that lane's worker is busy: help it, look less far
    assert step.window == order.MAX_WINDOW // 2
    for _ in range(20):
        step._learn_window(other, lost=False)
    assert step.window == order.window_for(4)
    step.share_with({"w1"})  # fewer workers: the window starts again
    assert (step.lane, step.lanes, step.window) == (1, 2, order.window_for(2))


def test_a_shared_workers_listings_follow_what_it_needs(spool):
    """pending/ each tick while nothing is due, once a listing period while jobs are; completed/ and
    dead/ only while a job waits for another or for its group."""
    spool.set_config("shared", "true")
    worker = Worker(spool, name="w", burst=True)
    cadence = worker.intake.cadence
    assert cadence("pending") == cadence("failed") == watch.POLL_INTERVAL
    assert cadence("completed") is cadence("dead") is None
    assert cadence("workers") == watch.POLL_INTERVAL
    worker.intake.index.add("pending", "job", 0, 0.0, 0.0)
    assert cadence("pending") == cadence("failed") == watch.FULL_LISTING
    worker.gate.waiting["later"] = ("pending", 0, 0.0, {"job"})
    assert cadence("completed") == cadence("dead") == watch.FULL_LISTING


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
