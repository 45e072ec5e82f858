"""The state machine of a job file: every transition, one function each.

Every edge a job file can take, and the function that takes it:

    (enqueue in spool.py)  ----------------------------> pending
    pending (a drop-in)    --adopt--------------------->  pending/<id>.json
    pending (a drop-in)    --adopt: not a valid job---->  dead    (bytes kept as <id>.invalid)
    pending (a drop-in)    --adopt: unique key taken-->  dead    (a live job holds its unique_key)
    pending                --claim-------------------->  processing
    failed                 --claim: next_run_at due--->  processing
    processing             --settle: exit 0----------->  completed
    processing             --settle: retries left----->  failed
    processing             --settle: out of retries--->  dead
    processing             --settle: cancelled-------->  dead
    processing             --settle: stopped on purpose> pending (the run uses no attempt)
    processing             --recover: worker died----->  failed, or dead when out of retries
    processing             --recover: claim cut short->  pending or failed (where it came from)
    processing             --recover: settle cut short>  the folder its `state` field names
    pending, failed        --cancel------------------->  dead
    failed                 --retry-------------------->  pending
    dead                   --dlq_retry---------------->  pending
    pending                --dependency_died---------->  dead    (a job its `after` names is dead or gone)
    completed, dead        --purge, retention--------->  (deleted with its log: delete_finished;
                                                           a completed job that a pending or failed
                                                           job waits for stays: workflow.prune_guard)
    (schedules.sweep)      --a due slot--------------->  pending (claimed under schedules/<name>.fired/)

After settle has moved a job to completed/, failed/ or dead/, its worker
still holds the file's flock while it runs the job's completion hook
(hooks.py) and records how the hook went; nothing else rewrites or
deletes the file meanwhile.

Every transition owns the file's flock first (`Spool.lock`) and makes one
rename per move (`LockedJob.move`), never a copy. It writes the job's new
fields in one of two orders, and the order is what makes a crash at any
point repairable:

- "move, then record" (claim, cancel, retry, dlq_retry, adopt): the file
  reaches its new folder first, with its old contents; a crash before the
  rewrite leaves a job whose `state` field lags behind its folder. In
  processing/ that is an interrupted claim, which `recover` undoes; in
  other folders the folder is the truth and doctor rewrites the field.
- "record, then move" (settle, recover): the outcome is written into the
  file while it is still in processing/ and locked, then the file moves;
  a crash between leaves processing/ID.json whose `state` names where it
  was going, and `recover` finishes the move.

`recover` handles every file in processing/ whose owner is dead: one whose
`state` field is not "processing" is moved on to the folder it names; one
that still says "processing" was running when its worker died, and counts
as a failed attempt.

Workflows (workflow.py) hook in here. A job of a group with a
limit holds a slot from just before its claim until its run ends (the
worker takes and frees it); `recover` frees a dead worker's slot before it
moves the job on, once the command's processes are gone. A unique key is
released while its job is still live and locked, just before the move to
completed/ or dead/ (`_move_on`, `cancel`), so nobody can take the key over
in between; `dlq_retry` takes it again under the take-over lock. A pending
job whose dependency is dead goes to dead/ (`dependency_died`).

Functions take job ids; only `adopt` takes a file name, because a
dropped-in file is not named after an id yet.
"""

from __future__ import annotations

import collections
import contextlib
import os
import stat
import threading
import time
from collections.abc import Iterable
from typing import Any

from . import fsops, hooks, registry, workflow
from .errors import InvalidJob, WrongState
from .job import STATES, build, due_time, dumps, is_valid_id, iso, new_id, parse_time, retry_delay
from .runner import Outcome, describe, kill_leftovers
from .spool import SUFFIX, LockedJob, Spool, file_name, id_of

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


def claim(spool: Spool, state: str, job_id: str, worker: str, now: float) -> LockedJob | None:
    """Own a due job of `state` and move it into processing/; None if another worker got there first."""
    held = spool.lock(state, file_name(job_id))
    if held is None:
        return None
    if finish_cut_move(spool, held):
        held.release()
        return None
    try:
        job = build(held.job, spool.config, stem=job_id, state=state)
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
                    f"duplicate id {job_id!r}: a job with this id is already running")
        held.release()
        return None
    if not still_owned(spool, held):  # paused past its lease between the rename and now
        held.release()
        return None
    job.update(state="processing", attempts=job["attempts"] + 1, started_at=iso(now),
               finished_at=None, worker=worker)
    held.job = job
    try:
        held.save(sync=False)
    except BaseException:
        held.release()  # an unlocked claim cut before its rewrite: recovery puts it back
        raise
    return held


def still_owned(spool: Spool, held: LockedJob) -> bool:
    """Whether `held` is still the file under its name, for a worker that may have been judged dead.

    Only a worker whose own lease lapsed (lease.Lease.lapsed) can have lost
    its job to another host's recovery, which rewrites the file (a new
    inode) and moves it on; on a shared spool every settle checks, the rest
    only after a lapse. The check and the rewrite that follows are two
    steps: docs/guide/several-hosts.md, "A worker paused past its lease" says what that leaves.
    """
    lease = spool.lease
    if lease is None or not (spool.shared or lease.lapsed()):
        return True
    return held.at_name() is not None


def settle(spool: Spool, held: LockedJob, outcome: Outcome, timeout: float | None,
           commit: GroupCommit | None = None) -> str:
    """Record the run's outcome in the job and move it on; returns the state it goes to.

    "Record, then move". Settle takes over `held`: it releases it, or hands
    it to `commit`, which makes the outcome durable together with other
    settles a moment later, while the worker goes on with its next job.
    An outcome with a completion hook (hooks.plan) is settled at once, not
    through `commit`, and `held` stays locked (`held.fd >= 0`) in its final
    folder for the caller to run the hook (hooks.run) and release it.
    "lost" when the job is no longer this worker's (recovered by another
    host while this worker's lease had lapsed): nothing is written.
    """
    try:
        if outcome.interrupted == "lost" or not still_owned(spool, held):
            held.release()
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
        # The hook counts as started in the same write as the outcome: at most once (hooks.py).
        hooks.plan(job, state, spool.config)
        hooked = hooks.planned(job, state)
        if commit is not None and not hooked:
            held.stage()
            commit.submit(held, state)
            return state
        held.save(moving_on=True)
        final = _move_on(spool, held, state)
        if not hooked or final != state:
            held.release()
        return final
    except BaseException:
        if commit is None or not commit.owns(held):
            held.release()
        raise


def _move_on(spool: Spool, held: LockedJob, state: str, *, sync: bool = True, fold_cut: bool | None = None) -> str:
    """Move the job to `state`; if another job has its id there, that one stays and this one is dead-lettered.

    "lost" when another host's recovery moved it first (a shared spool, docs/guide/several-hosts.md).
    """
    if state in ("completed", "dead"):
        workflow.release_key(spool, held.job)  # still live and locked here: see workflow.release_key
    try:
        held.move(state, sync=sync, fold_cut=fold_cut)
    except FileNotFoundError:
        return "lost"
    except FileExistsError:
        dead_letter(spool, held, f"duplicate id {id_of(held.name)!r}: {state}/ already holds a job "
                                 f"with this id (this file is kept beside it)")
        return "dead"
    return state


Item = tuple[LockedJob, str]  # a staged settle and the state it moves to


class GroupCommit:
    """A worker's settles, made durable in groups: the flushes by a thread, the renames by the worker.

    With `durable`, a settle alone costs three flushes to disk: the new
    bytes, the destination folder and processing/. Here the worker stages
    the outcome (a new file in tmp/, locked) and goes on with its next job.
    A group then takes three steps, each for every settle staged meanwhile:
    the thread fsyncs the new files; the worker, at its next `advance`,
    renames each over its job's name and into its destination folder; the
    thread fsyncs the destination folders and then processing/ (a power cut
    between them leaves a job under both names, never under none), and only
    then releases the jobs' locks. A job is locked until its outcome is on
    disk, so no other worker recovers it meanwhile. The thread only waits
    on the disk: the Python work stays on the worker's own thread, because
    two busy threads of one process hand the interpreter's lock back and
    forth at every system call.

    The worker calls `advance` between jobs, while a job runs (with its
    other periodic duties) and whenever `wake_fd` turns readable. What this
    changes: an outcome reaches the disk one short group commit after the
    run ended, not before settle returns; a crash or power cut inside that
    window runs the job again (docs/decisions/delivery.md). An error (a
    full disk) stops the commit; the worker sees it at its next `submit`,
    `advance` or `close`, and the jobs not yet settled stay in processing/
    unlocked, for recovery.
    """

    def __init__(self, spool: Spool):
        self.spool = spool
        self._changed = threading.Condition()
        self._staged: list[Item] = []                # submitted: their new bytes are not flushed yet
        self._flushing: list[Item] = []              # the thread flushes their new bytes now
        self._flushed: list[list[Item]] = []         # new bytes on disk: the worker renames them (advance)
        self._renamed: list[tuple[list[Item], set[str]]] = []  # the thread flushes their folders
        self._closing = False
        self._done = False
        self.error: BaseException | None = None
        self.wake_fd, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)  # readable: renames to make
        self._thread = threading.Thread(target=self._run, name="queuectl-commit", daemon=True)
        self._thread.start()

    def submit(self, held: LockedJob, state: str) -> None:
        """Take over `held` (staged, locked) and move it to `state` in the next group."""
        with self._changed:
            if self.error is not None:
                raise self.error
            self._staged.append((held, state))
            self._changed.notify_all()

    def owns(self, held: LockedJob) -> bool:
        with self._changed:
            return any(item[0] is held for item in self._items())

    def _items(self) -> list[Item]:
        return (self._staged + self._flushing + [item for group in self._flushed for item in group]
                + [item for group, _ in self._renamed for item in group])

    def advance(self) -> None:
        """Rename what the thread has flushed; quick when there is nothing to do. Raises the commit's error."""
        try:
            # Emptied before the groups are taken: a group flushed after this read leaves
            # the pipe readable, so a worker that sleeps on it now wakes for that group.
            os.read(self.wake_fd, 4096)
        except BlockingIOError:
            pass
        with self._changed:
            if self.error is not None:
                raise self.error
            groups, self._flushed = self._flushed, []
        for position, group in enumerate(groups):
            touched: set[str] = set()
            try:
                for held, state in group:
                    touched.add(held.state)
                    held.publish_staged(durable=False)
                    final = _move_on(self.spool, held, state, sync=False)
                    if final != "lost":  # moved by another host: no folder of ours to flush
                        touched.add(final)
            except BaseException as exc:
                with self._changed:
                    self.error = exc
                    self._flushed[:0] = groups[position:]  # released by close(), with the rest
                    self._changed.notify_all()
                raise
            with self._changed:
                self._renamed.append((group, touched))
                self._changed.notify_all()

    def close(self) -> None:
        """Settle everything submitted, then stop the thread; raises the commit's error, if any."""
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        try:
            while True:
                with self._changed:
                    while not (self._flushed or self._done or self.error is not None):
                        self._changed.wait()
                    if self._done or self.error is not None:
                        break
                self.advance()
        except BaseException:
            pass  # kept in self.error, raised below once everything is let go
        finally:
            with self._changed:
                self._closing = True
                self._changed.notify_all()
            self._thread.join()
            for held, _ in self._items():  # settles cut short by an error: recovery's now
                held.release()
            self._staged, self._flushing, self._flushed, self._renamed = [], [], [], []
            os.close(self.wake_fd)
            os.close(self._wake_w)
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        while True:
            with self._changed:
                while not (self._staged or self._renamed or self.error is not None
                           or (self._closing and not self._flushed)):
                    self._changed.wait()
                if self.error is not None or not (self._staged or self._renamed):
                    self._done = True  # closing, and nothing is left to flush
                    self._changed.notify_all()
                    return
                renamed, self._renamed = self._renamed, []
                self._flushing, self._staged = self._staged, []
            try:
                self._flush_folders(renamed)
                self._flush_bytes(self._flushing)
            except BaseException as exc:  # noqa: BLE001 - handed to the worker's thread
                with self._changed:
                    self.error = exc
                    self._renamed[:0] = renamed  # released by close(), with the rest
                    self._changed.notify_all()
                return
            with self._changed:
                if self._flushing:
                    self._flushed.append(self._flushing)
                    self._flushing = []
                    try:
                        os.write(self._wake_w, b"!")
                    except BlockingIOError:
                        pass  # the worker has a wake-up waiting already
                self._changed.notify_all()

    def _flush_bytes(self, group: list[Item]) -> None:
        if self.spool.durable:
            for held, _ in group:
                assert held.staged is not None  # settle staged it before submitting
                fsops.fsync(held.staged[1])

    def _flush_folders(self, renamed: list[tuple[list[Item], set[str]]]) -> None:
        if not renamed:
            return
        if self.spool.durable:
            touched = set().union(*(folders for _, folders in renamed))
            for folder in sorted(touched, key=lambda name: name == "processing"):  # processing/ last
                fsops.fsync_dir(self.spool.dir(folder))
        for group, _ in renamed:
            for held, _ in group:
                held.release()


class FlushPace:
    """Whether the next settle's flushes are quick enough to make on the worker's own path.

    The group commit hides slow flushes (a journaled disk: each waits for a
    journal commit) behind the worker's next job, but every settle it takes
    costs a hand-off between two threads, and on a disk whose flushes cost
    next to nothing (tmpfs) that hand-off is the dearer part. So a worker
    settles at once while its recent settles made at once spent less than
    QUICK_FLUSH in fsync (their median), and through its GroupCommit
    otherwise. Only settles made at once are measured, because only they
    answer the question (a group's flushes are shared and batched); in
    group mode every PROBE-th settle is made at once to measure the disk
    again, so a worker whose disk became quick switches back. Either way
    the outcome is on disk before the job's lock is given up: the choice
    changes only the speed, never what `durable` promises (docs/decisions/durable.md,
    "What was chosen").
    """

    QUICK_FLUSH = 100e-6  # seconds: about what handing a settle to another thread costs
    RECENT = 9            # settles the choice looks at: their median, so one preempted flush does not flip it
    PROBE = 256           # in group mode, one settle in this many is made at once, and measured (a cost there)

    def __init__(self) -> None:
        self.recent: collections.deque[float] = collections.deque(maxlen=self.RECENT)
        self.grouped = 0  # settles sent to the group commit since the last one made at once

    def observe(self, seconds: float) -> None:
        """The fsync time of a settle made at once."""
        self.recent.append(seconds)

    def inline(self) -> bool:
        """Whether to make the next settle at once (and measure it); True before anything is measured."""
        recent = sorted(self.recent)
        if not recent or recent[len(recent) // 2] < self.QUICK_FLUSH or self.grouped >= self.PROBE - 1:
            self.grouped = 0
            return True
        self.grouped += 1
        return False


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
    if held is not None:
        name, state = held.name, held.state
    if name is None:
        raise ValueError("dead_letter needs the held job or the entry's name")
    stem = id_of(name)
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
    record: dict[str, Any] = {
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
    """Turn a file dropped into pending/ into a stored job (docs/guide/jobs.md, "Dropping jobs in from any tool").

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
        stem = id_of(name)
        try:
            if held.unreadable is not None:
                raise InvalidJob(held.unreadable)
            job = build(held.job, spool.config, stem=stem)
        except InvalidJob as exc:
            # Only bytes that do not parse may still be being written: a whole
            # JSON object cannot grow into another (nothing may follow its brace).
            if (not complete and held.unreadable is not None
                    and (time.time() - info.st_mtime < DROP_GRACE or fsops.open_for_writing(info))):
                return None  # judged when its writer closes it, or later
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
        _mark_waiting(spool, job)  # before a worker may see it adopted (it still holds the lock)
        held.job = job
        held.save()
        if job.get("unique_key") is not None and not _adopt_key(spool, held):
            return None
        return target


def _mark_waiting(spool: Spool, job: dict) -> None:
    """Markers for a job about to wait in pending/: its dependencies stay (docs/decisions/waiting-markers.md)."""
    after = job.get("after")
    if isinstance(after, list) and after and is_valid_id(job.get("id")):
        workflow.mark_waiting(spool, job["id"], after)


def _adopt_key(spool: Spool, held: LockedJob) -> bool:
    """A dropped-in job with a `unique_key` takes it like an enqueue; held by a live job, it goes to dead/.

    Taken once the file holds the job's id (after the rewrite) and while it
    is locked, so no worker claims it before it has its key.
    """
    try:
        workflow.take_key(spool, held.job["unique_key"], held.job["id"], held.path)
    except workflow.KeyTaken as exc:
        held.job.update(state="dead", last_error=str(exc))
        held.save(moving_on=True)
        _move_on(spool, held, "dead")
        return False
    return True


def finish_cut_move(spool: Spool, held: LockedJob) -> bool:
    """Finish a link + unlink move cut between its steps, which left this file under a second name.

    Of the two names, the one further along (KEEP_ORDER) stays, as if the
    move had gone that way: a cancel cut short is a cancel, not a run.
    Returns True when `held`'s own name was the one dropped.
    """
    if spool.shared:
        # The second name may be another host's move in flight (its flock
        # does not reach us): recovery folds it once its owner is proven
        # dead, doctor on request.
        return False
    mine = os.fstat(held.fd)
    if mine.st_nlink < 2:
        return False
    stem = id_of(held.name)
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
    on the owner's own host (docs/decisions/leases.md). A
    worker passes its own judge, which remembers what it saw between sweeps.
    """
    from .lease import Liveness

    judge = judge or Liveness(spool)
    # Judged before the jobs, removed after them: a job is recovered in the
    # same sweep that finds its worker dead, and a record outlives its jobs.
    dead_workers = registry.dead_records(spool, judge)
    recovered = []
    for name in spool.names("processing"):
        if os.path.islink(os.path.join(spool.dir("processing"), name)):
            dead_letter(spool, None, "a symlink (not followed)", state="processing", name=name)
            recovered.append((id_of(name), "dead"))
            continue
        held = spool.lock("processing", name)
        if held is None:
            continue
        with held:
            if not judge.owner_dead(held):
                continue
            state = _recover_one(spool, held)
            if state != "lost":
                recovered.append((id_of(name), state))
    workflow.free_orphan_slots(spool)  # e.g. a worker killed between taking a slot and claiming its job
    for record in dead_workers:
        registry.remove_record(spool, record["name"])
    return recovered


def _recover_one(spool: Spool, held: LockedJob) -> str:
    job = held.job
    if not isinstance(job, dict):
        dead_letter(spool, held, "unreadable file in processing/")
        return "dead"
    target = job.get("state")
    if target in ("pending", "failed", "completed", "dead"):
        workflow.free_job_slots(spool, job)  # no command runs: cut before the run, or after it
        # An interrupted claim or settle, finished; its owner is proven dead,
        # so a second name of this file is its cut move, not one in flight.
        return _move_on(spool, held, target, fold_cut=True)
    try:
        job = build(job, spool.config, state="processing")
    except InvalidJob as exc:
        dead_letter(spool, held, str(exc))
        return "dead"
    kill_leftovers(job["id"], spool.root)  # the dead worker's command may still run
    workflow.free_job_slots(spool, job, leftovers=True)
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


def dependency_died(spool: Spool, job_id: str, dep: str) -> bool:
    """A pending job waiting for `dep`, which is dead (or in no folder), goes to dead/ naming it.

    The dependency's state is judged again under the job's lock, so a
    `dlq retry` of the dependency just before leaves the job waiting.
    False when the job is not (or no longer) to be moved.
    """
    held = spool.lock("pending", file_name(job_id))
    if held is None:
        return False
    with held:
        job = held.job
        if not isinstance(job, dict) or dep not in (job.get("after") or []):
            return False
        dep_state = spool.find(dep)
        if dep_state not in ("dead", None):
            return False
        reason = (f"dependency {dep} is dead" if dep_state == "dead"
                  else f"dependency {dep} does not exist (never enqueued, or purged)")
        job.update(state="dead", last_error=reason, next_run_at=None)
        held.save(moving_on=True)
        _move_on(spool, held, "dead")
        return True


# -- transitions an operator asks for -------------------------------------------

CANCEL_TRIES = 5  # looks at a job that a worker keeps moving before cancel gives up
CANCEL_PAUSE = 0.3


def cancel(spool: Spool, job_id: str) -> str:
    """A pending or failed job to dead/ as cancelled; returns the state it left.

    A running job is not moved here: its worker reads the cancel request,
    stops the command and settles the job in dead/ ("processing" is returned).
    """
    for attempt in range(CANCEL_TRIES):
        state = spool.find(job_id)
        if state == "processing":
            registry.request_cancel(spool, job_id)
            return "processing"
        if state in ("completed", "dead"):
            raise WrongState(f"cannot cancel job {job_id!r}: it is {state} already "
                             f"(pending, failed or running jobs can be cancelled)")
        try:
            held = spool.lock_job(job_id, ("pending", "failed"), "cancel")
        except WrongState:
            # A worker claimed (or settled) the job between the look and the lock:
            # look again, so the answer fits the state it is in now. On a shared
            # spool the look may come from this client's cache of names, which
            # another host's move makes stale for up to a second: look again later.
            if spool.find(job_id) != state:
                continue
            if attempt == CANCEL_TRIES - 1:
                raise
            time.sleep(CANCEL_PAUSE)
            continue
        with held:
            previous = held.state
            workflow.release_key(spool, held.job)  # while the job is still live: see workflow.release_key
            held.move("dead")
            held.job.update(state="dead", last_error="cancelled", next_run_at=None)
            held.save()
        return previous
    raise WrongState(f"job {job_id!r} keeps changing state; try again")


def retry(spool: Spool, job_id: str) -> dict:
    """A failed job due now, skipping its backoff."""
    with spool.lock_job(job_id, ("failed",), "retry") as held:
        held.move("pending")
        held.job.update(state="pending", next_run_at=None)
        held.save()
        return held.job


# What `dlq_retry` resets: the count and the latest run. Everything else is
# the job's own (its max_retries included: a job that asked for no retries
# keeps asking for none).
RUN_FIELDS = ("next_run_at", "started_at", "finished_at", "last_duration", "last_exit_code", "last_error",
              "worker")


def dlq_retry(spool: Spool, job_id: str) -> dict:
    """A dead job back to pending with `attempts` and the run fields reset; its own fields kept."""
    with spool.lock_job(job_id, ("dead",), "retry") as held:
        if not isinstance(held.job.get("command"), str) or held.job.get("invalid"):
            raise InvalidJob(f"job {job_id!r} was never a valid job ({held.job.get('last_error')}); "
                             f"fix the file and enqueue it again")
        _mark_waiting(spool, held.job)
        with workflow.key_held_for(spool, held):  # its unique key again, or KeyTaken
            held.move("pending")
        held.job.update(dict.fromkeys(RUN_FIELDS), state="pending", attempts=0)
        held.save()
        return held.job


def purge(spool: Spool, states: Iterable[str], older_than: float | None = None,
          needed: list[str] | None = None) -> int:
    """Delete finished jobs (and their logs) last changed more than `older_than` seconds ago.

    Completed jobs that a job in pending/ or failed/ waits for stay; their
    ids are appended to `needed` (docs/guide/retention.md, "Dependencies are kept").
    """
    removed = 0
    for state in states:
        if state not in ("completed", "dead"):
            raise WrongState(f"purge removes completed or dead jobs, not {state}")
        for name in spool.names(state):
            removed += delete_finished(spool, state, id_of(name), older_than=older_than, needed=needed)
    return removed


def delete_finished(spool: Spool, state: str, job_id: str, *, older_than: float | None = None,
                    needed: list[str] | None = None) -> bool:
    """Delete a completed or dead job with its log (purge, and retention's prune); False if it stays.

    It stays when it is gone or owned (a worker still running its completion
    hook holds the flock; so does a `dlq retry` under way), when its hook is
    marked started by a worker that is alive (a flock may not reach another
    host: docs/guide/hooks.md, "At most once per outcome"), when it changed less than
    `older_than` seconds ago, or, completed, while a job in pending/ or
    failed/ waits for it (docs/guide/workflows.md, "Dependencies": its id is appended to `needed`).
    """
    if state not in ("completed", "dead"):
        raise WrongState(f"only completed or dead jobs are deleted, not {state}")
    held = spool.lock(state, file_name(job_id))
    if held is None:
        return False
    with held:
        job = held.job if isinstance(held.job, dict) else {}
        if hooks.running_elsewhere(spool, job):
            return False
        info = held.at_name()
        if info is None:
            return False  # another host moved it on or replaced it meanwhile
        if older_than is not None and time.time() - info.st_mtime < older_than:
            return False
        guard = workflow.prune_guard(spool, job_id, held.path) if state == "completed" else None
        with guard or contextlib.nullcontext(True) as free:
            if not free:
                if free is False and needed is not None:
                    needed.append(job_id)
                return False
            if held.at_name() is None:
                return False
            try:
                os.unlink(held.path)
            except FileNotFoundError:
                return False
    for leftover in (spool.log_path(job_id), os.path.join(spool.dir(state), job_id + ".invalid")):
        try:
            os.unlink(leftover)
        except FileNotFoundError:
            pass
    return True
