"""A process killed at any step of any transition loses no job.

For each operation (enqueue, claim, settle, retry, cancel, dlq retry, adopt,
recover, and doctor's own repairs) a forked child performs it and dies by
os._exit at its 1st, 2nd, 3rd ... file-system step (write,
fsync, rename, renameat2, link, unlink), still holding its flocks, until
the operation completes without reaching the step. Every state left behind is then handed both
- to the next worker (recovery, adoption, then running what is due), and
- to `doctor --repair` (on a copy, then the next worker too),
and each job must end as one valid file in one folder, in a state the
operation allows. Moves are also crashed as on a file system without
renameat2, where a move is link + unlink and can leave one file under two
names.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from support import put_job
from support.chaos import assert_intact, copy_spool, next_worker, sweep

from queuectl import Spool
from queuectl.core import lifecycle
from queuectl.core.commit import GroupCommit
from queuectl.core.job import iso
from queuectl.core.outcome import Outcome
from queuectl.doctor import check

FINISHED = ("completed", "dead")


def nothing(spool: Spool) -> None:
    return None


@dataclass
class Operation:
    act: Callable[[Spool, object], object]
    setup: Callable[[str], None] = lambda spool_path: None
    prepare: Callable[[Spool], object] = nothing  # in the child, before the steps are counted
    finals: tuple[str, ...] = ("completed",)      # where the job may end once the next worker is done
    ids: set[str] = field(default_factory=lambda: {"job"})
    may_lack: set[str] = frozenset()              # never acknowledged, so absence is allowed
    kept_bytes: bytes | None = None               # an invalid file whose bytes must survive in dead/
    # Where a move is link + unlink, a drop-in's rename cut short leaves its bytes under two names, and
    # the second may be set aside as a duplicate: a spare copy of the job's own bytes, never a loss.
    spare_copy: bool = False


def claimed(spool: Spool):
    return lifecycle.claim(spool, "pending", "job", "crasher", time.time())


def ran(spool: Spool, held, **outcome) -> str:
    now = time.time()
    return lifecycle.settle(spool, held, Outcome(started=now, finished=now, **outcome), None)


def ran_in_a_group(spool: Spool, held, **outcome) -> None:
    """A worker's settle: staged, then published and made durable by the group commit's thread."""
    commit = GroupCommit(spool)
    now = time.time()
    lifecycle.settle(spool, held, Outcome(started=now, finished=now, **outcome), None, commit)
    commit.close()


def two_claimed(spool: Spool):
    return [lifecycle.claim(spool, "pending", job_id, "crasher", time.time()) for job_id in ("a", "b")]


def ran_two_in_a_group(spool: Spool, helds) -> None:
    commit = GroupCommit(spool)
    now = time.time()
    for held, code in zip(helds, (0, 1)):
        lifecycle.settle(spool, held, Outcome(started=now, finished=now, exit_code=code), None, commit)
    commit.close()


def drop(name: str, data: bytes) -> Callable[[str], None]:
    """A file dropped into pending/ a minute ago: complete, so it is judged at once."""
    def setup(spool_path: str) -> None:
        path = os.path.join(spool_path, "pending", name)
        with open(path, "wb") as handle:
            handle.write(data)
        os.utime(path, (time.time() - 60, time.time() - 60))
    return setup


def pending_job(spool_path: str, **fields) -> None:
    put_job(spool_path, "pending", "job", command="true", **fields)


def owned_by_a_dead_worker(spool_path: str) -> None:
    pending_job(spool_path)
    pid = os.fork()
    if pid == 0:
        claimed(Spool(spool_path))
        os._exit(0)  # holding the claim, as a SIGKILLed worker would
    os.waitpid(pid, 0)


THE_COPY = b'{"id": "job", "command": "echo the copy"}'


def duplicated(spool_path: str) -> None:
    put_job(spool_path, "completed", "job", command="true")
    drop("job.json", THE_COPY)(spool_path)


def past() -> str:
    return iso(time.time() - 60)


OPERATIONS = {
    "enqueue": Operation(act=lambda spool, _: spool.enqueue({"id": "job", "command": "true"}), may_lack={"job"}),
    "enqueue-batch": Operation(
        act=lambda spool, _: spool.enqueue_many([{"id": i, "command": "true"} for i in ("a", "b", "c")]),
        ids={"a", "b", "c"}, may_lack={"a", "b", "c"}),
    "claim-pending": Operation(setup=pending_job, act=lambda spool, _: claimed(spool)),
    "claim-failed": Operation(
        setup=lambda path: put_job(path, "failed", "job", command="true", attempts=1, next_run_at=past()),
        act=lambda spool, _: lifecycle.claim(spool, "failed", "job", "crasher", time.time())),
    "settle-completed": Operation(setup=pending_job, prepare=claimed,
                                  act=lambda spool, held: ran(spool, held, exit_code=0)),
    "settle-failed": Operation(setup=pending_job, prepare=claimed,
                               act=lambda spool, held: ran(spool, held, exit_code=1)),
    "settle-completed-group": Operation(setup=pending_job, prepare=claimed,
                                        act=lambda spool, held: ran_in_a_group(spool, held, exit_code=0)),
    "settle-failed-group": Operation(setup=pending_job, prepare=claimed,
                                     act=lambda spool, held: ran_in_a_group(spool, held, exit_code=1)),
    "settle-two-in-a-group": Operation(
        setup=lambda path: [put_job(path, "pending", job_id, command="true") for job_id in ("a", "b")],
        prepare=two_claimed, act=ran_two_in_a_group, ids={"a", "b"}, finals=("completed", "failed")),
    "settle-dead": Operation(setup=lambda path: pending_job(path, max_retries=0), prepare=claimed,
                             act=lambda spool, held: ran(spool, held, exit_code=1), finals=("dead",)),
    "settle-stopped": Operation(setup=pending_job, prepare=claimed,
                                act=lambda spool, held: ran(spool, held, signal=15, interrupted="stop")),
    "settle-cancelled": Operation(setup=pending_job, prepare=claimed, finals=FINISHED,
                                  act=lambda spool, held: ran(spool, held, signal=15, interrupted="cancel")),
    "recover": Operation(setup=owned_by_a_dead_worker, act=lambda spool, _: lifecycle.recover(spool)),
    "retry": Operation(
        setup=lambda path: put_job(path, "failed", "job", command="true", attempts=1,
                                   next_run_at=iso(time.time() + 3600)),
        # Cut before its rewrite, the job keeps its old retry time: it waits, in failed/ or pending/.
        act=lambda spool, _: lifecycle.retry(spool, "job"), finals=("completed", "failed", "pending")),
    "cancel-pending": Operation(setup=pending_job, act=lambda spool, _: lifecycle.cancel(spool, "job"), finals=FINISHED),
    "cancel-failed": Operation(
        setup=lambda path: put_job(path, "failed", "job", command="true", attempts=1, next_run_at=past()),
        act=lambda spool, _: lifecycle.cancel(spool, "job"), finals=FINISHED),
    "dlq-retry": Operation(setup=lambda path: put_job(path, "dead", "job", command="true", attempts=4),
                           act=lambda spool, _: lifecycle.dlq_retry(spool, "job"), finals=FINISHED),
    "adopt-renamed": Operation(setup=drop("drop.json", b'{"id": "job", "command": "true"}'),
                               act=lambda spool, _: lifecycle.adopt(spool, "drop.json", complete=True), spare_copy=True),
    "adopt-in-place": Operation(setup=drop("job.json", b'{"command": "true"}'),
                                act=lambda spool, _: lifecycle.adopt(spool, "job.json", complete=True)),
    "adopt-invalid": Operation(setup=drop("job.json", b'{"command": 42}'), finals=("dead",),
                               act=lambda spool, _: lifecycle.adopt(spool, "job.json", complete=True),
                               kept_bytes=b'{"command": 42}'),
    "adopt-duplicate": Operation(
        setup=lambda path: (put_job(path, "completed", "job", command="true"),
                            drop("drop.json", b'{"id": "job", "command": "echo twice"}')(path)),
        act=lambda spool, _: lifecycle.adopt(spool, "drop.json", complete=True),
        kept_bytes=b'{"id": "job", "command": "echo twice"}'),
    "doctor-duplicate": Operation(setup=duplicated, act=lambda spool, _: check(spool, repair=True),
                                  kept_bytes=THE_COPY, spare_copy=True),
}
# Operations that move files, crashed again as on a file system without renameat2.
MOVING = ("claim-pending", "settle-completed", "settle-failed", "settle-completed-group", "recover", "cancel-pending", "dlq-retry",
          "adopt-renamed", "adopt-invalid", "doctor-duplicate")


def fresh_spool(base, step: int, operation: Operation) -> str:
    spool_path = str(base / f"step{step}" / "spool")
    spool = Spool(spool_path)
    # backoff_max 0: a job recovered to failed/ is due at once, so the next worker finishes it.
    for key, value in {"backoff_max": "0", "kill_grace": "0.2"}.items():
        spool.set_config(key, value)
    operation.setup(spool_path)
    return spool_path


def assert_recovers(spool_path: str, operation: Operation, link_fallback: bool) -> None:
    """Both roads from a crash state end with every job once, valid, in a state the operation allows."""
    repaired_first = copy_spool(spool_path, spool_path + "-doctor")

    next_worker(spool_path)
    # What the worker leaves to doctor: a dead job whose state field was not rewritten yet (the folder
    # is the truth, so it is dead), kept bytes whose record was cut off. Nothing is lost or doubled.
    assert_intact(spool_path, operation.ids, may_lack=operation.may_lack, allowed_states=operation.finals,
                  tolerate=("state-field", "missing-record"))
    assert_healthy_after_repair(spool_path, operation, link_fallback)

    check(Spool(repaired_first), repair=True)
    assert check(Spool(repaired_first)) == []
    # Doctor leaves valid drop-ins to the workers, so a job may still be one (then not counted yet).
    assert_intact(repaired_first, operation.ids, may_lack=operation.ids,
                  allowed_states=("pending", "completed", "failed", "dead"), tolerate=("drop-in",))
    next_worker(repaired_first)
    assert_healthy_after_repair(repaired_first, operation, link_fallback)


def assert_healthy_after_repair(spool_path: str, operation: Operation, link_fallback: bool) -> None:
    findings = check(Spool(spool_path), repair=True)
    assert [finding for finding in findings if not finding["repaired"]] == []
    assert check(Spool(spool_path)) == []
    assert_intact(spool_path, operation.ids, may_lack=operation.may_lack, allowed_states=operation.finals)
    kept = []
    for name in os.listdir(os.path.join(spool_path, "dead")):
        if name.endswith(".invalid"):
            with open(os.path.join(spool_path, "dead", name), "rb") as handle:
                kept.append(handle.read())
    expected = [] if operation.kept_bytes is None else [operation.kept_bytes]
    if not (link_fallback and operation.spare_copy):
        assert kept == expected  # only what was invalid to begin with is set aside, and only once
        return
    assert set(expected) <= set(kept) and len(kept) <= len(expected) + 1
    assert all(data in expected or json.loads(data)["id"] == "job" for data in kept)


@pytest.mark.parametrize("name, link_fallback", [(name, False) for name in OPERATIONS]
                         + [(name, True) for name in MOVING],
                         ids=[*OPERATIONS, *(f"{name}-link+unlink" for name in MOVING)])
def test_a_crash_at_any_step_loses_no_job(name, link_fallback, memory_folder):
    operation = OPERATIONS[name]
    crashed = []

    def judge(spool_path: str) -> None:
        crashed.append(spool_path)
        assert_recovers(spool_path, operation, link_fallback)

    steps, finished = sweep(lambda step: fresh_spool(memory_folder, step, operation),
                            lambda spool_path: operation.prepare(Spool(spool_path)),
                            lambda spool_path, prepared: operation.act(Spool(spool_path), prepared),
                            judge, link_fallback=link_fallback)

    assert steps >= 2 and len(crashed) == steps
    assert_recovers(finished, operation, link_fallback)  # and the operation run to its end is fine too


@pytest.mark.parametrize("cut", ["claim", "settle"])
def test_a_job_whose_folder_already_holds_its_id_is_set_aside_not_crashed_on(spool_path, cut):
    """A hand-made copy is already in completed/. A cut claim goes back to pending/, runs, and its settle
    finds completed/ taken; a cut settle is finished by recovery, which finds the same. Either way the
    run's record goes to dead/ beside it, bytes kept, instead of the move failing forever and crashing
    every worker that tries it."""
    put_job(spool_path, "completed", "job", command="echo the first")
    put_job(spool_path, "pending", "job", command="echo the second")
    os.rename(os.path.join(spool_path, "pending", "job.json"), os.path.join(spool_path, "processing", "job.json"))
    if cut == "settle":  # rewritten as completed, not moved yet
        held = Spool(spool_path).lock("processing", "job.json")
        with held:
            held.job["state"] = "completed"
            held.save()
    else:
        put_job(spool_path, "pending", "other", command="true")

    next_worker(spool_path)

    found = assert_intact(spool_path, {"job"} | ({"other"} if cut == "claim" else set()),
                          allowed_states=("completed",))
    assert Spool(spool_path).get("job")["command"] == "echo the first"
    [(set_aside, data)] = [(job_id, json.loads(read_kept(spool_path, job_id))) for job_id in found.kept]
    assert data["command"] == "echo the second"
    assert "duplicate id 'job'" in Spool(spool_path).get(set_aside)["last_error"]


def read_kept(spool_path: str, job_id: str) -> bytes:
    with open(os.path.join(spool_path, "dead", job_id + ".invalid"), "rb") as handle:
        return handle.read()
