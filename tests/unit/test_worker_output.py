"""What `worker start` prints on stderr (README "Worker output"): a banner, one line per job start
and end, `--quiet`, `--log-format json`; and printing never stops a worker."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from support import wait_until
from support.workers import enqueue, wait_for_state

from queuectl import Spool

STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


def drain(workers, *args: str):
    """Two jobs (one succeeds, one fails for good) drained by `worker start --burst ARGS`; returns (process, ids)."""
    ok = enqueue(workers.spool_path, "true", priority=1)
    bad = enqueue(workers.spool_path, "exit 3", max_retries=0)
    worker = workers.start("--burst", *args)
    assert worker.wait() == 0
    return worker, ok, bad


def test_text_lines_say_the_spool_mode_workers_pid_and_each_jobs_start_and_end(workers):
    worker, ok, bad = drain(workers)
    lines = worker.stderr().splitlines()
    name = Spool(workers.spool_path).get(ok)["worker"]
    root = Spool(workers.spool_path).root

    assert re.fullmatch(rf"{STAMP} queuectl worker start: spool {re.escape(root)}, mode local, 1 worker, "
                        rf"pid {worker.pid}", lines[0])
    assert len(lines) == 5
    assert re.fullmatch(rf"{STAMP} {name} job {ok} attempt 1: started", lines[1])
    assert re.fullmatch(rf"{STAMP} {name} job {ok} attempt 1: completed \(exit 0\) in \d+\.\d{{3}}s", lines[2])
    assert re.fullmatch(rf"{STAMP} {name} job {bad} attempt 1: started", lines[3])
    assert re.fullmatch(rf"{STAMP} {name} job {bad} attempt 1: dead \(exit 3\) in \d+\.\d{{3}}s", lines[4])
    assert worker.stdout() == ""


def test_json_lines_are_one_object_each(workers):
    worker, ok, bad = drain(workers, "--log-format", "json")
    events = [json.loads(line) for line in worker.stderr().splitlines()]
    name = Spool(workers.spool_path).get(ok)["worker"]

    assert [event.pop("time")[-1] for event in events] == ["Z"] * 5
    assert events[0] == {"event": "start", "spool": Spool(workers.spool_path).root, "mode": "local",
                         "workers": 1, "pid": worker.pid}
    assert events[1] == {"event": "job_start", "worker": name, "job": ok, "attempt": 1}
    assert events[2].pop("duration") >= 0 and events[4].pop("duration") >= 0
    assert events[2] == {"event": "job_end", "worker": name, "job": ok, "attempt": 1, "state": "completed",
                         "exit_code": 0, "signal": None, "error": None}
    assert events[3] == {"event": "job_start", "worker": name, "job": bad, "attempt": 1}
    assert events[4] == {"event": "job_end", "worker": name, "job": bad, "attempt": 1, "state": "dead",
                         "exit_code": 3, "signal": None, "error": "exit code 3"}


def test_a_supervisor_prints_one_banner_and_its_workers_print_their_jobs(workers):
    ids = [enqueue(workers.spool_path, "true") for _ in range(4)]
    supervisor = workers.start("-n", "2", "--burst")
    assert supervisor.wait() == 0
    lines = supervisor.stderr().splitlines()

    assert lines[0].endswith(f"mode local, 2 workers, pid {supervisor.pid}")
    assert sorted(re.search(r"job (\S+) attempt 1: completed", line)[1] for line in lines if "completed" in line) \
        == sorted(ids)
    assert sum(line.endswith(": started") for line in lines) == 4


def test_quiet_prints_nothing(workers):
    worker, _, _ = drain(workers, "--quiet")
    assert worker.stderr() == ""


def test_a_worker_whose_stderr_reader_went_away_goes_on(spool_path, workers):
    """Every line then fails with EPIPE: the worker loses the lines, not the jobs."""
    worker = subprocess.Popen([sys.executable, "-m", "queuectl", "--spool", spool_path, "worker", "start"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        workers.wait_ready(1)
        worker.stderr.close()
        ids = [enqueue(spool_path, "true") for _ in range(3)]
        for job_id in ids:
            wait_for_state(spool_path, job_id, "completed")
        assert worker.poll() is None
        worker.terminate()
        assert worker.wait(timeout=30) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    wait_until(lambda: workers.live_records() == [], message="the worker's record to go")
