"""Helpers for tests that run real `queuectl worker start` processes on a temporary spool.

The `workers` fixture starts worker processes and, at teardown, SIGKILLs
every process that belongs to the test's spool: the workers (their command
line names the spool), the children a supervisor forked, and every job
process (jobs carry QUEUECTL_SPOOL in their environment), even those a
killed worker left behind. It also fails the test when a worker printed a
traceback, so a crash never hides behind a passing assertion.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys

import pytest

from queuectl import Spool
from queuectl.core import registry
from queuectl.core.job import parse_time
from support import run_queuectl, wait_until

# Short enough to keep the suite fast, long enough for a loaded 2-core machine.
FAST_SETTINGS = {"kill_grace": "0.5", "recovery_interval": "1", "backoff_base": "1.5"}
EXIT_TIMEOUT = 30.0


def configure(spool_path: str, **settings) -> None:
    spool = Spool(spool_path)
    for key, value in settings.items():
        spool.set_config(key, str(value))


def enqueue(spool_path: str, job: dict | str, **options) -> str:
    return Spool(spool_path).enqueue(job, **options)["id"]


def append_id(path) -> str:
    """A command that appends the running job's id to `path` (O_APPEND: one short write is atomic)."""
    return f'echo "$QUEUECTL_JOB_ID" >> {shlex.quote(str(path))}'


def read_lines(path) -> list[str]:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().splitlines()
    except FileNotFoundError:
        return []


def wait_for_state(spool_path: str, job_id: str, *states: str, timeout: float = 30.0) -> dict:
    """The job, once its file is in one of `states`."""
    spool = Spool(spool_path)
    seen = []

    def arrived():
        seen.append(spool.find(job_id))
        return seen[-1] in states
    try:
        wait_until(arrived, timeout=timeout, message=f"job {job_id} to reach {'/'.join(states)}")
    except pytest.fail.Exception as exc:
        pytest.fail(f"{exc} (it is {seen[-1]})", pytrace=False)
    return spool.get(job_id)


def wait_for_running(spool_path: str, job_id: str, marker_path, timeout: float = 30.0) -> str:
    """Wait until the job runs and has written `marker_path`; returns the marker's text."""
    def written():
        try:
            with open(marker_path, encoding="utf-8") as handle:
                text = handle.read()
        except FileNotFoundError:
            return None
        return text if text.endswith("\n") else None
    text = wait_until(written, timeout=timeout, message=f"job {job_id} to start")
    assert Spool(spool_path).find(job_id) == "processing"
    return text


def process_alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            state = handle.read().rsplit(b")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != b"Z"


def seconds(timestamp: str) -> float:
    return parse_time(timestamp)


class WorkerProcess:
    """One `queuectl worker start` process and its captured output."""

    def __init__(self, popen: subprocess.Popen, stdout_path: str, stderr_path: str):
        self.popen = popen
        self.stdout_path = stdout_path
        self.stderr_path = stderr_path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def send(self, signum: int) -> None:
        self.popen.send_signal(signum)

    def wait(self, timeout: float = EXIT_TIMEOUT) -> int:
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"worker {self.pid} still running after {timeout}s; stderr: {self.stderr()}")

    def running(self) -> bool:
        return self.popen.poll() is None

    def stdout(self) -> str:
        with open(self.stdout_path, encoding="utf-8", errors="replace") as handle:
            return handle.read()

    def stderr(self) -> str:
        with open(self.stderr_path, encoding="utf-8", errors="replace") as handle:
            return handle.read()


class WorkerProcesses:
    def __init__(self, spool_path: str, output_dir):
        self.spool_path = spool_path
        self.spool = Spool(spool_path)
        self.output_dir = str(output_dir)
        self.started: list[WorkerProcess] = []
        configure(spool_path, **FAST_SETTINGS)

    def start(self, *args: str, env: dict | None = None) -> WorkerProcess:
        """`python -m queuectl --spool <spool> worker start ARGS...` in the background."""
        number = len(self.started)
        stdout_path = os.path.join(self.output_dir, f"worker{number}.out")
        stderr_path = os.path.join(self.output_dir, f"worker{number}.err")
        with open(stdout_path, "wb") as stdout, open(stderr_path, "wb") as stderr:
            popen = subprocess.Popen(
                [sys.executable, "-m", "queuectl", "--spool", self.spool_path, "worker", "start", *args],
                stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, start_new_session=True,
                env={**os.environ, **(env or {})})
        process = WorkerProcess(popen, stdout_path, stderr_path)
        self.started.append(process)
        return process

    def live_records(self) -> list[dict]:
        return registry.records(self.spool)

    def wait_ready(self, count: int = 1) -> list[dict]:
        """Wait until `count` workers hold their locks and watch the spool."""
        def ready() -> list[dict] | None:
            records = self.live_records()
            return records if len(records) >= count else None
        return wait_until(ready, message=f"{count} live worker(s)")

    def record_of(self, process: WorkerProcess) -> dict:
        return wait_until(lambda: next((r for r in self.live_records() if r.get("pid") == process.pid), None),
                          message=f"the record of worker {process.pid}")

    def kill_all(self) -> None:
        for pid in self._spool_processes():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for process in self.started:
            if process.running():
                process.popen.kill()
            process.popen.wait(timeout=EXIT_TIMEOUT)

    def tracebacks(self) -> list[str]:
        return [process.stderr() for process in self.started if "Traceback" in process.stderr()]

    def _spool_processes(self) -> list[int]:
        """Pids of this spool's workers (by command line) and jobs (by QUEUECTL_SPOOL)."""
        root = self.spool.root.encode()
        marker = b"QUEUECTL_SPOOL=" + root
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as handle:
                    arguments = handle.read().split(b"\0")
                with open(f"/proc/{entry}/environ", "rb") as handle:
                    environment = handle.read().split(b"\0")
            except OSError:
                continue
            if root in arguments or self.spool_path.encode() in arguments or marker in environment:
                found.append(int(entry))
        return found


def show(spool_path: str, job_id: str) -> dict:
    """`queuectl show ID --json` as a script runs it (plain `show` is for people)."""
    result = run_queuectl(spool_path, "show", job_id, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)
