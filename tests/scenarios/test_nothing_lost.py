"""Exactly once under contention, and at-least-once (only) under chaos.

Every job appends its own id to one file with a single O_APPEND write, so
the file is the record of every run: an id twice is a job run twice, an id
missing from a completed job is a run that never happened.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys

import pytest
from support import wait_until
from support.chaos import FAIL_EVERY, chaos_id, run_chaos
from support.workers import append_id, read_lines

from queuectl import Spool
from queuectl.doctor import check


def appending_jobs(count: int, ran_file, prefix: str) -> list[dict]:
    return [{"id": f"{prefix}-{number:05d}", "command": append_id(ran_file)} for number in range(count)]


def assert_each_ran_once(spool_path: str, ids: list[str], ran_file) -> None:
    runs = collections.Counter(read_lines(ran_file))
    assert {job_id for job_id, count in runs.items() if count > 1} == set()
    assert set(runs) == set(ids)
    spool = Spool(spool_path)
    assert spool.counts() == {"pending": 0, "processing": 0, "completed": len(ids), "failed": 0, "dead": 0}
    assert all(spool.get(job_id)["attempts"] == 1 for job_id in ids[:: max(1, len(ids) // 50)])


def test_eight_workers_race_for_a_thousand_jobs_and_each_runs_once(spool_path, workers, tmp_path):
    """All eight start on the same listing, so they race for the same first job, then for every next one."""
    ran = tmp_path / "ran.txt"
    jobs = appending_jobs(1000, ran, "race")
    Spool(spool_path).set_config("durable", "false")
    Spool(spool_path).enqueue_many(jobs)

    assert workers.start("--count", "8", "--burst").wait(timeout=120) == 0

    assert_each_ran_once(spool_path, [job["id"] for job in jobs], ran)


@pytest.mark.slow
def test_eight_workers_and_two_enqueuers_five_thousand_jobs_each_runs_once(spool_path, workers, tmp_path):
    """Jobs also arrive while the workers run: the claim races meet watchdog events and rescans."""
    ran = tmp_path / "ran.txt"
    jobs = appending_jobs(5000, ran, "load")
    spool = Spool(spool_path)
    spool.set_config("durable", "false")
    spool.enqueue_many(jobs[:2000])
    workers.start("--count", "8")
    enqueuers = []
    for number, chunk in enumerate((jobs[2000:3500], jobs[3500:])):
        batch = tmp_path / f"batch{number}.jsonl"
        batch.write_text("".join(json.dumps(job) + "\n" for job in chunk))
        enqueuers.append(subprocess.Popen(
            [sys.executable, "-m", "queuectl", "--spool", spool_path, "enqueue", "--file", str(batch)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    for enqueuer in enqueuers:
        assert enqueuer.wait(timeout=120) == 0, enqueuer.stderr.read()

    wait_until(lambda: spool.counts()["completed"] == len(jobs), timeout=240,
               message=f"all jobs completed ({spool.counts()})")

    assert_each_ran_once(spool_path, [job["id"] for job in jobs], ran)


@pytest.mark.slow
def test_chaos_sigkill_a_worker_every_200ms_loses_nothing(spool_path, workers, tmp_path):
    ran = tmp_path / "ran.txt"

    report = run_chaos(workers, jobs=2000, worker_count=4, kill_every=0.2, ran_file=str(ran), timeout=240)
    print("\nchaos:", report.summary())

    assert report.kills >= 20
    assert report.lost == []
    assert report.stuck == []
    assert os.listdir(os.path.join(spool_path, "processing")) == []
    for number in range(report.jobs):
        job_id = chaos_id(number)
        assert report.states[job_id] == ("dead" if number % FAIL_EVERY == 0 else "completed"), job_id
        if report.states[job_id] == "completed":
            assert report.runs[job_id] >= 1, f"{job_id} completed without running"
    # At-least-once, and only where a worker died: a job runs again once for each worker
    # that its history says died running it, and each of those is one this test killed.
    assert report.unexplained_repeats == []
    assert report.unknown_killers == []
    assert len({name for names in report.died.values() for name in names}) <= report.kills
    check(workers.spool, repair=True)  # the records of the workers killed at the end
    assert check(workers.spool) == []
