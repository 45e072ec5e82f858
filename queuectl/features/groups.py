"""Groups: a concurrency limit per group, slots, and pause/resume of the spool or a group.

Promises, across every process and every host that shares the spool:
- a group with a limit of N never has more than N jobs holding a slot, and a
  job of a group runs only while it holds one; a slot is one name
  `groups/NAME/slot-K`, a hard link of its worker's badge file, made with
  link(): EEXIST decides who gets it;
- a paused spool (a file `paused` at its top) or group (`groups/NAME.paused`)
  starts nothing new; a claim looks for the file right before it claims.
Group names have no '.', so `NAME.json` and `NAME.paused` never meet a
group's slot folder `NAME/` (docs/spool-format.md "Names").
Only link(), unlink and rename decide anything: it holds on network file
systems; whether a slot's worker lives is asked of registry.is_alive only.
"""

from __future__ import annotations

import json
import os
import re
import time
from typing import Any

from ..core import fsops, lifecycle, registry
from ..core.errors import InvalidJob
from ..core.fsops import open_nofollow
from ..core.job import GROUP_PATTERN, check_group, is_valid_id, iso
from ..core.spool import Spool
from . import rates

PAUSE_FILE = "paused"
GROUPS = "groups"


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
        fsops.make_folder(spool.dir(GROUPS))
    path = pause_path(spool, group)
    if os.path.lexists(path):
        return False
    record = {"paused_at": iso(time.time()), "by": f"{os.environ.get('USER', '?')}@{os.uname().nodename}"}
    try:
        fsops.publish(spool.dir("tmp"), path, json.dumps(record).encode() + b"\n", durable=spool.durable)
    except FileExistsError:
        return False
    return True


def resume(spool, group: str | None = None) -> bool:
    """Remove the pause file; False when it was not there."""
    return fsops.unlink_if_there(pause_path(spool, group))


def paused_groups(spool) -> list[str]:
    return sorted(name.removesuffix(".paused") for name in fsops.listdir_if_there(os.path.join(spool.root, GROUPS))
                  if name.endswith(".paused") and re.fullmatch(GROUP_PATTERN, name.removesuffix(".paused")))


# -- groups ----------------------------------------------------------------------

def limit_path(spool, group: str) -> str:
    return os.path.join(spool.root, GROUPS, check_group(group) + ".json")


def read_settings(spool, group: str) -> dict:
    """groups/NAME.json as an object ({} when absent or not valid: `group list` says so)."""
    try:
        with open(limit_path(spool, group), encoding="utf-8") as handle:
            settings = json.load(handle)
    except (OSError, ValueError):
        return {}
    return settings if isinstance(settings, dict) else {}


def _write_settings(spool, group: str, settings: dict) -> None:
    path = limit_path(spool, group)
    if not settings:
        fsops.unlink_if_there(path)
        return
    fsops.publish(spool.dir("tmp"), path, json.dumps(settings).encode() + b"\n",
                  durable=spool.durable, replace=True)


def set_limit(spool, group: str, limit: int | None) -> None:
    """Set `limit` in groups/NAME.json; None removes it (no limit). The caller holds the groups' edit lock."""
    fsops.make_folder(spool.dir(GROUPS))
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise InvalidJob("a group's limit is an integer >= 1")
    settings = read_settings(spool, group)
    settings.pop("limit", None)
    if limit is not None:
        settings["limit"] = limit
    _write_settings(spool, group, settings)


def _valid_limit(limit: Any) -> int | None:
    return limit if isinstance(limit, int) and not isinstance(limit, bool) and limit >= 1 else None


def read_limit(spool, group: str) -> int | None:
    """The group's limit; None when it has none (or its file is not valid: said by `group list`)."""
    return _valid_limit(read_settings(spool, group).get("limit"))


def read_rate(spool, group: str) -> rates.Rate | None:
    """The group's rate limit (rates.py); None when it has none."""
    return rates.from_json(read_settings(spool, group).get("rate"))


def set_rate(spool, group: str, rate: rates.Rate | None) -> None:
    """Set the group's rate (None: no rate). The caller holds the groups' edit lock.

    A new token folder is made and filled before the group's file names it,
    carrying the newest starts of the old one (rates.make_tokens); the old
    folder goes after.
    """
    root = fsops.make_folder(spool.dir(GROUPS))
    settings = read_settings(spool, group)
    old = rates.from_json(settings.pop("rate", None))
    if rate is not None:
        carried = rates.recent_starts(root, old) if old is not None else []
        settings["rate"] = rates.make_tokens(root, group, rate, carried, spool.dir("tmp")).as_json()
    _write_settings(spool, group, settings)
    if old is not None:
        rates.remove_tokens(root, old.tokens)


def groups_dir(spool) -> str:
    """groups/, created when first needed (a worker watches it)."""
    return fsops.make_folder(spool.dir(GROUPS))


def slot_dir(spool, group: str) -> str:
    return os.path.join(spool.root, GROUPS, group)


def slot_names(spool, group: str) -> list[str]:
    return sorted(name for name in fsops.listdir_if_there(slot_dir(spool, group)) if name.startswith("slot-"))


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
        self.worker = worker
        self.path = os.path.join(groups_dir(spool), BADGE_PREFIX + worker)
        record = {"worker": worker, "host": os.uname().nodename, "pid": os.getpid()}
        try:
            fsops.publish(spool.dir("tmp"), self.path, json.dumps(record).encode() + b"\n", durable=False)
        except FileExistsError:
            pass  # ours from a retried call (worker names are unique)
        self.ino = os.lstat(self.path).st_ino

    def close(self) -> None:
        fsops.unlink_if_there(self.path)


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
    """What this process holds for the job it starts: its group's slot and the resource indexes
    it was given (resources.py), each one name linked to the worker's badge; or nothing.

    `env`: what the job's environment gets from them (the indexes, QUEUECTL_GPU=0,2).
    """

    def __init__(self, path: str | None = None, env: dict[str, str] | None = None, start: str | None = None):
        self.paths = [path] if path is not None else []
        self.env = env or {}
        self.start = start  # a start of the group's rate (rates.Window.take), kept once the job starts

    def join(self, other: Slot) -> Slot:
        """This slot and `other`'s names as one holding (released together)."""
        joined = Slot(env={**self.env, **other.env}, start=self.start or other.start)
        joined.paths = self.paths + other.paths
        return joined

    def release(self) -> None:
        """Free every name. Nobody else removes a live worker's slot (see `free_orphan_slots`)."""
        paths, self.paths = self.paths, []
        for path in paths:
            fsops.unlink_if_there(path)

    def give_back(self) -> None:
        """For a claim that did not happen: free every name, and give the rate's start back."""
        self.release()
        start, self.start = self.start, None
        if start is not None:
            rates.give_back(start)


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
            fsops.make_folder(spool.dir(GROUPS))
            fsops.make_folder(spool.dir(os.path.join(GROUPS, group)))
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
    entries = fsops.listdir_if_there(root)
    running = None
    for group in entries:
        if not re.fullmatch(GROUP_PATTERN, group) or not os.path.isdir(os.path.join(root, group)):
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
                finding["repaired"] = remove_if(spool, path, holder["ino"])
            found.append(finding)
    if repair:
        for entry in entries:
            worker = entry[len(BADGE_PREFIX):]
            if entry.startswith(BADGE_PREFIX) and is_valid_id(worker) and not _alive(spool, worker):
                try:
                    if os.lstat(os.path.join(root, entry)).st_nlink == 1:  # no slot links it
                        fsops.unlink_if_there(os.path.join(root, entry))
                except FileNotFoundError:
                    pass
    return found


def remove_if(spool, path: str, ino: int) -> bool:
    """Remove the slot at `path` if it is still inode `ino`; put back anything else taken aside."""
    aside = os.path.join(spool.dir("tmp"), f".freeing.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return False
    if os.lstat(aside).st_ino == ino:
        fsops.unlink_if_there(aside)
        return True
    try:
        os.link(aside, path)  # not ours to free: put it back
    except FileExistsError:
        pass  # taken again in this instant: its holder frees nothing, its job ends anyway
    fsops.unlink_if_there(aside)
    return False


def free_job_slots(spool, job: dict) -> None:
    """Free the slot the job's dead worker held in its group (called by recovery, under the job's flock).

    A worker holds one slot at a time, for the job it runs: the slot of the
    job's `worker` in the job's group is that job's. Recovery has ended the
    dead worker's command before (runner.LeftoversPlugin acts first), so the
    group never runs N + 1.
    """
    group = job.get("group")
    if not isinstance(group, str) or not re.fullmatch(GROUP_PATTERN, group):
        return
    worker = job.get("worker")
    mine = []
    for name in slot_names(spool, group):
        path = os.path.join(slot_dir(spool, group), name)
        holder = read_slot(path)
        if holder and isinstance(worker, str) and holder.get("worker") == worker and not _alive(spool, worker):
            mine.append(path)
    for path in mine:
        fsops.unlink_if_there(path)


def worker_alive(spool, worker: Any) -> bool:
    """Whether a slot's or index's holder lives (registry.is_alive; the name is checked first: it becomes a path)."""
    return _alive(spool, worker)


def _alive(spool, worker: Any) -> bool:
    """registry.is_alive, for a name read from a slot (checked first: it becomes a path)."""
    return is_valid_id(worker) and registry.is_alive(spool, worker)


def groups(spool) -> list[dict[str, Any]]:
    """Every group with a limit, a rate, a pause or running jobs: name, limit, running (jobs in
    processing/), slots (held), paused, rate (`10/1m` or None), starts_in_window (starts within the
    rate's window now), and the holders of its slots (slot, worker, the job that worker runs)."""
    root = os.path.join(spool.root, GROUPS)
    names = set()
    for entry in fsops.listdir_if_there(root):
        stem = entry.removesuffix(".json").removesuffix(".paused")
        if re.fullmatch(GROUP_PATTERN, stem):
            names.add(stem)
    by_worker = running_by_worker(spool)
    running: dict[str, int] = {}
    for job in by_worker.values():
        if isinstance(job.get("group"), str):
            running[job["group"]] = running.get(job["group"], 0) + 1
    names.update(running)
    listed: list[dict[str, Any]] = []
    now_ms = time.time() * 1000
    for name in sorted(names):
        settings = read_settings(spool, name)
        rate = rates.from_json(settings.get("rate"))
        row: dict[str, Any] = {"name": name, "limit": _valid_limit(settings.get("limit")),
                               "running": running.get(name, 0),
                 "slots": len(slot_names(spool, name)), "paused": is_paused(spool, name),
                 "rate": rate.text() if rate else None, "starts_in_window": None,
                 "holders": [{key: holder[key] for key in ("slot", "worker", "job")}
                             for holder in slot_holders(spool, name, by_worker)]}
        if rate is not None:
            window = rate.seconds * 1000
            row["starts_in_window"] = sum(1 for stamp in rates.recent_starts(root, rate) if now_ms - stamp < window)
        listed.append(row)
    return listed


class GroupsPlugin(lifecycle.Plugin):
    """Frees a dead worker's slot when recovery moves its job on, and orphan slots after each sweep."""

    def on_recover(self, spool: Spool, job: dict, leftovers: bool) -> None:
        free_job_slots(spool, job)

    def after_recover(self, spool: Spool) -> None:
        free_orphan_slots(spool)
