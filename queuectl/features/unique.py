"""Unique keys: while a job with a key is pending, processing or failed, no other job can take the key.

The key is one name `unique/<sha256(key)>`, a hard link of the job's file
made before the job is published (docs/spool-format.md "unique/"): link()
decides, so it holds across processes and hosts. A sha256 is never an id
and `.lock` names are the take-over locks: no id reaches this folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any

from ..core import fsops, lifecycle
from ..core.errors import KeyTaken, SpoolError
from ..core.job import is_valid_id
from ..core.spool import LockedJob, Spool

UNIQUE = "unique"
MAX_KEY_FILE = 1024 * 1024 + 1  # a key file is a job file: at most 1 MiB
LIVE = ("pending", "processing", "failed")
# A key whose job is in no folder may belong to an enqueue that has taken the
# key and not yet published the job; only after this long is it a crash's leftover.
KEY_GRACE = 60.0
# Held for milliseconds by whoever takes over a stale key; one older than this
# was left by a crash, and only `doctor --repair` removes it (two processes
# breaking one lock at once could both believe they hold it).
LOCK_GRACE = 60.0


def _fsync_dir(spool: Spool, path: str) -> None:
    if spool.durable:
        fsops.fsync_dir(path)


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
            fsops.unlink_if_there(path)  # judged under the lock: nobody else removes a stale key now
            continue
        with _takeover_lock(path):
            if key_holder(path) == holder and _stale(spool, path, holder):
                fsops.unlink_if_there(path)
        # Loop: the link decides, also against a plain enqueue that saw the key free.
    raise SpoolError(f"unique key {key!r} keeps changing hands; try again")


def _unique_folder(spool) -> str:
    """unique/, created once per Spool object (not a mkdir per enqueue)."""
    folder = getattr(spool, "_unique_folder", None)
    if folder is None:
        folder = spool._unique_folder = fsops.make_folder(spool.dir(UNIQUE))
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
        fsops.unlink_if_there(self.lock)


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
        fsops.unlink_if_there(path)


def stale_keys(spool, *, repair: bool) -> list[dict[str, Any]]:
    """Keys whose job is over or missing past the grace time, and take-over locks left by a crash."""
    found = []
    folder = os.path.join(spool.root, UNIQUE)
    now = time.time()
    for name in sorted(fsops.listdir_if_there(folder)):
        path = os.path.join(folder, name)
        if name.endswith(".lock"):
            try:
                old = now - os.lstat(path).st_mtime > LOCK_GRACE
            except FileNotFoundError:
                continue
            if old:
                found.append({"problem": "stale-key-lock", "path": os.path.relpath(path, spool.root),
                              "detail": "a take-over of a unique key was cut short",
                              "repaired": repair and fsops.unlink_if_there(path)})
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
                    finding["repaired"] = fsops.unlink_if_there(path)
        found.append(finding)
    return found


class UniquePlugin(lifecycle.Plugin):
    """Takes a job's key before it is published, again for a `dlq retry`, and frees it when the job ends."""

    def before_publish(self, spool: Spool, job: dict, source: str) -> None:
        if job.get("unique_key") is not None:
            take_key(spool, job["unique_key"], job["id"], source)

    def undo_publish(self, spool: Spool, job: dict) -> None:
        release_key(spool, job)  # only if it names this job: the id is this enqueue's own

    def before_return(self, spool: Spool, held: LockedJob) -> AbstractContextManager[None]:
        return key_held_for(spool, held)

    def before_finish(self, spool: Spool, job: dict) -> None:
        release_key(spool, job)
