"""`queuectl demo`: the example jobs of the example spool, run end to end.

Each job found in the example spool (in any state) is enqueued afresh,
as its command and settings only, under a new id, so the demo can run
again and again on the same spool; then workers drain the queue in burst
mode.

The example spool ships inside the package (queuectl/examples/spool, the
wheel's package data), so the demo runs from an installed wheel as from a
clone; the repository's spool.example/ is a link to it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator

from .core.errors import QueueError
from .core.job import STATES, due_time
from .core.spool import job_name
from .supervisor import run_workers

KEPT_FIELDS = ("command", "priority", "max_retries", "timeout", "cwd", "env")


def example_folder() -> str:
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "examples", "spool")


def example_jobs(folder: str) -> list[dict]:
    jobs = []
    for state in STATES:
        directory = os.path.join(folder, state)
        if not os.path.isdir(directory):
            continue
        for name in sorted(os.listdir(directory)):
            if not job_name(name):
                continue
            with open(os.path.join(directory, name), encoding="utf-8") as handle:
                job = json.load(handle)
            if isinstance(job.get("command"), str):
                fields = {key: job[key] for key in KEPT_FIELDS if job.get(key) is not None}
                jobs.append({**fields, "example": job.get("id")})
    return jobs


def _next_retry(spool, job_ids: list[str]) -> float | None:
    """The earliest retry time of these jobs that are in failed/; None when none is."""
    times = [due_time(job) for job in map(spool.get, job_ids) if job["state"] == "failed"]
    return min(times, default=None)


def run_demo(spool, *, count: int, example: str | None) -> Iterator[str]:
    folder = example or example_folder()
    if not os.path.isdir(folder):
        raise QueueError(f"no example spool at {folder}; pass --example PATH")
    jobs = spool.enqueue_many(example_jobs(folder))
    yield f"enqueued {len(jobs)} example jobs from {folder} into {spool.root}"
    yield f"running {count} worker(s) until nothing is due..."
    run_workers(spool, count=count, burst=True)
    # A burst ends when nothing is due, while failed jobs still wait for
    # their retry time: run again then, until every demo job is finished.
    while (retry_at := _next_retry(spool, [job["id"] for job in jobs])) is not None:
        time.sleep(max(0.0, retry_at - time.time()))
        run_workers(spool, count=count, burst=True)
    yield "done; 'queuectl list' shows every job, 'queuectl logs ID' its output"
