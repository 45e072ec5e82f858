"""A worker's trip through one job: claim -> run -> settle (-> completion hook).

The claim is a rename into processing/ (lifecycle.claim); the run is
runner.run, which asks `interruption` every half second whether to stop
(and lets the worker do the duties that cannot wait meanwhile); the
settle records the outcome and moves the file on (lifecycle.settle): at
once, or through the group commit when this disk's flushes are slow
(commit.FlushPace, docs/decisions/durable.md).

A claim lost to another host's worker (a shared spool, where flocks may
not reach across hosts) is no error: it is counted (`lost_claims`, in
the worker's record) and the worker moves on.
"""

from __future__ import annotations

import copy
import sys
import time
from collections.abc import Callable

from .core import commit, fsops, lifecycle, order, registry
from .core.events import EventLog
from .core.outcome import Outcome
from .core.spool import LockedJob, Spool, file_name
from .core.transient import LOST_RACE, TRANSIENT_PAUSE, is_transient, note
from .features import hooks, retention
from .intake import Intake
from .run import runner
from .stopping import StopFlags, signals_blocked

SETTLE_ATTEMPTS = 5


class JobStep:
    """Claims, runs and settles one job at a time for the worker `name`."""

    def __init__(self, spool: Spool, name: str, *, log: EventLog | None, intake: Intake, stop: StopFlags,
                 between: Callable[[], None]):
        self.spool = spool
        self.name = name
        self.log = log
        self.intake = intake
        self.gate = intake.gate
        self.stop = stop
        self.between = between  # the worker's duties that cannot wait for a run to end
        self.commit: commit.GroupCommit | None = None  # started by the first slow settle
        self.pace = commit.FlushPace()
        self.base_env: tuple[tuple[str, ...], dict[str, str]] | None = None  # see _base_environment
        self.lost_claims = 0  # claims another worker won (a shared spool)
        # This worker's share of the due jobs (order.DueIndex.pop_due): lane `lane` of `lanes`,
        # looked for among the first `window` due jobs, on a shared spool (share_with); all of
        # them (one lane) until it knows of others.
        self.lane, self.lanes, self.window = 0, 1, 1

    def share_with(self, beating: set[str]) -> None:
        """The workers whose leases beat (a shared spool): this one claims first the jobs of its
        own lane, its place among them all by name, so that workers that list the same queue
        do not all race for the same file (docs/guide/several-hosts.md)."""
        names = sorted(beating | {self.name})
        lane, lanes = names.index(self.name), len(names)
        if (lane, lanes) != (self.lane, self.lanes):
            self.lane, self.lanes, self.window = lane, lanes, order.window_for(lanes)

    def _learn_window(self, job_id: str, lost: bool) -> None:
        """After a claim of another lane's job (none of this worker's own was in its window): lost,
        that job's worker had it, and the jobs ahead of this worker's own are mostly ones the other
        workers took since its last listing: look further for its own next time. Won, their worker
        is busy or gone: keep helping, with a shorter look. So the window grows to what the
        listings' pace needs and no further, and no lane waits for long behind a busy worker."""
        if self.lanes > 1 and order.lane_of(job_id, self.lanes) != self.lane:
            if lost:
                self.window = min(order.MAX_WINDOW, self.window * 2)
            else:
                self.window = max(order.window_for(self.lanes), self.window // 2)

    def process(self, state: str, job_id: str) -> None:
        now = time.time()  # the start's time: a rate's token and the job's started_at are one time
        slot = self.gate.admit(state, job_id, self.name, now)
        if slot is None:
            return  # its group is full or paused, or its resources are held: parked until they free
        try:
            with self.spool.held_config() as settings:  # one reading for the claim, one for the settle
                held = lifecycle.claim(self.spool, state, job_id, self.name, now)
        except OSError as exc:
            if not (self.spool.shared and exc.errno in LOST_RACE):
                slot.give_back()
                raise
            held = None  # another host's worker moved it between this worker's steps: its job now
        except BaseException:
            slot.give_back()  # a passing network error on a shared spool: the worker goes on, the slot must too
            raise
        if not isinstance(held, LockedJob):
            slot.give_back()  # no job started: a start of its group's rate is given back too
            if held is None and self.spool.shared:
                # Another worker had it (gone, or its lock taken), or now and then it was not due
                # after all: the worker goes on to its next due job at once, with no pause and no
                # listing; the file is looked at again later (Intake.look_again).
                self.lost_claims += 1
                self._learn_window(job_id, lost=True)
            # A drop-in under a stored job's name (lifecycle.DROP_IN) goes to adoption.
            self.intake.unclaimed(state, file_name(job_id), drop_in=held == lifecycle.DROP_IN)
            return
        if self.spool.shared:
            self._learn_window(job_id, lost=False)
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
                base_env=self._base_environment(settings["pass_env"], slot.env),
                limits=runner.job_limits(job, settings))
            retention.cap_log(self.spool.log_path(job["id"]), settings["max_log_bytes"], self.spool.dir("tmp"))
        except BaseException:
            held.unlock()
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
                held.unlock()
        registry.clear_cancel(self.spool, job["id"])
        registry.clear_suspend(self.spool, job["id"])

    def _base_environment(self, pass_env: list[str], held: dict[str, str]) -> dict[str, str]:
        """What every job takes from the worker's environment, which is fixed when the worker
        starts (made again only when `pass_env` changes), and the resource indexes this job holds."""
        if self.base_env is None or self.base_env[0] != tuple(pass_env):
            self.base_env = (tuple(pass_env), runner.base_environment(pass_env))
        return {**self.base_env[1], **held} if held else self.base_env[1]

    def group_commit(self) -> commit.GroupCommit:
        if self.commit is None:
            with signals_blocked():  # its thread leaves them to the worker's thread
                self.commit = commit.GroupCommit(self.spool)
        return self.commit

    def close_commit(self) -> None:
        """Every settle this worker made reaches the disk before it gives up its lock."""
        commit, self.commit = self.commit, None
        if commit is not None:
            commit.close()

    def _settle(self, held: LockedJob, outcome: Outcome, timeout: float | None,
                durable: bool) -> tuple[str, LockedJob]:
        """lifecycle.settle (which owns `held`); on a shared spool a passing network error is retried.

        Returns the state and the LockedJob the settle ended with: after a
        retry that is a new one, still locked when the job has a completion
        hook for the caller to run.

        On one host a settle is made at once while this disk's flushes are
        quick, else through the group commit (commit.FlushPace). On a
        shared spool each settle is made at once, and the retry starts again
        from the path: the file is locked anew and, if it is still this
        worker's run, settled from the job as claimed (so a try cut after its
        rewrite does not record the attempt twice).
        """
        if not self.spool.shared:
            if durable and not self.pace.inline():
                return lifecycle.settle(self.spool, held, outcome, timeout, self.group_commit()), held
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
                if not is_transient(exc) or attempt == SETTLE_ATTEMPTS - 1:
                    raise
                note(self.name, exc)
                time.sleep(TRANSIENT_PAUSE)
            again = self.spool.lock("processing", file_name(claimed["id"]))
            if again is None or not isinstance(again.job, dict) or again.job.get("worker") != self.name:
                if again is not None:
                    again.unlock()
                # Settled after all (the error came after the move), or not ours any more.
                return ("lost" if self.spool.find(claimed["id"]) in (None, "processing") else "settled"), held
            again.job = copy.deepcopy(claimed)
            held = again
        return "lost", held

    def _interruption(self, held: LockedJob, *, hook: bool = False) -> Callable[[], str | None]:
        """What the runner asks every wait_step while a job (or, `hook`, its completion hook) runs."""
        job_id, run = held.job["id"], held.job["started_at"]

        def ask() -> str | None:
            # The duties that cannot wait for the run to end: recovery above all
            # (docs/guide/workers.md, "Recovery": on schedule even while every worker is busy).
            self.between()
            if self.stop.now:
                return "stop"
            if hook:
                return None  # the job is settled: a cancel or another host's recovery no longer reaches it
            if registry.cancel_requested(self.spool, job_id):
                return "cancel"
            if not lifecycle.still_owned(self.spool, held):
                return "lost"  # this worker was paused past its lease and the job recovered elsewhere
            # A request naming another run was meant for an earlier one (its worker died): it
            # goes, at the first look (a job shorter than that pays no look).
            if registry.suspend_requested(self.spool, job_id, run=run):
                return "suspend"  # SIGSTOP until the request goes (`queuectl resume ID`)
            return None
        return ask
