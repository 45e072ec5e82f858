"""The job: its fields, defaults, validation, ids and times.

A job is a plain dict that round-trips through JSON, so fields this module
does not know (users' own metadata) survive every rewrite untouched.
`build()` is the single gate every job passes on its way into the spool,
whether it comes from the CLI, from Python or from a file dropped into
pending/; it either returns a complete job or raises InvalidJob with a
sentence a person can act on.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from .errors import InvalidJob

STATES = ("pending", "processing", "completed", "failed", "dead")
FINISHED = ("completed", "dead")
MAX_JOB_BYTES = 1024 * 1024
ID_PATTERN = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9._\-]{0,127}")
# The patterns below are text, compiled at their first use (re keeps them): a compile at import
# would cost every command's start-up, and most commands never check a group or a resource.
GROUP_PATTERN = r"[A-Za-z0-9_-]{1,64}"
# A resource's name becomes part of an environment variable (QUEUECTL_<NAME>, docs/guide/resources.md)
# and of a file name `<name>-<index>`: letters, digits and _, no '-'.
RESOURCE_PATTERN = r"[a-z][a-z0-9_]{0,31}"
# Names whose variable the runner sets already (QUEUECTL_JOB_ID, ...): a resource may not shadow one.
RESERVED_RESOURCES = frozenset({"job_id", "attempt", "spool", "progress", "hook", "state", "exit_code",
                                "error", "log", "complete", "cgroups", "host", "resources"})
MAX_RESOURCE_COUNT = 1024
MAX_NEEDS = 16
MAX_KEY = 256
MAX_AFTER = 1000
# The farthest a job may be scheduled: iso() writes the years 1 to 9999 only,
# and a delay past that would overflow on the way (docs/spool-format.md "Times").
MAX_DELAY = 100 * 365 * 86400.0

HOOK_FIELDS = ("on_success", "on_failure", "on_dead")
_OPTIONAL_FIELDS = ("run_at", "timeout", "cwd", "env", "next_run_at", "started_at",
                    "finished_at", "last_duration", "last_exit_code", "last_error", "worker")


def is_valid_id(value: Any) -> bool:
    return isinstance(value, str) and ID_PATTERN.fullmatch(value) is not None


def check_id(value: Any) -> str:
    """Ids name files, so anything that could leave the spool is refused."""
    if not isinstance(value, str):
        raise InvalidJob(f"id must be a string, not {type(value).__name__}")
    if not is_valid_id(value):
        shown = value if len(value) <= 40 else value[:40] + "..."
        raise InvalidJob(
            f"invalid id {shown!r}: use 1-128 characters of A-Z a-z 0-9 . _ - not starting with '.'")
    return value


_id_lock = threading.Lock()
_last_id = (0, 0)  # (milliseconds, random part) of this process's latest id
# Crockford's base32 in lower case: no i, l, o, u to misread, and its order is ASCII order, so
# fixed-width ids sort as their numbers do.
ID_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
ID_RANDOM_BITS = 20


def _base32(number: int, width: int) -> str:
    digits = []
    for _ in range(width):
        number, digit = divmod(number, 32)
        digits.append(ID_ALPHABET[digit])
    return "".join(reversed(digits))


def new_id() -> str:
    """`1kq3v-8x2a7f3k`: sorts by creation time, unique across processes and hosts.

    Nine base32 digits of the millisecond clock (good until the year 3084),
    then 20 random bits; the dash cuts the clock after 5 digits, so the part
    after it (clock digits that turn over every 17 minutes, then the random
    ones) is what a person types: 4 to 8 of its characters name one job of
    any day (docs/guide/jobs.md "Ids"). Within a process the ids strictly
    increase: an id of the same millisecond takes the next random number.
    """
    global _last_id
    with _id_lock:
        millis = time.time_ns() // 1_000_000
        last_millis, last_random = _last_id
        if millis <= last_millis:
            millis, random_part = last_millis, last_random + 1
            if random_part >> ID_RANDOM_BITS:
                millis, random_part = last_millis + 1, int.from_bytes(os.urandom(3)) >> 4
        else:
            random_part = int.from_bytes(os.urandom(3)) >> 4
        _last_id = (millis, random_part)
    clock = _base32(millis, 9)
    return f"{clock[:5]}-{clock[5:]}{_base32(random_part, 4)}"


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def iso(timestamp: float) -> str:
    """Seconds since the epoch as ISO-8601 UTC with milliseconds: `2026-11-25T10:30:00.000Z`."""
    # Truncated, never rounded up: a time stamped now must not lie in the future (a job would
    # not be due yet). parse_time returns the float just at or above a text's exact time, so
    # what this text reads back as truncates to the same text.
    millis = math.floor(timestamp * 1000)
    return f"{_second_text(millis // 1000)}{millis % 1000:03d}Z"


@functools.lru_cache(maxsize=256)
def _second_text(second: int) -> str:
    """`2026-11-25T10:30:00.` for a whole second: a worker stamps a dozen times per job, within a few seconds."""
    m = datetime.fromtimestamp(second, timezone.utc)
    # Formatted by hand: strftime writes year 1 as "1", which fromisoformat cannot read back.
    return f"{m.year:04d}-{m.month:02d}-{m.day:02d}T{m.hour:02d}:{m.minute:02d}:{m.second:02d}."


def parse_time(value: str) -> float:
    """ISO-8601 to seconds since the epoch; a time without an offset is local time."""
    canonical = _CANONICAL_TIME.fullmatch(value)
    if canonical:  # what iso() writes, so what every job file holds: the common case made cheap
        try:
            exact = _utc_second(canonical[1]) * 1_000_000 + int(canonical[2]) * 1000
        except (ValueError, OverflowError, OSError):
            raise _bad_time(value) from None
    else:
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            moment = datetime.fromisoformat(text)
            since_epoch = (moment if moment.tzinfo else moment.astimezone()) - _EPOCH
            iso(moment.timestamp())  # an offset can push a valid local time outside the years UTC can write
        except (ValueError, OverflowError, OSError):
            raise _bad_time(value) from None
        exact = since_epoch // timedelta(microseconds=1)
    timestamp = exact / 1_000_000
    return timestamp if timestamp * 1_000_000 >= exact else math.nextafter(timestamp, math.inf)


_CANONICAL_TIME = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.(\d{3})Z", re.ASCII)


@functools.lru_cache(maxsize=256)
def _utc_second(text: str) -> int:
    """Whole seconds since the epoch of `YYYY-MM-DDTHH:MM:SS` in UTC; ValueError if it is no such time.

    fromisoformat takes the years 1 to 9999, all of which iso() can write back.
    """
    return (datetime.fromisoformat(text + "+00:00") - _EPOCH) // timedelta(seconds=1)


def _bad_time(value: str) -> InvalidJob:
    return InvalidJob(f"invalid time {value!r}: use ISO-8601 between the years 1 and 9999, "
                      f"e.g. 2026-11-25T10:30:00Z")


def _time_field(job: dict, name: str) -> None:
    value = job.get(name)
    if value is None:
        job[name] = None
    elif isinstance(value, str):
        job[name] = iso(parse_time(value))
    else:
        raise InvalidJob(f"{name} must be an ISO-8601 time or null")


def _int_field(job: dict, name: str, minimum: int | None = None) -> None:
    value = job[name]
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidJob(f"{name} must be an integer, not {json.dumps(value)[:40]}")
    if minimum is not None and value < minimum:
        raise InvalidJob(f"{name} must be >= {minimum}, not {value}")


def build(fields: Any, config: dict, *, stem: str | None = None,
          state: str = "pending", now: float | None = None) -> dict:
    """A complete, validated job from user-supplied fields (see build_bytes)."""
    return build_bytes(fields, config, stem=stem, state=state, now=now)[0]


def build_bytes(fields: Any, config: dict, *, stem: str | None = None,
                state: str = "pending", now: float | None = None) -> tuple[dict, bytes]:
    """A complete, validated job from user-supplied fields, and its file's bytes (dumps).

    Missing fields take their defaults (`max_retries` from the config); a
    missing id becomes `stem` when that is a valid id, else a new one.
    """
    if not isinstance(fields, dict):
        raise InvalidJob("a job must be a JSON object")
    job = dict(fields)
    now = time.time() if now is None else now

    if job.get("id") is None:
        job["id"] = stem if is_valid_id(stem) else new_id()
    check_id(job["id"])

    command = job.get("command")
    if not isinstance(command, str) or not command.strip():
        raise InvalidJob("command must be a non-empty string")
    if "\0" in command:
        raise InvalidJob("command must not contain NUL characters")

    job["state"] = state
    job.setdefault("attempts", 0)
    _int_field(job, "attempts", 0)
    if job.get("max_retries") is None:
        job["max_retries"] = config["max_retries"]
    _int_field(job, "max_retries", 0)
    job.setdefault("priority", 0)
    _int_field(job, "priority")

    for name in _OPTIONAL_FIELDS:
        job.setdefault(name, None)
    for name in ("run_at", "next_run_at", "started_at", "finished_at"):
        _time_field(job, name)

    timeout = job["timeout"]
    # Compared, not converted: a JSON integer too big for a float (1 followed by 400 zeros)
    # must be refused here, not raise OverflowError in the worker that adopts the file.
    # NaN fails every comparison, so it is refused too.
    if timeout is not None and (not isinstance(timeout, (int, float)) or isinstance(timeout, bool)
                                or not 0 <= timeout <= sys.float_info.max):
        raise InvalidJob("timeout must be a number of seconds >= 0, or null for the config default")
    if "held" in job and not isinstance(job["held"], bool):
        raise InvalidJob("held must be true or false (queuectl hold and release write it)")
    if job["cwd"] is not None and not isinstance(job["cwd"], str):
        raise InvalidJob("cwd must be a string")
    env = job["env"]
    if job["cwd"] is not None and "\0" in job["cwd"]:
        raise InvalidJob("cwd must not contain NUL characters")
    if env is not None and (not isinstance(env, dict)
                            or not all(_env_name(k) and isinstance(v, str) and "\0" not in v
                                       for k, v in env.items())):
        raise InvalidJob("env must be an object of string values; names not empty, without '=' or NUL")
    for name in HOOK_FIELDS:  # completion hooks (docs/guide/hooks.md); absent = the config default
        hook = job.get(name)
        if hook is not None and (not isinstance(hook, str) or "\0" in hook):
            raise InvalidJob(f"{name} must be a command string (\"\" for none) or null")
    if job.get("memory") is not None or job.get("cpu_time") is not None or job.get("max_files") is not None:
        from .limits import check_fields as check_limits  # loaded only for jobs that set a limit
        check_limits(job)  # memory, cpu_time, max_files (docs/guide/limits.md)
    history = job.setdefault("history", [])
    if not isinstance(history, list):
        raise InvalidJob("history must be a list")
    if job.get("after") is not None or job.get("group") is not None or job.get("unique_key") is not None:
        check_fields(job)
    if job.get("needs") is not None:
        job["needs"] = check_needs(job["needs"])

    stamp = iso(now)
    for name in ("created_at", "updated_at"):
        if job.get(name) is None:
            job[name] = stamp
        else:
            _time_field(job, name)
    # Every writer stores the job with dumps(): what it cannot write is refused here, not in a worker.
    try:
        data = dumps(job)
    except UnicodeEncodeError:
        raise InvalidJob("job text must be valid Unicode (it holds a lone surrogate)") from None
    except RecursionError:
        raise InvalidJob("job JSON is nested too deeply") from None
    except (TypeError, ValueError) as exc:  # from Python callers: a set, a datetime, a cycle
        raise InvalidJob(f"job fields must be JSON values: {exc}") from None
    return job, data


def check_group(name: Any) -> str:
    if not isinstance(name, str) or not re.fullmatch(GROUP_PATTERN, name):
        raise InvalidJob(f"invalid group {str(name)[:40]!r}: use 1-64 characters of A-Z a-z 0-9 _ -")
    return name


def check_resource(name: Any) -> str:
    """A resource's name (docs/guide/resources.md); InvalidJob with the rule when it is not one."""
    if not isinstance(name, str) or not re.fullmatch(RESOURCE_PATTERN, name):
        raise InvalidJob(f"invalid resource name {str(name)[:40]!r}: use 1-32 characters of a-z 0-9 _, "
                         f"starting with a letter")
    if name in RESERVED_RESOURCES:
        raise InvalidJob(f"resource name {name!r} is taken by queuectl's own QUEUECTL_{name.upper()}")
    return name


def check_count(name: str, count: Any, minimum: int) -> int:
    """How many of a resource (a job's need, minimum 1; a host's declaration, minimum 0)."""
    if not isinstance(count, int) or isinstance(count, bool) or not minimum <= count <= MAX_RESOURCE_COUNT:
        raise InvalidJob(f"{name}: the count must be a whole number from {minimum} to {MAX_RESOURCE_COUNT}, "
                         f"not {json.dumps(count)[:40]}")
    return count


def check_needs(needs: Any) -> dict[str, int] | None:
    """A job's `needs`: {"gpu": 2, ...}; {} is stored as null (needs nothing)."""
    if not isinstance(needs, dict):
        raise InvalidJob('needs must be an object of resource counts, e.g. {"gpu": 2}')
    if len(needs) > MAX_NEEDS:
        raise InvalidJob(f"needs names {len(needs)} resources, over the limit of {MAX_NEEDS}")
    checked = {check_resource(name): check_count(name, count, 1) for name, count in needs.items()}
    return dict(sorted(checked.items())) or None


def parse_needs(texts: Any) -> dict[str, int]:
    """`gpu=2`, `gpu=2,license=1` (several texts add up to one object); InvalidJob when malformed."""
    needs: dict[str, int] = {}
    for text in [texts] if isinstance(texts, str) else texts:
        for part in text.split(","):
            name, sep, count = part.strip().partition("=")
            if not part.strip():
                continue
            if not sep:
                count = "1"
            if not re.fullmatch(r"[0-9]{1,5}", count.strip()):
                raise InvalidJob(f"--needs {part.strip()!r}: use NAME=COUNT, e.g. gpu=2")
            needs[check_resource(name.strip())] = check_count(name.strip(), int(count), 1)
    return needs


def check_fields(job: dict) -> None:
    """`after`, `group` and `unique_key` of a job, as build() stores them (missing ones stay missing)."""
    after = job.get("after")
    if after is not None:
        if isinstance(after, str):
            after = job["after"] = [after]
        if not isinstance(after, list) or not all(is_valid_id(dep) for dep in after):
            raise InvalidJob("after must be a list of job ids")
        if len(after) > MAX_AFTER:
            raise InvalidJob(f"after names {len(after)} jobs, over the limit of {MAX_AFTER}")
        if job.get("id") in after:
            raise InvalidJob("a job cannot wait for itself (after names its own id)")
        job["after"] = list(dict.fromkeys(after))
    if job.get("group") is not None:
        check_group(job["group"])
    key = job.get("unique_key")
    if key is not None:
        if not isinstance(key, str) or not key or len(key) > MAX_KEY:
            raise InvalidJob(f"unique_key must be a non-empty string of at most {MAX_KEY} characters")
        if "\0" in key:
            raise InvalidJob("unique_key must not contain NUL characters")


_KEEP_AGE = r"(\d+(?:\.\d+)?)([smhdw])"
_KEEP_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_keep(text: Any) -> tuple[float | None, int | None]:
    """`7d`, `1000`, `7d,1000` or "" as (max age in seconds, max count); ValueError when malformed."""
    if not isinstance(text, str):
        raise ValueError(text)
    age = count = None
    for part in (p.strip().lower() for p in text.split(",")):
        if not part:
            continue
        match = re.fullmatch(_KEEP_AGE, part)
        if match and age is None:
            age = float(match.group(1)) * _KEEP_UNITS[match.group(2)]
        elif part.isdigit() and count is None:
            count = int(part)
        else:
            raise ValueError(text)
    return age, count


def valid_keep(text: Any) -> bool:
    """Whether `text` is a value of keep_completed / keep_dead (docs/spool-format.md, config.json)."""
    try:
        parse_keep(text)
    except ValueError:
        return False
    return True


def prepare_fields(job: dict | str, *, run_at: Any = None, delay: float | None = None,
                   priority: int | None = None, timeout: float | None = None,
                   max_retries: int | None = None, id: str | None = None,
                   command: str | None = None, cwd: str | None = None,
                   env: dict[str, str] | None = None, after: list[str] | None = None,
                   group: str | None = None, unique: str | None = None,
                   needs: dict[str, int] | None = None) -> dict:
    """Merge a job (dict or command string) with enqueue options; options win.

    `env` adds to the job's own `env` object (a name in both takes the
    option's value); a job `env` that is not an object is left for
    validation to refuse. `delay` and a numeric `run_at` are checked like a
    `run_at` text: a time queuectl cannot write is refused with one line.
    """
    if isinstance(job, str):
        fields: dict = {"command": job}
    elif isinstance(job, dict):
        fields = dict(job)
    else:
        raise InvalidJob("a job is a JSON object or a command string")
    options = {"command": command, "id": id, "priority": priority, "timeout": timeout,
               "max_retries": max_retries, "cwd": cwd, "group": group, "unique_key": unique}
    fields.update({name: value for name, value in options.items() if value is not None})
    if env:
        own = fields.get("env")
        if own is None or isinstance(own, dict):
            fields["env"] = {**(own or {}), **env}
    if after:
        fields["after"] = list(after)
    if needs:
        fields["needs"] = dict(needs)
    if delay is not None:
        fields["run_at"] = _time_after(delay)
    if run_at is not None:
        fields["run_at"] = run_at if isinstance(run_at, str) else _timestamp_text(run_at)
    return fields


def _time_after(delay: Any) -> str:
    if isinstance(delay, bool) or not isinstance(delay, (int, float)):
        raise InvalidJob("delay must be a number of seconds")
    if delay < 0:
        raise InvalidJob("delay must be >= 0 seconds")
    if not delay <= MAX_DELAY:  # NaN fails the comparison too
        raise InvalidJob(f"delay must be at most 100 years ({MAX_DELAY:.0f} seconds), not {delay!r}")
    return iso(time.time() + delay)


def _timestamp_text(moment: Any) -> str:
    """A run_at given as seconds since the epoch, in queuectl's form; InvalidJob outside the years 1-9999."""
    try:
        return iso(parse_time(iso(float(moment))))
    except (TypeError, ValueError, OverflowError, OSError, InvalidJob):
        raise InvalidJob(f"run_at {moment!r} is not a time between the years 1 and 9999") from None


def _env_name(name: Any) -> bool:
    """What execve() accepts as a variable name."""
    return isinstance(name, str) and name != "" and "=" not in name and "\0" not in name


def loads(data: bytes, size: int | None = None) -> Any:
    """Parse job bytes; InvalidJob (never a crash) for anything that is not JSON.

    `size`: the file's whole size when known; readers stop a little past the
    limit, so without it a file too big is said to be "at least" what was read.
    """
    if len(data) > MAX_JOB_BYTES:
        told = f"{max(size or 0, len(data))} bytes" if size is not None else f"at least {len(data)} bytes"
        raise InvalidJob(f"job file is over the 1 MiB limit ({told})")
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise InvalidJob("job file is not UTF-8") from None
    except RecursionError:
        raise InvalidJob("job JSON is nested too deeply") from None
    except ValueError as exc:
        raise InvalidJob(f"invalid JSON: {exc}") from None


def dumps(job: dict) -> bytes:
    """The bytes of a job file: one field per line, a nested value (env, history) on its field's line.

    Readable with `cat` and `grep`, and made by the C encoder: an indented
    dump goes through json's pure-Python encoder, and a worker writes each
    job twice per run.
    """
    lines = []
    for key, value in job.items():
        if type(key) is not str:  # from a Python caller: json turns such keys into text its own way
            return (json.dumps(job, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
        kind = type(value)
        if kind is str:
            text = _encode_text(value)
        elif value is None:
            text = "null"
        elif kind is int:
            text = int.__repr__(value)
        else:
            text = _encode_value(value)
        lines.append(f"  {_encode_text(key)}: {text}")
    return ("{\n" + ",\n".join(lines) + "\n}\n").encode("utf-8") if lines else b"{}\n"


_encode_value = json.JSONEncoder(ensure_ascii=False).encode
_encode_text = json.encoder.encode_basestring  # what that encoder uses for text (ensure_ascii=False)


def due_time(job: dict) -> float:
    """When the job may start: its retry time, its scheduled time, or its creation."""
    for name in ("next_run_at", "run_at", "created_at"):
        value = job.get(name)
        if value:
            try:
                return parse_time(value)
            except InvalidJob:
                continue
    return 0.0


def _uniform() -> float:
    """U uniform in [0, 1), from os.urandom: the random module costs every command's start-up."""
    return int.from_bytes(os.urandom(7), "big") / (1 << 56)


def retry_delay(attempts: int, config: dict, draw: Callable[[], float] = _uniform) -> float:
    """Seconds before the next run after failed run number `attempts`.

    d = min(backoff_base ** attempts, backoff_max), then d * (1 - backoff_jitter * U)
    with U uniform in [0, 1) from `draw` (docs/spool-format.md "Retries"): with
    jitter j, the delays of jobs that failed together spread over [d * (1 - j), d],
    never past d, so the configured maximum stays a maximum.
    """
    try:
        # In floats: an integer power of a huge `attempts` from a hand-made file would take hours.
        delay = float(config["backoff_base"]) ** attempts
    except OverflowError:
        delay = float("inf")
    delay = min(delay, config["backoff_max"])
    jitter = config.get("backoff_jitter", 0)
    return delay * (1 - jitter * draw()) if jitter else delay


def shorten(text: str, width: int) -> str:
    single = " ".join(str(text).split())
    return single if len(single) <= width else single[: width - 3] + "..."
