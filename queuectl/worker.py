"""One worker process: the claim -> run -> settle loop.

The worker holds `workers/<name>.lock` for its life and keeps the order of
due jobs in memory (order.DueIndex). Each time round its loop it reads what
changed in pending/, failed/ and workers/ (watch.FolderWatch: files landing
or leaving, stop requests), claims the best due job, runs it and settles
it. Idle, it sleeps until a change, the next scheduled time, the next
recovery sweep or the next safety scan: no busy polling. Recovery
(`lifecycle.recover`) runs every `recovery_interval` whatever the worker
does: between jobs from the loop, during a job from the runner's
`interruption` call (every 0.5 s, in this same thread; the sweep skips
the worker's own job because its flock is held through another open file
description).

Signals: the first SIGTERM, SIGINT or SIGHUP finishes the running job and
exits 0; a second one, SIGQUIT, or `worker stop --now` stops the job too,
which goes back to pending/ without using a retry. A worker forked by a
supervisor also stops as for SIGTERM when the supervisor is gone, however
it died: it watches the read end of a pipe whose write end only the
supervisor holds (see supervisor.py).
"""

from __future__ import annotations

import contextlib
import copy
import errno
import os
import select
import signal
import sys
import time
from collections.abc import Callable, Iterator

from . import fsops, fstype, hooks, lifecycle, registry, retention, runner, schedules, workflow
from .commit import FlushPace, GroupCommit
from .errors import InvalidJob, SpoolError
from .events import EventLog
from .job import MAX_JOB_BYTES, due_time, loads
from .lease import Lease, Liveness
from .order import DueIndex
from .spool import SUFFIX, LockedJob, Spool, file_name, id_of
from .watch import RESCAN, FolderWatch

# completed/ and dead/ wake jobs waiting for a dependency; groups/ and the spool's
# top (its `paused` file) bring limits and pauses (workflow.Gate).
WATCHED = ("pending", "failed", "workers", "completed", "dead", "schedules")
DRAIN_POLL = 0.2  # seconds between looks at processing/ while `--until-empty` waits for jobs there
# Errors a network file system returns for a moment (README.md "Running on
# several hosts"): the step is skipped and tried again, the worker stays.
TRANSIENT = (errno.ESTALE, errno.EINTR, errno.ENOENT, errno.EEXIST, errno.EAGAIN, errno.ETIMEDOUT)
TRANSIENT_PAUSE = 0.2
SETTLE_ATTEMPTS = 5
# Shared spools: other workers' leases are read every LEASE_LOOK seconds, so a
# death is seen within that of lease_timeout; then QUICK_SWEEPS sweeps a second
# apart, since a dead client's flocks may outlive it a moment (GlusterFS).
LEASE_LOOK = 1.0
QUICK_SWEEPS = 4


def _transient(exc: OSError) -> bool:
    return exc.errno in TRANSIENT
# What a terminal or an init system sends to end a process: a graceful stop
# (finish the running job), except SIGQUIT (Ctrl-\\), which stops it now.
GRACEFUL_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
STOP_SIGNALS = (*GRACEFUL_SIGNALS, signal.SIGQUIT)


@contextlib.contextmanager
def stop_signals(handler: Callable) -> Iterator[None]:
    """STOP_SIGNALS go to `handler` inside the block, and to whatever took them before after it:
    `queuectl demo` runs workers several times in one process.

    They are unblocked inside: a supervisor forks its children with them
    blocked, so one sent while a child starts waits for its handler instead
    of killing it. On the way out they are blocked, one that arrived
    meanwhile is dropped (it asked the block's owner to stop, which it is
    doing), the handlers are put back, then the mask is restored (a child
    exits with them blocked).
    """
    previous = {signum: signal.signal(signum, handler) for signum in STOP_SIGNALS}
    mask = signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        while signal.sigtimedwait(STOP_SIGNALS, 0) is not None:
            pass
        for signum, handler_before in previous.items():
            signal.signal(signum, handler_before)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


class Worker:
    """One worker; `log` None is quiet; `supervisor_fd` is the read end of the supervisor's pipe, if any;
    `announce` is called once the worker holds its lock and its record is written."""

    def __init__(self, spool: Spool, *, burst: bool = False, until_empty: bool = False, name: str | None = None,
                 log: EventLog | None = None, supervisor_fd: int | None = None,
                 announce: Callable[[], None] | None = None):
        self.spool = spool
        # burst: exit once no job is due now. until_empty: exit once pending/,
        # failed/ and processing/ hold no job (scheduled jobs and waiting retries
        # keep it alive) - see README "Commands".
        self.burst = burst or until_empty
        self.until_empty = until_empty
        self.name = name or registry.new_name()
        self.log = log
        self.supervisor_fd = supervisor_fd
        self.announce = announce
        self.started = time.time()
        self.next_recovery = self.started
        self.index = DueIndex()
        self.watch: FolderWatch | None = None
        self.commit: GroupCommit | None = None  # started by the first slow settle (_settle)
        self.pace = FlushPace()
        self.base_env: tuple[tuple[str, ...], dict[str, str]] | None = None  # see _base_environment
        self.stopping = False
        self.stop_now = False
        self.rechecks: dict[str, float] = {}  # dropped-in files that may still be being written
        self.next_schedule = 0.0  # when a schedule's next slot is due (schedules.sweep)
        self.pruner = retention.Pruner(spool)
        self.gate = workflow.Gate(spool, self._readd, self.name)  # dependencies, groups, pauses
        self.mode = "local"  # or "shared": other hosts use the spool too (fstype.mode)
        self.judge: Liveness | None = None
        self.scan_soon = False  # a listing failed with a passing error: list again shortly
        self.next_lease_look: float | None = None
        self.quick_sweeps = 0
        self.expired_lease = False  # a lease looked at just now has expired

    # -- life ----------------------------------------------------------------

    def run(self) -> int:
        lock = registry.take_lock(self.spool, self.name)
        # Taken until the clean-up is done: a stop signal that arrives while the
        # worker leaves is one more request to stop, not a crash or a KeyboardInterrupt.
        lease: Lease | None = None
        with stop_signals(self._on_signal):
            try:
                self.mode = fstype.mode(self.spool)
                self.judge = Liveness(self.spool, mode=self.mode, observing=True)
                self.spool.shared = self.mode == "shared"
                folders = {folder: self.spool.dir(folder) for folder in WATCHED}
                folders.update(groups=workflow.groups_dir(self.spool), spool=self.spool.root)
                self.watch = FolderWatch(folders, poll=self.spool.shared)
                # The lease's thread starts with the stop signals blocked and
                # keeps them so: they reach this thread, which runs the handler and wakes its select.
                mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
                try:
                    # Every worker beats a lease, also in local mode: a host that sees the
                    # spool as local (an NFS server's own disk) may still share it.
                    lease = self.spool.lease = Lease(self.spool, self.name, self.spool.config["lease_timeout"])
                    lease.start()
                finally:
                    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
                if self.spool.shared:
                    self.next_lease_look = time.time() + LEASE_LOOK
                self._write_record()
                if self.announce is not None:
                    self.announce()
                self._recover_if_due(time.time())
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
                self.gate.close()
                watch, self.watch = self.watch, None  # the handler no longer wakes it
                if watch is not None:
                    watch.close()
                if lease is not None:
                    lease.stop()
                    self.spool.lease = None
                registry.remove_record(self.spool, self.name)
                os.close(lock)
        return 0

    def _group_commit(self) -> GroupCommit:
        if self.commit is None:
            # Its thread starts with the stop signals blocked and keeps them so: they reach
            # this thread, which runs the handler and wakes its select.
            mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
            try:
                self.commit = GroupCommit(self.spool)
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        return self.commit

    def _close_commit(self) -> None:
        """Every settle this worker made reaches the disk before it gives up its lock."""
        commit, self.commit = self.commit, None
        if commit is not None:
            commit.close()

    def _on_signal(self, signum, frame) -> None:
        now = self.stopping or signum == signal.SIGQUIT
        if self.log is not None and not self.stop_now:
            what = "stopping the running job" if now else "finishing the running job"
            self.log.stopping(self.name, f"{signal.Signals(signum).name}: {what}, then exiting")
        self.stop_now = self.stop_now or now
        self.stopping = True
        if self.watch is not None:
            self.watch.wake()

    def _check_supervisor(self) -> None:
        """Stop as for SIGTERM once the supervisor is gone: its pipe then reads as end-of-file."""
        if self.supervisor_fd is None or not select.select([self.supervisor_fd], [], [], 0)[0]:
            return
        self.supervisor_fd = None  # noticed once; the worker is on its way out
        self.stopping = True
        if self.log is not None:
            self.log.stopping(self.name, "the supervisor is gone: finishing the running job, then exiting")

    def _recover_if_due(self, now: float) -> None:
        if self.next_lease_look is not None and now >= self.next_lease_look:
            self.next_lease_look = now + LEASE_LOOK
            if self._transient_ok(self._look_at_leases) and self.expired_lease:
                # A lease just expired: sweep now, not at the next interval.
                self.next_recovery, self.quick_sweeps = now, QUICK_SWEEPS
        if now >= self.next_recovery:
            self._transient_ok(lifecycle.recover, self.spool, self.judge)
            self.quick_sweeps = max(0, self.quick_sweeps - 1)
            self.next_recovery = time.time() + (LEASE_LOOK if self.quick_sweeps
                                                else self.spool.config["recovery_interval"])
            self._transient_ok(self.pruner.sweep, now)  # a bounded batch (retention.py)
            self.next_schedule = min(self.next_schedule, now)  # schedules changed on other hosts

    def _schedules_if_due(self, now: float) -> None:
        """Enqueue the schedules' due slots (schedules.py); also asked during a run, like recovery."""
        if now >= self.next_schedule:
            upcoming = schedules.sweep(self.spool, self.name, now)
            self.next_schedule = upcoming if upcoming is not None else float("inf")

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
        next_scan = time.time() + self.spool.config["scan_interval"]
        while True:
            self._check_supervisor()
            if self.commit is not None:
                self.commit.advance()
            if self.stopping:
                return
            try:
                self._apply_events()
            except OSError as exc:
                if not _transient(exc):
                    raise
                self._note_transient(exc)
                assert self.watch is not None  # set by run() before the loop
                self.watch.wait(TRANSIENT_PAUSE)
                continue
            now = time.time()
            self._recover_if_due(now)
            self._schedules_if_due(now)
            if now >= next_scan or self.scan_soon:
                self.check_stop_request()
                self.scan_soon = not self._transient_ok(self._scan)  # a failed listing is tried again soon
                next_scan = now + self.spool.config["scan_interval"]
            self._recheck_dropins(now)
            self.gate.unpark(now)
            # A paused spool starts nothing: one stat, just before the claim.
            due = None if self.gate.spool_paused() else self.index.pop_due(now)
            if due is not None:
                if self.spool.shared:
                    # The job left the index: a listing soon brings it back if it is still due.
                    self.scan_soon = self.scan_soon or not self._transient_ok(self._process, *due)
                else:
                    self._process(*due)  # alone on one disk an error here is no passing one: stop (recovery follows)
                continue
            running: list[str] = []
            if self.burst and not self.rechecks and not self._apply_events() and not self.gate.may_unblock(now):
                if self.spool.shared and self._transient_ok(self._scan):
                    # Polling looks only every POLL_INTERVAL: list before deciding to exit.
                    next_due = self.index.next_due()
                    if next_due is not None and next_due <= time.time():
                        continue
                # The index holds every job of pending/ and failed/ (the gate those held
                # back); one running (elsewhere, or being settled by this worker's commit
                # thread) may still fail and come back to failed/.
                running = self.spool.names("processing") if self.until_empty else []
                if not self.until_empty or not (len(self.index) or self.gate.holding() or running):
                    return
            # A job leaving processing/ for completed/ or dead/ wakes nobody: look again soon.
            drain_poll = time.time() + DRAIN_POLL if running else None
            wake_at = min(t for t in (self.next_recovery, now + TRANSIENT_PAUSE if self.scan_soon else next_scan,
                                      self.index.next_due(), drain_poll, self.next_lease_look, self.next_schedule,
                                      min(self.rechecks.values(), default=None), self.gate.next_wake(now))
                          if t is not None)
            assert self.watch is not None  # set by run() before the loop
            also: tuple[int, ...] = () if self.supervisor_fd is None else (self.supervisor_fd,)
            if self.commit is not None:
                also += (self.commit.wake_fd,)  # renames to make for the group commit
            self.watch.wait(wake_at - time.time(), also=also)

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
        assert self.watch is not None  # set by run() before the loop
        changes = self.watch.changes()
        for kind, folder, name in changes:
            if (kind, folder, name) == RESCAN:
                self._scan()
            elif folder == "schedules":
                self.next_schedule = 0.0  # a schedule added, changed or removed here
            elif folder == "workers":
                if name == registry.STOP_FILE and kind != "gone":
                    self.check_stop_request()
            elif folder not in ("pending", "failed"):
                self.gate.changed(kind, folder, name)
            elif kind == "gone":
                # A name can leave and come back (a stopped job returns to pending/)
                # within one batch of changes: the folder decides. (A job this worker
                # claimed has left the index already: no need to look.)
                known = id_of(name) in self.index or name in self.rechecks or id_of(name) in self.gate
                if known and not os.path.lexists(os.path.join(self.spool.dir(folder), name)):
                    self.index.discard(id_of(name), folder)
                    self.rechecks.pop(name, None)
                    self.gate.forget(id_of(name))
            else:
                self.gate.changed(kind, folder, name)
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
        for job_id in self.gate.names() - listed:
            self.gate.forget(job_id)
        for folder, names in listings.items():
            for name in names:
                if not name.endswith(SUFFIX) or (id_of(name) not in self.index and id_of(name) not in self.gate):
                    self._consider(folder, name, complete=False)
        self.gate.recheck()

    def _consider(self, folder: str, name: str, *, complete: bool) -> None:
        """Index a job file, or hand a dropped-in file to adoption."""
        if name.startswith(".") or name.endswith(".tmp"):
            return
        job = _peek(os.path.join(self.spool.dir(folder), name)) if name.endswith(SUFFIX) else None
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
            if self.gate.hold(folder, job["id"], job, priority, due):
                self.index.discard(job["id"])  # waits for a dependency, or went to dead/
                return
            self.index.add(folder, job["id"], priority, due, time.time())
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

    def _readd(self, folder: str, job_id: str, priority: int, due: float) -> None:
        """A job the gate held back may start now (its dependencies completed, its group has room)."""
        self.index.add(folder, job_id, priority, due, time.time())

    def _process(self, state: str, job_id: str) -> None:
        slot = self.gate.admit(state, job_id, self.name)
        if slot is None:
            return  # its group is full or paused: parked until a slot frees
        now = time.time()
        try:
            with self.spool.held_config() as settings:  # one reading for the claim, one for the settle
                held = lifecycle.claim(self.spool, state, job_id, self.name, now)
        except BaseException:
            slot.release()  # a passing network error on a shared spool: the worker goes on, the slot must too
            raise
        if held is None:
            slot.release()
            self._consider(state, file_name(job_id), complete=True)  # not due after all (re-read its time), or gone
            return
        job = held.job
        timeout = job.get("timeout")
        timeout = (timeout if timeout is not None else settings["timeout"]) or None
        attempt = job["attempts"]
        if self.log is not None:
            self.log.job_started(self.name, job)
        try:
            outcome = runner.run(
                job, log_path=self.spool.log_path(job["id"]), worker=self.name, spool_root=self.spool.root,
                timeout=timeout, kill_grace=settings["kill_grace"], pass_env=settings["pass_env"],
                tail_lines=settings["log_tail_lines"], interruption=self._interruption(held),
                base_env=self._base_environment(settings["pass_env"]))
            retention.cap_log(self.spool.log_path(job["id"]), settings["max_log_bytes"], self.spool.dir("tmp"))
        except BaseException:
            held.release()
            raise
        finally:
            slot.release()  # the command has ended: the group may start another
        with self.spool.held_config() as settings:
            state, held = self._settle(held, outcome, timeout, settings["durable"])  # owns `held` from here
        if state == "lost":
            print(f"queuectl: worker {self.name}: job {job['id']} was recovered by another host while "
                  f"this worker's lease had lapsed (paused or cut off); this run's outcome is dropped",
                  file=sys.stderr)
            return
        if self.log is not None:
            # Now, not when the group commit has moved it: a worker's lines stay in
            # order (this job's end before the next one's start).
            self.log.job_ended(self.name, job, attempt, outcome, state)
        # An outcome with a completion hook is settled at once and stays locked (lifecycle.settle);
        # any other is settled, or the group commit's now, and `held` is not looked at again.
        if hooks.planned(held.job, state) and held.fd >= 0:
            try:
                hooks.run(self.spool, held, worker=self.name, timeout=settings["hook_timeout"],
                          kill_grace=settings["kill_grace"], pass_env=settings["pass_env"],
                          interruption=self._interruption(held, hook=True))
                retention.cap_log(self.spool.log_path(job["id"]), settings["max_log_bytes"], self.spool.dir("tmp"))
            finally:
                held.release()
        registry.clear_cancel(self.spool, job["id"])

    def _base_environment(self, pass_env: list[str]) -> dict[str, str]:
        """What every job takes from the worker's environment, which is fixed when the worker
        starts; made again only when `pass_env` changes."""
        if self.base_env is None or self.base_env[0] != tuple(pass_env):
            self.base_env = (tuple(pass_env), runner.base_environment(pass_env))
        return self.base_env[1]

    def _settle(self, held, outcome, timeout, durable: bool) -> tuple[str, LockedJob]:
        """lifecycle.settle (which owns `held`); on a shared spool a passing network error is retried.

        Returns the state and the LockedJob the settle ended with: after a
        retry that is a new one, still locked when the job has a completion
        hook for the caller to run.

        On one host a settle is made at once while this disk's flushes are
        quick, else through the group commit (lifecycle.FlushPace). On a
        shared spool each settle is made at once, and the retry starts again
        from the path: the file is locked anew and, if it is still this
        worker's run, settled from the job as claimed (so a try cut after its
        rewrite does not record the attempt twice).
        """
        if not self.spool.shared:
            if durable and not self.pace.inline():
                return lifecycle.settle(self.spool, held, outcome, timeout, self._group_commit()), held
            flushed = fsops.flush_seconds()
            state = lifecycle.settle(self.spool, held, outcome, timeout)
            if durable:
                self.pace.observe(fsops.flush_seconds() - flushed)
            return state, held
        claimed = copy.deepcopy(held.job)
        for attempt in range(SETTLE_ATTEMPTS):
            try:
                return lifecycle.settle(self.spool, held, outcome, timeout), held
            except OSError as exc:
                if not _transient(exc) or attempt == SETTLE_ATTEMPTS - 1:
                    raise
                self._note_transient(exc)
                time.sleep(TRANSIENT_PAUSE)
            again = self.spool.lock("processing", file_name(claimed["id"]))
            if again is None or not isinstance(again.job, dict) or again.job.get("worker") != self.name:
                if again is not None:
                    again.release()
                # Settled after all (the error came after the move), or not ours any more.
                return ("lost" if self.spool.find(claimed["id"]) in (None, "processing") else "settled"), held
            again.job = copy.deepcopy(claimed)
            held = again
        return "lost", held

    def _interruption(self, held, *, hook: bool = False):
        """What the runner asks every wait_step while a job (or, `hook`, its completion hook) runs."""
        job_id = held.job["id"]

        def ask() -> str | None:
            # The loop's duties that cannot wait for the run to end: recovery above all
            # (README "Recovery": on schedule even while every worker is busy).
            self._check_supervisor()
            if self.commit is not None:
                self.commit.advance()  # the settles of the jobs before this one
            self._recover_if_due(time.time())
            self._schedules_if_due(time.time())
            try:
                self._apply_events()  # a `worker stop --now` arrives as a change in workers/
            except OSError as exc:
                if not _transient(exc):
                    raise
            if self.stop_now:
                return "stop"
            if hook:
                return None  # the job is settled: a cancel or another host's recovery no longer reaches it
            if registry.cancel_requested(self.spool, job_id):
                return "cancel"
            if not lifecycle.still_owned(self.spool, held):
                return "lost"  # this worker was paused past its lease and the job recovered elsewhere
            return None
        return ask


def _peek(path: str):
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
