"""Group rates (docs/guide/groups.md, "Rate limits"): no sliding window holds more than N starts, with
several workers; the starts are the jobs' `started_at`, the time their token was taken."""

from __future__ import annotations

import json
import os
import time

from support import most_in_a_window
from support.workers import enqueue

from queuectl.features import rates


def _starts(spool_path: str) -> list[float]:
    from queuectl.core.job import parse_time

    found = []
    for name in os.listdir(os.path.join(spool_path, "completed")):
        with open(os.path.join(spool_path, "completed", name), encoding="utf-8") as handle:
            found.append(parse_time(json.load(handle)["started_at"]))
    return sorted(found)


def test_forty_jobs_under_five_per_two_seconds_with_four_workers(qc, workers, spool_path):
    assert qc("group", "set", "api", "--rate", "5/2s").returncode == 0
    for _ in range(40):
        enqueue(spool_path, {"command": "true", "group": "api"})
    workers.start("-n", "4", "--until-empty").wait(timeout=120)
    starts = _starts(spool_path)
    assert len(starts) == 40
    assert most_in_a_window(starts, 2.0) <= 5
    # How close the starts come to the rate is a timing goal, not asserted here (bench/, not tests/).


def test_the_window_counter_counts_a_burst():
    assert most_in_a_window([0.0, 0.5, 1.0, 1.999, 2.0], 2.0) == 4


def test_group_list_shows_the_rate(qc):
    qc("group", "set", "api", "--rate", "10/1m")
    listed = json.loads(qc("group", "list", "--json").stdout)
    assert listed[0]["rate"] == "10/1m" and listed[0]["starts_in_window"] == 0


def test_bad_rates_are_one_line_errors(qc):
    for text in ("x", "5/0s", "0/1m5", "100000000/1s", "5/9999d", "-1/1s"):
        result = qc("group", "set", "api", "--rate", text)
        assert result.returncode != 0, text
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, text


def test_a_start_given_back_frees_its_token_and_no_window_holds_more(tmp_path):
    """A start taken for a claim another worker won is given back: its token is free again at once,
    the start is not counted, and the other tokens' starts still bound the window."""
    groups, tmp = tmp_path / "groups", tmp_path / "tmp"
    groups.mkdir()
    tmp.mkdir()
    rate = rates.make_tokens(str(groups), "api", rates.Rate(3, 60.0), [], str(tmp))
    window, now = rates.Window(str(groups), rate), time.time()
    taken = [window.take(now, "w", str(tmp))[0] for _ in range(3)]
    assert None not in taken and window.take(now, "w", str(tmp))[0] is None
    rates.give_back(taken[0])
    rates.give_back(taken[0])  # a retried call changes nothing
    again = window.take(now + 1, "w", str(tmp))[0]
    assert again is not None and window.take(now + 1, "w", str(tmp))[0] is None
    counted = rates.recent_starts(str(groups), rate)
    assert len([stamp for stamp in counted if stamp >= rates._millis(now)]) == 3
    # Given back twice in a row, the token's last real start is still kept: here its unused seed.
    rates.give_back(again)
    assert window.take(now + 2, "w", str(tmp))[0] is not None
    assert window.take(now + 2, "w", str(tmp))[0] is None
    assert len([stamp for stamp in rates.recent_starts(str(groups), rate) if stamp >= rates._millis(now)]) == 3
