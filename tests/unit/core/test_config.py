"""config.json: keys, aliases, validation, atomic replacement."""

from __future__ import annotations

import json
import os
import threading

import pytest

from queuectl import ConfigError, Spool
from queuectl.core.config import SETTINGS, canonical_key, defaults, loads, parse_value, validate


def config_file(spool) -> str:
    return os.path.join(spool.root, "config.json")


def test_defaults_without_a_file(spool):
    assert not os.path.exists(config_file(spool))
    assert spool.config == defaults()
    assert spool.config["max_retries"] == 3 and spool.config["durable"] is True
    assert (spool.config["backoff_base"], spool.config["backoff_max"]) == (2, 3600)


def test_dash_and_underscore_name_the_same_key():
    assert canonical_key("max-retries") == canonical_key("max_retries") == "max_retries"
    assert canonical_key(" backoff-base ") == "backoff_base"


def test_unknown_key_lists_the_valid_ones():
    with pytest.raises(ConfigError) as caught:
        canonical_key("retries")
    message = str(caught.value)
    assert "unknown config key 'retries'" in message
    assert all(name in message for name in SETTINGS)


@pytest.mark.parametrize("key, text, value", [
    ("max-retries", "0", 0), ("max_retries", "12", 12), ("backoff_base", "1.5", 1.5), ("backoff_base", "3", 3),
    ("backoff_max", "0", 0), ("timeout", "90", 90), ("timeout", "0.5", 0.5), ("kill_grace", "2", 2),
    ("durable", "false", False), ("durable", "ON", True), ("durable", "0", False),
    ("recovery_interval", "1", 1), ("scan_interval", "300", 300), ("log_tail_lines", "0", 0),
])
def test_values_are_parsed_to_their_type(key, text, value):
    parsed = parse_value(key, text)
    assert parsed == value and type(parsed) is type(value)


@pytest.mark.parametrize("key, text, hint", [
    ("max_retries", "-1", "integer >= 0"), ("max_retries", "1.5", "integer >= 0"),
    ("max_retries", "three", "integer >= 0"), ("max_retries", "", "integer >= 0"),
    ("backoff_base", "0.5", "number >= 1"), ("backoff_max", "-5", "number >= 0"),
    ("backoff_max", "inf", "number >= 0"), ("timeout", "nan", "0 = none"), ("timeout", "-1", "0 = none"),
    ("durable", "maybe", "true or false"), ("recovery_interval", "0", "sweeps"),
])
def test_bad_values_are_refused_with_the_valid_range(key, text, hint):
    with pytest.raises(ConfigError, match=f"bad value {text!r} for {key}: .*{hint}"):
        parse_value(key, text)


def test_validate_overlays_the_file_on_the_defaults():
    assert validate({"max-retries": 5})["max_retries"] == 5
    assert validate({})["durable"] is True
    with pytest.raises(ConfigError, match="unknown config key 'colour'"):
        validate({"colour": "blue"})
    with pytest.raises(ConfigError, match="bad value -2 for max_retries in config.json"):
        validate({"max_retries": -2})
    with pytest.raises(ConfigError, match="bad value 'yes' for durable"):
        validate({"durable": "yes"})
    with pytest.raises(ConfigError, match="must hold a JSON object"):
        validate([1, 2])
    with pytest.raises(ConfigError, match="not valid JSON"):
        loads("{max_retries: 1}")


def test_set_config_writes_only_the_keys_set(spool):
    assert spool.set_config("max-retries", "5") == ("max_retries", 5)
    spool.set_config("durable", "off")
    with open(config_file(spool), encoding="utf-8") as handle:
        assert json.load(handle) == {"max_retries": 5, "durable": False}
    assert spool.config == {**defaults(), "max_retries": 5, "durable": False}


def test_a_hand_written_alias_in_the_file_is_folded_on_the_next_set(spool):
    with open(config_file(spool), "w", encoding="utf-8") as handle:
        json.dump({"max-retries": 1}, handle)
    assert spool.config["max_retries"] == 1
    spool.set_config("timeout", "30")
    with open(config_file(spool), encoding="utf-8") as handle:
        assert json.load(handle) == {"max_retries": 1, "timeout": 30}


def test_a_bad_set_leaves_the_file_as_it_was(spool):
    spool.set_config("max_retries", "4")
    before = open(config_file(spool), "rb").read()
    for key, text in (("max_retries", "-1"), ("nope", "1"), ("durable", "2")):
        with pytest.raises(ConfigError):
            spool.set_config(key, text)
    assert open(config_file(spool), "rb").read() == before
    assert os.listdir(spool.dir("tmp")) == []


def test_changes_by_another_process_are_seen(spool_path):
    reader, writer = Spool(spool_path), Spool(spool_path)
    assert reader.config["max_retries"] == 3
    writer.set_config("max_retries", "9")
    assert reader.config["max_retries"] == 9


def test_config_is_replaced_atomically_under_concurrent_reads(spool):
    """A reader never sees a missing, empty or half-written config.json."""
    spool.set_config("max_retries", "0")
    seen, problems = set(), []
    done = threading.Event()

    def read_continuously():
        while not done.is_set():
            try:
                with open(config_file(spool), encoding="utf-8") as handle:
                    seen.add(json.load(handle)["max_retries"])
            except (OSError, ValueError) as exc:
                problems.append(repr(exc))

    reader = threading.Thread(target=read_continuously)
    reader.start()
    try:
        for value in range(1, 100):
            spool.set_config("max_retries", str(value))
    finally:
        done.set()
        reader.join()
    assert problems == []
    assert seen <= set(range(100)) and len(seen) > 1
    assert os.listdir(spool.dir("tmp")) == []


def test_a_failed_write_keeps_the_old_config_and_no_temp_file(spool, monkeypatch):
    spool.set_config("max_retries", "4")
    before = open(config_file(spool), "rb").read()

    def disk_full(fd):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        spool.set_config("max_retries", "5")
    monkeypatch.undo()
    assert open(config_file(spool), "rb").read() == before
    assert os.listdir(spool.dir("tmp")) == []


def test_a_broken_config_file_is_reported_not_crashed_on(spool):
    with open(config_file(spool), "w", encoding="utf-8") as handle:
        handle.write('{"max_retries": ')
    with pytest.raises(ConfigError, match="config.json is not valid JSON"):
        spool.config


def test_config_applies_to_jobs_enqueued_later(spool):
    first = spool.enqueue("echo one")
    spool.set_config("max_retries", "6")
    second = spool.enqueue("echo two")
    own = spool.enqueue("echo three", max_retries=1)
    assert (first["max_retries"], second["max_retries"], own["max_retries"]) == (3, 6, 1)


def test_held_config_is_one_reading_for_everything_inside(tmp_path):
    """A worker's claim (and its settle) each read config.json once; a change lands at the next step."""
    spool = Spool(str(tmp_path / "spool"))
    other = Spool(str(tmp_path / "spool"))  # another process's view, writing the file
    with spool.held_config() as settings:
        other.set_config("max_retries", "7")
        assert settings["max_retries"] == spool.config["max_retries"] == 3
    assert spool.config["max_retries"] == 7


def test_the_keys_for_several_hosts_workflows_and_retention_exist_with_their_documented_defaults():
    settings = defaults()
    assert settings["lease_timeout"] == 30 and settings["shared"] == "auto"
    for key in ("keep_completed", "keep_dead", "max_log_bytes", "hook_timeout", "on_success", "on_failure",
                "on_dead"):
        assert key in SETTINGS, key
