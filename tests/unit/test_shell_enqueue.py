"""bin/queuectl-enqueue: the shell's way to drop a job in (docs/spool-format.md, "Dropping a job in").

The script is run as a real process under every POSIX shell found here
(dash, bash, busybox ash), against a real spool; its files are checked by
the JSON Schema (`queuectl schema`) and by queuectl's own validation, and
run by real workers.
"""

from __future__ import annotations

import json
import os
import pathlib
import shlex
import shutil
import subprocess
import sys
import time
import zipfile

import pytest
from jsonschema import Draft202012Validator
from support import put_job, run_queuectl, wait_until
from support.shells import SHELLS, id_clock

from queuectl import Spool
from queuectl.core.config import defaults
from queuectl.core.job import build, loads, parse_time

SCRIPT = str(pathlib.Path(__file__).resolve().parents[2] / "bin" / "queuectl-enqueue")
ROOT = str(pathlib.Path(SCRIPT).parents[1])
HOSTILE = [
    'say "hi" to \'them\'',
    "back\\slash \\\\ and \\n \\u0041 escapes that must stay text",
    "lines\nand\ttabs\r\nand a form\ffeed",
    "every control character: " + "".join(chr(code) for code in range(1, 32)) + "\x7f",
    "UTF-8: naïve café — 日本語 ✓ 😀 \u0085 \u2028",
    "$HOME `id` $(id) * ? [a] ~ & ; | < > %s %d %% {} -- -n",
    "  leading and trailing blanks  ",
    "-starts with a dash",
    "x" * 20000 + '"\\' * 500,
]


def run(shell, *args, env=None, spool=None):
    """The script under `shell` (`sh -c`'s way: `shell SCRIPT ARGS`), with `--spool` when given."""
    argv = [shell, SCRIPT] if shell else [SCRIPT]
    if spool is not None:
        argv += ["--spool", str(spool)]
    return subprocess.run(argv + list(args), capture_output=True, env={**os.environ, **(env or {})}, timeout=60)


def dropped(spool_path):
    """The job files in pending/ and anything left in tmp/."""
    pending = sorted(os.listdir(os.path.join(spool_path, "pending")))
    staged = sorted(os.listdir(os.path.join(spool_path, "tmp")))
    return pending, staged


def job_of(spool_path, result):
    assert result.returncode == 0, result.stderr
    job_id = result.stdout.decode().strip()
    with open(os.path.join(spool_path, "pending", job_id + ".json"), "rb") as handle:
        data = handle.read()
    return job_id, data


@pytest.fixture
def private_spool(spool_path):
    Spool(spool_path)
    return spool_path


@pytest.fixture(scope="module")
def validator():
    schema = subprocess.run([sys.executable, "-m", "queuectl", "schema"], capture_output=True, check=True).stdout
    return Draft202012Validator(json.loads(schema))


def nothing_left(spool_path):
    assert dropped(spool_path) == ([], [])


# -- the files it writes ----------------------------------------------------------

@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("options, expected", [
    ([], {}),
    (["-p", "5", "-g", "nightly_1", "--max-retries", "0"], {"priority": 5, "group": "nightly_1", "max_retries": 0}),
    (["--priority=-007", "--group=a-b"], {"priority": -7, "group": "a-b"}),
    (["--at", "2031-01-02T03:04:05Z"], {"run_at": "2031-01-02T03:04:05Z"}),
    (["--id", "my.job_1-A"], {"id": "my.job_1-A"}),
])
def test_its_files_pass_the_schema_and_queuectls_validation(private_spool, validator, shell, options, expected):
    job_id, data = job_of(private_spool, run(shell, *options, "--", "echo hi", spool=private_spool))
    document = loads(data)
    assert list(validator.iter_errors(document)) == []
    built = build(document, defaults(), stem=job_id)
    assert built["id"] == job_id == document["id"]
    assert built["command"] == "echo hi"
    for key, value in expected.items():
        assert document[key] == value
    assert dropped(private_spool)[1] == []  # nothing staged is left behind


@pytest.mark.parametrize("shell", SHELLS)
def test_delay_sets_run_at_that_many_seconds_ahead(private_spool, shell):
    before = time.time()
    _, data = job_of(private_spool, run(shell, "--delay", "3600", "true", spool=private_spool))
    run_at = parse_time(json.loads(data)["run_at"])
    assert before + 3600 - 1 <= run_at <= time.time() + 3600 + 1


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("text", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_command_text_is_written_byte_for_byte(private_spool, validator, shell, text):
    _, data = job_of(private_spool, run(shell, "--", text, spool=private_spool))
    document = json.loads(data.decode("utf-8"))
    assert document["command"] == text
    assert validator.is_valid(document)


@pytest.mark.parametrize("shell", SHELLS)
def test_several_words_are_joined_with_spaces(private_spool, shell):
    _, data = job_of(private_spool, run(shell, "echo", "a b", "c", spool=private_spool))
    assert json.loads(data)["command"] == "echo a b c"


@pytest.mark.parametrize("shell", SHELLS)
def test_hostile_commands_run_by_a_worker_print_their_text_byte_for_byte(private_spool, qc, shell):
    """`printf '%s' <the text, quoted>` as the job: its output must be the text, byte for byte."""
    ids = {}
    for text in HOSTILE:
        job_id, _ = job_of(private_spool, run(shell, "--", "printf '%s' " + shlex.quote(text), spool=private_spool))
        ids[job_id] = text
    ran = qc("worker", "start", "--burst", "--quiet", timeout=120)
    assert ran.returncode == 0, ran.stderr
    for job_id, text in ids.items():
        assert os.path.exists(os.path.join(private_spool, "completed", job_id + ".json")), job_id
        with open(os.path.join(private_spool, "logs", job_id + ".log"), "rb") as handle:
            header, output = handle.read().split(b"\n", 1)
        assert header.startswith(b"=== attempt 1 started")
        assert output == text.encode("utf-8")


def test_a_running_worker_adopts_the_job_at_once(private_spool, workers):
    workers.start("--quiet")
    workers.wait_ready()
    result = run(None, "--id", "adopted", "echo done", spool=private_spool)
    assert result.returncode == 0 and result.stdout == b"adopted\n", result.stderr
    wait_until(lambda: os.path.exists(os.path.join(private_spool, "completed", "adopted.json")),
               message="the dropped-in job to complete")
    shown = run_queuectl(private_spool, "show", "adopted", "--json")
    assert json.loads(shown.stdout)["command"] == "echo done"


# -- ids ---------------------------------------------------------------------------

def test_concurrent_shells_get_distinct_ids(private_spool):
    """20 shells at once, 15 jobs each: 300 distinct ids, 300 files, nothing left in tmp/."""
    loop = f"for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15; do {shlex.quote(SCRIPT)} --spool " \
           f"{shlex.quote(private_spool)} \"job $i\" || exit 1; done"
    shells = [subprocess.Popen(["sh", "-c", loop], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
              for _ in range(20)]
    ids = []
    for shell in shells:
        out, err = shell.communicate(timeout=120)
        assert shell.returncode == 0, err
        ids += out.decode().split()
    assert len(ids) == 300
    assert len(set(ids)) == 300
    pending, staged = dropped(private_spool)
    assert sorted(pending) == sorted(f"{job_id}.json" for job_id in ids)
    assert staged == []


def test_generated_ids_sort_by_time_like_queuectls_own(private_spool, qc):
    first = qc("enqueue", "true").stdout.strip()
    _, _ = job_of(private_spool, run(None, "true", spool=private_spool))
    dropped_id = job_of(private_spool, run(None, "true", spool=private_spool))[0]
    last = qc("enqueue", "true").stdout.strip()
    assert first < dropped_id < last


@pytest.mark.parametrize("state", ["pending", "completed", "dead"])
def test_an_id_that_is_taken_is_refused_and_nothing_is_written(private_spool, state):
    put_job(private_spool, state, "taken")
    before = dropped(private_spool)
    result = run(None, "--id", "taken", "true", spool=private_spool)
    assert result.returncode == 1
    assert result.stderr.decode().count("\n") == 1 and "taken already exists" in result.stderr.decode()
    assert dropped(private_spool) == before


# -- where it writes, and where it refuses to ------------------------------------

def test_the_spool_is_found_as_queuectl_finds_it(tmp_path):
    home, data, chosen, option = (tmp_path / name for name in ("home", "data", "chosen", "option"))
    expected = {"home": home / ".local/share/queuectl/spool", "data": data / "queuectl/spool",
                "chosen": chosen, "option": option}
    for path in expected.values():
        Spool(str(path))
    clean = {key: value for key, value in os.environ.items() if key not in ("QUEUECTL_SPOOL", "XDG_DATA_HOME")}

    def where(env, *args):
        result = subprocess.run([SCRIPT, *args, "true"], capture_output=True, env={**clean, **env})
        assert result.returncode == 0, result.stderr
        job = result.stdout.decode().strip() + ".json"
        return next(name for name, path in expected.items() if (path / "pending" / job).exists())

    assert where({"HOME": str(home)}) == "home"
    assert where({"HOME": str(home), "XDG_DATA_HOME": str(data)}) == "data"
    assert where({"HOME": str(home), "XDG_DATA_HOME": str(data), "QUEUECTL_SPOOL": str(chosen)}) == "chosen"
    assert where({"HOME": str(home), "QUEUECTL_SPOOL": str(chosen)}, "--spool", str(option)) == "option"
    assert where({"HOME": str(home), "QUEUECTL_SPOOL": "~/.local/share/queuectl/spool"}) == "home"
    status = run_queuectl(str(chosen), "status", "--json")
    assert json.loads(status.stdout)["counts"]["pending"] == 1


@pytest.mark.parametrize("shell", SHELLS)
def test_a_missing_spool_is_one_line_and_exit_1(tmp_path, shell):
    missing = tmp_path / "nowhere"
    result = run(shell, "true", spool=missing)
    assert result.returncode == 1
    message = result.stderr.decode()
    assert message.count("\n") == 1 and message.startswith("queuectl-enqueue: error: no spool at")
    assert "queuectl --spool" in message and "status" in message
    assert result.stdout == b""
    assert not missing.exists()


def test_a_folder_that_is_not_a_spool_is_refused(tmp_path):
    (tmp_path / "pending").mkdir()
    result = run(None, "true", spool=tmp_path)
    assert result.returncode == 1 and result.stderr.decode().count("\n") == 1
    assert "tmp" in result.stderr.decode()
    assert os.listdir(tmp_path / "pending") == []


@pytest.mark.parametrize("folder", ["", "tmp", "pending"])
def test_a_spool_others_can_write_to_is_refused(private_spool, folder):
    os.chmod(os.path.join(private_spool, folder), 0o770)
    result = run(None, "true", spool=private_spool)
    assert result.returncode == 1
    assert result.stderr.decode().count("\n") == 1 and "writable by group or others" in result.stderr.decode()
    nothing_left(private_spool)
    allowed = run(None, "--allow-shared-spool", "true", spool=private_spool)
    assert allowed.returncode == 0, allowed.stderr


@pytest.mark.parametrize("writable", ["", "tmp", None])
def test_a_find_without_printf_still_checks_the_modes_and_gives_an_id(private_spool, tmp_path, writable):
    """A find that is not GNU's (no -printf; BSD, busybox): the modes are checked by -perm alone and
    the clock comes from `date`, to the second."""
    shim = tmp_path / "bin"
    shim.mkdir()
    real = shutil.which("find")
    (shim / "find").write_text('#!/bin/sh\nfor arg; do [ "$arg" != -printf ] || '
                               '{ echo "find: unknown primary -printf" >&2; exit 1; }; done\n'
                               f'exec {shlex.quote(real)} "$@"\n')
    (shim / "find").chmod(0o755)
    env = {"PATH": f"{shim}:{os.environ['PATH']}"}
    if writable is not None:
        os.chmod(os.path.join(private_spool, writable), 0o770)
        result = run(None, "true", spool=private_spool, env=env)
        assert result.returncode == 1
        assert result.stderr.decode().count("\n") == 1 and "writable by group or others" in result.stderr.decode()
        nothing_left(private_spool)
        return
    before = time.time()
    job_id, data = job_of(private_spool, run(None, "true", spool=private_spool, env=env))
    assert json.loads(data)["command"] == "true"
    later = run_queuectl(private_spool, "enqueue", "true").stdout.strip()
    assert job_id < later
    assert int(before) * 1000 <= id_clock(job_id) <= time.time() * 1000


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the spool to another user")
def test_a_spool_of_another_user_is_refused(private_spool):
    os.chown(private_spool, 65534, -1)
    result = run(None, "true", spool=private_spool)
    assert result.returncode == 1
    assert result.stderr.decode().count("\n") == 1 and "belongs to another user" in result.stderr.decode()
    nothing_left(private_spool)


@pytest.mark.parametrize("args, message", [
    ([], "no command given"),
    (["-p", "high", "true"], "-p takes an integer"),
    (["--max-retries", "-1", "true"], "--max-retries takes an integer"),
    (["-g", "no spaces", "true"], "a group is"),
    (["-g", "g" * 65, "true"], "at most 64"),
    (["--id", ".hidden", "true"], "an id is"),
    (["--id", "a/b", "true"], "an id is"),
    (["--id", "i" * 129, "true"], "at most 128"),
    (["--at", "tomorrow", "true"], "--at takes"),
    (["--delay", "5", "--at", "2030-01-01T00:00:00Z", "true"], "not both"),
    (["--bogus", "true"], "unknown option --bogus"),
    (["--spool"], "--spool needs a value"),
    (["", ], "the command is empty"),
])
def test_bad_usage_is_one_line_and_exit_2(private_spool, args, message):
    result = run(None, *args, spool=private_spool)
    assert result.returncode == 2
    assert result.stderr.decode().count("\n") == 1 and message in result.stderr.decode()
    nothing_left(private_spool)


@pytest.mark.parametrize("shell", SHELLS)
def test_text_that_is_not_utf8_is_refused(private_spool, shell):
    for raw in (b"bad \xff byte", b"surrogate \xed\xa0\x80", b"cut \xe2\x82"):
        result = subprocess.run([shell, SCRIPT, "--spool", private_spool, os.fsdecode(raw)], capture_output=True)
        assert result.returncode == 1
        assert result.stderr.decode().count("\n") == 1 and "not valid UTF-8" in result.stderr.decode()
    nothing_left(private_spool)


# -- durability --------------------------------------------------------------------

@pytest.mark.parametrize("durable", [True, False])
def test_durable_syncs_the_file_before_the_rename_and_the_folder_after(private_spool, tmp_path, durable):
    """A `sync` first on PATH records its calls: file then pending/ with durable on, none with it off."""
    run_queuectl(private_spool, "config", "set", "durable", str(durable).lower())
    shim = tmp_path / "bin"
    shim.mkdir()
    calls = tmp_path / "calls"
    (shim / "sync").write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >>{shlex.quote(str(calls))}\n'
                               f'if [ -f "$2" ]; then echo a staged file >>{shlex.quote(str(calls))}; fi\n')
    (shim / "sync").chmod(0o755)
    job_id, _ = job_of(private_spool, run(None, "true", spool=private_spool,
                                          env={"PATH": f"{shim}:{os.environ['PATH']}"}))
    if not durable:
        assert not calls.exists()
        return
    first, staged_then, second = calls.read_text().splitlines()
    assert first.startswith(f"-- {private_spool}/tmp/") and staged_then == "a staged file"
    assert second == f"-- {private_spool}/pending"


# -- shipped with the package ------------------------------------------------------

def test_the_wheel_installs_it_on_path_beside_queuectl(tmp_path):
    """Built as `pip install .` builds it (isolated, with the setuptools pyproject.toml asks for)."""
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), ROOT],
                           capture_output=True, text=True, cwd=tmp_path, timeout=300)
    if built.returncode != 0 and any(sign in built.stderr for sign in (
            "No module named pip", "No matching distribution found for setuptools", "Could not find a version")):
        pytest.skip(f"cannot build a wheel here: {built.stderr.strip().splitlines()[-1]}")
    assert built.returncode == 0, built.stderr
    wheel = next(tmp_path.glob("queuectl-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        scripts = [name for name in archive.namelist() if "/scripts/" in name]
        assert [name.rsplit("/", 1)[1] for name in scripts] == ["queuectl-enqueue"]
        assert archive.read(scripts[0]).startswith(b"#!/bin/sh\n")
