"""What many tests share: the CLI as a real process, polling with a deadline, job files read and placed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from queuectl import Spool
from queuectl.core.config import defaults
from queuectl.core.job import build, dumps, parse_time


def run_queuectl(spool_path, *args, input=None, timeout=60, env=None):
    """`python -m queuectl --spool <spool> ARGS...` as a real process."""
    return subprocess.run([sys.executable, "-m", "queuectl", "--spool", spool_path, *args],
                          input=input, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def wait_until(predicate, timeout=30.0, interval=0.02, message="condition", explain=None):
    """Poll `predicate` until it returns a truthy value; fail the test at the deadline.

    `explain`: called at the deadline, its value is shown with the failure.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            seen = f"; seen: {explain()}" if explain is not None else ""
            pytest.fail(f"timed out after {timeout}s waiting for {message}{seen}")
        time.sleep(interval)


def read_job(spool_path, state, job_id):
    with open(os.path.join(spool_path, state, job_id + ".json"), encoding="utf-8") as handle:
        return json.load(handle)


def spool_files(spool_path):
    """Every file under the spool with its bytes: compare before and after to show nothing was lost or changed."""
    found = {}
    for folder, _, names in os.walk(spool_path):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as handle:
                found[os.path.relpath(path, spool_path)] = handle.read()
    return found


def put_job(spool_path, state, job_id, **fields):
    """A complete job file written straight into a state folder, as a worker would leave it there."""
    job = build({"command": "echo hi", "id": job_id, **fields}, defaults(), state=state)
    spool = Spool(spool_path)
    path = os.path.join(spool.dir(state), job_id + ".json")
    with open(path, "wb") as handle:
        handle.write(dumps(job))
    spool.take_id(job_id, path)  # with its id's marker, unless another file holds the id already
    return job


def schedule_jobs(spool: Spool, name: str) -> dict[str, dict]:
    """Every job of a schedule, by id, whatever folder it is in."""
    found = {}
    for state in ("pending", "processing", "completed", "failed", "dead"):
        for file_name in spool.names(state):
            if file_name.startswith(name + "-"):
                job = spool.read(state, file_name)
                if job is not None:
                    found[job["id"]] = job
    return found


def slot_times(jobs: dict[str, dict]) -> list[int]:
    return sorted(int(parse_time(job["slot"])) for job in jobs.values())


def most_in_a_window(starts: list[float], window: float) -> int:
    """The most starts any half-open window [t, t + window) holds (ms precision, as started_at)."""
    most = 0
    for first, start in enumerate(starts):
        inside = sum(1 for later in starts[first:] if round((later - start) * 1000) < round(window * 1000))
        most = max(most, inside)
    return most
