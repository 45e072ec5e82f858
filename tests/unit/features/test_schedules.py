"""Recurring jobs (README "Recurring jobs"): every due slot enqueued exactly once, missed-run
policies, DST, invalid drop-ins, and the crash points of a claim."""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timezone

import pytest
from support import schedule_jobs, slot_times, wait_until
from support.workers import append_id, read_lines

from queuectl import Spool
from queuectl.core.errors import DuplicateJob, InvalidJob
from queuectl.core.job import parse_time
from queuectl.features import schedules

# -- the CLI and the file ------------------------------------------------------

def test_add_list_show_pause_resume_rm(qc, spool_path):
    added = qc("schedule", "add", "nightly", "--cron", "30 2 * * *", "--tz", "Europe/Berlin",
               "--missed", "once", "--priority", "3", "--env", "A=1", "--on-dead", "echo dead", "tar cf x.tar .")
    assert added.returncode == 0, added.stderr
    assert "next run 20" in added.stdout
    with open(os.path.join(spool_path, "schedules", "nightly.json"), encoding="utf-8") as handle:
        stored = json.load(handle)
    assert stored["cron"] == "30 2 * * *" and stored["tz"] == "Europe/Berlin" and stored["missed"] == "once"
    assert stored["job"] == {"command": "tar cf x.tar .", "priority": 3, "env": {"A": "1"}, "on_dead": "echo dead"}

    listed = qc("schedule", "list")
    assert "nightly" in listed.stdout and "30 2 * * * (Europe/Berlin)" in listed.stdout
    shown = json.loads(qc("schedule", "show", "nightly").stdout)
    # 02:30 in Berlin is 01:30 UTC in winter
    assert shown["next_run"].endswith("T01:30:00.000Z")
    assert "nightly: next run" in qc("status").stdout

    assert qc("schedule", "pause", "nightly").returncode == 0
    assert json.loads(qc("schedule", "list", "--json").stdout)[0]["next_run"] is None
    assert "paused" in qc("schedule", "list").stdout
    resumed = qc("schedule", "resume", "nightly")
    assert "next run 20" in resumed.stdout
    assert json.loads(qc("schedule", "show", "nightly").stdout)["resumed_at"] is not None

    assert qc("schedule", "rm", "nightly").returncode == 0
    gone = qc("schedule", "show", "nightly")
    assert gone.returncode == 1 and "no schedule named 'nightly'" in gone.stderr


@pytest.mark.parametrize("args, message", [
    (["--cron", "61 * * * *"], "invalid cron expression"),
    (["--cron", "* * *"], "invalid cron expression"),
    (["--every", "0s"], "between 1s and 366d"),
    (["--every", "1.5s"], "whole number of seconds"),
    (["--every", "soon"], "not a period"),
    (["--cron", "* * * * *", "--tz", "Mars/Olympus"], "unknown time zone"),
    (["--every", "5s", "--tz", "Europe/Berlin"], "tz applies to cron schedules only"),
    (["--every", "5s", "--env", "NOEQUALS"], "is not NAME=VALUE"),
    (["--every", "5s", "--needs", "gpu=x"], "use NAME=COUNT"),
    (["--every", "5s", "--needs", "gpu=1"], "no host has declared any resource"),
    (["--every", "5s", "--memory", "lots"], "not a size"),
    (["--every", "5s", "--cpu-time", "-1"], "--cpu-time"),
    (["--every", "5s", "--max-files", "99999999999999999999"], "number of open files"),
])
def test_bad_schedules_are_refused_in_one_line(qc, spool_path, args, message):
    result = qc("schedule", "add", "s1", *args, "true")
    assert result.returncode in (1, 2)
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not os.path.exists(os.path.join(spool_path, "schedules", "s1.json"))


def test_each_run_carries_the_schedules_needs_and_limits(qc, spool_path):
    """schedule add takes what enqueue takes for one job: --needs and the per-job limits
    (docs/guide/schedules.md); every run it enqueues carries them."""
    assert qc("resource", "set", "gpu", "2").returncode == 0
    refused = qc("schedule", "add", "big", "--every", "1s", "--needs", "gpu=3", "true")
    assert refused.returncode == 1 and "more than any host has" in refused.stderr
    added = qc("schedule", "add", "train", "--every", "1s", "--needs", "gpu=1", "--memory", "512M",
               "--cpu-time", "10m", "--max-files", "100", "true")
    assert added.returncode == 0, added.stderr
    assert json.loads(qc("schedule", "show", "train").stdout)["job"] == {
        "command": "true", "needs": {"gpu": 1}, "memory": 512 * 1024 * 1024, "cpu_time": 600, "max_files": 100}
    spool = Spool(spool_path)
    schedules.sweep(spool, "tester", time.time() + 2)  # a worker's sweep, at a time a slot is due
    jobs = list(schedule_jobs(spool, "train").values())
    assert jobs
    for job in jobs:
        assert job["needs"] == {"gpu": 1} and job["memory"] == 512 * 1024 * 1024
        assert job["cpu_time"] == 600 and job["max_files"] == 100


def test_bad_names_and_duplicates(qc, spool):
    assert "invalid schedule name" in qc("schedule", "add", "../x", "--every", "5s", "true").stderr
    assert "invalid schedule name" in qc("schedule", "add", "a.b", "--every", "5s", "true").stderr
    assert qc("schedule", "add", "twice", "--every", "5s", "true").returncode == 0
    again = qc("schedule", "add", "twice", "--every", "5s", "true")
    assert again.returncode == 1 and "already exists" in again.stderr
    with pytest.raises(DuplicateJob):
        schedules.add(spool, "twice", {"every": "5s", "job": {"command": "true"}})
    with pytest.raises(InvalidJob, match="must not set id"):
        schedules.add(spool, "ids", {"every": "5s", "job": {"command": "true", "id": "fixed"}})


def test_an_invalid_dropped_in_schedule_is_set_aside_with_its_bytes(spool):
    """At once, though just written: a whole JSON object is no longer being written (README)."""
    folder = os.path.join(spool.root, "schedules")
    bad = b'{"cron": "not cron", "job": {"command": "true"}}'
    with open(os.path.join(folder, "broken.json"), "wb") as handle:
        handle.write(bad)
    with open(os.path.join(folder, "good.json"), "w", encoding="utf-8") as handle:
        json.dump({"every": "1d", "command": "true"}, handle)  # the short form of a drop-in
    schedules.sweep(spool, "test")
    assert not os.path.exists(os.path.join(folder, "broken.json"))
    with open(os.path.join(folder, "broken.invalid"), "rb") as handle:
        assert handle.read() == bad
    listed = {entry["name"]: entry for entry in schedules.listing(spool)}
    assert "invalid cron expression" in listed["broken"]["error"]
    assert listed["good"]["next_run"] is not None and "error" not in listed["good"]


def test_a_fresh_unparsable_drop_in_is_left_alone(spool):
    path = os.path.join(spool.root, "schedules", "half.json")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write('{"cron": "* * ')
    schedules.sweep(spool, "test")
    assert os.path.exists(path)  # still being written, as far as anyone can tell


# -- slots, policies, DST ----------------------------------------------------

def _schedule(**fields):
    return schedules.validate({"job": {"command": "true"}, **fields}, "s", {"max_retries": 3})


def test_missed_policies_choose_slots_after_a_downtime():
    now = 1_000_000.0
    start = now - 30.5  # the last fired slot, 30 s ago
    every = dict(every="1s", grace=5)
    skip = schedules.due_slots(_schedule(**every), start, now)
    assert skip == [(slot, False) for slot in range(int(now) - 5, int(now) + 1)]
    once = schedules.due_slots(_schedule(missed="once", **every), start, now)
    assert once == [(int(now) - 6, True)] + skip
    everything = schedules.due_slots(_schedule(missed="all", **every), start, now)
    assert everything == [(slot, True) for slot in range(int(start) + 1, int(now) - 5)] + skip
    # `all` is capped: only the newest CATCH_UP_CAP missed slots run
    capped = schedules.due_slots(_schedule(missed="all", **every), now - 10_000, now)
    assert len([s for s, catch_up in capped if catch_up]) == schedules.CATCH_UP_CAP
    assert capped[0][0] == int(now) - 5 - schedules.CATCH_UP_CAP


def _utc(text):
    return int(datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp())


def _berlin_slots(expr, start, end):
    schedule = _schedule(cron=expr, tz="Europe/Berlin")
    return [datetime.fromtimestamp(s, timezone.utc).strftime("%m-%d %H:%M")
            for s in schedules.slots_between(schedule, _utc(start), _utc(end))]


def test_dst_spring_forward_in_berlin():
    # 2026-03-29: clocks go from 02:00 CET (01:00 UTC) to 03:00 CEST; 02:xx does not exist.
    # A fixed-time job in the gap runs once, at 03:00 CEST (Debian cron's rule, cronsim's too).
    assert _berlin_slots("30 2 * * *", "2026-03-27T12:00", "2026-03-30T12:00") == [
        "03-28 01:30", "03-29 01:00", "03-30 00:30"]
    # A job every 30 minutes follows real time: no slot is lost or doubled, 01:00 UTC is 03:00 CEST.
    assert _berlin_slots("*/30 * * * *", "2026-03-29T00:00", "2026-03-29T02:00") == [
        "03-29 00:30", "03-29 01:00", "03-29 01:30", "03-29 02:00"]


def test_dst_fall_back_in_berlin():
    # 2026-10-25: clocks go from 03:00 CEST (01:00 UTC) back to 02:00 CET; 02:xx happens twice.
    # A fixed-time job in the repeated hour runs once, at its first occurrence (CEST).
    assert _berlin_slots("30 2 * * *", "2026-10-24T12:00", "2026-10-26T12:00") == ["10-25 00:30", "10-26 01:30"]
    # An hourly job runs in both 02:00s: every real hour once.
    assert _berlin_slots("0 * * * *", "2026-10-24T22:30", "2026-10-25T02:30") == [
        "10-24 23:00", "10-25 00:00", "10-25 01:00", "10-25 02:00"]
    # Starting inside the repeated hour (the second 02:15) does not bring back the first 02:30.
    assert _berlin_slots("30 2 * * *", "2026-10-25T01:15", "2026-10-26T12:00") == ["10-26 01:30"]


def test_seconds_field_and_every_are_aligned():
    # six fields: seconds first; 1_000_000 is hh:mm:40 UTC
    assert list(schedules.slots_between(_schedule(cron="*/20 * * * * *"), 1_000_000, 1_000_060)) == [
        1_000_020, 1_000_040, 1_000_060]
    assert list(schedules.slots_between(_schedule(every="30s"), 100, 200)) == [120, 150, 180]


# -- the claim and its crash points ------------------------------------------

def test_a_claim_cut_before_its_publish_is_published_by_the_next_sweep_once(spool, monkeypatch):
    schedules.add(spool, "cut", {"every": "1s", "grace": 3600, "job": {"command": "true"}})
    real = schedules.publish_claimed
    monkeypatch.setattr(schedules, "publish_claimed", lambda *a: (_ for _ in ()).throw(SystemExit("killed")))
    slot = int(time.time())
    with pytest.raises(SystemExit):
        schedules.fire(spool, "w1", "cut", schedules.get(spool, "cut"), slot)
    the_id = schedules.job_id("cut", slot)
    assert spool.find(the_id) is None
    assert os.path.exists(os.path.join(schedules.fired_dir(spool, "cut"), schedules.slot_text(slot), "job.json"))
    monkeypatch.setattr(schedules, "publish_claimed", real)
    # another worker tries the same slot: the claim is taken, nothing is enqueued twice
    assert schedules.fire(spool, "w2", "cut", schedules.get(spool, "cut"), slot) is False
    schedules.sweep(spool, "w2")
    assert spool.find(the_id) == "pending"
    # it runs and finishes; no later sweep brings it back
    os.rename(spool.path("pending", the_id), spool.path("completed", the_id))
    schedules.sweep(spool, "w3")
    schedules.sweep(spool, "w3", now=time.time() + 1)
    assert spool.find(the_id) == "completed" and not os.path.exists(spool.path("pending", the_id))


def test_markers_are_pruned_behind_a_floor_and_a_stale_claim_below_it_is_not_published(spool, monkeypatch):
    monkeypatch.setattr(schedules, "KEEP_MARKERS", 5)
    schedules.add(spool, "many", {"every": "1s", "missed": "all", "grace": 1,
                                  "created_at": "2000-01-01T00:00:00Z", "job": {"command": "true"}})
    now = float(int(time.time()))
    schedules.sweep(spool, "w1", now=now)  # fires CATCH_UP_CAP missed slots and the on-time ones
    schedules.sweep(spool, "w1", now=now + 1)
    directory = schedules.fired_dir(spool, "many")
    kept = schedules._slot_names(directory)
    assert len(kept) <= 5 + 1 and schedules._floor(directory) == kept[-5]
    # a worker that computed its slots long ago claims an old slot: the claim succeeds (its
    # marker was pruned) but the floor stops the publish, so that slot cannot run twice
    old_slot = int(now) - 50
    assert spool.find(schedules.job_id("many", old_slot)) == "pending"
    os.unlink(spool.path("pending", schedules.job_id("many", old_slot)))  # it ran, and was purged
    assert schedules.fire(spool, "stale", "many", schedules.get(spool, "many"), old_slot)
    assert spool.find(schedules.job_id("many", old_slot)) is None


# -- real workers ------------------------------------------------------------

def test_four_workers_enqueue_every_one_second_slot_exactly_once(spool_path, workers, tmp_path):
    ran = tmp_path / "ran.txt"
    spool = Spool(spool_path)
    for _ in range(4):
        workers.start()
    workers.wait_ready(4)
    schedules.add(spool, "tick", {"every": "1s", "job": {"command": append_id(ran)}})
    first = wait_until(lambda: slot_times(schedule_jobs(spool, "tick"))[:1], message="the first slot")[0]
    last = first + 29
    wait_until(lambda: len([s for s in slot_times(schedule_jobs(spool, "tick")) if s <= last]) >= 30
               or time.time() > last + 20, timeout=60, message="30 slots")
    wait_until(lambda: all(job["state"] == "completed" for job in schedule_jobs(spool, "tick").values()
                           if parse_time(job["slot"]) <= last), timeout=30, message="the 30 slots' jobs to finish")
    slots = [s for s in slot_times(schedule_jobs(spool, "tick")) if s <= last]
    assert slots == list(range(first, last + 1))  # none skipped, none twice
    runs = [line for line in read_lines(ran) if line <= schedules.job_id("tick", last)]
    assert sorted(runs) == [schedules.job_id("tick", s) for s in slots]  # each ran once
    markers = [m for m in schedules._slot_names(schedules.fired_dir(spool, "tick"))
               if schedules.slot_time(m) <= last]
    assert len(markers) == 30
    assert not workers.tracebacks()


def test_missed_policies_after_every_worker_stopped(spool_path, workers, qc):
    spool = Spool(spool_path)
    for policy in ("skip", "once", "all"):
        schedules.add(spool, policy, {"every": "1s", "grace": 2, "missed": policy, "job": {"command": "true"}})
    workers.start()
    workers.wait_ready(1)
    wait_until(lambda: all(len(schedule_jobs(spool, p)) >= 2 for p in ("skip", "once", "all")), message="slots")
    assert qc("worker", "stop").returncode == 0
    last = {p: max(slot_times(schedule_jobs(spool, p))) for p in ("skip", "once", "all")}
    wait_until(lambda: time.time() > max(last.values()) + 8, timeout=20, message="8 slots to pass")
    restarted = time.time()
    workers.start()
    wait_until(lambda: all(max(slot_times(schedule_jobs(spool, p))) >= restarted + 2 for p in ("skip", "once", "all")),
               message="slots after the restart")
    assert qc("worker", "stop").returncode == 0
    jobs = {p: schedule_jobs(spool, p) for p in ("skip", "once", "all")}

    def catch_ups(policy):
        return sorted(int(parse_time(j["slot"])) for j in jobs[policy].values() if j.get("catch_up"))

    def gap(policy):
        slots = slot_times(jobs[policy])
        return [s for s in range(slots[0], slots[-1] + 1) if s not in slots]

    assert catch_ups("skip") == [] and len(gap("skip")) >= 5
    assert len(catch_ups("once")) == 1 and last["once"] < catch_ups("once")[0]
    # The latest slot already past its grace when the restarted workers fired the catch-up (its
    # created_at), whenever that was: how fast workers restart does not matter.
    caught = next(j for j in jobs["once"].values() if j.get("catch_up"))
    assert parse_time(caught["created_at"]) - 3 < int(parse_time(caught["slot"])) < parse_time(caught["created_at"]) - 2
    assert len(gap("once")) >= 4
    assert gap("all") == [] and len(catch_ups("all")) >= 5  # every missed slot, once each
    assert catch_ups("all")[0] == last["all"] + 1


def test_a_retried_rename_that_reports_enoent_after_succeeding_still_counts_as_the_claim(spool, monkeypatch):
    """NFS may resend a rename whose reply was lost: the second try fails, the first one happened."""
    import errno as errno_module
    schedules.add(spool, "nfs", {"every": "1s", "grace": 3600, "job": {"command": "true"}})
    real_rename = os.rename

    def rename_then_enoent(source, target):
        real_rename(source, target)
        if os.path.basename(source).startswith(".claim-"):
            raise FileNotFoundError(errno_module.ENOENT, "No such file or directory", source)
    monkeypatch.setattr(schedules.os, "rename", rename_then_enoent)
    slot = int(time.time())
    assert schedules.fire(spool, "w1", "nfs", schedules.get(spool, "nfs"), slot) is True
    assert spool.find(schedules.job_id("nfs", slot)) == "pending"
    # someone else's claim of the next slot, seen as EEXIST, is not taken for ours
    other = os.path.join(schedules.fired_dir(spool, "nfs"), schedules.slot_text(slot + 1))
    os.mkdir(other)
    with open(os.path.join(other, "owner"), "w") as handle:
        handle.write('{"token": "someone-else"}')
    monkeypatch.setattr(schedules.os.path, "lexists", lambda path: False)  # past the cheap pre-check
    claimed = schedules.fire(spool, "w1", "nfs", schedules.get(spool, "nfs"), slot + 1)
    monkeypatch.undo()
    assert claimed is False and spool.find(schedules.job_id("nfs", slot + 1)) is None
