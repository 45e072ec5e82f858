"""Network file systems, one host: the errors they return and the parts of several-host support that
need no second host (README.md "Running on several hosts"). Errnos are injected where they happen."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import threading
import time

import pytest

from queuectl import Spool
from queuectl.core import fsops, fstype, lease, lifecycle, registry, workerfiles
from queuectl.core.outcome import Outcome
from queuectl.watch import FolderWatch
from queuectl.worker import Worker


def test_shared_types_and_the_override(spool):
    assert fstype.is_shared_type("fuse.glusterfs") and fstype.is_shared_type("nfs4")
    assert fstype.is_shared_type("fuse") and fstype.is_shared_type("ceph")
    assert not fstype.is_shared_type("ext4") and not fstype.is_shared_type("tmpfs")
    # This machine's test folder, as util-linux's findmnt reads the same mount table.
    findmnt = shutil.which("findmnt")
    if findmnt:
        expected = subprocess.run([findmnt, "-n", "-o", "FSTYPE", "-T", spool.root], capture_output=True,
                                  text=True, check=True).stdout.strip()
        assert fstype.filesystem(spool.root) == expected
    spool.set_config("shared", "true")
    assert fstype.mode(spool) == "shared"
    spool.set_config("shared", "false")
    assert fstype.mode(spool) == "local"


def test_mountinfo_picks_the_innermost_mount(monkeypatch, tmp_path):
    fake = tmp_path / "mountinfo"
    fake.write_text("1 0 8:1 / / rw - ext4 /dev/sda1 rw\n"
                    "2 1 0:40 / /mnt/my\\040share rw - fuse.glusterfs h:/v rw\n")
    real_open = open
    monkeypatch.setattr("builtins.open", lambda path, *a, **k: real_open(fake if path == "/proc/self/mountinfo"
                                                                          else path, *a, **k))
    assert fstype._from_mountinfo("/mnt/my share/spool") == "fuse.glusterfs"
    assert fstype._from_mountinfo("/mnt/my sharex") == "ext4"


def _no_renameat2_flags(monkeypatch):
    monkeypatch.setattr(fsops, "_renameat2_flags", lambda src, dst, flags: False)  # EINVAL on NFS and FUSE


def test_without_renameat2_flags_a_move_links_then_unlinks(monkeypatch, tmp_path):
    _no_renameat2_flags(monkeypatch)
    (tmp_path / "a").write_text("a")
    (tmp_path / "taken").write_text("other")
    fsops.rename_noreplace(str(tmp_path / "a"), str(tmp_path / "b"))
    assert not (tmp_path / "a").exists() and (tmp_path / "b").read_text() == "a"
    with pytest.raises(FileExistsError):
        fsops.rename_noreplace(str(tmp_path / "b"), str(tmp_path / "taken"))
    assert (tmp_path / "taken").read_text() == "other"


def test_an_enoent_after_the_link_is_the_move_done(monkeypatch, tmp_path):
    """A retried NFS unlink reports ENOENT although it removed the name: the file is where it went."""
    _no_renameat2_flags(monkeypatch)
    real_unlink = os.unlink

    def unlink_retried(path, *args, **kwargs):
        real_unlink(path, *args, **kwargs)
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
    (tmp_path / "a").write_text("a")
    monkeypatch.setattr(os, "unlink", unlink_retried)
    fsops.rename_noreplace(str(tmp_path / "a"), str(tmp_path / "b"))
    assert (tmp_path / "b").read_text() == "a" and not (tmp_path / "a").exists()


def test_on_a_shared_spool_another_hosts_move_in_flight_is_not_taken_for_ours(monkeypatch, tmp_path):
    """Two names of one file may be another host's link + unlink half done: the move fails, both names stay."""
    _no_renameat2_flags(monkeypatch)
    (tmp_path / "a").write_text("a")
    os.link(tmp_path / "a", tmp_path / "b")
    with pytest.raises(FileNotFoundError):
        fsops.rename_noreplace(str(tmp_path / "a"), str(tmp_path / "b"), fold_cut=False)
    assert (tmp_path / "a").exists() and (tmp_path / "b").exists()
    fsops.rename_noreplace(str(tmp_path / "a"), str(tmp_path / "b"))  # alone on one host: a cut move, folded
    assert not (tmp_path / "a").exists()


def test_a_worker_goes_on_after_estale(spool, monkeypatch):
    """ESTALE from a listing and from opening a job: the step is tried again, the job runs, the worker stays."""
    job_id = spool.enqueue("true")["id"]
    real_lock, real_listdir = Spool.lock, os.listdir
    faults = {"lock": 1, "listdir": 1}

    def stale_lock(self, state, name):
        if faults["lock"]:
            faults["lock"] -= 1
            raise OSError(errno.ESTALE, "Stale file handle", name)
        return real_lock(self, state, name)

    def stale_listdir(path="."):
        if str(path).endswith("pending") and faults["listdir"]:
            faults["listdir"] -= 1
            raise OSError(errno.ESTALE, "Stale file handle", path)
        return real_listdir(path)
    monkeypatch.setattr(Spool, "lock", stale_lock)
    monkeypatch.setattr(os, "listdir", stale_listdir)
    spool.set_config("shared", "true")
    assert Worker(spool, until_empty=True).run() == 0  # one worker, never stopped by the errors
    assert spool.find(job_id) == "completed"
    assert faults == {"lock": 0, "listdir": 0}


def test_a_run_given_up_after_an_error_is_taken_back_by_its_own_worker(spool, monkeypatch):
    """On a shared spool a worker lives on after ESTALE during a run: its next sweep recovers that job
    (nobody else would: its lease is alive) and it runs again."""
    from queuectl.run import runner
    job_id = spool.enqueue({"command": "true", "max_retries": 1})["id"]
    for key, value in {"shared": "true", "recovery_interval": "0.2", "backoff_base": "1", "backoff_max": "0"}.items():
        spool.set_config(key, value)
    real_run, faults = runner.run, [1]

    def stale_run(*args, **kwargs):
        if faults[0]:
            faults[0] -= 1
            raise OSError(errno.ESTALE, "Stale file handle", "logs")
        return real_run(*args, **kwargs)
    monkeypatch.setattr(runner, "run", stale_run)
    worker = Worker(spool, until_empty=True)
    deadline = threading.Timer(20, lambda: (setattr(worker, "stopping", True), worker.watch.wake()))
    deadline.start()  # a job stuck in processing/ would keep the worker waiting forever
    try:
        assert worker.run() == 0
    finally:
        deadline.cancel()
    job = spool.get(job_id)
    assert (job["state"], job["attempts"], faults) == ("completed", 2, [0])
    assert "died" in job["history"][0]["error"]


def test_a_lease_is_judged_by_its_bytes_on_the_judges_own_clock(spool, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(lease.time, "monotonic", lambda: clock[0])
    spool.set_config("lease_timeout", "10")
    registry.write_record(spool, "far-1", {"pid": 1, "host": "another-host", "started": 0})
    owner = lease.Lease(spool, "far-1", 10)
    owner.start()
    owner._stop.set()  # beats by hand below
    judge = lease.Liveness(spool, mode="shared", observing=True)
    assert judge.worker_alive("far-1")
    clock[0] += 9
    assert judge.worker_alive("far-1")  # unchanged, but not for lease_timeout yet
    owner.beat()
    clock[0] += 9
    assert judge.worker_alive("far-1")  # it moved: seen anew
    clock[0] += 9
    assert judge.worker_alive("far-1")
    clock[0] += 1.5
    assert not judge.worker_alive("far-1")  # the same bytes for 10.5 s of the judge's time
    owner.beat()
    assert judge.worker_alive("far-1")
    os.unlink(lease.lease_path(spool, "far-1"))
    owner.beat()  # a lease removed by a judge comes back with the next beat
    assert os.path.exists(lease.lease_path(spool, "far-1"))


def test_a_one_shot_judge_compares_file_system_times(spool):
    registry.write_record(spool, "far-2", {"pid": 1, "host": "another-host", "started": 0})
    judge = lease.Liveness(spool, mode="shared")
    assert not judge.worker_alive("far-2")  # no lease at all
    owner = lease.Lease(spool, "far-2", 30)
    owner.start()
    owner._stop.set()
    assert lease.Liveness(spool, mode="shared").worker_alive("far-2")
    old = time.time() - 40
    os.utime(lease.lease_path(spool, "far-2"), (old, old))
    assert not lease.Liveness(spool, mode="shared").worker_alive("far-2")


def test_a_worker_whose_job_was_recovered_meanwhile_drops_its_outcome(spool):
    job_id = spool.enqueue("true")["id"]
    spool.shared = True
    spool.lease = lease.Lease(spool, "me-1", 30)
    held = lifecycle.claim(spool, "pending", job_id, "me-1", time.time())
    assert held is not None
    # Another host's recovery while this worker was paused: rewritten (a new inode) and moved on.
    path = spool.path("processing", job_id)
    with open(path, "rb") as handle:
        data = handle.read()
    os.unlink(path)
    with open(path, "wb") as handle:
        handle.write(data.replace(b'"attempts": 1', b'"attempts": 2'))
    before = open(path, "rb").read()
    now = time.time()
    assert lifecycle.settle(spool, held, Outcome(exit_code=0, started=now, finished=now), None) == "lost"
    assert open(path, "rb").read() == before  # nothing written over the new owner's file
    held.unlock()


def test_polling_sees_files_land_leave_and_be_replaced(tmp_path, monkeypatch):
    folder = tmp_path / "pending"
    folder.mkdir()
    watch = FolderWatch({"pending": str(folder)}, poll=True)
    clock = [0.0]
    monkeypatch.setattr("queuectl.watch.time.monotonic", lambda: clock[0])
    watch._source._next = 0.0

    def changes():
        clock[0] += 5  # past the poll interval and the listing that confirms a change
        return sorted(watch.changes())
    (folder / "a.json").write_text("1")
    assert changes() == [("created", "pending", "a.json")]
    (folder / "new").write_text("2")
    os.replace(folder / "new", folder / "a.json")
    assert changes() == [("created", "pending", "a.json"), ("gone", "pending", "a.json")]
    os.unlink(folder / "a.json")
    assert changes() == [("gone", "pending", "a.json")]
    assert changes() == []
    watch.close()


def test_a_stale_handle_is_looked_up_again(spool, monkeypatch):
    """ESTALE while reading config.json or a job file (another client replaced it): read again from the path."""
    job_id = spool.enqueue("true")["id"]
    spool.set_config("max_retries", "7")
    real_read_fd = fsops.read_fd
    faults = [2]

    def stale_read(fd, limit):
        if faults[0]:
            faults[0] -= 1
            raise OSError(errno.ESTALE, "Stale file handle")
        return real_read_fd(fd, limit)
    monkeypatch.setattr(fsops, "read_fd", stale_read)
    assert spool.get(job_id)["id"] == job_id
    real_open = open
    faults[0] = 1

    def stale_open(path, *args, **kwargs):
        if str(path).endswith("config.json") and faults[0]:
            faults[0] -= 1
            raise OSError(errno.ESTALE, "Stale file handle", path)
        return real_open(path, *args, **kwargs)
    monkeypatch.setattr("builtins.open", stale_open)
    assert Spool(spool.root).config["max_retries"] == 7


def test_a_read_looks_again_until_the_clients_cache_of_the_name_has_expired(spool, monkeypatch):
    """Within a second of another client replacing a job file, a GlusterFS client opens the old file
    again and again, and the fstat that follows fails with ESTALE; a read outlasts that second
    (fsops.STALE_ATTEMPTS), here on a clock that only the read's own waits move."""
    job_id = spool.enqueue("true")["id"]
    clock = [0.0]
    real_fstat = os.fstat

    def stale_for_a_second(fd):
        if clock[0] < 1.0:
            raise OSError(errno.ESTALE, "Stale file handle")
        return real_fstat(fd)
    monkeypatch.setattr(fsops.time, "sleep", lambda seconds: clock.__setitem__(0, clock[0] + seconds))
    monkeypatch.setattr(fsops.os, "fstat", stale_for_a_second)
    assert spool.get(job_id)["id"] == job_id
    assert clock[0] > 1.0


def test_a_close_that_reports_estale_is_no_failure(spool, monkeypatch):
    """GlusterFS reports ESTALE when closing a file another client moved: the fd is freed all the same."""
    job_id = spool.enqueue("true")["id"]
    real_close = os.close
    closes = []

    def stale_close(fd):
        real_close(fd)
        closes.append(fd)
        raise OSError(errno.ESTALE, "Stale file handle")
    blocker = spool.lock("pending", job_id + ".json")  # another process (here: another fd) holds the flock
    monkeypatch.setattr(os, "close", stale_close)
    assert spool.lock("pending", job_id + ".json") is None
    assert closes
    monkeypatch.setattr(os, "close", real_close)
    blocker.unlock()


def test_a_judge_that_looks_often_sees_a_lease_expire_once(spool, monkeypatch):
    clock = [50.0]
    monkeypatch.setattr(lease.time, "monotonic", lambda: clock[0])
    spool.set_config("lease_timeout", "10")
    owner = lease.Lease(spool, "far-3", 10)
    owner.start()
    owner._stop.set()
    judge = lease.Liveness(spool, mode="shared", observing=True)
    assert not judge.look_at_leases(skip="me")
    clock[0] += 10
    assert judge.look_at_leases(skip="me")  # expired: sweep now
    clock[0] += 1
    assert not judge.look_at_leases(skip="me")  # reported once, not at every look
    owner.beat()
    assert not judge.look_at_leases(skip="me")
    assert not judge.look_at_leases(skip="far-3")  # a worker never judges its own lease


def test_a_worker_found_dead_stays_dead_when_its_lease_is_removed(spool, monkeypatch):
    """Recovery removes a dead worker's record and lease; its job, looked at again, must not start a new wait."""
    clock = [0.0]
    monkeypatch.setattr(lease.time, "monotonic", lambda: clock[0])
    spool.set_config("lease_timeout", "10")
    registry.write_record(spool, "far-4", {"pid": 1, "host": "another-host", "started": 0})
    owner = lease.Lease(spool, "far-4", 10)
    owner.start()
    owner._stop.set()
    judge = lease.Liveness(spool, mode="shared", observing=True)
    assert judge.worker_alive("far-4")
    clock[0] += 10
    assert not judge.worker_alive("far-4")
    registry.remove_record(spool, "far-4")
    assert not judge.worker_alive("far-4")


@pytest.mark.parametrize("step", ["open_nofollow", "lock_fd"])
def test_a_lock_file_gone_stale_is_not_held(spool, monkeypatch, step):
    """`worker stop` waits on workers' locks; one that just exited leaves a name that may answer
    ESTALE, at the open or (GlusterFS) at the flock."""
    open(registry.lock_path(spool, "gone-1"), "w").close()

    def stale(*args, **kwargs):
        raise OSError(errno.ESTALE, "Stale file handle")
    monkeypatch.setattr(workerfiles, step, stale)  # holds_lock's own module
    assert not registry.holds_lock(spool, "gone-1")


def test_a_read_whose_close_reports_enoent_still_returns_the_job(spool, monkeypatch):
    """GlusterFS may fail close() of a read-only fd with ENOENT once another client moved the file."""
    job_id = spool.enqueue({"command": "true"})["id"]
    real_close = os.close

    def close_then_enoent(fd):
        real_close(fd)
        raise FileNotFoundError(errno.ENOENT, "No such file or directory")
    monkeypatch.setattr(os, "close", close_then_enoent)
    job = spool.read("pending", job_id + ".json")
    monkeypatch.undo()
    assert job is not None and job["id"] == job_id


def test_a_read_that_reports_enoent_finds_the_job_gone(spool, monkeypatch):
    """GlusterFS may fail the read of an open file with ENOENT once another client moved it:
    a reader and a locker find the job gone from that folder, as an ENOENT at the open would say."""
    job_id = spool.enqueue({"command": "true"})["id"]

    def read_enoent(*args):
        raise FileNotFoundError(errno.ENOENT, "No such file or directory")
    monkeypatch.setattr(fsops, "read_fd", read_enoent)
    assert spool.read("pending", job_id + ".json") is None
    assert spool.lock("pending", job_id + ".json") is None
    monkeypatch.undo()
    assert spool.read("pending", job_id + ".json")["id"] == job_id


def test_config_replaced_by_another_client_mid_read_is_read_again_not_taken_as_absent(spool, monkeypatch):
    """An ENOENT from the read of config.json (GlusterFS, the file replaced by another client) once
    made `config set` start from an empty file and drop every other key."""
    import builtins

    from queuectl.core import spool as spool_module
    spool.set_config("max_retries", "7")
    failures = []

    class ReplacedMidRead:
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def read(self):
            failures.append(1)
            raise FileNotFoundError(errno.ENOENT, "No such file or directory")

    def open_once_replaced(path, *args, **kwargs):
        handle = builtins.open(path, *args, **kwargs)
        return ReplacedMidRead(handle) if str(path).endswith("config.json") and not failures else handle
    monkeypatch.setattr(spool_module, "open", open_once_replaced, raising=False)
    spool.set_config("backoff_base", "3")
    monkeypatch.undo()
    assert failures
    assert spool.config["max_retries"] == 7 and spool.config["backoff_base"] == 3


def test_a_settle_retried_after_estale_hands_back_the_job_it_locked_again(spool, monkeypatch, tmp_path):
    """On a shared spool a settle cut by ESTALE is retried from the path with a new lock; a job with a
    completion hook comes back locked for its hook, and that lock, not the first one, is the caller's."""
    from queuectl import jobstep as worker_module

    spool.shared = True
    job_id = spool.enqueue({"command": "true", "on_success": f"touch {tmp_path / 'hooked'}"})["id"]
    worker = Worker(spool, burst=True)
    first = lifecycle.claim(spool, "pending", job_id, worker.name, time.time())
    real_settle = lifecycle.settle
    calls = []

    def stale_once(*args, **kwargs):
        calls.append(args[1])
        if len(calls) == 1:
            args[1].unlock()  # what settle does with its job when it fails
            raise OSError(errno.ESTALE, "Stale file handle")
        return real_settle(*args, **kwargs)
    monkeypatch.setattr(worker_module.lifecycle, "settle", stale_once)
    now = time.time()
    state, held = worker.step._settle(first, Outcome(started=now, finished=now, exit_code=0), None, durable=True)
    try:
        assert state == "completed" and len(calls) == 2
        assert held is calls[1] and held is not first and held.fd >= 0  # locked, for the hook to run
    finally:
        held.unlock()


def test_a_claim_that_fails_gives_its_group_slot_back(spool, monkeypatch):
    """A passing network error in a claim on a shared spool must not keep the slot it was admitted with."""
    from queuectl import jobstep as worker_module

    worker = Worker(spool, burst=True)
    released = []

    class Slot:
        def give_back(self):  # a claim that did not happen: its slot, and a start of its rate, go back
            released.append(True)
    monkeypatch.setattr(worker.gate, "admit", lambda *args: Slot())

    def stale_claim(*args, **kwargs):
        raise OSError(errno.ESTALE, "Stale file handle")
    monkeypatch.setattr(worker_module.lifecycle, "claim", stale_claim)
    with pytest.raises(OSError):
        worker.step.process("pending", "some-job")
    assert released == [True]


def test_a_drop_in_whose_name_another_client_just_moved_is_adopted_on_a_later_look(spool, monkeypatch):
    """A GlusterFS client answers a cached path another client has just moved with EBADFD, an lstat
    too: the step is skipped, the worker stays, and the folder is listed again soon, so the
    dropped-in file the failed step was about is still adopted and run."""
    with open(os.path.join(spool.dir("pending"), "dropped.json"), "w", encoding="utf-8") as handle:
        handle.write('{"command": "true"}')
    real_lstat = os.lstat
    faults = [1]

    def bad_state_lstat(path, *args, **kwargs):
        if str(path).endswith("pending/dropped.json") and faults[0]:
            faults[0] -= 1
            raise OSError(errno.EBADFD, "File descriptor in bad state", path)
        return real_lstat(path, *args, **kwargs)
    monkeypatch.setattr(lifecycle.os, "lstat", bad_state_lstat)
    spool.set_config("shared", "true")
    assert Worker(spool, until_empty=True).run() == 0  # one worker, never stopped by the error
    assert faults == [0]
    assert spool.find("dropped") == "completed"
