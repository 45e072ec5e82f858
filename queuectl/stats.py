"""The figures of `status`, at a bounded cost.

Counts come from directory listings; groups and the pause from their files
under groups/ and the spool's top (workflow.py). Figures that need job contents read
a bounded sample, so `status` stays fast on a spool of any size: the
oldest SAMPLE pending jobs by name (generated ids sort by creation time)
and the latest SAMPLE finished ones.
"""

from __future__ import annotations

import time
from typing import Any

from .core import registry
from .core.errors import InvalidJob
from .core.job import STATES, parse_time
from .features import resources, workflow

SAMPLE = 500


def _time(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return parse_time(value)
    except InvalidJob:
        return None


def summary(spool) -> dict[str, Any]:
    now = time.time()
    names = {state: spool.names(state) for state in STATES}  # each folder listed once: half the cost at 100k
    counts = {state: len(found) for state, found in names.items()}
    pending_names = sorted(names["pending"])
    scheduled = waiting = 0
    oldest_pending = next_scheduled = None
    for name in pending_names[:SAMPLE]:
        job = spool.read("pending", name)
        if job is None:
            continue
        run_at = _time(job.get("run_at"))
        if run_at is not None and run_at > now:
            scheduled += 1
            next_scheduled = run_at if next_scheduled is None else min(next_scheduled, run_at)
            continue
        if job.get("after") and workflow.waiting_on(spool, job):
            waiting += 1
            continue
        created = _time(job.get("created_at"))
        if created is not None:
            oldest_pending = created if oldest_pending is None else min(oldest_pending, created)

    finished = sorted(((name, state) for state in ("completed", "dead") for name in names[state]),
                      reverse=True)[:SAMPLE]
    succeeded = 0
    durations = []
    for name, state in finished:
        job = spool.read(state, name)
        if job is None:
            continue
        succeeded += state == "completed"
        if isinstance(job.get("last_duration"), (int, float)):
            durations.append(job["last_duration"])
    return {
        "spool": spool.root,
        "counts": counts,
        "scheduled": scheduled,
        "waiting": waiting,
        "paused": workflow.is_paused(spool),
        "groups": workflow.groups(spool),
        "resources": resources.overview(spool),
        "sampled": len(pending_names) > SAMPLE,
        "workers": registry.records(spool),
        "oldest_pending": oldest_pending,
        "next_scheduled": next_scheduled,
        "recent_finished": len(finished),
        "success_rate": succeeded / len(finished) if finished else None,
        "mean_duration": sum(durations) / len(durations) if durations else None,
        "schedules": _schedules(spool),
    }


def _schedules(spool) -> list[dict[str, Any]]:
    """The next run of each schedule (docs/guide/schedules.md); the cron parser loads only for cron schedules."""
    from .features.schedules import upcoming
    return upcoming(spool)


def paused(spool) -> tuple[bool, list[str]]:
    """Whether the spool is paused, and the paused groups."""
    return workflow.is_paused(spool), workflow.paused_groups(spool)
