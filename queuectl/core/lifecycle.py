"""The state machine of a job file: every transition, one function each.

Every edge a job file can take, and the function that takes it:

    (a caller)             --enqueue, enqueue_many---->  pending (the id's marker taken first)
    pending (a drop-in)    --adopt--------------------->  pending/<id>.json
    pending (a drop-in)    --adopt: not a valid job---->  dead    (bytes kept as <id>.invalid)
    pending (a drop-in)    --adopt: id or key taken--->  dead    (another job holds its id or unique_key)
    pending                --claim-------------------->  processing (a file its id's marker does not
                                                           name is left as it is: DROP_IN, for adopt)
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
    completed, dead        --restart_in_place--------->  pending (attempts reset, history kept)
    pending, failed        --hold, release------------>  the same folder (`held` set or cleared)
    pending, failed        --start_now---------------->  pending (run_at, next_run_at, held cleared)
    pending, failed, dead  --edit--------------------->  the same folder (its own fields, recorded in history)
    pending                --dependency_died---------->  dead    (a job its `after` names is dead or gone)
    pending                --dependency_ring---------->  dead    (its `after` leads back to itself)
    completed, dead        --purge, retention--------->  (deleted with its log: delete_finished)
    (schedules.sweep)      --a due slot--------------->  pending (claimed under schedules/<name>.fired/)

An id names one job for life: `ids/<id>` (Spool.take_id) is taken before
the job is visible and kept until it is deleted; every move back into
pending/ points it at the file that moves, first (docs/decisions/identity.md).

After settle has moved a job to completed/, failed/ or dead/, its worker
still holds the file's flock while it runs the job's completion hook
(hooks.py) and records how the hook went; nothing else rewrites or
deletes the file meanwhile.

Every transition owns the file's flock first (`Spool.lock`) and makes one
rename per move (`LockedJob.move`), never a copy. It writes the job's new
fields in one of two orders, and the order is what makes a crash at any
point repairable:

- "move, then record" (claim, cancel, adopt): the file reaches its new
  folder first, with its old contents; a crash before the rewrite leaves
  a job whose `state` field lags behind its folder. In processing/ that is
  an interrupted claim, which `recover` undoes; in other folders the
  folder is the truth and doctor rewrites the field.
- "record, then move" (settle, recover, retry, dlq_retry): the new fields
  are written while the file is still in its old folder and locked, then
  the file moves; a crash between leaves a file whose `state` names where
  it was going: `recover` finishes the move from processing/, and from
  failed/ or dead/ the folder is the truth (no pending file ever carries
  a used-up `attempts`).

Features (unique keys, dependencies, groups, completion hooks) are not
imported here: they subclass `Plugin` and are installed by the layers
above (features/plugins.py: install); each transition calls them at fixed points
(docs/decisions/layers.md).

Functions take job ids; only `adopt` takes a file name, because a
dropped-in file is not named after an id yet.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from . import fsops
from .errors import DuplicateJob, InvalidJob, JobNotFound, KeyTaken, SpoolError, WrongState
from .job import (
    MAX_JOB_BYTES,
    STATES,
    build,
    build_bytes,
    due_time,
    dumps,
    is_valid_id,
    iso,
    loads,
    new_id,
    parse_time,
    prepare_fields,
    retry_delay,
)
from .spool import ADOPTING, PURGING, SUFFIX, LockedJob, Spool, file_name, id_of

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


if TYPE_CHECKING:  # types only: building a Protocol class costs every command's start-up
    from typing import Protocol

    from .outcome import Outcome

    class Committer(Protocol):
        """What settle hands a staged outcome to (commit.GroupCommit)."""

        def submit(self, held: LockedJob, state: str) -> None: ...

        def owns(self, held: LockedJob) -> bool: ...


# The worker-only modules (lease, registry, outcome) are imported in the
# functions that settle jobs or judge workers, not here: `queuectl enqueue`
# imports this module, and its start-up must not pay for them (socket,
# dataclasses). They sit below this module; nothing there imports it. The
# runner is above core/ and never imported here: what a dead worker's
# command left running is its plugin's to end (runner.LeftoversPlugin).


# -- the features' interface ------------------------------------------------------

class Plugin:
    """A feature that joins in the transitions (docs/decisions/layers.md).

    Lifecycle knows no feature: groups, unique keys, dependencies, completion
    hooks and retention subclass this, and the layers above (the worker, the
    CLI, the Python API) install them with `install` (features/plugins.py does
    it for queuectl's own). Every method's default does nothing; each is
    called under the job file's flock, at the point its name says.
    """

    def check_enqueue(self, spool: Spool, job: dict, earlier: set[str]) -> None:
        """Before any job of an enqueue batch is published; raise a QueueError to refuse the batch.
        `earlier`: the ids of the jobs before this one in the batch. `job` is serialized already:
        it must not be changed here."""

    def before_publish(self, spool: Spool, job: dict, source: str) -> None:
        """Right before `job` appears in pending/ (enqueue, adoption): `source` is a file holding its JSON.
        Raise KeyTaken (or another DuplicateJob) to refuse it."""

    def undo_publish(self, spool: Spool, job: dict) -> None:
        """An enqueue failed after before_publish: give back what it took."""

    def before_return(self, spool: Spool, held: LockedJob) -> AbstractContextManager[None]:
        """A dead job coming back to pending/ (`dlq retry`): the move happens inside the context."""
        return contextlib.nullcontext()

    def on_settle(self, spool: Spool, job: dict, state: str) -> bool:
        """The outcome is recorded in `job` (not written yet); True: keep the job locked after its move."""
        return False

    def before_finish(self, spool: Spool, job: dict) -> None:
        """A live job (pending, processing, failed) is about to move to completed/ or dead/."""

    def on_recover(self, spool: Spool, job: dict, leftovers: bool) -> None:
        """A dead worker's job is about to move on; `leftovers`: its command may still have processes."""

    def after_recover(self, spool: Spool) -> None:
        """At the end of a recovery sweep."""

    def on_delete(self, spool: Spool, job: dict) -> None:
        """A finished job (its fields as they were) has just been deleted with its log."""

    def may_delete(self, spool: Spool, state: str, job_id: str, path: str) -> AbstractContextManager[bool | None]:
        """Around the deletion of a finished job: yield True to allow it, False when it must stay
        (a job still needs it), None when it may not be judged now."""
        return contextlib.nullcontext(True)


PLUGINS: list[Plugin] = []
_installer: list[Callable[[], None]] = []


def install(plugin: Plugin) -> None:
    """Add a feature to every transition of this process (once per class)."""
    if not any(type(installed) is type(plugin) for installed in PLUGINS):
        PLUGINS.append(plugin)


def install_later(installer: Callable[[], None]) -> None:
    """Have `installer` install the features at the first transition that needs them.

    The Python API and the CLI register one, so that a plain enqueue (which
    no feature joins) starts without loading them (docs/decisions/layers.md).
    """
    _installer[:] = [installer]


def plugins() -> list[Plugin]:
    """The installed features, after running a pending `install_later` installer."""
    if _installer:
        _installer.pop()()
    return PLUGINS


# -- enqueue ------------------------------------------------------------------------

def enqueue(spool: Spool, job: dict | str, *, if_absent: bool = False, **options: Any) -> dict:
    """Enqueue one job from a dict of fields or a command string; returns the stored job.

    With `if_absent`, a job whose unique key a live job holds is not
    enqueued, and that job is returned instead.
    """
    return enqueue_many(spool, [prepare_fields(job, **options)], if_absent=if_absent)[0]


def enqueue_many(spool: Spool, jobs: Iterable[dict], *, if_absent: bool = False) -> list[dict]:
    """Validate every job, then publish them in order; the folder is fsynced once at the end.

    An invalid job, an id already taken or an `after` naming no job stops
    the batch before any job is published. Only a rival process taking an
    id, or a live job holding a `unique_key`, stops it midway (the jobs
    before that one are enqueued); with `if_absent` the holder of the key
    takes the place of the job in the returned list instead.
    """
    settings = spool.config
    durable = settings["durable"]
    batch = _validate_batch(spool, jobs, settings)
    published: list[dict] = []
    try:
        for job, data in batch:
            published.append(_publish(spool, job, data, durable, if_absent) or job)
    except DuplicateJob as exc:
        raise DuplicateJob(f"{exc}{_enqueued_before(published)}") from None
    except OSError as exc:
        raise SpoolError(f"cannot enqueue into {spool.root}: {exc.strerror or exc}"
                         f"{_enqueued_before(published)}") from None
    finally:
        if durable and published:
            fsops.fsync_dir(spool.dir("pending"))
    return published


def _validate_batch(spool: Spool, jobs: Iterable[dict], settings: dict) -> list[tuple[dict, bytes]]:
    """Each job built and serialized, or the error of the first one that cannot be enqueued."""
    batch: list[tuple[dict, bytes]] = []
    ids: set[str] = set()
    for fields in jobs:
        job, data = build_bytes(fields, settings)
        job_id = job["id"]
        if job_id in ids:
            raise DuplicateJob(f"id {job_id!r} appears twice in the batch")
        # A generated id embeds this process's own increasing clock and its pid,
        # so only ids the caller chose can be taken. The marker decides at
        # publish time (_publish); this look refuses the batch before any job
        # is published, and also finds a file put into a folder by hand (which
        # has no marker: `doctor --repair` gives it one).
        if fields.get("id") is not None:
            _refuse_taken(spool, job_id)
        for plugin in _plugins_for(job):
            plugin.check_enqueue(spool, job, ids)
        if len(data) > MAX_JOB_BYTES:
            raise InvalidJob(f"job {job_id!r} is {len(data)} bytes as JSON, over the 1 MiB limit")
        ids.add(job_id)
        batch.append((job, data))
    return batch


def _refuse_taken(spool: Spool, job_id: str) -> None:
    if spool.id_taken(job_id):
        raise _taken(spool, job_id)
    state = spool.find(job_id)  # a file put into a folder by hand has no marker
    if state is not None:
        raise DuplicateJob(f"a job with id {job_id!r} already exists ({state})")


def _taken(spool: Spool, job_id: str) -> DuplicateJob:
    state = spool.find(job_id)  # for the message only: the job may be between two folders
    return DuplicateJob(f"a job with id {job_id!r} already exists" + (f" ({state})" if state else ""))


def _publish(spool: Spool, job: dict, data: bytes, durable: bool, if_absent: bool) -> dict | None:
    """Take the id's marker, then the features' names, then publish (docs/decisions/identity.md).

    The marker is a second name of the job's own temporary file, taken
    before the job is visible, so it costs no inode and the file that lands
    in pending/ is the marker's. With `if_absent` the holder of a taken
    unique key is returned instead.
    """
    job_id = job["id"]
    temp = fsops.write_new(spool.dir("tmp"), job_id + SUFFIX, data, durable=durable)
    took = published = False
    try:
        if not spool.take_id(job_id, temp):
            raise _taken(spool, job_id)
        took = True
        for plugin in _plugins_for(job):
            plugin.before_publish(spool, job, temp)
        fsops.link_new(temp, f"{spool.root}/pending/{job_id}{SUFFIX}")  # no ctypes at start-up
        published = True
    except KeyTaken as exc:
        if not if_absent:
            raise
        try:
            return spool.get(exc.holder)
        except JobNotFound:
            return {"id": exc.holder}
    except FileExistsError:
        raise DuplicateJob(f"a file pending/{job_id}{SUFFIX} is there already (a drop-in not adopted yet)") from None
    finally:
        if not published:
            if took:
                spool.drop_id(job_id, temp)
                for plugin in _plugins_for(job):
                    plugin.undo_publish(spool, job)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
    return None


def _plugins_for(job: dict) -> list[Plugin]:
    """A job that uses no feature field at enqueue (`after`, `unique_key`, `needs`) needs no feature loaded."""
    return plugins() if job.get("after") or job.get("unique_key") is not None or job.get("needs") else PLUGINS


def _enqueued_before(published: list[dict]) -> str:
    """Said by an error midway through a batch, so a re-run does not enqueue those jobs twice."""
    return f"; the first {len(published)} job(s) of the batch were enqueued" if published else ""


# What claim returns for a file in pending/ that is not its id's own job: a drop-in, for the
# caller to hand to adoption (adopt) before anything of it runs (docs/decisions/identity.md).
DROP_IN = "drop-in"


def claim(spool: Spool, state: str, job_id: str, worker: str, now: float) -> LockedJob | str | None:
    """Own a due job of `state` and move it into processing/.

    None if it is not this worker's to run now (another worker got there
    first, or it is not due); DROP_IN if the file under the id's name in
    pending/ is not the job queuectl placed there (its marker names another
    inode, or none): a claim never adopts, it leaves the file as it is.
    """
    held = spool.lock(state, file_name(job_id))
    if held is None:
        return None
    claimed: bool | str = False
    try:
        claimed = _claim_held(spool, held, worker, now)
    finally:
        if claimed is not True:  # the one place a claim lets its file go, whatever the way out
            held.unlock()
    if claimed is True:
        return held
    return DROP_IN if claimed == DROP_IN else None


def _claim_held(spool: Spool, held: LockedJob, worker: str, now: float) -> bool | str:
    """claim's steps on the locked file; False when it is not this worker's to run now, DROP_IN for a drop-in."""
    state, job_id = held.state, id_of(held.name)
    own = state == "pending" and spool.id_holds(job_id, held.inode) is True
    if finish_cut_move(spool, held, links=2 if own else 1):  # the marker is one more name of its own file
        return False
    if state == "pending" and not own:
        return DROP_IN
    try:
        job = build(held.job, spool.config, stem=job_id, state=state)
        if due_time(job) > now or job.get("held") is True:  # a held job waits for `release` (hold)
            return False
        held.move("processing", sync=False)
    except FileNotFoundError:
        return False  # another host's worker moved it first (shared spool: its flock did not reach us)
    except InvalidJob as exc:
        dead_letter(spool, held, str(exc))
        return False
    except FileExistsError:
        dead_letter(spool, held, f"duplicate id {job_id!r}: a job with this id is already running")
        return False
    if not still_owned(spool, held):
        # Paused past its lease between the rename and now (the job is another host's recovery's
        # then), or, within the lease, the rename took another file: the name led to a file another
        # host put there after this worker locked its own (a drop-in it adopted meanwhile). Within
        # the lease nobody else acts on that name in processing/: the file goes back at once.
        if spool.lease is not None and not spool.lease.lapsed():
            _return_moved(spool, held.state, held.name, to=state)
        return False
    job.update(state="processing", attempts=job["attempts"] + 1, started_at=iso(now),
               finished_at=None, worker=worker)
    held.job = job
    held.save(sync=False)  # cut before this rewrite, the claim is recovery's to put back
    return True


def still_owned(spool: Spool, held: LockedJob) -> bool:
    """Whether `held` is still the file under its name, for a worker that may have been judged dead.

    Only a worker whose own lease lapsed (lease.Lease.lapsed) can have lost
    its job to another host's recovery, which rewrites the file (a new
    inode) and moves it on; on a shared spool every settle checks, the rest
    only after a lapse. The check and the rewrite that follows are two
    steps: docs/guide/several-hosts.md says what that leaves.
    """
    lease = spool.lease
    if lease is None or not (spool.shared or lease.lapsed()):
        return True
    return held.at_name() is not None


def settle(spool: Spool, held: LockedJob, outcome: Outcome, timeout: float | None,
           commit: Committer | None = None) -> str:
    """Record the run's outcome in the job and move it on; returns the state it goes to.

    "Record, then move". Settle takes over `held`: it releases it, or hands
    it to `commit`, which makes the outcome durable together with other
    settles a moment later, while the worker goes on with its next job.
    An outcome a feature keeps locked (Plugin.on_settle: a completion hook)
    is settled at once, not through `commit`, and `held` stays locked
    (`held.fd >= 0`) in its final folder for the caller to run the hook
    and release it.
    "lost" when the job is no longer this worker's (recovered by another
    host while this worker's lease had lapsed): nothing is written.
    """
    try:
        if outcome.interrupted == "lost" or not still_owned(spool, held):
            held.unlock()
            return "lost"
        job = held.job
        error = outcome.describe(timeout)
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
        # A hook counts as started in the same write as the outcome: at most once (hooks.py).
        hooked = False
        for plugin in plugins():
            hooked = plugin.on_settle(spool, job, state) or hooked
        if commit is not None and not hooked:
            held.stage()
            commit.submit(held, state)
            return state
        held.save(moving_on=True)
        final = move_on(spool, held, state)
        if not hooked or final != state:
            held.unlock()
        return final
    except BaseException:
        if commit is None or not commit.owns(held):
            held.unlock()
        raise


def move_on(spool: Spool, held: LockedJob, state: str, *, sync: bool = True, fold_cut: bool | None = None) -> str:
    """Move the job to `state`; returns the state it reached.

    Into pending/, its id's marker is first pointed at the file that moves
    ("record, then relink, then move": docs/decisions/identity.md), and a
    file in the way there is a drop-in on a taken id: it goes to dead/ with
    its bytes, never this job. Elsewhere, if another file has the name, that
    one stays and this one is dead-lettered. "lost" when another host's
    recovery moved it first (a shared spool, docs/guide/several-hosts.md).
    """
    job_id = id_of(held.name)
    if state in ("completed", "dead") and held.state in ("pending", "processing", "failed"):
        for plugin in plugins():
            plugin.before_finish(spool, held.job)  # still live and locked here
    if state == "pending" and held.state != "pending" and is_valid_id(job_id):
        spool.relink_id(job_id, held.path)
    for _ in range(3):
        try:
            held.move(state, sync=sync, fold_cut=fold_cut)
            return state
        except FileNotFoundError:
            return "lost"
        except FileExistsError:
            if state == "pending" and _evict(spool, held.name):
                continue
            break
    dead_letter(spool, held, f"duplicate id {job_id!r}: {state}/ already holds a job "
                             f"with this id (this file is kept beside it)")
    return "dead"


def _evict(spool: Spool, name: str) -> bool:
    """Send to dead/ the file under `name` in pending/ that is not its id's job; False if it could not be."""
    other = spool.lock("pending", name)
    if other is None:
        return not os.path.lexists(os.path.join(spool.dir("pending"), name))
    with other:
        if spool.id_holds(id_of(name), other.inode):
            return False  # the id's own job (cannot be: the caller holds it); left alone
        dead_letter(spool, other, f"duplicate id {id_of(name)!r}: another job holds this id")
    return True


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
    """Move an invalid file to dead/<id>.invalid untouched and describe it in dead/<id>.json; returns <id>.

    `held` is None for entries that cannot be opened safely (symlinks, FIFOs,
    folders): they are renamed as they are, never followed. <id> is the
    entry's stem when that id is free (or the entry is its id's own file,
    whose marker then names the record), else a generated one: the record
    takes the id's marker before anything moves (docs/decisions/identity.md).
    """
    if held is not None:
        name, state = held.name, held.state
    if name is None:
        raise ValueError("dead_letter needs the held job or the entry's name")
    stem = id_of(name)
    own = held is not None and is_valid_id(stem) and spool.id_holds(stem, held.inode) is True
    # The stem only when no folder shows a job of that id either: a job put into a folder by
    # hand has no marker. A look that misses a moving job costs nothing: its marker refuses.
    job_id = stem if is_valid_id(stem) and (own or _unseen(spool, stem, state, name)) else new_id()
    raw = held.job if held is not None else None
    dead = spool.dir("dead")
    while True:
        temp = fsops.write_new(spool.dir("tmp"), job_id + SUFFIX, _dead_record(job_id, reason, raw, name),
                                  durable=spool.durable)
        if own and job_id == stem:
            spool.relink_id(job_id, temp)
            taken = True
        else:
            # A record of this entry cut short by a crash left the marker on its temporary file.
            taken = spool.take_id(job_id, temp) or (_cut_publish(spool, job_id, keep=temp)
                                                    and spool.take_id(job_id, temp))
        if taken and not os.path.lexists(os.path.join(dead, job_id + INVALID)):
            break
        if taken:
            spool.drop_id(job_id, temp)
        os.unlink(temp)
        job_id = new_id()
    try:
        if held is not None:
            held.move("dead", job_id + INVALID)
        else:
            fsops.rename_noreplace(os.path.join(spool.dir(state), name), os.path.join(dead, job_id + INVALID))
        fsops.rename_noreplace(temp, os.path.join(dead, job_id + SUFFIX))
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            if not os.path.lexists(os.path.join(dead, job_id + INVALID)):
                spool.drop_id(job_id, temp)
            os.unlink(temp)
        raise
    if spool.durable:
        fsops.fsync_dir(dead)
    return job_id


INVALID = ".invalid"


def _unseen(spool: Spool, stem: str, state: str, name: str) -> bool:
    """Whether no folder other than the entry's own shows a job file of id `stem`."""
    return _shown_in(spool, stem, skip=(state,) if name == stem + SUFFIX else ()) is None


def _shown_in(spool: Spool, stem: str, *, skip: tuple[str, ...]) -> str | None:
    """The first state folder, other than those in `skip`, that shows a job file of id `stem`."""
    return next((other for other in STATES if other not in skip
                 and os.path.lexists(os.path.join(spool.dir(other), stem + SUFFIX))), None)


def _dead_record(job_id: str, reason: str, raw: object, original_name: str) -> bytes:
    command = raw.get("command") if isinstance(raw, dict) else None
    now = iso(time.time())
    record: dict[str, Any] = {
        "id": job_id, "command": printable(command) if isinstance(command, str) else None,
        "state": "dead", "invalid": True, "last_error": printable(f"invalid job: {reason}"),
        "original_name": printable(original_name), "original_file": job_id + INVALID, "attempts": 0,
        "created_at": now, "updated_at": now, "history": [],
    }
    return dumps(record)


def write_dead_record(spool: Spool, job_id: str, reason: str, raw: object, original_name: str,
                      kept: str | None = None) -> bool:
    """dead/<id>.json: why the bytes kept in dead/<id>.invalid are not a job; False when the id is taken.

    `kept`: the path of those bytes; a marker that names them is the id's own and moves to the record.
    """
    temp = fsops.write_new(spool.dir("tmp"), job_id + SUFFIX, _dead_record(job_id, reason, raw, original_name),
                              durable=spool.durable)
    try:
        own = False
        with contextlib.suppress(FileNotFoundError):
            own = kept is not None and os.path.samestat(os.lstat(kept), os.lstat(spool.marker(job_id)))
        if own:
            spool.relink_id(job_id, temp)
        elif not spool.take_id(job_id, temp) and not (_cut_publish(spool, job_id, keep=temp)
                                                      and spool.take_id(job_id, temp)):
            return False
        try:
            fsops.rename_noreplace(temp, os.path.join(spool.dir("dead"), job_id + SUFFIX))
        except BaseException:
            spool.drop_id(job_id, temp)
            raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
    return True


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
        own = is_valid_id(id_of(name)) and spool.id_holds(id_of(name), held.inode) is True
        if finish_cut_move(spool, held, links=2 if own else 1):
            return None
        if own and is_canonical(held.job, "pending", held.name):
            return name  # its id's stored job already (adopted meanwhile by another worker)
        return _adopt_held(spool, held, complete=complete, mtime=info.st_mtime)


def _adopt_held(spool: Spool, held: LockedJob, *, complete: bool, mtime: float) -> str | None:
    """Adopt the locked file `held` in pending/; its name in pending/, or None (dead, or judged later).

    The id's marker decides: taken by another file, the newcomer goes to
    dead/ with its bytes as they are; free, it is taken with the dropped
    file's own inode, then pointed at the rewritten file before that file
    takes the name (docs/decisions/identity.md says what a crash between leaves).
    """
    name = held.name
    try:
        if held.unreadable is not None:
            raise InvalidJob(held.unreadable)
        job = build(held.job, spool.config, stem=id_of(name))
    except InvalidJob as exc:
        # Only bytes that do not parse may still be being written: a whole
        # JSON object cannot grow into another (nothing may follow its brace).
        if (not complete and held.unreadable is not None
                and (time.time() - mtime < DROP_GRACE or fsops.open_for_writing(os.fstat(held.fd)))):
            return None  # judged when its writer closes it, or later
        if _take_drop_in(spool, held):
            dead_letter(spool, held, str(exc))
        return None
    if not _take_drop_in(spool, held):
        return None
    job_id = job["id"]
    target = job_id + SUFFIX
    holds = spool.id_holds(job_id, held.inode)  # None: the id is free; False: another file has it
    if holds is False and target == name and _cut_publish(spool, job_id):
        holds = None
    # Files put into a folder by hand have no marker: a look at the folders refuses them too (a look
    # that misses a job moving between folders costs nothing: that job has its marker).
    if holds is False or (holds is None and not _unseen(spool, job_id, "pending", name)):
        orphaned = holds is False and target == name and _only_in_marker(spool, job_id)
        dead_letter(spool, held, f"duplicate id {job_id!r}: another job has this id"
                    + ("; that job's file, which this one had replaced, is back in pending/" if orphaned else ""))
        if orphaned:
            _restore_from_marker(spool, job_id)
        return None
    if target != name and held.state == "pending":
        try:
            held.move("pending", target)
        except FileExistsError:
            dead_letter(spool, held, f"duplicate id {job_id!r}")
            return None
    if not spool.take_id(job_id, held.path):
        dead_letter(spool, held, f"duplicate id {job_id!r}: another job has this id")
        return None
    held.job = job
    held.stage()
    assert held.staged is not None
    staged, staged_fd = held.staged
    try:
        for plugin in plugins():
            plugin.before_publish(spool, job, staged)  # the staged file holds the job's JSON, id included
    except KeyTaken as exc:
        held.staged = None
        os.close(staged_fd)
        os.unlink(staged)
        job.update(state="dead", last_error=str(exc))
        held.save(moving_on=True)
        move_on(spool, held, "dead")
        return None
    spool.relink_id(job_id, staged)
    if held.state == "pending":
        held.publish_staged(durable=spool.durable)
    else:
        try:  # from adopting/: under its name only now, never over a file that took the name meanwhile
            held.publish_staged(durable=spool.durable, to=("pending", target))
        except FileExistsError:
            for plugin in plugins():
                plugin.undo_publish(spool, job)
            spool.relink_id(job_id, held.path)  # left in adopting/ as its id's own: recovery puts it back
            return None
    if spool.durable:
        fsops.fsync_dir(spool.dir("pending"))
    return target


def _take_drop_in(spool: Spool, held: LockedJob) -> bool:
    """Make the drop-in `held` this process's alone to adopt; False when another process has it.

    On one host the flock does that. On a shared spool another host's flock
    is not seen (docs/guide/several-hosts.md): the drop-in is first moved
    into adopting/ under its own name, a move of which exactly one process
    succeeds (link() refuses a taken name; rename_noreplace without fold_cut
    refuses a second name of the same file). Everything after acts on that
    name, which nobody else uses; a crash leaves the file there, and
    recovery puts it back into pending/ (sweep_adopting).

    The move takes whatever the name in pending/ leads to by then: when
    another host adopted the drop-in after this process locked it, that is
    the other host's result, the id's own job. What the move carried is not
    this process's to adopt, and nobody else will take it from adopting/
    before the sweep: it goes back under its name at once (_return_moved).
    """
    if not spool.shared or held.state != "pending":
        return True
    for _ in range(2):
        try:
            held.move(ADOPTING, sync=False, fold_cut=False)
            if held.at_name() is not None:
                return True
            _return_moved(spool, ADOPTING, held.name, to="pending")
            return False
        except FileNotFoundError:
            if os.path.isdir(spool.dir(ADOPTING)):
                return False  # another process took it first
            fsops.make_folder(spool.dir(ADOPTING))  # made on first use: no spool open pays a look for it
        except FileExistsError:
            return False  # a file of this name is still being adopted (or left by a crash): later
    return False


def _only_in_marker(spool: Spool, job_id: str) -> bool:
    """Whether the id's job survives only as its marker: a file moved by hand onto its name in
    pending/ (`mv x.json pending/<id>.json`) replaced it, and a hard-link marker is its last name.

    The marker is a second name of the job's file from enqueue to deletion, and
    a deletion keeps a third (purging/<id>) until the end (docs/decisions/identity.md):
    one name left, holding this id's job, can only be a job whose file was replaced.
    Text markers (shared spools) hold no job: there the replaced job is gone. A marker can also
    be the enqueued version of a job that lives on, rewritten, in another folder: looked for below.
    """
    marker = spool.marker(job_id)
    try:
        if os.lstat(marker).st_nlink != 1:
            return False
        fd = fsops.open_nofollow(marker)
    except OSError:
        return False
    try:
        data = os.read(fd, MAX_JOB_BYTES + 1)
    except OSError:
        return False
    finally:
        os.close(fd)
    try:
        job = loads(data)
    except (ValueError, InvalidJob):  # a text marker holds numbers, not a job
        return False
    if not (isinstance(job, dict) and job.get("id") == job_id and job.get("state") == "pending"):
        return False
    # A marker may still name the file as it was enqueued while the job lives on, rewritten, in
    # another folder: then it is no orphan. The folders are looked at twice, in the order of the
    # moves out of processing/ and failed/, so a job moving meanwhile is seen in one of them.
    for _ in range(2):
        for state in ("failed", "processing", "completed", "failed", "dead"):
            if os.path.lexists(os.path.join(spool.dir(state), file_name(job_id))):
                return False
    return True


def _restore_from_marker(spool: Spool, job_id: str) -> None:
    """Put the replaced job back under its name in pending/, from its marker (a name of its file)."""
    with contextlib.suppress(FileExistsError, FileNotFoundError):  # the name was taken again, or the id deleted
        os.link(spool.marker(job_id), os.path.join(spool.dir("pending"), file_name(job_id)))
        if spool.durable:
            fsops.fsync_dir(spool.dir("pending"))


def _cut_publish(spool: Spool, job_id: str, *, keep: str | None = None) -> bool:
    """Whether ids/<id> named only a temporary file, now removed with it (then the id is free).

    Called while this process holds pending/<id>.json: an enqueue or an
    adoption that took the marker with its temporary file can never publish
    it under that name now (it is taken), so the marker is a leftover, from
    a crash or from a publish about to fail. Decided by the marker's own
    inode, found under a name in tmp/: no timing, no look at other folders.
    """
    marker = spool.marker(job_id)
    try:
        info = os.lstat(marker)
    except FileNotFoundError:
        return True
    if info.st_nlink < 2:
        return False
    tmp = spool.dir("tmp")
    prefix = f".{job_id}{SUFFIX}."
    for name in fsops.listdir_if_there(tmp):
        if not (name.startswith(prefix) and name.endswith(".tmp")):
            continue
        path = os.path.join(tmp, name)
        if path == keep:
            continue
        try:
            if not os.path.samestat(info, os.lstat(path)):
                continue
        except FileNotFoundError:
            continue
        with contextlib.suppress(FileNotFoundError):
            os.unlink(marker)  # the marker first: never a marker of a file with no name
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return True
    return False


def finish_cut_move(spool: Spool, held: LockedJob, *, links: int = 1) -> bool:
    """Finish a link + unlink move cut between its steps, which left this file under a second name.

    Of the two names, the one further along (KEEP_ORDER) stays, as if the
    move had gone that way: a cancel cut short is a cancel, not a run.
    Returns True when `held`'s own name was the one dropped. `links`: the
    names the file has when no move was cut (2 when the caller knows that
    its id's marker is one of them), so the common case costs no look.
    """
    if spool.shared:
        # The second name may be another host's move in flight (its flock
        # does not reach us): recovery folds it once its owner is proven
        # dead, doctor on request.
        return False
    mine = os.fstat(held.fd)
    if mine.st_nlink <= links:
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
    on the owner's own host (docs/guide/several-hosts.md). A
    worker passes its own judge, which remembers what it saw between sweeps.
    """
    from . import registry  # see the note on imports at the top
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
    sweep_adopting(spool, judge)
    for plugin in plugins():
        plugin.after_recover(spool)  # e.g. a worker killed between taking a slot and claiming its job
    for record in dead_workers:
        registry.remove_record(spool, record["name"])
    sweep_purges(spool)
    sweep_temps(spool)
    return recovered


def sweep_adopting(spool: Spool, judge: Any) -> int:
    """Put back into pending/ the drop-ins whose adopter died in adopting/ (_take_drop_in); returns how many.

    Back under its name, a drop-in is adopted again from the start; if a
    file took that name meanwhile, this one goes to dead/ with its bytes.
    """
    returned = 0
    for name in fsops.listdir_if_there(spool.dir(ADOPTING)):
        if name.startswith("."):
            continue
        if os.path.islink(os.path.join(spool.dir(ADOPTING), name)):
            with contextlib.suppress(FileNotFoundError, FileExistsError):
                dead_letter(spool, None, "a symlink (not followed)", state=ADOPTING, name=name)
            continue
        held = spool.lock(ADOPTING, name)
        if held is None:
            continue
        with held:
            if judge.abandoned(held) and put_back(spool, held) == "pending":
                returned += 1
    return returned


def put_back(spool: Spool, held: LockedJob, to: str = "pending") -> str | None:
    """Move `held` (locked) back under its name in `to`: a drop-in whose adopter died in adopting/
    (sweep_adopting), or a file a move took by mistake (_return_moved). Returns the folder it
    reached, None when another process moved it first.

    A file that took that name meanwhile is a drop-in. It keeps the name
    from another drop-in, which goes to dead/ with its bytes; it never does
    from the id's own job (its marker names it), which takes the name back
    and sends the newcomer to dead/ instead (docs/decisions/identity.md).
    The id's own job as enqueued, while another folder shows the job, is a
    stale copy that two moves at once left (a link + unlink move): it goes
    to dead/ under a new id, never back, where it would run the job again.
    """
    stem = id_of(held.name)
    own = is_valid_id(stem) and spool.id_holds(stem, held.inode) is True  # under held's flock: read once
    elsewhere = _shown_in(spool, stem, skip=(held.state, to)) if own else None
    if elsewhere is not None:
        dead_letter(spool, None, f"a stale copy of job {stem!r}, which is in {elsewhere}/ "
                                 f"(two moves of one file at once)", state=held.state, name=held.name)
        return "dead"
    for _ in range(2):
        try:
            held.move(to, sync=True, fold_cut=False)
            return to
        except FileNotFoundError:
            return None
        except FileExistsError:
            if not (own and _evict(spool, held.name)):
                break
    dead_letter(spool, held, f"a file of this name reached {to}/ while this one was out of it")
    return "dead"


def _return_moved(spool: Spool, state: str, name: str, *, to: str) -> None:
    """Put the file under `name` in `state` back into `to`: this process has just moved it there
    from `to` and found it was not the file it had locked (a shared spool: the name had come to
    lead to another host's file). Nobody else acts on that name meanwhile: in adopting/ before
    the sweep, in processing/ before this worker's lease lapses."""
    other = spool.lock(state, name)
    if other is not None:
        with other:
            put_back(spool, other, to)


def _recover_one(spool: Spool, held: LockedJob) -> str:
    job = held.job
    if not isinstance(job, dict):
        dead_letter(spool, held, "unreadable file in processing/")
        return "dead"
    target = job.get("state")
    if target in ("pending", "failed", "completed", "dead"):
        for plugin in plugins():
            plugin.on_recover(spool, job, False)  # no command runs: cut before the run, or after it
        # An interrupted claim or settle, finished; its owner is proven dead,
        # so a second name of this file is its cut move, not one in flight.
        return move_on(spool, held, target, fold_cut=True)
    try:
        job = build(job, spool.config, state="processing")
    except InvalidJob as exc:
        dead_letter(spool, held, str(exc))
        return "dead"
    from .outcome import Outcome  # see the note on imports at the top

    for plugin in plugins():  # the runner's own plugin first: the dead worker's command may still run
        plugin.on_recover(spool, job, True)
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
    return move_on(spool, held, job["state"], fold_cut=True)


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
        move_on(spool, held, "dead")
        return True


def dependency_ring(spool: Spool, job_id: str, ring: list[str]) -> bool:
    """A pending job on a ring of `after` (ring[0] is the job, each waits for the next) goes to dead/ naming it.

    False when the job is not (or no longer) pending or no longer waits for ring[1].
    """
    held = spool.lock("pending", file_name(job_id))
    if held is None:
        return False
    with held:
        job = held.job
        if not isinstance(job, dict) or len(ring) < 2 or ring[1] not in (job.get("after") or []):
            return False
        job.update(state="dead", last_error="dependency ring: " + " -> ".join([*ring, ring[0]]), next_run_at=None)
        held.save(moving_on=True)
        move_on(spool, held, "dead")
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
            from . import registry  # see the note on imports at the top

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
            reached = move_on(spool, held, "dead")
            if reached == "lost":
                continue  # moved meanwhile (a claim seen late through a shared spool's cache): look again
            if reached == "dead" and held.state == "dead" and held.name == file_name(job_id):
                held.job.update(state="dead", last_error="cancelled", next_run_at=None)
                held.save()
        return previous
    raise WrongState(f"job {job_id!r} keeps changing state; try again")


def retry(spool: Spool, job_id: str) -> dict:
    """A failed job due now, skipping its backoff."""
    with spool.lock_job(job_id, ("failed",), "retry") as held:
        # Record, then move: the file that lands in pending/ is the one its id's marker names.
        held.job.update(state="pending", next_run_at=None)
        held.save(moving_on=True)
        move_on(spool, held, "pending")
        return held.job


# What `dlq_retry` resets: the count and the latest run. Everything else is
# the job's own (its max_retries included: a job that asked for no retries
# keeps asking for none).
RUN_FIELDS = ("next_run_at", "started_at", "finished_at", "last_duration", "last_exit_code", "last_error",
              "worker")


def dlq_retry(spool: Spool, job_id: str) -> dict:
    """A dead job back to pending with `attempts` and the run fields reset; its own fields kept.

    Record, then move (docs/decisions/identity.md): the reset is written
    while the job is still in dead/, so a crash at any point leaves either
    the dead job or the reset job in pending/, never a pending file that
    still carries the used-up `attempts`.
    """
    return _reset_to_pending(spool, job_id, ("dead",), "retry", restarted=False)


def restart_in_place(spool: Spool, job_id: str) -> dict:
    """A finished job (completed or dead) back to pending as the same job: `attempts` and the run
    fields reset, its own fields and its `history` kept, with an entry saying when it was restarted.

    The same "record, then relink, then move" as dlq_retry (docs/decisions/identity.md).
    """
    return _reset_to_pending(spool, job_id, ("completed", "dead"), "restart", restarted=True)


def _reset_to_pending(spool: Spool, job_id: str, allowed: tuple[str, ...], action: str, *,
                      restarted: bool) -> dict:
    """dlq_retry and restart_in_place: the reset written in the job's folder, then the move."""
    with spool.lock_job(job_id, allowed, action) as held:
        _undo_cut_purge(spool, job_id)
        if not isinstance(held.job.get("command"), str) or held.job.get("invalid"):
            raise InvalidJob(f"job {job_id!r} was never a valid job ({held.job.get('last_error')}); "
                             f"fix the file and enqueue it again")
        with contextlib.ExitStack() as features:
            for plugin in plugins():
                features.enter_context(plugin.before_return(spool, held))  # its unique key again, or KeyTaken
            held.job.update(dict.fromkeys(RUN_FIELDS), state="pending", attempts=0)
            if restarted:
                history = held.job.get("history") if isinstance(held.job.get("history"), list) else []
                entry = {"restarted_at": iso(time.time()), "from": held.state}
                held.job["history"] = [*history[-(HISTORY_LIMIT - 1):], entry]
            held.save(moving_on=True)
            move_on(spool, held, "pending")
        return held.job


# -- changes in place: hold, release, start now, edit ---------------------------------

WAITING = ("pending", "failed")  # the jobs a hold, a release or a start applies to


def rewrite(spool: Spool, held: LockedJob) -> None:
    """Replace a locked job's file with `held.job`, in the folder it is in.

    In pending/ the id's marker is pointed at the new file before it takes
    the name ("record, then relink, then replace"), as every path into
    pending/ does (docs/decisions/identity.md): a claim takes a pending file
    its marker does not name for a drop-in. A crash between the two leaves
    the marker on a temp in tmp/ and the old file in place, which the next
    look repairs as it repairs a cut adoption: the job keeps its old fields.
    """
    if held.state != "pending":
        held.save()
        return
    held.stage()
    assert held.staged is not None
    spool.relink_id(id_of(held.name), held.staged[0])
    held.publish_staged(durable=spool.durable)
    if spool.durable:
        fsops.fsync_dir(spool.dir("pending"))


def hold(spool: Spool, job_id: str) -> bool:
    """Keep a pending or failed job from starting until `release`; False when it was held already.

    The worker's gate skips a held job, and a claim refuses one (it reads the file under its lock).
    """
    with spool.lock_job(job_id, WAITING, "hold") as held:
        if held.job.get("held") is True:
            return False
        held.job["held"] = True
        rewrite(spool, held)
        return True


def release(spool: Spool, job_id: str) -> bool:
    """Undo `hold`: the job starts when it is due; False when it was not held."""
    with spool.lock_job(job_id, WAITING, "release") as held:
        if "held" not in held.job:
            return False
        del held.job["held"]
        rewrite(spool, held)
        return True


def start_now(spool: Spool, job_id: str) -> dict:
    """A waiting, delayed or held job due now: `run_at` and `next_run_at` cleared, a hold released.

    A failed job goes to pending/ ("record, then relink, then move"); a pending one is rewritten in place.
    """
    with spool.lock_job(job_id, WAITING, "start") as held:
        held.job.pop("held", None)
        held.job.update(run_at=None, next_run_at=None)
        if held.state == "failed":
            held.job["state"] = "pending"
            held.save(moving_on=True)
            move_on(spool, held, "pending")
        else:
            rewrite(spool, held)
        return held.job


# What `edit` never changes: the job's identity and its runs (docs/guide/commands.md).
LOCKED_FIELDS = ("id", "state", "attempts", "history", "unique_key")
EDITABLE_STATES = ("pending", "failed", "dead")
# What queuectl and its features write into a job: kept by an edit, not shown to it.
KEPT_FIELDS = ("created_at", "updated_at", "hook", "last_hook_error", "progress", "restarted_from", "invalid",
               "original_name", "original_file")


def own_fields(job: dict) -> dict:
    """The fields of a job a user wrote (what `edit` shows): not its runs' outcome nor what queuectl keeps."""
    return {key: value for key, value in job.items() if key not in (*RUN_FIELDS, *LOCKED_FIELDS, *KEPT_FIELDS)}


def edit(spool: Spool, job_id: str, change: Callable[[dict], dict]) -> dict:
    """Replace a pending, failed or dead job's own fields with `change(own_fields(job))`;
    returns {field: [old, new]} of what changed ({} when nothing did: nothing is written).

    The result passes job.build like an enqueue; the change is recorded in
    `history` ({"edited_at", "changed"}). A running or claimed job is refused.
    """
    state = spool.find(job_id)
    if state is None:
        raise JobNotFound(f"no job with id {job_id!r}")
    if state not in EDITABLE_STATES:
        what = "running (or being claimed)" if state == "processing" else state
        raise WrongState(f"cannot edit job {job_id!r}: it is {what} (only pending, failed or dead jobs)")
    with spool.lock_job(job_id, EDITABLE_STATES, "edit") as held:
        old = held.job
        if old.get("invalid") or not isinstance(old.get("command"), str):
            raise InvalidJob(f"job {job_id!r} was never a valid job; fix the file by hand")
        mine = own_fields(old)
        new_own = change(dict(mine))
        if not isinstance(new_own, dict):
            raise InvalidJob("the edited job must be a JSON object")
        for key in LOCKED_FIELDS:
            if key in new_own and new_own[key] != old.get(key):
                raise InvalidJob(f"{key} cannot be edited")
        for key in (*RUN_FIELDS, *KEPT_FIELDS):
            if key in new_own and new_own[key] != old.get(key):
                raise InvalidJob(f"{key} is set by the worker, not edited")
        kept = {key: value for key, value in old.items() if key not in mine}
        merged = {**kept, **{k: v for k, v in new_own.items() if k not in kept}}
        job = build(merged, spool.config, stem=job_id, state=held.state)
        changed = {key: [mine.get(key), job.get(key)] for key in sorted({*mine, *own_fields(job)})
                   if mine.get(key) != job.get(key)}
        if not changed:
            return {}
        history = job["history"]  # build() made it a list
        job["history"] = [*history[-(HISTORY_LIMIT - 1):], {"edited_at": iso(time.time()), "changed": changed}]
        held.job = job
        rewrite(spool, held)
        return changed


def purge(spool: Spool, states: Iterable[str], older_than: float | None = None,
          needed: list[str] | None = None) -> int:
    """Delete finished jobs (and their logs) last changed more than `older_than` seconds ago.

    Completed jobs that a job in pending/ or failed/ waits for stay; their
    ids are appended to `needed` (docs/guide/retention.md).
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
    hook holds the flock; so does a `dlq retry` under way), when a feature
    keeps it (Plugin.may_delete: a hook marked started by a live worker, or,
    completed, a job in pending/ or failed/ that waits for it: its id is
    appended to `needed`), or when it changed less than `older_than`
    seconds ago.

    The order, each step repairable (docs/decisions/identity.md):
    purging/<id> becomes a second name of the id's marker (the witness),
    the job file goes, then its log and kept bytes, then the marker (only
    now may the id be enqueued again), then the witness. `sweep_purges`
    finishes or undoes a deletion cut short.
    """
    if state not in ("completed", "dead"):
        raise WrongState(f"only completed or dead jobs are deleted, not {state}")
    path = os.path.join(spool.dir(state), file_name(job_id))
    if os.path.islink(path):  # never opened nor followed: no job, no lock, only the name goes
        if older_than is not None and time.time() - os.lstat(path).st_mtime < older_than:
            return False
        marked = _witness(spool, job_id)
        remove_entry(path)
        _finish_purge(spool, state, job_id, marked=marked)
        return True
    held = spool.lock(state, file_name(job_id))
    if held is None:
        return False
    with held:
        _undo_cut_purge(spool, job_id)
        job = held.job if isinstance(held.job, dict) else {}
        info = held.at_name()
        if info is None:
            return False  # another host moved it on or replaced it meanwhile
        if older_than is not None and time.time() - info.st_mtime < older_than:
            return False
        with contextlib.ExitStack() as features:
            for plugin in plugins():
                free = features.enter_context(plugin.may_delete(spool, state, job_id, held.path))
                if not free:
                    if free is False and needed is not None and state == "completed":
                        needed.append(job_id)
                    return False
            if held.at_name() is None:
                return False
            marked = _witness(spool, job_id)
            if not remove_entry(held.path):  # a folder or FIFO made by hand is removed as it is, unfollowed
                return False
    _finish_purge(spool, state, job_id, marked=marked)
    for plugin in plugins():
        plugin.on_delete(spool, job)
    return True


def _witness(spool: Spool, job_id: str) -> bool:
    """purging/<id>: a second name of the id's marker, present while the job is being deleted.

    Where there is no marker (a file put there by hand) or no hard links,
    no witness: a crash then leaves at worst the log, which doctor removes
    once it is a day old (and, without hard links, the marker of an id
    whose job is gone: the id stays taken).

    Returns whether the id has a marker (which is then this job's to remove).
    """
    try:
        os.link(spool.marker(job_id), f"{spool.root}/{PURGING}/{job_id}", follow_symlinks=False)
    except FileNotFoundError:
        return False
    except FileExistsError:
        pass  # a witness of a cut deletion of this very job (undone above, or by a sweep)
    except OSError as exc:
        if exc.errno not in fsops.NO_LINKS:
            raise
    return True


def _finish_purge(spool: Spool, state: str, job_id: str, *, marked: bool = False) -> None:
    """The steps of a deletion after the job file went: its log, its kept bytes, the marker, the witness.

    The marker goes when the witness still names it, or when the caller
    deleted the job itself and it had one (`marked`): either way nobody
    could take the id meanwhile.
    """
    for leftover in (spool.log_path(job_id), os.path.join(spool.dir(state), job_id + INVALID)):
        remove_entry(leftover)
    witness = f"{spool.root}/{PURGING}/{job_id}"
    with contextlib.suppress(FileNotFoundError):
        if marked or os.path.samestat(os.lstat(witness), os.lstat(spool.marker(job_id))):
            os.unlink(spool.marker(job_id))
    with contextlib.suppress(FileNotFoundError):
        os.unlink(witness)


def _undo_cut_purge(spool: Spool, job_id: str) -> None:
    """Under the lock of the id's job file (still there): the witness of a deletion of it that was cut goes."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(f"{spool.root}/{PURGING}/{job_id}")


def sweep_purges(spool: Spool) -> int:
    """Finish or undo deletions cut short (purging/<id>); returns how many were settled.

    The witness no longer names the id's marker: the deletion had removed
    the marker (a new job may hold the id now), only the witness is left.
    Else the job file still there (and not owned: a live deletion holds
    it): undone. Gone: finished (log, kept bytes, marker, witness). While
    the witness names the marker nobody can enqueue the id, and a finished
    job moves only under its flock (`dlq retry`, which undoes first), so
    the look at completed/ and dead/ cannot race.
    """
    settled = 0
    for job_id in fsops.listdir_if_there(spool.dir(PURGING)):
        if not is_valid_id(job_id):
            continue
        witness = f"{spool.root}/{PURGING}/{job_id}"
        try:
            ours = os.path.samestat(os.lstat(witness), os.lstat(spool.marker(job_id)))
        except FileNotFoundError:
            ours = False
        if not ours:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(witness)
            settled += 1
            continue
        present = [state for state in ("completed", "dead")
                   if os.path.lexists(os.path.join(spool.dir(state), job_id + SUFFIX))]
        if present:
            held = spool.lock(present[0], file_name(job_id))
            if held is None:
                continue  # a deletion (or a dlq retry) holds it now
            with held:
                _undo_cut_purge(spool, job_id)
        else:
            _finish_purge(spool, "dead", job_id)
            remove_entry(spool.log_path(job_id))
        settled += 1
    return settled


TEMP_AGE = 60.0  # seconds: a temporary file this old was left by a crash (an enqueue takes milliseconds)


def sweep_temps(spool: Spool, *, now: float | None = None) -> list[str]:
    """Remove temporary files an enqueue left linked to their id's marker, with the marker; returns them.

    A crash between taking the marker and publishing the job leaves both;
    the id stays taken until this runs (recovery sweeps, `doctor --repair`).
    """
    now = time.time() if now is None else now
    removed = []
    tmp = spool.dir("tmp")
    for name in fsops.listdir_if_there(tmp):
        job_id = temp_id(name)
        if job_id is None:
            continue
        path = os.path.join(tmp, name)
        try:
            info = os.lstat(path)
            if info.st_nlink < 2 or now - info.st_mtime < TEMP_AGE:
                continue
            if not os.path.samestat(info, os.lstat(spool.marker(job_id))):
                continue
        except FileNotFoundError:
            continue
        with contextlib.suppress(FileNotFoundError):
            os.unlink(spool.marker(job_id))  # the marker first: never a marker of a file with no name
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        removed.append(name)
    return removed


def temp_id(name: str) -> str | None:
    """The id of a job file's temporary name (`.<id>.json.<pid>.<n>.<random>.tmp`), else None."""
    if not (name.startswith(".") and name.endswith(".tmp")):
        return None
    parts = name[1:].rsplit(".", 4)
    if len(parts) != 5 or not parts[0].endswith(SUFFIX):
        return None
    job_id = id_of(parts[0])
    return job_id if is_valid_id(job_id) else None


def remove_entry(path: str) -> bool:
    """Remove whatever is at `path` (a file, a symlink unfollowed, a FIFO, a folder with its contents)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return False
    try:
        if stat.S_ISDIR(info.st_mode):
            import shutil  # a folder where a file belongs is rare: enqueue's start-up does not load it

            shutil.rmtree(path)  # never follows a symlink inside
        else:
            os.unlink(path)
    except FileNotFoundError:
        return False
    return True
