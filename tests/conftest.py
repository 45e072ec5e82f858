"""Shared fixtures: a private temporary spool, the CLI in-process and as a real process."""

from __future__ import annotations

import os
import pathlib
import shutil
import tempfile

import pytest
from click.testing import CliRunner
from support import run_queuectl
from support.workers import WorkerProcesses

from queuectl import Spool
from queuectl.cli import main


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


@pytest.fixture
def qc(spool_path):
    def invoke(*args, **kwargs):
        return run_queuectl(spool_path, *args, **kwargs)
    return invoke


@pytest.fixture
def workers(spool_path, tmp_path):
    """Start real workers with `workers.start(...)`; none of them, nor their jobs, outlives the test."""
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
