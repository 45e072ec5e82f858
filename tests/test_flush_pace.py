"""A worker settles at once where flushes are quick, through its group commit where they are slow.

lifecycle.FlushPace makes the choice from the flushes it has measured; the
outcome is on disk before the job's lock is given up either way, which the
crash-point tests check for both paths (tests/test_crash_points.py). Here a
real worker runs in this process with os.fsync made instant or slow, as on
tmpfs or on a journaled disk.
"""

from __future__ import annotations

import os
import time

import pytest
from conftest import wait_until

from queuectl import Spool, lifecycle
from queuectl.worker import Worker

JOBS = 40


class CountingCommit(lifecycle.GroupCommit):
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
    monkeypatch.setattr(lifecycle, "GroupCommit", CountingCommit)
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
    pace = lifecycle.FlushPace()
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
    pace = lifecycle.FlushPace()
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


def test_a_group_commit_gathers_the_settles_that_arrive_within_its_window(spool, monkeypatch):
    """Settles submitted within GATHER of the group's first are flushed together: one fsync of the
    folders for all of them, and their files' writeback started before the first file's fsync."""
    from queuectl import fsops
    from queuectl.runner import Outcome
    spool.set_config("durable", "true")
    calls = []
    monkeypatch.setattr(fsops, "start_writeback", lambda fds: calls.append(("writeback", len(fds))))
    real_fsync_dir = fsops.fsync_dir
    monkeypatch.setattr(fsops, "fsync_dir", lambda path: (calls.append(("folder", os.path.basename(path))),
                                                          real_fsync_dir(path)))
    monkeypatch.setattr(lifecycle.GroupCommit, "GATHER", 5.0)  # all four land in one window
    ids = [spool.enqueue({"command": "true"})["id"] for _ in range(4)]
    now = time.time()
    claimed = [lifecycle.claim(spool, "pending", job_id, "w-1", now) for job_id in ids]
    calls.clear()  # a claim's own flushes
    commit = lifecycle.GroupCommit(spool)
    for held in claimed:
        lifecycle.settle(spool, held, Outcome(exit_code=0, started=now, finished=now), None, commit)
    commit.close()  # closing ends the wait: everything submitted is settled now
    assert [spool.find(job_id) for job_id in ids] == ["completed"] * 4
    assert calls == [("writeback", 4), ("folder", "completed"), ("folder", "processing")]


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


def test_start_writeback_reaches_libc_and_leaves_the_data_alone(tmp_path):
    """The hint goes to glibc's sync_file_range; the bytes are what was written, the fsync still follows."""
    from queuectl import fsops
    path = tmp_path / "outcome"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.write(fd, b"x" * 5000)
        fsops.start_writeback([fd])
        assert callable(fsops._libc_writeback)
        os.fsync(fd)
    finally:
        os.close(fd)
    assert path.read_bytes() == b"x" * 5000
