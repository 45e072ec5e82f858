"""queuectl/core/units.py: the spellings of durations and sizes every option and config key accepts."""

from __future__ import annotations

import pytest

from queuectl.core.units import MAX_SECONDS, format_duration, format_size, parse_duration, parse_size


@pytest.mark.parametrize("text, seconds", [
    ("90", 90.0), ("90s", 90.0), ("15m", 900.0), ("1h30m", 5400.0), ("2d", 172800.0), ("1.5h", 5400.0),
    (" 10M ", 600.0), ("1w", 604800.0), ("250ms", 0.25), ("0", 0.0), ("1h 30m", 5400.0), (12, 12.0),
])
def test_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "m", "10x", "1h30", "-5", "nan", "h1", "1h-30m", "inf", "3000000d", True])
def test_bad_durations_say_what_is_wanted(text):
    with pytest.raises(ValueError) as caught:
        parse_duration(text)
    assert "\n" not in str(caught.value)


def test_the_longest_duration_is_named_in_the_message():
    with pytest.raises(ValueError, match="too long"):
        parse_duration(MAX_SECONDS + 1)


@pytest.mark.parametrize("seconds, text", [(3540, "59m"), (5400, "1h30m"), (12, "12s"), (0.5, "0.5s"),
                                           (90061, "1d1h"), (0, "0s")])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


@pytest.mark.parametrize("text, count", [("512", 512), ("100M", 100 << 20), ("2G", 2 << 30), ("1.5GiB", 3 << 29),
                                         ("4k", 4096), (7, 7)])
def test_sizes(text, count):
    assert parse_size(text) == count


@pytest.mark.parametrize("text", ["", "G", "2X", "-1", "1e99G", False])
def test_bad_sizes(text):
    with pytest.raises(ValueError):
        parse_size(text)


def test_format_size():
    assert [format_size(n) for n in (512, 100 << 20, 2 << 30, 3 << 29)] == ["512", "100M", "2G", "1.5G"]
