"""`queuectl shell-init` (queuectl/cli/shell.py): a shell function that enqueues with one `mv` per job.

The function is defined by `eval "$(queuectl shell-init)"` in a real shell
(each POSIX shell found here) and called there; its files are checked by the
JSON Schema and queuectl's validation, and run by a real worker. What it
saves, the programs the script would start, is checked by putting stand-ins
for them first on PATH.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time

import pytest
from jsonschema import Draft202012Validator
from support import run_queuectl
from support.shells import SHELLS, id_clock

from queuectl import Spool
from queuectl.core.config import defaults
from queuectl.core.job import build, loads

QUEUECTL = f"{shlex.quote(sys.executable)} -m queuectl"


def in_shell(shell: str, spool_path, body: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`body` run by `shell` after the function was defined for `spool_path`."""
    script = f'eval "$({QUEUECTL} --spool {shlex.quote(str(spool_path))} shell-init)" || exit 9\n{body}'
    return subprocess.run([shell, "-c", script], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


@pytest.fixture
def private_spool(spool_path):
    Spool(spool_path)
    return spool_path


@pytest.mark.parametrize("shell", SHELLS)
def test_the_functions_jobs_pass_the_schema_and_run(private_spool, shell, qc):
    schema = Draft202012Validator(json.loads(run_queuectl(private_spool, "schema").stdout))
    before = time.time()
    done = in_shell(shell, private_spool, 'queuectl_enqueue -p 2 "echo one" && queuectl_enqueue "echo \\"two\\""')
    assert done.returncode == 0, done.stderr
    ids = done.stdout.split()
    # The clock part is in /proc/uptime's steps of 10 ms: two ids of one step may sort either way.
    assert len(ids) == 2 and id_clock(ids[0]) <= id_clock(ids[1])
    for job_id in ids:
        with open(os.path.join(private_spool, "pending", job_id + ".json"), "rb") as handle:
            job = loads(handle.read())
        assert not list(schema.iter_errors(job))
        build(job, defaults(), state="pending")
        # The clock part of the id is the wall clock, as queuectl's own ids are.
        assert int(before) * 1000 - 50 <= id_clock(job_id) <= time.time() * 1000 + 50
    assert qc("worker", "start", "--until-empty").returncode == 0
    assert [Spool(private_spool).get(job_id)["state"] for job_id in ids] == ["completed", "completed"]
    assert Spool(private_spool).get(ids[0])["priority"] == 2


def test_each_job_starts_no_program_but_mv(private_spool, tmp_path):
    """find, date, od, tr and sync (the script's other programs) are stand-ins that fail and say so."""
    run_queuectl(private_spool, "config", "set", "durable", "false")
    stand_ins = tmp_path / "bin"
    stand_ins.mkdir()
    called = tmp_path / "called"
    for program in ("find", "date", "od", "tr", "sync", "iconv"):
        path = stand_ins / program
        path.write_text(f"#!/bin/sh\necho {program} >> {shlex.quote(str(called))}\nexit 1\n")
        path.chmod(0o755)
    body = f'PATH={shlex.quote(str(stand_ins))}:$PATH\nqueuectl_enqueue true && queuectl_enqueue "echo x" && queuectl_enqueue -g g1 false'
    done = in_shell("sh", private_spool, body)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.split()) == 3
    assert not called.exists(), called.read_text()
    assert len(os.listdir(os.path.join(private_spool, "pending"))) == 3


def test_another_spool_named_at_a_call_is_checked_in_full(private_spool, tmp_path):
    other = tmp_path / "other"
    Spool(str(other))
    os.chmod(other / "pending", 0o777)
    done = in_shell("sh", private_spool, f"queuectl_enqueue --spool {shlex.quote(str(other))} true")
    assert done.returncode == 1
    assert "writable by group or others" in done.stderr and done.stderr.count("\n") == 1
    assert os.listdir(other / "pending") == []


def test_a_spool_others_can_write_to_gets_no_function(private_spool):
    os.chmod(os.path.join(private_spool, "tmp"), 0o777)
    done = run_queuectl(private_spool, "shell-init")
    assert done.returncode == 1 and done.stdout == ""
    assert "writable by group or others" in done.stderr and done.stderr.count("\n") == 1


@pytest.mark.parametrize("name", ["a b", "x;rm", "", "1abc", "naïve"])
def test_a_function_name_the_shell_would_not_take_is_one_line(private_spool, name):
    done = run_queuectl(private_spool, "shell-init", "--name", name)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines()[-1].startswith("Error: Invalid value for --name: ")


def test_the_name_and_paths_are_quoted_for_the_shell(tmp_path):
    spool_path = tmp_path / "it's a $pool"
    Spool(str(spool_path))
    done = in_shell("sh", spool_path, "queuectl_enqueue 'echo quoted'")
    assert done.returncode == 0, done.stderr
    assert len(os.listdir(spool_path / "pending")) == 1


def test_a_newline_in_the_spools_path_is_one_line_and_runs_nothing_at_eval(tmp_path):
    """The function's comment shows the path: a newline there would end the comment and run the rest."""
    witness = tmp_path / "injected"
    spool_path = tmp_path / f"a\ntouch {witness}\nb"
    Spool(str(spool_path))
    done = run_queuectl(str(spool_path), "shell-init")
    assert done.returncode == 1 and done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1 and "newline" in done.stderr
    evaluated = in_shell("sh", spool_path, "echo evaluated")  # eval of nothing: status 0
    assert evaluated.stdout == "evaluated\n" and "newline" in evaluated.stderr and not witness.exists()
