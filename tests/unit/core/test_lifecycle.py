"""Transitions an operator asks for (lifecycle.cancel, retry, dlq_retry, purge)."""

from __future__ import annotations

import json
import os

import pytest
from support import put_job, read_job

from queuectl import InvalidJob, JobNotFound, WrongState
from queuectl.core import lifecycle
from queuectl.core.job import iso


def folder(spool, state):
    return sorted(os.listdir(spool.dir(state)))


# -- changing jobs ------------------------------------------------------------

@pytest.mark.parametrize("state", ["pending", "failed"])
def test_cancel_moves_to_dead_keeping_unknown_fields(spool, state):
    put_job(spool.root, state, "victim", owner="ops", next_run_at=iso(2_000_000_000))
    assert lifecycle.cancel(spool, "victim") == state
    job = read_job(spool.root, "dead", "victim")
    assert (job["state"], job["last_error"], job["next_run_at"], job["owner"]) == ("dead", "cancelled", None, "ops")
    assert spool.find("victim") == "dead" and folder(spool, state) == [] and folder(spool, "tmp") == []


def test_cancel_refuses_finished_or_unknown_jobs(spool):
    put_job(spool.root, "completed", "done")
    with pytest.raises(WrongState, match="cannot cancel job 'done': it is completed"):
        lifecycle.cancel(spool, "done")
    with pytest.raises(JobNotFound):
        lifecycle.cancel(spool, "ghost")
    assert spool.find("done") == "completed"


def test_retry_runs_a_failed_job_now(spool):
    put_job(spool.root, "failed", "flaky", attempts=1, next_run_at=iso(2_000_000_000), last_error="exit code 1")
    job = lifecycle.retry(spool, "flaky")
    assert (job["state"], job["next_run_at"], job["attempts"]) == ("pending", None, 1)
    assert read_job(spool.root, "pending", "flaky") == job
    with pytest.raises(WrongState, match="only failed jobs"):
        lifecycle.retry(spool, "flaky")


def test_dlq_retry_resets_attempts_and_run_fields_and_keeps_the_jobs_own_fields(spool):
    put_job(spool.root, "dead", "gone", attempts=4, max_retries=3, last_error="exit code 2", last_exit_code=2,
            started_at=iso(1_900_000_000), finished_at=iso(1_900_000_001), last_duration=1.0, worker="w1",
            priority=7, owner="ops", history=[{"attempt": 4, "exit_code": 2}])
    spool.set_config("max_retries", "1")
    job = lifecycle.dlq_retry(spool, "gone")
    assert (job["state"], job["attempts"], job["max_retries"]) == ("pending", 0, 3)
    assert all(job[field] is None for field in lifecycle.RUN_FIELDS)
    assert (job["priority"], job["owner"], job["history"]) == (7, "ops", [{"attempt": 4, "exit_code": 2}])
    assert read_job(spool.root, "pending", "gone") == job
    with pytest.raises(WrongState, match="it is pending"):
        lifecycle.dlq_retry(spool, "gone")


def test_dlq_retry_keeps_a_job_that_asked_for_no_retries_at_no_retries(spool):
    """A job enqueued with max_retries 0 came back with the config's 3 and ran four more times."""
    job_id = spool.enqueue("false", max_retries=0)["id"]
    with spool.lock("pending", job_id + ".json") as held:
        held.move("dead")
        held.job.update(state="dead", attempts=1)
        held.save()
    assert lifecycle.dlq_retry(spool, job_id)["max_retries"] == 0


def test_dlq_retry_refuses_an_invalid_drop_in(spool):
    record = {"id": "junk", "command": None, "state": "dead", "invalid": True,
              "last_error": "invalid job: command must be a non-empty string"}
    with open(spool.path("dead", "junk"), "w", encoding="utf-8") as handle:
        json.dump(record, handle)
    with pytest.raises(InvalidJob, match="never a valid job"):
        lifecycle.dlq_retry(spool, "junk")
    assert spool.find("junk") == "dead"


def test_purge_deletes_finished_jobs_and_their_logs(spool):
    for state, job_id in (("completed", "c1"), ("completed", "c2"), ("dead", "d1"), ("pending", "p1")):
        put_job(spool.root, state, job_id)
        with open(spool.log_path(job_id), "w", encoding="utf-8") as handle:
            handle.write("output\n")
    with open(os.path.join(spool.dir("dead"), "d1.invalid"), "w", encoding="utf-8") as handle:
        handle.write("{broken")
    old = 1_000_000_000
    os.utime(spool.path("completed", "c1"), (old, old))
    assert lifecycle.purge(spool, ["completed"], older_than=3600) == 1
    assert folder(spool, "completed") == ["c2.json"] and "c1.log" not in folder(spool, "logs")
    assert lifecycle.purge(spool, ["completed", "dead"]) == 2
    assert folder(spool, "dead") == [] and folder(spool, "logs") == ["p1.log"]
    with pytest.raises(WrongState, match="not pending"):
        lifecycle.purge(spool, ["pending"])
    assert spool.find("p1") == "pending"
