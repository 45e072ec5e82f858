"""A full disk and a read-only spool: a one-line error, a worker that stops cleanly, nothing lost.

Two kinds of evidence:
- a real small tmpfs (mounted for the test: root only, skipped where
  mounting is not allowed) filled to the last byte, or remounted read-only;
- fault injection, where the file system itself cannot say "full" at the
  chosen moment: os.write and os.fsync raise ENOSPC or EROFS, in this
  process (the CLI) or in a real worker process (through a sitecustomize
  module), while a flag file exists.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess

import pytest
from support import run_queuectl, wait_until
from support.chaos import assert_intact, census
from support.workers import read_lines

from queuectl import Spool
from queuectl.doctor import check

FAULTS = {"ENOSPC": "No space left on device", "EROFS": "Read-only file system"}

# Loaded by a worker's Python at start-up when its PYTHONPATH names this file's folder.
# Only files on disk fail: pipes (watchdog wakes its thread through one) carry on.
SITECUSTOMIZE = '''
import errno, os, stat
_flag = os.environ.get("QUEUECTL_TEST_FAULT_FLAG")
if _flag:
    _code = getattr(errno, os.environ["QUEUECTL_TEST_FAULT"])

    def _failing(original):
        def call(fd, *args, **kwargs):
            if os.path.exists(_flag) and stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError(_code, os.strerror(_code))
            return original(fd, *args, **kwargs)
        return call

    os.write = _failing(os.write)
    os.fsync = _failing(os.fsync)
'''


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs of our own; skipped where this user may not mount one."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=True)


def fill(folder) -> str:
    """Write a file until the disk is full; returns its path (remove it to free the space)."""
    path = os.path.join(folder, "filler")
    with open(path, "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
        try:
            while True:
                handle.write(b"\0")
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return path


def one_line_error(result, message: str) -> None:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert result.stderr.startswith("queuectl: error: ") and result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr


def assert_clean_tmp(spool_path: str) -> None:
    assert os.listdir(os.path.join(spool_path, "tmp")) == []


# -- a real full disk ---------------------------------------------------------

def test_enqueue_on_a_full_disk_fails_in_one_line_and_leaves_no_file(small_disk, tmp_path):
    spool_path = str(small_disk / "spool")
    assert run_queuectl(spool_path, "enqueue", "--id", "before", "true").returncode == 0
    batch = tmp_path / "batch.jsonl"
    batch.write_text("".join(json.dumps({"id": f"batch-{n}", "command": "true"}) + "\n" for n in range(3)))
    filler = fill(small_disk)

    one_line_error(run_queuectl(spool_path, "enqueue", "--id", "refused", "true"), "No space left on device")
    one_line_error(run_queuectl(spool_path, "enqueue", "--file", str(batch)), "No space left on device")

    assert_intact(spool_path, {"before"})
    assert Spool(spool_path).names("pending") == ["before.json"]
    assert_clean_tmp(spool_path)
    os.unlink(filler)
    assert run_queuectl(spool_path, "enqueue", "--id", "after", "true").returncode == 0
    assert_intact(spool_path, {"before", "after"}, allowed_states=("pending",))


def test_a_disk_that_fills_during_a_run_stops_the_worker_cleanly_and_loses_nothing(small_disk, workers, tmp_path):
    """The job fills the disk: its outcome cannot be written, so its worker stops with one line; the next
    worker recovers the job (a run whose outcome was not recorded counts as cut short) and runs the rest."""
    spool_path = workers.spool_path = str(small_disk / "spool")
    workers.spool = Spool(spool_path)
    workers.spool.set_config("backoff_max", "0")  # the recovered job is due again at once
    filler, ran = small_disk / "filler", tmp_path / "ran.txt"
    filled_once = tmp_path / "filled-once"
    workers.spool.enqueue({"id": "filler", "priority": 1, "command": (
        f"echo filler >> {ran}; [ -e {filled_once} ] && exit 0; touch {filled_once}; "
        f"head -c 10000000 /dev/zero > {filler}; echo 'disk full now' >&2; exit 0")})
    workers.spool.enqueue({"id": "after", "command": f"echo after >> {ran}"})

    stopped = workers.start("--quiet")  # its error is then the only line
    assert stopped.wait() == 1
    assert stopped.stderr().count("\n") == 1, stopped.stderr()
    assert "stopped: cannot write to the spool" in stopped.stderr() and "No space left on device" in stopped.stderr()
    assert "Traceback" not in stopped.stderr()
    assert_intact(spool_path, {"filler", "after"})
    assert census(spool_path).state_of("after") == "pending"

    os.unlink(filler)
    assert workers.start("--burst").wait() == 0

    assert_intact(spool_path, {"filler", "after"}, allowed_states=("completed",))
    assert sorted(read_lines(ran)) == ["after", "filler", "filler"]  # the cut-short run, then the real one
    check(workers.spool, repair=True)
    assert check(workers.spool) == []


def test_a_read_only_spool_refuses_changes_in_one_line_and_still_shows_its_jobs(small_disk):
    spool_path = str(small_disk / "spool")
    assert run_queuectl(spool_path, "enqueue", "--id", "kept", "true").returncode == 0
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    try:
        one_line_error(run_queuectl(spool_path, "enqueue", "true"), "Read-only file system")
        one_line_error(run_queuectl(spool_path, "worker", "start", "--burst"), "Read-only file system")
        one_line_error(run_queuectl(spool_path, "cancel", "kept"), "Read-only file system")
        listed = run_queuectl(spool_path, "list", "--json")
        assert listed.returncode == 0 and [job["id"] for job in json.loads(listed.stdout)] == ["kept"]
        assert run_queuectl(spool_path, "status").returncode == 0
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
    assert_intact(spool_path, {"kept"}, allowed_states=("pending",))
    assert_clean_tmp(spool_path)


# -- injected faults -------------------------------------------------------------

@pytest.mark.parametrize("fault", ["ENOSPC", "EROFS"])
@pytest.mark.parametrize("call", ["write", "fsync"])
def test_enqueue_when_a_write_or_fsync_fails_says_so_in_one_line(spool_path, cli, monkeypatch, fault, call):
    cli("enqueue", "--id", "before", "true")
    code = getattr(errno, fault)

    def failing(*args, **kwargs):
        raise OSError(code, os.strerror(code))
    monkeypatch.setattr(os, call, failing)
    result = cli("enqueue", "--id", "refused", "true")
    monkeypatch.undo()

    assert result.exit_code == 1
    assert result.stderr == f"queuectl: error: cannot enqueue into {Spool(spool_path).root}: {FAULTS[fault]}\n"
    assert_intact(spool_path, {"before"}, allowed_states=("pending",))
    assert_clean_tmp(spool_path)


def test_a_batch_cut_by_a_full_disk_says_how_much_went_in(spool_path, cli, monkeypatch, tmp_path):
    batch = tmp_path / "batch.jsonl"
    batch.write_text("".join(json.dumps({"id": f"job-{n}", "command": "true"}) + "\n" for n in range(5)))
    real_write, calls = os.write, []

    def full_at_the_third_job(fd, data):
        calls.append(fd)
        if len(calls) >= 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)
    monkeypatch.setattr(os, "write", full_at_the_third_job)
    result = cli("enqueue", "--file", str(batch))
    monkeypatch.undo()

    assert result.exit_code == 1 and result.stderr.count("\n") == 1
    assert "No space left on device; the first 2 job(s) of the batch were enqueued" in result.stderr
    assert_intact(spool_path, {"job-0", "job-1"}, allowed_states=("pending",))
    assert_clean_tmp(spool_path)


@pytest.mark.parametrize("fault", ["ENOSPC", "EROFS"])
def test_a_worker_that_cannot_record_an_outcome_stops_cleanly_and_the_job_is_recovered(
        spool_path, workers, tmp_path, fault):
    """The job itself makes the disk "fail" (creates the flag): the settle that follows cannot be written."""
    fault_dir, flag, ran = tmp_path / "fault", tmp_path / "disk-fails", tmp_path / "ran.txt"
    fault_dir.mkdir()
    (fault_dir / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = {"PYTHONPATH": str(fault_dir), "QUEUECTL_TEST_FAULT_FLAG": str(flag), "QUEUECTL_TEST_FAULT": fault}
    spool = Spool(spool_path)
    spool.set_config("backoff_max", "0")  # the recovered job is due again at once
    once = tmp_path / "broke-it-once"
    spool.enqueue({"id": "breaks-the-disk", "priority": 1,
                   "command": f"echo ran >> {ran}; [ -e {once} ] || {{ touch {once} {flag}; }}"})
    spool.enqueue({"id": "waits", "command": "true"})

    stopped = workers.start("--quiet", env=env)
    assert stopped.wait() == 1
    assert stopped.stderr().count("\n") == 1, stopped.stderr()
    assert "stopped: cannot write to the spool" in stopped.stderr() and FAULTS[fault] in stopped.stderr()
    assert_intact(spool_path, {"breaks-the-disk", "waits"})

    # While the disk still fails, a new worker cannot start: one line, nothing touched.
    again = workers.start("--quiet", env=env)
    assert again.wait() == 1 and again.stderr().count("\n") == 1 and FAULTS[fault] in again.stderr()

    os.unlink(flag)
    assert workers.start("--burst", env=env).wait() == 0
    found = assert_intact(spool_path, {"breaks-the-disk", "waits"}, allowed_states=("completed",))
    assert found.problems == []
    assert read_lines(ran) == ["ran", "ran"]
    history = spool.get("breaks-the-disk")["history"]
    assert [entry["error"] for entry in history][0].endswith("died during the run")
    wait_until(lambda: check(spool, repair=True) is not None and check(spool) == [], message="a healthy spool")
