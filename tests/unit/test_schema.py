"""queuectl/schema.json agrees with job.build(), the validator every job passes.

Jobs are generated (valid ones, and mutations of every field: wrong types,
bad ids, negative counts, bad env, no command, extra fields) and judged by
both; they must agree on every input whose difference is not one of the
limits the schema documents as beyond JSON Schema (docs/spool-format.md,
"What the schema cannot check"): lone surrogates, integers written as
1.0, times that do not parse, the 1 MiB limit, very deep nesting. Those
are kept out of the generated inputs or assumed away, each by name below.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from queuectl.core.config import defaults
from queuectl.core.errors import InvalidJob
from queuectl.core.job import STATES, build, parse_time
from queuectl.schema import job_schema, schema_text

CONFIG = defaults()
SCHEMA = job_schema()
VALIDATOR = Draft202012Validator(SCHEMA)
INT_FIELDS = ("attempts", "max_retries", "priority")
TIME_FIELDS = ("run_at", "next_run_at", "started_at", "finished_at", "created_at", "updated_at")
PYTHON_WHITESPACE = "".join(chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace())

# Lone surrogates are a documented limit: no generated text holds one.
text = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
tricky_text = st.sampled_from(["", " ", "a\n", "\n", "\x00", "a\x00b", "=", "a=b", ".", "..", "../x", "\ufeff",
                               "\x1c", "\u3000", "\u200b", "é", "x" * 128, "x" * 129]) | st.text(
    st.sampled_from(PYTHON_WHITESPACE + "\x00=.a-_\n\ufeff\u200b"), max_size=4)
any_text = text | tricky_text
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | any_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(any_text, inner, max_size=3),
    max_leaves=6)

valid_ids = st.from_regex(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}", fullmatch=True)
valid_commands = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), min_size=1,
                         max_size=30).filter(lambda c: c.strip() != "")
# Years 2-9998: an offset or the local zone may not push a time outside the years UTC can write.
valid_times = st.datetimes(min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31),
                           timezones=st.sampled_from([None, timezone.utc])).map(datetime.isoformat) | st.sampled_from(
    ["2026-11-25T10:30:00Z", "2026-11-25T10:30:00.123+01:00", "2026-11-25", "2026-11-25 10:30"])
env_names = text.filter(lambda name: name and "=" not in name and "\x00" not in name)
env_values = text.filter(lambda value: "\x00" not in value)

VALID_FIELDS = {
    "id": st.none() | valid_ids,
    "attempts": st.integers(min_value=0),
    "max_retries": st.none() | st.integers(min_value=0),
    "priority": st.integers(),
    "timeout": st.none() | st.integers(min_value=0) | st.floats(min_value=0, allow_infinity=False),
    "cwd": st.none() | env_values,
    "env": st.none() | st.dictionaries(env_names, env_values, max_size=3),
    "history": st.lists(json_values, max_size=2),
    "state": json_values,
    **{name: st.none() | env_values for name in ("on_success", "on_failure", "on_dead")},
    "after": st.none() | valid_ids | st.lists(valid_ids, max_size=3),
    "group": st.none() | st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True),
    "unique_key": st.none() | env_values.filter(bool),
    **{name: st.none() | valid_times for name in TIME_FIELDS},
}


def either(*choices: st.SearchStrategy) -> st.SearchStrategy:
    """One of `choices`, each as likely (`a | b` flattens nested choices and so dilutes the last one)."""
    return st.sampled_from(choices).flatmap(lambda choice: choice)


# Wrong values: scalars as often as containers (json_values alone is mostly lists and objects).
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | any_text
any_value = either(scalars, json_values)
BAD_CHARACTERS = ["\n", "\x00", "/", " ", "=", ".", "\u3000", "\ufeff", "é", "\x1c"]


@st.composite
def inserted(draw, valid: st.SearchStrategy, characters: list[str] = BAD_CHARACTERS) -> str:
    """A valid string with one (maybe) bad character added before, inside or after it."""
    text, bad = draw(valid), draw(st.sampled_from(characters))
    cut = draw(st.sampled_from([0, len(text) // 2, len(text)]))
    return text[:cut] + bad + text[cut:]


near_miss_ids = either(inserted(valid_ids), valid_ids.map(lambda valid: valid + "\n"),
                       valid_ids.map(lambda valid: "." + valid), valid_ids.map(lambda valid: valid + "x" * 128))


@st.composite
def near_miss_envs(draw) -> dict:
    """A valid env with one entry whose name or value is wrong."""
    env = draw(st.dictionaries(env_names, env_values, max_size=2))
    if draw(st.booleans()):
        env[draw(either(st.sampled_from(["", "A=B", "\x00"]), inserted(env_names)))] = draw(env_values)
    else:
        env[draw(env_names)] = draw(either(inserted(env_values, ["\x00"]), scalars, json_values))
    return env


MUTATED_FIELDS = {
    "id": either(any_value, near_miss_ids),
    "command": either(any_value, st.text(st.sampled_from(PYTHON_WHITESPACE + "\ufeff\u200b"), max_size=3),
                      # Where Python's idea of white space and ECMA-262's \s differ.
                      st.text(st.sampled_from("\x1c\x1d\x1e\x1f\x85\ufeff \t"), min_size=1, max_size=2),
                      inserted(valid_commands, ["\x00"])),
    "attempts": either(st.integers(), any_value),
    "max_retries": either(st.integers(), any_value),
    "priority": any_value,
    # Around the largest float (1.8e308), where queuectl stops reading a number of seconds.
    "timeout": either(st.floats(allow_nan=False, allow_infinity=False), any_value,
                      st.integers(min_value=10 ** 307, max_value=10 ** 310),
                      st.sampled_from([10 ** 400, -0.0, 1.7976931348623157e308])),
    "cwd": either(any_value, inserted(env_values, ["\x00"])),
    "env": either(any_value, near_miss_envs()),
    "history": any_value,
    "held": any_value,
    **{name: either(any_value, inserted(env_values, ["\x00"])) for name in ("on_success", "on_failure", "on_dead")},
    "after": either(any_value, near_miss_ids, st.lists(either(valid_ids, near_miss_ids, any_value), max_size=3)),
    "group": either(any_value, inserted(st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True)),
                    st.just("x" * 65)),
    "unique_key": either(any_value, inserted(env_values, ["\x00"]), st.just("k" * 257)),
    **{name: any_value for name in TIME_FIELDS},
}


@st.composite
def valid_jobs(draw) -> dict:
    job = {"command": draw(valid_commands)}
    for name, values in VALID_FIELDS.items():
        if draw(st.booleans()):
            job[name] = draw(values)
    job.update(draw(st.dictionaries(text.filter(lambda key: key not in SCHEMA["properties"]), json_values,
                                    max_size=2)))
    return job


@st.composite
def mutated_jobs(draw) -> dict:
    """A valid job with one to three fields replaced or dropped."""
    job = draw(valid_jobs())
    for name in draw(st.lists(st.sampled_from(sorted(MUTATED_FIELDS)), min_size=1, max_size=3)):
        if draw(st.sampled_from(["replace"] * 5 + ["drop"])) == "drop":
            job.pop(name, None)  # command among them: the one required field
        else:
            job[name] = draw(MUTATED_FIELDS[name])
    return job


def beyond_the_schema(job: object) -> str | None:
    """Which documented limit of the schema makes this job's verdict differ, if any."""
    if not isinstance(job, dict):
        return None
    after = job.get("after")
    if job.get("id") is not None and (after == job["id"] or isinstance(after, list) and job["id"] in after):
        return "after names the job's own id"
    for name in INT_FIELDS:
        value = job.get(name)
        if isinstance(value, float) and value.is_integer():
            return f"{name} written as a float with no fraction"
    for name in TIME_FIELDS:
        if isinstance(job.get(name), str):
            try:
                parse_time(job[name])
            except InvalidJob:
                return f"{name} does not parse as a time"
    return None


def build_accepts(job: object) -> bool:
    try:
        build(json.loads(json.dumps(job)), CONFIG, stem="from-file")
    except InvalidJob:
        return False
    return True


def agree(job: object) -> None:
    """build() and the schema give the same verdict, and a stored job matches the schema too."""
    assert json.loads(json.dumps(job)) == job  # only JSON values: what a file can hold
    assume(beyond_the_schema(job) is None)
    errors = [error.message for error in VALIDATOR.iter_errors(job)]
    accepted = build_accepts(job)
    assert accepted == (not errors), (accepted, errors)
    if accepted:
        stored = build(json.loads(json.dumps(job)), CONFIG)
        assert not list(VALIDATOR.iter_errors(stored)), "what queuectl writes must match its own schema"


def test_the_schema_is_a_valid_draft_2020_12_schema():
    Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert SCHEMA["required"] == ["command"]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_jobs())
def test_valid_jobs_pass_both(job):
    agree(job)
    assert build_accepts(job)


@pytest.mark.parametrize("name", sorted(MUTATED_FIELDS))
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(data=st.data())
def test_a_job_with_one_field_wrong_or_dropped_gets_the_same_verdict_from_both(name, data):
    # One field at a time, so another wrong field never hides a disagreement on this one.
    job = data.draw(valid_jobs())
    if data.draw(st.sampled_from(["replace"] * 5 + ["drop"])) == "drop":
        job.pop(name, None)
    else:
        job[name] = data.draw(MUTATED_FIELDS[name])
    agree(job)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(mutated_jobs())
def test_a_job_with_several_fields_wrong_gets_the_same_verdict_from_both(job):
    agree(job)


@settings(max_examples=100, deadline=None)
@given(json_values.filter(lambda value: not isinstance(value, dict)))
def test_what_is_not_an_object_is_refused_by_both(value):
    agree(value)
    assert not build_accepts(value)


@pytest.mark.parametrize("job", [
    {"command": "true", "id": "a\n"},              # Python's '$' would let a final newline through
    {"command": "true", "id": ".hidden"},
    {"command": "true", "id": "x" * 129},
    {"command": "true", "id": "a/b"},
    {"command": " \t\u3000\x1c"},                     # white space as Python counts it
    {"command": "\x1f\x85"},                          # ... which ECMA-262's \s does not
    {"command": "echo\x00hi"},
    {"command": "true", "cwd": "/tmp\x00"},
    {"command": "true", "env": {"A=B": "1"}},
    {"command": "true", "env": {"": "1"}},
    {"command": "true", "env": {"A": "1\x00"}},
    {"command": "true", "env": {"A": 1}},
    {"command": "true", "max_retries": -1},
    {"command": "true", "attempts": None},
    {"command": "true", "priority": True},
    {"command": "true", "history": None},
    {"command": "true", "timeout": 10 ** 400},
    {"command": "true", "run_at": 1700000000},
    {"command": "true", "held": "yes"},
    {"priority": 1},
    ["true"],
])
def test_known_hard_cases_are_refused_by_both(job):
    assert not build_accepts(job)
    assert not VALIDATOR.is_valid(job)


@pytest.mark.parametrize("job", [
    {"command": "\ufeff"},                            # not white space to Python (it is to ECMA-262's \s)
    {"command": "true", "id": None, "max_retries": None, "run_at": None, "timeout": None, "env": None},
    {"command": "true", "id": "_a.b-c", "env": {"\n": ""}, "timeout": -0.0, "priority": -5},
    {"command": "true", "state": 42, "mine": {"any": ["thing"]}},
])
def test_known_edge_cases_are_accepted_by_both(job):
    assert build_accepts(job)
    assert VALIDATOR.is_valid(job)


@pytest.mark.parametrize("job, limit", [
    ({"command": "true", "max_retries": 1.0}, "float with no fraction"),
    ({"command": "true", "run_at": "2026-13-45"}, "does not parse"),
])
def test_the_documented_limits_are_where_the_two_differ(job, limit):
    assert limit in beyond_the_schema(job)
    assert VALIDATOR.is_valid(job) and not build_accepts(job)


def test_queuectl_schema_prints_the_packaged_file(tmp_path):
    result = subprocess.run([sys.executable, "-m", "queuectl", "--spool", str(tmp_path / "spool"), "schema"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stderr == ""
    packaged = resources.files("queuectl").joinpath("schema.json").read_text(encoding="utf-8")
    assert result.stdout == packaged == schema_text()
    assert json.loads(result.stdout) == json.loads(packaged) == job_schema()
    assert not (tmp_path / "spool").exists()  # printing the schema needs no spool


def _patterns(node: object) -> list[str]:
    """Every `pattern` in a schema (descriptions are never dicts, so no text is taken for one)."""
    if isinstance(node, list):
        return [found for value in node for found in _patterns(value)]
    if not isinstance(node, dict):
        return []
    found = [node["pattern"]] if isinstance(node.get("pattern"), str) else []
    return found + _patterns([value for key, value in node.items() if key != "pattern"])


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node for an ECMA-262 regex engine")
def test_the_patterns_mean_the_same_to_an_ecma_262_engine():
    """JSON Schema patterns are ECMA-262 regexes; jsonschema runs them with Python's re. Same verdicts."""
    patterns = _patterns(SCHEMA)
    assert len(patterns) >= 5
    probes = ["", "a", "a\n", "\n", ".a", "a.", "a/b", "A=B", "=", "\x00", "a\x00", " ", "\t\n", "\u3000",
              "\x1c\x1f", "\ufeff", "\u200b", "\x85", "\u2028", "é", "x" * 129, "echo hi", " x "]
    script = ("const [patterns, probes] = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
              "console.log(JSON.stringify(patterns.map(p => probes.map(s => new RegExp(p, 'u').test(s)))));")
    result = subprocess.run(["node", "-e", script], input=json.dumps([patterns, probes]),
                            capture_output=True, text=True, timeout=60, check=True)
    python = [[re.search(pattern, probe) is not None for probe in probes] for pattern in patterns]
    assert json.loads(result.stdout) == python


def test_the_example_spool_jobs_match_the_schema():
    """What queuectl writes matches its own schema (the record of an invalid file with no command aside)."""
    root = Path(__file__).resolve().parent.parent.parent / "spool.example"
    checked = 0
    for path in sorted(path for state in STATES for path in (root / state).glob("*.json")):
        job = json.loads(path.read_text(encoding="utf-8"))
        if path.parent.name == "dead" and job.get("invalid") and job.get("command") is None:
            continue
        assert not [error.message for error in VALIDATOR.iter_errors(job)], path
        checked += 1
    assert checked >= 8


def test_the_spool_format_document_names_every_field_of_the_schema():
    """A field added to the schema is described in docs/spool-format.md too."""
    document = (Path(__file__).resolve().parent.parent.parent / "docs" / "spool-format.md").read_text(encoding="utf-8")
    missing = [name for name in SCHEMA["properties"] if f"`{name}`" not in document]
    assert missing == []


def _layout_patterns() -> list[re.Pattern]:
    """The layout block of docs/spool-format.md as regexes, each path and each folder above it."""
    document = (Path(__file__).resolve().parent.parent.parent / "docs" / "spool-format.md").read_text(encoding="utf-8")
    block = document.split("<spool>/", 1)[1].split("```", 1)[0]
    patterns = set()
    for line in block.splitlines():
        if not line.strip():
            continue
        path = line.split()[0]
        parts = path.rstrip("/").split("/")
        for depth in range(1, len(parts) + 1):
            prefix = "/".join(parts[:depth]) + ("/" if depth < len(parts) or path.endswith("/") else "")
            patterns.add(re.escape(prefix).replace(re.escape("<"), "<").replace(re.escape(">"), ">"))
    return [re.compile(re.sub(r"<[^>]+>", r"[^/]+", pattern)) for pattern in sorted(patterns)]


def test_every_entry_a_busy_spool_holds_is_in_the_layout_of_the_spool_format_document(qc, spool_path):
    """Spec: whatever files groups, pauses and unique keys need, each explained in the spool-format
    document. A spool that used every feature is walked two levels down (tmp/ holds nothing named)."""
    def ok(*args):
        result = qc(*args)
        assert result.returncode == 0, (args, result.stderr)
        return result.stdout.strip()
    first = ok("enqueue", "--json", "true")  # options before the command's words (pueue add)
    first_id = json.loads(first)["id"]
    ok("enqueue", "--after", first_id, "true")
    ok("enqueue", "--unique", "nightly", "true")
    ok("group", "set", "gpu", "--limit", "1")
    ok("enqueue", "--group", "gpu", "true")
    ok("enqueue", "exit 3", "--max-retries", "0")
    ok("schedule", "add", "tick", "--every", "1h", "true")
    Path(spool_path, "pending", "not-a-job.json").write_text('{"command": 5}')
    ok("worker", "start", "--burst", "--quiet")
    ok("pause")
    ok("pause", "--group", "gpu")
    ok("worker", "stop")
    # Jobs no worker runs now: a unique key held, and a job waiting for another.
    waited_for = json.loads(ok("enqueue", "sleep 60", "--unique", "held", "--json"))["id"]
    ok("enqueue", "--after", waited_for, "true")
    patterns = _layout_patterns()
    undocumented = []
    root = Path(spool_path)
    for entry in sorted(root.iterdir()):
        names = [entry] + (sorted(entry.iterdir()) if entry.is_dir() and entry.name != "tmp" else [])
        for path in names:
            relative = str(path.relative_to(root)) + ("/" if path.is_dir() else "")
            if not any(pattern.fullmatch(relative) for pattern in patterns):
                undocumented.append(relative)
    assert undocumented == []
    assert {entry.name for entry in root.iterdir()} >= {"paused", "groups", "unique", "schedules", "waiting",
                                                        "workers", "logs", "dead"}
