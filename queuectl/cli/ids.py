"""Which jobs a listing shows, in which order, at the cost of a directory listing.

Newest first by enqueue time without reading the job files: a generated id
carries its creation time (job.new_id: base32 milliseconds; the older
`20261125T103000123456-4f2a` form is read too), so the order of 100,000
jobs costs one listing of each folder. An id a user chose carries no time:
its enqueue time is the modification time of its `ids/<id>` marker where the
spool has one, else of the job file itself, which every change rewrites, so
such a job sorts by its latest change instead (docs/guide/commands.md, "Listing jobs").
Only those ids cost a stat each.

Filters that need a job's fields (a group, the derived states `waiting` and
`scheduled`) read the files, newest first, until the page is full, and
every file to count what matched.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

from ..core.job import ID_ALPHABET, STATES, parse_time
from ..core.spool import Spool, id_of

SORTS = ("created", "updated", "id", "priority")
DERIVED = ("waiting", "scheduled", "held")  # shown in a listing's STATE column; their files are in pending/
LIST_STATES = (*STATES, *DERIVED)

_DIGIT = {char: value for value, char in enumerate(ID_ALPHABET)}
_NEW = re.compile(f"[{ID_ALPHABET}]{{5}}-[{ID_ALPHABET}]{{8}}")
_OLD = re.compile(r"(\d{8}T\d{6})(\d{6})-[0-9a-f]{4}")


def id_time(job_id: str) -> float | None:
    """The creation time a generated id carries (seconds since the epoch), None for a chosen id."""
    if _NEW.fullmatch(job_id):
        millis = 0
        for char in job_id[:5] + job_id[6:10]:
            millis = millis * 32 + _DIGIT[char]
        return millis / 1000
    match = _OLD.fullmatch(job_id)
    if match:
        stamp = datetime.strptime(match.group(1), "%Y%m%dT%H%M%S").replace(tzinfo=timezone.utc)
        return stamp.timestamp() + int(match.group(2)) / 1e6
    return None


def _mtime(path: str) -> float:
    try:
        return os.stat(path, follow_symlinks=False).st_mtime
    except OSError:
        return 0.0


def created_time(spool: Spool, state: str, name: str) -> float:
    job_id = id_of(name)
    stamp = id_time(job_id)
    if stamp is not None:
        return stamp
    marker = os.path.join(spool.root, "ids", job_id)
    if os.path.lexists(marker):
        return _mtime(marker)
    return _mtime(os.path.join(spool.root, state, name))


def ordered(spool: Spool, states: Iterable[str], sort: str) -> list[tuple[str, str]]:
    """(state, file name) of every job in `states`' folders, in the listing's order.

    `created` and `updated`: newest first; `id`: by id text; `priority`:
    highest first (reads every file), then newest.
    """
    entries = [(state, name) for state in states for name in spool.names(state)]
    if sort == "id":
        return sorted(entries, key=lambda entry: entry[1])
    if sort == "updated":
        return sorted(entries, key=lambda e: (_mtime(os.path.join(spool.root, *e)), e[1]), reverse=True)
    keyed = sorted(entries, key=lambda e: (created_time(spool, *e), e[1]), reverse=True)
    if sort == "priority":
        priorities = {}
        for state, name in keyed:
            job = spool.read(state, name)
            priorities[name] = _number((job or {}).get("priority"))
        keyed.sort(key=lambda entry: -priorities[entry[1]])  # stable: newest first within a priority
    return keyed


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def waiting_on(spool: Spool, job: dict) -> list[dict]:
    """The `after` jobs a pending job still waits for: [{id, state}] of those not completed."""
    after = job.get("after")
    if job.get("state") != "pending" or not isinstance(after, list):
        return []
    found = []
    for dep in after:
        try:
            state = spool.find(str(dep))
        except Exception:  # an id no job can have: the worker says so in the job's last_error
            state = None
        if state != "completed":
            found.append({"id": dep, "state": state or "missing"})
    return found


def shown_state(spool: Spool, job: dict, now: float) -> str:
    """The state a listing shows: the folder's, or for a pending job `waiting` / `scheduled` / `held`."""
    state = str(job.get("state", "?"))
    if state != "pending":
        return state
    if job.get("held"):
        return "held"
    run_at = job.get("run_at")
    if isinstance(run_at, str):
        try:
            if parse_time(run_at) > now:
                return "scheduled"
        except Exception:
            pass
    if job.get("after") and waiting_on(spool, job):
        return "waiting"
    return state


def page(spool: Spool, states: list[str] | None, *, limit: int | None, group: str | None = None,
         sort: str = "created") -> tuple[list[dict], int]:
    """(up to `limit` jobs in the listing's order, how many matched)."""
    wanted = list(states or STATES)
    folders = sorted({state if state in STATES else "pending" for state in wanted}, key=STATES.index)
    entries = ordered(spool, folders, sort)
    needs_fields = group is not None or any(state in DERIVED for state in wanted)
    if not needs_fields:
        return spool.read_listed(entries, limit), len(entries)
    jobs: list[dict] = []
    now = time.time()
    total = 0
    for state, name in entries:
        job = spool.read(state, name)
        if job is None or (group is not None and job.get("group") != group):
            continue
        if state == "pending" and "pending" not in wanted and shown_state(spool, job, now) not in wanted:
            continue
        total += 1
        if limit is None or len(jobs) < limit:
            jobs.append(job)
    return jobs, total
