"""Hostile input: job JSON and files dropped into pending/ that try to crash, mislead or escape.

Property tests (hypothesis, bounded) drive `job.build` and `lifecycle.adopt`
in this process; one end-to-end test runs a real worker over a batch of
hostile files. The promises: nothing but InvalidJob ever escapes; a valid
job round-trips with its unknown fields; every bad file ends in dead/ with
its bytes kept and a reason; nothing is read or written through a symlink
out of the spool; the worker never crashes.
"""

from __future__ import annotations

import json
import math
import os
import stat
import tempfile

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from support import wait_until
from support.chaos import assert_intact, census

from queuectl import Spool
from queuectl.core import lifecycle
from queuectl.core.config import defaults
from queuectl.core.errors import InvalidJob
from queuectl.core.job import MAX_JOB_BYTES, build, dumps, iso, loads, parse_time
from queuectl.doctor import check

BOUNDED = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FILES = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KNOWN = {"id", "command", "state", "attempts", "max_retries", "priority", "run_at", "timeout", "cwd", "env",
         "created_at", "updated_at", "next_run_at", "started_at", "finished_at", "last_duration",
         "last_exit_code", "last_error", "worker", "history"}

surrogates = st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=3)
texts = st.text(max_size=20) | surrogates | st.sampled_from(["", " ", "\0", "../x", "/etc/passwd", "a=b", "."])
times = (st.datetimes().map(lambda moment: moment.isoformat())
         | st.datetimes().map(lambda moment: moment.isoformat() + st_offset(moment)) | texts)
scalars = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-(10 ** 400), max_value=10 ** 400)
           | st.floats(allow_nan=False) | texts)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=8)


def st_offset(moment) -> str:
    return ["Z", "+14:00", "-14:00", "+05:30"][moment.microsecond % 4]


fields = st.fixed_dictionaries({}, optional={
    "id": st.from_regex(r"[A-Za-z0-9_\-][A-Za-z0-9._\-]{0,20}", fullmatch=True) | values,
    "command": st.text(min_size=1, max_size=30) | values,
    "attempts": st.integers(min_value=0, max_value=10 ** 12) | values,
    "max_retries": st.integers(min_value=0) | values,
    "priority": st.integers() | values,
    "run_at": times | st.none(), "next_run_at": times | st.none(), "created_at": times,
    "timeout": st.floats() | st.integers(min_value=0) | values,
    "cwd": texts | st.none(), "env": st.dictionaries(texts, texts, max_size=3) | values,
    "history": st.lists(values, max_size=2) | values,
    "state": st.sampled_from(["pending", "completed", "nonsense"]) | values,
}).flatmap(lambda known: st.dictionaries(st.text(max_size=8).filter(lambda key: key not in KNOWN), values,
                                          max_size=3).map(lambda extra: {**known, **extra}))


def has_nan(value) -> bool:
    if isinstance(value, float):
        return math.isnan(value)
    if isinstance(value, dict):
        return any(has_nan(item) for item in value.values())
    if isinstance(value, list):
        return any(has_nan(item) for item in value)
    return False


@BOUNDED
@given(fields)
def test_build_gives_a_complete_job_or_invalidjob_and_keeps_unknown_fields(job_fields):
    try:
        job = build(job_fields, defaults(), stem="from-the-name")
    except InvalidJob as exc:
        assert str(exc)  # a sentence a person can act on
        return
    data = dumps(job)  # whatever build accepts can be stored
    assert len(data) > 0 and loads(data) == job or has_nan(job)
    assert build(loads(data), defaults(), state=job["state"]) == job  # stored, read back, built again: the same
    for key, value in job_fields.items():
        if key not in KNOWN:
            assert job[key] == value
    assert job["id"] == job_fields.get("id") or job_fields.get("id") is None


@BOUNDED
@given(st.floats(min_value=-6e10, max_value=2.5e11))
def test_a_stored_time_reads_back_as_itself_and_never_later(timestamp):
    """Else a job stamped now is not due yet (a burst worker left it behind) or drifts on each rewrite."""
    text = iso(timestamp)
    assert iso(parse_time(text)) == text
    assert parse_time(text) <= timestamp + 1e-6 * max(1.0, abs(timestamp) / 1e9)


@BOUNDED
@given(st.binary(max_size=200) | fields.map(lambda value: json.dumps(value).encode()).map(lambda data: data[:-1]))
def test_loads_never_raises_anything_but_invalidjob(data):
    try:
        loads(data)
    except InvalidJob:
        pass


def names():
    """File names as the kernel allows them: any bytes but '/' and NUL, at most 255."""
    return st.binary(min_size=1, max_size=60).filter(
        lambda name: b"/" not in name and b"\0" not in name and name not in (b".", b"..")
        and not name.startswith(b".") and not name.endswith(b".tmp"))


def contents():
    return (st.binary(max_size=300)
            | fields.map(lambda value: json.dumps(value).encode())
            | fields.map(lambda value: json.dumps(value).encode()[: len(json.dumps(value)) // 2]))


def drop_and_adopt(spool: Spool, name: bytes, data: bytes) -> None:
    path = os.path.join(os.fsencode(spool.dir("pending")), name)
    with open(path, "wb") as handle:
        handle.write(data)
    lifecycle.adopt(spool, os.fsdecode(name), complete=True)


def kept_bytes(spool_path: str) -> dict[str, bytes | None]:
    """dead/<id>.invalid contents by id (None for what is not a regular file)."""
    kept = {}
    dead = os.path.join(spool_path, "dead")
    for name in os.listdir(dead):
        if name.endswith(".invalid"):
            path = os.path.join(dead, name)
            if stat.S_ISREG(os.lstat(path).st_mode):
                with open(path, "rb") as handle:
                    kept[name[: -len(".invalid")]] = handle.read()
            else:
                kept[name[: -len(".invalid")]] = None
    return kept


def assert_adopted_or_dead_lettered(spool_path: str, data: bytes) -> None:
    """One job in pending/ (valid bytes) or the same bytes kept in dead/ with a record that says why."""
    found = census(spool_path)
    assert found.problems == [], found.problems
    pending, kept = Spool(spool_path).names("pending"), kept_bytes(spool_path)
    assert len(pending) + len(kept) == 1
    if kept:
        [(job_id, kept_data)] = kept.items()
        assert kept_data == data
        record = Spool(spool_path).get(job_id)
        assert record["invalid"] is True and record["last_error"].startswith("invalid job: ")
    else:
        job = Spool(spool_path).read("pending", pending[0])
        assert job["command"] == json.loads(data)["command"]


@FILES
@given(names(), contents())
def test_any_file_dropped_into_pending_is_adopted_or_kept_in_dead(name, data):
    assume(len(name) <= 255)
    with tempfile.TemporaryDirectory() as folder:
        spool = Spool(os.path.join(folder, "spool"))
        spool.set_config("durable", "false")
        drop_and_adopt(spool, name, data)
        assert_adopted_or_dead_lettered(spool.root, data)


# -- one of each kind -------------------------------------------------------------

@pytest.fixture
def outside(tmp_path):
    """A file and a folder out of the spool, with what a symlink must never change."""
    target = tmp_path / "outside"
    target.mkdir()
    secret = target / "secret.json"
    secret.write_text('{"command": "echo owned"}')
    os.utime(secret, (1_000_000_000, 1_000_000_000))
    return secret


def unchanged(secret) -> bool:
    info = os.stat(secret)
    return secret.read_text() == '{"command": "echo owned"}' and info.st_mtime == 1_000_000_000


def hostile_entries(pending: str, secret) -> dict[str, bytes | None]:
    """Every kind of bad entry; returns the bytes each must keep in dead/ (None: not a regular file)."""
    files = {
        "random.json": os.urandom(64),
        "huge.json": b'{"command": "' + b"x" * (MAX_JOB_BYTES + 10) + b'"}',
        "deep.json": b"[" * 100_000,
        "deep-object.json": b'{"command": "true", "m": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        "wrong-types.json": b'{"command": ["rm", "-rf"], "priority": "high", "max_retries": -1}',
        "escape.json": b'{"id": "../../etc/cron.d/x", "command": "true"}',
        "bad-env.json": b'{"command": "true", "env": {"A=B": "c"}}',
        "bad-time.json": b'{"command": "true", "run_at": "9999-12-31T23:59:59-14:00"}',
        "surrogate.json": b'{"command": "echo \\ud800"}',
        "not-utf8.json": b'{"command": "echo \xff"}',
        "null.json": b"null",
    }
    for name, data in files.items():
        with open(os.path.join(pending, name), "wb") as handle:
            handle.write(data)
        os.utime(os.path.join(pending, name), (1_000_000_000, 1_000_000_000))  # long complete: judged at once
    odd_name = os.path.join(os.fsencode(pending), b"odd \xff\n name.json")
    with open(odd_name, "wb") as handle:
        handle.write(b"{")
    os.utime(odd_name, (1_000_000_000, 1_000_000_000))
    files["odd \udcff\n name.json"] = b"{"
    os.symlink(secret, os.path.join(pending, "link-to-file.json"))
    os.symlink(secret.parent, os.path.join(pending, "link-to-folder.json"))
    os.symlink("/nonexistent/x", os.path.join(pending, "dangling.json"))
    os.mkfifo(os.path.join(pending, "fifo.json"))
    os.mkdir(os.path.join(pending, "folder.json"))
    for name in ("link-to-file.json", "link-to-folder.json", "dangling.json", "fifo.json", "folder.json"):
        files[name] = None
    return files


def assert_all_dead_lettered(spool_path: str, expected: dict[str, bytes | None], jobs: set[str] = frozenset()) -> None:
    """Each entry in `expected` is kept in dead/ with its bytes and a reason; `jobs` are the only real jobs."""
    spool = Spool(spool_path)
    records = {job["original_name"]: job for job in spool.iter_jobs("dead")}
    assert set(records) == {lifecycle.printable(name) for name in expected}
    kept = kept_bytes(spool_path)
    for name, data in expected.items():
        record = records[lifecycle.printable(name)]
        assert record["invalid"] is True and record["last_error"].startswith("invalid job: "), record
        assert kept[record["id"]] == data, name
    assert_intact(spool_path, set(jobs))
    assert os.listdir(spool.dir("pending")) == []


def test_every_kind_of_hostile_file_is_kept_in_dead_and_nothing_outside_is_touched(spool, outside):
    expected = hostile_entries(spool.dir("pending"), outside)

    for name in os.listdir(spool.dir("pending")):
        lifecycle.adopt(spool, name, complete=True)

    assert_all_dead_lettered(spool.root, expected)
    assert unchanged(outside)
    records = {job["original_name"]: job["last_error"] for job in spool.iter_jobs("dead")}
    assert "over the 1 MiB limit" in records["huge.json"]
    assert "nested too deeply" in records["deep.json"]
    assert "symlink" in records["link-to-file.json"] and "not a regular file" in records["fifo.json"]
    assert "invalid id '../../etc/cron.d/x'" in records["escape.json"]
    assert "lone surrogate" in records["surrogate.json"] and "not UTF-8" in records["not-utf8.json"]
    assert check(spool) == []


def test_a_hard_link_to_a_file_outside_is_adopted_without_changing_that_file(spool, outside):
    os.link(outside, os.path.join(spool.dir("pending"), "linked.json"))

    assert lifecycle.adopt(spool, "linked.json", complete=True) == "linked.json"

    assert unchanged(outside)
    assert spool.get("linked")["command"] == "echo owned"


def test_a_real_worker_survives_a_batch_of_hostile_files(spool_path, workers, outside, tmp_path):
    """Half the batch is there when the worker starts, half lands while it watches."""
    spool = Spool(spool_path)
    expected = hostile_entries(spool.dir("pending"), outside)
    worker = workers.start()
    workers.wait_ready()
    later = tmp_path / "later"
    later.mkdir()
    more = hostile_entries(str(later), outside)
    for name in os.listdir(os.fsencode(later)):
        os.rename(os.path.join(os.fsencode(later), name),
                  os.path.join(os.fsencode(spool.dir("pending")), b"later-" + name))
    expected.update({f"later-{name}": data for name, data in more.items()})
    ran = tmp_path / "ran"
    spool.enqueue({"id": "still-works", "command": f"touch {ran}"})

    # A dead letter moves the bytes first and writes its record after: wait for the records.
    wait_until(lambda: len(spool.names("dead")) == len(expected) and spool.find("still-works") == "completed",
               timeout=60, message="every hostile file dead-lettered and a good job run")

    assert worker.running() and workers.tracebacks() == []
    assert ran.exists() and unchanged(outside)
    assert_all_dead_lettered(spool_path, expected, {"still-works"})
    assert check(spool) == []

