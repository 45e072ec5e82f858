"""One worker process: the claim -> run -> settle loop.

The worker holds `workers/<name>.lock` for its life and keeps the order of
due jobs in memory (order.DueIndex). Each time round its loop it reads what
changed in pending/, failed/ and workers/ (watch.FolderWatch: files landing
or leaving, stop requests), claims the best due job, runs it and settles
it. Idle, it sleeps until a change, the next scheduled time, the next
recovery sweep or the next safety scan: no busy polling. Signals: the
first SIGTERM/SIGINT finishes the running job and exits 0; a second one
(or `worker stop --now`) stops the job too, which goes back to pending/
without using a retry.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import os
import signal
import sys
import time
from typing import Callable, Iterator

from filelock import FileLock, Timeout

from . import fstype, lifecycle, registry, runner
from .errors import InvalidJob, SpoolError
from .fsops import open_nofollow, read_fd
from .lease import Lease, Liveness
from .job import MAX_JOB_BYTES, due_time, loads
from .order import DueIndex
from .spool import SUFFIX, Spool, file_name, id_of
from .watch import RESCAN, FolderWatch

WATCHED = ("pending", "failed", "workers")
DRAIN_POLL = 0.2  # seconds between looks at processing/ while `--until-empty` waits for jobs there
# Errors a network file system returns for a moment (README.md "Running on
# several hosts"): the step is skipped and tried again, the worker stays.
TRANSIENT = (errno.ESTALE, errno.EINTR, errno.ENOENT, errno.EEXIST, errno.EAGAIN, errno.ETIMEDOUT)
TRANSIENT_PAUSE = 0.2
SETTLE_ATTEMPTS = 5
LEASE_LOOK = 1.0
QUICK_SWEEPS = 4


def _transient(exc: OSError) -> bool:
    return exc.errno in TRANSIENT


@contextlib.contextmanager
def stop_signals(handler: Callable) -> Iterator[None]:
    """SIGTERM and SIGINT go to `handler` inside the block, and to whatever took them before after it:
    `queuectl demo` runs workers several times in one process."""
    previous = {signum: signal.signal(signum, handler) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for signum, handler_before in previous.items():
            signal.signal(signum, handler_before)


class Worker:
    def __init__(self, spool: Spool, *, burst: bool = False, until_empty: bool = False, name: str | None = None):
        self.spool = spool
        # burst: exit once no job is due now. until_empty: exit once pending/,
        # failed/ and processing/ hold no job (scheduled jobs and waiting retries
        # keep it alive) - see README "Commands".
        self.burst = burst or until_empty
        self.until_empty = until_empty
        self.name = name or registry.new_name()
        self.started = time.time()
        self.index = DueIndex()
        self.watch: FolderWatch | None = None
        self.commit: lifecycle.GroupCommit | None = None
        self.stopping = False
        self.stop_now = False
        self.rechecks: dict[str, float] = {}  # dropped-in files that may still be being written
        self.mode = "local"  # or "shared": other hosts use the spool too (fstype.mode)
        self.judge: Liveness | None = None
        self.scan_soon = False  # a listing failed with a passing error: list again shortly
        self.expired_lease = False  # a lease looked at just now has expired

    # -- life ----------------------------------------------------------------

    def run(self) -> int:
        lock = FileLock(registry.lock_path(self.spool, self.name), mode=0o600)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise SpoolError(f"worker name {self.name} is taken by a live worker") from None
        lease: Lease | None = None
        try:
            self.mode = fstype.mode(self.spool)
            self.judge = Liveness(self.spool, mode=self.mode, observing=True)
            self.spool.shared = self.mode == "shared"
            # Every worker beats a lease, also in local mode: a host that sees the
            # spool as local (an NFS server's own disk) may still share it.
            lease = self.spool.lease = Lease(self.spool, self.name, self.spool.config["lease_timeout"])
            lease.start()
            self.watch = FolderWatch({folder: self.spool.dir(folder) for folder in WATCHED},
                                     poll=self.spool.shared)
            # On a shared spool each settle is made at once, where a passing
            # network error can be retried from the path (`_settle`).
            self.commit = None if self.spool.shared else lifecycle.GroupCommit(self.spool)
            with stop_signals(self._on_signal):
                self._write_record()
                self._transient_ok(lifecycle.recover, self.spool, self.judge)
                self.scan_soon = not self._transient_ok(self._scan)
                self._loop()
                self._close_commit()
        except OSError as exc:
            # A full or read-only disk: stop, in one line. A job this worker held is
            # in processing/ unlocked, so the next worker's recovery moves it on.
            raise SpoolError(f"worker {self.name} stopped: cannot write to the spool {self.spool.root}: "
                             f"{exc.strerror or exc}") from None
        finally:
            self._close_commit()
            if self.watch is not None:
                self.watch.close()
            if lease is not None:
                lease.stop()
                self.spool.lease = None
            registry.remove_record(self.spool, self.name)
            lock.release()
        return 0

    def _close_commit(self) -> None:
        """Every settle this worker made reaches the disk before it gives up its lock."""
        commit, self.commit = self.commit, None
        if commit is not None:
            commit.close()

    def _on_signal(self, signum, frame) -> None:
        if self.stopping:
            self.stop_now = True
        self.stopping = True
        self.watch.wake()

    def check_stop_request(self) -> None:
        """Obey `worker stop` requests made after this worker started."""
        request = registry.stop_request(self.spool)
        if request and request.get("requested_at", 0) >= self.started:
            self.stopping = True
            self.stop_now = self.stop_now or bool(request.get("now"))

    def _write_record(self) -> None:
        """Written once: the job a worker runs is read from processing/, not from here."""
        registry.write_record(self.spool, self.name, {
            "pid": os.getpid(), "host": os.uname().nodename, "started": self.started, "mode": self.mode})

    # -- the loop ------------------------------------------------------------

    def _loop(self) -> None:
        settings = self.spool.config
        now = time.time()
        next_recovery = now + settings["recovery_interval"]
        # Shared spools: other workers' leases are read every LEASE_LOOK seconds,
        # so a death is seen within that of lease_timeout, and swept at once.
        next_lease_look = now + LEASE_LOOK if self.spool.shared else None
        quick_sweeps = 0
        next_scan = now + settings["scan_interval"]
        while not self.stopping:
            try:
                self._apply_events()
            except OSError as exc:
                if not _transient(exc):
                    raise
                self._note_transient(exc)
                self.watch.wait(TRANSIENT_PAUSE)
                continue
            now = time.time()
            if next_lease_look is not None and now >= next_lease_look:
                next_lease_look = now + LEASE_LOOK
                if self._transient_ok(self._look_at_leases) and self.expired_lease:
                    # A lease just expired: sweep now, not at the next interval, and
                    # again each second for a few seconds, since a dead client's
                    # flocks may outlive it a moment on the server (GlusterFS).
                    next_recovery, quick_sweeps = now, QUICK_SWEEPS
            if now >= next_recovery:
                self._transient_ok(lifecycle.recover, self.spool, self.judge)
                quick_sweeps = max(0, quick_sweeps - 1)
                next_recovery = now + (LEASE_LOOK if quick_sweeps else self.spool.config["recovery_interval"])
            if now >= next_scan or self.scan_soon:
                self.check_stop_request()
                self.scan_soon = not self._transient_ok(self._scan)  # a failed listing is tried again soon
                next_scan = now + self.spool.config["scan_interval"]
            self._recheck_dropins(now)
            due = self.index.pop_due(now)
            if due is not None:
                if self.spool.shared:
                    # The job left the index: a listing soon brings it back if it is still due.
                    self.scan_soon = self.scan_soon or not self._transient_ok(self._process, *due)
                else:
                    self._process(*due)  # alone on one disk an error here is no passing one: stop (recovery follows)
                continue
            running: list[str] = []
            if self.burst and not self.rechecks and not self._apply_events():
                if self.spool.shared and self._transient_ok(self._scan):
                    # Polling looks only every POLL_INTERVAL: list before deciding to exit.
                    next_due = self.index.next_due()
                    if next_due is not None and next_due <= time.time():
                        continue
                # The index holds every job of pending/ and failed/; one running
                # (elsewhere, or being settled by this worker's commit thread) may
                # still fail and come back to failed/.
                running = self.spool.names("processing") if self.until_empty else []
                if not self.until_empty or not (len(self.index) or running):
                    return
            # A job leaving processing/ for completed/ or dead/ wakes nobody: look again soon.
            drain_poll = time.time() + DRAIN_POLL if running else None
            wake_at = min(t for t in (next_recovery, now + TRANSIENT_PAUSE if self.scan_soon else next_scan,
                                      self.index.next_due(), drain_poll, next_lease_look,
                                      min(self.rechecks.values(), default=None)) if t is not None)
            self.watch.wait(wake_at - time.time())

    def _look_at_leases(self) -> None:
        assert self.judge is not None  # set by run()
        self.expired_lease = self.judge.look_at_leases(skip=self.name)

    def _transient_ok(self, step, *args) -> bool:
        """Run one step of the loop; a network file system's passing error (ESTALE...) only skips it.

        The step is tried again from the paths next time round, so the
        worker never exits and restarts over it.
        """
        try:
            step(*args)
        except OSError as exc:
            if not _transient(exc):
                raise
            self._note_transient(exc)
            return False
        return True

    def _note_transient(self, exc: OSError) -> None:
        print(f"queuectl: worker {self.name}: {exc.strerror or exc} ({exc.filename or 'spool'}); "
              f"trying again", file=sys.stderr)

    def _apply_events(self) -> bool:
        """Bring the index and the stop flags up to date with what changed; False if nothing did."""
        changes = self.watch.changes()
        for kind, folder, name in changes:
            if (kind, folder, name) == RESCAN:
                self._scan()
            elif folder == "workers":
                if name == registry.STOP_FILE and kind != "gone":
                    self.check_stop_request()
            elif kind == "gone":
                # A name can leave and come back (a stopped job returns to pending/)
                # within one batch of changes: the folder decides. (A job this worker
                # claimed has left the index already: no need to look.)
                known = id_of(name) in self.index or name in self.rechecks
                if known and not os.path.lexists(os.path.join(self.spool.dir(folder), name)):
                    self.index.discard(id_of(name), folder)
                    self.rechecks.pop(name, None)
            else:
                self._consider(folder, name, complete=kind != "created")
        return bool(changes)

    def _scan(self) -> None:
        """Bring the index in line with the folders (start-up and the slow safety scan).

        Only files the index does not know are read, so a rescan of a big
        queue costs two directory listings.
        """
        listings = {folder: os.listdir(self.spool.dir(folder)) for folder in ("pending", "failed")}
        # Forget vanished jobs first: a drop-in adopted below gets a name the listing does not have.
        listed = {id_of(name) for names in listings.values() for name in names if name.endswith(SUFFIX)}
        for job_id in self.index.ids() - listed:
            self.index.discard(job_id)
        for folder, names in listings.items():
            for name in names:
                if not name.endswith(SUFFIX) or id_of(name) not in self.index:
                    self._consider(folder, name, complete=False)

    def _consider(self, folder: str, name: str, *, complete: bool) -> None:
        """Index a job file, or hand a dropped-in file to adoption."""
        if name.startswith(".") or name.endswith(".tmp"):
            return
        job = _peek(os.path.join(self.spool.dir(folder), name)) if name.endswith(SUFFIX) else None
        if job is False:
            self.index.discard(id_of(name), folder)
            return
        if lifecycle.is_canonical(job, folder, name):
            try:
                priority = int(job.get("priority") or 0)
            except (TypeError, ValueError):
                priority = 0
            self.index.add(folder, job["id"], priority, due_time(job), time.time())
            self.rechecks.pop(name, None)
            return
        if folder != "pending":
            return  # only pending/ takes drop-ins; doctor reports strays elsewhere
        target = lifecycle.adopt(self.spool, name, complete=complete)
        if target is not None:
            self.rechecks.pop(name, None)
            self._consider("pending", target, complete=True)
        elif os.path.lexists(os.path.join(self.spool.dir("pending"), name)):
            self.rechecks[name] = time.time() + lifecycle.DROP_GRACE

    def _recheck_dropins(self, now: float) -> None:
        for name, when in list(self.rechecks.items()):
            if when <= now:
                del self.rechecks[name]
                self._consider("pending", name, complete=False)

    # -- one job -------------------------------------------------------------

    def _process(self, state: str, job_id: str) -> None:
        now = time.time()
        held = lifecycle.claim(self.spool, state, job_id, self.name, now)
        if held is None:
            self._consider(state, file_name(job_id), complete=True)  # not due after all (re-read its time), or gone
            return
        job = held.job
        settings = self.spool.config
        timeout = job.get("timeout")
        timeout = (timeout if timeout is not None else settings["timeout"]) or None
        try:
            outcome = runner.run(
                job, log_path=self.spool.log_path(job["id"]), worker=self.name, spool_root=self.spool.root,
                timeout=timeout, kill_grace=settings["kill_grace"], pass_env=settings["pass_env"],
                tail_lines=settings["log_tail_lines"], interruption=self._interruption(held))
        except BaseException:
            held.release()
            raise
        if self._settle(held, outcome, timeout) == "lost":  # owns `held` from here
            print(f"queuectl: worker {self.name}: job {job['id']} was recovered by another host while "
                  f"this worker's lease had lapsed (paused or cut off); this run's outcome is dropped",
                  file=sys.stderr)
            return
        registry.clear_cancel(self.spool, job["id"])

    def _settle(self, held, outcome, timeout) -> str:
        """lifecycle.settle (which owns `held`); on a shared spool a passing network error is retried.

        The retry starts again from the path: the file is locked anew and,
        if it is still this worker's run, settled from the job as claimed
        (so a try cut after its rewrite does not record the attempt twice).
        """
        if not self.spool.shared:
            return lifecycle.settle(self.spool, held, outcome, timeout, self.commit)
        claimed = copy.deepcopy(held.job)
        for attempt in range(SETTLE_ATTEMPTS):
            try:
                return lifecycle.settle(self.spool, held, outcome, timeout)
            except OSError as exc:
                if not _transient(exc) or attempt == SETTLE_ATTEMPTS - 1:
                    raise
                self._note_transient(exc)
                time.sleep(TRANSIENT_PAUSE)
            held = self.spool.lock("processing", file_name(claimed["id"]))
            if held is None or not isinstance(held.job, dict) or held.job.get("worker") != self.name:
                if held is not None:
                    held.release()
                # Settled after all (the error came after the move), or not ours any more.
                return "lost" if self.spool.find(claimed["id"]) in (None, "processing") else "settled"
            held.job = copy.deepcopy(claimed)
        return "lost"

    def _interruption(self, held):
        job_id = held.job["id"]

        def ask() -> str | None:
            try:
                self._apply_events()  # a `worker stop --now` arrives as a change in workers/
            except OSError as exc:
                if not _transient(exc):
                    raise
            if self.stop_now:
                return "stop"
            if registry.cancel_requested(self.spool, job_id):
                return "cancel"
            if not lifecycle.still_owned(self.spool, held):
                return "lost"  # this worker was paused past its lease and the job recovered elsewhere
            return None
        return ask


def _peek(path: str):
    """The JSON in a file; None if it is not a complete job object yet; False if it is gone."""
    try:
        fd = open_nofollow(path)
    except FileNotFoundError:
        return False
    except OSError:
        return None  # a symlink or something stranger: adoption decides
    try:
        data = read_fd(fd, MAX_JOB_BYTES)
    except OSError:
        return None
    finally:
        os.close(fd)
    try:
        return loads(data)
    except InvalidJob:
        return None
