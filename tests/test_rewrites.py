"""A worker's rewrites swap spare files in (fsops.Spare) instead of creating a file each time.

What must hold: the job's name always shows a complete file owned by the
rewriter; a reader that opened the old inode keeps reading the old complete
bytes for as long as the inode rests; no inode that is visible anywhere else
(a second name, a late writer) is ever written again.
"""

from __future__ import annotations

import json
import os
import time

import pytest

from conftest import put_job
from queuectl import Spool, fsops, lifecycle, spool as spool_module
from queuectl.doctor import check
from queuectl.fsops import Spare


@pytest.fixture
def worker_spool(spool):
    spool.spare = Spare(spool.dir("tmp"))
    yield spool
    spool.spare.close()


def job_path(spool: Spool, job: dict, state: str = "pending") -> str:
    return os.path.join(spool.dir(state), job["id"] + ".json")


def rewrite(spool: Spool, job: dict, **fields) -> None:
    held = spool.lock("pending", job["id"] + ".json")
    with held:
        held.job.update(fields)
        held.save()


def test_a_swapped_rewrite_is_complete_and_stays_owned(worker_spool):
    job = worker_spool.enqueue("true")
    path = job_path(worker_spool, job)
    old_inode = os.stat(path).st_ino
    held = worker_spool.lock("pending", job["id"] + ".json")
    held.job["note"] = "rewritten"
    held.save()

    assert os.stat(path).st_ino != old_inode
    assert os.fstat(held.fd).st_ino == os.stat(path).st_ino
    with open(path, "rb") as handle:
        assert json.loads(handle.read())["note"] == "rewritten"
    assert worker_spool.lock("pending", job["id"] + ".json") is None  # nobody else can own it
    [resting] = os.listdir(worker_spool.dir("tmp"))
    assert os.stat(os.path.join(worker_spool.dir("tmp"), resting)).st_ino == old_inode
    held.release()
    assert worker_spool.lock("pending", job["id"] + ".json") is not None


def test_rewrites_reuse_rested_inodes_instead_of_creating_files(worker_spool, monkeypatch):
    monkeypatch.setattr(Spare, "QUARANTINE", 0.0)
    jobs = [worker_spool.enqueue("true") for _ in range(5)]
    before = {os.stat(job_path(worker_spool, job)).st_ino for job in jobs}
    for job in jobs:
        rewrite(worker_spool, job, note="first")
        rewrite(worker_spool, job, note="second")
    after = {os.stat(job_path(worker_spool, job)).st_ino for job in jobs}
    after |= {os.stat(os.path.join(worker_spool.dir("tmp"), name)).st_ino
              for name in os.listdir(worker_spool.dir("tmp"))}
    assert len(after - before) == 1  # the first spare; ten rewrites created nothing else
    for job in jobs:
        assert worker_spool.get(job["id"])["note"] == "second"


def test_a_reader_of_the_old_inode_keeps_its_bytes_while_it_rests(worker_spool, monkeypatch):
    monkeypatch.setattr(Spare, "QUARANTINE", 3600.0)
    first, *others = [worker_spool.enqueue(f"echo {number}") for number in range(4)]
    reader = open(job_path(worker_spool, first), "rb")
    with reader:
        rewrite(worker_spool, first, note="new")
        for job in others:
            rewrite(worker_spool, job, note="other")
        data = reader.read()
    assert json.loads(data)["command"] == "echo 0" and "note" not in json.loads(data)


def test_a_rested_inode_that_was_written_to_is_not_reused(worker_spool, monkeypatch):
    monkeypatch.setattr(Spare, "QUARANTINE", 0.0)
    first, second = worker_spool.enqueue("true"), worker_spool.enqueue("true")
    with open(job_path(worker_spool, first), "ab") as late_writer:
        late_inode = os.fstat(late_writer.fileno()).st_ino
        rewrite(worker_spool, first, note="adopted")
        late_writer.write(b"\n")  # the dropping tool was not done after all
        late_writer.flush()
        rewrite(worker_spool, second, note="next")
    assert os.stat(job_path(worker_spool, second)).st_ino != late_inode
    assert worker_spool.get(second["id"])["note"] == "next"


def test_an_inode_with_a_second_name_never_becomes_a_spare(worker_spool, monkeypatch, tmp_path):
    monkeypatch.setattr(Spare, "QUARANTINE", 0.0)
    first, second = worker_spool.enqueue("echo first"), worker_spool.enqueue("echo second")
    backup = tmp_path / "backup.json"
    os.link(job_path(worker_spool, first), backup)
    original = backup.read_bytes()
    rewrite(worker_spool, first, note="new")
    rewrite(worker_spool, second, note="new")
    rewrite(worker_spool, second, note="newer")
    assert backup.read_bytes() == original


@pytest.mark.parametrize("durable", [True, False])
def test_durable_reuse_waits_for_the_old_names_to_be_synced_away(spool, monkeypatch, durable):
    """A claim's rename is not fsynced: after a power cut its old name could come back, so a durable
    worker fsyncs the folders before writing another job's bytes into that inode."""
    monkeypatch.setattr(Spare, "QUARANTINE", 0.0)
    spool.set_config("durable", "true" if durable else "false")
    spool.spare = Spare(spool.dir("tmp"), (spool.dir("pending"),))
    synced = []
    real_fsync_dir = fsops.fsync_dir
    monkeypatch.setattr(fsops, "fsync_dir", lambda path: (synced.append(path), real_fsync_dir(path)))
    first, second = spool.enqueue("true"), spool.enqueue("true")
    synced.clear()
    held = spool.lock("pending", first["id"] + ".json")
    with held:
        held.save(moving_on=True)  # no folder fsync of its own: only the spare's
    assert synced == []
    held = spool.lock("pending", second["id"] + ".json")
    with held:
        held.save(moving_on=True)  # reuses the first job's old inode
    assert synced == ([spool.dir("pending")] if durable else [])
    spool.spare.close()


def test_a_read_that_raced_a_rewrite_is_not_taken_for_the_job(spool, monkeypatch):
    job = spool.enqueue("echo old")
    path = job_path(spool, job)
    real_read = fsops.read_fd
    raced = []

    def read_then_rewritten(fd, limit):
        data = real_read(fd, limit)
        if not raced:  # the inode leaves the name between the read and its check
            raced.append(True)
            replacement = os.path.join(spool.dir("tmp"), "replacement")
            with open(replacement, "wb") as handle:
                handle.write(json.dumps({**json.loads(data), "command": "echo new"}).encode())
            os.rename(replacement, path)
        return data

    monkeypatch.setattr(spool_module.fsops, "read_fd", read_then_rewritten)
    assert spool.read("pending", job["id"] + ".json") is None
    assert spool.get(job["id"])["command"] == "echo new"


def test_doctor_does_not_judge_bytes_read_after_their_inode_was_reused(spool, spool_path, monkeypatch):
    done, other = (put_job(spool_path, "completed", job_id) for job_id in ("done", "other"))
    assert check(spool) == []
    path = job_path(spool, done, "completed")
    real_read = fsops.read_fd

    def read_of_a_reused_inode(fd, limit):
        data = real_read(fd, limit)
        if os.fstat(fd).st_ino == os.stat(path).st_ino:
            # The worker swapped the file out and wrote another job into its old inode.
            replacement = os.path.join(spool.dir("tmp"), "replacement")
            with open(replacement, "wb") as handle:
                handle.write(data)
            os.rename(replacement, path)
            with open(job_path(spool, other, "completed"), "rb") as handle:
                return handle.read()
        return data

    monkeypatch.setattr(fsops, "read_fd", read_of_a_reused_inode)
    assert check(spool) == []


def test_where_names_cannot_be_exchanged_rewrites_create_a_file(worker_spool, monkeypatch):
    real = fsops._renameat2_flags
    monkeypatch.setattr(fsops, "_renameat2_flags",
                        lambda src, dst, flags: False if flags == fsops._RENAME_EXCHANGE else real(src, dst, flags))
    job = worker_spool.enqueue("true")
    rewrite(worker_spool, job, note="rewritten")
    assert worker_spool.get(job["id"])["note"] == "rewritten"
    assert not worker_spool.spare.usable
    assert os.listdir(worker_spool.dir("tmp")) == []


def test_recovery_removes_the_spares_of_a_worker_that_died(spool):
    pid = os.fork()
    if pid == 0:  # a worker that rewrites two jobs and is killed before it can tidy up
        try:
            spool.spare = Spare(spool.dir("tmp"))
            for job in (spool.enqueue("true"), spool.enqueue("true")):
                rewrite(spool, job, note="x")
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    dead_ones = set(os.listdir(spool.dir("tmp")))
    assert len(dead_ones) >= 2
    spool.spare = Spare(spool.dir("tmp"))  # a live worker's spares must stay
    rewrite(spool, spool.enqueue("true"), note="y")
    live_ones = set(os.listdir(spool.dir("tmp"))) - dead_ones
    an_hour_ago = time.time() - 3600
    for name in dead_ones | live_ones:
        os.utime(os.path.join(spool.dir("tmp"), name), (an_hour_ago, an_hour_ago))

    lifecycle.recover(spool)

    assert set(os.listdir(spool.dir("tmp"))) == live_ones
    spool.spare.close()


def test_closing_removes_the_spares(worker_spool):
    job = worker_spool.enqueue("true")
    rewrite(worker_spool, job, note="x")
    assert os.listdir(worker_spool.dir("tmp"))
    worker_spool.spare.close()
    assert os.listdir(worker_spool.dir("tmp")) == []
