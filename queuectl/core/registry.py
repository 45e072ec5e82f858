"""workers/: who is alive, what each worker runs, and stop requests; cancels/ and suspends/: requests for one job.

Each worker holds the flock of `workers/<name>.lock` for its whole life
(locks.take_worker_lock) and keeps `workers/<name>.json` (pid, host, mode,
start, lost_claims) and `workers/<name>.lease` (beaten in place, lease.py)
beside it; workerfiles.py names them. Whether a
worker lives is decided by lease.Liveness: on its own host a record whose
lock can be taken belongs to a dead worker; on another host, where the
lock may not be seen, its lease decides. The job a worker runs is read
from the `worker` field of the files in processing/.
`worker stop` reaches every worker, on any host sharing the spool, through
one file, `workers/stop.json`, that workers watch; a worker obeys a request
made after it started, so a new worker is not stopped by an old request.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from typing import Any

from .fsops import retry_stale
from .lease import Liveness
from .workerfiles import holds_lock, lock_path, read_record, record_path, remove_files, write_record

# The per-worker files are workerfiles.py's; named here too for the callers that list workers.
__all__ = ["STOP_FILE", "holds_lock", "lock_path", "read_record", "record_path", "write_record", "new_name",
           "is_alive", "remove_record", "records", "dead_records", "wait_stopped", "request_stop", "stop_request",
           "request_cancel", "cancel_requested", "clear_cancel", "request_suspend", "suspend_requested",
           "suspended_ids", "clear_suspend"]

STOP_FILE = "stop.json"
# The most workers one supervisor runs (`worker start --count`): each is a process of its own
# (about 20 MB), so an absurd count is refused rather than forked until the machine gives out.
MAX_WORKERS = 1024


def new_name() -> str:
    host = "".join(c if c.isalnum() or c in "-_" else "_" for c in socket.gethostname())[:40]
    return f"{host}-{os.getpid()}-{int(time.time() * 1000) % 10**9}"


def is_alive(spool, name: str) -> bool:
    """Whether worker `name` lives; `lease.Liveness` decides (its flock on its own host, its lease elsewhere)."""
    return Liveness(spool).worker_alive(name)


def remove_record(spool, name: str) -> None:
    """A worker's record, lock and lease (a dead worker's, for doctor; a live one's lease is gone already)."""
    remove_files(spool, name)


def _running_jobs(spool) -> dict[str, str]:
    """Worker name -> the id of the job it runs, read from processing/ (the folder is the truth)."""
    running = {}
    for name in spool.names("processing"):
        job = spool.read("processing", name)
        if job and isinstance(job.get("worker"), str):
            running[job["worker"]] = job.get("id")
    return running


def records(spool, *, live_only: bool = True, judge=None) -> list[dict[str, Any]]:
    """Worker records, each with `alive` and the `job` it runs; dead workers' records are dropped when live_only."""
    found = [record for record in _all_records(spool, judge) if record["alive"] or not live_only]
    running = _running_jobs(spool) if found else {}
    for record in found:
        record["job"] = running.get(record["name"])
    return found


def dead_records(spool, judge=None) -> list[dict[str, Any]]:
    """The records of workers that are gone (for recovery and doctor to remove); processing/ is not read."""
    return [record for record in _all_records(spool, judge) if not record["alive"]]


def _all_records(spool, judge=None) -> Iterator[dict[str, Any]]:
    if judge is None:
        judge = Liveness(spool)  # one judge per listing: the file system's clock is probed once
    for entry in sorted(retry_stale(os.listdir, spool.dir("workers"))):
        if not entry.endswith(".json") or entry == STOP_FILE or entry.startswith("."):
            continue
        name = entry.removesuffix(".json")
        record = read_record(spool, name)
        if record is not None:
            yield {**record, "name": name, "alive": judge.worker_alive(name, record)}


def wait_stopped(spool, names: list[str], poll: float = 0.1) -> None:
    """Until none of these workers holds its lock (a worker started meanwhile is not waited for)."""
    while any(is_alive(spool, name) for name in names):  # a fresh judge each round: leases move on
        time.sleep(poll)


def request_stop(spool, *, now: bool) -> None:
    spool._publish_file(os.path.join("workers", STOP_FILE),
                        json.dumps({"requested_at": time.time(), "now": now}).encode())


def stop_request(spool) -> dict[str, Any] | None:
    try:
        with open(os.path.join(spool.dir("workers"), STOP_FILE), encoding="utf-8") as handle:
            request = json.load(handle)
    except (OSError, ValueError):
        return None
    return request if isinstance(request, dict) else None


# Requests to stop a running job, one empty file per id, in a folder of their own: in
# workers/ a request's name could be a worker's file (docs/spool-format.md, "The layout").
CANCELS = "cancels"


def request_cancel(spool, job_id: str) -> None:
    spool._publish_file(os.path.join(CANCELS, job_id), b"")


def cancel_requested(spool, job_id: str) -> bool:
    return os.path.exists(os.path.join(spool.dir(CANCELS), job_id))


def clear_cancel(spool, job_id: str) -> None:
    try:
        os.unlink(f"{spool.dir(CANCELS)}/{job_id}")
    except FileNotFoundError:
        pass


# Suspend requests (docs/spool-format.md, "Suspended jobs"): `suspends/<id>` exists while the
# running job <id> is to be stopped (SIGSTOP); its worker polls it as it polls a cancel request.
SUSPENDS = "suspends"


def request_suspend(spool, job_id: str, run: str = "") -> None:
    """Ask for the running job to be suspended; `run`, its `started_at`, names the run meant."""
    spool._publish_file(os.path.join(SUSPENDS, job_id), run.encode())


def suspend_requested(spool, job_id: str, *, run: str | None = None) -> bool:
    """Whether the job is asked to be suspended. With `run` (the `started_at` of the run that
    asks), a request that names another run was meant for an earlier one whose worker died: it
    is removed, and not obeyed. The run is named, not dated: a time set by another host's
    clock cannot be compared with this one's. An empty request (made by hand) means the run
    there is."""
    path = f"{spool.dir(SUSPENDS)}/{job_id}"
    if run is None:
        return os.path.exists(path)
    try:
        with open(path, "rb") as handle:
            named = handle.read(256).decode("utf-8", "replace").strip()
    except FileNotFoundError:
        return False
    except OSError:
        return True  # a request is there, though unreadable now: obeyed
    if named and named != run:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return False
    return True


def suspended_ids(spool) -> set[str]:
    """The ids of every job a suspend request names."""
    try:
        return set(os.listdir(spool.dir(SUSPENDS)))
    except FileNotFoundError:
        return set()


def clear_suspend(spool, job_id: str, *, before: float | None = None) -> bool:
    """Remove the job's suspend request (only one made before `before`, when given); False if none went."""
    path = f"{spool.dir(SUSPENDS)}/{job_id}"
    try:
        if before is not None and os.stat(path).st_mtime >= before:
            return False
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True
