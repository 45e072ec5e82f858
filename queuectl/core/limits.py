"""A job's resource limits: the fields `memory`, `cpu_time`, `max_files` and their config defaults.

What the fields mean and how they are enforced is in docs/guide/limits.md.
This module is the fields' checks and the reasons a run that hit a limit
ends with; it sits just above units.py so job.py and config.py can use it
without loading the runner's side (runner.py, cgroups.py).

A job field that is null takes the config key of the same name when the job
runs (as `timeout` does); 0, in the job or in the config, means no limit.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from .errors import InvalidJob
from .units import MAX_SECONDS, format_duration, format_size, parse_duration, parse_size

FIELDS = ("memory", "cpu_time", "max_files")
# A smaller memory limit cannot start /bin/sh, so it would only ever fail in a confusing way.
MIN_MEMORY = 1 << 20
# File descriptors 0, 1 and 2 are open before the command starts: a smaller limit could open nothing.
MIN_FILES = 4
MAX_FILES = 1 << 30


def parse_memory(text: str | int) -> int:
    """Bytes from `2G`, `512M`, `1073741824`; 0 = no limit. ValueError with a one-line message."""
    count = parse_size(text)
    if 0 < count < MIN_MEMORY:
        raise ValueError(f"memory limit {text!r} is too small: at least {format_size(MIN_MEMORY)}, or 0 for none")
    return count


def parse_cpu_time(text: str | float | int) -> float | int:
    """Seconds of CPU from `10m`, `90`, `1h30m`; 0 = no limit. A whole number stays an int."""
    seconds = parse_duration(text, maximum=MAX_SECONDS)
    return int(seconds) if seconds == int(seconds) else seconds


def parse_max_files(text: str | int) -> int:
    """A count of open files from `20` or 20; 0 = no limit."""
    if isinstance(text, bool) or not isinstance(text, int | str):
        raise ValueError(f"{text!r} is not a number of open files")
    if isinstance(text, str) and not re.fullmatch(r"[0-9]+", text.strip()):  # int() takes "+20", "2_0" too
        raise ValueError(f"{text!r} is not a number of open files")
    count = int(text)
    if count < 0 or count > MAX_FILES:
        raise ValueError(f"{text!r} is not a number of open files between 0 and {MAX_FILES}")
    if 0 < count < MIN_FILES:
        raise ValueError(f"open files limit {count} is too small: at least {MIN_FILES}, or 0 for none")
    return count


_PARSERS: dict[str, Callable[[Any], float | int]] = {
    "memory": parse_memory, "cpu_time": parse_cpu_time, "max_files": parse_max_files}
# The words of a field's error: what the value must look like.
_KINDS = {"memory": "a size in bytes or like 512M or 2G", "cpu_time": "seconds or a duration like 90s or 10m",
          "max_files": "an integer"}


def check_fields(job: dict) -> None:
    """Normalize the limit fields of a job on its way into the spool (job.build), or raise InvalidJob.

    `memory` becomes bytes and `cpu_time` seconds, so a worker reads numbers
    only; a size or duration string is accepted for either, as the CLI takes them.
    """
    for name in FIELDS:
        value = job.get(name)
        if value is None:
            continue
        # A float is refused where an integer is due, 2.0 too, as for every integer field (job.py).
        if isinstance(value, bool) or not isinstance(value, int | str | float) or (
                isinstance(value, float) and name != "cpu_time"):
            raise InvalidJob(f"{name} must be {_KINDS[name]}, or null for the config default")
        try:
            job[name] = _PARSERS[name](value)
        except (ValueError, OverflowError) as exc:
            raise InvalidJob(f"{name}: {exc}") from None


def parse_field(name: str, text: str | float | int) -> float | int:
    """The value of limit `name` (one of FIELDS) from a config or option text; ValueError if it is none."""
    return _PARSERS[name](text)


def valid_field(name: str, value: Any) -> bool:
    """Whether a config.json value is what `config set` would have stored (a number, not text)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if not isinstance(value, int) and (name != "cpu_time" or not math.isfinite(value)):
        return False
    try:
        return _PARSERS[name](value) == value
    except (ValueError, OverflowError):
        return False


class Limits:
    """The limits one run is held to; a field is None where there is none."""

    __slots__ = ("memory", "cpu_time", "max_files")

    def __init__(self, memory: int | None = None, cpu_time: float | None = None, max_files: int | None = None):
        self.memory = memory
        self.cpu_time = cpu_time
        self.max_files = max_files

    def __repr__(self) -> str:
        return f"Limits(memory={self.memory}, cpu_time={self.cpu_time}, max_files={self.max_files})"

    @property
    def cpu_seconds(self) -> int | None:
        """RLIMIT_CPU counts whole seconds: a fraction is rounded up, never down to no limit at all."""
        return None if self.cpu_time is None else max(1, math.ceil(self.cpu_time))

    def memory_reason(self) -> str:
        return f"memory limit {format_size(self.memory or 0)} exceeded"

    def cpu_reason(self) -> str:
        return f"cpu time limit {format_duration(self.cpu_time or 0)} exceeded"

    def files_reason(self) -> str:
        return f"open files limit {self.max_files} reached"


def resolve(job: Mapping[str, Any], settings: Mapping[str, Any]) -> Limits | None:
    """The limits a run of `job` is held to: its own fields, else the config's; None when it has none.

    None is the common case and costs the runner nothing (docs/guide/limits.md).
    """
    found = {}
    for name in FIELDS:
        value = job.get(name)
        if value is None:
            value = settings.get(name)
        if value:  # 0 and null: no limit
            found[name] = value
    return Limits(**found) if found else None
