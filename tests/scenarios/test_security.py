"""Nothing leaves the spool: ids and names cannot make a path outside it, the spool is private
(SPEC section 8), symlinks planted in it are never followed, and jobs do not see the worker's secrets.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import put_job, run_queuectl
from support.workers import enqueue, read_lines

from queuectl import InvalidJob, Spool
from queuectl.core import lifecycle
from queuectl.core.job import is_valid_id

ESCAPES = ["../x", "../../etc/passwd", "/etc/passwd", "a/b", "a\0b", "", ".", "..", ".hidden", "x" * 129,
           "a b", "caf\u00e9", "x\n", "..%2f", "~root"]


def listing(folder) -> set[str]:
    return {os.path.join(root, name) for root, folders, names in os.walk(folder) for name in folders + names}


@pytest.mark.parametrize("job_id", ESCAPES)
def test_an_id_that_could_leave_the_spool_is_refused_by_every_call(spool, job_id):
    calls = [spool.log_path, spool.find, spool.get, spool.read_log, lambda i: lifecycle.cancel(spool, i),
             lambda i: lifecycle.retry(spool, i), lambda i: lifecycle.dlq_retry(spool, i),
             lambda i: spool.path("pending", i), lambda i: spool.enqueue("true", id=i)]
    for call in calls:
        with pytest.raises(InvalidJob, match="invalid id"):
            call(job_id)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=140) | st.sampled_from(ESCAPES))
def test_any_id_names_a_file_inside_the_spool_or_is_refused(job_id):
    spool = Spool.__new__(Spool)
    spool.root = "/spool"
    try:
        paths = [spool.log_path(job_id), spool.path("pending", job_id)]
    except InvalidJob:
        assert not is_valid_id(job_id)
        return
    assert is_valid_id(job_id)
    for path in paths:
        assert os.path.dirname(os.path.normpath(path)) in ("/spool/logs", "/spool/pending")
        assert os.path.basename(path).startswith(job_id)


@pytest.mark.parametrize("command", [
    ["show", "../x"], ["logs", "../../etc/passwd"], ["logs", "/etc/passwd"], ["cancel", "../x"],
    ["retry", "../x"], ["dlq", "retry", "../x"], ["wait", "../x"], ["enqueue", "--id", "../x", "true"],
    ["enqueue", '{"id": "/etc/cron.d/x", "command": "true"}'],
])
def test_the_cli_refuses_escaping_ids_in_one_line_and_creates_nothing(spool_path, tmp_path, command):
    Spool(spool_path)
    before = listing(tmp_path)

    result = run_queuectl(spool_path, *command)

    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("queuectl: error: ") and result.stderr.count("\n") == 1
    assert "invalid id" in result.stderr
    assert listing(tmp_path) == before


def test_a_nul_in_an_id_is_refused(cli):
    for command in (["show", "a\0b"], ["logs", "a\0b"], ["enqueue", "--id", "a\0b", "true"]):
        result = cli(*command)
        assert result.exit_code == 1 and "invalid id" in result.stderr


# -- symlinks planted in the spool ---------------------------------------------

@pytest.fixture
def secret(tmp_path):
    path = tmp_path / "secret.txt"
    path.write_text("the password\n")
    os.utime(path, (1_000_000_000, 1_000_000_000))
    return path


def untouched(secret) -> bool:
    return secret.read_text() == "the password\n" and os.stat(secret).st_mtime == 1_000_000_000


@pytest.mark.parametrize("follow", [[], ["--follow"]], ids=["logs", "logs --follow"])
def test_logs_never_reads_through_a_symlink(spool_path, spool, secret, qc, follow):
    put_job(spool_path, "completed", "job")
    os.symlink(secret, spool.log_path("job"))

    result = qc("logs", *follow, "job")

    assert result.returncode == 1 and "the password" not in result.stdout + result.stderr
    assert result.stderr.count("\n") == 1


def test_a_worker_never_writes_a_log_through_a_symlink(spool_path, spool, secret, workers):
    job_id = enqueue(spool_path, {"id": "job", "command": "echo written", "max_retries": 0})
    os.symlink(secret, spool.log_path(job_id))

    assert workers.start("--burst").wait() == 0

    assert untouched(secret)
    job = spool.get(job_id)
    assert job["state"] == "dead" and job["last_error"].startswith("cannot open its log")


def test_a_symlinked_state_folder_is_refused(spool_path, tmp_path, qc):
    Spool(spool_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    os.rmdir(os.path.join(spool_path, "completed"))
    os.symlink(elsewhere, os.path.join(spool_path, "completed"))

    result = qc("status")

    assert result.returncode == 1 and "symlinks are not followed" in result.stderr


# -- a private spool --------------------------------------------------------------

def test_a_new_spool_is_private_whatever_the_umask(tmp_path):
    spool_path = str(tmp_path / "new" / "spool")
    created = subprocess.run(
        [sys.executable, "-c", "import os, sys; os.umask(0); from queuectl.cli import main; main()",
         "--spool", spool_path, "enqueue", "--id", "job", "echo hi"],
        capture_output=True, text=True, timeout=60)
    assert created.returncode == 0, created.stderr
    assert run_queuectl(spool_path, "worker", "start", "--burst").returncode == 0

    for root, _folders, names in os.walk(spool_path):
        assert stat.S_IMODE(os.stat(root).st_mode) == 0o700, root
        for name in names:
            mode = stat.S_IMODE(os.lstat(os.path.join(root, name)).st_mode)
            assert mode & 0o077 == 0, (os.path.join(root, name), oct(mode))


@pytest.mark.parametrize("folder", [".", "pending", "workers"])
def test_a_spool_others_can_write_to_is_refused_unless_allowed(spool_path, folder):
    Spool(spool_path)
    os.chmod(os.path.join(spool_path, folder), 0o770)

    refused = run_queuectl(spool_path, "enqueue", "true")

    assert refused.returncode == 1 and refused.stderr.count("\n") == 1
    assert "writable by group or others" in refused.stderr and "--allow-shared-spool" in refused.stderr
    assert Spool(spool_path, allow_shared=True).counts()["pending"] == 0
    allowed = run_queuectl(spool_path, "--allow-shared-spool", "enqueue", "true")
    assert allowed.returncode == 0, allowed.stderr


@pytest.mark.skipif(os.getuid() != 0, reason="giving a folder to another user needs root")
def test_a_spool_owned_by_another_user_is_refused_unless_allowed(spool_path):
    Spool(spool_path)
    os.chown(spool_path, 65534, 65534)

    refused = run_queuectl(spool_path, "status")

    assert refused.returncode == 1 and "belongs to another user" in refused.stderr
    assert run_queuectl(spool_path, "--allow-shared-spool", "status").returncode == 0


def test_a_spool_path_that_is_a_file_is_refused(tmp_path):
    path = tmp_path / "file"
    path.write_text("not a spool")

    for spool_path in (str(path), str(path / "spool")):
        result = run_queuectl(spool_path, "status")
        assert result.returncode == 1 and result.stderr.count("\n") == 1 and "not a directory" in result.stderr


# -- the job's environment ----------------------------------------------------------

def test_a_job_does_not_see_the_workers_secrets_unless_asked(spool_path, spool, workers, tmp_path):
    secrets = {"SECRET_TOKEN": "hunter2", "AWS_SECRET_ACCESS_KEY": "abc", "DATABASE_URL": "postgres://x"}
    seen = tmp_path / "env.txt"
    enqueue(spool_path, {"id": "plain", "command": f"env > {seen}"})
    assert workers.start("--burst", env=secrets).wait() == 0
    environment = dict(line.split("=", 1) for line in read_lines(seen) if "=" in line)
    assert not set(secrets) & set(environment)
    assert environment["QUEUECTL_JOB_ID"] == "plain" and environment["QUEUECTL_ATTEMPT"] == "1"

    spool.set_config("pass_env", "SECRET_TOKEN")
    enqueue(spool_path, {"id": "asked", "command": f"env > {seen}", "env": {"JOB_OWN": "mine"}})
    assert workers.start("--burst", env=secrets).wait() == 0
    environment = dict(line.split("=", 1) for line in read_lines(seen) if "=" in line)
    assert environment["SECRET_TOKEN"] == "hunter2" and environment["JOB_OWN"] == "mine"
    assert "AWS_SECRET_ACCESS_KEY" not in environment and "DATABASE_URL" not in environment
