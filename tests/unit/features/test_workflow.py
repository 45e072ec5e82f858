"""Workflows with real worker processes: group limits, dependencies, unique keys, pause (README.md, "Workflows")."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

from support import wait_until
from support.workers import enqueue, read_lines, wait_for_state

from queuectl import Spool
from queuectl.core import lifecycle
from queuectl.core.errors import WrongState
from queuectl.features import workflow

# Each run takes its own flock, then counts the runs whose flock is held (the
# kernel drops a flock when its process dies, SIGKILL included), so a run
# that overlaps others sees them all, however the workers died.
RECORDER = textwrap.dedent("""\
    import fcntl, os, sys, time
    folder, out, pause = sys.argv[1], sys.argv[2], float(sys.argv[3])
    me = os.path.join(folder, "%s.%s.%d" % (os.environ["QUEUECTL_JOB_ID"], os.environ["QUEUECTL_ATTEMPT"], os.getpid()))
    fd = os.open(me, os.O_CREAT | os.O_RDWR, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    live = 0
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if path == me:
            live += 1
            continue
        try:
            other = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(other, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            live += 1
        finally:
            os.close(other)
    with open(out, "a") as handle:
        handle.write("%d %s\\n" % (live, os.environ["QUEUECTL_JOB_ID"]))
    time.sleep(pause)
""")


def recorder(tmp_path, pause: float = 0.02) -> str:
    script = tmp_path / "recorder.py"
    script.write_text(RECORDER)
    folder = tmp_path / "runs"
    folder.mkdir(exist_ok=True)
    return f"{sys.executable} {script} {folder} {tmp_path / 'counts'} {pause}"


def counts(tmp_path) -> list[int]:
    return [int(line.split()[0]) for line in read_lines(tmp_path / "counts")]


def completed(spool_path: str) -> int:
    return len(Spool(spool_path).names("completed"))


def test_a_group_never_runs_more_than_its_limit_even_when_workers_are_killed(spool_path, tmp_path, workers):
    limit, total = 2, 200
    spool = Spool(spool_path)
    workflow.set_limit(spool, "g", limit)
    command = recorder(tmp_path)
    spool.enqueue_many([{"command": command, "group": "g", "max_retries": 20} for _ in range(total)]
                       + [{"command": "true"} for _ in range(20)])  # others run beside the group
    running = [workers.start() for _ in range(4)]
    for done in (30, 70, 110):
        wait_until(lambda done=done: completed(spool_path) >= done, timeout=60, message=f"{done} completed jobs")
        victim = running.pop(0)
        victim.send(signal.SIGKILL)  # its job lives on until recovery kills it; its slot stays taken
        victim.wait()
        running.append(workers.start())
    wait_until(lambda: completed(spool_path) == total + 20, timeout=90, message="every job completed")
    seen = counts(tmp_path)
    assert len(seen) >= total
    assert max(seen) <= limit, f"{max(seen)} runs of a group limited to {limit} overlapped"
    assert max(seen) == limit  # the group did run in parallel: the check can see an overlap
    assert workflow.slot_names(spool, "g") == []


def test_a_full_group_does_not_hold_up_other_jobs(spool_path, tmp_path, workers):
    spool = Spool(spool_path)
    workflow.set_limit(spool, "one", 1)
    gate = tmp_path / "open"
    first = enqueue(spool_path, {"command": f"while [ ! -e {gate} ]; do sleep 0.05; done", "group": "one"})
    second = enqueue(spool_path, {"command": "true", "group": "one"})
    workers.start("--count", "2")
    wait_for_state(spool_path, first, "processing")
    other = enqueue(spool_path, "true")
    wait_for_state(spool_path, other, "completed")
    assert spool.find(second) == "pending"  # the free worker left it: the group's one slot is taken
    assert [holder["job"] for holder in workflow.slot_holders(spool, "one")] == [first]
    assert "worker" in workflow.read_slot(os.path.join(workflow.slot_dir(spool, "one"), "slot-0"))
    gate.touch()
    wait_for_state(spool_path, second, "completed")


def test_a_diamond_of_dependencies_runs_in_order_every_time(spool_path, tmp_path, workers):
    log = tmp_path / "order"
    spool = Spool(spool_path)
    step = f'echo "start $QUEUECTL_JOB_ID" >> {log}; sleep 0.05; echo "end $QUEUECTL_JOB_ID" >> {log}'
    rounds = 6
    for n in range(rounds):
        spool.enqueue_many([
            {"id": f"a{n}", "command": step},
            {"id": f"b{n}", "command": step, "after": [f"a{n}"]},
            {"id": f"c{n}", "command": step, "after": [f"a{n}"], "priority": 5},
            {"id": f"d{n}", "command": step, "after": [f"b{n}", f"c{n}"], "priority": 9},
        ])
    workers.start("--count", "3")
    wait_until(lambda: completed(spool_path) == 4 * rounds, timeout=60, message="every diamond completed")
    lines = read_lines(log)
    position = {line: index for index, line in enumerate(lines)}
    for n in range(rounds):
        for before, after in ((f"a{n}", f"b{n}"), (f"a{n}", f"c{n}"), (f"b{n}", f"d{n}"), (f"c{n}", f"d{n}")):
            assert position[f"end {before}"] < position[f"start {after}"], (before, after, lines)


def dlq_retry(spool, job_id: str) -> dict:
    """`dlq retry` as soon as the job's mover has let go of it (just moved into dead/, it may still be locked)."""
    def attempt():
        try:
            return lifecycle.dlq_retry(spool, job_id)
        except WrongState as exc:
            if "busy" not in str(exc):
                raise
            return None
    return wait_until(attempt, message=f"dlq retry of {job_id}")


def test_a_dead_dependency_kills_its_dependents_and_retrying_it_does_not_revive_them(spool_path, workers):
    spool = Spool(spool_path)
    enqueue(spool_path, {"id": "build", "command": "exit 3", "max_retries": 0})
    enqueue(spool_path, {"id": "test", "command": "true", "after": ["build"]})
    enqueue(spool_path, {"id": "ship", "command": "true", "after": ["test"]})
    workers.start()
    for job_id, cause in (("test", "build"), ("ship", "test")):
        job = wait_for_state(spool_path, job_id, "dead")
        assert job["last_error"] == f"dependency {cause} is dead"
        assert job["attempts"] == 0
    dependents = {job_id: spool.get(job_id) for job_id in ("test", "ship")}
    dlq_retry(spool, "build")
    wait_until(lambda: len(spool.get("build")["history"]) >= 2, message="the retried dependency to run again")
    wait_for_state(spool_path, "build", "dead")
    # Untouched, not revived and killed again (which would rewrite them: a new updated_at).
    assert {job_id: spool.get(job_id) for job_id in ("test", "ship")} == dependents


def test_dlq_retry_of_a_dependent_waits_for_its_dependency(spool_path, tmp_path, workers):
    spool = Spool(spool_path)
    gate = tmp_path / "open"
    enqueue(spool_path, {"id": "first", "command": f"[ -e {gate} ]", "max_retries": 0})
    enqueue(spool_path, {"id": "second", "command": "true", "after": ["first"]})
    workers.start()
    wait_for_state(spool_path, "second", "dead")
    # The retry moves it to pending/ before it returns; its dependency is still dead, so a
    # worker sends it back to dead/ for that reason.
    assert dlq_retry(spool, "second")["state"] == "pending"
    again = wait_for_state(spool_path, "second", "dead")
    assert again["last_error"] == "dependency first is dead" and again["attempts"] == 0
    gate.touch()
    dlq_retry(spool, "first")
    wait_for_state(spool_path, "first", "completed")
    dlq_retry(spool, "second")
    wait_for_state(spool_path, "second", "completed")


def test_waiting_jobs_show_what_they_wait_for(spool_path, qc):
    enqueue(spool_path, {"id": "one", "command": "true"})
    enqueue(spool_path, {"id": "two", "command": "true", "after": ["one"]})
    listing = qc("list")
    assert listing.returncode == 0
    row = next(line for line in listing.stdout.splitlines() if line.startswith("two "))
    assert "waiting" in row and "one: pending" in row
    shown = json.loads(qc("show", "two", "--json").stdout)
    assert shown["waiting_on"] == [{"id": "one", "state": "pending"}]
    assert "1 waiting" in qc("status").stdout
    assert "waiting_on" not in json.loads(qc("show", "one", "--json").stdout)


def test_enqueue_refuses_an_unknown_dependency_and_bad_fields(spool_path, qc):
    for args, message in ((("--after", "nope", "true"), "no job with id 'nope'"),
                          (("--group", "a/b", "true"), "invalid group"),
                          (("--unique", "", "true"), "unique_key")):
        result = qc("enqueue", *args)
        assert result.returncode == 1, result
        assert message in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert Spool(spool_path).counts()["pending"] == 0
    # Ids earlier in the same batch may be named: no cycle can be written.
    batch = '{"id": "x", "command": "true"}\n{"id": "y", "command": "true", "after": ["x"]}\n'
    assert qc("enqueue", "-", input=batch).returncode == 0


def test_sixteen_parallel_enqueues_of_one_unique_key_make_one_job(spool_path):
    Spool(spool_path)
    base = [sys.executable, "-m", "queuectl", "--spool", spool_path, "enqueue"]
    for extra, want_ok in (([], 1), (["--if-absent"], 16)):
        processes = [subprocess.Popen(base + ["--unique", f"nightly{len(extra)}", *extra, "true"],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                     for _ in range(16)]
        results = [(p.wait(timeout=60), p.stdout.read().strip(), p.stderr.read().strip()) for p in processes]
        ok = [out for code, out, _ in results if code == 0]
        assert len(ok) == want_ok, results
        assert len(set(ok)) == 1
        for code, _, err in results:
            if code:
                assert f"held by job {ok[0]}" in err
    assert Spool(spool_path).counts()["pending"] == 2


def test_a_key_frees_when_its_job_finishes_and_a_stale_key_is_taken_over_once(spool_path, workers, qc):
    spool = Spool(spool_path)
    job_id = spool.enqueue("true", unique="k")["id"]
    assert qc("enqueue", "--unique", "k", "true").returncode == 1
    workers.start()
    wait_for_state(spool_path, job_id, "completed")
    wait_until(lambda: not os.path.lexists(workflow.key_path(spool, "k")), message="the key to be freed")
    # A key left by a crash naming a finished job: 16 racers, exactly one takes it over.
    stale = spool.enqueue("true", unique="other")["id"]
    wait_for_state(spool_path, stale, "completed")
    with open(workflow.key_path(spool, "k"), "w") as handle:  # by hand: a key file may hold just the id
        handle.write(stale + "\n")
    processes = [subprocess.Popen([sys.executable, "-m", "queuectl", "--spool", spool_path, "enqueue",
                                   "--unique", "k", "--delay", "1h", "true"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(16)]
    codes = [p.wait(timeout=60) for p in processes]
    assert codes.count(0) == 1, [p.stderr.read() for p in processes]


def test_cancel_frees_the_key_and_dlq_retry_takes_it_again_or_is_refused(spool_path, qc):
    spool = Spool(spool_path)
    first = spool.enqueue("true", unique="k", delay=3600)["id"]
    assert qc("cancel", first).returncode == 0
    assert not os.path.lexists(workflow.key_path(spool, "k"))
    second = spool.enqueue("true", unique="k", delay=3600)["id"]
    refused = qc("dlq", "retry", first)
    assert refused.returncode == 1 and f"held by job {second}" in refused.stderr
    assert spool.find(first) == "dead"
    assert qc("cancel", second).returncode == 0
    assert qc("dlq", "retry", first).returncode == 0
    assert workflow.key_holder(workflow.key_path(spool, "k")) == first


def test_pause_under_load_starts_nothing_new(spool_path, tmp_path, workers, qc):
    log = tmp_path / "starts"
    spool = Spool(spool_path)
    spool.enqueue_many([{"command": f'echo "$QUEUECTL_JOB_ID" >> {log}; sleep 0.1'} for _ in range(80)])
    workers.start("--count", "2")
    wait_until(lambda: len(read_lines(log)) >= 10, timeout=60, message="jobs to run")
    assert qc("pause").returncode == 0
    paused_at = time.time()
    assert "paused" in qc("status").stdout and "spool paused" in qc("worker", "list").stdout
    # Running jobs go on; a worker may be past its check when the file appears: one claim each at most.
    wait_until(lambda: not spool.names("processing"), timeout=30, message="running jobs to finish")
    late = [job["id"] for state in ("processing", "completed") for job in spool.iter_jobs(state)
            if workflow_seconds(job["started_at"]) > paused_at]
    assert len(late) <= 2, late
    before = len(read_lines(log))
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:  # watch for a while: nothing starts
        assert not spool.names("processing") and len(read_lines(log)) == before
        time.sleep(0.05)
    assert qc("resume").returncode == 0
    wait_until(lambda: len(read_lines(log)) > before, timeout=30, message="jobs to start after resume")


def workflow_seconds(text: str) -> float:
    from queuectl.core.job import parse_time
    return parse_time(text)


def test_pausing_a_group_holds_its_jobs_only(spool_path, workers, qc):
    spool = Spool(spool_path)
    assert qc("pause", "--group", "slow").returncode == 0
    held = enqueue(spool_path, {"command": "true", "group": "slow"})
    free = enqueue(spool_path, {"command": "true", "group": "fast"})
    workers.start()
    wait_for_state(spool_path, free, "completed")
    assert spool.find(held) == "pending"
    groups = {group["name"]: group for group in json.loads(qc("group", "list", "--json").stdout)}
    assert groups["slow"]["paused"] is True
    os.unlink(workflow.pause_path(spool, "slow"))  # by hand, as a user may
    wait_for_state(spool_path, held, "completed")


def test_a_slot_left_by_a_dead_worker_is_freed(spool_path, workers, qc):
    spool = Spool(spool_path)
    workflow.set_limit(spool, "g", 1)
    done = enqueue(spool_path, "true")
    workers.start()
    wait_for_state(spool_path, done, "completed")
    folder = workflow.slot_dir(spool, "g")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "slot-0"), "w") as handle:  # as a killed worker leaves it
        handle.write(json.dumps({"worker": "gone-1-1"}))
    job = enqueue(spool_path, {"command": "true", "group": "g"})
    wait_for_state(spool_path, job, "completed")
    assert qc("doctor").returncode == 0


# -- the dashboard -------------------------------------------------------------------


def test_the_dashboard_shows_groups_pauses_and_waiting_jobs_and_pauses_with_the_token(spool):
    from support.dashboard import get, post, running_dashboard
    workflow.set_limit(spool, "build", 2)
    spool.enqueue({"id": "first", "command": "true", "group": "build"})
    spool.enqueue({"id": "second", "command": "true", "after": ["first"]})
    with running_dashboard(spool) as server:
        status = get(server, "/api/status").json()
        assert status["paused"] is False
        assert status["groups"] == [{"name": "build", "limit": 2, "running": 0, "slots": 0, "paused": False, "rate": None,
                                     "starts_in_window": None, "holders": []}]
        rows = {job["id"]: job for job in get(server, "/api/jobs").json()["jobs"]}
        assert rows["second"]["waiting_on"] == [{"id": "first", "state": "pending"}]
        assert rows["first"]["group"] == "build" and rows["first"]["waiting_on"] is None
        assert get(server, "/api/jobs/second").json()["waiting_on"] == [{"id": "first", "state": "pending"}]
        # A state change needs the page's token, as a retry does.
        assert post(server, "/api/pause", token="forged").status == 403
        assert post(server, "/api/pause", origin="http://evil.example").status == 403
        assert not workflow.is_paused(spool)
        assert post(server, "/api/pause").json()["paused"] is True
        assert workflow.is_paused(spool) and get(server, "/api/status").json()["paused"] is True
        assert post(server, "/api/pause?group=build").status == 200 and workflow.is_paused(spool, "build")
        assert post(server, "/api/pause?group=..%2Fx").status == 409
        assert post(server, "/api/resume").json()["paused"] is False
        assert post(server, "/api/resume?group=build").json()["paused"] is False
        assert get(server, "/api/pause").status == 405
    assert not workflow.is_paused(spool) and not workflow.is_paused(spool, "build")
    with open(os.path.join(os.path.dirname(os.path.dirname(workflow.__file__)), "dashboard", "static", "app.js"),
              encoding="utf-8") as handle:
        assert "innerHTML" not in handle.read()  # job text (waiting_on included) goes through textContent only


def test_doctor_reports_and_frees_stale_keys_and_take_over_locks(spool_path, qc):
    spool = Spool(spool_path)
    from support import put_job
    put_job(spool_path, "completed", "done", unique_key="k")
    os.makedirs(os.path.join(spool_path, "unique"), exist_ok=True)
    os.link(os.path.join(spool_path, "completed", "done.json"), workflow.key_path(spool, "k"))
    lock = workflow.key_path(spool, "other") + ".lock"
    os.symlink("host:1", lock)
    old = time.time() - 2 * workflow.LOCK_GRACE
    os.utime(lock, (old, old), follow_symlinks=False)
    report = qc("doctor")
    assert report.returncode == 1
    assert "stale-key" in report.stdout and "stale-key-lock" in report.stdout
    assert qc("doctor", "--repair").returncode == 0
    assert not os.path.lexists(workflow.key_path(spool, "k")) and not os.path.lexists(lock)
    assert qc("doctor").returncode == 0


def test_a_burst_worker_runs_a_chain_and_a_limited_group_to_the_end(spool_path, qc):
    spool = Spool(spool_path)
    workflow.set_limit(spool, "one", 1)
    spool.enqueue_many([{"id": "a", "command": "true"}, {"id": "b", "command": "true", "after": ["a"]},
                        {"id": "c", "command": "true", "after": ["b"]}]
                       + [{"command": "sleep 0.05", "group": "one"} for _ in range(6)])
    result = qc("worker", "start", "--count", "2", "--burst", timeout=120)
    assert result.returncode == 0, result.stderr
    assert spool.counts()["completed"] == 9, spool.counts()


def test_group_and_pause_commands_say_what_they_did_and_refuse_bad_input(spool_path, qc):
    assert qc("group", "set", "gpu", "--limit", "2").stdout == "group gpu: limit 2\n"
    assert json.loads(qc("group", "list", "--json").stdout)[0]["limit"] == 2
    assert qc("group", "set", "gpu", "--limit", "0").stdout == "group gpu: no limit\n"
    bad = qc("group", "set", "a.b", "--limit", "2")
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "invalid group" in bad.stderr
    assert qc("group", "set", "gpu", "--limit", "-1").returncode == 2
    assert qc("pause", "--group", "../x").returncode == 1
    assert "spool paused" in qc("pause").stdout
    assert "was paused already" in qc("pause").stdout
    assert os.path.isfile(os.path.join(spool_path, "paused"))
    assert qc("resume").stdout == "spool resumed\n"
    assert qc("resume").stdout == "spool was not paused\n"


def test_a_dropped_in_job_takes_its_unique_key_or_goes_to_dead(spool_path, workers):
    spool = Spool(spool_path)
    holder = spool.enqueue("true", unique="once", delay=3600)["id"]
    for name, key in (("dup.json", "once"), ("fresh.json", "fresh")):
        with open(os.path.join(spool_path, "pending", name), "w") as handle:
            json.dump({"command": "true", "unique_key": key, "run_at": "2999-01-01T00:00:00Z"}, handle)
    workers.start()
    dead = wait_for_state(spool_path, "dup", "dead")
    assert f"held by job {holder}" in dead["last_error"]
    wait_until(lambda: workflow.key_holder(workflow.key_path(spool, "fresh")) == "fresh",
               message="the dropped-in job to hold its key")
    assert spool.find("fresh") == "pending" and spool.find(holder) == "pending"
