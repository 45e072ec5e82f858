"""Workers end to end: real `queuectl worker start` processes on real temporary spools.

Every wait polls with a deadline; nothing sleeps a fixed time. Settings are
short (FAST_SETTINGS) so retries, kill grace and recovery take about a second.
"""

from __future__ import annotations

import collections
import json
import os
import re
import signal
import time

from support import read_job, run_queuectl, wait_until
from support.workers import (
    FAST_SETTINGS,
    append_id,
    configure,
    enqueue,
    process_alive,
    read_lines,
    seconds,
    wait_for_running,
    wait_for_state,
)

from queuectl import Spool, doctor
from queuectl.core.config import defaults
from queuectl.core.job import iso, parse_time
from queuectl.demo import example_folder, example_jobs


def marker_then(marker, command: str) -> str:
    """Write the job's pid to `marker` (so a test knows it runs and can find it), then run `command`."""
    return f"echo $$ > '{marker}'; {command}"


def start_running(spool_path, workers, tmp_path, command: str, **options):
    """Enqueue `command`, start one worker and wait until it runs the job; returns (worker, job id, job pid)."""
    marker = tmp_path / "running"
    job_id = enqueue(spool_path, marker_then(marker, command), **options)
    worker = workers.start()
    return worker, job_id, int(wait_for_running(spool_path, job_id, marker))


def assert_back_in_pending_with_no_attempt_used(spool_path, job_id: str, pid: int) -> None:
    job = Spool(spool_path).get(job_id)
    assert (job["state"], job["attempts"]) == ("pending", 0)
    assert job["last_error"] == "stopped by worker shutdown; retried later"
    assert not process_alive(pid)


# -- outcomes ------------------------------------------------------------------

def test_a_successful_job_runs_once_and_completes(spool_path, workers):
    job_id = enqueue(spool_path, "echo hello; echo oops >&2")

    assert workers.start("--burst").wait() == 0

    job = Spool(spool_path).get(job_id)
    assert job["state"] == "completed"
    assert job["attempts"] == 1
    assert job["last_exit_code"] == 0 and job["last_error"] is None
    assert [entry["exit_code"] for entry in job["history"]] == [0]
    assert job["history"][0]["stderr_tail"] == ["oops"]
    assert seconds(job["started_at"]) <= seconds(job["finished_at"])
    header, *output = Spool(spool_path).read_log(job_id).decode().splitlines()
    assert header.startswith("=== attempt 1 started ") and header.endswith(f" by {job['worker']} ===")
    assert output == ["hello", "oops"]
    assert os.listdir(os.path.join(spool_path, "processing")) == []


def test_a_failing_job_is_retried_with_backoff_then_dead(spool_path, workers):
    """max_retries counts retries: 1 + 2 runs, waiting backoff_base ** attempt seconds between them."""
    job_id = enqueue(spool_path, 'echo "run $QUEUECTL_ATTEMPT"; echo "failing $QUEUECTL_ATTEMPT" >&2; exit 3',
                     max_retries=2)
    workers.start()

    job = wait_for_state(spool_path, job_id, "dead")

    assert job["attempts"] == 3
    assert job["last_exit_code"] == 3 and job["last_error"] == "exit code 3"
    assert job["next_run_at"] is None
    history = job["history"]
    assert [entry["attempt"] for entry in history] == [1, 2, 3]
    assert [entry["stderr_tail"] for entry in history] == [["failing 1"], ["failing 2"], ["failing 3"]]
    for previous, following in zip(history, history[1:]):
        waited = seconds(following["started_at"]) - seconds(previous["finished_at"])
        expected = 1.5 ** previous["attempt"]
        # Times are stored to the millisecond; the upper bound only says the
        # worker woke on its timer, not on some slow rescan.
        assert expected - 0.002 <= waited <= expected + 1.5, (previous, following)
    log = Spool(spool_path).read_log(job_id).decode()
    headers = [line for line in log.splitlines() if line.startswith("=== attempt")]
    assert [header.split()[2] for header in headers] == ["1", "2", "3"]
    assert log.index("run 1") < log.index("=== attempt 2") < log.index("run 2") < log.index("=== attempt 3")

    listing = run_queuectl(spool_path, "dlq", "list")
    assert job_id in listing.stdout and "exit code 3" in listing.stdout


def test_every_kind_of_failure_is_a_failure(spool_path, workers, tmp_path):
    jobs = {
        "exit-code": ("exit 3", "exit code 3"),
        "not-found": ("no-such-command-queuectl-test", "exit code 127 (command not found)"),
        "signal": ("kill -KILL $$", "killed by signal SIGKILL"),
    }
    for job_id, (command, _) in jobs.items():
        enqueue(spool_path, {"id": job_id, "command": command, "max_retries": 0})
    enqueue(spool_path, {"id": "bad-cwd", "command": "true", "max_retries": 0, "cwd": str(tmp_path / "missing")})

    assert workers.start("--burst").wait() == 0

    spool = Spool(spool_path)
    for job_id, (_, error) in jobs.items():
        job = spool.get(job_id)
        assert (job["state"], job["attempts"], job["last_error"]) == ("dead", 1, error)
    assert spool.get("not-found")["last_exit_code"] == 127
    assert spool.get("signal")["history"][0]["signal"] == signal.SIGKILL
    bad_cwd = spool.get("bad-cwd")
    assert bad_cwd["state"] == "dead" and bad_cwd["last_error"].startswith("cannot start")


def test_a_timeout_kills_the_job_and_its_grandchildren(spool_path, workers, tmp_path):
    """The shell dies on SIGTERM; a grandchild that ignores it must still go (SIGKILL to the group)."""
    stubborn = tmp_path / "stubborn.pid"
    obeying = tmp_path / "obeying.pid"
    enqueue(spool_path, {"id": "stubborn", "timeout": 1, "max_retries": 0,
                         "command": f"(trap '' TERM; exec sleep 1000) & echo $! > '{stubborn}'; wait"})
    enqueue(spool_path, {"id": "everyone-ignores-term", "timeout": 1, "max_retries": 0,
                         "command": f"trap '' TERM; sleep 1000 & echo $! > '{obeying}'; wait; wait"})
    workers.start("-n", "2")

    for job_id, pid_file in (("stubborn", stubborn), ("everyone-ignores-term", obeying)):
        job = wait_for_state(spool_path, job_id, "dead")
        assert job["last_error"] == "timed out after 1s"
        assert job["attempts"] == 1
        pid = int(pid_file.read_text())
        wait_until(lambda: not process_alive(pid), timeout=5, message=f"grandchild {pid} of {job_id} to die")


# -- order and time --------------------------------------------------------------

def test_priority_first_then_fifo_then_id(spool_path, workers, tmp_path):
    order = tmp_path / "order.txt"
    priorities = {"low": -1, "top": 9, "high-a": 5, "high-b": 5}
    created = []
    for job_id in ["fifo-3rd", "low", "high-b", "fifo-1st", "top", "high-a", "fifo-2nd"]:
        # Ties in priority go by creation time (stored to the millisecond), so
        # each job is created in a later millisecond than the one before.
        wait_until(lambda: not created or iso(time.time()) > created[-1], message="the next millisecond")
        job = Spool(spool_path).enqueue({"id": job_id, "command": append_id(order),
                                         "priority": priorities.get(job_id, 0)})
        created.append(job["created_at"])

    assert workers.start("--burst").wait() == 0

    assert read_lines(order) == ["top", "high-b", "high-a", "fifo-3rd", "fifo-1st", "fifo-2nd", "low"]


def test_same_priority_and_time_goes_by_id(spool_path, workers, tmp_path):
    order = tmp_path / "order.txt"
    stamp = "2020-01-01T00:00:00.000Z"
    lines = "\n".join(json.dumps({"id": job_id, "command": append_id(order), "created_at": stamp})
                      for job_id in ("c", "a", "b"))
    assert run_queuectl(spool_path, "enqueue", "-", input=lines).returncode == 0

    assert workers.start("--burst").wait() == 0

    assert read_lines(order) == ["a", "b", "c"]


def test_scheduled_jobs_do_not_start_early(spool_path, workers, tmp_path):
    order = tmp_path / "order.txt"
    run_at = iso(time.time() + 1.5)
    at = run_queuectl(spool_path, "enqueue", "--id", "at", "--run-at", run_at, append_id(order))
    delayed = run_queuectl(spool_path, "enqueue", "--id", "delayed", "--delay", "1s", append_id(order))
    assert at.returncode == 0 and delayed.returncode == 0, at.stderr + delayed.stderr
    enqueue(spool_path, {"id": "now", "command": append_id(order)})
    workers.start()

    jobs = {job_id: wait_for_state(spool_path, job_id, "completed") for job_id in ("at", "delayed", "now")}

    assert jobs["at"]["run_at"] == run_at
    for job in jobs.values():
        assert job["attempts"] == 1
        if job["run_at"]:
            assert seconds(job["started_at"]) >= seconds(job["run_at"]), job
    assert seconds(jobs["delayed"]["run_at"]) >= seconds(jobs["delayed"]["created_at"]) + 0.99
    assert read_lines(order)[0] == "now"


def test_burst_exits_when_nothing_is_due(spool_path, workers):
    later = enqueue(spool_path, "true", delay=3600)

    assert workers.start("--burst").wait() == 0

    assert Spool(spool_path).get(later)["attempts"] == 0
    assert Spool(spool_path).find(later) == "pending"


# -- wake-ups: timers and changes, not the slow sweeps ------------------------------

def test_a_timer_wakes_an_idle_worker_for_a_scheduled_job(spool_path, workers):
    """With sweeps and rescans a minute apart, a job due in 1.5 s starts on time, not at the next sweep."""
    configure(spool_path, recovery_interval=60, scan_interval=60)
    workers.start()
    workers.wait_ready()
    run_at = iso(time.time() + 1.5)
    job_id = enqueue(spool_path, "true", run_at=run_at)

    job = wait_for_state(spool_path, job_id, "completed", timeout=20)

    assert job["run_at"] == run_at and job["attempts"] == 1
    assert seconds(job["run_at"]) <= seconds(job["started_at"]) <= seconds(job["run_at"]) + 10, job


def test_a_timer_wakes_an_idle_worker_for_a_retry(spool_path, workers, tmp_path):
    """A job that fails once is retried when its backoff (2 s) ends, not at the next sweep a minute later."""
    marker = tmp_path / "failed-once"
    configure(spool_path, recovery_interval=60, scan_interval=60, backoff_base=2)
    workers.start()
    workers.wait_ready()
    job_id = enqueue(spool_path, f"if [ -e '{marker}' ]; then echo ok; else touch '{marker}'; exit 1; fi",
                     max_retries=1)

    job = wait_for_state(spool_path, job_id, "completed", timeout=20)

    assert job["attempts"] == 2
    first, second = job["history"]
    assert (first["exit_code"], second["exit_code"]) == (1, 0)
    waited = seconds(second["started_at"]) - seconds(first["finished_at"])
    assert 2 - 0.002 <= waited <= 10, job["history"]


def test_a_file_written_into_pending_wakes_an_idle_worker(spool_path, workers):
    """A change wakes the worker at once: nothing else would before the safety scan five minutes later."""
    configure(spool_path, recovery_interval=300, scan_interval=300)
    workers.start()
    workers.wait_ready()

    with open(os.path.join(spool_path, "pending", "x.json"), "w", encoding="utf-8") as handle:
        handle.write('{"command": "true"}')

    job = wait_for_state(spool_path, "x", "completed", timeout=20)
    assert job["attempts"] == 1 and job["last_exit_code"] == 0


# -- many workers ----------------------------------------------------------------

def test_four_workers_run_800_jobs_exactly_once(spool_path, workers, tmp_path):
    ran = tmp_path / "ran.txt"
    jobs = Spool(spool_path).enqueue_many({"command": append_id(ran)} for _ in range(800))
    ids = [job["id"] for job in jobs]

    supervisor = workers.start("-n", "4", "--burst")

    assert supervisor.wait(timeout=120) == 0, supervisor.stderr()
    runs = collections.Counter(read_lines(ran))
    assert set(runs) == set(ids)
    assert [job_id for job_id, count in runs.items() if count != 1] == []
    spool = Spool(spool_path)
    assert spool.counts() == {"pending": 0, "processing": 0, "completed": 800, "failed": 0, "dead": 0}
    assert len({job["worker"] for job in spool.iter_jobs("completed")}) > 1


# -- crashes -----------------------------------------------------------------------

def crash_on_first_attempt(marker) -> str:
    """First attempt: record its pid and hang; later attempts succeed at once."""
    return (f'if [ "$QUEUECTL_ATTEMPT" = 1 ]; then echo $$ > \'{marker}\'; exec sleep 30; fi; '
            f'echo "attempt $QUEUECTL_ATTEMPT ok"')


def test_a_new_worker_recovers_the_job_of_a_killed_worker(spool_path, workers, tmp_path):
    marker = tmp_path / "first-attempt.pid"
    job_id = enqueue(spool_path, crash_on_first_attempt(marker), max_retries=1)
    first = workers.start()
    leftover = int(wait_for_running(spool_path, job_id, marker))
    killed_name = Spool(spool_path).get(job_id)["worker"]

    first.send(signal.SIGKILL)
    assert first.wait() == -signal.SIGKILL
    assert Spool(spool_path).find(job_id) == "processing"
    second = workers.start()

    job = wait_for_state(spool_path, job_id, "completed")
    assert job["attempts"] == 2
    assert job["history"][0]["error"] == f"worker {killed_name} died during the run"
    assert job["history"][0]["worker"] == killed_name
    assert job["history"][1]["exit_code"] == 0 and job["worker"] != killed_name
    assert "attempt 2 ok" in Spool(spool_path).read_log(job_id).decode()
    wait_until(lambda: not process_alive(leftover), timeout=5, message="the killed worker's job to be ended")
    assert second.running()


def test_a_running_worker_recovers_a_dead_workers_job(spool_path, workers, tmp_path):
    marker = tmp_path / "first-attempt.pid"
    job_id = enqueue(spool_path, crash_on_first_attempt(marker), max_retries=0)
    doomed = workers.start()
    wait_for_running(spool_path, job_id, marker)
    doomed_name = Spool(spool_path).get(job_id)["worker"]
    survivor = workers.start()
    survivor_name = workers.record_of(survivor)["name"]

    doomed.send(signal.SIGKILL)

    # No retries left: recovery counts the interrupted run and dead-letters it.
    job = wait_for_state(spool_path, job_id, "dead", timeout=15)
    assert job["attempts"] == 1
    assert job["last_error"] == f"worker {doomed_name} died during the run"
    assert survivor.running()
    assert survivor_name != doomed_name
    assert [r["name"] for r in workers.live_records()] == [survivor_name]


def test_a_dead_workers_job_is_back_within_10_seconds_with_the_default_settings(spool_path, workers, tmp_path):
    """SPEC section 6: default settings, another worker running: the killed worker's job leaves processing/
    within 10 s, with the attempt counted and the death in its history."""
    configure(spool_path, **{key: defaults()[key] for key in FAST_SETTINGS})  # undo the fixture's fast settings
    processes = [workers.start(), workers.start()]
    workers.wait_ready(2)
    marker = tmp_path / "first-attempt.pid"
    job_id = enqueue(spool_path, crash_on_first_attempt(marker), max_retries=1)
    wait_for_running(spool_path, job_id, marker)
    doomed_name = Spool(spool_path).get(job_id)["worker"]
    doomed = next(process for process in processes if workers.record_of(process)["name"] == doomed_name)
    survivor = next(process for process in processes if process is not doomed)

    doomed.send(signal.SIGKILL)
    assert doomed.wait() == -signal.SIGKILL

    wait_until(lambda: Spool(spool_path).find(job_id) != "processing", timeout=10,
               message="the dead worker's job to leave processing/")
    job = wait_for_state(spool_path, job_id, "completed")
    assert job["attempts"] == 2
    assert job["history"][0]["error"] == f"worker {doomed_name} died during the run"
    assert job["history"][0]["worker"] == doomed_name
    assert job["worker"] == workers.record_of(survivor)["name"]
    assert survivor.running()


def test_the_supervisor_restarts_a_worker_that_died(spool_path, workers):
    supervisor = workers.start("-n", "2")
    victim = workers.wait_ready(2)[0]["pid"]

    os.kill(victim, signal.SIGKILL)

    def replaced() -> bool:
        pids = {record["pid"] for record in workers.live_records()}  # one look, not two racing ones
        return len(pids) == 2 and victim not in pids

    wait_until(replaced, message="a new worker in place of the killed one")
    assert supervisor.running()
    assert f"worker {victim} exited with -9; restarting it" in supervisor.stderr()
    job_id = enqueue(spool_path, "true")
    wait_for_state(spool_path, job_id, "completed")


# -- stopping -------------------------------------------------------------------------

def test_sigterm_lets_the_running_job_finish(spool_path, workers, tmp_path):
    waiting = enqueue(spool_path, "true", priority=-1)
    worker, job_id, _ = start_running(spool_path, workers, tmp_path, "sleep 1; echo finished")

    worker.send(signal.SIGTERM)

    assert worker.wait() == 0
    job = Spool(spool_path).get(job_id)
    assert (job["state"], job["attempts"], job["last_exit_code"]) == ("completed", 1, 0)
    assert "finished" in Spool(spool_path).read_log(job_id).decode()
    assert Spool(spool_path).find(waiting) == "pending"
    assert workers.live_records() == []


def test_sigterm_to_several_workers_lets_every_running_job_finish(spool_path, workers, tmp_path):
    markers = [tmp_path / "running-1", tmp_path / "running-2"]
    ids = [enqueue(spool_path, marker_then(marker, "sleep 1")) for marker in markers]
    supervisor = workers.start("-n", "2")
    for job_id, marker in zip(ids, markers):
        wait_for_running(spool_path, job_id, marker)

    supervisor.send(signal.SIGTERM)

    assert supervisor.wait() == 0
    assert [Spool(spool_path).find(job_id) for job_id in ids] == ["completed", "completed"]


def test_a_second_signal_stops_the_job_without_using_a_retry(spool_path, workers, tmp_path):
    worker, job_id, pid = start_running(spool_path, workers, tmp_path, "exec sleep 30", max_retries=0)

    worker.send(signal.SIGTERM)
    # Signals sent too close together may merge into one: repeat until it acts.
    wait_until(lambda: worker.send(signal.SIGINT) or not worker.running(), interval=0.2,
               message="the worker to stop")

    assert worker.wait() == 0
    assert_back_in_pending_with_no_attempt_used(spool_path, job_id, pid)


def test_worker_stop_from_another_process(spool_path, workers, tmp_path):
    worker, job_id, _ = start_running(spool_path, workers, tmp_path, "sleep 1")

    stop = run_queuectl(spool_path, "worker", "stop", timeout=30)

    assert stop.returncode == 0, stop.stderr
    assert "stop requested for 1 worker(s)" in stop.stdout
    assert worker.wait() == 0
    assert Spool(spool_path).find(job_id) == "completed"
    # A request applies to workers started before it, not to later ones.
    enqueue(spool_path, "true")
    assert workers.start("--burst").wait() == 0
    assert Spool(spool_path).counts()["completed"] == 2


def test_worker_stop_now_stops_the_running_job(spool_path, workers, tmp_path):
    worker, job_id, pid = start_running(spool_path, workers, tmp_path, "exec sleep 30")

    stop = run_queuectl(spool_path, "worker", "stop", "--now", timeout=30)

    assert stop.returncode == 0, stop.stderr
    assert worker.wait() == 0
    assert_back_in_pending_with_no_attempt_used(spool_path, job_id, pid)


def test_worker_list_shows_pid_host_uptime_and_current_job(spool_path, workers, tmp_path):
    worker, job_id, _ = start_running(spool_path, workers, tmp_path, "exec sleep 30")

    listing = run_queuectl(spool_path, "worker", "list")
    as_json = run_queuectl(spool_path, "worker", "list", "--json")

    assert listing.stdout.splitlines()[0].split() == ["PID", "HOST", "MODE", "UPTIME", "JOB"]
    rows = [line.split() for line in listing.stdout.splitlines()[1:]]
    assert [(row[0], row[1], row[-1]) for row in rows] == [(str(worker.pid), os.uname().nodename, job_id)]
    assert rows[0][2] == "local"  # a temporary folder on this machine (README "Running on several hosts")
    host = os.uname().nodename
    assert f"workers     1 live ({host}: 1 local)" in run_queuectl(spool_path, "status").stdout.splitlines()
    assert f"worker {records_name(spool_path)} on {host}: local mode" in run_queuectl(spool_path, "doctor").stdout
    assert re.fullmatch(r"\d+(\.\d+)?[smhd]", rows[0][3])
    records = json.loads(as_json.stdout)
    assert [(record["pid"], record["host"], record["job"]) for record in records] == [
        (worker.pid, os.uname().nodename, job_id)]
    assert 0 < time.time() - parse_time(records[0]["started"]) < 60  # ISO-8601 UTC, as every time in JSON


# -- the config, as workers apply it --------------------------------------------------------

def test_the_config_timeout_applies_to_a_job_without_its_own(spool_path, workers):
    """A job whose timeout is null runs under the config's `timeout`: stopped after 1 s, not after 30."""
    configured = run_queuectl(spool_path, "config", "set", "timeout", "1")
    assert configured.returncode == 0, configured.stderr
    job_id = enqueue(spool_path, "sleep 30", max_retries=0)
    assert Spool(spool_path).get(job_id)["timeout"] is None
    workers.start()

    job = wait_for_state(spool_path, job_id, "dead", timeout=15)

    assert job["last_error"] == "timed out after 1s"
    assert job["attempts"] == 1 and job["timeout"] is None
    assert job["last_duration"] < 10


def test_a_config_change_applies_to_later_jobs_not_earlier_ones(spool_path, workers):
    """SPEC section 5: max_retries is read at enqueue (the earlier job keeps 3 retries); the backoff at each
    retry (backoff_max 0 makes the earlier job's retries immediate)."""
    earlier = enqueue(spool_path, "exit 1")
    for key, value in (("max_retries", "0"), ("backoff_max", "0")):
        configured = run_queuectl(spool_path, "config", "set", key, value)
        assert configured.returncode == 0, configured.stderr
    later = enqueue(spool_path, "exit 1")
    workers.start()

    earlier_job = wait_for_state(spool_path, earlier, "dead", timeout=15)
    later_job = wait_for_state(spool_path, later, "dead", timeout=15)

    assert (earlier_job["max_retries"], earlier_job["attempts"]) == (3, 4)
    assert [entry["attempt"] for entry in earlier_job["history"]] == [1, 2, 3, 4]
    for previous, following in zip(earlier_job["history"], earlier_job["history"][1:]):
        assert seconds(following["started_at"]) - seconds(previous["finished_at"]) < 1, earlier_job["history"]
    assert (later_job["max_retries"], later_job["attempts"]) == (0, 1)
    assert len(later_job["history"]) == 1


def assert_file_mirrors_its_folder(spool_path, state: str, job_id: str) -> None:
    """The raw file (not Spool.get, which could fill the state in) says the folder it is in; doctor agrees."""
    raw = read_job(spool_path, state, job_id)
    assert raw["state"] == state
    assert seconds(raw["updated_at"]) >= seconds(raw["created_at"])
    assert seconds(raw["updated_at"]) >= seconds(raw["finished_at"])  # stamped by the settle, not before
    assert doctor.check(Spool(spool_path)) == []


def test_the_state_field_mirrors_the_folder_after_every_worker_move(spool_path, workers):
    """SPEC section 1: after the worker settles a job into failed/ and later into dead/, the file's own
    state field names that folder, and doctor finds nothing to report."""
    configure(spool_path, backoff_base=1000)  # failed/ keeps the job until `retry`
    job_id = enqueue(spool_path, "exit 2", max_retries=1)
    workers.start()

    wait_for_state(spool_path, job_id, "failed")
    assert_file_mirrors_its_folder(spool_path, "failed", job_id)

    retry = run_queuectl(spool_path, "retry", job_id)
    assert retry.returncode == 0, retry.stderr
    wait_for_state(spool_path, job_id, "dead")
    assert_file_mirrors_its_folder(spool_path, "dead", job_id)
    assert read_job(spool_path, "dead", job_id)["attempts"] == 2


# -- commands that act on running workers ----------------------------------------------

def test_retry_runs_a_failed_job_now(spool_path, workers):
    configure(spool_path, backoff_base=1000)
    job_id = enqueue(spool_path, '[ "$QUEUECTL_ATTEMPT" -ge 2 ]', max_retries=1)
    workers.start()
    failed = wait_for_state(spool_path, job_id, "failed")
    assert seconds(failed["next_run_at"]) > time.time() + 900

    retry = run_queuectl(spool_path, "retry", job_id)

    assert retry.returncode == 0, retry.stderr
    job = wait_for_state(spool_path, job_id, "completed")
    assert job["attempts"] == 2 and job["next_run_at"] is None


def test_cancel_stops_a_running_job(spool_path, workers, tmp_path):
    _, job_id, pid = start_running(spool_path, workers, tmp_path, "exec sleep 30")

    cancel = run_queuectl(spool_path, "cancel", job_id)

    assert cancel.returncode == 0, cancel.stderr
    assert cancel.stdout == f"{job_id}: stopped and cancelled (running -> dead)\n"
    job = read_job(spool_path, "dead", job_id)  # already there when cancel returns
    assert job["last_error"] == "cancelled while running"
    assert job["attempts"] == 1
    assert not process_alive(pid)
    assert not os.path.exists(os.path.join(spool_path, "cancels", job_id))
    assert "cancelled" in run_queuectl(spool_path, "dlq", "list").stdout


def test_wait_for_jobs(spool_path, workers):
    ok = [enqueue(spool_path, "true") for _ in range(2)]
    timed_out = run_queuectl(spool_path, "wait", "--timeout", "0.2")
    assert timed_out.returncode == 124 and "timed out with 2 job(s) unfinished" in timed_out.stderr
    failing = enqueue(spool_path, "false", max_retries=0)
    workers.start()

    # Without ids, wait awaits the jobs unfinished when it starts (and arrivals), so it runs first here.
    everything = run_queuectl(spool_path, "wait", timeout=30)
    some = run_queuectl(spool_path, "wait", *ok, timeout=30)

    assert some.returncode == 0 and "2 completed, 0 dead" in some.stdout
    assert everything.returncode == 1 and "2 completed, 1 dead" in everything.stdout
    assert Spool(spool_path).find(failing) == "dead"


def test_logs_follow_ends_when_the_job_finishes(spool_path, workers, tmp_path):
    _, job_id, _ = start_running(spool_path, workers, tmp_path, "echo first; echo to-stderr >&2; sleep 1; echo last")

    follow = run_queuectl(spool_path, "logs", "--follow", job_id, timeout=30)

    assert follow.returncode == 0, follow.stderr
    assert Spool(spool_path).find(job_id) == "completed"
    assert follow.stdout.startswith("=== attempt 1 started")
    assert follow.stdout.endswith("last\n")
    assert "first\n" in follow.stdout and "to-stderr\n" in follow.stdout


def test_job_environment_cwd_and_secrets(spool_path, workers, tmp_path):
    report = ('printf "%s|%s|%s|%s|%s\\n" "$QUEUECTL_JOB_ID" "$QUEUECTL_ATTEMPT" "$(pwd)" '
              '"$GREETING" "${SECRET_TOKEN-unset}"')
    worker_env = {"SECRET_TOKEN": "s3cret", "GREETING": "from-worker"}
    enqueue(spool_path, {"id": "plain", "command": report, "cwd": str(tmp_path), "env": {"GREETING": "hi"}})
    assert workers.start("--burst", env=worker_env).wait() == 0
    passed = run_queuectl(spool_path, "config", "set", "pass_env", "SECRET_TOKEN")
    assert passed.returncode == 0, passed.stderr
    enqueue(spool_path, {"id": "passed", "command": report})
    assert workers.start("--burst", env=worker_env).wait() == 0

    spool = Spool(spool_path)
    assert spool.read_log("plain").decode().splitlines()[1] == f"plain|1|{tmp_path}|hi|unset"
    assert spool.read_log("passed").decode().splitlines()[1] == f"passed|1|{os.getcwd()}||s3cret"


def test_a_pass_env_change_reaches_the_next_job_of_a_running_worker(spool_path, workers):
    """A worker keeps the environment its jobs take from it (runner.base_environment), but not past a
    change of `pass_env`."""
    report = 'echo "${SECRET_TOKEN-unset}"'
    workers.start(env={"SECRET_TOKEN": "s3cret"})
    wait_for_state(spool_path, enqueue(spool_path, {"id": "before", "command": report}), "completed")
    passed = run_queuectl(spool_path, "config", "set", "pass_env", "SECRET_TOKEN")
    assert passed.returncode == 0, passed.stderr
    wait_for_state(spool_path, enqueue(spool_path, {"id": "after", "command": report}), "completed")

    spool = Spool(spool_path)
    assert spool.read_log("before").decode().splitlines()[1] == "unset"
    assert spool.read_log("after").decode().splitlines()[1] == "s3cret"


# -- the demo ---------------------------------------------------------------------------------

def test_demo_runs_every_example_job_to_the_end(spool_path, workers):
    """Some examples fail on purpose: the demo waits for their retries too."""
    examples = example_jobs(example_folder())
    assert examples, f"no example jobs in {example_folder()}"
    configure(spool_path, backoff_base=1)

    demo = run_queuectl(spool_path, "demo", timeout=120)

    assert demo.returncode == 0, demo.stderr
    counts = Spool(spool_path).counts()
    assert counts["completed"] + counts["dead"] == len(examples), counts
    assert counts["dead"] >= 1 and counts["completed"] >= 1
    assert "done;" in demo.stdout


def records_name(spool_path) -> str:
    """The one worker's name, from its record in workers/."""
    names = [entry[:-len(".json")] for entry in os.listdir(os.path.join(spool_path, "workers"))
             if entry.endswith(".json") and entry != "stop.json"]
    assert len(names) == 1, names
    return names[0]


def _sleeps(pid: int) -> int:
    """How many times the threads of `pid` went to sleep on their own (voluntary context switches)."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/status", encoding="ascii") as handle:
                total += sum(int(line.split()[1]) for line in handle if line.startswith("voluntary_ctxt_switches"))
        except FileNotFoundError:
            continue  # a thread that ended meanwhile
    return total


def test_an_idle_worker_sleeps_instead_of_polling(spool_path, workers):
    """Spec: no busy polling. With the default settings an idle worker wakes for its recovery sweep
    and its lease's beat (every 5 s each) and the 30 s safety scan; over a 5 s look its threads
    sleep a handful of times. A loop that polled every 0.25 s would sleep at least 20 times."""
    os.remove(os.path.join(spool_path, "config.json"))  # the defaults, not the fixture's quick sweeps
    worker = workers.start("--quiet")
    workers.wait_ready(1)
    time.sleep(1)  # past start-up, whose first sweep and scans are not what is measured
    before, started = _sleeps(worker.pid), time.monotonic()
    time.sleep(5)
    woke = _sleeps(worker.pid) - before
    assert time.monotonic() - started < 7, "the look took too long to mean anything: a loaded machine"
    assert woke <= 12, f"{woke} wake-ups in 5 s while idle"
    assert worker.running()
