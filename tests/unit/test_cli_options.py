"""The first hour's papercuts (issue 11): enqueue --cwd/--env/--json, --spool after the subcommand,
cancel's message, and the listings' --limit 0 / --all (see also test_cli.py)."""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner
from support import put_job, read_job, run_queuectl, spool_files, wait_until

from queuectl import Spool
from queuectl.cli import main
from queuectl.core.errors import QueueError
from queuectl.supervisor import run_workers

# -- enqueue --cwd, --env, --json ---------------------------------------------------

def test_enqueue_with_cwd_env_and_json(cli, spool_path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.mkdir(tmp_path / "work")
    result = cli("enqueue", "--cwd", "work", "--env", "A=1", "--env", "B=x=y", "--env", "EMPTY=", "--json",
                 '{"id": "j", "command": "pwd", "env": {"A": "0", "KEEP": "k"}}')
    assert result.exit_code == 0, result.output
    stored = json.loads(result.stdout)  # one JSON document: the job as stored
    assert stored == read_job(spool_path, "pending", "j")
    assert stored["cwd"] == str(tmp_path / "work")  # a relative folder is taken from where enqueue ran
    assert stored["env"] == {"A": "1", "KEEP": "k", "B": "x=y", "EMPTY": ""}


def test_enqueue_command_form_takes_the_options_too(cli, spool_path):
    result = cli("enqueue", "-c", "make", "--cwd", "/srv", "--env", "MODE=fast")
    job = read_job(spool_path, "pending", result.stdout.strip())
    assert (job["command"], job["cwd"], job["env"]) == ("make", "/srv", {"MODE": "fast"})


def test_enqueue_batch_json_is_one_array(cli, spool_path):
    lines = '{"id": "a", "command": "x"}\n{"id": "b", "command": "y", "env": {"K": "v"}}\n'
    result = cli("enqueue", "-", "--json", "--env", "Z=1", input=lines)
    assert result.exit_code == 0, result.output
    stored = json.loads(result.stdout)
    assert [job["id"] for job in stored] == ["a", "b"]
    assert [job["env"] for job in stored] == [{"Z": "1"}, {"K": "v", "Z": "1"}]
    assert stored == [read_job(spool_path, "pending", job_id) for job_id in ("a", "b")]


@pytest.mark.parametrize("pair", ["NOEQUALS", "=value"])
def test_a_malformed_env_pair_is_a_usage_error(cli, spool_path, pair):
    Spool(spool_path)
    before = spool_files(spool_path)
    result = cli("enqueue", "--env", pair, "echo hi")
    assert result.exit_code == 2 and result.stdout == "" and "is not KEY=VALUE" in result.stderr
    assert "Traceback" not in result.stderr
    assert spool_files(spool_path) == before


def test_an_env_name_the_job_format_refuses_is_refused(cli, spool_path):
    result = cli("enqueue", "--env", "A\0B=1", "echo hi")
    assert result.exit_code in (1, 2) and os.listdir(os.path.join(spool_path, "pending")) == []


def test_a_job_runs_in_its_cwd_with_its_env(qc, spool_path, tmp_path):
    os.mkdir(tmp_path / "here")
    job_id = qc("enqueue", "--cwd", str(tmp_path / "here"), "--env", "GREETING=hello there",
                'pwd; echo "$GREETING"').stdout.strip()
    assert qc("worker", "start", "--burst").returncode == 0
    assert read_job(spool_path, "completed", job_id)["state"] == "completed"
    assert qc("logs", job_id).stdout.splitlines()[1:] == [str(tmp_path / "here"), "hello there"]


# -- listings: --limit 0 / --all, and a note on stderr when rows were cut (see also test_cli.py) ----

def test_dlq_list_says_when_rows_were_cut(cli, spool_path):
    for number in range(3):
        put_job(spool_path, "dead", f"d{number}", last_error="exit code 1")
    cut = cli("dlq", "list", "--json", "--limit", "2")
    assert [job["id"] for job in json.loads(cut.stdout)] == ["d2", "d1"]
    assert cut.stderr == "queuectl: showing 2 of 3 dead jobs; --limit 0 for all\n"
    for every in (["--all"], ["--limit", "0"]):
        whole = cli("dlq", "list", *every)
        assert len(whole.stdout.splitlines()) == 4 and whole.stderr == ""


# -- --spool wherever a user types it -------------------------------------------------

def _queuectl(*args, input=None):
    """The CLI with no --spool before the subcommand, and a $QUEUECTL_SPOOL that must not be used."""
    return CliRunner().invoke(main, list(args), input=input, catch_exceptions=False,
                              env={"QUEUECTL_SPOOL": "/nonexistent/not-this-one"})


def test_spool_after_the_subcommand(spool_path):
    put_job(spool_path, "dead", "broken", last_error="exit code 2")
    put_job(spool_path, "pending", "waiting")
    listed = _queuectl("list", "--spool", spool_path, "--json")
    assert listed.exit_code == 0, listed.output
    assert [job["id"] for job in json.loads(listed.stdout)] == ["waiting", "broken"]
    assert json.loads(_queuectl("dlq", "list", "--spool", spool_path, "--json").stdout)[0]["id"] == "broken"
    assert _queuectl("config", "set", "--spool", spool_path, "max-retries", "7").exit_code == 0
    assert Spool(spool_path).config["max_retries"] == 7
    assert _queuectl("dlq", "--spool", spool_path, "retry", "broken").stdout == "broken: dead -> pending\n"
    assert _queuectl("enqueue", "echo hi", "--spool", spool_path).exit_code == 0
    assert len(os.listdir(os.path.join(spool_path, "pending"))) == 3


def test_worker_start_takes_spool_after_the_subcommand(spool_path):
    put_job(spool_path, "pending", "quick", command="true")
    result = _queuectl("worker", "start", "--burst", "--spool", spool_path)
    assert result.exit_code == 0, result.output
    assert read_job(spool_path, "completed", "quick")["state"] == "completed"


def test_the_subcommands_spool_wins(spool_path, tmp_path):
    other = str(tmp_path / "other")
    result = _queuectl("--spool", other, "enqueue", "--spool", spool_path, "echo hi")
    assert result.exit_code == 0
    assert len(os.listdir(os.path.join(spool_path, "pending"))) == 1 and not os.path.exists(other)


def test_allow_shared_spool_after_the_subcommand(spool_path):
    Spool(spool_path)
    os.chmod(spool_path, 0o770)
    refused = _queuectl("status", "--spool", spool_path)
    assert refused.exit_code == 1 and "--allow-shared-spool" in refused.stderr
    assert _queuectl("status", "--spool", spool_path, "--allow-shared-spool").exit_code == 0


# -- worker start --burst and --until-empty ---------------------------------------------

def test_burst_exits_while_a_retry_waits_and_until_empty_waits_for_it(qc, spool_path, tmp_path):
    marker = tmp_path / "failed-once"
    for key, value in (("backoff_base", "1.5"), ("recovery_interval", "1")):
        qc("config", "set", key, value)
    flaky = qc("enqueue", "--id", "flaky", f"test -e {marker} || {{ touch {marker}; exit 1; }}")
    later = qc("enqueue", "--id", "later", "--delay", "1s", "true")
    assert flaky.returncode == later.returncode == 0
    burst = qc("worker", "start", "--burst")
    assert burst.returncode == 0, burst.stderr
    # Nothing was due any more: the retry waits in failed/, the scheduled job in pending/.
    assert read_job(spool_path, "failed", "flaky")["attempts"] == 1
    assert os.path.exists(os.path.join(spool_path, "pending", "later.json"))
    drained = qc("worker", "start", "--until-empty")
    assert drained.returncode == 0, drained.stderr
    assert read_job(spool_path, "completed", "flaky")["attempts"] == 2
    assert read_job(spool_path, "completed", "later")["state"] == "completed"
    for folder in ("pending", "failed", "processing"):
        assert os.listdir(os.path.join(spool_path, folder)) == []


def test_until_empty_with_several_workers(qc, spool_path):
    for index in range(4):
        qc("enqueue", "--id", f"j{index}", "--delay", "1s", "true")
    drained = qc("worker", "start", "--count", "2", "--until-empty")
    assert drained.returncode == 0, drained.stderr
    assert sorted(os.listdir(os.path.join(spool_path, "completed"))) == [f"j{index}.json" for index in range(4)]


def test_until_empty_waits_for_a_job_another_worker_runs(workers, spool_path, tmp_path):
    started, release, marker = tmp_path / "started", tmp_path / "release", tmp_path / "failed-once"
    Spool(spool_path).enqueue(
        f"touch {started}; while ! test -e {release}; do sleep 0.05; done; "
        f"test -e {marker} || {{ touch {marker}; exit 1; }}", id="slow")
    workers.start()
    wait_until(started.exists, message="the job to start")
    drainer = workers.start("--until-empty")
    workers.record_of(drainer)
    # The job is in processing/ and may still fail and come back: the drainer must not leave now.
    release.touch()
    assert drainer.wait() == 0
    assert read_job(spool_path, "completed", "slow")["attempts"] == 2


# -- cancel tells the truth ---------------------------------------------------------------

@pytest.mark.parametrize("state", ["completed", "dead"])
def test_cancel_of_a_finished_job_says_which_jobs_can_be_cancelled(cli, spool_path, state):
    put_job(spool_path, state, "over")
    result = cli("cancel", "over")
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr == (f"queuectl: error: cannot cancel job 'over': it is {state} already "
                             f"(pending, failed or running jobs can be cancelled)\n")


def test_cancel_of_a_job_claimed_while_cancelling_asks_its_worker(spool_path):
    """The job was pending when cancel looked and in processing/ when it came to lock it."""
    from queuectl.core import lifecycle

    put_job(spool_path, "processing", "raced", attempts=1)
    spool = Spool(spool_path)
    real_find = spool.find
    looks = []

    def find(job_id):
        looks.append(job_id)
        return "pending" if len(looks) == 1 else real_find(job_id)
    spool.find = find
    assert lifecycle.cancel(spool, "raced") == "processing"
    assert "raced" in os.listdir(os.path.join(spool_path, "cancels"))


@pytest.mark.parametrize("command", [("worker", "start"), ("demo",)])
def test_an_absurd_worker_count_is_one_line_and_starts_nothing(spool_path, command):
    """Refused before a fork: forking 999999 workers runs the machine out of processes."""
    done = run_queuectl(spool_path, *command, "--count", "999999")
    assert done.returncode == 2 and "999999 is not in the range 1<=x<=1024" in done.stderr
    assert Spool(spool_path).workers() == []


def test_run_workers_refuses_an_absurd_count_too(spool):
    with pytest.raises(QueueError, match="1 to 1024 workers, not 5000"):
        run_workers(spool, count=5000, burst=True)
