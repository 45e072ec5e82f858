"""A worker settles at once where flushes are quick, through its group commit where they are slow.

commit.FlushPace makes the choice from the flushes it has measured; the
outcome is on disk before the job's lock is given up either way, which the
crash-point tests check for both paths (tests/scenarios/test_crash_points.py). Here a
real worker runs in this process with os.fsync made instant or slow, as on
tmpfs or on a journaled disk.
"""

from __future__ import annotations

import os
import time

import pytest
from support import wait_until

from queuectl import Spool
from queuectl.core import commit
from queuectl.worker import Worker

JOBS = 40


class CountingCommit(commit.GroupCommit):
    made: list[CountingCommit] = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.settles = 0
        CountingCommit.made.append(self)

    def submit(self, *args, **kwargs):
        self.settles += 1
        super().submit(*args, **kwargs)


@pytest.fixture
def counted(monkeypatch):
    CountingCommit.made = []
    monkeypatch.setattr(commit, "GroupCommit", CountingCommit)  # jobstep makes it as commit.GroupCommit
    return CountingCommit.made


def drain(spool_path, monkeypatch, fsync, durable: bool = True) -> Spool:
    """Run JOBS trivial jobs through one worker whose disk flushes with `fsync`."""
    spool = Spool(spool_path)
    spool.set_config("durable", "true" if durable else "false")
    spool.enqueue_many([{"command": "true"} for _ in range(JOBS)])
    monkeypatch.setattr(os, "fsync", fsync)
    assert Worker(spool, burst=True).run() == 0
    assert spool.counts()["completed"] == JOBS
    return spool


def test_quick_flushes_are_made_on_the_workers_own_path(spool_path, counted, monkeypatch):
    drain(spool_path, monkeypatch, lambda fd: None)  # a disk whose flushes cost nothing (tmpfs)
    assert counted == []


def test_slow_flushes_go_through_the_group_commit(spool_path, counted, monkeypatch):
    real_fsync = os.fsync

    def slow_fsync(fd):  # a journaled disk: every flush waits for a journal commit
        time.sleep(0.002)
        real_fsync(fd)
    drain(spool_path, monkeypatch, slow_fsync)
    assert len(counted) == 1
    assert counted[0].settles >= JOBS - 2  # the first settle measures the disk, at most one more follows


def test_without_durable_nothing_is_flushed_and_no_group_commit_starts(spool_path, counted, monkeypatch):
    flushed = []
    drain(spool_path, monkeypatch, flushed.append, durable=False)
    assert counted == [] and flushed == []


def test_the_pace_follows_the_recent_flushes():
    pace = commit.FlushPace()
    assert pace.inline()  # nothing measured yet: the first settle is made at once, and measured
    pace.observe(0.005)
    assert not pace.inline()
    for _ in range(40):
        pace.observe(0.000_002)
    assert pace.inline()  # the disk became quick (or the slow flush was a one-off)
    pace.observe(0.001)  # one flush preempted by another process
    assert pace.inline()


def test_in_group_mode_one_settle_in_probe_is_made_at_once_to_measure_the_disk_again():
    """Only settles made at once are measured; without the probes a worker that once went to the
    group commit would never learn that its disk became quick."""
    pace = commit.FlushPace()
    for _ in range(pace.RECENT):
        pace.observe(0.005)
    choices = [pace.inline() for _ in range(3 * pace.PROBE)]
    assert choices.count(True) == 3 and choices[pace.PROBE - 1] and not any(choices[:pace.PROBE - 1])
    made_at_once = 0
    while made_at_once <= pace.RECENT // 2:  # the probes find the disk quick now
        if pace.inline():
            pace.observe(0.000_002)
            made_at_once += 1
    assert all(pace.inline() for _ in range(2 * pace.PROBE))


def test_a_grouped_outcome_lands_while_the_next_job_still_runs(spool_path, tmp_path):
    """The worker makes the group's renames between jobs and while a job runs (GroupCommit.advance),
    so a long job does not hold the outcome of the one before it back in processing/."""
    spool = Spool(spool_path)
    release = tmp_path / "release"
    first, second, long = (spool.enqueue({"command": command})["id"] for command in
                           ("true", "true", f"while [ ! -e '{release}' ]; do sleep 0.05; done"))
    pid = os.fork()
    if pid == 0:  # a worker on a disk with slow flushes, in a process of its own
        code = 1
        try:
            real_fsync = os.fsync

            def slow_fsync(fd):
                time.sleep(0.002)
                real_fsync(fd)
            os.fsync = slow_fsync
            code = Worker(Spool(spool_path), burst=True).run()
        finally:
            os._exit(code)
    try:
        wait_until(lambda: spool.find(long) == "processing", timeout=30)
        # `second` was the first settle through the group commit (`first` measured the disk).
        wait_until(lambda: spool.find(second) == "completed", timeout=30)
        assert spool.find(long) == "processing" and spool.find(first) == "completed"
    finally:
        release.touch()
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert spool.find(long) == "completed"

