"""The spool as a library: layout and safety, enqueue, reading, state changes, atomicity, concurrency."""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import sys
import threading

import pytest
from support import put_job, read_job, spool_files

from queuectl import DuplicateJob, InvalidJob, JobNotFound, Spool, SpoolError
from queuectl.core import fsops
from queuectl.core.job import STATES, iso, parse_time

STATE_FOLDERS = ("tmp", *STATES, "logs", "workers")


def folder(spool, state):
    return sorted(os.listdir(spool.dir(state)))


# -- layout and safety --------------------------------------------------------

def test_first_use_creates_a_private_spool(spool_path):
    spool = Spool(spool_path)
    assert stat.S_IMODE(os.stat(spool_path).st_mode) == 0o700
    for name in STATE_FOLDERS:
        assert stat.S_IMODE(os.stat(spool.dir(name)).st_mode) == 0o700
    assert spool.warnings == []


def test_missing_folders_are_recreated(spool):
    os.rmdir(spool.dir("failed"))
    Spool(spool.root)
    assert os.path.isdir(spool.dir("failed"))


def test_spool_path_that_is_a_file_is_refused(tmp_path):
    path = tmp_path / "afile"
    path.write_text("x")
    with pytest.raises(SpoolError, match="is a file, not a directory"):
        Spool(path)
    with pytest.raises(SpoolError, match="inside a file"):
        Spool(path / "spool")
    assert path.read_text() == "x"


def test_create_false_does_not_make_a_spool(tmp_path):
    with pytest.raises(SpoolError, match="no spool at"):
        Spool(tmp_path / "absent", create=False)
    assert not (tmp_path / "absent").exists()


@pytest.mark.parametrize("mode", [0o770, 0o777, 0o702])
def test_a_spool_others_can_write_is_refused_unless_allowed(spool, mode):
    os.chmod(spool.root, mode)
    with pytest.raises(SpoolError, match=f"writable by group or others .*{mode:04o}.*--allow-shared-spool"):
        Spool(spool.root)
    assert Spool(spool.root, allow_shared=True).counts()["pending"] == 0


def test_a_shared_state_folder_is_refused_too(spool):
    os.chmod(spool.dir("pending"), 0o777)
    with pytest.raises(SpoolError, match="pending is writable by group or others"):
        Spool(spool.root)


def test_a_state_folder_that_is_a_symlink_is_refused(spool, tmp_path):
    os.rmdir(spool.dir("dead"))
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    os.symlink(tmp_path / "elsewhere", spool.dir("dead"))
    with pytest.raises(SpoolError, match="must be a directory"):
        Spool(spool.root)


@pytest.mark.skipif(os.getuid() != 0, reason="only root can give a folder to another user")
def test_a_folder_of_another_user_is_refused(spool):
    os.chown(spool.dir("pending"), 65534, -1)
    with pytest.raises(SpoolError, match="belongs to another user"):
        Spool(spool.root)


def test_a_spool_others_can_read_gets_a_warning(spool):
    os.chmod(spool.root, 0o755)
    assert "readable by others" in Spool(spool.root).warnings[0]


# -- enqueue ---------------------------------------------------------------

def test_enqueue_a_command_string(spool):
    job = spool.enqueue("echo hello")
    assert read_job(spool.root, "pending", job["id"]) == job
    assert job["command"] == "echo hello" and job["state"] == "pending" and job["attempts"] == 0
    assert stat.S_IMODE(os.stat(spool.path("pending", job["id"])).st_mode) == 0o600


def test_enqueue_a_dict_with_options_that_win(spool):
    job = spool.enqueue({"command": "make", "priority": 1, "team": "ops"}, id="build-1", priority=5,
                        max_retries=0, timeout=30, run_at="2030-01-01T00:00:00Z")
    assert (job["id"], job["priority"], job["max_retries"], job["timeout"]) == ("build-1", 5, 0, 30)
    assert job["run_at"] == "2030-01-01T00:00:00.000Z" and job["team"] == "ops"
    assert read_job(spool.root, "pending", "build-1") == job


def test_enqueue_with_a_delay_schedules_it(spool):
    job = spool.enqueue("echo later", delay=120)
    assert 110 < parse_time(job["run_at"]) - parse_time(job["created_at"]) < 130
    with pytest.raises(InvalidJob, match="delay must be >= 0"):
        spool.enqueue("echo never", delay=-1)


def test_enqueue_returns_times_in_iso_utc(spool):
    job = spool.enqueue("true", run_at=1_900_000_000)
    assert job["run_at"] == iso(1_900_000_000)
    for name in ("created_at", "updated_at", "run_at"):
        assert job[name].endswith("Z") and job[name][10] == "T"


def test_generated_ids_sort_by_creation_time(spool):
    ids = [spool.enqueue(f"echo {number}")["id"] for number in range(50)]
    assert ids == sorted(ids)
    assert [job["id"] for job in spool.jobs("pending")] == ids[::-1]


@pytest.mark.parametrize("durable", [True, False])
def test_a_durable_enqueue_syncs_pending_before_it_returns(spool, monkeypatch, durable):
    """SPEC section 1: with durable on, the folder is fsynced too, so an acknowledged job survives a power cut."""
    spool.set_config("durable", "true" if durable else "false")
    synced, written = [], []
    real_fsync_dir, real_fsync = fsops.fsync_dir, os.fsync
    monkeypatch.setattr(fsops, "fsync_dir", lambda path: (synced.append(path), real_fsync_dir(path)))
    monkeypatch.setattr(os, "fsync", lambda fd: (written.append(fd), real_fsync(fd)))
    spool.enqueue("true")
    spool.enqueue_many([{"command": "true"}, {"command": "true"}])
    assert synced == ([spool.dir("pending")] * 2 if durable else [])
    assert len(written) == (3 + 2 if durable else 0)  # each file, and the folder through fsync_dir


def test_enqueue_many_publishes_in_order(spool):
    jobs = spool.enqueue_many([{"command": f"echo {n}"} for n in range(20)] + [{"command": "x", "id": "named"}])
    assert [job["command"] for job in jobs[:20]] == [f"echo {n}" for n in range(20)]
    assert spool.counts()["pending"] == 21
    assert all(read_job(spool.root, "pending", job["id"]) == job for job in jobs)


@pytest.mark.parametrize("batch, error", [
    ([{"command": "a"}, {"command": "b"}, {"command": ""}], InvalidJob),
    ([{"command": "a", "id": "twin"}, {"command": "b", "id": "twin"}], DuplicateJob),
    ([{"command": "a"}, {"command": "b", "id": "taken"}], DuplicateJob),
    ([{"command": "a"}, {"command": "b", "id": "a/b"}], InvalidJob),
    ([{"command": "a"}, "not a dict"], InvalidJob),
])
def test_a_bad_job_in_a_batch_enqueues_nothing(spool, batch, error):
    put_job(spool.root, "completed", "taken")
    before = spool_files(spool.root)
    with pytest.raises(error):
        spool.enqueue_many(batch)
    assert spool_files(spool.root) == before


@pytest.mark.parametrize("state", STATES)
def test_an_id_taken_in_any_state_is_a_duplicate(spool, state):
    original = put_job(spool.root, state, "dup")
    with pytest.raises(DuplicateJob, match=f"'dup' already exists \\({state}\\)"):
        spool.enqueue("echo again", id="dup")
    assert read_job(spool.root, state, "dup") == original
    assert spool.counts()[state] == 1 and sum(spool.counts().values()) == 1


def test_a_job_over_one_mebibyte_is_refused(spool):
    with pytest.raises(InvalidJob, match="over the 1 MiB limit"):
        spool.enqueue("echo " + "x" * (1024 * 1024))
    assert folder(spool, "pending") == [] and folder(spool, "tmp") == []


# -- reading ----------------------------------------------------------------

def test_get_takes_the_state_from_the_folder(spool):
    put_job(spool.root, "pending", "moved")
    os.rename(spool.path("pending", "moved"), spool.path("failed", "moved"))
    assert spool.get("moved")["state"] == "failed"
    assert spool.find("moved") == "failed"


def test_get_of_an_unknown_or_bad_id(spool):
    with pytest.raises(JobNotFound, match="no job with id 'ghost'"):
        spool.get("ghost")
    with pytest.raises(InvalidJob, match="invalid id"):
        spool.get("../config")


def test_counts_and_jobs_by_state(spool):
    for number, state in enumerate(STATES):
        put_job(spool.root, state, f"job-{number}")
    spool.enqueue("echo extra", id="job-9")
    assert spool.counts() == {"pending": 2, "processing": 1, "completed": 1, "failed": 1, "dead": 1}
    assert [job["id"] for job in spool.jobs()] == ["job-9", "job-4", "job-3", "job-2", "job-1", "job-0"]
    assert [job["id"] for job in spool.jobs("pending")] == ["job-9", "job-0"]
    assert [job["id"] for job in spool.jobs(limit=2)] == ["job-9", "job-4"]
    assert [job["state"] for job in spool.jobs()] == ["pending", "dead", "failed", "completed", "processing",
                                                      "pending"]
    with pytest.raises(InvalidJob, match="unknown state 'running'; valid states: pending"):
        spool.jobs("running")


def test_only_job_files_are_listed(spool):
    spool.enqueue("echo real", id="real")
    for name in (".hidden.json", "draft.json.tmp", "notes.txt", ".x.tmp"):
        with open(os.path.join(spool.dir("pending"), name), "w", encoding="utf-8") as handle:
            handle.write('{"command": "echo no"}')
    assert spool.names("pending") == ["real.json"]


def test_an_unreadable_file_is_shown_with_the_reason(spool):
    with open(os.path.join(spool.dir("pending"), "half.json"), "w", encoding="utf-8") as handle:
        handle.write('{"command": "ec')
    with open(os.path.join(spool.dir("dead"), "list.json"), "w", encoding="utf-8") as handle:
        handle.write("[1, 2]")
    half = spool.get("half")
    assert half["command"] is None and "unreadable job file: invalid JSON" in half["last_error"]
    assert "not a JSON object" in spool.get("list")["last_error"]
    assert spool.counts()["pending"] == 1 and len(spool.jobs()) == 2


def test_read_log(spool):
    job = spool.enqueue("echo hi")
    assert spool.read_log(job["id"]) == b""
    with open(spool.log_path(job["id"]), "wb") as handle:
        handle.write(b"=== attempt 1 ===\nhello\n")
    assert spool.read_log(job["id"]) == b"=== attempt 1 ===\nhello\n"
    assert spool.read_log(job["id"], tail_bytes=6) == b"hello\n"
    with pytest.raises(JobNotFound):
        spool.read_log("ghost")


# -- atomicity: a failure between write and rename loses nothing -------------

def failing(error):
    def fail(*args, **kwargs):
        raise error
    return fail


@pytest.mark.parametrize("target, error", [
    ("rename", OSError(errno.EIO, "Input/output error")),
    ("rename", OSError(errno.ENOSPC, "No space left on device")),
    ("fsync", OSError(errno.EIO, "Input/output error")),
    ("write", OSError(errno.ENOSPC, "No space left on device")),
])
def test_a_failed_publish_leaves_no_file_anywhere(spool, monkeypatch, target, error):
    spool.enqueue("echo before", id="before")
    before = spool_files(spool.root)
    patched = {"rename": (fsops, "_link_new"), "fsync": (os, "fsync"), "write": (os, "write")}[target]
    monkeypatch.setattr(*patched, failing(error))
    with pytest.raises(SpoolError, match=f"cannot enqueue into .*{error.strerror}"):
        spool.enqueue("echo lost?", id="after")
    monkeypatch.undo()
    assert spool_files(spool.root) == before
    assert folder(spool, "tmp") == []


def test_an_interrupt_between_write_and_rename_leaves_no_temp_file(spool, monkeypatch):
    monkeypatch.setattr(fsops, "_link_new", failing(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        spool.enqueue("echo interrupted")
    assert folder(spool, "tmp") == [] and folder(spool, "pending") == []


def test_a_failure_midway_through_a_batch_keeps_the_complete_jobs_and_says_so(spool, monkeypatch):
    real_rename = fsops._link_new
    calls = []

    def third_fails(source, target):
        calls.append(target)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_rename(source, target)
    monkeypatch.setattr(fsops, "_link_new", third_fails)
    with pytest.raises(SpoolError, match="the first 2 job\\(s\\) of the batch were enqueued"):
        spool.enqueue_many([{"command": f"echo {n}", "id": f"job-{n}"} for n in range(5)])
    assert folder(spool, "pending") == ["job-0.json", "job-1.json"]
    assert read_job(spool.root, "pending", "job-1")["command"] == "echo 1"
    assert folder(spool, "tmp") == []


def test_a_publish_never_replaces_a_file_and_cleans_up_after_itself(spool):
    taken = os.path.join(spool.dir("pending"), "taken.json")
    with open(taken, "wb") as handle:
        handle.write(b"someone else's bytes")
    with pytest.raises(FileExistsError):
        fsops.publish(spool.dir("tmp"), taken, b"mine", durable=False)
    with open(taken, "rb") as handle:
        assert handle.read() == b"someone else's bytes"
    assert folder(spool, "tmp") == []
    fsops.publish(spool.dir("tmp"), os.path.join(spool.dir("pending"), "free.json"), b"mine", durable=True)
    assert folder(spool, "tmp") == [] and os.stat(os.path.join(spool.dir("pending"), "free.json")).st_nlink == 1


def test_a_link_that_already_happened_is_a_success(spool):
    """An NFS client that retries a link whose reply was lost gets EEXIST for its own link."""
    temp = fsops.write_new(spool.dir("tmp"), "x", b"mine", durable=False)
    target = os.path.join(spool.dir("pending"), "x.json")
    os.link(temp, target)  # the first try, whose reply was lost
    fsops._link_new(temp, target)
    assert folder(spool, "tmp") == [] and folder(spool, "pending") == ["x.json"]


def test_a_file_system_without_hard_links_publishes_by_rename(spool, monkeypatch):
    monkeypatch.setattr(os, "link", failing(OSError(errno.EPERM, "Operation not permitted")))
    job = spool.enqueue("echo no links here")
    monkeypatch.undo()
    assert folder(spool, "pending") == [job["id"] + ".json"] and folder(spool, "tmp") == []


def test_readers_never_see_a_partial_job_file(spool):
    """Another thread reads every file in pending/ while jobs are being published."""
    spool.set_config("durable", "false")
    problems, done = [], threading.Event()

    def read_continuously():
        while not done.is_set():
            for name in os.listdir(spool.dir("pending")):
                try:
                    with open(os.path.join(spool.dir("pending"), name), "rb") as handle:
                        data = handle.read()
                except FileNotFoundError:
                    continue
                if not name.endswith(".json") or not data.endswith(b"}\n") or "command" not in json.loads(data):
                    problems.append((name, data[:80]))

    reader = threading.Thread(target=read_continuously)
    reader.start()
    try:
        for number in range(300):
            spool.enqueue(f"echo {number} " + "x" * 2000)
    finally:
        done.set()
        reader.join()
    assert problems == []
    assert spool.counts()["pending"] == 300


# -- concurrency: real processes ---------------------------------------------

ENQUEUER = """
import json, os, sys
from queuectl import DuplicateJob, Spool
spool_path, id_prefix, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
spool = Spool(spool_path)
sys.stdin.readline()  # start together
won = []
for number in range(count):
    options = {} if id_prefix == "-" else {"id": f"{id_prefix}{number}"}
    try:
        won.append(spool.enqueue(f"echo from {os.getpid()}", **options)["id"])
    except DuplicateJob:
        pass
print(json.dumps({"pid": os.getpid(), "won": won}))
"""


def enqueue_in_processes(spool_path, id_prefixes, count):
    """One real process per prefix, released at the same moment; returns each one's won ids."""
    Spool(spool_path)
    processes = [subprocess.Popen([sys.executable, "-c", ENQUEUER, spool_path, prefix, str(count)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for prefix in id_prefixes]
    for process in processes:
        process.stdin.write("go\n")
        process.stdin.flush()
    results = []
    for process in processes:
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        results.append(json.loads(out))
    return results


def all_pending_jobs(spool_path):
    folder_path = os.path.join(spool_path, "pending")
    return {name[:-5]: json.loads(open(os.path.join(folder_path, name), "rb").read())
            for name in os.listdir(folder_path)}


@pytest.mark.parametrize("id_prefixes", [["a-", "b-", "c-", "d-"], ["-", "-", "-", "-"]],
                         ids=["own ids", "generated ids"])
def test_processes_enqueueing_different_ids_at_once_lose_nothing(spool_path, id_prefixes):
    results = enqueue_in_processes(spool_path, id_prefixes, 200)
    won = [job_id for result in results for job_id in result["won"]]
    assert len(won) == len(set(won)) == 800
    jobs = all_pending_jobs(spool_path)
    assert sorted(jobs) == sorted(won)
    owners = {job_id: result["pid"] for result in results for job_id in result["won"]}
    assert all(job["id"] == job_id and job["command"] == f"echo from {owners[job_id]}"
               for job_id, job in jobs.items())
    assert os.listdir(os.path.join(spool_path, "tmp")) == []


def test_processes_enqueueing_the_same_ids_at_once_have_one_winner_each(spool_path):
    results = enqueue_in_processes(spool_path, ["shared-"] * 4, 100)
    winners = {}
    for result in results:
        for job_id in result["won"]:
            assert job_id not in winners, f"{job_id} enqueued twice"
            winners[job_id] = result["pid"]
    assert sorted(winners) == sorted(f"shared-{n}" for n in range(100))
    jobs = all_pending_jobs(spool_path)
    assert {job_id: job["command"] for job_id, job in jobs.items()} == {
        job_id: f"echo from {pid}" for job_id, pid in winners.items()}
    assert os.listdir(os.path.join(spool_path, "tmp")) == []


def test_a_torn_read_is_read_again_and_a_stable_bad_file_is_judged(spool, monkeypatch):
    """A FUSE file system reading by path (bindfs) can tear a read when another client replaces the file:
    a job whose first read does not parse is read again; only bytes that read the same twice are judged."""
    job_id = spool.enqueue({"command": "true"})["id"]
    whole, _ = spool.read_raw("pending", job_id + ".json")
    reads = iter([(whole[:40], None), (whole, None)])
    monkeypatch.setattr(spool, "read_raw", lambda state, name: next(reads))
    assert spool.read("pending", job_id + ".json")["command"] == "true"
    monkeypatch.setattr(spool, "read_raw", lambda state, name: (b'{"command": ', None))
    assert spool.read("pending", job_id + ".json")["last_error"].startswith("unreadable job file: invalid JSON")


def test_a_text_marker_is_read_without_a_look_first(spool, monkeypatch):
    """A shared spool's markers are text (`<st_dev> <st_ino>`): id_holds opens and reads one at once,
    since every look is a round trip to the server there; its answers are those of a look."""
    monkeypatch.setattr(spool, "_text", True)
    job = spool.enqueue("true")
    path = spool.path("pending", job["id"])
    info = os.stat(path)
    looked = []
    real_lstat = os.lstat

    def lstat(name, *args, **kwargs):
        looked.append(name)
        return real_lstat(name, *args, **kwargs)
    monkeypatch.setattr(os, "lstat", lstat)
    assert spool.id_holds(job["id"], (info.st_dev, info.st_ino)) is True
    assert spool.id_holds(job["id"], (info.st_dev, info.st_ino + 1)) is False
    assert spool.id_holds("never-enqueued", (info.st_dev, info.st_ino)) is None
    assert looked == []
    with open(spool.marker(job["id"]), "rb") as handle:
        assert len(handle.read().split()) == 2  # a text marker indeed


def test_a_text_marker_appears_whole(spool, monkeypatch):
    """Another host reads a marker the moment its name appears: an empty one names no inode, and it
    judged the id's own job a duplicate and set it aside (two bindfs views under load). Each call
    that can make the marker's name is followed by a read of what the name holds then."""
    monkeypatch.setattr(spool, "_text", True)
    marker = spool.marker("whole")
    seen: list[bytes] = []

    def watched(real):
        def call(*args, **kwargs):
            result = real(*args, **kwargs)
            if os.path.lexists(marker) and not seen:
                with open(marker, "rb") as handle:
                    seen.append(handle.read())
            return result
        return call
    for name in ("open", "link", "rename", "replace"):
        monkeypatch.setattr(os, name, watched(getattr(os, name)))
    spool.enqueue({"id": "whole", "command": "true"})
    monkeypatch.undo()
    with open(marker, "rb") as handle:
        assert seen == [handle.read()] and len(seen[0].split()) == 2
