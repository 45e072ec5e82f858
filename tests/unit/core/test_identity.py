"""One id, one job for life; the spool's own names are never ids; odd entries; honest messages.

Each test here reproduces one defect of issue #18 in-process, at the
instant that exposed it (docs/decisions/identity.md).
"""

from __future__ import annotations

import json
import os
import random
import time

import pytest
from support import read_job

from queuectl import Spool
from queuectl.core import lifecycle
from queuectl.core.config import defaults, parse_value
from queuectl.core.errors import ConfigError, DuplicateJob, InvalidJob, QueueError, SpoolError
from queuectl.core.job import build, prepare_fields, retry_delay
from queuectl.core.lease import Liveness
from queuectl.core.outcome import Outcome
from queuectl.core.spool import LockedJob


def claimed(spool: Spool, job_id: str, state: str = "pending"):
    held = lifecycle.claim(spool, state, job_id, "test-worker", time.time() + 1)
    assert held is not None
    return held


def settled(spool: Spool, held, **outcome) -> str:
    now = time.time()
    state = lifecycle.settle(spool, held, Outcome(started=now, finished=now, **outcome), None)
    held.unlock()
    return state


def where(spool_path: str, job_id: str) -> list[str]:
    return [state for state in ("pending", "processing", "completed", "failed", "dead")
            if os.path.lexists(os.path.join(spool_path, state, job_id + ".json"))]


def invalid_records(spool_path: str) -> list[dict]:
    dead = os.path.join(spool_path, "dead")
    records = []
    for name in sorted(os.listdir(dead)):
        if name.endswith(".json"):
            with open(os.path.join(dead, name), encoding="utf-8") as handle:
                record = json.load(handle)
            if record.get("invalid"):
                records.append(record)
    return records


# -- an id names one job for life ---------------------------------------------------

def test_an_enqueue_is_refused_while_the_ids_job_is_between_two_folders(spool, spool_path, monkeypatch):
    """A look at the folders one after another can miss a job that moves (failed/ -> processing/);
    the refusal must not depend on it. Simulated: every look at the folders misses the job."""
    spool.enqueue("exit 1", id="z", max_retries=1)
    assert settled(spool, claimed(spool, "z"), exit_code=1) == "failed"
    monkeypatch.setattr(Spool, "find", lambda self, job_id: None)
    with pytest.raises(DuplicateJob):
        spool.enqueue("echo intruder", id="z")
    assert where(spool_path, "z") == ["failed"]
    assert read_job(spool_path, "failed", "z")["command"] == "exit 1"


def test_a_half_written_drop_in_on_a_running_id_never_costs_the_running_job(spool, spool_path):
    """`worker stop --now` puts the job back into pending/, where a drop-in took its name meanwhile."""
    spool.enqueue("sleep 60", id="x")
    held = claimed(spool, "x")
    with open(os.path.join(spool_path, "pending", "x.json"), "w") as handle:
        handle.write('{"command": "echo intruder", "id"')  # its writer has not finished
    assert settled(spool, held, exit_code=None, signal=15, interrupted="stop") == "pending"
    job = read_job(spool_path, "pending", "x")
    assert job["command"] == "sleep 60" and job["id"] == "x" and not job.get("invalid")
    records = invalid_records(spool_path)
    assert len(records) == 1 and records[0]["id"] != "x" and "duplicate id 'x'" in records[0]["last_error"]
    with open(os.path.join(spool_path, "dead", records[0]["original_file"]), encoding="utf-8") as handle:
        assert handle.read() == '{"command": "echo intruder", "id"'


def test_a_copy_of_a_dead_job_dropped_back_into_pending_does_not_run(spool, spool_path):
    """Byte-identical to a real job in queuectl's own form: still checked before it runs."""
    spool.enqueue("echo original", id="d", max_retries=0)
    assert settled(spool, claimed(spool, "d"), exit_code=1) == "dead"
    copy = read_job(spool_path, "dead", "d")
    copy.update(state="pending", command="echo copy")
    with open(os.path.join(spool_path, "pending", "d.json"), "w") as handle:
        json.dump(copy, handle)
    # A claim never runs it, nor adopts it: it says what it is, and adoption refuses the taken id.
    assert lifecycle.claim(spool, "pending", "d", "test-worker", time.time() + 1) == lifecycle.DROP_IN
    assert lifecycle.adopt(spool, "d.json", complete=True) is None
    assert where(spool_path, "d") == ["dead"]
    assert read_job(spool_path, "dead", "d")["command"] == "echo original"
    records = invalid_records(spool_path)
    assert len(records) == 1 and records[0]["id"] != "d" and records[0]["command"] == "echo copy"


def test_a_dlq_retry_cut_short_never_runs_a_job_past_its_retries(spool, spool_path, monkeypatch):
    """A SIGKILL between the steps of `dlq retry`: whatever it leaves, no run has attempts > max_retries + 1."""
    spool.enqueue("exit 1", id="r", max_retries=0)
    assert settled(spool, claimed(spool, "r"), exit_code=1) == "dead"
    original = LockedJob.save

    def killed(self, *args, **kwargs):
        raise KeyboardInterrupt  # the process dies here: nothing after runs

    monkeypatch.setattr(LockedJob, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        lifecycle.dlq_retry(spool, "r")
    monkeypatch.setattr(LockedJob, "save", original)
    for state in where(spool_path, "r"):
        if state == "pending":
            held = claimed(spool, "r")
            assert held.job["attempts"] <= held.job["max_retries"] + 1
            held.unlock()


def test_a_dropped_in_file_on_a_taken_id_goes_to_dead_with_its_bytes(spool, spool_path):
    spool.enqueue("echo first", id="t")
    data = b'{"command": "echo second", "id": "t"}'
    with open(os.path.join(spool_path, "pending", "other.json"), "wb") as handle:
        handle.write(data)
    assert lifecycle.adopt(spool, "other.json", complete=True) is None
    assert read_job(spool_path, "pending", "t")["command"] == "echo first"
    records = invalid_records(spool_path)
    assert len(records) == 1
    with open(os.path.join(spool_path, "dead", records[0]["original_file"]), "rb") as handle:
        assert handle.read() == data


# -- the spool's own names are not ids ------------------------------------------------

LAYOUT_NAMES = ["x.prune", "x.invalid", "x.fired", "x.paused", "x.lock", "x.lease", "x.json", "x.log",
                "x.complete", "cancel-x", "stop", "slot-1", "floor", "owner", "paused", "config"]


def test_ids_shaped_like_the_spools_own_names_live_and_die_without_cross_talk(spool, spool_path):
    """Every id suffix and prefix the layout uses: enqueued (waiting for x and waited for by x),
    run, purged with x; no error and nothing of one job touches another's."""
    spool.enqueue("true", id="x")
    for name in LAYOUT_NAMES:
        spool.enqueue("true", id=name, after=["x"])
        spool.enqueue("true", id=f"after-{name}", after=[name])
    for job_id in ["x", *LAYOUT_NAMES, *(f"after-{name}" for name in LAYOUT_NAMES)]:
        assert settled(spool, claimed(spool, job_id), exit_code=0) == "completed"
    assert lifecycle.purge(spool, ["completed"]) == 1 + 2 * len(LAYOUT_NAMES)
    assert spool.counts() == dict.fromkeys(("pending", "processing", "completed", "failed", "dead"), 0)
    for name in LAYOUT_NAMES:  # every id is free again
        spool.enqueue("true", id=name)


def test_a_job_that_waits_for_x_prune_does_not_block_the_deletion_of_x(spool, spool_path):
    spool.enqueue("true", id="x")
    spool.enqueue("true", id="x.prune")
    assert settled(spool, claimed(spool, "x"), exit_code=0) == "completed"
    spool.enqueue("true", id="child", after=["x.prune"])  # makes the waiting folder of x.prune
    assert lifecycle.purge(spool, ["completed"]) == 1
    assert where(spool_path, "x") == []


# -- odd entries ----------------------------------------------------------------------

def test_a_folder_dropped_into_pending_is_set_aside_once_and_purged_without_error(spool, spool_path):
    os.mkdir(os.path.join(spool_path, "pending", "adir"))
    with open(os.path.join(spool_path, "pending", "adir", "inside"), "w") as handle:
        handle.write("kept")
    assert lifecycle.adopt(spool, "adir", complete=True) is None
    assert os.path.isdir(os.path.join(spool_path, "dead", "adir.invalid"))
    assert lifecycle.purge(spool, ["dead"]) == 1
    assert os.listdir(os.path.join(spool_path, "dead")) == []


def test_odd_entries_left_in_adopting_go_back_or_aside_without_error(spool, spool_path, tmp_path):
    """A folder, a FIFO, a symlink and a file whose name pending/ took meanwhile, in adopting/."""
    adopting = os.path.join(spool_path, "adopting")
    os.mkdir(adopting)  # made by the first adoption on a shared spool
    os.mkdir(os.path.join(adopting, "adir"))
    os.mkfifo(os.path.join(adopting, "afifo.json"))
    (tmp_path / "target").write_text("not yours")
    os.symlink(tmp_path / "target", os.path.join(adopting, "alink.json"))
    for folder in ("adopting", "pending"):
        with open(os.path.join(spool_path, folder, "taken.json"), "w") as handle:
            handle.write(json.dumps({"command": f"echo {folder}"}))
    assert lifecycle.sweep_adopting(spool, Liveness(spool)) == 2  # the folder and the FIFO went back
    assert os.listdir(adopting) == []
    assert (tmp_path / "target").read_text() == "not yours"
    for name in ("adir", "afifo.json"):
        assert lifecycle.adopt(spool, name, complete=True) is None  # then set aside as not jobs
    assert len(invalid_records(spool_path)) == 4
    assert lifecycle.adopt(spool, "taken.json", complete=True) == "taken.json"
    assert spool.get("taken")["command"] == "echo pending"


def test_an_ids_own_job_left_in_adopting_takes_its_name_back_from_a_drop_in(spool, spool_path):
    """An adoption cut after its marker named the rewritten file, which is left in adopting/ as its
    id's own job; a drop-in took the name in pending/ meanwhile: the job goes back, the drop-in aside."""
    spool.enqueue("echo mine", id="own")
    os.mkdir(os.path.join(spool_path, "adopting"))  # made by the first adoption on a shared spool
    os.rename(os.path.join(spool_path, "pending", "own.json"), os.path.join(spool_path, "adopting", "own.json"))
    with open(os.path.join(spool_path, "pending", "own.json"), "w") as handle:
        handle.write(json.dumps({"command": "echo intruder"}))
    held = spool.lock("adopting", "own.json")
    assert held is not None
    with held:
        assert lifecycle.put_back(spool, held) == "pending"
    assert spool.get("own")["command"] == "echo mine"
    assert claimed(spool, "own").job["command"] == "echo mine"  # its id's own: claimed, not left as a drop-in
    assert [job["last_error"] for job in invalid_records(spool_path)] == [
        "invalid job: duplicate id 'own': another job holds this id"]


def test_a_stale_copy_of_a_running_job_is_never_put_back_into_pending(spool, spool_path):
    """Two moves of one file at once (a claim's and an adopter's link, on a file system where a
    move is a link and an unlink) leave the job as enqueued under a second name in adopting/ while
    its claimed version runs. Put back, that copy would run the job again: it goes to dead/ instead,
    under a new id, and the running job keeps its id and its marker."""
    spool.enqueue("echo once", id="run")
    held = claimed(spool, "run")  # rewritten in processing/: the marker still names the enqueued file
    os.mkdir(os.path.join(spool_path, "adopting"))
    os.link(os.path.join(spool_path, "ids", "run"), os.path.join(spool_path, "adopting", "run.json"))
    copy = spool.lock("adopting", "run.json")
    assert copy is not None
    with copy:
        assert lifecycle.put_back(spool, copy) == "dead"
    assert not os.path.exists(os.path.join(spool_path, "pending", "run.json"))
    assert [record["original_name"] for record in invalid_records(spool_path)] == ["run.json"]
    assert "in processing/" in invalid_records(spool_path)[0]["last_error"]
    assert settled(spool, held, exit_code=0) == "completed"
    assert spool.get("run")["state"] == "completed"


def test_a_log_that_is_a_folder_or_a_symlink_is_reported_by_its_path(spool, spool_path, tmp_path):
    spool.enqueue("true", id="f")
    spool.enqueue("true", id="s")
    os.mkdir(spool.log_path("f"))
    (tmp_path / "elsewhere").write_text("secret")
    os.symlink(tmp_path / "elsewhere", spool.log_path("s"))
    with pytest.raises(SpoolError, match=f"{spool.log_path('f')}.*not a regular file"):
        spool.read_log("f")
    with pytest.raises(SpoolError, match=f"{spool.log_path('s')}.*symlink"):
        spool.read_log("s")


# -- messages that say the truth ------------------------------------------------------

def test_a_huge_drop_in_is_reported_with_its_real_size(spool, spool_path):
    path = os.path.join(spool_path, "pending", "huge.json")
    with open(path, "wb") as handle:
        handle.truncate(1 << 30)  # sparse: costs no disk
    assert lifecycle.adopt(spool, "huge.json", complete=True) is None
    [record] = invalid_records(spool_path)
    assert "over the 1 MiB limit" in record["last_error"] and "1073741824 bytes" in record["last_error"]


def test_a_unique_key_with_a_nul_is_refused_for_its_nul():
    with pytest.raises(InvalidJob, match="NUL"):
        build({"command": "true", "unique_key": "a\0b"}, defaults())


@pytest.mark.parametrize("options", [{"delay": 3000000 * 86400.0}, {"delay": 1e300}, {"delay": float("nan")},
                                     {"run_at": 1e20}])
def test_an_absurd_delay_or_run_at_is_refused_with_one_line(spool, options):
    with pytest.raises(QueueError) as caught:
        spool.enqueue("true", **options)
    assert "\n" not in str(caught.value)
    with pytest.raises(InvalidJob):
        prepare_fields("true", **options)


# -- retry jitter -----------------------------------------------------------------------

def test_backoff_jitter_is_a_checked_setting_that_moves_nothing_by_default():
    assert defaults()["backoff_jitter"] == 0
    assert parse_value("backoff-jitter", "0.5") == 0.5
    for bad in ("-0.1", "1.5", "nan", "x"):
        with pytest.raises(ConfigError):
            parse_value("backoff_jitter", bad)
    assert retry_delay(3, {**defaults()}) == 8.0


def test_backoff_jitter_spreads_retry_delays_over_the_documented_range():
    settings = {**defaults(), "backoff_jitter": 0.5}
    draw = random.Random(18).random
    delays = [retry_delay(3, settings, draw) for _ in range(2000)]
    assert all(4.0 <= delay <= 8.0 for delay in delays)  # d * (1 - j * U), d = 2 ** 3, U in [0, 1)
    assert min(delays) < 4.2 and max(delays) > 7.8  # the whole range is used
    assert len({round(delay, 6) for delay in delays}) > 1900  # a spread, not a few values
    mean = sum(delays) / len(delays)
    assert 5.8 < mean < 6.2  # uniform: d * (1 - j / 2) = 6


@pytest.mark.parametrize("kind", ["folder", "fifo", "symlink"])
def test_odd_entries_in_finished_folders_are_purged_and_shown_without_error(spool, spool_path, kind, tmp_path):
    for state in ("completed", "dead"):
        path = os.path.join(spool_path, state, f"odd-{state}.json")
        if kind == "folder":
            os.mkdir(path)
        elif kind == "fifo":
            os.mkfifo(path)
        else:
            os.symlink(tmp_path / "elsewhere", path)
        assert spool.get(f"odd-{state}")["state"] == state  # shown as a stub saying why
    assert lifecycle.purge(spool, ["completed", "dead"]) == 2
    assert not os.path.lexists(tmp_path / "elsewhere")
    assert spool.counts()["completed"] == spool.counts()["dead"] == 0


def test_a_deletion_cut_before_the_job_file_went_is_undone(spool, spool_path, monkeypatch):
    spool.enqueue("true", id="p")
    assert settled(spool, claimed(spool, "p"), exit_code=0) == "completed"

    def killed(path):
        raise KeyboardInterrupt  # the process dies before the job file goes

    monkeypatch.setattr(lifecycle, "remove_entry", killed)
    with pytest.raises(KeyboardInterrupt):
        lifecycle.purge(spool, ["completed"])
    monkeypatch.undo()
    with pytest.raises(DuplicateJob):
        spool.enqueue("echo again", id="p")
    assert lifecycle.sweep_purges(spool) == 1
    assert where(spool_path, "p") == ["completed"] and os.path.lexists(spool.marker("p"))
    with pytest.raises(DuplicateJob):
        spool.enqueue("echo again", id="p")


def test_a_deletion_cut_after_the_job_file_went_is_finished(spool, spool_path, monkeypatch):
    spool.enqueue("echo out; true", id="q")
    assert settled(spool, claimed(spool, "q"), exit_code=0) == "completed"
    with open(spool.log_path("q"), "w") as handle:
        handle.write("its output")

    def killed(spool, state, job_id, **_):
        raise KeyboardInterrupt  # the process dies after the job file went, before its log

    monkeypatch.setattr(lifecycle, "_finish_purge", killed)
    with pytest.raises(KeyboardInterrupt):
        lifecycle.purge(spool, ["completed"])
    monkeypatch.undo()
    assert where(spool_path, "q") == [] and os.path.exists(spool.log_path("q"))
    lifecycle.recover(spool)  # every worker's sweep
    assert not os.path.exists(spool.log_path("q")) and os.listdir(os.path.join(spool_path, "purging")) == []
    assert spool.enqueue("true", id="q")["id"] == "q"  # the id is free again, with no old log
    assert not os.path.exists(spool.log_path("q"))


def test_an_enqueue_cut_between_its_marker_and_its_publish_frees_the_id_at_the_next_sweep(spool, spool_path,
                                                                                         monkeypatch):
    from queuectl.core import fsops

    def killed(temp, target):
        raise KeyboardInterrupt

    monkeypatch.setattr(fsops, "link_new", killed)
    monkeypatch.setattr(os, "unlink", lambda path: None)  # the crash leaves the temporary file
    with pytest.raises(KeyboardInterrupt):
        spool.enqueue("true", id="c")
    monkeypatch.undo()
    assert os.path.lexists(spool.marker("c"))
    [temp] = os.listdir(os.path.join(spool_path, "tmp"))
    old = time.time() - 2 * lifecycle.TEMP_AGE
    os.utime(os.path.join(spool_path, "tmp", temp), (old, old))
    lifecycle.recover(spool)
    assert os.listdir(os.path.join(spool_path, "tmp")) == [] and not os.path.lexists(spool.marker("c"))
    assert spool.enqueue("true", id="c")["id"] == "c"


def test_retention_prunes_ids_shaped_like_the_spools_own_names(spool, spool_path):
    from queuectl.features import retention

    spool.enqueue("true", id="x")
    for name in LAYOUT_NAMES:
        spool.enqueue("true", id=name, after=["x"])
    spool.enqueue("true", id="w", after=LAYOUT_NAMES)  # waiting/x.prune/w, waiting/x.lock/w, ...
    for job_id in ["x", *LAYOUT_NAMES, "w"]:
        assert settled(spool, claimed(spool, job_id), exit_code=0) == "completed"
    spool.set_config("keep_completed", "0")
    pruner = retention.Pruner(spool)
    deleted = sum(pruner.sweep() for _ in range(5))
    assert deleted == 2 + len(LAYOUT_NAMES) and spool.counts()["completed"] == 0
    assert os.listdir(os.path.join(spool_path, "ids")) == [".complete"]


def test_a_file_moved_by_hand_onto_a_pending_jobs_name_does_not_lose_that_job(spool_path, qc, tmp_path):
    """`mv x.json pending/<id>.json` replaces the established job's file; its marker (a hard link)
    is its last name. The newcomer goes to dead/ with its bytes, the job comes back and runs
    (docs/decisions/identity.md)."""
    ran, intruder_ran = tmp_path / "ran", tmp_path / "intruder"
    job_id = qc("enqueue", "--id", "nightly", "-c", f"touch {ran}").stdout.strip()
    assert job_id == "nightly"
    hand = tmp_path / "hand.json"
    hand.write_text(json.dumps({"id": "nightly", "command": f"touch {intruder_ran}"}))
    os.rename(hand, os.path.join(spool_path, "pending", "nightly.json"))
    assert qc("worker", "start", "--until-empty", "--quiet", timeout=60).returncode == 0
    assert ran.exists() and not intruder_ran.exists()
    with open(os.path.join(spool_path, "completed", "nightly.json"), encoding="utf-8") as handle:
        assert json.load(handle)["command"] == f"touch {ran}"
    dead = [name for name in os.listdir(os.path.join(spool_path, "dead")) if name.endswith(".invalid")]
    assert len(dead) == 1
    with open(os.path.join(spool_path, "dead", dead[0]), encoding="utf-8") as handle:
        assert json.load(handle)["command"] == f"touch {intruder_ran}"  # its bytes kept
