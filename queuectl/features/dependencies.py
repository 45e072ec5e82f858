"""Dependencies: `after`, the waiting markers that keep a completed dependency, and rings of `after`.

A job whose `after` names a job that is not completed is not started; its
dependency dying sends it to dead/ (lifecycle.dependency_died); a ring of
`after` (a -> b -> a, of any length) sends every job on it to dead/
naming the ring (lifecycle.dependency_ring), so nothing waits for ever.
waiting/<dep>/<job> says "job may still wait for dep"; `waiting/.prune-<dep>`
(a name no id can have: ids never start with '.') marks a deletion of dep
under way (docs/spool-format.md "waiting/").
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any

from ..core import fsops, lifecycle
from ..core.errors import JobNotFound, SpoolError
from ..core.job import is_valid_id
from ..core.spool import LockedJob, Spool

WAITING = "waiting"
PRUNE_PREFIX = ".prune-"
# A marker whose dependent is in no folder may belong to an enqueue that has
# not yet published it; only after this long is it a failed enqueue's leftover.
MARK_GRACE = 60.0
# How long an enqueue naming a job waits for a deletion of it under way to end.
PRUNE_WAIT = 2.0
LOCK_GRACE = 60.0
# How far a ring is followed through pending jobs: a chain longer than this is
# judged again when one of its jobs moves (each hop reads one job file).
RING_DEPTH = 1000


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
    `.prune` file (docs/guide/retention.md).
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
    path = os.path.join(waiting_dir(spool), PRUNE_PREFIX + dep)
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
    flag = os.path.join(root, PRUNE_PREFIX + job_id)
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
    for name in fsops.listdir_if_there(folder):
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


def find_ring(spool: Spool, job_id: str, after: list[str], *, depth: int = RING_DEPTH) -> list[str] | None:
    """A ring of `after` through `job_id`: [job_id, dep, ..., last] where last waits for job_id; None if none.

    Follows only jobs in pending/ or failed/ (a completed, running or dead
    dependency ends the wait some other way), each read once.
    """
    path: dict[str, str | None] = {job_id: None}
    frontier = [dep for dep in after if is_valid_id(dep)]
    for dep in frontier:
        path.setdefault(dep, job_id)
    seen = {job_id}
    while frontier and len(seen) < depth:
        current = frontier.pop()
        if current in seen:
            continue
        seen.add(current)
        state = spool.find(current)
        if state not in ("pending", "failed"):
            continue
        job = spool.read(state, current + ".json")
        for dep in (job or {}).get("after") or []:
            if dep == job_id:
                ring = [current]
                while path.get(ring[-1]) is not None:
                    ring.append(path[ring[-1]])  # type: ignore[arg-type]
                ring.reverse()
                return ring
            if isinstance(dep, str) and is_valid_id(dep) and dep not in path:
                path[dep] = current
                frontier.append(dep)
    return None


def end_ring(spool: Spool, ring: list[str]) -> list[str]:
    """Send every pending job of the ring to dead/ naming the ring; returns the ids moved."""
    moved = []
    for index, job_id in enumerate(ring):
        rotated = ring[index:] + ring[:index]
        if lifecycle.dependency_ring(spool, job_id, rotated):
            moved.append(job_id)
    return moved


def rings(spool: Spool) -> list[list[str]]:
    """Every ring of `after` among pending jobs (doctor): each once, as found from its smallest id."""
    found: list[list[str]] = []
    on_ring: set[str] = set()
    for name in sorted(spool.names("pending")):
        job = spool.read("pending", name)
        job_id = name.removesuffix(".json")
        after = (job or {}).get("after")
        if job_id in on_ring or not isinstance(after, list) or not after:
            continue
        ring = find_ring(spool, job_id, after)
        if ring:
            found.append(ring)
            on_ring.update(ring)
    return found


class DependenciesPlugin(lifecycle.Plugin):
    """Waiting markers before a job that waits is published or comes back, and the prune guard of completed jobs."""

    def check_enqueue(self, spool: Spool, job: dict, earlier: set[str]) -> None:
        if job.get("after"):
            check_dependencies_exist(spool, job["id"], job["after"], earlier)

    def before_publish(self, spool: Spool, job: dict, source: str) -> None:
        after = job.get("after")
        if isinstance(after, list) and after:
            mark_waiting(spool, job["id"], after)

    def before_return(self, spool: Spool, held: LockedJob) -> AbstractContextManager[None]:
        after = held.job.get("after")
        if isinstance(after, list) and after and is_valid_id(held.job.get("id")):
            mark_waiting(spool, held.job["id"], after)
        return contextlib.nullcontext()

    def on_delete(self, spool: Spool, job: dict) -> None:
        """Its own waiting markers go with it: a deleted job waits for nothing."""
        after = job.get("after")
        if not isinstance(after, list) or not is_valid_id(job.get("id")):
            return
        for dep in after:
            if is_valid_id(dep):
                fsops.unlink_if_there(os.path.join(waiting_dir(spool), dep, job["id"]))

    def may_delete(self, spool: Spool, state: str, job_id: str, path: str) -> AbstractContextManager[bool | None]:
        if state != "completed" or not os.path.isfile(path):  # a folder or FIFO by hand: no job waits for it
            return contextlib.nullcontext(True)
        return prune_guard(spool, job_id, path)
