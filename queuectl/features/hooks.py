"""Completion hooks: a command run after a job's outcome is recorded (docs/guide/hooks.md).

Promises:
- which hook: `on_success` when the job completed, `on_failure` when a run
  failed and the job waits for a retry in failed/, `on_dead` when it went
  to dead/ (out of retries, or cancelled while running); the job's own
  field wins, else the config default of the same name; "" means none;
- at most once per outcome: `plan` puts `hook: {..., "status": "started"}`
  into the very write that records the outcome (lifecycle.settle, which
  settles such a job at once, not in the worker's group commit, and keeps
  its lock), so once the outcome is on disk the hook counts as started.
  A worker that dies before or during the hook leaves `status: started`
  with no `finished_at`, and the hook is never run again; nothing else
  changes in the job. Outcomes recorded by recovery (the worker died
  during the run) run no hook;
- the hook runs as `/bin/sh -c` with the job's environment plus
  QUEUECTL_JOB_ID, QUEUECTL_STATE, QUEUECTL_EXIT_CODE, QUEUECTL_ATTEMPT,
  QUEUECTL_LOG, QUEUECTL_ERROR, QUEUECTL_HOOK, QUEUECTL_SPOOL; its output
  goes to the job's log under its own header; it is killed after
  `hook_timeout` seconds;
- its failure never changes the job's outcome: only the `hook` field and
  `last_hook_error` are written after it, by the worker that still holds
  the job file's flock (so `purge`, retention, `dlq retry` leave the job
  alone until then; retention also skips a job whose hook is `started`
  while its worker is alive, for hosts a flock does not reach).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from contextlib import AbstractContextManager

from ..core import lifecycle, registry
from ..core.job import iso
from ..core.spool import Spool
from ..run import runner

EVENTS = {"completed": "on_success", "failed": "on_failure", "dead": "on_dead"}


def command_for(job: dict, state: str, config: dict) -> tuple[str, str] | None:
    """(event, command) of the hook that applies to `state`, or None."""
    event = EVENTS.get(state)
    if event is None:
        return None
    command = job.get(event)
    if command is None:
        command = config.get(event) or ""
    return (event, command) if command.strip() else None


def plan(job: dict, state: str, config: dict) -> None:
    """Mark the hook of this outcome as started, in the job about to be saved with the outcome."""
    chosen = command_for(job, state, config)
    if chosen is None:
        job.pop("hook", None)
        return
    event, command = chosen
    job["hook"] = {"event": event, "command": command, "attempt": job.get("attempts"), "state": state,
                   "status": "started", "started_at": iso(time.time()), "finished_at": None,
                   "exit_code": None, "error": None}


def planned(job: dict, state: str) -> bool:
    hook = job.get("hook")
    return (isinstance(hook, dict) and hook.get("status") == "started" and hook.get("state") == state
            and hook.get("attempt") == job.get("attempts") and hook.get("finished_at") is None)


def running_elsewhere(spool, job: dict) -> bool:
    """Whether the job's hook is marked started by a worker that is still alive."""
    hook = job.get("hook")
    worker = job.get("worker")
    if not (isinstance(hook, dict) and hook.get("status") == "started" and isinstance(worker, str)):
        return False
    return registry.is_alive(spool, worker)


def run(spool, held, *, worker: str, timeout: float | None, kill_grace: float, pass_env: list[str],
        interruption: Callable[[], str | None]) -> None:
    """Run the hook `plan` marked in `held.job` (still owned), then record how it went."""
    job = held.job
    hook = job["hook"]
    log_path = spool.log_path(job["id"])
    exit_code = job.get("last_exit_code")
    extra = {
        "QUEUECTL_STATE": held.state, "QUEUECTL_EXIT_CODE": "" if exit_code is None else str(exit_code),
        "QUEUECTL_LOG": log_path, "QUEUECTL_ERROR": job.get("last_error") or "", "QUEUECTL_HOOK": hook["event"],
    }
    hook_job = {"id": job["id"], "command": hook["command"], "cwd": job.get("cwd"),
                "env": {**(job.get("env") or {}), **extra}, "attempts": job.get("attempts") or 0}
    outcome = runner.run(hook_job, log_path=log_path, worker=worker, spool_root=spool.root, timeout=timeout,
                         kill_grace=kill_grace, pass_env=pass_env, tail_lines=5, interruption=interruption,
                         header=f"=== {hook['event']} hook for attempt {hook_job['attempts']} started")
    error = outcome.describe(timeout)
    hook.update(finished_at=iso(outcome.finished), exit_code=outcome.exit_code,
                status="succeeded" if error is None else "failed", error=error)
    if error is not None:
        job["last_hook_error"] = f"{hook['event']} hook: {error}"
    held.save()


class HooksPlugin(lifecycle.Plugin):
    """Marks an outcome's hook started in the outcome's own write; keeps a job whose hook runs elsewhere."""

    def on_settle(self, spool: Spool, job: dict, state: str) -> bool:
        plan(job, state, spool.config)
        return planned(job, state)

    def may_delete(self, spool: Spool, state: str, job_id: str, path: str) -> AbstractContextManager[bool | None]:
        job = spool.read(state, job_id + ".json") or {}
        return contextlib.nullcontext(not running_elsewhere(spool, job))
