"""Retention (README "Retention"): keep_completed / keep_dead by age and count, bounded batches,
only finished jobs, jobs whose hook still runs are kept, and the per-job log cap."""

from __future__ import annotations

import fcntl
import json
import os
import time

import pytest
from support import put_job, wait_until
from support.workers import configure, enqueue, wait_for_state

from queuectl import Spool
from queuectl.core import lifecycle
from queuectl.core.errors import JobNotFound
from queuectl.core.lifecycle import purge
from queuectl.features import dependencies, retention, workflow


def _age(spool_path, state, job_id, seconds):
    path = os.path.join(spool_path, state, job_id + ".json")
    then = time.time() - seconds
    os.utime(path, (then, then))


def _fill(spool_path, state, count, prefix, start_age=10_000):
    """`count` jobs in `state`, the first the oldest; each with a log."""
    spool = Spool(spool_path)
    for number in range(count):
        job_id = f"{prefix}{number:03d}"
        put_job(spool_path, state, job_id)
        with open(spool.log_path(job_id), "w") as handle:
            handle.write("output\n")
        _age(spool_path, state, job_id, start_age - number)
    return [f"{prefix}{number:03d}" for number in range(count)]


def _prune_all(spool, rounds=50):
    pruner = retention.Pruner(spool)
    total = 0
    for _ in range(rounds):
        total += pruner.sweep()
    return total


@pytest.mark.parametrize("text, parsed", [
    ("", (None, None)), ("7d", (7 * 86400, None)), ("1000", (None, 1000)), ("7d,1000", (7 * 86400, 1000)),
    ("1000, 12h", (12 * 3600, 1000)), ("30m", (1800, None)), ("2w", (14 * 86400, None)),
])
def test_keep_format(text, parsed):
    assert retention.parse_keep(text) == parsed


@pytest.mark.parametrize("text", ["7x", "7d,8d", "1,2", "-5", "d", "1e3"])
def test_bad_keep_values_are_refused(qc, text):
    result = qc("config", "set", "keep_completed", text)
    assert result.returncode == 1 and "keep_completed" in result.stderr and "Traceback" not in result.stderr


def test_count_keeps_the_newest_and_never_touches_unfinished_jobs(spool_path):
    spool = Spool(spool_path)
    completed = _fill(spool_path, "completed", 10, "c")
    dead = _fill(spool_path, "dead", 6, "d")
    others = {state: _fill(spool_path, state, 3, state[:2]) for state in ("pending", "failed", "processing")}
    configure(spool_path, keep_completed="3", keep_dead="0")
    _prune_all(spool)
    assert sorted(spool.names("completed")) == [c + ".json" for c in completed[-3:]]
    assert spool.names("dead") == [] and not {d + ".log" for d in dead} & set(os.listdir(spool.dir("logs")))
    for state, ids in others.items():
        assert sorted(spool.names(state)) == [i + ".json" for i in ids]  # old, but not finished
    logs = set(os.listdir(spool.dir("logs")))
    assert {c + ".log" for c in completed[:-3]}.isdisjoint(logs) and {c + ".log" for c in completed[-3:]} <= logs
    assert {i + ".log" for ids in others.values() for i in ids} <= logs


def test_age_and_count_together(spool_path):
    spool = Spool(spool_path)
    ids = _fill(spool_path, "completed", 8, "c", start_age=7200 + 4)  # c000..c004 older than 2h
    configure(spool_path, keep_completed="2h,6")
    _prune_all(spool)
    assert sorted(spool.names("completed")) == [i + ".json" for i in ids[5:]]
    configure(spool_path, keep_completed="2h,2")
    _prune_all(spool)
    assert sorted(spool.names("completed")) == [i + ".json" for i in ids[6:]]


def test_each_sweep_is_a_bounded_batch(spool_path, monkeypatch):
    spool = Spool(spool_path)
    _fill(spool_path, "completed", 60, "c")
    configure(spool_path, keep_completed="10")
    monkeypatch.setattr(retention, "BATCH", 200)  # 60 stats + 14 deletions in the first sweep
    pruner = retention.Pruner(spool)
    done = []
    while len(spool.names("completed")) > 10:
        done.append(pruner.sweep())
        assert len(done) < 20
    assert max(done) <= 20 and sum(done) == 50 and len(done) >= 3 and done[0] == 14


def test_a_job_owned_by_a_worker_or_with_a_live_hook_is_kept(spool_path, workers, tmp_path):
    spool = Spool(spool_path)
    _fill(spool_path, "dead", 3, "d")
    # d000: its flock is held (a worker running its hook on this host)
    fd = os.open(os.path.join(spool_path, "dead", "d000.json"), os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    # d001: its hook is marked started by a live worker (another host, where the flock does not reach)
    worker = workers.start()
    name = workers.record_of(worker)["name"]
    put_job(spool_path, "dead", "d001", worker=name, hook={"status": "started", "event": "on_dead"})
    _age(spool_path, "dead", "d001", 10_000)
    configure(spool_path, keep_dead="0")
    try:
        wait_until(lambda: not os.path.exists(os.path.join(spool_path, "dead", "d002.json")), message="pruning")
        _prune_all(spool)
        assert sorted(spool.names("dead")) == ["d000.json", "d001.json"]
        assert purge(spool, ["dead"]) == 0
    finally:
        os.close(fd)
    assert purge(spool, ["dead"]) == 1  # d000 is free now; d001's worker still lives
    worker.send(9)
    worker.wait()
    assert purge(spool, ["dead"]) == 1


def test_a_worker_prunes_in_its_sweeps(spool_path, workers):
    spool = Spool(spool_path)
    _fill(spool_path, "completed", 30, "c")
    configure(spool_path, keep_completed="5")
    workers.start()
    job_id = enqueue(spool_path, "true")
    # The worker's first round may list the folder before the new job lands there: it is
    # counted in the next round (a minute later), so 5 old ones plus the new one may stay.
    wait_until(lambda: len(spool.names("completed")) <= 6 and spool.find(job_id) == "completed",
               message="the worker to prune")
    assert {f"c{n:03d}" for n in range(25, 30)} <= {name[:-5] for name in spool.names("completed")}


def test_a_log_over_max_log_bytes_keeps_its_head_and_tail(spool_path, workers):
    configure(spool_path, max_log_bytes="4k")
    workers.start()
    job_id = enqueue(spool_path, "echo FIRST-LINE; seq 1 20000; echo LAST-LINE")
    wait_for_state(spool_path, job_id, "completed")
    log = Spool(spool_path).read_log(job_id)
    assert len(log) <= 4096 + 100
    assert b"FIRST-LINE" in log[:2048] and log.rstrip().endswith(b"LAST-LINE")
    assert b"bytes cut (max_log_bytes 4096)" in log
    small = enqueue(spool_path, "echo small")
    wait_for_state(spool_path, small, "completed")
    assert b"cut" not in Spool(spool_path).read_log(small)


# -- dependencies are kept (README "Retention", "Workflows") ----------------------

def test_a_completed_dependency_of_a_waiting_job_survives_pruning_and_purge(spool_path, workers, tmp_path, qc):
    """dep-a is completed, dep-b still runs: the worker's keep_completed=0 and a purge must keep dep-a."""
    spool = Spool(spool_path)
    gate = tmp_path / "gate"
    put_job(spool_path, "completed", "dep-a")
    put_job(spool_path, "completed", "other")  # no dependents: pruned after dep-a was looked at
    _age(spool_path, "completed", "dep-a", 2000)
    _age(spool_path, "completed", "other", 1000)
    enqueue(spool_path, {"id": "dep-b", "command": f"while [ ! -e {gate} ]; do sleep 0.05; done"})
    enqueue(spool_path, {"id": "child", "command": "true", "after": ["dep-a", "dep-b"]})
    configure(spool_path, keep_completed="0")
    workers.start()
    wait_for_state(spool_path, "dep-b", "processing")
    wait_until(lambda: spool.find("other") is None, message="the worker to prune")
    assert spool.find("dep-a") == "completed" and spool.find("child") == "pending"
    result = qc("purge", "--completed")
    assert result.returncode == 0 and "purged 0 job(s)" in result.stdout
    assert "kept 1 completed job(s) that waiting jobs depend on: dep-a" in result.stderr
    assert spool.find("dep-a") == "completed"
    gate.touch()
    assert wait_for_state(spool_path, "child", "completed", "dead")["state"] == "completed"


def test_purge_deletes_a_dependency_once_its_dependents_left(spool_path, qc):
    spool = Spool(spool_path)
    put_job(spool_path, "completed", "dep-a")
    enqueue(spool_path, {"id": "child", "command": "true", "after": ["dep-a"]})
    assert purge(spool, ["completed"]) == 0 and spool.find("dep-a") == "completed"
    assert qc("cancel", "child").returncode == 0
    result = qc("purge", "--completed")
    assert result.returncode == 0 and "purged 1 job(s)" in result.stdout and not result.stderr
    assert spool.find("dep-a") is None
    assert not os.path.exists(os.path.join(spool_path, "waiting", "dep-a"))  # its stale marker went with it


def test_a_marker_of_an_enqueue_in_flight_keeps_the_dependency_until_its_grace_ends(spool_path):
    spool = Spool(spool_path)
    put_job(spool_path, "completed", "dep-a")
    workflow.mark_waiting(spool, "not-yet-published", ["dep-a"])
    assert purge(spool, ["completed"]) == 0
    marker = os.path.join(spool_path, "waiting", "dep-a", "not-yet-published")
    then = time.time() - workflow.MARK_GRACE - 1
    os.utime(marker, (then, then))
    assert purge(spool, ["completed"]) == 1 and not os.path.exists(marker)


def test_an_enqueue_naming_a_job_being_deleted_refuses(spool_path, monkeypatch):
    spool = Spool(spool_path)
    put_job(spool_path, "completed", "dep-a")
    os.makedirs(os.path.join(spool_path, "waiting"), exist_ok=True)
    open(os.path.join(spool_path, "waiting", ".prune-dep-a"), "w").close()
    monkeypatch.setattr(dependencies, "PRUNE_WAIT", 0.1)
    with pytest.raises(JobNotFound, match="being deleted"):
        spool.enqueue({"id": "child", "command": "true", "after": ["dep-a"]})
    # The marker it made stays (stale, within its grace): a deleter that read the
    # folder after it would keep dep-a, which is safe.
    assert os.path.exists(os.path.join(spool_path, "waiting", "dep-a", "child"))


def test_dlq_retry_and_adoption_mark_what_a_job_waits_for(spool_path):
    spool = Spool(spool_path)
    put_job(spool_path, "completed", "dep-a")
    put_job(spool_path, "dead", "retried", after=["dep-a"])
    lifecycle.dlq_retry(spool, "retried")
    with open(os.path.join(spool_path, "pending", "dropped.json"), "w") as handle:
        json.dump({"command": "true", "after": ["dep-a"]}, handle)
    assert lifecycle.adopt(spool, "dropped.json", complete=True) == "dropped.json"
    assert sorted(os.listdir(os.path.join(spool_path, "waiting", "dep-a"))) == ["dropped", "retried"]
    assert purge(spool, ["completed"]) == 0 and spool.find("dep-a") == "completed"
