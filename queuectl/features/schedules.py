"""Recurring jobs: schedules/<name>.json, and the worker sweep that enqueues each due slot exactly once.

Promises (docs/guide/schedules.md):
- a schedule is one JSON file, `schedules/<name>.json`, written like a job
  (temporary file, then rename; a drop-in follows the Maildir rule); a
  file that is not a valid schedule is set aside untouched as
  `schedules/<name>.invalid`, with the reason in `<name>.invalid.txt`;
- every due slot becomes exactly one job, `<name>-<slot>` (slot in UTC,
  `20261201T101500Z`), however many workers on however many hosts sweep:
  a slot is claimed by renaming a private folder onto
  `schedules/<name>.fired/<slot>/`, which the file system lets only one
  rename do (a non-empty folder is never replaced); the claimed folder
  holds the job as `job.json` until it is renamed into pending/, so a
  crash between claim and publish leaves a job any later sweep publishes,
  and never a second claim;
- slots missed while no worker ran follow the schedule's `missed` policy:
  `skip` (only slots less than `grace` seconds late run), `once` (plus the
  newest missed one), `all` (plus up to CATCH_UP_CAP missed ones).
Fails: a bad schedule from the CLI raises InvalidJob and writes nothing.

Only `--cron` schedules import the parser (cronsim), and only when a
slot is computed, so commands that do not touch schedules never pay for it.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import stat
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

from ..core import fsops
from ..core.errors import DuplicateJob, InvalidJob, JobNotFound
from ..core.job import build, dumps, iso, loads, parse_time

FOLDER = "schedules"
SUFFIX = ".json"
NAME_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,63}")
SLOT_PATTERN = re.compile(r"\d{8}T\d{6}Z")
MISSED = ("skip", "once", "all")
# `all` runs at most this many missed slots after a downtime (the newest ones).
CATCH_UP_CAP = 100
DEFAULT_GRACE = 60
# Claimed-slot folders kept per schedule; older ones are removed behind `floor`.
KEEP_MARKERS = 100
# A dropped-in schedule that does not parse is judged this long after its last change.
DROP_GRACE = 5.0
# A `.claim-*` folder older than this was left by a claimer that died before its rename.
STALE_CLAIM = 600.0
# Past this many cron steps between the last fired slot and now, slots are searched from
# a day before now instead (a per-second schedule after a long downtime).
MAX_STEPS = 100_000
SCHEDULE_KEYS = ("name", "cron", "every", "tz", "missed", "grace", "paused", "created_at", "resumed_at", "job")
# Job fields a schedule may not set: the sweep gives each slot's job its own.
RESERVED_JOB_KEYS = ("id", "state", "attempts", "run_at", "next_run_at", "schedule", "slot")


# -- names and slots ---------------------------------------------------------

def check_name(name: Any) -> str:
    if not isinstance(name, str) or NAME_PATTERN.fullmatch(name) is None:
        shown = name if isinstance(name, str) and len(name) <= 40 else str(name)[:40]
        raise InvalidJob(f"invalid schedule name {shown!r}: use 1-64 characters of A-Z a-z 0-9 _ - "
                         f"not starting with '-'")
    return name


def slot_text(slot: int) -> str:
    return datetime.fromtimestamp(slot, timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def slot_time(text: str) -> int:
    return int(datetime.strptime(text, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc).timestamp())


def job_id(name: str, slot: int) -> str:
    """`backup-20261201T101500Z`: the job of one slot (ids may not hold '@' or ':')."""
    return f"{name}-{slot_text(slot)}"


def folder(spool) -> str:
    return spool.dir(FOLDER)


def fired_dir(spool, name: str) -> str:
    return os.path.join(folder(spool), name + ".fired")


# -- validation --------------------------------------------------------------

def parse_every(text: Any) -> int:
    """`30s`, `5m`, `2h`, `1d` or a number of seconds: a whole number of seconds >= 1."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    elif isinstance(text, str) and text.strip():
        value = text.strip().lower()
        scale = units.get(value[-1:])
        try:
            seconds = float(value[:-1] if scale else value) * (scale or 1)
        except ValueError:
            raise InvalidJob(f"every {text!r} is not a period like 30s, 5m, 2h or 1d") from None
    else:
        raise InvalidJob("every must be a period like 30s, 5m or a number of seconds")
    if not seconds.is_integer() or not 1 <= seconds <= 366 * 86400:
        raise InvalidJob(f"every {text!r} must be a whole number of seconds between 1s and 366d")
    return int(seconds)


def _zone(tz: Any):
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    if tz is None:
        return timezone.utc
    if not isinstance(tz, str) or not tz:
        raise InvalidJob("tz must be a time zone name like Europe/Berlin")
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise InvalidJob(f"unknown time zone {tz!r} (use an IANA name like Europe/Berlin or UTC)") from None


def _check_cron(expr: Any) -> str:
    from cronsim import CronSim, CronSimError

    if not isinstance(expr, str) or not expr.strip():
        raise InvalidJob("cron must be a cron expression like '*/5 * * * *'")
    try:
        CronSim(expr, datetime.now(timezone.utc))
    except CronSimError as exc:
        raise InvalidJob(f"invalid cron expression {expr!r}: {exc}") from None
    except (ValueError, IndexError, KeyError):
        raise InvalidJob(f"invalid cron expression {expr!r}") from None
    return expr.strip()


def validate(raw: Any, name: str, config: dict) -> dict:
    """A complete schedule from its file's fields; InvalidJob says what is wrong."""
    if not isinstance(raw, dict):
        raise InvalidJob("a schedule must be a JSON object")
    schedule = dict(raw)
    if schedule.get("name") is None:
        schedule["name"] = name
    if schedule["name"] != name:
        raise InvalidJob(f"name {schedule['name']!r} does not match the file name {name!r}")
    check_name(name)
    if (schedule.get("cron") is None) == (schedule.get("every") is None):
        raise InvalidJob("give exactly one of cron and every")
    if schedule.get("cron") is not None:
        schedule["cron"] = _check_cron(schedule["cron"])
    else:
        schedule["every"] = parse_every(schedule["every"])
        if schedule.get("tz") is not None:
            raise InvalidJob("tz applies to cron schedules only (every counts seconds since 1970 UTC)")
    schedule.setdefault("tz", None)
    _zone(schedule["tz"])
    schedule.setdefault("missed", "skip")
    if schedule["missed"] not in MISSED:
        raise InvalidJob(f"missed must be one of {', '.join(MISSED)}, not {schedule['missed']!r}")
    grace = schedule.setdefault("grace", DEFAULT_GRACE)
    if not isinstance(grace, (int, float)) or isinstance(grace, bool) or not 0 <= grace <= 86400 * 366:
        raise InvalidJob("grace must be a number of seconds >= 0")
    paused = schedule.setdefault("paused", False)
    if not isinstance(paused, bool):
        raise InvalidJob("paused must be true or false")
    for field in ("created_at", "resumed_at"):
        value = schedule.setdefault(field, None)
        if value is not None:
            if not isinstance(value, str):
                raise InvalidJob(f"{field} must be an ISO-8601 time or null")
            schedule[field] = iso(parse_time(value))
    template = schedule.get("job")
    if template is None and isinstance(schedule.get("command"), str):
        template = {"command": schedule.pop("command")}  # the short form of a drop-in
    if not isinstance(template, dict):
        raise InvalidJob("job must be an object of job fields with at least a command")
    taken = [key for key in RESERVED_JOB_KEYS if key in template]
    if taken:
        raise InvalidJob(f"job must not set {', '.join(taken)}: each slot's job gets its own")
    build({**template, "id": job_id(name, 0)}, config)  # the job each slot will get must be valid
    schedule["job"] = template
    return schedule


# -- the files ---------------------------------------------------------------

def _path(spool, name: str) -> str:
    return os.path.join(folder(spool), check_name(name) + SUFFIX)


def add(spool, name: str, fields: dict) -> dict:
    """Write a new schedule; DuplicateJob if one with this name exists."""
    check_name(name)
    schedule = validate({**fields, "name": name, "created_at": fields.get("created_at") or iso(time.time())},
                        name, spool.config)
    schedule = {key: schedule[key] for key in SCHEDULE_KEYS if key in schedule} | schedule
    try:
        fsops.publish(spool.dir("tmp"), _path(spool, name), dumps(schedule), durable=spool.durable)
    except FileExistsError:
        raise DuplicateJob(f"a schedule named {name!r} already exists") from None
    if spool.durable:
        fsops.fsync_dir(folder(spool))
    return schedule


def get(spool, name: str) -> dict:
    """One schedule with `next_run` and `last_slot`; JobNotFound if there is none."""
    raw, error = _read(spool, check_name(name) + SUFFIX)
    if raw is None and error is None:
        raise JobNotFound(f"no schedule named {name!r}")
    if error is not None:
        raise InvalidJob(f"schedule {name!r} is not valid: {error}")
    try:
        schedule = validate(raw, name, spool.config)
    except InvalidJob as exc:
        raise InvalidJob(f"schedule {name!r} is not valid: {exc}") from None
    return _with_next(spool, schedule, time.time())


def remove(spool, name: str) -> None:
    """Delete the schedule file; its claimed-slot folders stay, so a schedule re-added
    under the same name never runs a slot twice."""
    try:
        os.unlink(_path(spool, name))
    except FileNotFoundError:
        raise JobNotFound(f"no schedule named {name!r}") from None


def set_paused(spool, name: str, paused: bool) -> dict:
    """Pause or resume. Slots that pass while paused are skipped, whatever `missed` says."""
    schedule = get(spool, name)
    schedule["paused"] = paused
    if not paused:
        schedule["resumed_at"] = iso(time.time())
    stored = {key: value for key, value in schedule.items() if key not in ("next_run", "last_slot")}
    fsops.publish(spool.dir("tmp"), _path(spool, name), dumps(stored), durable=spool.durable, replace=True)
    return _with_next(spool, stored, time.time())


def _read(spool, file_name: str) -> tuple[Any, str | None]:
    """(fields, None); (None, why not); (None, None) when gone."""
    data, why = fsops.read_file(os.path.join(folder(spool), file_name), 1024 * 1024)
    if data is None:
        return None, why
    try:
        return loads(data), None
    except InvalidJob as exc:
        return None, str(exc)


def _schedule_names(spool) -> list[str]:
    return sorted(entry for entry in os.listdir(folder(spool))
                  if entry.endswith(SUFFIX) and not entry.startswith("."))


def listing(spool) -> list[dict]:
    """Every schedule with its next run; invalid files as {name, error}."""
    now = time.time()
    found = []
    for file_name in _schedule_names(spool):
        name = file_name.removesuffix(SUFFIX)
        raw, error = _read(spool, file_name)
        if raw is None and error is None:
            continue
        try:
            if error is not None:
                raise InvalidJob(error)
            found.append(_with_next(spool, validate(raw, name, spool.config), now))
        except InvalidJob as exc:
            found.append({"name": name, "error": str(exc)})
    for entry in sorted(os.listdir(folder(spool))):
        if entry.endswith(".invalid") and not entry.startswith("."):
            found.append({"name": entry.removesuffix(".invalid"), "error": _invalid_reason(spool, entry),
                          "set_aside": entry})
    return found


def _invalid_reason(spool, entry: str) -> str:
    try:
        with open(os.path.join(folder(spool), entry + ".txt"), encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError:
        return "set aside as invalid"


def _with_next(spool, schedule: dict, now: float) -> dict:
    last = _last_slot(_slot_names(fired_dir(spool, schedule["name"])))
    shown = dict(schedule)
    shown["last_slot"] = iso(last) if last is not None else None
    upcoming = None if schedule["paused"] else next_slot(schedule, max(now, last or 0))
    shown["next_run"] = iso(upcoming) if upcoming is not None else None
    return shown


def set_aside(spool, file_name: str, reason: str) -> None:
    """An invalid schedule file keeps its bytes as <name>.invalid, the reason beside it."""
    base = os.path.join(folder(spool), file_name.removesuffix(SUFFIX))
    target = base + ".invalid"
    if os.path.lexists(target):
        target = f"{base}.{int(time.time())}.invalid"
    fsops.publish(spool.dir("tmp"), target + ".txt", (reason + "\n").encode(), durable=spool.durable,
                  replace=True)
    try:
        os.rename(os.path.join(folder(spool), file_name), target)
    except FileNotFoundError:
        os.unlink(target + ".txt")


# -- slots -------------------------------------------------------------------

def slots_between(schedule: dict, start: float, end: float) -> Iterator[int]:
    """The schedule's slots s with start < s <= end, ascending."""
    every = schedule.get("every")
    if every:
        first = (int(start) // every + 1) * every
        yield from range(first, int(end) + 1, every)
        return
    from cronsim import CronSim

    zone = _zone(schedule.get("tz"))
    begin = datetime.fromtimestamp(int(start), timezone.utc).astimezone(zone)
    previous = int(start)
    try:
        for moment in CronSim(schedule["cron"], begin):
            slot = int(moment.timestamp())
            if slot > end:
                return
            # cronsim follows Debian cron across DST changes: a fixed-time slot in the
            # repeated hour may come out before `start`; it is not a new slot.
            if slot > previous:
                previous = slot
                yield slot
    except StopIteration:  # no match in the next 50 years
        return


def next_slot(schedule: dict, after: float) -> int | None:
    return next(iter(slots_between(schedule, after, after + 60 * 366 * 86400)), None)


def due_slots(schedule: dict, start: float, now: float) -> list[tuple[int, bool]]:
    """(slot, catch_up) of the slots to fire now, ascending: late ones within `grace`, missed ones by policy."""
    grace = schedule["grace"]
    if start < now - grace - 86400 and _too_many(schedule, start, now):
        start = now - grace - 86400
    missed: list[int] = []
    on_time: list[int] = []
    for slot in slots_between(schedule, start, now):
        if now - slot <= grace:
            on_time.append(slot)
        else:
            missed.append(slot)
            if len(missed) > CATCH_UP_CAP:
                del missed[0]
    policy = schedule["missed"]
    catch_up = missed[-1:] if policy == "once" else missed[-CATCH_UP_CAP:] if policy == "all" else []
    return [(slot, True) for slot in catch_up] + [(slot, False) for slot in on_time]


def _too_many(schedule: dict, start: float, now: float) -> bool:
    for count, _ in enumerate(slots_between(schedule, start, now)):
        if count >= MAX_STEPS:
            return True
    return False


def _slot_names(directory: str) -> list[str]:
    try:
        return sorted(entry for entry in os.listdir(directory) if SLOT_PATTERN.fullmatch(entry))
    except FileNotFoundError:
        return []


def _last_slot(names: list[str]) -> int | None:
    return slot_time(names[-1]) if names else None


def _floor(directory: str) -> str:
    try:
        with open(os.path.join(directory, "floor"), encoding="ascii") as handle:
            return handle.read().strip()
    except (OSError, ValueError):
        return ""


# -- the sweep ---------------------------------------------------------------

def sweep(spool, worker: str, now: float | None = None) -> float | None:
    """Fire every due slot of every schedule; returns when the next slot is due (None: none is)."""
    now = time.time() if now is None else now
    upcoming = None
    for file_name in _schedule_names(spool):
        name = file_name.removesuffix(SUFFIX)
        schedule = _load_for_sweep(spool, file_name, name, now)
        if schedule is None:
            continue
        try:
            following = _sweep_one(spool, worker, file_name, name, schedule, now)
        except InvalidJob:
            continue  # the config changed under a valid schedule (a job it can no longer build)
        if following is not None:
            upcoming = following if upcoming is None else min(upcoming, following)
    return upcoming


def _sweep_one(spool, worker: str, file_name: str, name: str, schedule: dict, now: float) -> int | None:
    """One schedule's part of the sweep; returns its next slot."""
    directory = fired_dir(spool, name)
    fsops.make_folder(directory)
    names = _slot_names(directory)
    _publish_leftovers(spool, name, directory, names)
    if schedule["paused"]:
        return None
    last = _last_slot(names)
    start = max(t for t in (last, _time(schedule["created_at"]), _time(schedule["resumed_at"]),
                            _mtime_if_new(spool, file_name, schedule)) if t is not None)
    for slot, catch_up in due_slots(schedule, start, now):
        fire(spool, worker, name, schedule, slot, catch_up=catch_up)
        last = slot
    if len(names) > KEEP_MARKERS + KEEP_MARKERS // 5:
        prune_markers(spool, directory)
    _remove_stale_claims(directory, now)
    return next_slot(schedule, max(now, last or 0))


def _time(value: Any) -> float | None:
    return parse_time(value) if isinstance(value, str) else None


def _mtime_if_new(spool, file_name: str, schedule: dict) -> float | None:
    """A dropped-in schedule without created_at starts from when its file was written."""
    if schedule["created_at"] is not None:
        return None
    try:
        return os.stat(os.path.join(folder(spool), file_name)).st_mtime
    except FileNotFoundError:
        return None


def _load_for_sweep(spool, file_name: str, name: str, now: float) -> dict | None:
    raw, error = _read(spool, file_name)
    if raw is None and error is None:
        return None
    try:
        if error is not None:
            raise InvalidJob(error)
        return validate(raw, name, spool.config)
    except InvalidJob as exc:
        path = os.path.join(folder(spool), file_name)
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return None
        # Only bytes that do not parse may still be being written (a whole object cannot grow).
        if (error is not None and stat.S_ISREG(info.st_mode)
                and (now - info.st_mtime < DROP_GRACE or fsops.open_for_writing(info))):
            return None
        set_aside(spool, file_name, str(exc))
        return None


def fire(spool, worker: str, name: str, schedule: dict, slot: int, *, catch_up: bool = False) -> bool:
    """Claim `slot` and publish its job; False when another worker claimed it first.

    `catch_up`: the slot was missed (run by the `once` or `all` policy); the job says so.
    """
    directory = fired_dir(spool, name)
    slot_name = slot_text(slot)
    target = os.path.join(directory, slot_name)
    if os.path.lexists(target):
        return False
    fields = {**schedule["job"], "id": job_id(name, slot), "schedule": name, "slot": iso(slot)}
    if catch_up:
        fields["catch_up"] = True
    job = build(fields, spool.config)
    durable = spool.durable
    token = f"{worker}.{os.getpid()}.{os.urandom(6).hex()}"
    claim = os.path.join(directory, f".claim-{token}")
    fsops.make_folder(directory)
    os.mkdir(claim, 0o700)
    try:
        _write(os.path.join(claim, "owner"), json.dumps({"worker": worker, "token": token,
                                                         "at": iso(time.time())}).encode(), durable)
        _write(os.path.join(claim, "job.json"), dumps(job), durable)
        if durable:
            fsops.fsync_dir(claim)
        # The claim: a rename onto a folder that exists and is not empty fails, on every
        # file system (ENOTEMPTY or EEXIST), and every claimed folder keeps its `owner`.
        os.rename(claim, target)
    except OSError as exc:
        if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOENT):
            shutil.rmtree(claim, ignore_errors=True)
            raise
        shutil.rmtree(claim, ignore_errors=True)
        # A network file system may retry a rename that succeeded and report ENOENT
        # (or EEXIST): the token in `owner` says whose claim the slot's folder is.
        if _owner_token(target) != token:
            return False
    if durable:
        fsops.fsync_dir(directory)
    publish_claimed(spool, name, slot_name)
    return True


def _write(path: str, data: bytes, durable: bool) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        fsops._write_all(fd, data, durable)
    finally:
        os.close(fd)


def _owner_token(slot_dir: str) -> str | None:
    try:
        with open(os.path.join(slot_dir, "owner"), encoding="utf-8") as handle:
            return json.load(handle).get("token")
    except (OSError, ValueError, AttributeError):
        return None


def publish_claimed(spool, name: str, slot_name: str) -> str:
    """Move a claimed slot's job into pending/: 'published', 'gone' (someone else did) or 'discarded'.

    The floor check makes a claim taken from a stale view harmless: markers
    below the floor may have been removed (the floor is raised before any
    removal), so a slot below it may have run already and is not published.
    """
    directory = fired_dir(spool, name)
    source = os.path.join(directory, slot_name, "job.json")
    if slot_name < _floor(directory):
        try:
            os.rename(source, os.path.join(directory, slot_name, "discarded.json"))
        except FileNotFoundError:
            return "gone"
        return "discarded"
    the_id = f"{name}-{slot_name}"
    target = spool.path("pending", the_id)
    try:
        # The id's marker first, a name of the slot's job file (docs/decisions/identity.md):
        # taken by another job, someone enqueued that id by hand, and it is not replaced.
        taken = not spool.take_id(the_id, source)
        if not taken:
            try:
                fsops.rename_noreplace(source, target)
            except FileExistsError:
                spool.drop_id(the_id, source)
                taken = True
    except FileNotFoundError:
        return "gone"
    if taken:
        try:
            os.rename(source, os.path.join(directory, slot_name, "duplicate.json"))
        except FileNotFoundError:
            return "gone"
        return "discarded"
    if spool.durable:
        fsops.fsync_dir(spool.dir("pending"))
        fsops.fsync_dir(os.path.join(directory, slot_name))
    return "published"


def _publish_leftovers(spool, name: str, directory: str, names: list[str]) -> None:
    """Publish jobs whose claimer died between the claim and the publish."""
    for slot_name in names:
        if os.path.lexists(os.path.join(directory, slot_name, "job.json")):
            publish_claimed(spool, name, slot_name)


def prune_markers(spool, directory: str) -> int:
    """Remove all but the newest KEEP_MARKERS claimed-slot folders; the floor is raised first."""
    names = _slot_names(directory)
    if len(names) <= KEEP_MARKERS:
        return 0
    floor = names[-KEEP_MARKERS]
    if floor > _floor(directory):
        fsops.publish(spool.dir("tmp"), os.path.join(directory, "floor"), floor.encode(),
                      durable=spool.durable, replace=True)
    removed = 0
    for slot_name in names[:-KEEP_MARKERS]:
        path = os.path.join(directory, slot_name)
        if os.path.lexists(os.path.join(path, "job.json")):
            continue  # not published yet: publish_claimed decides against the floor
        shutil.rmtree(path, ignore_errors=True)
        removed += 1
    return removed


def _remove_stale_claims(directory: str, now: float) -> None:
    for entry in os.listdir(directory):
        if entry.startswith(".claim-"):
            path = os.path.join(directory, entry)
            try:
                if now - os.lstat(path).st_mtime > STALE_CLAIM:
                    shutil.rmtree(path, ignore_errors=True)
            except FileNotFoundError:
                continue


def upcoming(spool, limit: int = 20) -> list[dict]:
    """(name, next_run, paused) of valid schedules, soonest first: for `status` and the dashboard."""
    rows = [entry for entry in listing(spool) if "error" not in entry]
    rows.sort(key=lambda entry: (entry["next_run"] is None, entry["next_run"] or ""))
    return [{"name": entry["name"], "next_run": entry["next_run"], "last_slot": entry["last_slot"],
             "paused": entry["paused"], "cron": entry.get("cron"), "every": entry.get("every"),
             "tz": entry.get("tz"), "command": entry["job"].get("command")} for entry in rows[:limit]]
