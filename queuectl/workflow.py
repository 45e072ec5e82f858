"""Workflows: dependencies (`after`), groups with a concurrency limit, pause and resume, unique keys.

Promises, across every process and every host that shares the spool:
- a group with a limit of N never has more than N jobs holding a slot, and a
  job of a group runs only while it holds one; a slot is one name
  `groups/NAME/slot-K`, a hard link of its worker's badge file (which says
  the job and the worker), made with link(): EEXIST decides who gets it;
- while a job with a unique key is pending, processing or failed, no other
  job can take the key: the key is one name `unique/<sha256(key)>`, a hard
  link of the job's file made before the job is published;
- a paused spool (a file `paused` at its top) or group (`groups/NAME.paused`)
  starts nothing new; a claim looks for the file right before it claims;
- a job whose `after` names a job that is not completed is not started; its
  dependency dying sends it to dead/ (lifecycle.dependency_died).
Every state is a file that `ls` and `cat` show and a person may create or
delete by hand (docs/guide/jobs.md, "The spool"). Only link(), symlink() (the
take-over lock), unlink and rename decide anything: no flock, no inotify
and no renameat2 flag is needed for correctness, so it holds on network
file systems; whether a slot's worker lives is asked of registry.is_alive
only. A worker's own view (`Gate`) keeps waiting and parked jobs in memory,
so a claim never rescans completed/.
Fails with QueueError subclasses carrying one line a person can act on.
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

from . import fsops, registry
from .errors import DuplicateJob, InvalidJob, JobNotFound, SpoolError
from .fsops import open_nofollow
from .job import is_valid_id, iso

PAUSE_FILE = "paused"
GROUPS = "groups"
UNIQUE = "unique"
WAITING = "waiting"
PRUNE_SUFFIX = ".prune"
# A marker whose dependent is in no folder may belong to an enqueue that has
# not yet published it; only after this long is it a failed enqueue's leftover.
MARK_GRACE = 60.0
# How long an enqueue naming a job waits for a deletion of it under way to end.
PRUNE_WAIT = 2.0
GROUP_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_KEY = 256
MAX_AFTER = 1000
MAX_KEY_FILE = 1024 * 1024 + 1  # a key file is a job file: at most 1 MiB
LIVE = ("pending", "processing", "failed")
# A key whose job is in no folder may belong to an enqueue that has taken the
# key and not yet published the job; only after this long is it a crash's leftover.
KEY_GRACE = 60.0
# Held for milliseconds by whoever takes over a stale key; one older than this
# was left by a crash, and only `doctor --repair` removes it (two processes
# breaking one lock at once could both believe they hold it).
LOCK_GRACE = 60.0
# How often a worker looks again at jobs parked behind a full or paused group,
# or at a paused spool, when no change in a watched folder woke it first
# (another host's changes raise no inotify event here).
PARK_POLL = 1.0


class KeyTaken(DuplicateJob):
    """The unique key is held by a live job: `holder` is its id."""

    def __init__(self, message: str, holder: str):
        super().__init__(message)
        self.holder = holder


# -- validation (job.build calls these) ---------------------------------------

def check_group(name: Any) -> str:
    if not isinstance(name, str) or not GROUP_PATTERN.fullmatch(name):
        raise InvalidJob(f"invalid group {str(name)[:40]!r}: use 1-64 characters of A-Z a-z 0-9 _ -")
    return name


def check_fields(job: dict) -> None:
    """`after`, `group` and `unique_key` of a job, as job.build() stores them (missing ones stay missing)."""
    after = job.get("after")
    if after is not None:
        if isinstance(after, str):
            after = job["after"] = [after]
        if not isinstance(after, list) or not all(is_valid_id(dep) for dep in after):
            raise InvalidJob("after must be a list of job ids")
        if len(after) > MAX_AFTER:
            raise InvalidJob(f"after names {len(after)} jobs, over the limit of {MAX_AFTER}")
        if job.get("id") in after:
            raise InvalidJob("a job cannot wait for itself (after names its own id)")
        job["after"] = list(dict.fromkeys(after))
    if job.get("group") is not None:
        check_group(job["group"])
    key = job.get("unique_key")
    if key is not None and (not isinstance(key, str) or not key or len(key) > MAX_KEY or "\0" in key):
        raise InvalidJob(f"unique_key must be a non-empty string of at most {MAX_KEY} characters")


# -- small file helpers ----------------------------------------------------------

def _folder(spool, name: str) -> str:
    path = os.path.join(spool.root, name)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    return path


def _unlink(path: str) -> bool:
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False


def _fsync_dir(spool, path: str) -> None:
    if spool.durable:
        from .fsops import fsync_dir
        fsync_dir(path)


# -- pause -----------------------------------------------------------------------

def pause_path(spool, group: str | None = None) -> str:
    if group is None:
        return os.path.join(spool.root, PAUSE_FILE)
    return os.path.join(spool.root, GROUPS, check_group(group) + ".paused")


def is_paused(spool, group: str | None = None) -> bool:
    """One stat: whether the spool (or the group) is paused."""
    return os.path.lexists(pause_path(spool, group))


def pause(spool, group: str | None = None) -> bool:
    """Create the pause file; False when it was there already."""
    if group is not None:
        _folder(spool, GROUPS)
    path = pause_path(spool, group)
    if os.path.lexists(path):
        return False
    record = {"paused_at": iso(time.time()), "by": f"{os.environ.get('USER', '?')}@{os.uname().nodename}"}
    from .fsops import publish
    try:
        publish(spool.dir("tmp"), path, json.dumps(record).encode() + b"\n", durable=spool.durable)
    except FileExistsError:
        return False
    return True


def resume(spool, group: str | None = None) -> bool:
    """Remove the pause file; False when it was not there."""
    return _unlink(pause_path(spool, group))


def paused_groups(spool) -> list[str]:
    return sorted(name.removesuffix(".paused") for name in _listdir(os.path.join(spool.root, GROUPS))
                  if name.endswith(".paused") and GROUP_PATTERN.fullmatch(name.removesuffix(".paused")))


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except FileNotFoundError:
        return []


# -- groups ----------------------------------------------------------------------

def limit_path(spool, group: str) -> str:
    return os.path.join(spool.root, GROUPS, check_group(group) + ".json")


def set_limit(spool, group: str, limit: int | None) -> None:
    """Write groups/NAME.json ({"limit": N}); None removes it (no limit)."""
    _folder(spool, GROUPS)
    path = limit_path(spool, group)
    if limit is None:
        _unlink(path)
        return
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise InvalidJob("a group's limit is an integer >= 1")
    from .fsops import publish
    publish(spool.dir("tmp"), path, json.dumps({"limit": limit}).encode() + b"\n",
            durable=spool.durable, replace=True)


def read_limit(spool, group: str) -> int | None:
    """The group's limit; None when it has none (or its file is not valid: said by `group list`)."""
    try:
        with open(limit_path(spool, group), encoding="utf-8") as handle:
            limit = json.load(handle).get("limit")
    except (OSError, ValueError, AttributeError):
        return None
    return limit if isinstance(limit, int) and not isinstance(limit, bool) and limit >= 1 else None


def groups_dir(spool) -> str:
    """groups/, created when first needed (a worker watches it)."""
    return _folder(spool, GROUPS)


def slot_dir(spool, group: str) -> str:
    return os.path.join(spool.root, GROUPS, group)


def slot_names(spool, group: str) -> list[str]:
    return sorted(name for name in _listdir(slot_dir(spool, group)) if name.startswith("slot-"))


BADGE_PREFIX = ".badge-"


class Badge:
    """A worker's one file under groups/, linked as each slot it takes (`groups/.badge-<worker>`).

    Taking a slot is link(badge, slot-K): a name only, no new inode (a
    file or a long symlink per claim costs an inode, and on an ext4 without
    a journal each creation scans past every inode freed lately). The badge
    is written once, when the worker takes its first slot, and names the
    worker for life, so `cat groups/NAME/slot-K` says who holds the slot;
    the job it runs is the one in processing/ whose `worker` is that name
    (`slot_holders`).
    """

    def __init__(self, spool, worker: str):
        from .fsops import publish
        self.worker = worker
        self.path = os.path.join(groups_dir(spool), BADGE_PREFIX + worker)
        record = {"worker": worker, "host": os.uname().nodename, "pid": os.getpid()}
        try:
            publish(spool.dir("tmp"), self.path, json.dumps(record).encode() + b"\n", durable=False)
        except FileExistsError:
            pass  # ours from a retried call (worker names are unique)
        self.ino = os.lstat(self.path).st_ino

    def close(self) -> None:
        _unlink(self.path)


def read_slot(path: str) -> dict | None:
    """Who holds a slot ({"worker", "host", "pid"}), with `ino` (the holder's badge); None when it is free."""
    try:
        fd = open_nofollow(path)
    except OSError:
        return None
    try:
        ino = os.fstat(fd).st_ino
        data = os.read(fd, 4096)
    except OSError:
        return None
    finally:
        os.close(fd)
    try:
        holder = json.loads(data)
    except ValueError:
        holder = None
    if not isinstance(holder, dict):
        holder = {"text": data.decode("utf-8", "replace")}  # being written, or made by hand
    holder["ino"] = ino
    return holder


class Slot:
    """One slot this process holds (or no slot, for a job without a limited group)."""

    def __init__(self, path: str | None = None):
        self.path = path

    def release(self) -> None:
        """Free the slot. Nobody else removes a live worker's slot (see `free_orphan_slots`)."""
        if self.path is not None:
            _unlink(self.path)
            self.path = None


NO_SLOT = Slot()


def take_slot(spool, group: str, limit: int, badge: Badge) -> Slot | None:
    """A free slot of the group for this job, or None when all `limit` are held.

    link() decides: of workers taking slot-K at once, one succeeds. A small
    limit is tried name by name (EEXIST is as cheap as a listing); a large
    one lists the folder first.
    """
    folder = slot_dir(spool, group)
    for _ in range(2):
        try:
            taken = set(os.listdir(folder)) if limit > 8 else set()
            for number in range(limit):
                name = f"slot-{number}"
                if name in taken:
                    continue
                path = os.path.join(folder, name)
                try:
                    os.link(badge.path, path)
                    return Slot(path)
                except FileExistsError:
                    try:
                        if os.lstat(path).st_ino == badge.ino:  # a retried call that had succeeded (NFS)
                            return Slot(path)
                    except FileNotFoundError:
                        pass
            return None
        except FileNotFoundError:  # the group's first slot: make its folder
            _folder(spool, GROUPS)
            _folder(spool, os.path.join(GROUPS, group))
    return None


def running_by_worker(spool) -> dict[str, dict]:
    """Worker name -> the job it runs, read from processing/ (small: a job per live worker at most)."""
    running = {}
    for name in spool.names("processing"):
        job = spool.read("processing", name)
        if job and isinstance(job.get("worker"), str):
            running[job["worker"]] = job
    return running


def slot_holders(spool, group: str, running: dict[str, dict] | None = None) -> list[dict[str, Any]]:
    """Each slot of the group: its name, worker, whether that worker lives, and the job it runs."""
    running = running_by_worker(spool) if running is None else running
    holders = []
    for name in slot_names(spool, group):
        holder = read_slot(os.path.join(slot_dir(spool, group), name))
        if holder is None:
            continue
        worker = holder.get("worker")
        job = running.get(worker) if isinstance(worker, str) else None
        holders.append({"slot": name, "worker": worker, "job": job.get("id") if job else None,
                        "ino": holder["ino"]})
    return holders


def free_orphan_slots(spool, *, repair: bool = True) -> list[dict[str, Any]]:
    """Free slots whose worker is dead and runs no job of the group in processing/.

    A dead worker's job still in processing/ is recovery's: `free_job_slots`
    frees its slot under the job's flock, before the job moves on. Here a
    slot is renamed aside first and removed only if it is still the dead
    worker's badge (the same inode), so a slot taken again meanwhile under
    the same name is put back, not lost. Dead workers' badges that no slot
    uses any more go too.
    """
    found = []
    root = os.path.join(spool.root, GROUPS)
    entries = _listdir(root)
    running = None
    for group in entries:
        if not GROUP_PATTERN.fullmatch(group) or not os.path.isdir(os.path.join(root, group)):
            continue
        for name in slot_names(spool, group):
            path = os.path.join(root, group, name)
            holder = read_slot(path)
            if holder is None or _alive(spool, holder.get("worker")):
                continue
            worker = holder.get("worker")
            running = running_by_worker(spool) if running is None else running
            job = running.get(worker) if isinstance(worker, str) else None
            if job is not None and job.get("group") == group:
                continue  # recovery frees it when it moves the job on
            finding = {"problem": "orphan-slot", "path": os.path.relpath(path, spool.root),
                       "detail": f"held by worker {worker}, which is gone", "repaired": False}
            if repair:
                finding["repaired"] = _remove_if(spool, path, holder["ino"])
            found.append(finding)
    if repair:
        for entry in entries:
            worker = entry[len(BADGE_PREFIX):]
            if entry.startswith(BADGE_PREFIX) and is_valid_id(worker) and not _alive(spool, worker):
                try:
                    if os.lstat(os.path.join(root, entry)).st_nlink == 1:  # no slot links it
                        _unlink(os.path.join(root, entry))
                except FileNotFoundError:
                    pass
    return found


def _remove_if(spool, path: str, ino: int) -> bool:
    """Remove the slot at `path` if it is still inode `ino`; put back anything else taken aside."""
    aside = os.path.join(spool.dir("tmp"), f".freeing.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return False
    if os.lstat(aside).st_ino == ino:
        _unlink(aside)
        return True
    try:
        os.link(aside, path)  # not ours to free: put it back
    except FileExistsError:
        pass  # taken again in this instant: its holder frees nothing, its job ends anyway
    _unlink(aside)
    return False


def free_job_slots(spool, job: dict, *, leftovers: bool = False) -> None:
    """Free the slot the job's dead worker held in its group (called by recovery, under the job's flock).

    A worker holds one slot at a time, for the job it runs: the slot of the
    job's `worker` in the job's group is that job's.

    With `leftovers` the dead worker's command was just sent SIGKILL: the
    slot frees only once none of its processes is left (a signal is
    delivered later than kill() returns), so the group never runs N + 1.
    """
    group = job.get("group")
    if not isinstance(group, str) or not GROUP_PATTERN.fullmatch(group):
        return
    worker = job.get("worker")
    mine = []
    for name in slot_names(spool, group):
        path = os.path.join(slot_dir(spool, group), name)
        holder = read_slot(path)
        if holder and isinstance(worker, str) and holder.get("worker") == worker and not _alive(spool, worker):
            mine.append(path)
    if mine and leftovers:
        from .runner import kill_leftovers
        deadline = time.monotonic() + 10.0
        while kill_leftovers(job["id"], spool.root) and time.monotonic() < deadline:
            time.sleep(0.01)
    for path in mine:
        _unlink(path)


def _alive(spool, worker: Any) -> bool:
    """registry.is_alive, for a name read from a slot (checked first: it becomes a path)."""
    return is_valid_id(worker) and registry.is_alive(spool, worker)


def groups(spool) -> list[dict[str, Any]]:
    """Every group with a limit, a pause or running jobs: name, limit, running (jobs in processing/),
    slots (held), paused, and the holders of its slots (slot, worker, the job that worker runs)."""
    root = os.path.join(spool.root, GROUPS)
    names = set()
    for entry in _listdir(root):
        stem = entry.removesuffix(".json").removesuffix(".paused")
        if GROUP_PATTERN.fullmatch(stem):
            names.add(stem)
    by_worker = running_by_worker(spool)
    running: dict[str, int] = {}
    for job in by_worker.values():
        if isinstance(job.get("group"), str):
            running[job["group"]] = running.get(job["group"], 0) + 1
    names.update(running)
    return [{"name": name, "limit": read_limit(spool, name), "running": running.get(name, 0),
             "slots": len(slot_names(spool, name)), "paused": is_paused(spool, name),
             "holders": [{key: holder[key] for key in ("slot", "worker", "job")}
                         for holder in slot_holders(spool, name, by_worker)]}
            for name in sorted(names)]


# -- unique keys -------------------------------------------------------------------

def key_path(spool, key: str) -> str:
    return os.path.join(spool.root, UNIQUE, hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest())


def key_holder(path: str) -> str | None:
    """The id of the job a key names: its file holds that job's JSON (or, made by hand, just the id)."""
    try:
        data, _ = fsops.read_file(path, MAX_KEY_FILE)
    except OSError:
        return None
    if data is None:
        return None  # gone (or not a plain file: judged by doctor)
    data = data[:MAX_KEY_FILE]
    try:
        job = json.loads(data)
    except ValueError:
        job = None
    if isinstance(job, dict):
        return job.get("id") if isinstance(job.get("id"), str) else ""
    return data.decode("utf-8", "replace").strip()


def _holder_state(spool, holder: str) -> str | None:
    return spool.find(holder) if is_valid_id(holder) else None


def _stale(spool, path: str, holder: str) -> bool:
    """The key's job is over (completed, dead) or never appeared within KEY_GRACE."""
    state = _holder_state(spool, holder)
    if state in LIVE:
        return False
    if state is not None:
        return True
    try:
        return time.time() - os.lstat(path).st_mtime > KEY_GRACE
    except FileNotFoundError:
        return True


def take_key(spool, key: str, job_id: str, source: str, *, locked: bool = False) -> bool:
    """Hold `key` for `job_id`; True when this call created the key, False when it named the job already.

    The key is a second name (a hard link) for `source`, a file holding the
    job's JSON: the job's temporary file before it is published, or its file
    in dead/ for a `dlq retry`. A link creates no inode (cheap on every file
    system) and fails with EEXIST when the name is taken: of processes
    taking one key at once exactly one succeeds. Raises KeyTaken naming the
    live job that holds it. A stale key (its job finished, or never
    published) is removed only under `<hash>.lock` after judging it again
    there, so two processes that both judged it stale cannot both replace
    it; `locked` says the caller holds that lock already (key_held_for).
    """
    folder = _unique_folder(spool)
    path = key_path(spool, key)
    for _ in range(50):
        try:
            os.link(source, path, follow_symlinks=False)
            _fsync_dir(spool, folder)  # on disk before the job is visible: a power cut cannot drop the key alone
            return True
        except FileExistsError:
            pass
        holder = key_holder(path)
        if holder is None:
            continue  # freed meanwhile: try again
        if holder == job_id:
            return False  # ours (a retried call that had succeeded, or a job re-taking its own key)
        if not _stale(spool, path, holder):
            raise KeyTaken(f"unique key {key!r} is held by job {holder} ({_holder_state(spool, holder)})", holder)
        if locked:
            _unlink(path)  # judged under the lock: nobody else removes a stale key now
            continue
        with _takeover_lock(path):
            if key_holder(path) == holder and _stale(spool, path, holder):
                _unlink(path)
        # Loop: the link decides, also against a plain enqueue that saw the key free.
    raise SpoolError(f"unique key {key!r} keeps changing hands; try again")


def _unique_folder(spool) -> str:
    """unique/, created once per Spool object (not a mkdir per enqueue)."""
    folder = getattr(spool, "_unique_folder", None)
    if folder is None:
        folder = spool._unique_folder = _folder(spool, UNIQUE)
    return folder


@contextlib.contextmanager
def key_held_for(spool, held) -> Iterator[None]:
    """Inside the block the locked job `held` holds its unique key (if any) and no take-over runs.

    For a dead job coming back (`dlq retry`): it looks stale to others until
    it is in pending/, so the key is taken and the job moved under the
    take-over lock. KeyTaken when a live job holds the key.
    """
    job = held.job
    key = job.get("unique_key")
    if not isinstance(key, str) or not key:
        yield
        return
    _unique_folder(spool)
    with _takeover_lock(key_path(spool, key)):
        take_key(spool, key, job["id"], held.path, locked=True)
        yield


class _takeover_lock:
    def __init__(self, path: str):
        self.lock = path + ".lock"

    def __enter__(self) -> None:
        deadline = time.monotonic() + 5.0
        while True:
            try:
                os.symlink(f"{os.uname().nodename}:{os.getpid()}", self.lock)
                return
            except FileExistsError:
                pass
            if time.monotonic() > deadline:
                raise SpoolError(f"the unique key {os.path.basename(self.lock)} is being taken over "
                                 f"(if no enqueue runs, 'queuectl doctor --repair' removes the stale lock)")
            time.sleep(0.01)

    def __exit__(self, *exc: Any) -> None:
        _unlink(self.lock)


def release_key(spool, job: Any) -> None:
    """Free the job's unique key, if the key names this job.

    Called while the job is still in a live folder and locked (before a
    move to completed/ or dead/): nobody takes over a live job's key, so the
    key read here cannot change before it is removed.
    """
    if not isinstance(job, dict) or not isinstance(job.get("unique_key"), str) or not job["unique_key"]:
        return
    path = key_path(spool, job["unique_key"])
    if key_holder(path) == job.get("id"):
        _unlink(path)


def stale_keys(spool, *, repair: bool) -> list[dict[str, Any]]:
    """Keys whose job is over or missing past the grace time, and take-over locks left by a crash."""
    found = []
    folder = os.path.join(spool.root, UNIQUE)
    now = time.time()
    for name in sorted(_listdir(folder)):
        path = os.path.join(folder, name)
        if name.endswith(".lock"):
            try:
                old = now - os.lstat(path).st_mtime > LOCK_GRACE
            except FileNotFoundError:
                continue
            if old:
                found.append({"problem": "stale-key-lock", "path": os.path.relpath(path, spool.root),
                              "detail": "a take-over of a unique key was cut short",
                              "repaired": repair and _unlink(path)})
            continue
        holder = key_holder(path)
        if holder is None or not _stale(spool, path, holder):
            continue
        state = _holder_state(spool, holder)
        finding = {"problem": "stale-key", "path": os.path.relpath(path, spool.root),
                   "detail": f"held by job {holder or '?'}, which is {state or 'missing'}", "repaired": False}
        if repair:
            with _takeover_lock(path):
                if key_holder(path) == holder and _stale(spool, path, holder):
                    finding["repaired"] = _unlink(path)
        found.append(finding)
    return found


# -- dependencies ------------------------------------------------------------------

def dependency_states(spool, job: dict) -> list[tuple[str, str | None]]:
    """(id, state) of each job this one waits for; state None when no folder holds it."""
    return [(dep, spool.find(dep) if is_valid_id(dep) else None) for dep in job.get("after") or []]


def waiting_on(spool, job: dict) -> list[dict[str, Any]]:
    """For display: the dependencies of a pending job that are not completed yet ([] when none)."""
    if job.get("state") != "pending" or not job.get("after"):
        return []
    return [{"id": dep, "state": state or "missing"} for dep, state in dependency_states(spool, job)
            if state != "completed"]


def annotate(spool, job: dict) -> dict:
    """The job with `waiting_on` (derived, never stored) when it is pending and waits for others."""
    waits = waiting_on(spool, job)
    if waits:
        job["waiting_on"] = waits
    return job


def check_dependencies_exist(spool, job_id: str, after: list[str], earlier: set[str]) -> None:
    """At enqueue: every id in `after` must name a job already in the spool (or earlier in the batch).

    The job's waiting markers are made first, so a prune that starts after
    this check sees them, and one that started before is seen here by its
    `.prune` file (docs/guide/retention.md, "Dependencies are kept").
    """
    mark_waiting(spool, job_id, after)
    for dep in after:
        if dep in earlier:
            continue
        state = spool.find(dep)
        if state == "completed" and not _wait_prune_done(spool, dep):
            raise JobNotFound(f"after: job {dep!r} is being deleted by retention or purge; try again")
        if state is None or spool.find(dep) is None:
            raise JobNotFound(f"after: no job with id {dep!r} (a job can only wait for one that exists)")


# -- waiting markers: what retention and purge must keep ---------------------------
#
# waiting/<dependency>/<dependent> (empty files) says "this job may still wait
# for that completed one". Made before the dependent is published (enqueue,
# adoption, dlq retry), never removed by the dependent: the deleter removes
# a marker once its dependent has started or finished, so a crash leaves at
# worst a stale marker, which only delays pruning. A deleter first creates
# waiting/<dependency>.prune, then reads the markers; an enqueue first makes
# its marker, then looks for the job and that file: one of the two sees the other.

def waiting_dir(spool) -> str:
    return os.path.join(spool.root, WAITING)


def mark_waiting(spool, job_id: str, after: list[str]) -> None:
    """Record that `job_id` waits for each job of `after` (idempotent)."""
    for dep in after:
        if not is_valid_id(dep):
            continue
        folder = os.path.join(waiting_dir(spool), dep)
        try:
            for _ in range(5):  # a deleter may remove the empty folder between the two calls
                os.makedirs(folder, exist_ok=True)
                try:
                    os.close(os.open(os.path.join(folder, job_id), os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
                    break
                except FileNotFoundError:
                    continue
            else:
                raise FileNotFoundError(folder)
        except OSError as exc:
            raise SpoolError(f"cannot record that {job_id} waits for {dep} in {folder}: "
                             f"{exc.strerror or exc}") from None


def _wait_prune_done(spool, dep: str) -> bool:
    """False when a deletion of `dep` is under way and did not end within PRUNE_WAIT seconds."""
    path = os.path.join(waiting_dir(spool), dep + PRUNE_SUFFIX)
    deadline = time.monotonic() + PRUNE_WAIT
    while True:
        if _stale_flag(path):  # gone, or left by a crashed deleter, which will delete nothing now
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)


@contextlib.contextmanager
def prune_guard(spool, job_id: str, source: str) -> Iterator[bool | None]:
    """Yields True when completed job `job_id` may be deleted now: no job in pending/ or failed/ waits for it.

    False when one does; None when another process is deleting it.
    `source` is the job's file, locked by the caller. Stale markers (the
    dependent started, finished, or never appeared in MARK_GRACE seconds)
    are removed on the way. `waiting/<id>.prune` stays while the caller
    deletes, so an enqueue naming the job waits or refuses.
    """
    root = waiting_dir(spool)
    folder = os.path.join(root, job_id)
    flag = os.path.join(root, job_id + PRUNE_SUFFIX)
    # Always announced, even when no marker exists yet: an enqueue may be
    # making one now, and it must see this name or be seen by the listing.
    # A second name of the job's file, as for unique keys: no new inode.
    try:
        try:
            os.link(source, flag)
        except FileNotFoundError:
            os.makedirs(root, exist_ok=True)
            os.link(source, flag)
    except FileExistsError:
        if _stale_flag(flag):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(flag)  # a crashed deleter's: the next attempt takes it
        yield None
        return
    try:
        free = not _live_waiters(spool, folder)
        yield free
        if free:
            with contextlib.suppress(OSError):
                os.rmdir(folder)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(flag)


def _stale_flag(path: str) -> bool:
    """A `.prune` name left by a crash: link() set its ctime, and a deletion takes milliseconds."""
    try:
        return time.time() - os.lstat(path).st_ctime >= LOCK_GRACE
    except FileNotFoundError:
        return True


def _live_waiters(spool, folder: str) -> list[str]:
    live = []
    for name in _listdir(folder):
        path = os.path.join(folder, name)
        state = spool.find(name) if is_valid_id(name) else "invalid"
        if state in ("pending", "failed"):
            live.append(name)
            continue
        if state is None:
            try:
                if time.time() - os.lstat(path).st_mtime < MARK_GRACE:
                    live.append(name)  # its enqueue may not have published it yet
                    continue
            except FileNotFoundError:
                continue
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    return live


# -- a worker's view ---------------------------------------------------------------

class Gate:
    """What a worker keeps in memory to start only what may start, without rescanning folders per claim.

    - waiting: pending jobs whose `after` is not all completed, keyed by the
      ids they wait for; a change in completed/ or dead/ (or a safety scan)
      looks at those ids only;
    - parked: jobs of a full or paused group, per group, in claim order; a
      settle anywhere, a change in groups/ or PARK_POLL puts back as many as
      the group has free slots.
    `add(folder, job_id, priority, due)` puts a job back into the worker's order.
    Jobs are known by id, as in the worker's order.DueIndex.
    """

    def __init__(self, spool, add: Callable[[str, str, int, float], None], worker: str = ""):
        self.spool = spool
        self.add = add
        self.worker = worker
        self.badge: Badge | None = None  # made when the worker takes its first slot
        self.group_of: dict[str, tuple[str, int, float]] = {}           # id -> (group, priority, due)
        self.waiting: dict[str, tuple[str, int, float, set[str]]] = {}  # id -> (folder, priority, due, ids)
        self.waiters: dict[str, set[str]] = {}                          # id -> ids waiting for it
        self.parked: dict[str, list[tuple[int, float, str, str]]] = {}  # group -> heap of (-pri, due, id, folder)
        self.full: set[str] = set()
        self.limits: dict[str, tuple[tuple, int | None]] = {}  # group -> (stat of NAME.json, limit)
        self.poked = False
        self.next_poll = 0.0

    def __contains__(self, name: str) -> bool:
        return name in self.waiting or name in self.group_of

    def names(self) -> set[str]:
        return set(self.waiting) | set(self.group_of)

    def forget(self, name: str) -> None:
        self.group_of.pop(name, None)
        entry = self.waiting.pop(name, None)
        if entry is not None:
            for dep in entry[3]:
                names = self.waiters.get(dep)
                if names is not None:
                    names.discard(name)
                    if not names:
                        del self.waiters[dep]

    def hold(self, folder: str, name: str, job: dict, priority: int, due: float) -> bool:
        """Note the job's group; True when it must not enter the order now (it waits, or went to dead/).

        `name` is the job's id (as everywhere in the gate).
        """
        self.forget(name)
        group = job.get("group")
        if isinstance(group, str) and GROUP_PATTERN.fullmatch(group):
            self.group_of[name] = (group, priority, due)
        after = job.get("after")
        if folder != "pending" or not after or not isinstance(after, list):
            return False
        unfinished = set()
        for dep, state in dependency_states(self.spool, job):
            if state == "dead" or state is None:
                self._dependency_died(name, dep)
                return True
            if state != "completed":
                unfinished.add(dep)
        if not unfinished:
            return False
        self.waiting[name] = (folder, priority, due, unfinished)
        for dep in unfinished:
            self.waiters.setdefault(dep, set()).add(name)
        return True

    def _dependency_died(self, job_id: str, dep: str) -> None:
        from . import lifecycle
        self.forget(job_id)
        lifecycle.dependency_died(self.spool, job_id, dep)  # a rescan looks again if it was not moved

    def changed(self, kind: str, folder: str, name: str) -> None:
        """A change in a watched folder (see worker.WATCHED)."""
        if kind == "gone":
            return
        if folder != "pending" or kind == "moved":
            self.poked = True  # a settle, a give-back, a limit or a pause changed: a slot may be free
        if folder in ("completed", "dead") and name.endswith(".json"):
            self._landed(name.removesuffix(".json"), folder)

    def _landed(self, dep: str, state: str | None) -> None:
        """Job `dep` is completed, dead or gone (None): wake what waited for it."""
        waiting = self.waiters.pop(dep, None)
        for waiter in waiting or ():
            entry = self.waiting.get(waiter)
            if entry is None:
                continue
            if state != "completed":
                self._dependency_died(waiter, dep)
                continue
            entry[3].discard(dep)
            if not entry[3]:
                del self.waiting[waiter]
                self.add(entry[0], waiter, entry[1], entry[2])

    def recheck(self) -> None:
        """The safety scan: look at every id something waits for (changes from other hosts raise no event)."""
        for dep in list(self.waiters):
            state = self.spool.find(dep) if is_valid_id(dep) else None
            if state in ("completed", "dead", None):
                self._landed(dep, state)

    # -- groups and pause, at claim time --

    def spool_paused(self) -> bool:
        return os.path.lexists(os.path.join(self.spool.root, PAUSE_FILE))

    def admit(self, state: str, job_id: str, worker: str) -> Slot | None:
        """A slot for the job about to be claimed (NO_SLOT when its group has no limit); None: it was parked."""
        entry = self.group_of.get(job_id)
        if entry is None:
            return NO_SLOT
        group, priority, due = entry
        if group in self.full or is_paused(self.spool, group):
            self._park(group, priority, due, job_id, state)
            return None
        limit = self._limit(group)
        if limit is None:
            return NO_SLOT
        if self.badge is None:
            self.badge = Badge(self.spool, worker)
        slot = take_slot(self.spool, group, limit, self.badge)
        if slot is None:
            self.full.add(group)
            self._park(group, priority, due, job_id, state)
        else:
            # Claimed next: forgotten now, so its own "gone" event costs no stat (a lost claim re-reads it).
            self.group_of.pop(job_id, None)
        return slot

    def _limit(self, group: str) -> int | None:
        """The group's limit, read again only when groups/NAME.json changed (one stat per claim)."""
        try:
            info = os.stat(limit_path(self.spool, group))
        except FileNotFoundError:
            self.limits.pop(group, None)
            return None
        key = (info.st_ino, info.st_mtime_ns, info.st_size)
        cached = self.limits.get(group)
        if cached is None or cached[0] != key:
            cached = self.limits[group] = (key, read_limit(self.spool, group))
        return cached[1]

    def _park(self, group: str, priority: int, due: float, name: str, state: str) -> None:
        heapq.heappush(self.parked.setdefault(group, []), (-priority, due, name, state))

    def unpark(self, now: float) -> None:
        """Put back as many parked jobs per group as it has free slots (after a settle, a change or PARK_POLL)."""
        if not self.parked or (not self.poked and now < self.next_poll):
            return
        self.poked = False
        self.next_poll = now + PARK_POLL
        for group in list(self.parked):
            if is_paused(self.spool, group):
                continue
            limit = self._limit(group)
            free = len(self.parked[group]) if limit is None else limit - len(slot_names(self.spool, group))
            if free <= 0:
                self.full.add(group)
                continue
            self.full.discard(group)
            heap = self.parked[group]
            for _ in range(min(free, len(heap))):
                negative_priority, due, name, state = heapq.heappop(heap)
                if self.group_of.get(name, (None,))[0] == group:
                    self.add(state, name, -negative_priority, due)
            if not heap:
                del self.parked[group]

    def close(self) -> None:
        """At the worker's exit: its badge goes (no slot of its links it any more)."""
        if self.badge is not None:
            self.badge.close()
            self.badge = None

    def holding(self) -> bool:
        """Whether any job is held back (waiting for a dependency, or parked behind its group)."""
        return bool(self.waiting or self.parked)

    def may_unblock(self, now: float) -> bool:
        """For a burst worker about to exit: whether a held-back job may still start soon.

        True when a parked job's group has room now (it is put back), or a
        waiting job waits for one that is running (its outcome may not have
        landed yet, e.g. still in this worker's group commit).
        """
        if self.parked:
            self.poked = True
            before = len(self.parked), sum(len(heap) for heap in self.parked.values())
            self.unpark(now)
            if (len(self.parked), sum(len(heap) for heap in self.parked.values())) != before:
                return True
        return any(self.spool.find(dep) == "processing" for dep in self.waiters if is_valid_id(dep))

    def next_wake(self, now: float) -> float | None:
        """When to look again at parked jobs or a paused spool, if nothing wakes the worker before."""
        if self.parked or self.spool_paused():
            return max(now, self.next_poll) if self.parked else now + PARK_POLL
        return None

