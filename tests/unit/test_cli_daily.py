"""The CLI as a pueue or task-spooler user uses it every day: ids, enqueue, list, logs, wait, aliases, pipes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import click
import pytest
from support import put_job, read_job, wait_until

from queuectl import Spool
from queuectl.cli import main
from queuectl.cli.ids import id_time, page
from queuectl.core.job import iso, new_id

NO_WORKER = "queuectl: warning: no worker is running"


def enqueue(cli, *args) -> str:
    result = cli("enqueue", *args)
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


# -- 1. order and ids -----------------------------------------------------------

def test_generated_ids_are_short_sortable_and_carry_their_time():
    before = time.time()
    ids = [new_id() for _ in range(3000)]
    assert len(set(ids)) == len(ids) and ids == sorted(ids)
    assert all(len(job_id) <= 14 and re.fullmatch(r"[0-9a-z]{5}-[0-9a-z]{8}", job_id) for job_id in ids)
    assert before - 0.01 <= id_time(ids[0]) <= time.time()
    # Ids of other processes (another pid, another host) differ by 20 random bits, not by a pid.
    child = subprocess.run([sys.executable, "-c", "from queuectl.core.job import new_id; print(new_id())"],
                           capture_output=True, text=True, check=True).stdout.strip()
    assert ids[-1] < child < new_id()


def test_eight_characters_after_the_dash_name_any_job_of_a_busy_day(cli, spool_path):
    spool = Spool(spool_path)
    ids = [job["id"] for job in spool.enqueue_many({"command": f"echo {n}"} for n in range(2000))]
    tails = [job_id.split("-")[1] for job_id in ids]
    assert len({tail[:8] for tail in tails}) == len(ids)
    chosen = ids[1234]
    assert cli("show", chosen.split("-")[1], "--json").exit_code == 0
    assert json.loads(cli("show", chosen[-8:], "--json").stdout)["id"] == chosen


def test_logs_show_cancel_take_a_unique_prefix_and_refuse_an_ambiguous_one(cli, spool_path):
    put_job(spool_path, "pending", "build-6406")
    put_job(spool_path, "pending", "build-7100")
    with open(os.path.join(spool_path, "logs", "build-6406.log"), "w") as handle:
        handle.write("hello\n")
    assert cli("logs", "6406").stdout == "hello\n"
    ambiguous = cli("show", "build-")
    assert ambiguous.exit_code == 1 and "build-6406" in ambiguous.stderr and "build-7100" in ambiguous.stderr
    assert cli("cancel", "71").exit_code == 0
    assert read_job(spool_path, "dead", "build-7100")["state"] == "dead"
    assert cli("logs", "nosuch").exit_code == 1


def test_list_is_newest_enqueued_first_whatever_the_ids(cli, spool_path):
    first = enqueue(cli, "echo", "first")
    put_job(spool_path, "pending", "zzz-chosen")  # a chosen id sorting last as text, enqueued in between
    os.utime(os.path.join(spool_path, "pending", "zzz-chosen.json"), (time.time() + 0.5,) * 2)
    time.sleep(1.0)
    last = enqueue(cli, "echo", "last")
    rows = [line.split()[0] for line in cli("list").stdout.splitlines()[1:]]
    assert rows == [last, "zzz-chosen", first]
    assert [line.split()[0] for line in cli("list", "--sort", "id").stdout.splitlines()[1:]] == sorted(rows)


def test_list_of_100000_jobs_reads_only_its_page(spool_path):
    """The order comes from the names: a page of 50 out of 100,000 reads 50 files."""
    spool = Spool(spool_path)
    folder = os.path.join(spool_path, "completed")
    clock = time.time() - 86400
    names = [new_id() for _ in range(100_000)]
    for job_id in names:
        with open(os.path.join(folder, job_id + ".json"), "w") as handle:
            handle.write(json.dumps({"id": job_id, "command": "x", "state": "completed", "created_at": iso(clock)}))
    reads = []
    original = spool.read
    spool.read = lambda state, name: reads.append(name) or original(state, name)
    started = time.perf_counter()
    jobs, total = page(spool, None, limit=50)
    elapsed = time.perf_counter() - started
    assert total == 100_000 and [job["id"] for job in jobs] == names[::-1][:50]
    assert len(reads) == 50
    assert elapsed < 2.0  # generous on a loaded machine; the figure is in the report


# -- 2. enqueue like pueue add -----------------------------------------------------

def test_enqueue_takes_the_words_of_a_command(cli, spool_path):
    words = read_job(spool_path, "pending", enqueue(cli, "echo", "hello", "world"))
    assert words["command"] == "echo hello world"
    dashed = read_job(spool_path, "pending", enqueue(cli, "-p", "3", "--", "make", "-j4", "test"))
    assert dashed["command"] == "make -j4 test" and dashed["priority"] == 3
    quoted = read_job(spool_path, "pending", enqueue(cli, "printf", "%s\\n", "a b", "it's"))
    assert quoted["command"] == "printf '%s\\n' 'a b' 'it'\"'\"'s'"
    braces = read_job(spool_path, "pending", enqueue(cli, "--", "{ echo a; } > f"))
    assert braces["command"] == "{ echo a; } > f"


def test_a_brace_argument_that_is_not_json_says_how_to_pass_it(cli):
    result = cli("enqueue", "{ echo a; } > f")
    assert result.exit_code == 1 and "--command" in result.stderr and "--" in result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_enqueue_reads_what_show_json_prints(cli, spool_path):
    job_id = enqueue(cli, "--id", "orig", "--priority", "7", "echo", "x")
    shown = cli("show", job_id, "--json").stdout
    again = json.loads(shown)
    del again["id"], again["state"]
    pretty = json.dumps(again, indent=2)
    result = cli("enqueue", "-", input=pretty + "\n" + json.dumps([{"command": "a"}, {"command": "b"}]) + "\n"
                 + '{"command": "c"}\n')
    assert result.exit_code == 0, result.output
    ids = result.stdout.split()
    assert len(ids) == 4 and read_job(spool_path, "pending", ids[0])["priority"] == 7
    bad = cli("enqueue", "-", input='{"command": "a"}\n{\n  "command": "b",\n  oops\n}\n')
    assert bad.exit_code == 1 and "stdin line 2" in bad.stderr


# -- 3. restart -----------------------------------------------------------------------

def test_restart_enqueues_a_new_job_with_the_same_fields(cli, spool_path):
    put_job(spool_path, "dead", "old", command="make test", priority=4, group="ci", attempts=4,
            last_exit_code=2, history=[{"attempt": 1, "exit_code": 2}])
    result = cli("restart", "old")
    assert result.exit_code == 0 and result.stdout.startswith("old -> ")
    new_id_ = result.stdout.split()[-1]
    new = read_job(spool_path, "pending", new_id_)
    assert (new["command"], new["priority"], new["group"], new["restarted_from"]) == ("make test", 4, "ci", "old")
    assert new["attempts"] == 0 and not new.get("history") and new.get("last_exit_code") is None
    assert read_job(spool_path, "dead", "old")["attempts"] == 4
    put_job(spool_path, "pending", "notyet")
    assert cli("restart", "notyet").exit_code == 1


# -- 4. never silent without workers --------------------------------------------------

def test_enqueue_wait_and_follow_say_when_no_worker_runs(cli, qc, spool_path):
    assert NO_WORKER in cli("enqueue", "true").stderr
    job_id = cli("enqueue", "true").stdout.strip()
    waited = qc("wait", job_id, "--timeout", "0.3")
    assert NO_WORKER in waited.stderr and waited.returncode == 124
    followed = subprocess.Popen([sys.executable, "-m", "queuectl", "--spool", spool_path, "logs", "-f", job_id],
                                stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        line = followed.stderr.readline()
        assert NO_WORKER in line
    finally:
        followed.kill()
        followed.wait()


def test_worker_start_detach_runs_in_the_background_until_stop(qc, spool_path, workers):
    started = qc("worker", "start", "--detach", "--count", "2")
    assert started.returncode == 0, started.stderr
    assert "workers/detached.log" in started.stdout
    assert len(Spool(spool_path).workers()) == 2
    job_id = qc("enqueue", "echo", "detached").stdout.strip()
    assert qc("enqueue", "true").stderr == ""  # workers run: nothing to warn about
    assert qc("wait", job_id, "--timeout", "30").returncode == 0
    assert os.path.getsize(os.path.join(spool_path, "workers", "detached.log")) > 0
    assert qc("worker", "stop").returncode == 0
    assert Spool(spool_path).workers() == []


# -- 5. pipes ---------------------------------------------------------------------------

@pytest.mark.parametrize("command", [["list", "--all"], ["status"], ["config", "list"], ["logs", "big"]])
def test_a_closed_pipe_ends_quietly(spool_path, command):
    for number in range(3000):
        put_job(spool_path, "pending", f"job{number:04d}")
    with open(os.path.join(spool_path, "logs", "big.log"), "w") as handle:
        handle.write("line\n" * 200_000)
    put_job(spool_path, "completed", "big")
    shell = f"{sys.executable} -m queuectl --spool {spool_path} {' '.join(command)} | head -1; " \
            "echo \"${PIPESTATUS[0]}\" >&2"
    result = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "COLUMNS": "200"})
    *messages, code = result.stderr.splitlines()
    assert code in ("0", "141") and messages == [], result.stderr
    assert result.stdout.count("\n") == 1


# -- 6. list as a daily view ----------------------------------------------------------------

def test_list_columns_states_groups_and_times(cli, spool_path):
    now = time.time()
    put_job(spool_path, "pending", "later", run_at=iso(now + 3600 - 5), created_at=iso(now))
    put_job(spool_path, "failed", "flaky", next_run_at=iso(now + 12.4), attempts=1, last_exit_code=3,
            last_duration=1.5, group="net")
    put_job(spool_path, "completed", "ok", last_exit_code=0, last_duration=75, group="net")
    put_job(spool_path, "pending", "first")
    put_job(spool_path, "pending", "second", after=["first"])
    rows = {line.split()[0]: line for line in cli("list").stdout.splitlines()[1:]}
    assert "scheduled in 59m" in rows["later"]
    assert re.search(r"retry in 1[12]s", rows["flaky"])
    assert rows["ok"].split()[1:6] == ["completed", "net", "0", "0", "1m15s"]
    assert "waiting" in rows["second"]
    picked = cli("list", "-s", "failed", "-s", "completed").stdout
    assert {line.split()[0] for line in picked.splitlines()[1:]} == {"flaky", "ok"}
    assert [line.split()[0] for line in cli("list", "-s", "waiting").stdout.splitlines()[1:]] == ["second"]
    assert cli("list", "-s", "held").stdout == "no jobs\n"
    assert {line.split()[0] for line in cli("list", "--group", "net").stdout.splitlines()[1:]} == {"flaky", "ok"}


def test_list_rows_fit_the_terminal_and_commands_are_whole_when_there_is_room(qc, spool_path):
    command = "python3 -m pytest tests/unit/test_something.py -k 'a_long_name and not slow' -x -q --tb=short"
    put_job(spool_path, "pending", "long", command=command)
    narrow = qc("list", env={"COLUMNS": "80"}).stdout.splitlines()
    assert all(len(line) <= 80 for line in narrow)
    wide = qc("list", env={"COLUMNS": "200"}).stdout.splitlines()
    assert wide[1].endswith(command)
    piped = qc("list").stdout.splitlines()  # not a terminal, no COLUMNS: never cut
    assert piped[1].endswith(command)


def test_list_times_are_local_like_ls_and_utc_on_request(qc, spool_path):
    put_job(spool_path, "pending", "j", created_at="2026-07-04T22:19:00.000Z")
    local = qc("list", env={"TZ": "Asia/Tokyo"}).stdout
    assert "Jul  5 07:19" in local or "Jul  5  2026" in local
    utc = qc("list", "--utc", env={"TZ": "Asia/Tokyo"}).stdout
    assert "CREATED (UTC)" in utc and ("Jul  4 22:19" in utc or "Jul  4  2026" in utc)
    assert json.loads(qc("list", "--json").stdout)[0]["created_at"] == "2026-07-04T22:19:00.000Z"


def test_show_is_for_people_and_json_on_request(cli, spool_path):
    put_job(spool_path, "dead", "d", command="make", attempts=1, last_exit_code=2, last_error="exit code 2",
            history=[{"attempt": 1, "worker": "w1", "started_at": "2026-07-04T22:19:00.000Z",
                      "finished_at": "2026-07-04T22:19:03.000Z", "exit_code": 2, "error": "exit code 2"}])
    shown = cli("show", "d").stdout
    assert re.search(r"^command\s+make$", shown, re.M) and re.search(r"^\s+1 .* 3s\s+2\s+w1", shown, re.M)
    assert json.loads(cli("show", "d", "--json").stdout)["id"] == "d"


# -- 7. wait ---------------------------------------------------------------------------------

def test_wait_exit_codes(cli, qc, spool_path):
    put_job(spool_path, "completed", "good")
    put_job(spool_path, "dead", "bad")
    put_job(spool_path, "pending", "stuck")
    assert qc("wait", "good").returncode == 0
    assert qc("wait", "good", "bad").returncode == 1
    assert qc("wait", "stuck", "--timeout", "0.2").returncode == 124
    unknown = qc("wait", "nosuch")
    assert unknown.returncode == 2 and "nosuch" in unknown.stderr


def test_wait_without_ids_ignores_old_dead_jobs_and_later_ones(qc, spool_path):
    put_job(spool_path, "dead", "ancient")
    put_job(spool_path, "pending", "tomorrow", run_at=iso(time.time() + 3600))
    result = qc("wait", "--timeout", "5")
    assert result.returncode == 0, result.stderr
    assert qc("wait", "--all", "--timeout", "0.2").returncode == 124


# -- 8. checks --------------------------------------------------------------------------------

def test_pause_of_an_unknown_group_warns(cli, spool_path):
    put_job(spool_path, "pending", "j", group="build")
    result = cli("pause", "--group", "biuld")
    assert result.exit_code == 0 and "warning" in result.stderr and "'build'" in result.stderr
    assert "warning" not in cli("pause", "--group", "build").stderr


def test_cwd_that_does_not_exist_here_warns_and_if_absent_needs_unique(cli, tmp_path):
    result = cli("enqueue", "--cwd", str(tmp_path / "nope"), "true")
    assert result.exit_code == 0 and "no such folder" in result.stderr
    assert "no such folder" not in cli("enqueue", "--cwd", str(tmp_path), "true").stderr
    refused = cli("enqueue", "--if-absent", "true")
    assert refused.exit_code == 2 and "--unique" in refused.stderr


@pytest.mark.parametrize("typo, suggestion", [("stauts", "status"), ("lsit", "list"), ("restrat", "restart"),
                                               ("folow", "follow")])
def test_a_mistyped_command_gets_a_suggestion(cli, typo, suggestion):
    result = cli(typo)
    assert result.exit_code == 2 and f"'{suggestion}'" in result.stderr


# -- 9. durations ----------------------------------------------------------------------------------

def test_durations_everywhere(cli, spool_path):
    job = read_job(spool_path, "pending", enqueue(cli, "--timeout", "10m", "--delay", "1h30m", "true"))
    assert job["timeout"] == 600
    assert cli("config", "set", "timeout", "10m").stdout == "timeout = 600\n"
    assert cli("config", "set", "kill_grace", "1m30s").stdout == "kill_grace = 90\n"
    assert cli("schedule", "add", "s", "true", "--every", "1h", "--timeout", "2m").exit_code == 0
    assert Spool(spool_path).get_schedule("s")["job"]["timeout"] == 120


# -- 10. parity and words -------------------------------------------------------------------------

def test_enqueue_hooks_and_schedule_group_unique_after(cli, spool_path):
    job = read_job(spool_path, "pending", enqueue(cli, "--on-success", "echo ok", "--on-failure", "echo again",
                                                  "--on-dead", "echo dead", "true"))
    assert (job["on_success"], job["on_failure"], job["on_dead"]) == ("echo ok", "echo again", "echo dead")
    put_job(spool_path, "completed", "setup")
    added = cli("schedule", "add", "nightly", "make", "--every", "1d", "--group", "ci", "--unique", "nightly",
                "--after", "setup")
    assert added.exit_code == 0, added.output
    template = Spool(spool_path).get_schedule("nightly")["job"]
    assert (template["group"], template["unique_key"], template["after"]) == ("ci", "nightly", ["setup"])


def test_every_option_of_every_command_has_help():
    missing = []

    def walk(command: click.Command, path: str) -> None:
        for param in command.params:
            if isinstance(param, click.Option) and not param.help:
                missing.append(f"{path} {param.opts[0]}")
        if isinstance(command, click.Group):
            context = click.Context(command)
            for name in command.list_commands(context):
                walk(command.get_command(context, name), f"{path} {name}")

    walk(main, "queuectl")
    assert missing == []


def test_aliases_of_pueue_and_task_spooler_habits(cli, spool_path):
    listed = cli("--help").stdout
    for shown in ("enqueue (add)", "list (ls)", "logs (log)", "follow", "kill", "clean", "restart", "rm"):
        assert shown in listed
    assert "list (show)" in cli("config", "--help").stdout
    job_id = enqueue(cli, "echo", "x")
    assert cli("add", "echo", "y").exit_code == 0
    assert job_id in cli("ls").stdout
    assert cli("log", job_id).exit_code == 0
    killed = cli("kill", job_id)
    assert killed.exit_code == 1 and "not running" in killed.stderr
    put_job(spool_path, "completed", "c1")
    put_job(spool_path, "dead", "d1")
    assert cli("rm", "c1").stdout == "c1: removed\n" and Spool(spool_path).find("c1") is None
    assert cli("rm", job_id).exit_code == 1  # pending: cancel it first
    assert cli("clean").stdout == "purged 1 job(s)\n" and Spool(spool_path).find("d1") is None
    assert cli("config", "show").stdout == cli("config", "list").stdout


# -- 11. logs ---------------------------------------------------------------------------------------

def test_logs_tail_and_the_closing_line(cli, spool_path):
    put_job(spool_path, "failed", "f", attempts=1, last_exit_code=3, next_run_at=iso(time.time() + 4.5),
            history=[{"attempt": 1, "exit_code": 3}])
    with open(os.path.join(spool_path, "logs", "f.log"), "w") as handle:
        handle.write("".join(f"line {n}\n" for n in range(10)))
    result = cli("logs", "f", "-n", "2")
    assert result.stdout == "line 8\nline 9\n"
    assert re.fullmatch(r"queuectl: exit 3 -> failed, retry in [45]s\n", result.stderr)
    put_job(spool_path, "completed", "c", last_exit_code=0, history=[{"attempt": 1, "exit_code": 0}])
    assert cli("logs", "c").stderr == "queuectl: exit 0 -> completed\n"


def test_logs_follow_exits_with_the_outcome(qc, spool_path, workers):
    workers.start()
    bad = qc("enqueue", "--max-retries", "0", "--", "sh", "-c", "echo failing; exit 3").stdout.strip()
    good = qc("enqueue", "echo", "fine").stdout.strip()
    followed_bad = qc("logs", "-f", bad, timeout=60)
    assert followed_bad.returncode == 1 and "failing" in followed_bad.stdout
    assert "exit 3 -> dead" in followed_bad.stderr
    followed_good = qc("follow", good, timeout=60)
    assert followed_good.returncode == 0 and "exit 0 -> completed" in followed_good.stderr


def test_cancel_all_with_state_and_group(cli, spool_path):
    put_job(spool_path, "pending", "a", group="x")
    put_job(spool_path, "pending", "b", group="y")
    put_job(spool_path, "failed", "c", group="x")
    put_job(spool_path, "completed", "d", group="x")
    assert cli("cancel", "--all", "--group", "x", "--state", "pending").exit_code == 0
    assert Spool(spool_path).find("a") == "dead" and Spool(spool_path).find("c") == "failed"
    assert cli("cancel", "--all").exit_code == 0
    assert [Spool(spool_path).find(job) for job in "bcd"] == ["dead", "dead", "completed"]
    assert cli("cancel").exit_code == 2


# -- 13. metrics and times ------------------------------------------------------------------------

def test_worker_list_json_times_are_iso(qc, spool_path, workers):
    workers.start()
    wait_until(lambda: Spool(spool_path).workers(), timeout=30)
    record = json.loads(qc("worker", "list", "--json").stdout)[0]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["started"])


def test_dashboard_counters_and_chart_do_not_fall_after_a_purge(spool_path):
    from queuectl.metrics import render
    from queuectl.snapshot import Scanner, throughput
    spool = Spool(spool_path)
    for number in range(3):
        put_job(spool_path, "completed", f"c{number}")
    scanner = Scanner(spool)
    assert "queuectl_completions_total 3" in render(spool, scanner)
    spool.purge(["completed"])
    text = render(spool, scanner)
    assert "queuectl_completions_total 3" in text and 'queuectl_jobs{state="completed"} 0' in text
    assert sum(bucket["completed"] for bucket in throughput(scanner.scan(), time.time())) == 3
    assert "_total" not in render(spool)  # one run cannot count: no counter that would fall
