"""queuectl.Spool, the public Python API (docs/api.md): real spools, and a real worker for wait and cancel."""

from __future__ import annotations

import os
import time

import pytest
from support import put_job, wait_until

import queuectl
from queuectl import AmbiguousId, InvalidJob, JobNotFound, Spool, WaitTimeout, WrongState
from queuectl.core import spool as layout


def test_the_package_exports_the_api_spool(spool_path):
    spool = Spool(spool_path)
    assert isinstance(spool, queuectl.api.Spool) and isinstance(spool, layout.Spool)
    job = spool.enqueue("echo hi")
    assert spool.get(job["id"])["state"] == "pending"


def test_resolve_takes_a_unique_prefix_or_the_part_after_the_last_dash(spool):
    for job_id in ("build-a1", "build-b2", "deploy-c3"):
        spool.enqueue({"id": job_id, "command": "true"})
    assert spool.resolve("dep") == "deploy-c3"
    assert spool.resolve("c3") == "deploy-c3"
    assert spool.resolve("build-b") == "build-b2"
    assert spool.get("deploy")["id"] == "deploy-c3"
    with pytest.raises(AmbiguousId) as error:
        spool.resolve("build")
    assert error.value.candidates == ["build-a1", "build-b2"]
    assert "build-a1, build-b2" in str(error.value)
    with pytest.raises(JobNotFound):
        spool.resolve("nothing")
    with pytest.raises(InvalidJob):
        spool.resolve("../x")


def test_an_exact_id_wins_over_longer_ids_it_starts(spool):
    spool.enqueue({"id": "job", "command": "true"})
    spool.enqueue({"id": "job2", "command": "true"})
    assert spool.resolve("job") == "job"


def test_an_ambiguous_prefix_lists_at_most_ten_candidates(spool):
    spool.enqueue_many({"id": f"many-{number:02d}", "command": "true"} for number in range(12))
    with pytest.raises(AmbiguousId) as error:
        spool.resolve("many")
    assert len(error.value.candidates) == 10 and error.value.total == 12
    assert "2 more" in str(error.value)


def test_generated_ids_resolve_from_their_first_characters(spool):
    first = spool.enqueue("true")["id"]
    assert spool.resolve(first[:-2]) in (first,)  # only one job: any prefix is unique


def test_list_filters_by_state_and_group_and_sorts(spool_path, spool):
    spool.enqueue({"id": "a", "command": "true", "priority": 1, "group": "g"})
    spool.enqueue({"id": "b", "command": "true", "priority": 5})
    spool.enqueue({"id": "c", "command": "true", "group": "g"})
    put_job(spool_path, "dead", "d", command="true")
    jobs, total = spool.list()
    assert [job["id"] for job in jobs] == ["d", "c", "b", "a"] and total == 4
    jobs, total = spool.list("pending", limit=2)
    assert [job["id"] for job in jobs] == ["c", "b"] and total == 3
    jobs, total = spool.list(group="g", sort="oldest")
    assert [job["id"] for job in jobs] == ["a", "c"] and total == 2
    jobs, _ = spool.list(["pending"], sort="priority")
    assert [job["id"] for job in jobs] == ["b", "a", "c"]
    assert spool.counts()["pending"] == 3


def test_cancel_retry_dlq_and_purge(spool_path, spool):
    spool.enqueue({"id": "will-cancel", "command": "true"})
    assert spool.cancel("will-c") == "pending"
    assert spool.get("will-cancel")["state"] == "dead"
    with pytest.raises(WrongState):
        spool.cancel("will-cancel")
    assert spool.dlq_retry("will-cancel")["state"] == "pending"
    put_job(spool_path, "failed", "flaky", command="false", attempts=1, next_run_at="2999-01-01T00:00:00Z")
    assert spool.retry("flaky")["next_run_at"] is None
    spool.cancel("flaky")
    spool.cancel("will-cancel")
    assert spool.dlq_retry_all() == ["flaky", "will-cancel"]
    put_job(spool_path, "completed", "done", command="true")
    assert spool.purge("completed") == 1
    assert spool.find("done") is None


def test_pause_resume_and_group_limits(spool):
    assert spool.pause() and not spool.pause()
    assert os.path.exists(os.path.join(spool.root, "paused"))
    assert spool.resume() and not spool.resume()
    assert spool.pause("web")
    spool.set_group_limit("web", 2)
    [group] = spool.groups()
    assert (group["name"], group["limit"], group["paused"]) == ("web", 2, True)
    assert spool.resume("web")


def test_schedules(spool):
    added = spool.add_schedule("nightly", {"cron": "0 3 * * *", "job": {"command": "echo backup"}})
    assert added["next_run"]
    assert [entry["name"] for entry in spool.list_schedules()] == ["nightly"]
    assert spool.pause_schedule("nightly")["paused"] is True
    assert spool.resume_schedule("nightly")["paused"] is False
    spool.remove_schedule("nightly")
    with pytest.raises(JobNotFound):
        spool.get_schedule("nightly")


def test_set_config(spool):
    assert spool.set_config("max-retries", "7") == ("max_retries", 7)
    assert spool.config["max_retries"] == 7


def test_wait_returns_final_states_from_a_real_worker(spool_path, workers):
    spool = Spool(spool_path)
    good = spool.enqueue("true")["id"]
    bad = spool.enqueue({"command": "exit 3", "max_retries": 0})["id"]
    workers.start()
    assert spool.wait([good, bad], timeout=30) == {good: "completed", bad: "dead"}
    assert spool.wait(timeout=5) == {}  # nothing unfinished


def test_wait_times_out_with_the_states_it_saw(spool):
    job_id = spool.enqueue("true")["id"]  # no worker: it stays pending
    started = time.monotonic()
    with pytest.raises(WaitTimeout) as error:
        spool.wait([job_id], timeout=0.3)
    assert error.value.states == {job_id: "pending"}
    assert isinstance(error.value, TimeoutError)
    assert time.monotonic() - started < 10


def test_wait_for_an_unknown_job_is_not_found(spool):
    with pytest.raises(JobNotFound):
        spool.wait(["nope"], timeout=1)


def test_cancel_stops_a_running_job(spool_path, tmp_path, workers):
    spool = Spool(spool_path)
    marker = tmp_path / "started"
    job_id = spool.enqueue(f"touch {marker}; sleep 60")["id"]
    workers.start()
    wait_until(marker.exists, message="the job to start")
    assert spool.cancel(job_id) == "processing"
    assert spool.wait([job_id], timeout=30) == {job_id: "dead"}
    assert spool.get(job_id)["last_error"].startswith("cancelled")


def test_workers_and_stop_workers(spool_path, workers):
    spool = Spool(spool_path)
    process = workers.start()
    workers.wait_ready()
    [record] = spool.workers()
    assert record["pid"] == process.pid
    assert spool.stop_workers(wait=True) == [record["name"]]
    assert process.wait() == 0
    assert spool.workers() == []


def test_edits_of_config_schedules_and_groups_take_their_named_lock(spool, monkeypatch):
    from queuectl import SpoolError
    from queuectl.core import locks
    monkeypatch.setattr(locks, "EDIT_TIMEOUT", 0.2)
    for what, edit in (("config.json", lambda: spool.set_config("max_retries", "4")),
                       ("schedules", lambda: spool.add_schedule("s", {"every": "1h", "job": {"command": "true"}})),
                       ("groups", lambda: spool.set_group_limit("g", 2))):
        with locks.named_lock(os.path.join(spool.root, what + ".lock")):  # another process's edit, under way
            with pytest.raises(SpoolError, match=f"{what} is being changed by another process"):
                edit()
        edit()  # free again
    assert spool.config["max_retries"] == 4 and spool.get_schedule("s") and spool.groups()[0]["limit"] == 2
