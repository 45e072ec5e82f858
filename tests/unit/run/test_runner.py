"""runner.run in-process: one command, its log, environment, limits and outcome."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys

import pytest
from support import wait_until
from support.workers import process_alive

from queuectl.run import runner


@pytest.fixture
def run(tmp_path):
    """Run a command as attempt 2 of job `job-1`; returns (outcome, log text)."""
    log_path = tmp_path / "job.log"

    def run_command(command: str, *, interruption=lambda: None, **options):
        job = {"id": "job-1", "attempts": 2, "command": command,
               "cwd": options.pop("cwd", None), "env": options.pop("env", None)}
        settings = dict(timeout=None, kill_grace=0.3, pass_env=[], tail_lines=20, wait_step=0.05)
        settings.update(options)
        outcome = runner.run(job, log_path=str(log_path), worker="worker-a", spool_root=str(tmp_path),
                             interruption=interruption, **settings)
        return outcome, log_path.read_text()
    return run_command


def test_output_follows_a_header_and_stderr_is_kept(run):
    outcome, log = run("echo out; echo err >&2; exit 4")

    header, *output = log.splitlines()
    assert header.startswith("=== attempt 2 started ") and header.endswith(" by worker-a ===")
    assert output == ["out", "err"]
    assert (outcome.exit_code, outcome.signal, outcome.stderr_tail) == (4, None, ["err"])
    assert not outcome.succeeded
    assert outcome.started <= outcome.finished
    assert outcome.describe(None) == "exit code 4"


def test_each_attempt_appends_to_the_log(run):
    run("echo first")
    outcome, log = run("echo second")

    assert outcome.succeeded and outcome.describe(None) is None
    lines = log.splitlines()
    assert [line.split()[:2] for line in lines[::2]] == [["===", "attempt"]] * 2
    assert lines[1::2] == ["first", "second"]


@pytest.mark.parametrize("tail_lines, kept", [(3, ["line8", "line9", "line10"]), (0, [])])
def test_only_the_last_stderr_lines_are_kept(run, tail_lines, kept):
    outcome, log = run("for i in 1 2 3 4 5 6 7 8 9 10; do echo line$i >&2; done", tail_lines=tail_lines)

    assert outcome.stderr_tail == kept
    assert log.count("line") == 10


def test_the_job_runs_in_its_own_session_with_stdin_from_dev_null(run):
    outcome, log = run('set -- $(cat /proc/$$/stat); echo "$1 $5 $6"; readlink /proc/$$/fd/0')

    pid, group, session = log.splitlines()[1].split()
    assert pid == group == session
    assert log.splitlines()[2] == "/dev/null"


@pytest.mark.parametrize("cwd", [None, "/"], ids=["posix_spawn", "Popen (a job with a cwd)"])
def test_the_job_gets_no_descriptor_blocked_or_ignored_signal_of_the_worker(run, cwd):
    """Whichever way the shell starts (runner.start), it holds 0, 1, 2 only, blocks no signal and
    does not ignore SIGPIPE. (A signal ignored when the worker started, as under nohup, stays so.)"""
    leaked = os.open(os.devnull, os.O_RDONLY)
    os.set_inheritable(leaked, True)  # as a worker's parent may pass it, or a library open it
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    try:
        # Python itself ignores SIGPIPE: a job must not inherit that.
        assert signal.getsignal(signal.SIGPIPE) == signal.SIG_IGN
        # `exec grep ... /proc/self/status`: the masks the shell had, read by the shell's own
        # process. A grep forked to read /proc/$$/status may catch dash inside a fork of its
        # own, with every signal blocked for that moment (seen once: a test race, not the job's).
        outcome, log = run("ls /proc/$$/fd; exec grep -E '^Sig(Blk|Ign):' /proc/self/status", cwd=cwd)
    finally:
        os.close(leaked)
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    lines = log.splitlines()[1:]
    assert outcome.succeeded
    assert sorted(lines[:-2]) == ["0", "1", "2"]
    masks = dict(line.split(":\t") for line in lines[-2:])
    assert int(masks["SigBlk"], 16) == 0
    ignored = {bit + 1 for bit in range(64) if int(masks["SigIgn"], 16) >> bit & 1}
    # The C library's own signals (32 and 33 on glibc, which Python cannot name) may show as
    # ignored after posix_spawn; the library installs its handlers for them when it uses them.
    assert not ignored & signal.valid_signals()


def test_a_signal_ignored_when_the_worker_started_stays_ignored_in_the_job(tmp_path):
    """As under nohup: the shell inherits SIGHUP ignored, as from any parent, while every other
    signal (SIGPIPE included, which Python itself ignores) reaches it at its default."""
    script = ("import signal, sys\n"
              "signal.signal(signal.SIGHUP, signal.SIG_IGN)\n"  # before the worker's modules, as nohup does
              "from queuectl.run import runner\n"
              "job = {'id': 'job-1', 'attempts': 1, 'command': \"exec grep '^SigIgn:' /proc/self/status\"}\n"
              "outcome = runner.run(job, log_path=sys.argv[1], worker='w', spool_root=sys.argv[2], timeout=None,\n"
              "                     kill_grace=0.3, pass_env=[], tail_lines=5, interruption=lambda: None)\n"
              "assert outcome.succeeded, outcome\n")
    log = tmp_path / "job.log"
    subprocess.run([sys.executable, "-c", script, str(log), str(tmp_path)], check=True, timeout=60)
    mask = int(log.read_text().splitlines()[-1].split(":\t")[1], 16)
    ignored = {bit + 1 for bit in range(64) if mask >> bit & 1} & signal.valid_signals()
    assert ignored == {signal.SIGHUP}


def test_a_worker_with_over_a_thousand_open_files_still_runs_jobs(tmp_path):
    """The job's stderr pipe then gets a descriptor numbered 1024 or more, which select() cannot watch."""
    script = ("import os, resource, sys\n"
              "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
              "resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))\n"
              "held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]\n"
              "from queuectl.run import runner\n"
              "job = {'id': 'job-1', 'attempts': 1, 'command': 'echo to-stderr >&2; echo to-stdout'}\n"
              "outcome = runner.run(job, log_path=sys.argv[1], worker='w', spool_root=sys.argv[2], timeout=None,\n"
              "                     kill_grace=0.3, pass_env=[], tail_lines=5, interruption=lambda: None)\n"
              "assert outcome.succeeded and outcome.stderr_tail == ['to-stderr'], outcome\n")
    if resource.getrlimit(resource.RLIMIT_NOFILE)[1] < 1200:
        pytest.skip("this machine allows fewer than 1200 open files per process")
    log = tmp_path / "job.log"
    done = subprocess.run([sys.executable, "-c", script, str(log), str(tmp_path)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "to-stderr" in log.read_text() and "to-stdout" in log.read_text()


def test_the_environment_is_a_small_base_plus_what_is_asked_for(monkeypatch):
    monkeypatch.setattr(os, "environ", {"PATH": "/bin", "HOME": "/home/me", "LC_TIME": "C",
                                        "SECRET_TOKEN": "s3cret", "OTHER": "x"})
    job = {"id": "job-1", "env": {"GREETING": "hi", "QUEUECTL_JOB_ID": "forged"}}

    plain = runner.job_environment(job, 3, "/spool", [])
    passed = runner.job_environment(job, 3, "/spool", ["SECRET_TOKEN", "UNSET"])
    everything = runner.job_environment({"id": "job-1"}, 1, "/spool", ["*"])

    assert plain == {"PATH": "/bin", "HOME": "/home/me", "LC_TIME": "C", "GREETING": "hi",
                     "QUEUECTL_JOB_ID": "job-1", "QUEUECTL_ATTEMPT": "3", "QUEUECTL_SPOOL": "/spool",
                     "QUEUECTL_PROGRESS": "/spool/progress/job-1"}
    assert passed == {**plain, "SECRET_TOKEN": "s3cret"}
    assert {"SECRET_TOKEN", "OTHER"} <= set(everything)


def test_a_job_without_path_still_finds_commands(monkeypatch, run):
    monkeypatch.setattr(os, "environ", {})

    outcome, log = run("echo $PATH; ls / >/dev/null")

    assert outcome.succeeded, log
    assert log.splitlines()[1] == os.defpath


def test_cwd_and_env_of_the_job(run, tmp_path):
    outcome, log = run('echo "$(pwd) $GREETING $QUEUECTL_JOB_ID $QUEUECTL_ATTEMPT"',
                       cwd=str(tmp_path), env={"GREETING": "hi"})

    assert outcome.succeeded
    assert log.splitlines()[1] == f"{tmp_path} hi job-1 2"


def test_a_missing_cwd_is_a_failure_to_start(run, tmp_path):
    outcome, log = run("true", cwd=str(tmp_path / "missing"))

    assert outcome.exit_code is None and not outcome.succeeded
    assert outcome.error.startswith("cannot start: ")
    assert f"queuectl: {outcome.error}" in log
    assert outcome.describe(None) == outcome.error


@pytest.mark.parametrize("command, description", [
    ("no-such-command-queuectl-test", "exit code 127 (command not found)"),
    ("kill -TERM $$", "killed by signal SIGTERM"),
])
def test_failures_are_described(run, command, description):
    outcome, _ = run(command)

    assert not outcome.succeeded
    assert outcome.describe(None) == description


def test_a_timeout_kills_the_whole_group_after_the_grace(run, tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    command = f"trap '' TERM; sleep 1000 & echo $! > '{pid_file}'; wait; wait"

    outcome, _ = run(command, timeout=0.3)

    assert outcome.timed_out and outcome.signal == signal.SIGKILL
    assert outcome.describe(0.3) == "timed out after 0.3s"
    grandchild = int(pid_file.read_text())
    wait_until(lambda: not process_alive(grandchild), timeout=5, message="the grandchild to die")


def test_a_timeout_lets_the_job_clean_up_on_sigterm(run):
    outcome, log = run("trap 'echo cleaning up; exit 0' TERM; while :; do sleep 0.05; done",
                       timeout=0.3, kill_grace=10)

    assert outcome.timed_out and not outcome.succeeded
    assert outcome.exit_code == 0
    assert "cleaning up" in log


@pytest.mark.parametrize("reason, description", [
    ("cancel", "cancelled while running"), ("stop", "stopped by worker shutdown; retried later")])
def test_an_interruption_stops_the_job(run, tmp_path, reason, description):
    started = tmp_path / "started"

    outcome, _ = run(f"touch '{started}'; exec sleep 30",
                     interruption=lambda: reason if started.exists() else None)

    assert outcome.interrupted == reason and not outcome.succeeded
    assert outcome.signal == signal.SIGTERM
    assert outcome.describe(None) == description


def test_a_background_child_holding_stderr_does_not_hold_up_the_run_and_ends_with_it(run, tmp_path):
    pid_file = tmp_path / "child.pid"

    outcome, log = run(f"sleep 30 & echo $! > '{pid_file}'; echo bye >&2")

    child = int(pid_file.read_text())
    try:
        assert outcome.succeeded and "bye" in log
        # A finished job leaves nothing running: its group got SIGTERM when the shell exited.
        wait_until(lambda: not process_alive(child), timeout=5, message="the background child to end")
    finally:
        _kill_quietly(child)


def test_a_leftover_that_ignores_sigterm_gets_sigkill_after_the_grace(run, tmp_path):
    pid_file = tmp_path / "child.pid"

    outcome, _ = run(f"(trap '' TERM; exec sleep 1000) & echo $! > '{pid_file}'; exit 3", kill_grace=0.3)

    child = int(pid_file.read_text())
    try:
        assert outcome.exit_code == 3
        wait_until(lambda: not process_alive(child), timeout=5, message="the stubborn child to be killed")
    finally:
        _kill_quietly(child)


def test_a_process_that_left_the_jobs_session_is_left_alone(run, tmp_path):
    pid_file = tmp_path / "daemon.pid"

    # The job waits until the daemon has its own session (field 6 of /proc/PID/stat), as README says.
    outcome, _ = run(f"setsid sleep 30 < /dev/null > /dev/null 2>&1 & echo $! > '{pid_file}'; "
                     f"while [ \"$(cut -d' ' -f6 /proc/$!/stat)\" != $! ]; do sleep 0.01; done")

    daemon = int(pid_file.read_text())
    try:
        assert outcome.succeeded and process_alive(daemon)
    finally:
        _kill_quietly(daemon)


def _kill_quietly(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def test_kill_leftovers_ends_only_the_jobs_processes(tmp_path):
    spool_root = str(tmp_path / "spool")
    group = subprocess.Popen(["/bin/sh", "-c", "sleep 30 & exec sleep 30"], start_new_session=True,
                             env={"PATH": os.defpath, "QUEUECTL_JOB_ID": "job-1", "QUEUECTL_SPOOL": spool_root})
    try:
        wait_until(lambda: len(_group_members(group.pid)) == 2, message="both sleeps to start")

        assert runner.kill_leftovers("job-2", spool_root) == 0
        assert runner.kill_leftovers("job-1", spool_root + "-other") == 0
        assert runner.kill_leftovers("job-1", spool_root) == 2

        assert group.wait(timeout=10) == -signal.SIGKILL
        wait_until(lambda: not [pid for pid in _group_members(group.pid) if process_alive(pid)],
                   message="the background sleep to die")
    finally:
        group.kill()
        group.wait()


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                if int(handle.read().rsplit(b")", 1)[1].split()[2]) == pgid:
                    members.append(int(entry))
        except (OSError, ValueError, IndexError):
            continue
    return members


def test_an_error_in_the_workers_duties_ends_the_command_instead_of_leaving_it_unwatched(run, tmp_path):
    marker = tmp_path / "pid"

    def failing():
        if marker.exists() and marker.read_text().strip():
            raise RuntimeError("the worker's periodic duty failed")
        return None
    with pytest.raises(RuntimeError):
        run(f"echo $$ > {marker}; exec sleep 30", interruption=failing)
    pid = int(marker.read_text())
    assert not process_alive(pid)
