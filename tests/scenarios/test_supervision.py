"""Workers an operator can trust (README "How worker stop reaches workers", "Recovery"):

- a dead worker's job is recovered on schedule even while every live worker runs a long job;
- the children of `worker start --count N` never outlive their supervisor, however it dies;
- every signal a terminal or an init system sends (SIGTERM, SIGINT, SIGHUP, SIGQUIT, a hang-up)
  leaves no job in processing/ without a live owner.

Real processes on a real spool; every wait polls with a deadline.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import termios

import pytest
from support import wait_until
from support.workers import enqueue, process_alive, wait_for_running, wait_for_state

from queuectl import Spool


def marker_then(marker, command: str) -> str:
    return f"echo $$ > '{marker}'; {command}"


def nothing_in_processing(spool_path) -> bool:
    return Spool(spool_path).counts()["processing"] == 0


# -- recovery while busy -----------------------------------------------------------------------


@pytest.mark.parametrize("busy_with", ["a job", "a completion hook"])
def test_a_dead_workers_job_is_recovered_while_every_live_worker_is_busy(spool_path, workers, tmp_path, busy_with):
    """The survivor runs a job (or a finished job's completion hook) far longer than the wait
    below: only a sweep during that run can pass."""
    doomed_marker, busy_marker = tmp_path / "doomed", tmp_path / "busy"
    doomed_job = enqueue(spool_path, marker_then(doomed_marker, "exec sleep 600"), max_retries=1)
    doomed = workers.start()
    leftover = int(wait_for_running(spool_path, doomed_job, doomed_marker))
    doomed_name = Spool(spool_path).get(doomed_job)["worker"]
    survivor = workers.start()
    if busy_with == "a job":
        busy_job = enqueue(spool_path, marker_then(busy_marker, "exec sleep 600"))
        wait_for_running(spool_path, busy_job, busy_marker)  # the survivor's: the doomed worker is busy
    else:
        busy_job = enqueue(spool_path, {"command": "true", "on_success": marker_then(busy_marker, "exec sleep 600")})
        wait_until(lambda: busy_marker.exists() and busy_marker.read_text().strip(), message="the hook to run")

    doomed.send(signal.SIGKILL)
    assert doomed.wait() == -signal.SIGKILL

    job = wait_for_state(spool_path, doomed_job, "failed")
    assert job["last_error"] == f"worker {doomed_name} died during the run"
    wait_until(lambda: not process_alive(leftover), message="the dead worker's command to be ended")
    assert Spool(spool_path).find(busy_job) == ("processing" if busy_with == "a job" else "completed")
    assert survivor.running() and process_alive(int(busy_marker.read_text()))


# -- the supervisor's death ----------------------------------------------------------------------


@pytest.mark.parametrize("target", ["pid", "process group"])
def test_workers_finish_their_jobs_and_exit_when_the_supervisor_is_killed(spool_path, workers, tmp_path, target):
    markers = [tmp_path / "running-1", tmp_path / "running-2"]
    ids = [enqueue(spool_path, marker_then(marker, "sleep 1; echo finished")) for marker in markers]
    supervisor = workers.start("-n", "2")
    children = [record["pid"] for record in workers.wait_ready(2)]
    for job_id, marker in zip(ids, markers, strict=True):
        wait_for_running(spool_path, job_id, marker)

    if target == "pid":
        os.kill(supervisor.pid, signal.SIGKILL)
    else:
        os.killpg(supervisor.pid, signal.SIGKILL)  # the children have process groups of their own
    assert supervisor.wait() == -signal.SIGKILL

    wait_until(lambda: not any(process_alive(pid) for pid in children), message="the orphaned workers to exit")
    assert [Spool(spool_path).find(job_id) for job_id in ids] == ["completed", "completed"]
    assert workers.live_records() == []


# -- signals -------------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [1, 2])
@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGINT], ids=["SIGHUP", "SIGINT"])
def test_a_graceful_signal_lets_the_running_job_finish(spool_path, workers, tmp_path, signum, count):
    marker = tmp_path / "running"
    job_id = enqueue(spool_path, marker_then(marker, "sleep 1; echo finished"))
    worker = workers.start("-n", str(count))
    wait_for_running(spool_path, job_id, marker)

    worker.send(signum)

    assert worker.wait() == 0
    job = Spool(spool_path).get(job_id)
    assert (job["state"], job["attempts"], job["last_exit_code"]) == ("completed", 1, 0)
    assert workers.live_records() == []


@pytest.mark.parametrize("count", [1, 2])
def test_sigquit_stops_the_running_job_without_using_a_retry(spool_path, workers, tmp_path, count):
    marker = tmp_path / "running"
    job_id = enqueue(spool_path, marker_then(marker, "exec sleep 600"), max_retries=0)
    worker = workers.start("-n", str(count))
    pid = int(wait_for_running(spool_path, job_id, marker))

    worker.send(signal.SIGQUIT)

    assert worker.wait() == 0
    job = Spool(spool_path).get(job_id)
    assert (job["state"], job["attempts"]) == ("pending", 0)
    assert job["last_error"] == "stopped by worker shutdown; retried later"
    assert not process_alive(pid)
    assert workers.live_records() == []


def test_closing_the_terminal_lets_the_running_job_finish(spool_path, workers, tmp_path):
    """`worker start -n 2` in a terminal that goes away: the kernel sends SIGHUP to the foreground
    process group (the supervisor), and every later line the workers print meets a dead terminal."""
    marker = tmp_path / "running"
    job_id = enqueue(spool_path, marker_then(marker, "sleep 1; echo finished"))
    master, slave = os.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "queuectl", "--spool", spool_path, "worker", "start", "-n", "2"],
        stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
        preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))  # the terminal becomes its controlling one
    os.close(slave)
    try:
        children = [record["pid"] for record in workers.wait_ready(2)]
        wait_for_running(spool_path, job_id, marker)

        os.close(master)  # the hang-up

        assert process.wait(timeout=30) == 0
        wait_until(lambda: not any(process_alive(pid) for pid in children), message="the workers to exit")
        job = Spool(spool_path).get(job_id)
        assert (job["state"], job["last_exit_code"]) == ("completed", 0)
        assert nothing_in_processing(spool_path)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.parametrize("count", [1, 2])
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_storm_of_stop_signals_still_ends_in_a_clean_exit(spool_path, workers, tmp_path, signum, count):
    """An impatient operator or init system repeats the signal until the process is gone: every one that
    lands while the workers clean up and the process exits must be taken as a stop, not kill it."""
    marker = tmp_path / "running"
    job_id = enqueue(spool_path, marker_then(marker, "sleep 0.3"))
    worker = workers.start("-n", str(count), "--quiet")
    wait_for_running(spool_path, job_id, marker)

    wait_until(lambda: worker.send(signum) or not worker.running(), interval=0.002,
               message="the workers to exit under the signals")

    assert worker.wait() == 0, worker.stderr()
    assert Spool(spool_path).find(job_id) in ("completed", "pending")  # finished, or stopped by a later signal
    assert nothing_in_processing(spool_path)
