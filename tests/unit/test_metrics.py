"""`queuectl metrics`: the dashboard's /metrics text without a server (issue 11, item 7)."""

from __future__ import annotations

import math
import os
import re
import stat

from support.dashboard import get, live_worker, place, running_dashboard

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
SAMPLE = re.compile(rf'({NAME})(\{{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*",?)*)\}})? '
                    r'(NaN|[+-]Inf|[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)')
SUFFIXES = {"summary": ("", "_sum", "_count"), "counter": ("",), "gauge": ("",)}


def parse_prometheus(text: str) -> dict[str, dict]:
    """A strict reader of the text format 0.0.4: families with their HELP, TYPE and samples.

    Every sample must belong to a family whose TYPE came before it (with the
    suffixes its type allows), HELP and TYPE at most once per family and
    before its samples, no sample twice, and the text ends in a newline.
    """
    assert text.endswith("\n") and "\r" not in text
    families: dict[str, dict] = {}
    seen: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# "):
            keyword, name, rest = (line[2:].split(" ", 2) + [""])[:3]
            assert keyword in ("HELP", "TYPE") and re.fullmatch(NAME, name), line
            family = families.setdefault(name, {"help": None, "type": None, "samples": {}})
            assert family[keyword.lower()] is None and not family["samples"], f"late or repeated: {line}"
            if keyword == "TYPE":
                assert rest in SUFFIXES, line
            family[keyword.lower()] = rest
            continue
        match = SAMPLE.fullmatch(line)
        assert match, f"not a sample line: {line!r}"
        name, labels, value = match.group(1), match.group(3) or "", match.group(4)
        owner = next((family for family, info in families.items() if info["type"]
                      and any(name == family + suffix for suffix in SUFFIXES[info["type"]])), None)
        assert owner is not None, f"sample {name} before (or without) its TYPE"
        key = f"{name}{{{labels}}}"
        assert key not in seen, f"sample twice: {key}"
        seen.add(key)
        families[owner]["samples"][key] = float(value)
    assert all(info["help"] and info["type"] for info in families.values())
    return families


def test_metrics_is_prometheus_text_and_matches_the_dashboard(qc, spool):
    for number, duration in enumerate((1.0, 2.0, 3.0, 4.0)):
        place(spool, "completed", f"done{number}", last_duration=duration)
    place(spool, "failed", "again", last_duration=0.5)
    place(spool, "dead", "gone")
    place(spool, "pending", "next")
    with live_worker(spool, "w1", None):
        result = qc("metrics")
        with running_dashboard(spool) as dashboard:
            served = get(dashboard, "/metrics").text
    assert result.returncode == 0 and result.stderr == ""
    families = parse_prometheus(result.stdout)
    # Same names, HELP and TYPE lines, same values for the same spool; the one-shot command has no
    # earlier scan to count settles from, so it prints the dashboard's text without its counters.
    assert families == {name: family for name, family in parse_prometheus(served).items()
                        if not name.endswith("_total")}
    served_counters = parse_prometheus(served)
    assert not any(name.endswith("_total") for name in families)
    assert families["queuectl_jobs"]["type"] == "gauge"
    assert families["queuectl_jobs"]["samples"] == {
        f'queuectl_jobs{{state="{state}"}}': count
        for state, count in (("pending", 1), ("processing", 0), ("completed", 4), ("failed", 1), ("dead", 1))}
    assert families["queuectl_workers"]["samples"] == {"queuectl_workers{}": 1}
    assert served_counters["queuectl_completions_total"]["samples"] == {"queuectl_completions_total{}": 4}
    assert served_counters["queuectl_failures_total"]["samples"] == {"queuectl_failures_total{}": 2}
    summary = families["queuectl_job_duration_seconds"]
    assert summary["type"] == "summary"
    assert summary["samples"]["queuectl_job_duration_seconds_count{}"] == 5
    assert summary["samples"]["queuectl_job_duration_seconds_sum{}"] == 10.5
    assert summary["samples"]['queuectl_job_duration_seconds{quantile="0.5"}'] == 2.0


def test_metrics_of_an_empty_spool(qc, spool):
    result = qc("metrics")
    families = parse_prometheus(result.stdout)
    assert families["queuectl_job_duration_seconds"]["samples"]["queuectl_job_duration_seconds_count{}"] == 0
    assert math.isnan(families["queuectl_job_duration_seconds"]["samples"][
        'queuectl_job_duration_seconds{quantile="0.99"}'])


def test_metrics_output_file_is_replaced_whole_and_readable_by_a_collector(qc, spool, tmp_path):
    target = tmp_path / "textfile" / "queuectl.prom"
    os.mkdir(target.parent)
    target.write_text("stale\n")
    place(spool, "completed", "done", last_duration=1.5)
    result = qc("metrics", "--output", str(target))
    assert result.returncode == 0 and result.stdout == ""
    assert target.read_text() == qc("metrics").stdout
    assert os.listdir(target.parent) == ["queuectl.prom"]  # no temporary file left behind
    assert stat.S_IMODE(os.stat(target).st_mode) & 0o044 == 0o044 & ~os.umask(os.umask(0))
    assert parse_prometheus(target.read_text())["queuectl_jobs"]["samples"]['queuectl_jobs{state="completed"}'] == 1


def test_metrics_output_into_a_missing_folder_is_one_line(qc, spool, tmp_path):
    result = qc("metrics", "--output", str(tmp_path / "missing" / "x.prom"))
    assert result.returncode == 1 and result.stdout == "" and "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) == 1
