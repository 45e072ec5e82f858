"""config.json: the keys, their defaults and their validation.

The file lives at the top of the spool and is replaced atomically on every
change, so a reader sees either the old or the new settings. A missing file
means all defaults; a key the file lacks takes its default.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from .errors import ConfigError
from .job import valid_keep
from .units import parse_duration


class Setting:
    """One key of config.json.

    A plain class: every command builds these at start-up, and a dataclass or
    a NamedTuple (which compiles its string annotations) is built at run time
    by generated code.
    """

    __slots__ = ("default", "parse", "check", "help")

    def __init__(self, default: Any, parse: Callable[[str], Any], check: Callable[[Any], bool], help: str):
        self.default = default
        self.parse = parse
        self.check = check
        self.help = help


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(text)


def _parse_shared(text: str) -> str:
    lowered = text.strip().lower()
    return "auto" if lowered == "auto" else str(_parse_bool(lowered)).lower()


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    """Finite only: `inf` would print as JSON no other tool reads, and `nan` compares false to every bound."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_command(value: Any) -> bool:
    return isinstance(value, str) and "\0" not in value


def _limit(name: str, help: str) -> Setting:
    """A per-job limit's default (docs/guide/limits.md): limits.py is loaded once one is set or read."""
    def parse(text: str) -> Any:
        from .limits import parse_field
        return parse_field(name, text)

    def check(value: Any) -> bool:
        from .limits import valid_field
        return valid_field(name, value)
    return Setting(0, parse, check, help)


def _parse_bytes(text: str) -> int:
    """`1048576`, `512k`, `10M`, `1G` as a number of bytes."""
    value = text.strip().lower().removesuffix("b")
    scale = {"k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}.get(value[-1:], 1)
    number = float(value[:-1] if scale > 1 else value) * scale
    if not number.is_integer():
        raise ValueError(text)
    return int(number)


def _parse_seconds(text: str) -> float | int:
    """A time setting: 90, 10m, 1h30m, 2d (queuectl/core/units.py), stored as a number of seconds."""
    seconds = parse_duration(text)
    return int(seconds) if seconds == int(seconds) else seconds


def _parse_number(text: str) -> float | int:
    number = float(text)
    return int(number) if number.is_integer() else number


SETTINGS: dict[str, Setting] = {
    "max_retries": Setting(3, int, lambda v: _is_int(v) and v >= 0,
                           "retries after the first failed run (integer >= 0)"),
    "backoff_base": Setting(2, _parse_number, lambda v: _is_number(v) and v >= 1,
                            "retry delay is backoff_base ** attempts seconds (number >= 1)"),
    "backoff_jitter": Setting(0, _parse_number, lambda v: _is_number(v) and 0 <= v <= 1,
                              "fraction of each retry delay taken off at random, so jobs that failed "
                              "together do not retry together (number from 0 to 1, 0 = none)"),
    "backoff_max": Setting(3600, _parse_seconds, lambda v: _is_number(v) and v >= 0,
                           "upper bound of the retry delay in seconds (number >= 0)"),
    "timeout": Setting(0, _parse_seconds, lambda v: _is_number(v) and v >= 0,
                       "default per-job time limit in seconds, 0 = none"),
    "kill_grace": Setting(5, _parse_seconds, lambda v: _is_number(v) and v >= 0,
                          "seconds between SIGTERM and SIGKILL on timeout or stop"),
    "durable": Setting(True, _parse_bool, lambda v: isinstance(v, bool),
                       "fsync files and folders so an acknowledged change survives a power cut (true or false)"),
    "recovery_interval": Setting(5, _parse_seconds, lambda v: _is_number(v) and v > 0,
                                 "seconds between sweeps for jobs of dead workers"),
    "scan_interval": Setting(30, _parse_seconds, lambda v: _is_number(v) and v > 0,
                             "seconds between safety rescans (for file systems without inotify)"),
    "pass_env": Setting([], lambda text: [n.strip() for n in text.split(",") if n.strip()],
                        lambda v: isinstance(v, list) and all(isinstance(n, str) for n in v),
                        "names of the worker's environment variables jobs also get, comma-separated; * for all"),
    "log_tail_lines": Setting(20, int, lambda v: _is_int(v) and v >= 0,
                              "lines of stderr kept in each history entry"),
    # Completion hooks and retention (docs/guide/hooks.md, docs/guide/retention.md).
    "on_success": Setting("", str, lambda v: _is_command(v),
                          "hook command run after a job completes (\"\" = none)"),
    "on_failure": Setting("", str, lambda v: _is_command(v),
                          "hook command run after a failed run that will be retried (\"\" = none)"),
    "on_dead": Setting("", str, lambda v: _is_command(v),
                       "hook command run after a job goes to dead/ (\"\" = none)"),
    "hook_timeout": Setting(60, _parse_seconds, lambda v: _is_number(v) and v > 0,
                            "seconds a completion hook may run before it is killed (number > 0)"),
    "keep_completed": Setting("", str.strip, valid_keep,
                              "completed jobs kept: an age (7d), a count (1000), both (7d,1000), \"\" = all"),
    "keep_dead": Setting("", str.strip, valid_keep,
                         "dead jobs kept: an age (30d), a count (1000), both (30d,1000), \"\" = all"),
    "max_log_bytes": Setting(0, _parse_bytes, lambda v: _is_int(v) and v >= 0,
                             "cap of each job's log in bytes (10M, 512k), 0 = none; head and tail are kept"),
    "shared": Setting("auto", _parse_shared, lambda v: v in ("auto", "true", "false"),
                      "whether other hosts share the spool: auto (from the file system type), true or false"),
    # Per-job limits (docs/guide/limits.md): the default of a job whose own field is null.
    "memory": _limit("memory", "default memory limit of a job (2G, 512M), 0 = none"),
    "cpu_time": _limit("cpu_time", "default CPU time limit of a job (10m, 90s), 0 = none"),
    "max_files": _limit("max_files", "default open files limit of a job (integer), 0 = none"),
    "lease_timeout": Setting(30, _parse_seconds, lambda v: _is_number(v) and v >= 1,
                             "seconds a worker of another host may go without renewing its lease "
                             "before its jobs are recovered (number >= 1)"),
}


def canonical_key(key: str) -> str:
    """`max-retries` and `max_retries` are the same key; unknown keys are refused."""
    name = key.strip().replace("-", "_")
    if name not in SETTINGS:
        choices = ", ".join(sorted(SETTINGS))
        raise ConfigError(f"unknown config key {key!r}; valid keys: {choices}")
    return name


def parse_value(key: str, text: str) -> Any:
    """Turn the text of `config set KEY VALUE` into a checked value."""
    name = canonical_key(key)
    setting = SETTINGS[name]
    try:
        value = setting.parse(text)
    except ValueError:
        value = None
    if value is None or not setting.check(value):
        raise ConfigError(f"bad value {text!r} for {name}: {setting.help}")
    return value


def validate(raw: Any) -> dict[str, Any]:
    """Defaults overlaid with the file's values; refuses unknown keys and bad values."""
    return {**defaults(), **_settings_in(raw)}


def _settings_in(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ConfigError("config.json must hold a JSON object")
    found = {}
    for key, value in raw.items():
        name = canonical_key(key)
        if not SETTINGS[name].check(value):
            raise ConfigError(f"bad value {value!r} for {name} in config.json: {SETTINGS[name].help}")
        found[name] = value
    return found


def stored(text: str) -> dict[str, Any]:
    """Only the settings the file's text sets (checked, keys in canonical form): defaults stay defaults."""
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"config.json is not valid JSON: {exc}") from None
    return _settings_in(raw)


def loads(text: str) -> dict[str, Any]:
    return {**defaults(), **stored(text)}


def shared_choice(text: str | None) -> bool | None:
    """The `shared` setting of config.json's text: True, False, or None for auto (or no readable file)."""
    try:
        value = stored(text).get("shared", "auto") if text is not None else "auto"
    except ConfigError:
        return None
    return {"true": True, "false": False}.get(value)


def defaults() -> dict[str, Any]:
    return {name: setting.default for name, setting in SETTINGS.items()}
