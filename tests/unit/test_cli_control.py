"""hold / release / start, restart --in-place, suspend / resume, edit, enqueue limits: through the CLI."""

from __future__ import annotations

import json
import os
import stat
import sys
import time

from support import wait_until
from support.workers import wait_for_running, wait_for_state

from queuectl.api import Spool
from queuectl.core import registry


def _proc_state(pid: int) -> str:
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        return handle.read().rsplit(")", 1)[1].split()[0]


def test_held_job_waits_for_release_and_start_runs_a_delayed_job(qc, spool_path, workers, tmp_path):
    held = qc("enqueue", "--hold", "--id", "h1", "--", f"echo ran > {tmp_path}/h1").stdout.strip()
    later = qc("enqueue", "--delay", "1h", "--id", "d1", "--", "echo later").stdout.strip()
    assert (held, later) == ("h1", "d1")
    workers.start()
    marker = qc("enqueue", "--", "echo", "after").stdout.strip()
    wait_for_state(spool_path, marker, "completed")  # the worker ran a later job, not the held one
    assert Spool(spool_path).find("h1") == "pending"
    listed = qc("list", "-s", "held").stdout
    assert "h1" in listed and "held" in listed and "d1" not in listed
    assert qc("release", "h1").stdout == "h1: released\n"
    wait_for_state(spool_path, "h1", "completed")
    assert qc("start", "d1").returncode == 0
    job = wait_for_state(spool_path, "d1", "completed")
    assert job["run_at"] is None


def test_hold_keeps_the_id_marker_on_the_pending_file(qc, spool_path):
    qc("enqueue", "--id", "m1", "--", "true")
    assert qc("hold", "m1").stdout == "m1: held\n"
    assert qc("hold", "m1").stdout == "m1: was held already\n"
    job_file = os.stat(os.path.join(spool_path, "pending", "m1.json"))
    marker = os.stat(os.path.join(spool_path, "ids", "m1"))
    assert job_file.st_ino == marker.st_ino  # else a claim would take the held job for a drop-in


def test_restart_in_place_keeps_the_id_and_history(qc, spool_path, workers):
    workers.start()
    job_id = qc("enqueue", "--max-retries", "0", "--", "exit 3").stdout.strip()
    wait_for_state(spool_path, job_id, "dead")
    result = qc("restart", "--in-place", job_id)
    assert result.stdout == f"{job_id}: dead -> pending\n", result.stderr
    job = wait_for_state(spool_path, job_id, "dead")
    assert job["attempts"] == 1
    assert [entry.get("attempt") for entry in job["history"] if "attempt" in entry] == [1, 1]
    assert any("restarted_at" in entry for entry in job["history"])


def test_suspended_job_outlives_its_timeout_and_completes(qc, spool_path, workers, tmp_path):
    workers.start()
    pid_file = tmp_path / "pid"
    job_id = qc("enqueue", "--timeout", "3", "--",
                f"echo $$ > {pid_file}; sleep 1; echo done").stdout.strip()
    pid = int(wait_for_running(spool_path, job_id, pid_file))
    suspended_at = time.monotonic()
    assert qc("suspend", job_id).stdout == f"{job_id}: suspended\n"
    wait_until(lambda: _proc_state(pid) == "T", message="the job's shell to stop")
    assert "suspended" in qc("list").stdout
    wait_until(lambda: time.monotonic() - suspended_at > 4.5, message="longer than the timeout")
    assert _proc_state(pid) == "T" and Spool(spool_path).find(job_id) == "processing"
    assert qc("resume", "--running").stdout == f"{job_id}: resumed\n"
    job = wait_for_state(spool_path, job_id, "completed", "failed", "dead")
    assert job["state"] == "completed", job.get("last_error")


def test_a_suspend_request_left_by_an_earlier_run_does_not_stop_the_next(qc, spool_path, workers):
    """Its worker died while the job was suspended: the request names that run, not the next one
    (its mtime is new: a request is told by the run it names, never by a time another host's clock
    set). The run lasts past the worker's first look at requests; one that obeyed would stop for good."""
    job_id = qc("enqueue", "--", "sleep 1.2; echo done").stdout.strip()
    left = os.path.join(spool_path, "suspends", job_id)
    with open(left, "w", encoding="ascii") as handle:
        handle.write("2026-01-01T00:00:00.000Z")
    later = time.time() + 3600
    os.utime(left, (later, later))
    assert workers.start("--burst").wait(timeout=60) == 0
    assert Spool(spool_path).get(job_id)["state"] == "completed"
    assert not os.path.exists(left)


def test_a_suspend_request_is_obeyed_when_it_names_the_run_or_no_run(spool):
    job_id = spool.enqueue("true")["id"]
    registry.request_suspend(spool, job_id, "2026-12-05T10:00:00.000Z")
    assert registry.suspend_requested(spool, job_id, run="2026-12-05T10:00:00.000Z")
    assert not registry.suspend_requested(spool, job_id, run="2026-12-05T11:00:00.000Z")
    assert not os.path.exists(os.path.join(spool.root, "suspends", job_id))  # an earlier run's: removed
    registry.request_suspend(spool, job_id)  # by hand: `touch suspends/<id>`
    assert registry.suspend_requested(spool, job_id, run="2026-12-05T11:00:00.000Z")


def test_edit_with_set_and_history(qc, spool_path):
    qc("enqueue", "--id", "e1", "--", "echo one")
    result = qc("edit", "e1", "--set", "priority=5", "--set", "note=hello world")
    assert result.returncode == 0, result.stderr
    job = Spool(spool_path).get("e1")
    assert job["priority"] == 5 and job["note"] == "hello world"
    assert job["history"][-1]["changed"] == {"note": [None, "hello world"], "priority": [0, 5]}
    assert qc("edit", "e1", "--set", "priority=5").stdout == "e1: nothing changed\n"
    marker = os.stat(os.path.join(spool_path, "ids", "e1")).st_ino
    assert marker == os.stat(os.path.join(spool_path, "pending", "e1.json")).st_ino


def test_edit_through_editor(qc, spool_path, tmp_path):
    qc("enqueue", "--id", "e2", "--", "echo one")
    script = tmp_path / "editor.py"
    script.write_text("import json, sys\n"
                      "fields = json.load(open(sys.argv[1]))\n"
                      "fields['command'] = 'echo two'\n"
                      "json.dump(fields, open(sys.argv[1], 'w'))\n")
    result = qc("edit", "e2", env={**os.environ, "VISUAL": "", "EDITOR": f"{sys.executable} {script}"})
    assert result.returncode == 0, result.stderr
    assert Spool(spool_path).get("e2")["command"] == "echo two"


def test_invalid_edit_leaves_the_file_byte_identical(qc, spool_path):
    qc("enqueue", "--id", "e3", "--", "echo one")
    path = os.path.join(spool_path, "pending", "e3.json")
    before = open(path, "rb").read()
    for bad in ("priority=\"high\"", "attempts=4", "timeout=-1", "command=\"\""):
        result = qc("edit", "e3", "--set", bad)
        assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "Traceback" not in result.stderr
    assert open(path, "rb").read() == before


def test_edit_of_a_running_job_is_refused(qc, spool_path, workers, tmp_path):
    workers.start()
    started = tmp_path / "started"
    job_id = qc("enqueue", "--", f"echo x > {started}; sleep 30").stdout.strip()
    wait_for_running(spool_path, job_id, started)
    result = qc("edit", job_id, "--set", "priority=3")
    assert result.returncode == 1 and "running" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    qc("cancel", job_id)


def test_enqueue_limits_are_checked(qc, spool_path):
    job = json.loads(qc("enqueue", "--json", "--memory", "2G", "--cpu-time", "10m", "--max-files", "64",
                        "--", "true").stdout)
    assert (job["memory"], job["cpu_time"], job["max_files"]) == (2 << 30, 600, 64)
    bad = qc("enqueue", "--memory", "2X", "--", "true")
    assert bad.returncode == 2 and "--memory" in bad.stderr
    assert not os.listdir(os.path.join(spool_path, "pending")) or len(os.listdir(os.path.join(spool_path, "pending"))) == 1


def test_progress_in_list_and_show(qc, spool_path, workers, tmp_path):
    workers.start()
    started = tmp_path / "started"
    job_id = qc("enqueue", "--", f'echo 42 > "$QUEUECTL_PROGRESS"; echo x > {started}; sleep 30').stdout.strip()
    wait_for_running(spool_path, job_id, started)
    assert "running 42%" in qc("list").stdout
    assert "running 42%" in qc("show", job_id).stdout
    assert "running 42%" in qc("status").stdout
    qc("cancel", job_id)
    assert stat.S_ISDIR(os.stat(spool_path).st_mode)
