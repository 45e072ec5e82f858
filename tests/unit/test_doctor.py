"""`queuectl doctor [--repair] [--json]`: each kind of damage is found, left alone by a check, and repaired.

Each case damages a fresh spool the way a crash, a full disk or a hand edit
would, then shows: the check reports it (not repaired) and changes nothing;
--repair fixes it without deleting a job's bytes; a second check finds the
spool healthy (or, for what must not be repaired, still reports it).
"""

from __future__ import annotations

import fcntl
import json
import os
import stat
import time

import pytest
from support import put_job
from support.chaos import assert_intact
from support.workers import enqueue, wait_for_state

from queuectl import Spool
from queuectl.core import lifecycle, registry
from queuectl.core.job import iso
from queuectl.doctor import check

AN_HOUR_AGO = time.time() - 3600
TWO_DAYS_AGO = time.time() - 2 * 86400


def snapshot(root: str) -> dict[str, tuple]:
    """Every entry under the spool: kind, mode and, for files, bytes (never through a symlink)."""
    found = {}
    for folder, folders, names in os.walk(root):
        for name in folders + names:
            path = os.path.join(folder, name)
            info = os.lstat(path)
            data = None
            if stat.S_ISREG(info.st_mode):
                with open(path, "rb") as handle:
                    data = handle.read()
            found[os.path.relpath(path, root)] = (stat.S_IFMT(info.st_mode), stat.S_IMODE(info.st_mode), data)
    return found


def write(path: str, data: bytes, *, mtime: float | None = None) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))


def read(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def problems(findings: list[dict]) -> list[tuple[str, str, bool]]:
    return [(finding["problem"], finding["path"], finding["repaired"]) for finding in findings]


def diagnose(spool_path: str, expected: list[tuple[str, str]]) -> list[dict]:
    """Check (no repair), then repair: both report `expected`; the check changed nothing, the repair all."""
    spool = Spool(spool_path)
    before = snapshot(spool_path)
    findings = check(spool)
    assert problems(findings) == [(problem, path, False) for problem, path in expected]
    assert snapshot(spool_path) == before
    repaired = check(spool, repair=True)
    assert problems(repaired) == [(problem, path, True) for problem, path in expected]
    assert check(spool) == []
    return repaired


def dead_letter_of(spool_path: str, original_name: str) -> tuple[dict, bytes]:
    """The dead/ record describing a file once named `original_name`, and the bytes it kept."""
    spool = Spool(spool_path)
    for job in spool.iter_jobs("dead"):
        if job.get("original_name") == original_name:
            kept = os.path.join(spool_path, "dead", job["original_file"])
            return job, read(kept) if stat.S_ISREG(os.lstat(kept).st_mode) else None
    raise AssertionError(f"no dead letter for {original_name}")


def claimed_by_a_dead_worker(spool_path: str, job_id: str) -> None:
    pid = os.fork()
    if pid == 0:
        lifecycle.claim(Spool(spool_path), "pending", job_id, "gone-worker", time.time())
        os._exit(0)
    os.waitpid(pid, 0)


# -- each kind of damage ---------------------------------------------------------

def test_a_healthy_spool_has_no_findings(spool_path, workers, qc):
    job_id = enqueue(spool_path, "echo hi")
    assert workers.start("--burst").wait() == 0
    wait_for_state(spool_path, job_id, "completed")

    result = qc("doctor")
    assert (result.returncode, result.stdout) == (0, "spool is healthy\n")
    result = qc("doctor", "--json")
    assert (result.returncode, json.loads(result.stdout)) == (0, [])


def test_an_id_in_two_folders_keeps_the_copy_further_along(spool_path, spool):
    put_job(spool_path, "completed", "twice", command="echo done")
    copy = put_job(spool_path, "pending", "twice", command="echo again")
    copy_bytes = read(os.path.join(spool_path, "pending", "twice.json"))

    repaired = diagnose(spool_path, [("duplicate-id", "pending/twice.json")])

    assert "also in completed/, which is kept" in repaired[0]["detail"]
    assert Spool(spool_path).get("twice")["command"] == "echo done"
    record, kept = dead_letter_of(spool_path, "twice.json")
    assert kept == copy_bytes and json.loads(kept)["command"] == copy["command"]
    assert record["id"] != "twice" and "duplicate id 'twice'" in record["last_error"]
    assert_intact(spool_path, {"twice"})


@pytest.mark.parametrize("source, target, written, final", [
    ("pending", "processing", "pending", "pending"),      # a claim (moves, then rewrites)
    ("processing", "completed", "completed", "completed"),  # a settle (rewrites, then moves)
    ("pending", "dead", "pending", "dead"),               # a cancel
    ("failed", "pending", "failed", "failed"),            # a retry: undone, the job keeps its backoff
    ("dead", "pending", "dead", "dead"),                  # a dlq retry: undone, never a run too many
])
def test_one_file_under_two_names_keeps_the_name_further_along(spool_path, source, target, written, final):
    """A link + unlink move cut between its steps: the extra name goes, no bytes with it; the job ends once."""
    put_job(spool_path, written, "linked", command="echo linked")
    if written != source:
        os.rename(os.path.join(spool_path, written, "linked.json"), os.path.join(spool_path, source, "linked.json"))
    os.link(os.path.join(spool_path, source, "linked.json"), os.path.join(spool_path, target, "linked.json"))

    spool = Spool(spool_path)
    findings = check(spool, repair=True)

    duplicate = [finding for finding in findings if finding["problem"] == "duplicate-id"]
    assert len(duplicate) == 1 and duplicate[0]["repaired"] and "under a second name" in duplicate[0]["detail"]
    assert check(spool) == []
    found = assert_intact(spool_path, {"linked"})
    assert found.kept == set()  # nothing needed setting aside
    assert found.state_of("linked") == final
    assert spool.get("linked")["command"] == "echo linked"


def test_invalid_files_in_state_folders_go_to_dead_with_their_bytes(spool_path, spool, tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"not yours")
    outside_mtime = os.stat(outside).st_mtime_ns
    write(os.path.join(spool_path, "completed", "garbage.json"), b"\x00\xffnot json")
    write(os.path.join(spool_path, "failed", "other.json"), b'{"id": "someone-else", "command": "true"}')
    write(os.path.join(spool_path, "completed", "notes.txt"), b"a note")
    os.symlink(outside, os.path.join(spool_path, "failed", "link.json"))
    os.mkdir(os.path.join(spool_path, "dead", "folder.json"))
    write(os.path.join(spool_path, "pending", "old-drop.json"), b'{"command": ', mtime=AN_HOUR_AGO)

    repaired = diagnose(spool_path, [
        ("invalid-file", "pending/old-drop.json"), ("invalid-file", "failed/link.json"),
        ("invalid-file", "failed/other.json"), ("invalid-file", "completed/garbage.json"),
        ("invalid-file", "completed/notes.txt"), ("invalid-file", "dead/folder.json")])

    assert all("bytes kept" in finding["detail"] for finding in repaired)
    for original, data in (("garbage.json", b"\x00\xffnot json"), ("notes.txt", b"a note"),
                           ("other.json", b'{"id": "someone-else", "command": "true"}'),
                           ("old-drop.json", b'{"command": ')):
        record, kept = dead_letter_of(spool_path, original)
        assert kept == data and record["last_error"].startswith("invalid job: ")
    record, _ = dead_letter_of(spool_path, "link.json")
    assert os.readlink(os.path.join(spool_path, "dead", record["original_file"])) == str(outside)
    assert "symlink" in record["last_error"]
    record, _ = dead_letter_of(spool_path, "folder.json")
    assert os.path.isdir(os.path.join(spool_path, "dead", record["original_file"]))
    assert outside.read_bytes() == b"not yours" and os.stat(outside).st_mtime_ns == outside_mtime


def test_a_drop_in_that_may_still_be_written_is_reported_not_moved(spool_path, spool, qc):
    write(os.path.join(spool_path, "pending", "half.json"), b'{"command": "ec')

    result = qc("doctor", "--repair")

    assert result.returncode == 1
    assert "invalid-file: pending/half.json" in result.stdout and "may still be being written" in result.stdout
    assert os.listdir(os.path.join(spool_path, "pending")) == ["half.json"]


def test_valid_drop_ins_are_left_to_the_workers(spool_path, spool):
    write(os.path.join(spool_path, "pending", "plain.json"), b'{"command": "date"}')
    write(os.path.join(spool_path, "pending", "named.json"), b'{"id": "other-name", "command": "date"}')

    assert check(Spool(spool_path), repair=True) == []


def test_a_state_field_that_disagrees_with_its_folder_is_rewritten(spool_path, spool):
    """A move cut before its rewrite, e.g. `cancel` (move to dead/, then rewrite)."""
    put_job(spool_path, "pending", "cut", command="true")
    os.rename(os.path.join(spool_path, "pending", "cut.json"), os.path.join(spool_path, "dead", "cut.json"))
    put_job(spool_path, "failed", "retried", command="true", attempts=1, next_run_at=iso(time.time()))
    os.rename(os.path.join(spool_path, "failed", "retried.json"), os.path.join(spool_path, "pending", "retried.json"))

    repaired = diagnose(spool_path, [("state-mismatch", "pending/retried.json"), ("state-mismatch", "dead/cut.json")])

    assert "says 'pending'; the folder is the truth" in repaired[1]["detail"]
    spool = Spool(spool_path)
    assert spool.read("dead", "cut.json")["command"] == "true"
    assert json.loads(read(os.path.join(spool_path, "dead", "cut.json")))["state"] == "dead"
    assert json.loads(read(os.path.join(spool_path, "pending", "retried.json")))["state"] == "pending"


def test_kept_bytes_without_their_record_get_one(spool_path, spool):
    """A dead-letter cut between moving the bytes and writing the record."""
    write(os.path.join(spool_path, "dead", "lonely.invalid"), b"{broken")
    write(os.path.join(spool_path, "dead", "taken.invalid"), b'{"id": "taken", "command": "true"}')
    put_job(spool_path, "completed", "taken", command="true")

    diagnose(spool_path, [("missing-dead-record", "dead/lonely.invalid"), ("missing-dead-record", "dead/taken.invalid")])

    spool = Spool(spool_path)
    record = spool.get("lonely")
    assert record["invalid"] is True and record["original_file"] == "lonely.invalid"
    assert record["last_error"].startswith("invalid job: invalid JSON")
    assert read(os.path.join(spool_path, "dead", "lonely.invalid")) == b"{broken"
    # "taken" belongs to a completed job: the kept bytes take a new id rather than a second "taken".
    assert spool.find("taken") == "completed"
    record, kept = dead_letter_of(spool_path, "taken.invalid")
    assert record["id"] != "taken" and kept == b'{"id": "taken", "command": "true"}'
    assert "valid job" in record["last_error"]


def test_a_job_in_processing_without_a_live_owner_is_recovered(spool_path, spool):
    put_job(spool_path, "pending", "orphan", command="true")
    claimed_by_a_dead_worker(spool_path, "orphan")

    repaired = diagnose(spool_path, [("orphaned-job", "processing/orphan.json")])

    assert "worker died during the run" in repaired[0]["detail"] and "recovered to failed/" in repaired[0]["detail"]
    job = Spool(spool_path).get("orphan")
    assert job["state"] == "failed" and job["last_error"] == "worker gone-worker died during the run"


def test_a_drop_in_left_in_adopting_goes_back_to_pending(spool_path, spool):
    """An adoption cut short on a shared spool left the file in adopting/: put back under its name."""
    data = b'{"command": "echo back"}'
    os.mkdir(os.path.join(spool_path, "adopting"))  # made by the first adoption on a shared spool
    write(os.path.join(spool_path, "adopting", "back.json"), data)

    diagnose(spool_path, [("cut-adoption", "adopting/back.json")])

    assert read(os.path.join(spool_path, "pending", "back.json")) == data
    assert os.listdir(os.path.join(spool_path, "adopting")) == []


@pytest.mark.parametrize("state", ["failed", "completed", "dead"])
def test_a_job_restored_by_hand_into_a_finished_folder_gets_its_marker(spool_path, spool, qc, state):
    """Without its marker only a look at the folders refuses its id; after the repair the marker does."""
    put_job(spool_path, state, "restored", command="true")
    os.unlink(spool.marker("restored"))  # as a file copied in from a backup has none

    diagnose(spool_path, [("missing-marker", f"{state}/restored.json")])

    assert os.path.samestat(os.lstat(spool.marker("restored")),
                            os.lstat(os.path.join(spool_path, state, "restored.json")))
    again = qc("enqueue", "--id", "restored", "true")
    assert again.returncode != 0 and "restored" in again.stderr


def test_a_job_a_live_worker_owns_is_not_touched(spool_path, spool):
    put_job(spool_path, "pending", "running", command="true")
    spool = Spool(spool_path)
    held = lifecycle.claim(spool, "pending", "running", "this-test", time.time())
    try:
        before = snapshot(spool_path)
        assert check(spool, repair=True) == []
        after = snapshot(spool_path)
        after.pop("doctor.lock", None)  # the repair's own lock file (docs/decisions/locks.md)
        assert after == before
    finally:
        held.unlock()


def test_folders_others_can_write_are_closed(spool_path, qc):
    Spool(spool_path)
    os.chmod(spool_path, 0o777)
    os.chmod(os.path.join(spool_path, "pending"), 0o770)

    refused = qc("status")
    assert refused.returncode == 1 and "writable by group or others" in refused.stderr

    result = qc("doctor")
    assert result.returncode == 1
    assert "shared-permissions: . - mode 0777" in result.stdout
    assert "shared-permissions: pending - mode 0770" in result.stdout
    assert qc("doctor", "--repair").returncode == 0
    assert stat.S_IMODE(os.stat(spool_path).st_mode) == 0o755
    assert stat.S_IMODE(os.stat(os.path.join(spool_path, "pending")).st_mode) == 0o750
    assert qc("status").returncode == 0


def test_only_old_temporary_files_nobody_holds_are_removed(spool_path):
    spool = Spool(spool_path)
    tmp = spool.dir("tmp")
    write(os.path.join(tmp, ".left.123.tmp"), b"half a job", mtime=AN_HOUR_AGO)
    write(os.path.join(tmp, ".fresh.456.tmp"), b"being written")
    write(os.path.join(tmp, ".held.789.tmp"), b"being rewritten", mtime=AN_HOUR_AGO)
    write(os.path.join(tmp, ".open.321.tmp"), b"a writer that stalled", mtime=AN_HOUR_AGO)
    os.mkdir(os.path.join(tmp, "a-folder"))
    os.utime(os.path.join(tmp, "a-folder"), (AN_HOUR_AGO, AN_HOUR_AGO))
    holder = os.open(os.path.join(tmp, ".held.789.tmp"), os.O_RDONLY)
    writer = os.open(os.path.join(tmp, ".open.321.tmp"), os.O_WRONLY | os.O_APPEND)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)
        findings = check(spool, repair=True)
    finally:
        os.close(holder)
        os.close(writer)

    assert problems(findings) == [("stray-temp", "tmp/.left.123.tmp", True), ("stray-temp", "tmp/a-folder", False)]
    assert sorted(os.listdir(tmp)) == [".fresh.456.tmp", ".held.789.tmp", ".open.321.tmp", "a-folder"]


def test_logs_of_vanished_jobs_are_removed_only_after_a_day(spool_path, spool, qc):
    spool = Spool(spool_path)
    put_job(spool_path, "completed", "kept", command="true")
    write(spool.log_path("kept"), b"output\n", mtime=TWO_DAYS_AGO)
    write(spool.log_path("purged-long-ago"), b"old output\n", mtime=TWO_DAYS_AGO)
    write(spool.log_path("deleted-today"), b"new output\n")

    result = qc("doctor", "--repair")

    assert result.returncode == 1  # the recent one is left for a person to decide
    assert "orphan-log: logs/purged-long-ago.log - no job has this id" in result.stdout
    assert "orphan-log: logs/deleted-today.log" in result.stdout and "kept: written less than a day ago" in result.stdout
    assert sorted(os.listdir(spool.dir("logs"))) == ["deleted-today.log", "kept.log"]


def test_dead_workers_records_are_removed_live_ones_kept(spool_path, workers):
    spool = Spool(spool_path)
    live = workers.start()
    workers.wait_ready()
    registry.write_record(spool, "gone-1", {"pid": 999999, "host": "elsewhere", "job": None})
    write(registry.lock_path(spool, "gone-2"), b"", mtime=AN_HOUR_AGO)

    findings = check(spool, repair=True)

    assert problems(findings) == [("stale-worker", "workers/gone-1.json", True),
                                  ("stale-worker", "workers/gone-2.lock", True)]
    assert [record["pid"] for record in registry.records(spool, live_only=False)] == [live.pid]
    assert not os.path.exists(registry.lock_path(spool, "gone-2"))


def test_a_broken_config_is_reported_and_nothing_else_is_touched(spool_path, qc):
    Spool(spool_path)
    write(os.path.join(spool_path, "config.json"), b'{"max_retries": -1}')

    result = qc("doctor", "--repair", "--json")

    assert result.returncode == 1
    [finding] = json.loads(result.stdout)
    assert finding["problem"] == "invalid-config" and finding["repaired"] is False
    assert "max_retries" in finding["detail"]


def test_a_repair_waits_for_another_repair_and_says_which_lock(spool_path, qc):
    """doctor --repair holds doctor.lock (docs/decisions/locks.md): while another holds it, a repair
    gives up with one line naming the lock, and changes nothing."""
    import filelock

    assert qc("status").returncode == 0
    lock = filelock.FileLock(os.path.join(spool_path, "doctor.lock"))
    with lock:
        result = qc("doctor", "--repair", timeout=60)  # waits the edit timeout (10 s), then gives up
    assert result.returncode != 0
    assert "doctor.lock" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert qc("doctor", "--repair").returncode == 0
