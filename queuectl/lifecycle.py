"""The state machine of a job file, one transition per function.

    pending --claim--> processing --settle--> completed | failed | dead
    failed  --claim--> processing             (when next_run_at is due)
    pending (dropped-in file) --adopt--> pending/<id>.json, or dead/ when invalid

Every transition owns the file's flock first (`Spool.lock`). Claims move
first and rewrite after; settles rewrite first and move after. So a crash
at any point leaves a file that says what to do, and `recover` does it:
in processing/ without a lock holder, a file whose `state` field is not
"processing" is finished moving to the folder it names; one that still
says "processing" was running when its worker died, and counts as a
failed attempt.
"""

from __future__ import annotations

import os
import stat
import time

from . import fsops, registry
from .errors import InvalidJob
from .job import STATES, build, due_time, dumps, is_valid_id, iso, new_id, parse_time, retry_delay
from .runner import Outcome, describe, kill_leftovers
from .spool import SUFFIX, LockedJob, Spool

HISTORY_LIMIT = 50
# A dropped-in file that does not parse yet may still be being written;
# after this many seconds without change it is judged as it is.
DROP_GRACE = 5.0


# When one file (or one id) is found in two folders, the copy further along
# is kept: a job in processing/ is running or is recovery's to settle; a
# completed copy proves the job ran, and running it again is the one
# outcome the queue must never cause; a dead copy was given up on or
# cancelled on purpose (`dlq retry` can undo that, nothing can undo a second
# run); a failed copy carries an attempt a pending one does not.
KEEP_ORDER = ("processing", "completed", "dead", "failed", "pending")


def claim(spool: Spool, state: str, name: str, worker: str, now: float) -> LockedJob | None:
    """Own a due job and move it into processing/; None if another worker got there first."""
    held = spool.lock(state, name)
    if held is None:
        return None
    if finish_cut_move(spool, held):
        held.release()
        return None
    try:
        job = build(held.job, spool.config, stem=name.removesuffix(SUFFIX), state=state)
        if due_time(job) > now:
            held.release()
            return None
        held.move("processing", sync=False)
    except FileNotFoundError:
        held.release()  # another host's worker moved it first (shared spool: its flock did not reach us)
        return None
    except InvalidJob as exc:
        dead_letter(spool, held, str(exc))
        held.release()
        return None
    except FileExistsError:
        dead_letter(spool, held,
                    f"duplicate id {held.name.removesuffix(SUFFIX)!r}: a job with this id is already running")
        held.release()
        return None
    if not still_owned(spool, held):  # paused past its lease between the rename and now
        held.release()
        return None
    job.update(state="processing", attempts=job["attempts"] + 1, started_at=iso(now),
               finished_at=None, worker=worker)
    held.job = job
    held.save(sync=False)
    return held


def still_owned(spool: Spool, held: LockedJob) -> bool:
    """Whether `held` is still the file under its name, for a worker that may have been judged dead.

    Only a worker whose own lease lapsed (lease.Lease.lapsed) can have lost
    its job to another host's recovery, which rewrites the file (a new
    inode) and moves it on; on a shared spool every settle checks, the rest
    only after a lapse. The check and the rewrite that follows are two
    steps: README.md "Running on several hosts" says what that leaves.
    """
    lease = spool.lease
    if lease is None or not (spool.shared or lease.lapsed()):
        return True
    try:
        at_name = os.stat(held.path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return os.path.samestat(at_name, os.fstat(held.fd))


def settle(spool: Spool, held: LockedJob, outcome: Outcome, timeout: float | None) -> str:
    """Record the run's outcome in the job and move it on; returns the new state.

    "lost" when the job is no longer this worker's (recovered by another
    host while this worker's lease had lapsed): nothing is written.
    """
    if outcome.interrupted == "lost" or not still_owned(spool, held):
        return "lost"
    job = held.job
    error = describe(outcome, timeout)
    _record_attempt(job, outcome, error)
    if outcome.succeeded:
        state = "completed"
    elif outcome.interrupted == "cancel":
        state = "dead"
    elif outcome.interrupted == "stop":
        # Stopping workers is not the job's failure: it does not use a retry.
        state = "pending"
        job["attempts"] -= 1
    else:
        state = _after_failure(spool, job, outcome.finished)
    job["state"] = state
    held.save(moving_on=True)
    return _move_on(spool, held, state)


def _move_on(spool: Spool, held: LockedJob, state: str, fold_cut: bool | None = None) -> str:
    """Move the job to `state`; if another job has its id there, that one stays and this one is dead-lettered."""
    try:
        held.move(state, fold_cut=fold_cut)
    except FileNotFoundError:
        return "lost"  # moved on by another host's recovery meanwhile (shared spool)
    except FileExistsError:
        dead_letter(spool, held, f"duplicate id {held.name.removesuffix(SUFFIX)!r}: {state}/ already holds a job "
                                 f"with this id (this file is kept beside it)")
        return "dead"
    return state


def _record_attempt(job: dict, outcome: Outcome, error: str | None) -> None:
    duration = round(outcome.finished - outcome.started, 3)
    finished_at = iso(outcome.finished)
    job.update(finished_at=finished_at, last_duration=duration,
               last_exit_code=outcome.exit_code, last_error=error)
    job["history"] = (job.get("history") or [])[-(HISTORY_LIMIT - 1):] + [{
        "attempt": job["attempts"], "worker": job.get("worker"), "started_at": job.get("started_at"),
        "finished_at": finished_at, "exit_code": outcome.exit_code, "signal": outcome.signal,
        "error": error, "stderr_tail": outcome.stderr_tail,
    }]


def _after_failure(spool: Spool, job: dict, now: float) -> str:
    """failed/ with its backoff while retries are left (1 + max_retries runs), else dead/."""
    if job["attempts"] > job["max_retries"]:
        job["next_run_at"] = None
        return "dead"
    job["next_run_at"] = iso(now + retry_delay(job["attempts"], spool.config))
    return "failed"


def dead_letter(spool: Spool, held: LockedJob | None, reason: str, *, state: str = "pending",
                name: str | None = None) -> str:
    """Move an invalid file to dead/<id>.invalid untouched and describe it in dead/<id>.json.

    `held` is None for entries that cannot be opened safely (symlinks, FIFOs,
    folders): they are renamed as they are, never followed.
    """
    name = held.name if held is not None else name
    state = held.state if held is not None else state
    stem = name.removesuffix(SUFFIX)
    job_id = stem if id_is_free(spool, stem, state) else new_id()
    original = job_id + ".invalid"
    if held is not None:
        held.move("dead", original)
    else:
        fsops.rename_noreplace(os.path.join(spool.dir(state), name), os.path.join(spool.dir("dead"), original))
    write_dead_record(spool, job_id, reason, held.job if held is not None else None, name)
    return job_id


def id_is_free(spool: Spool, stem: str, state: str) -> bool:
    """Whether a file in `state` named after `stem` may keep that id in dead/: no other job has it.

    The kept bytes of an earlier invalid file count too, or the rename onto
    dead/<id>.invalid would fail every time the file is looked at again.
    """
    if not is_valid_id(stem) or os.path.lexists(os.path.join(spool.dir("dead"), stem + ".invalid")):
        return False
    return not any(os.path.lexists(os.path.join(spool.dir(other), stem + SUFFIX))
                   for other in STATES if other != state)


def write_dead_record(spool: Spool, job_id: str, reason: str, raw: object, original_name: str) -> None:
    """dead/<id>.json: why the bytes kept untouched in dead/<id>.invalid are not a job."""
    command = raw.get("command") if isinstance(raw, dict) else None
    now = iso(time.time())
    record = {
        "id": job_id, "command": printable(command) if isinstance(command, str) else None,
        "state": "dead", "invalid": True, "last_error": printable(f"invalid job: {reason}"),
        "original_name": printable(original_name), "original_file": job_id + ".invalid", "attempts": 0,
        "created_at": now, "updated_at": now, "history": [],
    }
    fsops.publish(spool.dir("tmp"), os.path.join(spool.dir("dead"), job_id + SUFFIX), dumps(record),
                  durable=spool.durable)


def printable(text: str) -> str:
    """Text that can be stored as UTF-8: undecodable bytes of a file name and lone surrogates become escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def is_canonical(job: object, state: str, name: str) -> bool:
    """Written by queuectl (not a hand-made drop-in): named by its id, with the stored fields."""
    return (isinstance(job, dict) and name == f"{job.get('id')}{SUFFIX}" and job.get("state") == state
            and "created_at" in job and "attempts" in job and "max_retries" in job)


def adopt(spool: Spool, name: str, *, complete: bool) -> str | None:
    """Turn a file dropped into pending/ into a stored job (SPEC section 3).

    Returns the job's file name in pending/, None when the file went to dead/,
    is not ours to handle now, or may still be being written (`complete`
    False and recently changed).
    """
    path = os.path.join(spool.dir("pending"), name)
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(info.st_mode):
        kind = "a symlink (not followed)" if stat.S_ISLNK(info.st_mode) else "not a regular file"
        try:
            dead_letter(spool, None, kind, name=name)
        except (FileNotFoundError, FileExistsError):
            pass
        return None
    held = spool.lock("pending", name)
    if held is None:
        return None
    with held:
        if finish_cut_move(spool, held):
            return None
        stem = name.removesuffix(SUFFIX)
        try:
            if held.unreadable is not None:
                raise InvalidJob(held.unreadable)
            job = build(held.job, spool.config, stem=stem)
        except InvalidJob as exc:
            if not complete and (time.time() - info.st_mtime < DROP_GRACE or fsops.open_for_writing(info)):
                return None  # still being written: judged when closed, or later
            dead_letter(spool, held, str(exc))
            return None
        target = job["id"] + SUFFIX
        # A file named after its id has no rename to refuse it: its id may
        # still belong to a job in another folder.
        if not id_is_free(spool, job["id"], "pending"):
            dead_letter(spool, held, f"duplicate id {job['id']!r}")
            return None
        if target != name:
            try:
                held.move("pending", target)
            except FileExistsError:
                dead_letter(spool, held, f"duplicate id {job['id']!r}")
                return None
        held.job = job
        held.save()
        return target


def finish_cut_move(spool: Spool, held: LockedJob) -> bool:
    """Finish a link + unlink move cut between its steps, which left this file under a second name.

    Of the two names, the one further along (KEEP_ORDER) stays, as if the
    move had gone that way: a cancel cut short is a cancel, not a run.
    Returns True when `held`'s own name was the one dropped.
    """
    mine = os.fstat(held.fd)
    if mine.st_nlink < 2 or spool.shared:
        # On a shared spool the second name may be another host's move in
        # flight (its flock does not reach us): recovery folds it once its
        # owner is proven dead, doctor on request.
        return False
    stem = held.name.removesuffix(SUFFIX)
    names = [(other, os.path.join(spool.dir(other), held.name)) for other in STATES if other != held.state]
    names.append(("dead", os.path.join(spool.dir("dead"), stem + ".invalid")))  # a dead-letter move
    for other, other_path in names:
        try:
            if not os.path.samestat(mine, os.lstat(other_path)):
                continue
        except FileNotFoundError:
            continue
        if KEEP_ORDER.index(other) < KEEP_ORDER.index(held.state):
            os.unlink(held.path)
            return True
        os.unlink(other_path)
    return False


def recover(spool: Spool, judge=None) -> list[tuple[str, str]]:
    """Settle every job in processing/ whose owner is dead, and clear its leftovers; returns (id, new state) pairs.

    `judge` (lease.Liveness) decides who is dead: a free flock is proof only
    on the owner's own host (README.md "Running on several hosts"). A
    worker passes its own judge, which remembers what it saw between sweeps.
    """
    from .lease import Liveness

    judge = judge or Liveness(spool)
    recovered = []
    for name in spool.names("processing"):
        if os.path.islink(os.path.join(spool.dir("processing"), name)):
            dead_letter(spool, None, "a symlink (not followed)", state="processing", name=name)
            recovered.append((name.removesuffix(SUFFIX), "dead"))
            continue
        held = spool.lock("processing", name)
        if held is None:
            continue
        with held:
            if not judge.owner_dead(held):
                continue
            state = _recover_one(spool, held)
            if state != "lost":
                recovered.append((name.removesuffix(SUFFIX), state))
    for record in registry.dead_records(spool, judge):
        registry.remove_record(spool, record["name"])
    fsops.remove_dead_spares(spool.dir("tmp"))  # a killed worker's replaced versions of jobs
    return recovered


def _recover_one(spool: Spool, held: LockedJob) -> str:
    job = held.job
    if not isinstance(job, dict):
        dead_letter(spool, held, "unreadable file in processing/")
        return "dead"
    target = job.get("state")
    if target in ("pending", "failed", "completed", "dead"):
        # An interrupted claim or settle, finished; its owner is proven dead,
        # so a second name of this file is its cut move, not one in flight.
        return _move_on(spool, held, target, fold_cut=True)
    try:
        job = build(job, spool.config, state="processing")
    except InvalidJob as exc:
        dead_letter(spool, held, str(exc))
        return "dead"
    kill_leftovers(job["id"], spool.root)  # the dead worker's command may still run
    now = time.time()
    started = job.get("started_at")
    outcome = Outcome(started=now, finished=now, error=f"worker {job.get('worker')} died during the run")
    if isinstance(started, str):
        outcome.started = min(now, parse_time(started))
    held.job = job
    job["attempts"] = max(job["attempts"], 1)
    _record_attempt(job, outcome, outcome.error)
    job["state"] = _after_failure(spool, job, now)
    held.save(moving_on=True)
    return _move_on(spool, held, job["state"], fold_cut=True)

