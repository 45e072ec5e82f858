"""`queuectl doctor`: find what a crash, a full disk or a hand edit left in the spool; repair what is safe.

Promises:
- a check without `repair` changes nothing;
- a repair never deletes a job's bytes: a duplicate or an invalid file goes
  to dead/ untouched, as dead/<id>.invalid beside a record saying why;
- whatever moves or rewrites a job holds its flock first (`Spool.lock`), so
  a job a live worker owns is never touched, and doctor may run beside
  workers;
- only proven garbage is removed: a second name of one file, temporary
  files nobody holds, dead workers' records, and logs of vanished jobs
  untouched for a day.
Decisions: of one id in two folders, the copy further along is kept
(processing > completed > dead > failed > pending, see lifecycle.KEEP_ORDER:
never a second run); the same file under two names (a link + unlink move
cut short) loses its extra name; a state field is rewritten to its folder
(the folder is the truth), except in processing/, where it tells recovery
how to finish; valid drop-ins in pending/ are left to the workers; a log
of a vanished job is only reported while younger than a day.
Each finding is a dict: `problem`, `path` (relative to the spool),
`detail`, `repaired`.
"""

from __future__ import annotations

import os
import stat
import time
from typing import Any

from .core import fsops, lifecycle, locks, registry
from .core.errors import ConfigError, InvalidJob
from .core.job import STATES, build, is_valid_id, loads, new_id
from .core.spool import ADOPTING, FOLDERS, PURGING, SUFFIX, Spool, id_of
from .features import resources, workflow

TEMP_AGE = 60.0          # a write takes milliseconds; older temporary files were left by a crash
ORPHAN_LOG_AGE = 86400.0  # a log younger than a day may belong to a job an operator is still looking for
INVALID = ".invalid"


def check(spool: Spool, *, repair: bool = False) -> list[dict[str, Any]]:
    """Every problem found in the spool, each marked `repaired` when `repair` fixed it.

    A repair holds `doctor.lock` (docs/decisions/locks.md), so two repairs never
    run at once; a second waits, then fails with one line naming the lock."""
    if not repair:
        return _Doctor(spool, repair).run()
    with locks.spool_lock(spool, "doctor"):
        return _Doctor(spool, repair).run()


class _Leftovers:
    """The checks of what crashes leave beside the jobs: a part of _Doctor, kept apart for its size."""

    spool: Spool
    repair: bool
    jobs: list[tuple[str, str]]

    def _add(self, problem: str, path: str, detail: str, repaired: bool = False) -> dict[str, Any]:
        raise NotImplementedError

    # -- processing/ without a live owner --------------------------------------

    def _orphaned_jobs(self) -> None:
        from .core.lease import Liveness

        # On a shared spool a free flock is no proof (docs/guide/several-hosts.md).
        judge = Liveness(self.spool)
        orphans = {}
        for name in self.spool.names("processing"):
            if os.path.islink(os.path.join(self.spool.dir("processing"), name)):
                detail = "a symlink in processing/"
            else:
                held = self.spool.lock("processing", name)
                if held is None:
                    continue  # its worker is alive (or it just moved on)
                with held:
                    job = held.job
                    if not judge.owner_dead(held):
                        continue  # a live worker of another host owns it
                written = job.get("state") if isinstance(job, dict) else None
                if not isinstance(job, dict):
                    detail = "not a readable job (recovery moves it to dead/)"
                elif written in ("pending", "failed", "completed", "dead"):
                    detail = f"a move to {written}/ was cut short by a crash"
                else:
                    detail = "its worker died during the run (the attempt counts)"
            orphans[id_of(name)] = self._add("orphaned-job", f"processing/{name}",
                                                      f"no live worker owns it: {detail}")
        if not (self.repair and orphans):
            return
        for job_id, state in lifecycle.recover(self.spool):
            if job_id in orphans:
                orphans[job_id]["repaired"] = True
                orphans[job_id]["detail"] += f"; recovered to {state}/"

    def _workflows(self) -> None:
        """Slots of dead workers and unique keys of finished jobs that a crash left (docs/guide/workflows.md),
        rings of `after` that no job on them can ever leave."""
        for finding in workflow.free_orphan_slots(self.spool, repair=self.repair) + \
                resources.free_orphan_indexes(self.spool, repair=self.repair) + \
                workflow.stale_keys(self.spool, repair=self.repair):
            self._add(finding["problem"], finding["path"], finding["detail"], bool(finding["repaired"]))
        for ring in workflow.rings(self.spool):
            finding = self._add("dependency-ring", f"pending/{ring[0]}{SUFFIX}",
                                "dependency ring: " + " -> ".join([*ring, ring[0]]) + "; none of them can start")
            if self.repair:
                moved = workflow.end_ring(self.spool, ring)
                finding["repaired"] = bool(moved)
                finding["detail"] += f"; {len(moved)} moved to dead/"

    def _cut_purges(self) -> None:
        """Deletions cut short by a crash (purging/<id>): finished, or undone when the job is still there."""
        for job_id in sorted(os.listdir(self.spool.dir(PURGING))):
            finding = self._add("cut-purge", f"{PURGING}/{job_id}", "a deletion of this job was cut short")
            if self.repair:
                lifecycle.sweep_purges(self.spool)
                finding["repaired"] = not os.path.lexists(os.path.join(self.spool.dir(PURGING), job_id))

    def _missing_markers(self) -> None:
        """Jobs put into failed/, completed/ or dead/ by hand (a restore from a backup) have no marker:
        only a look at the folders keeps their id from being enqueued again. Repaired by taking the
        marker for the file, under its flock (docs/decisions/identity.md)."""
        for state, name in self.jobs:
            job_id = id_of(name)
            if state != "pending" and is_valid_id(job_id) and not self.spool.id_taken(job_id) \
                    and os.path.lexists(os.path.join(self.spool.dir(state), name)):
                finding = self._add("missing-marker", f"{state}/{name}",
                                    "a job put here by hand: its id has no marker in ids/")
                held = self.spool.lock(state, name) if self.repair else None
                if held is not None:  # None: moved on meanwhile, or a live process has it
                    with held:
                        finding["repaired"] = self.spool.take_id(job_id, held.path)

    def _cut_adoptions(self) -> None:
        """Drop-ins left in adopting/ by an adopter that stopped (docs/decisions/identity.md,
        "Drop-ins on a shared spool"): put back into pending/ once judged abandoned."""
        from .core.lease import Liveness

        judge = Liveness(self.spool)
        for name in sorted(fsops.listdir_if_there(self.spool.dir(ADOPTING))):
            held = self.spool.lock(ADOPTING, name)
            if held is None:
                continue  # being adopted right now
            with held:
                abandoned = judge.abandoned(held)
                finding = self._add("cut-adoption", f"{ADOPTING}/{name}",
                                    "a dropped-in file whose adoption was cut short" + (
                                        "" if abandoned else "; a worker's recovery puts it back into pending/ "
                                                             "once it has not changed for a lease"))
                if self.repair and abandoned:
                    finding["repaired"] = lifecycle.put_back(self.spool, held) is not None

    # -- leftovers ---------------------------------------------------------------

    def _stray_temp_files(self) -> None:
        """tmp/ holds files being written; one older than TEMP_AGE that no live process holds was left by a crash.

        Removing it never loses a job: an enqueue cut before its link was
        never acknowledged, one cut between its link and the unlink left this
        as a second name of the published file, and a rewrite cut short left
        the job's previous version in place.
        """
        now = time.time()
        for name in sorted(os.listdir(self.spool.dir("tmp"))):
            path = os.path.join(self.spool.dir("tmp"), name)
            try:
                info = os.lstat(path)
            except FileNotFoundError:
                continue
            age = now - info.st_mtime
            if age < TEMP_AGE or _in_use(path, info):
                continue
            if stat.S_ISDIR(info.st_mode):
                self._add("stray-temp", f"tmp/{name}", "a folder queuectl did not make; remove it by hand")
                continue
            finding = self._add("stray-temp", f"tmp/{name}",
                                f"left {age:.0f}s ago by an interrupted write; "
                                "never a job's current file")
            if self.repair:
                job_id = lifecycle.temp_id(name)
                if job_id is not None and info.st_nlink > 1:
                    # An enqueue cut between taking the id's marker and publishing: the marker goes first.
                    try:
                        if os.path.samestat(info, os.lstat(self.spool.marker(job_id))):
                            os.unlink(self.spool.marker(job_id))
                    except FileNotFoundError:
                        pass
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
                finding["repaired"] = True

    def _orphan_logs(self) -> None:
        now = time.time()
        # One listing of each folder instead of a lookup per log; only the few logs
        # without a job in it are looked up again, one by one.
        listed = {id_of(name) for state in STATES for name in self.spool.names(state)}
        for name in sorted(os.listdir(self.spool.dir("logs"))):
            stem = name[: -len(".log")]
            if not name.endswith(".log") or name.startswith(".") or stem in listed or self._job_exists(stem):
                continue
            path = os.path.join(self.spool.dir("logs"), name)
            try:
                age = now - os.lstat(path).st_mtime
            except FileNotFoundError:
                continue
            finding = self._add("orphan-log", f"logs/{name}", "no job has this id (purged or deleted by hand?)")
            if not self.repair:
                continue
            if age < ORPHAN_LOG_AGE:
                finding["detail"] += "; kept: written less than a day ago, delete it by hand if unwanted"
                continue
            os.unlink(path)
            finding["repaired"] = True

    def _job_exists(self, stem: str) -> bool:
        """Asked twice: a job moving between folders can be missed by one look at each folder."""
        if not is_valid_id(stem):
            return False
        return self.spool.find(stem) is not None or self.spool.find(stem) is not None

    def _stale_workers(self, dead_workers: list[dict[str, Any]]) -> None:
        """Records (and lock files) of workers that no longer hold their lock."""
        for record in dead_workers:
            finding = self._add("stale-worker", f"workers/{record['name']}.json",
                                f"worker pid {record.get('pid')} on {record.get('host')} is gone")
            if self.repair:
                registry.remove_record(self.spool, record["name"])
                finding["repaired"] = True
        now = time.time()
        entries = sorted(os.listdir(self.spool.dir("workers")))
        recorded = {entry.removesuffix(SUFFIX) for entry in entries if entry.endswith(SUFFIX)}
        for entry in entries:
            name = entry[: -len(".lock")]
            if not entry.endswith(".lock") or name in recorded:
                continue
            path = os.path.join(self.spool.dir("workers"), entry)
            try:
                # A starting worker takes its lock an instant before writing its record.
                if now - os.lstat(path).st_mtime < TEMP_AGE or registry.is_alive(self.spool, name):
                    continue
            except FileNotFoundError:
                continue
            finding = self._add("stale-worker", f"workers/{entry}", "lock file of a worker that is gone")
            if self.repair:
                registry.remove_record(self.spool, name)
                finding["repaired"] = True


class _Doctor(_Leftovers):
    def __init__(self, spool: Spool, repair: bool):
        self.spool = spool
        self.repair = repair
        self.findings: list[dict[str, Any]] = []
        self.jobs: list[tuple[str, str]] = []  # (state, name) of the valid jobs listed, for _missing_markers

    def run(self) -> list[dict[str, Any]]:
        self._permissions()
        try:
            _ = self.spool.config
        except ConfigError as exc:
            # Every repair writes with the config's settings: fix it first.
            self._add("invalid-config", "config.json", str(exc))
            return self.findings
        # Listed before any repair, so a file a repair moved is not judged again in its new place.
        listings = {state: sorted(os.listdir(self.spool.dir(state))) for state in ("pending", "failed",
                                                                                    "completed", "dead")}
        # Before recovery, which drops dead workers' records itself once their jobs are recovered.
        dead_workers = registry.dead_records(self.spool)
        stale = [(state, name, written) for state, names in listings.items() for name in names
                 for written in [self._entry(state, name)] if written is not None]
        # Before a rewrite, which makes a new file: one file under two names must still look like one.
        self._duplicates()
        for state, name, written in stale:
            if os.path.lexists(os.path.join(self.spool.dir(state), name)):
                self._state_mismatch(state, name, written)
        self._dead_without_record()
        self._missing_markers()
        self._orphaned_jobs()
        self._workflows()
        self._cut_purges()
        self._cut_adoptions()
        self._stray_temp_files()
        self._orphan_logs()
        self._stale_workers(dead_workers)
        return self.findings

    def _add(self, problem: str, path: str, detail: str, repaired: bool = False) -> dict[str, Any]:
        finding = {"problem": problem, "path": lifecycle.printable(path), "detail": lifecycle.printable(detail),
                   "repaired": repaired}
        self.findings.append(finding)
        return finding

    # -- permissions ---------------------------------------------------------

    def _permissions(self) -> None:
        """docs/guide/security.md: whoever can write the spool can run commands as its owner."""
        for relative in (".", *FOLDERS, "config.json"):
            path = os.path.normpath(os.path.join(self.spool.root, relative))
            try:
                info = os.lstat(path)
            except FileNotFoundError:
                continue
            shown = os.path.relpath(path, self.spool.root)
            if info.st_uid != os.getuid():
                self._add("foreign-owner", shown, f"belongs to uid {info.st_uid}, not to you; "
                                                  f"chown it or run queuectl as its owner")
            mode = stat.S_IMODE(info.st_mode)
            if mode & 0o022 and not stat.S_ISLNK(info.st_mode):
                finding = self._add("shared-permissions", shown,
                                    f"mode {mode:04o}: group or others can write here and so run commands as you")
                if self.repair:
                    _chmod_nofollow(path, mode & ~0o022)
                    finding["repaired"] = True

    # -- files in the state folders -------------------------------------------

    def _entry(self, state: str, name: str) -> Any:
        """Judge one entry of pending/, failed/, completed/ or dead/; an invalid file is dealt with at once.

        Returns the state field of a valid job when it disagrees with the
        folder (a move cut before its rewrite), else None.
        """
        if name.startswith(".") or state == "dead" and name.endswith(INVALID):
            return None
        if state == "pending" and name.endswith(".tmp"):
            return None
        raw, unreadable = self.spool.read_raw(state, name)
        if raw is None and unreadable is None:
            return None  # gone meanwhile
        stem = name[: -len(SUFFIX)] if name.endswith(SUFFIX) else None
        if unreadable is not None or raw is None:
            self._invalid(state, name, unreadable or "unreadable")
            return None
        fields, reason = self._judge(raw, state, stem)
        if reason is None and fields.get("id") not in (None, stem):
            if state == "pending":
                return None  # a drop-in, which a worker renames after its id
            reason = f"its id {fields.get('id')!r} does not match its file name (a job is stored as <id>.json)"
        if reason is not None:
            self._invalid(state, name, reason)
            return None
        self.jobs.append((state, name))
        written = fields.get("state")
        if written == state or state == "pending" and written is None:
            return None  # (in pending/, a drop-in that a worker fills in)
        return written

    def _judge(self, raw: bytes, state: str, stem: str | None) -> tuple[Any, str | None]:
        """The parsed bytes (None if not JSON) and why they are not a job (None when they are one,
        or a dead-letter record)."""
        try:
            fields = loads(raw)
        except InvalidJob as exc:
            return None, str(exc)
        if state == "dead" and isinstance(fields, dict) and fields.get("invalid") is True:
            return fields, None  # describes kept bytes, which need not have a command
        try:
            build(fields, self.spool.config, stem=stem, state=state)
        except InvalidJob as exc:
            return fields, str(exc)
        return fields, None

    def _invalid(self, state: str, name: str, reason: str) -> None:
        finding = self._add("invalid-file", f"{state}/{name}", reason)
        if not self.repair:
            return
        path = os.path.join(self.spool.dir(state), name)
        if state == "pending":
            # Adoption is what a worker would do, and it waits for a file still being written.
            lifecycle.adopt(self.spool, name, complete=False)
            finding["repaired"] = not os.path.lexists(path)
            finding["detail"] += ("; moved to dead/ with its bytes kept" if finding["repaired"]
                                  else "; left alone: it may still be being written, try again in a few seconds")
            return
        try:
            regular = stat.S_ISREG(os.lstat(path).st_mode)
        except FileNotFoundError:
            return  # moved away since it was read: its new place is judged on its own
        if not regular:
            job_id = lifecycle.dead_letter(self.spool, None, reason, state=state, name=name)
        else:
            held = self._own(finding, state, name)
            if held is None:
                return
            with held:
                job_id = lifecycle.dead_letter(self.spool, held, reason)
        finding["repaired"] = True
        finding["detail"] += f"; moved to dead/{job_id}{INVALID} with its bytes kept"

    def _own(self, finding: dict, state: str, name: str):
        """The file's lock, or None with the finding saying another process holds it."""
        held = self.spool.lock(state, name)
        if held is None:
            finding["detail"] += "; busy (another process holds it), try again"
        return held

    def _state_mismatch(self, state: str, name: str, written: Any) -> None:
        finding = self._add("state-mismatch", f"{state}/{name}",
                            f"its state field says {written!r}; the folder is the truth")
        if not self.repair:
            return
        held = self._own(finding, state, name)
        if held is None:
            return
        with held:
            if isinstance(held.job, dict) and held.job.get("state") != state:
                held.job["state"] = state
                held.save()
        finding["repaired"] = True
        finding["detail"] += f"; rewritten as {state!r}"

    # -- one id in two folders -------------------------------------------------

    def _duplicates(self) -> None:
        holders: dict[str, list[str]] = {}
        for state in STATES:
            for name in self.spool.names(state):
                holders.setdefault(name, []).append(state)
        for name, states in sorted(holders.items()):
            if len(states) > 1:
                keep = min(states, key=lifecycle.KEEP_ORDER.index)
                for state in sorted(states, key=lifecycle.KEEP_ORDER.index)[1:]:
                    self._fold(name, state, keep)

    def _fold(self, name: str, state: str, keep: str) -> None:
        path, kept = os.path.join(self.spool.dir(state), name), os.path.join(self.spool.dir(keep), name)
        try:
            info = os.lstat(path)
            same_file = os.path.samestat(info, os.lstat(kept))
        except FileNotFoundError:
            return  # moved on meanwhile
        job_id = id_of(name)
        if same_file:
            detail = (f"the same file as {keep}/{name} under a second name (a move cut between link and "
                      f"unlink); {keep}/ is kept")
        else:
            detail = f"id {job_id!r} is also in {keep}/, which is kept"
        finding = self._add("duplicate-id", f"{state}/{name}", detail)
        if not self.repair:
            return
        if not stat.S_ISREG(info.st_mode):
            new = lifecycle.dead_letter(self.spool, None, f"duplicate id {job_id!r}", state=state, name=name)
            finding.update(repaired=True, detail=detail + f"; moved to dead/{new}{INVALID}")
            return
        held = self._own(finding, state, name)
        if held is None:
            return
        with held:
            if same_file:
                # Decided again under the lock: the kept name may have moved on meanwhile,
                # and then this name is the job's only one.
                if lifecycle.finish_cut_move(self.spool, held):
                    fsops.fsync_dir(self.spool.dir(state))
                    finding["detail"] += "; the extra name is removed, no bytes are"
            else:
                new = lifecycle.dead_letter(self.spool, held, f"duplicate id {job_id!r}: {keep}/ holds the copy kept")
                finding["detail"] += f"; moved to dead/{new}{INVALID} with its bytes kept"
        finding["repaired"] = True

    # -- dead/<id>.invalid without its record -----------------------------------

    def _dead_without_record(self) -> None:
        dead = self.spool.dir("dead")
        for name in sorted(os.listdir(dead)):
            stem = name[: -len(INVALID)]
            if not name.endswith(INVALID) or name.startswith(".") or os.path.lexists(os.path.join(dead, stem + SUFFIX)):
                continue
            raw, unreadable = self.spool.read_raw("dead", name)
            if raw is None and unreadable is None:
                continue
            fields, reason = (None, unreadable) if unreadable or raw is None else self._judge(raw, "dead", None)
            reason = reason or "its bytes are a valid job: set aside as a duplicate id, or its record was lost"
            finding = self._add("missing-dead-record", f"dead/{name}",
                                f"kept bytes without dead/{stem}{SUFFIX} to say why: {reason}")
            if not self.repair:
                continue
            # A job put into a folder by hand has no marker: a look at the folders too (a new id is always safe).
            job_id = stem if is_valid_id(stem) and self.spool.find(stem) is None else new_id()
            while not lifecycle.write_dead_record(self.spool, job_id, reason, fields, name, os.path.join(dead, name)):
                job_id = new_id()  # the id is someone else's now: the bytes take a new one
            if job_id != stem:
                fsops.rename_noreplace(os.path.join(dead, name), os.path.join(dead, job_id + INVALID))
            finding["repaired"] = True
            finding["detail"] += f"; record dead/{job_id}{SUFFIX} written"



def _in_use(path: str, info: os.stat_result) -> bool:
    """Whether a live process still has this temporary file: flocked (a rewrite) or open for writing."""
    if not stat.S_ISREG(info.st_mode):
        return False
    try:
        fd = fsops.open_nofollow(path)
    except FileNotFoundError:
        return True
    try:
        return not fsops.lock_fd(fd) or fsops.open_for_writing(info)
    finally:
        os.close(fd)


def _chmod_nofollow(path: str, mode: int) -> None:
    """chmod through a descriptor opened without following symlinks: a name swapped meanwhile is not changed."""
    fd = fsops.open_nofollow(path)
    try:
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
