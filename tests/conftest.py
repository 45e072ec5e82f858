"""Shared fixtures: a private temporary spool, the CLI in-process and as a real process."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

import pytest
from click.testing import CliRunner

from queuectl import Spool
from queuectl.cli import main
from queuectl.config import defaults
from queuectl.job import build, dumps


@pytest.fixture
def spool_path(tmp_path):
    return str(tmp_path / "spool")


@pytest.fixture
def spool(spool_path):
    return Spool(spool_path)


@pytest.fixture
def cli(spool_path):
    """Run `queuectl --spool <tmp> ARGS...` in-process; returns click's Result."""
    runner = CliRunner()

    def invoke(*args, input=None):
        return runner.invoke(main, ["--spool", spool_path, *args], input=input, catch_exceptions=False)
    return invoke


def run_queuectl(spool_path, *args, input=None, timeout=60, env=None):
    """`python -m queuectl --spool <spool> ARGS...` as a real process."""
    return subprocess.run([sys.executable, "-m", "queuectl", "--spool", spool_path, *args],
                          input=input, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


@pytest.fixture
def qc(spool_path):
    def invoke(*args, **kwargs):
        return run_queuectl(spool_path, *args, **kwargs)
    return invoke


def wait_until(predicate, timeout=30.0, interval=0.02, message="condition"):
    """Poll `predicate` until it returns a truthy value; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {message}")
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
    with open(os.path.join(Spool(spool_path).dir(state), job_id + ".json"), "wb") as handle:
        handle.write(dumps(job))
    return job


@pytest.fixture
def workers(spool_path, tmp_path):
    """Start real workers with `workers.start(...)`; none of them, nor their jobs, outlives the test."""
    from workers_util import WorkerProcesses  # it imports this module's helpers

    processes = WorkerProcesses(spool_path, tmp_path)
    yield processes
    processes.kill_all()
    crashes = processes.tracebacks()
    if crashes:
        pytest.fail("a worker crashed:\n" + "\n".join(crashes), pytrace=False)


@pytest.fixture
def memory_folder(tmp_path):
    """A folder in RAM (tmpfs) where there is one: fsync is still called there, but costs nothing."""
    if not os.path.isdir("/dev/shm"):
        yield tmp_path
        return
    folder = tempfile.mkdtemp(prefix="queuectl-test-", dir="/dev/shm")
    yield pathlib.Path(folder)
    shutil.rmtree(folder, ignore_errors=True)
