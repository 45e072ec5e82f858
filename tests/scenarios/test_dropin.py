"""SPEC section 3: jobs dropped into pending/ by any tool, while a real worker watches."""

from __future__ import annotations

import json
import os

import pytest
from support import run_queuectl, wait_until
from support.workers import append_id, enqueue, read_lines, show, wait_for_state

from queuectl import Spool


def pending(spool_path, name: str) -> str:
    return os.path.join(spool_path, "pending", name)


def write_in_place(path: str, data: bytes) -> None:
    """What `echo ... > pending/x.json` does: create, write, close."""
    with open(path, "wb") as handle:
        handle.write(data)


def move_in(spool_path, name: str, data: bytes) -> None:
    """The Maildir way: write in tmp/, then rename into pending/."""
    staged = os.path.join(spool_path, "tmp", name)
    write_in_place(staged, data)
    os.rename(staged, pending(spool_path, name))


def job_bytes(**fields) -> bytes:
    return json.dumps(fields).encode()


def run_marker_job(spool_path) -> None:
    """Enqueue a job and wait for it: afterwards the worker has handled every earlier event."""
    wait_for_state(spool_path, enqueue(spool_path, "true"), "completed")


@pytest.fixture
def watching(spool_path, workers):
    """A running worker, ready to see files land in pending/."""
    workers.start()
    workers.wait_ready()
    return workers


def test_minimal_files_written_in_place_or_moved_in_run(spool_path, watching, tmp_path):
    ran = tmp_path / "ran.txt"
    write_in_place(pending(spool_path, "in-place.json"), job_bytes(command=append_id(ran)))
    move_in(spool_path, "moved-in.json", job_bytes(command=append_id(ran)))
    write_in_place(pending(spool_path, "no-suffix"), job_bytes(command=append_id(ran)))
    write_in_place(pending(spool_path, "named-by-field.json"), job_bytes(id="chosen", command=append_id(ran)))

    for job_id in ("in-place", "moved-in", "no-suffix", "chosen"):
        job = wait_for_state(spool_path, job_id, "completed")
        assert job["attempts"] == 1 and job["max_retries"] == 3 and job["priority"] == 0
    assert sorted(read_lines(ran)) == ["chosen", "in-place", "moved-in", "no-suffix"]
    assert sorted(os.listdir(os.path.join(spool_path, "completed"))) == [
        "chosen.json", "in-place.json", "moved-in.json", "no-suffix.json"]
    assert os.listdir(os.path.join(spool_path, "pending")) == []


def test_a_drop_in_without_a_usable_stem_gets_a_generated_id(spool_path, watching, tmp_path):
    ran = tmp_path / "ran.txt"
    move_in(spool_path, ".hidden-until-moved.tmp", job_bytes(command=append_id(ran)))
    os.rename(pending(spool_path, ".hidden-until-moved.tmp"), pending(spool_path, "has space.json"))

    wait_until(lambda: read_lines(ran), message="the job to run")
    (job_id,) = read_lines(ran)
    assert job_id != "has space"
    assert wait_for_state(spool_path, job_id, "completed")["attempts"] == 1


def test_drop_ins_waiting_before_the_worker_starts_run(spool_path, workers, tmp_path):
    ran = tmp_path / "ran.txt"
    write_in_place(pending(spool_path, "early.json"), job_bytes(command=append_id(ran), priority=1))
    write_in_place(pending(spool_path, "earlier"), job_bytes(command=append_id(ran), priority=2))

    assert workers.start("--burst").wait() == 0

    assert read_lines(ran) == ["earlier", "early"]


def test_a_file_still_open_for_writing_waits_for_its_close(spool_path, watching):
    path = pending(spool_path, "half.json")
    first_half = b'{"command": "echo wri'
    with open(path, "wb", buffering=0) as handle:
        handle.write(first_half)

        run_marker_job(spool_path)

        with open(path, "rb") as reader:
            assert reader.read() == first_half
        assert os.listdir(os.path.join(spool_path, "dead")) == []
        handle.write(b'tten in two halves"}')

    wait_for_state(spool_path, "half", "completed")
    assert Spool(spool_path).read_log("half").decode().splitlines()[1] == "written in two halves"


def test_hidden_and_tmp_names_are_ignored(spool_path, watching, tmp_path):
    ran = tmp_path / "ran.txt"
    ignored = {".hidden.json": job_bytes(command=append_id(ran)),
               "staged.json.tmp": job_bytes(command=append_id(ran)),
               ".broken.json": b"{"}
    for name, data in ignored.items():
        move_in(spool_path, name, data)

    run_marker_job(spool_path)

    for name, data in ignored.items():
        with open(pending(spool_path, name), "rb") as handle:
            assert handle.read() == data
    assert read_lines(ran) == []
    assert os.listdir(os.path.join(spool_path, "dead")) == []


def test_a_symlink_is_not_followed(spool_path, watching, tmp_path):
    touched = tmp_path / "touched"
    target = tmp_path / "target.json"
    target.write_bytes(job_bytes(command=f"touch '{touched}'"))
    original = target.read_bytes()

    os.symlink(target, pending(spool_path, "link.json"))

    record = wait_for_state(spool_path, "link", "dead")
    kept = os.path.join(spool_path, "dead", "link.invalid")
    assert os.path.islink(kept) and os.readlink(kept) == str(target)
    assert target.read_bytes() == original
    assert not touched.exists()
    assert record["invalid"] is True
    assert "symlink" in record["last_error"]


INVALID = {
    # file name: (bytes, dead-letter id, words of the reason)
    "broken.json": (b'{"command": "echo', "broken", "invalid JSON"),
    "in-place-broken.json": (b'{"command": ', "in-place-broken", "invalid JSON"),
    "no-command.json": (b'{"priority": 1}', "no-command", "command must be a non-empty string"),
    "empty-command.json": (b'{"command": "  "}', "empty-command", "command must be a non-empty string"),
    "wrong-type.json": (b'{"command": "true", "priority": "high"}', "wrong-type", "priority must be an integer"),
    "wrong-env.json": (b'{"command": "true", "env": {"A": 1}}', "wrong-env", "env must be an object of string"),
    "array.json": (b'["true"]', "array", "must be a JSON object"),
    "bad-id.json": (b'{"id": "../escape", "command": "true"}', "bad-id", "invalid id"),
    "copy-of-taken.json": (b'{"id": "taken", "command": "true"}', "copy-of-taken", "duplicate id 'taken'"),
    "not-utf8.json": (b'{"command": "echo \xff"}', "not-utf8", "not UTF-8"),
    "huge.json": (b'{"command": "true", "padding": "' + b"x" * (1024 * 1024) + b'"}', "huge", "1 MiB"),
}


def test_invalid_files_go_to_dead_with_their_bytes_and_reason(spool_path, watching):
    enqueue(spool_path, {"id": "taken", "command": "true"}, delay=3600)
    for name, (data, _, _) in INVALID.items():
        if name.startswith("in-place"):
            write_in_place(pending(spool_path, name), data)
        else:
            move_in(spool_path, name, data)

    # Their close or rename events come before the marker job's: judged at once, not after a grace time.
    run_marker_job(spool_path)

    spool = Spool(spool_path)
    assert {job_id: spool.find(job_id) for _, job_id, _ in INVALID.values()} == {
        job_id: "dead" for _, job_id, _ in INVALID.values()}
    records = {job_id: spool.get(job_id) for _, job_id, _ in INVALID.values()}

    for name, (data, job_id, reason) in INVALID.items():
        with open(os.path.join(spool_path, "dead", job_id + ".invalid"), "rb") as handle:
            assert handle.read() == data, name
        record = records[job_id]
        assert record["invalid"] is True and record["original_name"] == name
        assert record["last_error"].startswith("invalid job: ") and reason in record["last_error"], record
    assert spool.find("taken") == "pending"
    assert os.listdir(os.path.join(spool_path, "pending")) == ["taken.json"]
    listed = {job["id"]: job["last_error"] for job in json.loads(
        run_queuectl(spool_path, "dlq", "list", "--json", "--limit", "100").stdout)}
    assert listed == {job_id: records[job_id]["last_error"] for job_id in records}
    table = run_queuectl(spool_path, "dlq", "list", "--limit", "100").stdout
    assert all(job_id in table for job_id in records) and "invalid job: invalid JSON" in table
    assert show(spool_path, "no-command")["last_error"] == "invalid job: command must be a non-empty string"


def test_a_drop_in_reusing_a_finished_jobs_id_is_a_duplicate(spool_path, watching, tmp_path):
    ran = tmp_path / "ran.txt"
    wait_for_state(spool_path, enqueue(spool_path, {"id": "done", "command": append_id(ran)}), "completed")
    original = Spool(spool_path).get("done")

    move_in(spool_path, "done.json", job_bytes(command="echo again"))

    def dead_letter():
        dead = [job for job in Spool(spool_path).iter_jobs("dead") if job.get("original_name") == "done.json"]
        return dead[0] if dead else None
    record = wait_until(dead_letter, message="the duplicate to be dead-lettered")
    assert "duplicate id 'done'" in record["last_error"]
    assert record["id"] != "done"
    with open(os.path.join(spool_path, "dead", record["id"] + ".invalid"), "rb") as handle:
        assert handle.read() == job_bytes(command="echo again")
    assert Spool(spool_path).get("done") == original
    assert read_lines(ran) == ["done"]


def test_a_copy_in_queuectls_own_form_on_a_finished_id_goes_to_dead_unrun(spool_path, watching, tmp_path):
    """Stored form, edited back to pending: the worker indexes it, its claim finds the file is not the
    id's stored job (lifecycle.DROP_IN), and adoption refuses the taken id; it never runs."""
    ran = tmp_path / "ran.txt"
    wait_for_state(spool_path, enqueue(spool_path, {"id": "kept", "command": "true"}), "completed")
    original = Spool(spool_path).get("kept")
    copy = dict(original, state="pending", command=append_id(ran), finished_at=None)
    move_in(spool_path, "kept.json", json.dumps(copy).encode())

    def dead_letter():
        dead = [job for job in Spool(spool_path).iter_jobs("dead") if job.get("original_name") == "kept.json"]
        return dead[0] if dead else None
    record = wait_until(dead_letter, message="the copy to be dead-lettered")
    assert "duplicate id 'kept'" in record["last_error"] and record["id"] != "kept"
    run_marker_job(spool_path)
    assert Spool(spool_path).get("kept") == original
    assert not os.path.exists(pending(spool_path, "kept.json")) and not ran.exists()


def test_a_quiet_file_still_open_for_writing_is_not_judged_by_its_age(spool):
    """A writer that pauses longer than the grace period keeps its file out of dead/."""
    from queuectl.core import lifecycle
    path = pending(spool.root, "slow.json")
    with open(path, "wb") as handle:
        handle.write(b'{"command": "echo sl')
        handle.flush()
        old = os.stat(path).st_mtime - 10 * lifecycle.DROP_GRACE
        os.utime(path, (old, old))
        assert lifecycle.adopt(spool, "slow.json", complete=False) is None
        assert os.path.exists(path) and os.listdir(os.path.join(spool.root, "dead")) == []
        handle.write(b'ow"}')
    assert lifecycle.adopt(spool, "slow.json", complete=False) == "slow.json"
    assert spool.get("slow")["command"] == "echo slow"


def test_a_whole_json_object_that_is_no_valid_job_is_judged_at_once_not_after_the_grace(spool):
    """docs/spool-format.md: only a file that does not parse yet waits out the grace period. A whole
    object cannot grow into a valid one (nothing may follow its closing brace), so waiting for it
    only held `worker start --burst` back by the grace, twice."""
    from queuectl.core import lifecycle
    path = pending(spool.root, "wrong.json")
    with open(path, "w") as handle:
        handle.write('{"command": 5}')
    assert lifecycle.adopt(spool, "wrong.json", complete=False) is None
    assert not os.path.exists(path)
    assert "command" in spool.get("wrong")["last_error"]
    with open(pending(spool.root, "cut.json"), "w") as handle:
        handle.write('{"command": "echo c')  # does not parse yet: left alone for now
    assert lifecycle.adopt(spool, "cut.json", complete=False) is None
    assert os.path.exists(pending(spool.root, "cut.json"))
