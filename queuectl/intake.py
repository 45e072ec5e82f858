"""A worker's view of what it may run: the due index, kept in line with pending/ and failed/.

Changes come from the folder watch (watch.FolderWatch: files landing or
leaving); a full listing (`scan`) at start-up and now and then as a safety
net. A file that is not a canonical job yet is handed to adoption (a
drop-in); one that may still be being written is looked at again after
lifecycle.DROP_GRACE. The gate (workflow.Gate) holds back jobs waiting for
a dependency or a group slot.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from .core import fsops, lifecycle, registry
from .core.errors import InvalidJob
from .core.job import MAX_JOB_BYTES, due_time, loads
from .core.order import DueIndex
from .core.spool import SUFFIX, Spool, id_of
from .features import workflow
from .watch import FULL_LISTING, POLL_INTERVAL, RESCAN, FolderWatch

# Seconds before a job whose claim was lost is read again, unless the watch saw it leave first (on
# a shared spool a busy worker lists pending/ every FULL_LISTING: Intake.cadence).
LOST_RECHECK = 1.0


class Intake:
    """The index of due jobs, the drop-ins to look at again, and what the folder watch reports."""

    def __init__(self, spool: Spool, gate: workflow.Gate, *, on_stop_file: Callable[[], None],
                 on_schedules: Callable[[], None]):
        self.spool = spool
        self.gate = gate
        self.index = DueIndex()
        self.rechecks: dict[str, float] = {}  # dropped-in files that may still be being written
        # Jobs whose claim came to nothing on a shared spool (another worker had it), looked at
        # again after LOST_RECHECK unless the watch saw them go first: (folder, name) -> when.
        self.lost: dict[tuple[str, str], float] = {}
        self.watch: FolderWatch | None = None  # set by the worker once it watches
        self.on_stop_file = on_stop_file  # workers/stop.json was written
        self.on_schedules = on_schedules  # a schedule was added, changed or removed

    def readd(self, folder: str, job_id: str, priority: int, due: float) -> None:
        """A job the gate held back may start now (its dependencies completed, its group has room)."""
        self.index.add(folder, job_id, priority, due, time.time())

    def cadence(self, folder: str) -> float | None:
        """How often a polling watch looks at `folder` (watch.FolderWatch.set_cadence; a shared spool).

        pending/ and failed/ every tick while this worker has nothing due,
        so that a job enqueued through another host starts within a tick;
        while it has due jobs, once a FULL_LISTING: it claims from its index
        meanwhile, and a job another worker took first is a lost claim, not
        an error. completed/ and dead/ only matter to jobs held back (a
        dependency's landing, a settle that frees a group's slot), and are
        not looked at while none is: on a busy spool they change at every
        settle and only grow (docs/guide/several-hosts.md, "Local or shared
        mode").
        """
        if folder in ("pending", "failed"):
            return FULL_LISTING if self.index.has_due(time.time()) else POLL_INTERVAL
        if folder in ("completed", "dead"):
            return FULL_LISTING if self.gate.holding() else None
        return POLL_INTERVAL

    def apply_events(self) -> bool:
        """Bring the index and the stop flags up to date with what changed; False if nothing did."""
        assert self.watch is not None  # set by the worker before its loop
        changes = self.watch.changes()
        for kind, folder, name in changes:
            if (kind, folder, name) == RESCAN:
                self.scan()
            elif folder == "schedules":
                self.on_schedules()
            elif folder == "workers":
                if name == registry.STOP_FILE and kind != "gone":
                    self.on_stop_file()
            elif folder not in ("pending", "failed"):
                self.gate.changed(kind, folder, name)
            elif kind == "gone":
                self.lost.pop((folder, name), None)  # gone indeed: nothing to look at again
                # A name can leave and come back (a stopped job returns to pending/)
                # within one batch of inotify's changes: the folder decides. (A job this
                # worker claimed has left the index already: no need to look.) A shared
                # spool's changes come from a listing just made, which says it: a name
                # back under a new inode follows as "created".
                known = id_of(name) in self.index or name in self.rechecks or id_of(name) in self.gate
                if known and (self.spool.shared or not os.path.lexists(os.path.join(self.spool.dir(folder), name))):
                    self.index.discard(id_of(name), folder)
                    self.rechecks.pop(name, None)
                    self.gate.forget(id_of(name))
            else:
                self.gate.changed(kind, folder, name)
                self.consider(folder, name, complete=kind != "created")
        return bool(changes)

    def scan(self) -> None:
        """Bring the index in line with the folders (start-up and the slow safety scan).

        Only files the index does not know are read, so a rescan of a big
        queue costs two directory listings.
        """
        listings = {folder: os.listdir(self.spool.dir(folder)) for folder in ("pending", "failed")}
        # Forget vanished jobs first: a drop-in adopted below gets a name the listing does not have.
        listed = {id_of(name) for names in listings.values() for name in names if name.endswith(SUFFIX)}
        for job_id in self.index.ids() - listed:
            self.index.discard(job_id)
        for job_id in self.gate.names() - listed:
            self.gate.forget(job_id)
        for folder, names in listings.items():
            for name in names:
                if not name.endswith(SUFFIX) or (id_of(name) not in self.index and id_of(name) not in self.gate):
                    self.consider(folder, name, complete=False)
        self.gate.recheck()

    def consider(self, folder: str, name: str, *, complete: bool, drop_in: bool = False) -> None:
        """Index a job file, or hand a dropped-in file to adoption.

        `drop_in`: a claim found that the file is not its id's stored job
        (lifecycle.DROP_IN), whatever it holds (a copy in queuectl's own
        form too): adopted, never indexed as it is.
        """
        if name.startswith(".") or name.endswith(".tmp"):
            return
        job = _peek(f"{self.spool.dir(folder)}/{name}") if name.endswith(SUFFIX) and not drop_in else None
        if job is False:
            self.index.discard(id_of(name), folder)
            return
        if isinstance(job, dict) and lifecycle.is_canonical(job, folder, name):
            try:
                priority = int(job.get("priority") or 0)
            except (TypeError, ValueError):
                priority = 0
            self.rechecks.pop(name, None)
            due = due_time(job)
            if self.gate.keeps_back(folder, job["id"], job, priority, due):
                self.index.discard(job["id"])  # waits for a dependency, or went to dead/
                return
            self.index.add(folder, job["id"], priority, due, time.time())
            return
        if folder != "pending":
            return  # only pending/ takes drop-ins; doctor reports strays elsewhere
        target = lifecycle.adopt(self.spool, name, complete=complete)
        if target is not None:
            self.rechecks.pop(name, None)
            self.consider("pending", target, complete=True)
        elif os.path.lexists(os.path.join(self.spool.dir("pending"), name)):
            self.rechecks[name] = time.time() + lifecycle.DROP_GRACE

    def unclaimed(self, folder: str, name: str, *, drop_in: bool) -> None:
        """A claim of `folder/name` came to nothing: a drop-in goes to adoption (`consider`); on a
        shared spool another worker most likely has the job (`look_again`); on one host it was
        not due after all, or is gone, and is looked at again now."""
        if self.spool.shared and not drop_in:
            self.look_again(folder, name)
        else:
            self.consider(folder, name, complete=True, drop_in=drop_in)

    def look_again(self, folder: str, name: str) -> None:
        """A claim of `folder/name` came to nothing on a shared spool: most likely another worker has it
        and moves it on at once. Not read again now (the worker goes on to its next due job): the watch
        reports it gone, or it is read again after LOST_RECHECK (back in the index if still due)."""
        self.lost[(folder, name)] = time.time() + LOST_RECHECK

    def waiting(self) -> bool:
        """Whether files are to be looked at again (drop-ins being written, lost claims)."""
        return bool(self.rechecks or self.lost)

    def next_recheck(self) -> float | None:
        return min([*self.rechecks.values(), *self.lost.values()], default=None)

    def recheck_dropins(self, now: float) -> None:
        for name, when in list(self.rechecks.items()):
            if when <= now:
                del self.rechecks[name]
                self.consider("pending", name, complete=False)
        for (folder, name), when in list(self.lost.items()):
            if when <= now:
                del self.lost[(folder, name)]
                if id_of(name) not in self.index:
                    self.consider(folder, name, complete=True)


def _peek(path: str) -> Any:
    """The JSON in a file; None if it is not a complete job object yet; False if it is gone."""
    try:
        data, why = fsops.read_file(path, MAX_JOB_BYTES)
    except OSError:
        return None
    if data is None:
        return None if why else False  # unreadable (a symlink or stranger: adoption decides), or gone
    try:
        return loads(data)
    except InvalidJob:
        return None
