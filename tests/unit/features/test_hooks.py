"""Completion hooks (README "Completion hooks"): environment, output, time limit, config defaults,
and at most once per outcome, even when the worker is SIGKILLed between the outcome and the hook."""

from __future__ import annotations

import json
import os
import shlex
import signal

from support import read_job, wait_until
from support.workers import configure, enqueue, read_lines, wait_for_state

from queuectl import Spool
from queuectl.core.config import defaults
from queuectl.core.job import build, dumps


def _env_dump(path) -> str:
    names = "QUEUECTL_JOB_ID QUEUECTL_STATE QUEUECTL_EXIT_CODE QUEUECTL_ATTEMPT QUEUECTL_LOG QUEUECTL_HOOK MINE"
    return " ".join(f'echo "{n}=${n}" >> {shlex.quote(str(path))};' for n in names.split()) + " echo hook-says-hi"


def _read_env(path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in read_lines(path))


def test_on_success_gets_the_outcome_in_its_environment_and_writes_to_the_log(spool_path, workers, tmp_path):
    seen = tmp_path / "env.txt"
    workers.start()
    job_id = enqueue(spool_path, {"command": "echo job-output", "env": {"MINE": "1"},
                                  "on_success": _env_dump(seen)})
    wait_until(lambda: read_job(spool_path, "completed", job_id).get("hook", {}).get("status") == "succeeded"
               if os.path.exists(os.path.join(spool_path, "completed", job_id + ".json")) else False,
               message="the hook to finish")
    env = _read_env(seen)
    assert env == {"QUEUECTL_JOB_ID": job_id, "QUEUECTL_STATE": "completed", "QUEUECTL_EXIT_CODE": "0",
                   "QUEUECTL_ATTEMPT": "1", "QUEUECTL_LOG": Spool(spool_path).log_path(job_id),
                   "QUEUECTL_HOOK": "on_success", "MINE": "1"}
    log = Spool(spool_path).read_log(job_id).decode()
    assert log.index("job-output") < log.index("=== on_success hook for attempt 1 started") < log.index("hook-says-hi")
    job = read_job(spool_path, "completed", job_id)
    assert job["hook"]["exit_code"] == 0 and job["hook"]["finished_at"] and "last_hook_error" not in job


def test_config_defaults_for_failure_and_dead_and_a_failing_hook_changes_nothing(spool_path, workers, tmp_path):
    failures, deaths = tmp_path / "failures.txt", tmp_path / "deaths.txt"
    configure(spool_path, on_failure=f'echo "$QUEUECTL_ATTEMPT $QUEUECTL_EXIT_CODE" >> {failures}; exit 9',
              on_dead=f'echo "$QUEUECTL_STATE $QUEUECTL_EXIT_CODE" >> {deaths}', backoff_base=1)
    workers.start()
    job_id = enqueue(spool_path, {"command": "exit 3", "max_retries": 1})
    wait_until(lambda: read_lines(deaths), message="the on_dead hook")
    assert read_lines(failures) == ["1 3"]
    assert read_lines(deaths) == ["dead 3"]
    job = wait_for_state(spool_path, job_id, "dead")
    assert job["attempts"] == 2 and job["last_exit_code"] == 3 and job["last_error"] == "exit code 3"
    assert job["last_hook_error"] == "on_failure hook: exit code 9"  # kept from the failed run's hook
    # a job's own empty field turns the default off
    quiet = enqueue(spool_path, {"command": "exit 1", "max_retries": 0, "on_dead": ""})
    wait_for_state(spool_path, quiet, "dead")

    assert "hook" not in read_job(spool_path, "dead", quiet)


def test_a_hook_over_its_time_limit_is_killed_and_the_job_stays_completed(spool_path, workers, tmp_path):
    configure(spool_path, hook_timeout=1)
    workers.start()
    job_id = enqueue(spool_path, {"command": "true", "on_success": "sleep 60"})
    job = wait_until(lambda: (lambda j: j if j.get("hook", {}).get("finished_at") else None)(
        read_job(spool_path, "completed", job_id))
        if os.path.exists(os.path.join(spool_path, "completed", job_id + ".json")) else None,
        message="the hook to be killed")
    assert job["hook"]["status"] == "failed" and job["hook"]["error"] == "timed out after 1s"
    assert job["last_hook_error"] == "on_success hook: timed out after 1s"
    assert job["last_exit_code"] == 0 and job["state"] == "completed"


def test_a_worker_killed_during_the_hook_does_not_run_it_again(spool_path, workers, tmp_path):
    started = tmp_path / "hook-started.txt"
    worker = workers.start()
    job_id = enqueue(spool_path, {"command": "true",
                                  "on_success": f'echo "$QUEUECTL_JOB_ID" >> {started}; sleep 60'})
    wait_until(lambda: read_lines(started), message="the hook to start")
    worker.send(signal.SIGKILL)
    worker.wait()
    _kill_hook(spool_path, job_id)
    # another worker runs its recovery sweeps and more jobs; the hook is not run again
    workers.start()
    later = enqueue(spool_path, {"command": "true", "on_success": "true"})
    wait_until(lambda: read_job(spool_path, "completed", later).get("hook", {}).get("finished_at")
               if os.path.exists(os.path.join(spool_path, "completed", later + ".json")) else None,
               message="a later job and its hook")
    wait_until(lambda: not os.listdir(os.path.join(spool_path, "processing")), message="recovery")
    assert read_lines(started) == [job_id]
    job = read_job(spool_path, "completed", job_id)
    assert job["hook"]["status"] == "started" and job["hook"]["finished_at"] is None
    assert job["last_exit_code"] == 0


def test_a_worker_killed_between_recording_the_outcome_and_moving_on_runs_no_hook(spool_path, workers, tmp_path):
    """The settle wrote the outcome (with the hook marked started) into processing/ and died before the move."""
    ran = tmp_path / "ran.txt"
    job = build({"id": "cut", "command": "true", "attempts": 1, "worker": "gone-worker", "last_exit_code": 0,
                 "on_success": f"echo again >> {ran}",
                 "hook": {"event": "on_success", "command": f"echo again >> {ran}", "attempt": 1,
                          "state": "completed", "status": "started", "started_at": "2026-12-01T10:00:00.000Z",
                          "finished_at": None, "exit_code": None, "error": None}}, defaults(), state="completed")
    with open(os.path.join(spool_path, "processing", "cut.json"), "wb") as handle:
        handle.write(dumps(job))
    workers.start()
    job = wait_for_state(spool_path, "cut", "completed")
    wait_until(lambda: workers.live_records(), message="the worker")
    later = enqueue(spool_path, "true")
    wait_for_state(spool_path, later, "completed")
    assert not ran.exists()
    assert job["hook"]["status"] == "started"
    assert read_job(spool_path, "completed", "cut")["hook"] == job["hook"]  # and nothing ran it since


def _kill_hook(spool_path: str, job_id: str) -> None:
    """The orphaned hook shell carries the job's id and spool in its environment."""
    from queuectl.run.runner import kill_leftovers
    kill_leftovers(job_id, Spool(spool_path).root)


def test_hook_fields_are_validated(qc):
    bad = qc("enqueue", json.dumps({"command": "true", "on_success": 5}))
    assert bad.returncode == 1 and "on_success must be a command string" in bad.stderr
    config = qc("config", "set", "hook_timeout", "0")
    assert config.returncode == 1 and "hook_timeout" in config.stderr


def test_worker_stop_now_from_another_process_ends_a_running_hook(spool_path, workers, tmp_path, qc):
    """The request reaches the worker as a change in workers/, read by the duties a hook's run does;
    before, only a signal to the worker itself ended a hook early."""
    from support.workers import process_alive
    marker = tmp_path / "hook-pid"
    worker = workers.start()
    job_id = enqueue(spool_path, {"command": "true", "on_success": f"echo $$ > {marker}; exec sleep 600"})
    wait_until(lambda: marker.exists() and marker.read_text().strip(), message="the hook to start")
    hook_pid = int(marker.read_text())
    stopped = qc("worker", "stop", "--now")
    assert stopped.returncode == 0, stopped.stderr
    assert worker.wait() == 0
    assert not process_alive(hook_pid)
    hook = read_job(spool_path, "completed", job_id)["hook"]
    assert hook["status"] == "failed" and hook["finished_at"] is not None
