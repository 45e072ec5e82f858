"""One worker process: the claim -> run -> settle loop.

The worker holds `workers/<name>.lock` for its life (registry.py) and keeps
the order of due jobs in memory (intake.Intake). Each time round its loop
it runs the periodic duties that are due (duties.py: recovery, schedules,
leases, the safety scan...), reads what changed in pending/, failed/ and
workers/ (watch.FolderWatch: files landing or leaving, stop requests),
claims the best due job and takes it through claim -> run -> settle
(jobstep.JobStep). Idle, it sleeps until a change, the earliest duty or the
next scheduled job: no busy polling. Recovery (`lifecycle.recover`) runs
every `recovery_interval` whatever the worker does: between jobs from the
loop, during a job from the runner's `interruption` call (every 0.5 s, in
this same thread; the sweep skips the worker's own job because its flock is
held through another open file description).

How it stops (signals, `worker stop`, its supervisor's end): stopping.py.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from . import duties
from .core import fstype, locks, registry
from .core.errors import SpoolError
from .core.events import EventLog
from .core.lease import Lease, Liveness
from .core.spool import Spool
from .core.transient import TRANSIENT_PAUSE, is_transient, note, step_ok
from .features import workflow
from .intake import Intake
from .jobstep import JobStep
from .stopping import STOP_SIGNALS, StopFlags, signals_blocked, stop_signals
from .watch import FolderWatch

__all__ = ["STOP_SIGNALS", "Worker", "stop_signals"]  # supervisor.py and the tests take them from here

# completed/ and dead/ wake jobs waiting for a dependency; groups/ and the spool's
# top (its `paused` file) bring limits and pauses (workflow.Gate).
WATCHED = ("pending", "failed", "workers", "completed", "dead", "schedules")
DRAIN_POLL = 0.2  # seconds between looks at processing/ while `--until-empty` waits for jobs there


class Worker:
    """One worker; `log` None is quiet; `supervisor_fd` is the read end of the supervisor's pipe, if any;
    `announce` is called once the worker holds its lock and its record is written."""

    def __init__(self, spool: Spool, *, burst: bool = False, until_empty: bool = False, name: str | None = None,
                 log: EventLog | None = None, supervisor_fd: int | None = None,
                 announce: Callable[[], None] | None = None):
        self.spool = spool
        # burst: exit once no job is due now. until_empty: exit once pending/,
        # failed/ and processing/ hold no job (scheduled jobs and waiting retries
        # keep it alive) - see docs/guide/workers.md, "Starting workers".
        self.burst = burst or until_empty
        self.until_empty = until_empty
        self.name = name or registry.new_name()
        self.announce = announce
        self.started = time.time()
        self.stop = StopFlags(spool, self.name, log, supervisor_fd, self.started, self._wake)
        self.gate = workflow.Gate(spool, self._readd, self.name)  # dependencies, groups, pauses
        self.intake = Intake(spool, self.gate, on_stop_file=self.stop.check_request,
                             on_schedules=self._schedules_changed)
        self.step = JobStep(spool, self.name, log=log, intake=self.intake, stop=self.stop, between=self._between)
        self.duties = duties.DutyTable(())  # filled by run(), once the mode is known
        self.schedules: duties.SchedulesSweep | None = None
        self.rescan: duties.Rescan | None = None

    # -- life ----------------------------------------------------------------

    def run(self) -> int:
        badge = locks.take_worker_lock(self.spool, self.name)
        # Taken until the clean-up is done: a stop signal that arrives while the
        # worker leaves is one more request to stop, not a crash or a KeyboardInterrupt.
        lease: Lease | None = None
        with stop_signals(self.stop.on_signal):
            try:
                mode = fstype.mode(self.spool)
                self.spool.shared = mode == "shared"
                folders = {folder: self.spool.dir(folder) for folder in WATCHED}
                folders.update(groups=workflow.groups_dir(self.spool), spool=self.spool.root)
                self.intake.watch = FolderWatch(folders, poll=self.spool.shared)
                self.intake.watch.set_cadence(self.intake.cadence)
                with signals_blocked():  # the lease's thread leaves them to this one
                    # Every worker beats a lease, also in local mode: a host that sees the
                    # spool as local (an NFS server's own disk) may still share it.
                    lease = self.spool.lease = Lease(self.spool, self.name, self.spool.config["lease_timeout"])
                    lease.start()
                record = {"pid": os.getpid(), "host": os.uname().nodename, "started": self.started, "mode": mode}
                registry.write_record(self.spool, self.name, record)
                self.duties = self._duty_table(Liveness(self.spool, mode=mode, observing=True), record)
                if self.announce is not None:
                    self.announce()
                self.duties.run_due(time.time())  # recovery first, then the first listing
                assert self.rescan is not None  # set by _duty_table
                self.rescan.soon = not step_ok(self.name, self.intake.scan)
                self._loop()
                self.step.close_commit()
            except OSError as exc:
                # A full or read-only disk: stop, in one line. A job this worker held is
                # in processing/ unlocked, so the next worker's recovery moves it on.
                raise SpoolError(f"worker {self.name} stopped: cannot write to the spool {self.spool.root}: "
                                 f"{exc.strerror or exc}") from None
            finally:
                self.step.close_commit()
                self.gate.close()
                watch, self.intake.watch = self.intake.watch, None  # the handler no longer wakes it
                if watch is not None:
                    watch.close()
                if lease is not None:
                    lease.stop()
                    self.spool.lease = None
                registry.remove_record(self.spool, self.name)
                badge.release()
        return 0

    def _duty_table(self, judge: Liveness, record: dict) -> duties.DutyTable:
        """The loop's duties, in the order they run each time round."""
        now = time.time()
        self.schedules = duties.SchedulesSweep(self.spool, self.name)
        recovery = duties.RecoverySweep(self.spool, self.name, judge, self.schedules, self.started)
        self.rescan = duties.Rescan(self.spool, self.name, self.intake, now)
        return duties.DutyTable((
            duties.SupervisorCheck(self.stop),
            duties.CommitAdvance(self.step),
            duties.LeaseLook(self.name, judge, recovery, now if self.spool.shared else None, self.step),
            recovery,
            self.schedules,
            duties.StopRequestCheck(self.stop, self.rescan),
            self.rescan,
            duties.DropinRecheck(self.intake),
            duties.GateUnpark(self.gate),
            duties.RecordRefresh(self.spool, self.name, record, self.step),
        ))

    def _wake(self) -> None:
        if self.intake.watch is not None:
            self.intake.watch.wake()

    def _readd(self, folder: str, job_id: str, priority: int, due: float) -> None:
        self.intake.readd(folder, job_id, priority, due)

    def _schedules_changed(self) -> None:
        if self.schedules is not None:
            self.schedules.soon()

    # -- the loop ------------------------------------------------------------

    def _loop(self) -> None:
        watch, index = self.intake.watch, self.intake.index
        assert watch is not None and self.rescan is not None  # set by run() before the loop
        while True:
            now = time.time()
            self.duties.run_due(now)
            if self.stop.stopping:
                return
            try:
                self.intake.apply_events()
            except OSError as exc:
                if not is_transient(exc):
                    raise
                note(self.name, exc)
                self.rescan.soon = True  # the changes after the failed one went with it: list soon
                watch.wait(TRANSIENT_PAUSE)
                continue
            # A paused spool starts nothing: one stat, just before the claim.
            # On a shared spool each worker takes the jobs of its own lane first (JobStep.share_with).
            due = None if self.gate.spool_paused() else index.pop_due(now, self.step.lane, self.step.lanes,
                                                                           self.step.window)
            if due is not None:
                if self.spool.shared:
                    # The job left the index: a listing soon brings it back if it is still due.
                    self.rescan.soon = not step_ok(self.name, self.step.process, *due) or self.rescan.soon
                else:
                    self.step.process(*due)  # alone on one disk an error here is no passing one: stop
                continue
            running = False
            if self.burst:
                verdict = self._burst_verdict(now)
                if verdict == "exit":
                    return
                if verdict == "again":
                    continue
                running = verdict == "running"
            # A job leaving processing/ for completed/ or dead/ wakes nobody: look again soon.
            times = [self.duties.next_time(now), index.next_due(), time.time() + DRAIN_POLL if running else None]
            wake_at = min(when for when in times if when is not None)
            watch.wait(wake_at - time.time(), also=self.duties.wake_fds())

    def _burst_verdict(self, now: float) -> str:
        """For a burst worker with nothing due: "exit", "again" (look at once), "running" (jobs run
        elsewhere: look again soon) or "wait"."""
        index = self.intake.index
        if self.intake.waiting() or self.intake.apply_events() or self.gate.may_unblock(now):
            return "wait"
        if self.spool.shared and step_ok(self.name, self.intake.scan):
            # Polling looks only every POLL_INTERVAL: list before deciding to exit.
            next_due = index.next_due()
            if next_due is not None and next_due <= time.time():
                return "again"
        if not self.until_empty:
            return "exit"
        # The index holds every job of pending/ and failed/ (the gate those held
        # back); one running (elsewhere, or being settled by this worker's commit
        # thread) may still fail and come back to failed/.
        running = self.spool.names("processing")
        if not (len(index) or self.gate.holding() or running):
            return "exit"
        return "running" if running else "wait"

    def _between(self) -> None:
        """While a job runs: the duties that cannot wait, and the changes (a `worker stop --now`
        arrives as a change in workers/)."""
        self.duties.run_due(time.time(), running=True)
        try:
            self.intake.apply_events()
        except OSError as exc:
            if not is_transient(exc):
                raise
            if self.rescan is not None:
                self.rescan.soon = True  # the changes after the failed one went with it: list soon
