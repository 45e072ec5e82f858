"""The public Python API: `queuectl.Spool`, every operation a user can make on a spool.

    from queuectl import Spool
    spool = Spool("/tmp/spool")
    job = spool.enqueue("echo hello", priority=5)
    spool.wait([job["id"]], timeout=60)      # {"<id>": "completed"}

Each method is a thin call into the layer that does the work (lifecycle,
workflow, schedules, registry); the CLI calls only these methods. Every
method that takes a job id also takes a unique prefix of one (`resolve`).
See docs/api.md.

The layers are imported by the methods that use them, not at the top:
this module is loaded by every `queuectl` command, and an `enqueue` or a
`list` must not pay at start-up for the worker's and the schedules' code
(docs/api.md "Start-up").
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from typing import Any

from .core import lifecycle
from .core import spool as layout
from .core.errors import InvalidJob, JobNotFound, QueueError, WrongState
from .core.job import FINISHED, STATES, check_id

JobList = list[dict[str, Any]]
IdList = list[str]  # named here: inside the class, `list` is the method
MAX_CANDIDATES = 10  # ids an AmbiguousId error lists
WAIT_POLL = 0.1  # seconds between looks while `wait` blocks (a tool for people and scripts, not a worker)
SORTS = ("created", "oldest", "priority")


def install_features() -> None:
    """Install queuectl's features (features/plugins.py) at the first transition that needs them.

    Imported then, not with this module, so `queuectl enqueue` of a plain job
    does not load them (docs/decisions/layers.md).
    """
    from .features import plugins

    plugins.install()


lifecycle.install_later(install_features)


class AmbiguousId(QueueError):
    """An id prefix that matches more than one job; `candidates` lists up to MAX_CANDIDATES of them."""

    def __init__(self, prefix: str, candidates: list[str], total: int):
        self.prefix = prefix
        self.candidates = candidates
        self.total = total
        more = f" and {total - len(candidates)} more" if total > len(candidates) else ""
        super().__init__(f"id prefix {prefix!r} matches {total} jobs: {', '.join(candidates)}{more}")


class WaitTimeout(QueueError, TimeoutError):
    """`wait` gave up: `states` maps each awaited id to the state it was in at the deadline."""

    def __init__(self, states: dict[str, str]):
        self.states = states
        unfinished = sorted(job_id for job_id, state in states.items() if state not in FINISHED)
        shown = ", ".join(unfinished[:MAX_CANDIDATES])
        super().__init__(f"timed out with {len(unfinished)} job(s) unfinished: {shown}")


class _Plans(layout.Spool):
    """The part of the API that says when jobs may start: pauses, groups, resources, schedules."""

    def _edit_lock(self, what: str) -> contextlib.AbstractContextManager[None]:
        """The named lock (filelock) of an edit of config.json, the schedules or the groups
        (docs/decisions/locks.md); loaded only by the commands that edit."""
        from .core import locks
        return locks.spool_lock(self, what)

    # -- pauses and groups ---------------------------------------------------

    def pause(self, group: str | None = None) -> bool:
        """Workers start nothing new from the spool (or the group); False if it was paused already."""
        from .features import workflow
        if group is None:
            return workflow.pause(self)  # one exclusive create: no lock needed
        with self._edit_lock("groups"):
            return workflow.pause(self, workflow.check_group(group))

    def resume(self, group: str | None = None) -> bool:
        """Undo `pause`; False if it was not paused."""
        from .features import workflow
        if group is None:
            return workflow.resume(self)  # one unlink: no lock needed
        with self._edit_lock("groups"):
            return workflow.resume(self, workflow.check_group(group))

    def set_group_limit(self, group: str, limit: int | None) -> None:
        """At most `limit` jobs of `group` run at once, across every worker and host; None: no limit."""
        from .features import workflow
        with self._edit_lock("groups"):
            workflow.set_limit(self, workflow.check_group(group), limit or None)

    def set_group_rate(self, group: str, rate: str | None) -> str | None:
        """At most N starts of `group`'s jobs in any window of W (`rate` "N/W": "10/1m"), across every
        worker and host; None or "0": no rate. Returns the rate as stored ("10/1m") or None."""
        from .features import rates, workflow
        try:
            parsed = rates.parse_rate(rate or "0")
        except ValueError as exc:
            raise InvalidJob(str(exc)) from None
        with self._edit_lock("groups"):
            workflow.set_rate(self, workflow.check_group(group), parsed)
        return parsed.text() if parsed else None

    def declare_resource(self, name: str, count: int, host: str | None = None) -> dict[str, int]:
        """Declare that `host` (this one: $QUEUECTL_HOST or the node name) has `count` of resource
        `name` (0 removes it); returns the host's whole declaration (docs/guide/resources.md)."""
        from .features import resources
        with self._edit_lock("resources"):
            return resources.declare(self, name, count, host)

    def resources(self) -> JobList:
        """Each host's resources: declared counts and who holds which index (worker, job)."""
        from .features import resources
        return resources.overview(self)

    def groups(self) -> JobList:
        """Groups with a limit, a rate, a pause or running jobs: name, limit, rate, starts_in_window,
        running, slots, holders, paused."""
        from .features import workflow
        return workflow.groups(self)

    # -- schedules -----------------------------------------------------------

    def add_schedule(self, name: str, fields: dict[str, Any]) -> dict:
        """A recurring job: `fields` holds `cron` or `every`, `job` (the template) and optionally
        `tz`, `missed`, `paused`. Returns the schedule with its next run. Raises DuplicateJob, and
        InvalidJob for a template whose `needs` no host has on a local spool (as enqueue would
        refuse each run; a slot that fires after a declaration shrank enqueues a job that waits)."""
        from .features import resources, schedules
        needs = fields.get("job", {}).get("needs") if isinstance(fields.get("job"), dict) else None
        counts = isinstance(needs, dict) and all(type(count) is int for count in needs.values())
        if counts and needs and not self.shared:  # a malformed `needs` is refused by schedules.add
            reason = resources.refusal(needs, resources.declarations(self))
            if reason is not None:
                raise InvalidJob(f"schedule {name}: each run {reason}")
        with self._edit_lock("schedules"):
            return schedules.get(self, schedules.add(self, name, fields)["name"])

    def list_schedules(self) -> JobList:
        """Every schedule with its next run; an invalid file shows as {name, error}."""
        from .features import schedules
        return schedules.listing(self)

    def get_schedule(self, name: str) -> dict:
        """One schedule with `next_run` and `last_slot`. Raises JobNotFound."""
        from .features import schedules
        return schedules.get(self, name)

    def remove_schedule(self, name: str) -> None:
        """Delete a schedule (jobs it enqueued stay). Raises JobNotFound."""
        from .features import schedules
        with self._edit_lock("schedules"):
            schedules.remove(self, name)

    def pause_schedule(self, name: str) -> dict:
        """Stop enqueuing; slots that pass while paused are skipped."""
        from .features import schedules
        with self._edit_lock("schedules"):
            return schedules.set_paused(self, name, True)

    def resume_schedule(self, name: str) -> dict:
        """Enqueue again from the next slot; returns the schedule with its next run."""
        from .features import schedules
        with self._edit_lock("schedules"):
            return schedules.set_paused(self, name, False)


class Spool(_Plans):
    """A spool folder, with every operation on its jobs, schedules, groups and workers.

    `Spool(path)` opens (and creates) the spool at `path`, else $QUEUECTL_SPOOL, else
    ~/.local/share/queuectl/spool. Errors are `queuectl.QueueError`s with a one-line message.
    """

    def enqueue(self, job: dict | str, *, if_absent: bool = False, **options: Any) -> dict:
        """Enqueue one job from a dict of fields or a command string; returns the stored job.

        `options` are the CLI's: id, max_retries, priority, run_at, delay,
        timeout, after, group, unique_key, cwd, env... With `if_absent`, a
        job whose unique key a live job holds is not enqueued, and that job
        is returned instead. Raises InvalidJob, DuplicateJob.
        """
        return lifecycle.enqueue(self, job, if_absent=if_absent, **options)

    def enqueue_many(self, jobs: Iterable[dict], *, if_absent: bool = False) -> JobList:
        """Validate every job first (none is enqueued if one is invalid), then enqueue them in order."""
        return lifecycle.enqueue_many(self, jobs, if_absent=if_absent)

    # -- reading -------------------------------------------------------------

    def resolve(self, prefix: str) -> str:
        """The id of the one job whose id starts with `prefix`, or whose part after its last '-' does.

        An exact id wins. Raises JobNotFound when no job matches, AmbiguousId
        (listing up to 10 candidates) when several do, InvalidJob when
        `prefix` could not start an id.
        """
        check_id(prefix)
        if self.find(prefix) is not None:
            return prefix
        matches: set[str] = set()
        for state in STATES:
            for name in self.names(state):
                job_id = layout.id_of(name)
                if job_id.startswith(prefix) or job_id.rpartition("-")[2].startswith(prefix):
                    matches.add(job_id)
        if not matches:
            raise JobNotFound(f"no job with id {prefix!r} (nor one starting with it)")
        if len(matches) > 1:
            raise AmbiguousId(prefix, sorted(matches)[:MAX_CANDIDATES], len(matches))
        return matches.pop()

    def get(self, job_id: str) -> dict:
        """The job (its `state` is its folder's); `job_id` may be a unique prefix. Raises JobNotFound."""
        try:
            return super().get(job_id)
        except JobNotFound:
            return super().get(self.resolve(job_id))

    def list(self, states: str | Iterable[str] | None = None, limit: int | None = None,
             group: str | None = None, sort: str = "created") -> tuple[JobList, int]:
        """(up to `limit` jobs, how many matched).

        `states`: one state or several (default: all). `group`: only that
        group's jobs. `sort`: "created" (newest first, as `queuectl list`),
        "oldest", or "priority" (highest first, then oldest).
        """
        if sort not in SORTS:
            raise QueueError(f"sort must be one of {', '.join(SORTS)}, not {sort!r}")
        wanted = [states] if isinstance(states, str) else list(states or STATES)
        for state in wanted:
            layout.check_state(state)
        if group is None and sort == "created":
            if len(wanted) == 1:
                return self.newest(wanted[0], limit)
            if set(wanted) == set(STATES):
                return self.newest(None, limit)
        found = [job for state in wanted for job in self.iter_jobs(state)
                 if group is None or job.get("group") == group]
        if sort == "priority":
            found.sort(key=lambda job: (-_number(job.get("priority")), str(job.get("id"))))
        else:
            found.sort(key=lambda job: str(job.get("id")), reverse=sort == "created")
        return (found if limit is None else found[:limit]), len(found)

    def wait(self, job_ids: Iterable[str] | None = None, timeout: float | None = None) -> dict[str, str]:
        """Block until the jobs are completed or dead; returns id -> final state.

        Without `job_ids`: until no job is pending, failed or running; the
        result then covers every job seen unfinished meanwhile. Raises
        WaitTimeout (a TimeoutError, with `.states`) after `timeout` seconds,
        JobNotFound if a job is unknown or disappears (purged) meanwhile.
        """
        everything = job_ids is None
        ids = [] if job_ids is None else [self.resolve(job_id) for job_id in job_ids]
        deadline = None if timeout is None else time.monotonic() + timeout
        states: dict[str, str] = {}
        while True:
            if everything:
                for state in ("pending", "processing", "failed"):
                    ids.extend(job_id for job_id in map(layout.id_of, self.names(state)) if job_id not in states)
            for job_id in ids:
                if states.get(job_id) not in FINISHED:
                    found = self.find(job_id)
                    if found is None:
                        raise JobNotFound(f"job {job_id!r} disappeared (purged?)")
                    states[job_id] = found
            ids = []
            if all(state in FINISHED for state in states.values()):
                return states
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(states)
            ids = [job_id for job_id, state in states.items() if state not in FINISHED]
            time.sleep(WAIT_POLL)

    # -- changing jobs -------------------------------------------------------

    def cancel(self, job_id: str) -> str:
        """Cancel a job; returns the state it was in.

        A pending or failed job goes to dead/ as cancelled at once. A running
        one ("processing" is returned) is stopped by its worker, which then
        settles it in dead/: `wait([job_id])` to see it there. Raises
        WrongState for a completed or dead job.
        """
        return lifecycle.cancel(self, self.resolve(job_id))

    def retry(self, job_id: str) -> dict:
        """A failed job due now, without waiting for its backoff; returns it. Raises WrongState otherwise."""
        return lifecycle.retry(self, self.resolve(job_id))

    def dlq_retry(self, job_id: str) -> dict:
        """A dead job back to pending with its attempts reset (its own fields kept); returns it."""
        return lifecycle.dlq_retry(self, self.resolve(job_id))

    def restart_in_place(self, job_id: str) -> dict:
        """A completed or dead job back to pending as the same job: attempts reset, history kept."""
        return lifecycle.restart_in_place(self, self.resolve(job_id))

    def hold(self, job_id: str) -> bool:
        """A pending or failed job never starts until `release`; False if it was held already."""
        return lifecycle.hold(self, self.resolve(job_id))

    def release(self, job_id: str) -> bool:
        """Undo `hold`; False if the job was not held."""
        return lifecycle.release(self, self.resolve(job_id))

    def start(self, job_id: str) -> dict:
        """A pending or failed job due now: its run_at / next_run_at cleared and a hold released."""
        return lifecycle.start_now(self, self.resolve(job_id))

    def edit(self, job_id: str, change: Callable[[dict], dict]) -> dict:
        """Replace a pending, failed or dead job's own fields with `change(fields)`; returns
        {field: [old, new]} ({} when nothing changed). Raises WrongState for a running job."""
        return lifecycle.edit(self, self.resolve(job_id), change)

    def suspend(self, job_id: str) -> bool:
        """Stop a running job's processes (SIGSTOP) until `resume_job`; False if asked already.
        Raises WrongState when the job is not running."""
        from .core import registry
        job_id = self.resolve(job_id)
        state = self.find(job_id)
        if state != "processing":
            raise WrongState(f"cannot suspend job {job_id!r}: it is {state}, not running")
        job = self.read("processing", job_id + ".json")
        run = job.get("started_at") if isinstance(job, dict) else None
        run = run if isinstance(run, str) else ""  # unreadable now: a request for the run there is
        if registry.suspend_requested(self, job_id, run=run or None):
            return False
        registry.request_suspend(self, job_id, run)
        return True

    def resume_job(self, job_id: str) -> bool:
        """Let a suspended job go on (SIGCONT); False if it was not suspended."""
        from .core import registry
        return registry.clear_suspend(self, self.resolve(job_id))

    def suspended(self) -> set[str]:
        """The ids of the jobs asked to be suspended."""
        from .core import registry
        return registry.suspended_ids(self)

    def dlq_retry_all(self) -> IdList:
        """Every dead job back to pending; returns the ids retried (records of files that were
        never valid jobs are skipped: they cannot run)."""
        retried = []
        for job_id in sorted(layout.id_of(name) for name in self.names("dead")):
            try:
                lifecycle.dlq_retry(self, job_id)
            except (InvalidJob, JobNotFound):
                continue  # never a job, or retried by someone else meanwhile
            retried.append(job_id)
        return retried

    def purge(self, states: str | Iterable[str], older_than: float | None = None,
              needed: IdList | None = None) -> int:
        """Delete completed and/or dead jobs (and their logs) unchanged for `older_than` seconds;
        returns how many. Completed jobs that a waiting job depends on stay (their ids go to `needed`)."""
        return lifecycle.purge(self, [states] if isinstance(states, str) else list(states), older_than, needed)

    def remove(self, job_id: str) -> bool:
        """Delete one completed or dead job and its log; False when it stays (as purge keeps it).
        Raises WrongState for a job that is not finished."""
        job_id = self.resolve(job_id)
        return lifecycle.delete_finished(self, self.find(job_id) or "dead", job_id)

    # -- settings and workers ------------------------------------------------

    def set_config(self, key: str, text: str) -> tuple[str, Any]:
        """Set one key of config.json from its text form (as `config set`); returns (canonical key, value).
        Raises ConfigError naming the valid keys or values. `config` reads the settings."""
        from .core.config import canonical_key, parse_value
        parse_value(key, text)  # a bad key or value is refused before anything is written, the lock file too
        with self._edit_lock("config.json"):  # a read-modify-write: two at once would lose one
            return super().set_config(canonical_key(key), text)

    def workers(self) -> JobList:
        """Live workers, on any host: name, pid, host, mode, started, and the `job` each runs."""
        from .core import registry
        return registry.records(self)

    def stop_workers(self, now: bool = False, wait: bool = False) -> IdList:
        """Ask every worker (any host) to exit after its current job, or with `now` to stop that job too
        (it is retried). Returns the names of the workers live when asked; `wait`: until they are gone."""
        from .core import registry
        names = [record["name"] for record in registry.records(self)]
        registry.request_stop(self, now=now)
        if wait:
            registry.wait_stopped(self, names)
        return names


def _number(value: Any) -> float:
    try:
        return float(value or 0)
    except (TypeError, ValueError):
        return 0.0
