"""A job file's bytes belong to that job for life (README, "Writes").

What must hold: every rewrite puts a new, complete, already locked inode
under the job's name and never writes into an inode anybody could have
opened; so a reader that opened a job's file reads that job (an older
version at worst), however slowly it reads.
"""

from __future__ import annotations

import json
import os

import pytest
from support import wait_until

from queuectl import Spool
from queuectl.core import fsops
from queuectl.core import spool as spool_module


def job_path(spool: Spool, job: dict, state: str = "pending") -> str:
    return os.path.join(spool.dir(state), job["id"] + ".json")


@pytest.fixture(params=["exchange", "replace"])
def rewrites(request, monkeypatch):
    """Each rewrite test runs twice: names exchanged, then unlinked (fsops.replace, where the file
    system can), and os.replace (NFS, FUSE: renameat2's flags refused)."""
    if request.param == "replace":
        monkeypatch.setattr(fsops, "_renameat2", None)
    return request.param


def test_a_rewrite_exchanges_the_names_where_it_can(spool, monkeypatch):
    """ext4 writes out a file renamed over another at once; an exchange is not such a rename."""
    tried = []
    real = fsops._renameat2

    def recording(src, dst, flags):
        tried.append(flags)
        return real(src, dst, flags)
    monkeypatch.setattr(fsops, "_renameat2", recording)
    job = spool.enqueue("true")
    with spool.lock("pending", job["id"] + ".json") as held:
        held.job["note"] = "rewritten"
        held.save()
    assert tried == [fsops._RENAME_EXCHANGE]


def test_a_rewrite_is_a_new_complete_inode_that_stays_owned(spool, rewrites):
    job = spool.enqueue("true")
    path = job_path(spool, job)
    old_inode = os.stat(path).st_ino
    held = spool.lock("pending", job["id"] + ".json")
    held.job["note"] = "rewritten"
    held.save()

    assert os.stat(path).st_ino != old_inode
    assert os.fstat(held.fd).st_ino == os.stat(path).st_ino
    with open(path, "rb") as handle:
        assert json.loads(handle.read())["note"] == "rewritten"
    assert spool.lock("pending", job["id"] + ".json") is None  # nobody else can own it
    assert os.listdir(spool.dir("tmp")) == []  # nothing kept aside for reuse
    held.unlock()
    assert spool.lock("pending", job["id"] + ".json") is not None


def test_a_reader_of_the_old_inode_keeps_the_old_bytes_of_the_same_job(spool, rewrites):
    job = spool.enqueue("echo old")
    path = job_path(spool, job)
    with open(path, "rb") as reader:
        with spool.lock("pending", job["id"] + ".json") as held:
            held.job["command"] = "echo new"
            held.save()
        for _ in range(3):  # later rewrites of other jobs must not touch the old inode either
            other = spool.enqueue("true")
            with spool.lock("pending", other["id"] + ".json") as held:
                held.job["note"] = "x" * 4000
                held.save()
        assert json.loads(reader.read()) == {**job, "state": "pending"}


def test_a_read_that_raced_a_rewrite_returns_the_older_version(spool, monkeypatch):
    job = spool.enqueue("echo old")
    path = job_path(spool, job)
    real_read = fsops.read_fd
    raced = []

    def read_then_rewritten(fd, limit):
        data = real_read(fd, limit)
        if not raced:  # the inode leaves the name between the read and anything after it
            raced.append(True)
            replacement = os.path.join(spool.dir("tmp"), "replacement")
            with open(replacement, "wb") as handle:
                handle.write(json.dumps({**json.loads(data), "command": "echo new"}).encode())
            os.rename(replacement, path)
        return data

    monkeypatch.setattr(spool_module.fsops, "read_fd", read_then_rewritten)
    assert spool.read("pending", job["id"] + ".json")["command"] == "echo old"
    assert spool.get(job["id"])["command"] == "echo new"


def test_slow_readers_of_job_files_read_their_own_job_while_workers_run_others(spool_path, workers):
    """`less`, a backup tool or a slow script opens job files and reads them much later.

    Every file opened in pending/ is claimed (moved, then rewritten) and
    settled (rewritten, then moved) by real workers while the reader waits;
    each one must still hold the job it was opened as, with its secret and
    nobody else's.
    """
    spool = Spool(spool_path)
    jobs = [spool.enqueue({"command": "true", "id": f"job-{number:03d}", "env": {"SECRET": f"secret-{number:03d}"}})
            for number in range(120)]
    opened = {job["id"]: open(job_path(spool, job), "rb") for job in jobs}
    try:
        workers.start("--count", "2", "--burst")
        wait_until(lambda: len(spool.names("completed")) == len(jobs), timeout=120,
                   message="every job to complete")
        for job_id, reader in opened.items():
            seen = json.loads(reader.read())
            assert seen["id"] == job_id
            assert seen["env"] == {"SECRET": f"secret-{job_id[4:]}"}
    finally:
        for reader in opened.values():
            reader.close()
