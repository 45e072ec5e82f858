"""queuectl.core.job: defaults, validation, ids, times and JSON in and out."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from queuectl.core.config import defaults
from queuectl.core.errors import InvalidJob
from queuectl.core.job import (
    ID_PATTERN,
    MAX_JOB_BYTES,
    build,
    check_id,
    due_time,
    dumps,
    is_valid_id,
    iso,
    loads,
    new_id,
    parse_time,
    retry_delay,
    shorten,
)

ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
CONFIG = defaults()


def test_smallest_job_gets_every_default():
    job = build({"command": "echo hi"}, {**CONFIG, "max_retries": 7}, now=1_800_000_000)
    assert job == {
        "command": "echo hi", "id": job["id"], "state": "pending", "attempts": 0, "max_retries": 7,
        "priority": 0, "run_at": None, "timeout": None, "cwd": None, "env": None, "next_run_at": None,
        "started_at": None, "finished_at": None, "last_duration": None, "last_exit_code": None,
        "last_error": None, "worker": None, "history": [],
        "created_at": "2027-01-15T08:00:00.000Z", "updated_at": "2027-01-15T08:00:00.000Z",
    }
    assert is_valid_id(job["id"])


def test_unknown_fields_are_kept_untouched():
    fields = {"command": "make", "owner": {"team": "ops", "tags": ["a", 1]}, "ticket": 42}
    job = build(fields, CONFIG)
    assert job["owner"] == {"team": "ops", "tags": ["a", 1]} and job["ticket"] == 42
    assert "state" not in fields, "build must not change the caller's dict"


def test_job_fields_win_over_the_config():
    job = build({"command": "x", "max_retries": 0, "priority": -3, "timeout": 2.5}, CONFIG)
    assert (job["max_retries"], job["priority"], job["timeout"]) == (0, -3, 2.5)


def test_missing_id_becomes_the_file_stem_when_valid():
    assert build({"command": "x"}, CONFIG, stem="report-1")["id"] == "report-1"
    generated = build({"command": "x"}, CONFIG, stem=".hidden")["id"]
    assert generated != ".hidden" and is_valid_id(generated)
    assert build({"command": "x", "id": "own"}, CONFIG, stem="stem")["id"] == "own"


@pytest.mark.parametrize("job_id", ["a", "A-z_0.9", "job.2026-11-25", "-dash-first", "x" * 128])
def test_valid_ids(job_id):
    assert check_id(job_id) == job_id


@pytest.mark.parametrize("job_id", ["", ".", "..", "../etc/passwd", "a/b", "a/../b", "/abs", ".hidden",
                                    "nul\0byte", "x" * 129, "space in id", "tab\t", "é", "a\nb"])
def test_invalid_ids_are_refused_with_the_rule(job_id):
    with pytest.raises(InvalidJob, match="invalid id .*1-128 characters"):
        check_id(job_id)
    with pytest.raises(InvalidJob):
        build({"command": "x", "id": job_id}, CONFIG)


def test_a_long_bad_id_is_shortened_in_the_message():
    with pytest.raises(InvalidJob) as caught:
        check_id("y" * 5000)
    assert len(str(caught.value)) < 200


@pytest.mark.parametrize("job_id", [5, 1.5, True, ["a"], {"a": 1}])
def test_id_must_be_a_string(job_id):
    with pytest.raises(InvalidJob, match="id must be a string"):
        build({"command": "x", "id": job_id}, CONFIG)


@pytest.mark.parametrize("fields", [{}, {"command": ""}, {"command": "   \n"}, {"command": None}, {"command": 5},
                                    {"command": ["ls", "-l"]}, {"cmd": "echo typo"}])
def test_command_must_be_a_non_empty_string(fields):
    with pytest.raises(InvalidJob, match="command must be a non-empty string"):
        build(fields, CONFIG)


def test_command_with_nul_is_refused():
    with pytest.raises(InvalidJob, match="NUL"):
        build({"command": "echo a\0b"}, CONFIG)


@pytest.mark.parametrize("fields", [[], "echo hi", None, 42, [{"command": "x"}]])
def test_a_job_is_an_object(fields):
    with pytest.raises(InvalidJob, match="JSON object"):
        build(fields, CONFIG)


@pytest.mark.parametrize("field, value, message", [
    ("attempts", "1", "attempts must be an integer"),
    ("attempts", -1, "attempts must be >= 0"),
    ("max_retries", -1, "max_retries must be >= 0"),
    ("max_retries", True, "max_retries must be an integer"),
    ("max_retries", 2.0, "max_retries must be an integer"),
    ("priority", "high", "priority must be an integer"),
    ("priority", 1.5, "priority must be an integer"),
    ("timeout", -1, "timeout must be a number"),
    ("timeout", "10", "timeout must be a number"),
    ("timeout", True, "timeout must be a number"),
    ("timeout", float("inf"), "timeout must be a number"),
    ("timeout", float("nan"), "timeout must be a number"),
    pytest.param("timeout", 10 ** 400, "timeout must be a number", id="timeout-10**400"),  # JSON: 1 and 400 zeros
    ("cwd", 5, "cwd must be a string"),
    ("env", {"A": 1}, "env must be an object of string values"),
    ("env", ["A=1"], "env must be an object of string values"),
    ("history", {}, "history must be a list"),
    ("run_at", 1700000000, "run_at must be an ISO-8601 time"),
    ("run_at", "tomorrow", "invalid time 'tomorrow'"),
    ("next_run_at", "2026-13-45", "invalid time"),
    ("created_at", 5, "created_at must be an ISO-8601 time"),
])
def test_wrong_types_are_refused_naming_the_field(field, value, message):
    with pytest.raises(InvalidJob, match=re.escape(message)):
        build({"command": "x", field: value}, CONFIG)


def test_times_are_normalised_to_iso_utc():
    job = build({"command": "x", "run_at": "2030-01-01T01:00:00+01:00", "created_at": "2026-11-25T10:30:00Z"},
                CONFIG)
    assert job["run_at"] == "2030-01-01T00:00:00.000Z"
    assert job["created_at"] == "2026-11-25T10:30:00.000Z"
    assert ISO_UTC.fullmatch(job["updated_at"])


def test_iso_and_parse_time_round_trip():
    assert iso(0) == "1970-01-01T00:00:00.000Z"
    assert iso(1_764_066_600.25) == "2025-11-25T10:30:00.250Z"
    assert parse_time("2025-11-25T10:30:00.250Z") == 1_764_066_600.25
    assert parse_time("2025-11-25T11:30:00.250+01:00") == 1_764_066_600.25
    with pytest.raises(InvalidJob, match="ISO-8601"):
        parse_time("25/11/2025")


@settings(max_examples=400, deadline=None)
@given(st.from_regex(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}", fullmatch=True)
       | st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59))
       .map(lambda moment: moment.isoformat(timespec="milliseconds")))
def test_the_fast_reading_of_iso_output_agrees_with_the_general_one(text):
    """parse_time reads iso()'s own form by a short cut: it must give what `+00:00` gives, or refuse alike."""
    def read(value):
        try:
            return parse_time(value)
        except InvalidJob:
            return "refused"
    general = read(text + "+00:00")
    assert read(text + "Z") == general
    if general != "refused":
        assert iso(general) == text + "Z"


def test_generated_ids_are_unique_valid_and_sort_by_creation():
    ids = [new_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    assert all(ID_PATTERN.fullmatch(job_id) for job_id in ids)


def test_generated_ids_sort_by_creation_across_processes():
    before = new_id()
    child = subprocess.run([sys.executable, "-c", "from queuectl.core.job import new_id; print(new_id())"],
                           capture_output=True, text=True, check=True).stdout.strip()
    after = new_id()
    assert before < child < after


def test_generated_id_carries_the_utc_creation_time():
    # Ids are short now (base32 milliseconds, then random bits): the clock is read back from them.
    from queuectl.cli.ids import id_time
    job = build({"command": "x"}, CONFIG)
    assert iso(id_time(job["id"]))[:19] == job["created_at"][:19]


def test_loads_refuses_what_is_not_a_json_document():
    with pytest.raises(InvalidJob, match="invalid JSON"):
        loads(b'{"command": "x"')
    with pytest.raises(InvalidJob, match="invalid JSON"):
        loads(b"")
    with pytest.raises(InvalidJob, match="not UTF-8"):
        loads(b'{"command": "\xff"}')
    with pytest.raises(InvalidJob, match="nested too deeply"):
        loads(b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(InvalidJob, match="over the 1 MiB limit"):
        loads(b" " * (MAX_JOB_BYTES + 1))


def test_dumps_is_utf8_json_one_field_per_line_ending_in_a_newline():
    job = build({"command": "echo 'héllo wörld'", "env": {"A": "1\n2"}}, CONFIG)
    data = dumps(job)
    assert data.endswith(b"}\n") and b'\n  "command": ' in data and b'\n  "env": {"A": "1\\n2"},\n' in data
    assert "héllo".encode() in data
    assert loads(data) == job


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
                     max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(), _JSON, max_size=8))
def test_dumps_writes_any_json_object_back_exactly_one_field_per_line(fields):
    text = dumps(fields).decode("utf-8")
    assert json.loads(text) == fields
    assert text.count("\n") == (len(fields) + 2 if fields else 1)


def test_due_time_prefers_retry_then_schedule_then_creation():
    job = {"created_at": iso(100), "run_at": iso(200), "next_run_at": iso(300)}
    assert due_time(job) == 300
    assert due_time({**job, "next_run_at": None}) == 200
    assert due_time({**job, "next_run_at": None, "run_at": None}) == 100
    assert due_time({"run_at": "garbage", "created_at": iso(100)}) == 100
    assert due_time({}) == 0.0


def test_retry_delay_doubles_and_is_capped():
    assert [retry_delay(n, CONFIG) for n in (1, 2, 3)] == [2, 4, 8]
    assert retry_delay(30, CONFIG) == CONFIG["backoff_max"]
    assert retry_delay(5000, {**CONFIG, "backoff_base": 2.5}) == CONFIG["backoff_max"]


def test_shorten_makes_one_line_of_bounded_width():
    assert shorten("echo   a\nb", 20) == "echo a b"
    assert shorten("x" * 100, 10) == "xxxxxxx..."
    assert json.dumps(shorten("y" * 5, 5)) == '"yyyyy"'


@pytest.mark.parametrize("value", [{1, 2}, object(), b"bytes"])
def test_fields_from_python_must_be_json_values(value):
    with pytest.raises(InvalidJob, match="job fields must be JSON values"):
        build({"command": "x", "tags": value}, CONFIG)


def test_a_job_that_contains_itself_is_refused():
    fields = {"command": "x"}
    fields["self"] = fields
    with pytest.raises(InvalidJob):
        build(fields, CONFIG)


def test_a_lone_surrogate_is_refused():
    with pytest.raises(InvalidJob, match="valid Unicode"):
        build({"command": "echo \udc80"}, CONFIG)
