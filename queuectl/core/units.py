"""Durations and sizes as people write them: `90`, `15m`, `1h30m`, `2d`; `512`, `100M`, `2G`.

The lowest layer: text in, a number out, or ValueError with a message fit
for one line on stderr. Every option and config key that takes seconds or
bytes reads its text here, so `--delay`, `--timeout`, `config set timeout`
and the job fields accept the same spellings (docs/guide/jobs.md, "Durations
and sizes").
"""

from __future__ import annotations

import math
import re

# Seconds per unit; a duration is one or more number+unit pairs, largest first by habit, not by rule.
DURATION_UNITS = {"w": 604800.0, "d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
# Bytes per unit: powers of 1024, as ulimit, systemd and docker read them.
SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mb": 1 << 20,
              "mib": 1 << 20, "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30, "t": 1 << 40, "tb": 1 << 40,
              "tib": 1 << 40}
# Far beyond any real wait, yet small enough that a time stamp plus it stays a valid date.
MAX_SECONDS = 100 * 365 * 86400.0
MAX_BYTES = 1 << 60

_PAIR = r"(\d+(?:\.\d*)?|\.\d+)\s*(ms|[wdhms])"


def parse_duration(text: str | float | int, *, maximum: float = MAX_SECONDS) -> float:
    """Seconds from `90`, `90s`, `15m`, `1h30m`, `2d`, `1.5h` (a bare number is seconds)."""
    if isinstance(text, bool):
        raise ValueError(f"{text!r} is not a duration like 30s, 15m, 1h30m or 2d")
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        value = text.strip().lower()
        try:
            seconds = float(value)
        except ValueError:
            seconds = _pairs(value, text)
    if math.isnan(seconds) or seconds < 0:
        raise ValueError(f"{text!r} is not a duration: it must be 0 or more")
    if seconds > maximum:
        raise ValueError(f"{text!r} is too long: at most {format_duration(maximum)}")
    return seconds


def _pairs(value: str, text: str) -> float:
    position, total = 0, 0.0
    for match in re.finditer(_PAIR, value):
        if match.start() != position and value[position:match.start()].strip():
            break
        total += float(match.group(1)) * DURATION_UNITS[match.group(2)]
        position = match.end()
    if not value or position == 0 or value[position:].strip():
        raise ValueError(f"{text!r} is not a duration like 30s, 15m, 1h30m or 2d")
    return total


def format_duration(seconds: float) -> str:
    """`59m`, `1h30m`, `2d3h`, `12s`, `0.5s`: the two largest units, as people read a countdown."""
    if seconds < 10 and seconds != int(seconds):
        return f"{seconds:.1f}s"
    remaining = int(round(seconds))
    parts: list[str] = []
    for unit in ("w", "d", "h", "m", "s"):
        size = int(DURATION_UNITS[unit])
        if remaining >= size or (unit == "s" and not parts):
            count, remaining = divmod(remaining, size)
            parts.append(f"{count}{unit}")
        if len(parts) == 2:
            break
    return "".join(parts)


def parse_size(text: str | int, *, maximum: int = MAX_BYTES) -> int:
    """Bytes from `512`, `100M`, `2G`, `1.5GiB` (powers of 1024)."""
    if isinstance(text, bool):
        raise ValueError(f"{text!r} is not a size like 512M or 2G")
    if isinstance(text, int):
        count = text
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*", text)
        unit = match.group(2).lower() if match else None
        if match is None or unit not in SIZE_UNITS:
            raise ValueError(f"{text!r} is not a size like 512M or 2G")
        count = int(float(match.group(1)) * SIZE_UNITS[unit])
    if count < 0:
        raise ValueError(f"{text!r} is not a size: it must be 0 or more")
    if count > maximum:
        raise ValueError(f"{text!r} is too large: at most {format_size(maximum)}")
    return count


def format_size(count: int) -> str:
    """`100M`, `2G`, `1.5G`, `512`: the largest unit that keeps the number at 1 or more."""
    for unit, size in (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if count >= size:
            value = count / size
            return f"{value:.0f}{unit}" if value == int(value) else f"{value:.1f}{unit}"
    return str(count)
