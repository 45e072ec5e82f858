"""A worker's periodic duties, as a table its loop runs.

Each duty says when it is next due (`next_time`, None: not on a timer),
whether it is due now (`due`: by default, once that time has come), and
what descriptor wakes the loop for it (`wake_fd`). The loop runs the
duties that are due, claims the best due job, and otherwise sleeps until
the earliest duty time, the next due job, a descriptor or a watchdog
event: no busy polling. Duties marked `during_run` are also run while a
job runs, from the runner's interruption call (every 0.5 s), so recovery
and the schedules keep their pace while every worker is busy (docs/guide/workers.md,
"Recovery").
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from .core import lifecycle, registry
from .core.lease import Liveness
from .core.spool import Spool
from .core.transient import TRANSIENT_PAUSE, step_ok
from .features import retention, schedules, workflow
from .intake import Intake
from .jobstep import JobStep
from .stopping import StopFlags

# Shared spools: other workers' leases are read every LEASE_LOOK seconds, so a
# death is seen within that of lease_timeout; then QUICK_SWEEPS sweeps a second
# apart, since a dead client's flocks may outlive it a moment (GlusterFS).
LEASE_LOOK = 1.0
QUICK_SWEEPS = 4


class Duty:
    """One duty of the loop; subclasses say when it is due and what it does."""

    during_run = False  # also run while a job runs

    def next_time(self, now: float) -> float | None:
        """When the duty is next due; None when no timer brings it."""
        return None

    def due(self, now: float) -> bool:
        when = self.next_time(now)
        return when is not None and when <= now

    def wake_fd(self) -> int | None:
        """A descriptor that turns readable when the duty is due, if any."""
        return None

    def run(self, now: float) -> None:
        raise NotImplementedError


class DutyTable:
    """The duties in the order they run each time round the loop."""

    def __init__(self, duties: Iterable[Duty]):
        self.duties = list(duties)

    def run_due(self, now: float, *, running: bool = False) -> None:
        for duty in self.duties:
            if (duty.during_run or not running) and duty.due(now):
                duty.run(now)

    def next_time(self, now: float) -> float | None:
        times = [when for when in (duty.next_time(now) for duty in self.duties) if when is not None]
        return min(times, default=None)

    def wake_fds(self) -> tuple[int, ...]:
        return tuple(fd for fd in (duty.wake_fd() for duty in self.duties) if fd is not None)


class SupervisorCheck(Duty):
    """Stop once the supervisor is gone (its pipe reads as end-of-file: supervisor.py)."""

    during_run = True

    def __init__(self, stop: StopFlags):
        self.stop = stop

    def due(self, now: float) -> bool:
        return self.stop.supervisor_gone()

    def wake_fd(self) -> int | None:
        return self.stop.supervisor_fd

    def run(self, now: float) -> None:
        self.stop.leave_with_supervisor()


class CommitAdvance(Duty):
    """Make the renames of the settles the group commit's thread has flushed (commit.GroupCommit)."""

    during_run = True

    def __init__(self, step: JobStep):
        self.step = step

    def due(self, now: float) -> bool:
        return self.step.commit is not None  # its advance is the quick check

    def wake_fd(self) -> int | None:
        return None if self.step.commit is None else self.step.commit.wake_fd

    def run(self, now: float) -> None:
        assert self.step.commit is not None
        self.step.commit.advance()


class SchedulesSweep(Duty):
    """Enqueue the schedules' due slots (schedules.py)."""

    during_run = True

    def __init__(self, spool: Spool, worker: str):
        self.spool = spool
        self.worker = worker
        self.next: float | None = 0.0

    def soon(self, now: float = 0.0) -> None:
        """Sweep at the next round: a schedule changed, here or (seen by a recovery sweep) elsewhere."""
        self.next = now if self.next is None else min(self.next, now)

    def next_time(self, now: float) -> float | None:
        return self.next

    def run(self, now: float) -> None:
        self.next = schedules.sweep(self.spool, self.worker, now)


class RecoverySweep(Duty):
    """Move dead workers' jobs back (lifecycle.recover) and prune old jobs (retention.py), every
    recovery_interval; a second apart for QUICK_SWEEPS sweeps once a lease expired."""

    during_run = True

    def __init__(self, spool: Spool, worker: str, judge: Liveness, sweep_schedules: SchedulesSweep, start: float):
        self.spool = spool
        self.worker = worker
        self.judge = judge
        self.pruner = retention.Pruner(spool)
        self.sweep_schedules = sweep_schedules
        self.next = start
        self.quick_sweeps = 0

    def soon(self, now: float) -> None:
        self.next, self.quick_sweeps = now, QUICK_SWEEPS

    def next_time(self, now: float) -> float | None:
        return self.next

    def run(self, now: float) -> None:
        step_ok(self.worker, lifecycle.recover, self.spool, self.judge)
        self.quick_sweeps = max(0, self.quick_sweeps - 1)
        self.next = time.time() + (LEASE_LOOK if self.quick_sweeps else self.spool.config["recovery_interval"])
        step_ok(self.worker, self.pruner.sweep, now)  # a bounded batch (retention.py)
        self.sweep_schedules.soon(now)  # schedules changed on other hosts


class LeaseLook(Duty):
    """Shared spools: read the other workers' leases; one just expired brings the recovery sweep forward."""

    during_run = True

    def __init__(self, worker: str, judge: Liveness, recovery: RecoverySweep, start: float | None,
                 step: JobStep):
        self.worker = worker
        self.judge = judge
        self.recovery = recovery
        self.step = step  # told which workers beat, for its lane (JobStep.share_with)
        self.next = start  # None: local mode, where flocks tell who is dead
        self.expired = False

    def next_time(self, now: float) -> float | None:
        return self.next

    def run(self, now: float) -> None:
        self.next = now + LEASE_LOOK
        if step_ok(self.worker, self._look) and self.expired:
            self.recovery.soon(now)

    def _look(self) -> None:
        self.expired = self.judge.look_at_leases(skip=self.worker)
        self.step.share_with(self.judge.beating)


class Rescan(Duty):
    """The slow safety scan (scan_interval), or soon after a listing failed with a passing error."""

    def __init__(self, spool: Spool, worker: str, intake: Intake, start: float):
        self.spool = spool
        self.worker = worker
        self.intake = intake
        self.next = start + spool.config["scan_interval"]
        self.soon = False

    def due(self, now: float) -> bool:
        return self.soon or now >= self.next

    def next_time(self, now: float) -> float | None:
        return now + TRANSIENT_PAUSE if self.soon else self.next

    def run(self, now: float) -> None:
        self.soon = not step_ok(self.worker, self.intake.scan)  # a failed listing is tried again soon
        self.next = now + self.spool.config["scan_interval"]


class StopRequestCheck(Duty):
    """Read workers/stop.json with each safety scan, in case its change event was missed."""

    def __init__(self, stop: StopFlags, rescan: Rescan):
        self.stop = stop
        self.rescan = rescan

    def due(self, now: float) -> bool:
        return self.rescan.due(now)

    def run(self, now: float) -> None:
        self.stop.check_request()


class DropinRecheck(Duty):
    """Look again at dropped-in files that may have been still being written (lifecycle.DROP_GRACE)."""

    def __init__(self, intake: Intake):
        self.intake = intake

    def next_time(self, now: float) -> float | None:
        return self.intake.next_recheck()

    def run(self, now: float) -> None:
        self.intake.recheck_dropins(now)


class GateUnpark(Duty):
    """Put back jobs parked behind a full or paused group once it has room (workflow.Gate)."""

    def __init__(self, gate: workflow.Gate):
        self.gate = gate

    def due(self, now: float) -> bool:
        return True  # unpark is its own quick check (a change pokes it, else every PARK_POLL)

    def next_time(self, now: float) -> float | None:
        return self.gate.next_wake(now)

    def run(self, now: float) -> None:
        self.gate.unpark(now)


class RecordRefresh(Duty):
    """Rewrite the worker's record when its counters changed, at most once a second."""

    PACE = 1.0

    def __init__(self, spool: Spool, worker: str, record: dict, step: JobStep):
        self.spool = spool
        self.worker = worker
        self.record = record
        self.step = step
        self.written = 0.0

    def next_time(self, now: float) -> float | None:
        if self.step.lost_claims == self.record.get("lost_claims", 0):
            return None
        return self.written + self.PACE

    def run(self, now: float) -> None:
        self.record["lost_claims"] = self.step.lost_claims
        self.written = now
        step_ok(self.worker, registry.write_record, self.spool, self.worker, self.record)
