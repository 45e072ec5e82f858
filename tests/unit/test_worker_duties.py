"""The worker's pieces: lost claims (counted, not printed), its filelock-held lock, named locks, the duty table."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time

import pytest
from support import wait_until

from queuectl import jobstep
from queuectl.core import lifecycle, locks, registry, workerfiles
from queuectl.core.errors import SpoolError
from queuectl.duties import Duty, DutyTable
from queuectl.worker import Worker


def test_a_claim_lost_to_another_host_is_counted_not_printed(spool, monkeypatch, capfd):
    spool.set_config("shared", "true")
    job_id = spool.enqueue("true")["id"]
    real_claim = lifecycle.claim
    lost = []

    def lost_once(*args, **kwargs):
        if not lost:
            lost.append(True)  # as when another host's worker renamed the file between this one's steps
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", spool.path("pending", job_id))
        return real_claim(*args, **kwargs)
    monkeypatch.setattr(jobstep.lifecycle, "claim", lost_once)
    written = []
    real_write = registry.write_record
    monkeypatch.setattr(registry, "write_record", lambda *args: (written.append(dict(args[2])), real_write(*args)))
    worker = Worker(spool, until_empty=True)
    assert worker.run() == 0
    assert spool.find(job_id) == "completed" and lost
    assert worker.step.lost_claims == 1
    assert written[-1]["lost_claims"] == 1
    assert "trying again" not in capfd.readouterr().err


def test_on_one_host_a_vanished_claim_is_still_an_error(spool, monkeypatch):
    """Alone on one disk no other host can win a race: an ENOENT in a claim is no lost race."""
    spool.enqueue("true")

    def gone(*args, **kwargs):
        raise FileNotFoundError(errno.ENOENT, "No such file or directory")
    monkeypatch.setattr(jobstep.lifecycle, "claim", gone)
    with pytest.raises(SpoolError):
        Worker(spool, burst=True).run()


def test_the_worker_lock_is_held_for_life_and_probed_from_other_processes(spool):
    held = locks.take_worker_lock(spool, "w-1")
    try:
        assert registry.holds_lock(spool, "w-1")
        with pytest.raises(SpoolError, match="taken by a live worker"):
            locks.take_worker_lock(spool, "w-1")
        probe = subprocess.run([sys.executable, "-c", "import sys; from queuectl import Spool; from queuectl.core import registry; "
                                "sys.exit(0 if registry.holds_lock(Spool(sys.argv[1]), 'w-1') else 1)", spool.root])
        assert probe.returncode == 0
    finally:
        held.release()
    assert not registry.holds_lock(spool, "w-1")


def test_a_killed_workers_lock_is_free_and_a_probe_creates_no_lock_file(spool, tmp_path):
    code = ("import sys, time; from queuectl import Spool; from queuectl.core import locks; held = locks.take_worker_lock(Spool(sys.argv[1]), 'w-2'); "
            "open(sys.argv[2], 'w').close(); time.sleep(60)")
    ready = tmp_path / "ready"
    process = subprocess.Popen([sys.executable, "-c", code, spool.root, str(ready)])
    try:
        wait_until(ready.exists, message="the lock to be taken")
        assert registry.is_alive(spool, "w-2")
    finally:
        process.kill()
        process.wait()
    assert not registry.holds_lock(spool, "w-2")
    os.unlink(workerfiles.lock_path(spool, "w-2"))
    assert not registry.holds_lock(spool, "w-2")
    assert not os.path.exists(workerfiles.lock_path(spool, "w-2"))


def test_a_named_lock_held_elsewhere_fails_in_one_line_naming_it(spool, tmp_path):
    path = str(tmp_path / "config.json.lock")
    code = ("import sys, time; from queuectl.core import locks\nwith locks.named_lock(sys.argv[1]):\n"
            "    open(sys.argv[2], 'w').close(); time.sleep(60)")
    ready = tmp_path / "ready"
    process = subprocess.Popen([sys.executable, "-c", code, path, str(ready)])
    try:
        wait_until(ready.exists, message="the lock to be taken")
        with pytest.raises(SpoolError) as error:
            with locks.named_lock(path, timeout=0.2, what="config.json"):
                pass
        assert "config.json is being changed by another process" in str(error.value) and path in str(error.value)
    finally:
        process.kill()
        process.wait()
    with locks.named_lock(path, timeout=5):
        assert os.path.exists(path)


def test_enqueue_does_not_load_filelock(spool_path):
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "queuectl", "--spool", spool_path,
                             "enqueue", "echo hi"], capture_output=True, text=True, check=True)
    imported = [line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()]
    assert "queuectl.core.spool" in imported and "filelock" not in imported


class Every(Duty):
    def __init__(self, period: float, *, during_run: bool = False):
        self.period = period
        self.next = 0.0
        self.runs: list[float] = []
        self.during_run = during_run

    def next_time(self, now: float) -> float | None:
        return self.next

    def run(self, now: float) -> None:
        self.runs.append(now)
        self.next = now + self.period


def test_the_duty_table_runs_what_is_due_and_sleeps_until_the_earliest():
    often, rarely = Every(1.0, during_run=True), Every(10.0)
    table = DutyTable([often, rarely])
    table.run_due(100.0)
    assert (often.runs, rarely.runs) == ([100.0], [100.0])
    assert table.next_time(100.0) == 101.0
    table.run_due(101.0, running=True)
    table.run_due(102.0, running=True)
    assert (often.runs, rarely.runs) == ([100.0, 101.0, 102.0], [100.0])  # only during_run duties while a job runs
    table.run_due(110.0)
    assert rarely.runs == [100.0, 110.0]
    assert table.next_time(time.time()) is not None
