"""Evidence that nothing is lost: a census of the spool, crashes at chosen steps, and the chaos run.

- `census` reads every state folder and says, for each job id, where it is
  and what is wrong with it (two folders, bad JSON, a state field that
  disagrees with its folder, a file named after another id).
- `crash_at` forks a child that performs one spool operation and dies with
  os._exit at its Nth file-system step (write, fsync, rename, link, unlink),
  holding whatever flocks it had: the state a power-cut-free crash leaves.
- `next_worker` runs a real `Worker` in burst mode in this process, without
  its file watcher (burst mode needs none), so hundreds of crash states can
  each be handed to "the next worker" in milliseconds.
- `run_chaos` is the chaos scenario: workers run jobs that append their id
  to a file while one of them is SIGKILLed and replaced every few hundred
  milliseconds. Used by test_nothing_lost.py and bench/chaos.py.
"""

from __future__ import annotations

import collections
import json
import os
import random
import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from queuectl import Spool
from queuectl import worker as worker_module
from queuectl.core import fsops, lifecycle, registry
from queuectl.core.errors import InvalidJob
from queuectl.core.job import STATES, build, loads
from queuectl.core.spool import SUFFIX
from support.workers import WorkerProcesses, append_id, read_lines

CRASHED = 77
DIED = re.compile(r"^worker (\S+) died during the run$")


# -- what is in the spool ------------------------------------------------------

@dataclass
class Census:
    where: dict[str, list[str]] = field(default_factory=lambda: collections.defaultdict(list))
    problems: list[tuple[str, str]] = field(default_factory=list)  # (kind, what)
    kept: set[str] = field(default_factory=set)  # ids of invalid bytes kept as dead/<id>.invalid

    def problems_besides(self, *kinds: str) -> list[tuple[str, str]]:
        return [problem for problem in self.problems if problem[0] not in kinds]

    def state_of(self, job_id: str) -> str | None:
        states = self.where.get(job_id, [])
        return states[0] if len(states) == 1 else None


def census(spool_path: str) -> Census:
    """Every job file of every state folder, and every way it breaks "one valid file in one folder"."""
    spool = Spool(spool_path)
    found = Census()
    for state in STATES:
        for name in sorted(os.listdir(spool.dir(state))):
            path = os.path.join(spool.dir(state), name)
            if state == "dead" and name.endswith(".invalid"):
                found.kept.add(name[: -len(".invalid")])
                if not os.path.lexists(path[: -len(".invalid")] + SUFFIX):
                    found.problems.append(("missing-record", f"dead/{name}: kept bytes without their record"))
                    found.where[name[: -len(".invalid")]].append(state)  # in dead/ all the same
                continue
            if not name.endswith(SUFFIX) or name.startswith("."):
                found.problems.append(("invalid", f"{state}/{name}: not a job file name"))
                continue
            with open(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), "rb") as handle:
                data = handle.read()
            try:
                job = loads(data)
                if not (state == "dead" and isinstance(job, dict) and job.get("invalid") is True):
                    build(job, spool.config, state=state, stem=name[: -len(SUFFIX)])
            except InvalidJob as exc:
                found.problems.append(("invalid", f"{state}/{name}: {exc}"))
                continue
            if state == "pending" and not lifecycle.is_canonical(job, state, name):
                found.problems.append(("drop-in", f"pending/{name}: a valid drop-in, not adopted yet"))
                continue
            if f"{job['id']}{SUFFIX}" != name:
                found.problems.append(("invalid", f"{state}/{name}: holds id {job['id']!r}"))
            if job.get("state") != state:
                found.problems.append(("state-field", f"{state}/{name}: state field says {job.get('state')!r}"))
            found.where[job["id"]].append(state)
    for job_id, states in found.where.items():
        if len(states) > 1:
            found.problems.append(("duplicate", f"{job_id}: in {' and '.join(states)}"))
    return found


def assert_intact(spool_path: str, expected: set[str], *, may_lack: set[str] = frozenset(),
                  allowed_states: tuple[str, ...] = STATES, tolerate: tuple[str, ...] = ()) -> Census:
    """Each expected job is one valid file in one folder (ids in `may_lack` may be absent); extra ids are dead letters.

    `tolerate` names kinds of census problems that are not failures here.
    """
    found = census(spool_path)
    assert found.problems_besides(*tolerate) == [], found.problems
    for job_id in expected:
        if job_id in may_lack and job_id not in found.where:
            continue
        assert found.state_of(job_id) in allowed_states, (job_id, found.where.get(job_id))
    strangers = set(found.where) - expected
    assert strangers <= found.kept, f"jobs nobody enqueued, and not kept bytes: {strangers - found.kept}"
    return found


# -- crashing at a chosen step ---------------------------------------------------

STEPS = ((os, "write"), (os, "fsync"), (os, "rename"), (os, "replace"),
         (os, "link"), (os, "unlink"), (fsops, "_renameat2"))


def crash_at(step: int, prepare: Callable[[], object], act: Callable[[object], object], *,
             link_fallback: bool = False) -> bool:
    """Fork; the child runs `prepare()`, then `act(prepared)` and dies at its `step`-th file-system step.

    Returns True if the child died there, False if `act` finished in fewer
    steps (the sweep is over). With `link_fallback` the child moves files
    as on a file system without renameat2 (link, then unlink).
    """
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            if link_fallback:
                fsops._renameat2 = None
            prepared = prepare()
            _arm(step)
            act(prepared)
            code = 0
        except BaseException:
            import traceback
            traceback.print_exc()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    assert code in (0, CRASHED), f"the operation failed on its own (exit {code}) at step {step}"
    return code == CRASHED


def _arm(step: int) -> None:
    calls = 0

    def counted(original):
        def call(*args, **kwargs):
            nonlocal calls
            calls += 1
            if calls == step:
                os._exit(CRASHED)
            return original(*args, **kwargs)
        return call

    for module, name in STEPS:
        original = getattr(module, name)
        if original is not None:
            setattr(module, name, counted(original))


def sweep(setup: Callable[[int], str], prepare: Callable[[str], object], act: Callable[[str, object], object],
          check: Callable[[str], None], *, link_fallback: bool = False, limit: int = 60) -> tuple[int, str]:
    """Crash at step 1, 2, 3 ... of `act` until it completes, each time on a fresh spool from `setup(step)`.

    `check(spool_path)` judges each crash state. Returns how many steps `act`
    took and the spool where it ran to its end.
    """
    for step in range(1, limit):
        spool_path = setup(step)
        if not crash_at(step, lambda: prepare(spool_path), lambda prepared: act(spool_path, prepared),
                        link_fallback=link_fallback):
            return step - 1, spool_path
        check(spool_path)
    raise AssertionError(f"the operation did not finish within {limit} steps")


def next_worker(spool_path: str) -> None:
    """What the next worker does: recover, adopt, claim, run and settle every due job (burst mode)."""
    assert worker_module.Worker(Spool(spool_path), burst=True).run() == 0


def copy_spool(source: str, target: str) -> str:
    """A copy that keeps hard links (a link+unlink move cut short must stay one file under two names)."""
    subprocess.run(["cp", "-a", source, target], check=True)
    return target


# -- the chaos run -------------------------------------------------------------------

@dataclass
class ChaosReport:
    jobs: int
    kills: int = 0
    killed_pids: set[int] = field(default_factory=set)
    runs: collections.Counter = field(default_factory=collections.Counter)  # id -> times its command ran
    states: dict[str, str] = field(default_factory=dict)
    died: dict[str, list[str]] = field(default_factory=dict)  # id -> workers that died running it
    running_when_killed: set[str] = field(default_factory=set)  # in processing/ under a victim's name
    seconds: float = 0.0

    @property
    def lost(self) -> list[str]:
        return sorted(job_id for job_id in self.expected_ids if job_id not in self.states)

    @property
    def stuck(self) -> list[str]:
        return sorted(job_id for job_id, state in self.states.items() if state not in ("completed", "dead"))

    @property
    def repeats(self) -> dict[str, int]:
        return {job_id: count for job_id, count in self.runs.items() if count > 1}

    @property
    def unexplained_repeats(self) -> list[str]:
        """Ids that ran more often than once plus once for each worker that died running them."""
        return sorted(job_id for job_id, count in self.repeats.items() if count > 1 + len(self.died.get(job_id, [])))

    @property
    def unknown_killers(self) -> list[str]:
        """Workers that job histories say died mid-run, though this run did not kill them."""
        return sorted(name for names in self.died.values() for name in names
                      if worker_pid(name) not in self.killed_pids)

    @property
    def expected_ids(self) -> list[str]:
        return [chaos_id(number) for number in range(self.jobs)]

    def summary(self) -> str:
        dead = sum(state == "dead" for state in self.states.values())
        return (f"jobs {self.jobs}, kills {self.kills}, completed {len(self.states) - dead - len(self.stuck)}, "
                f"dead {dead} (by design: {len(range(0, self.jobs, FAIL_EVERY))}), lost {len(self.lost)}, "
                f"stuck {len(self.stuck)}, jobs whose worker died mid-run {len(self.died)} "
                f"(seen in processing/ under a worker just before its kill: {len(self.running_when_killed)}), "
                f"repeats {len(self.repeats)} ({sum(self.repeats.values()) - len(self.repeats)} extra runs, "
                f"unexplained {len(self.unexplained_repeats)}), "
                f"{self.seconds:.1f}s")


FAIL_EVERY = 50     # job 0, 50, 100 ... exits 3 with no retries: it must end dead, never run again
FLAKY_EVERY = 10    # job 5, 15, 25 ... fails its first attempt, then succeeds
SLOW_EVERY = 20     # job 7, 27, 47 ... sleeps a little, so kills land mid-run too


def chaos_id(number: int) -> str:
    return f"chaos-{number:05d}"


def chaos_jobs(count: int, ran_file: str) -> list[dict]:
    jobs = []
    for number in range(count):
        command = append_id(ran_file)
        job = {"id": chaos_id(number), "max_retries": 20}
        if number % FAIL_EVERY == 0:
            command, job["max_retries"] = f"{command}; exit 3", 0
        elif number % FLAKY_EVERY == 5:
            command = f'[ "$QUEUECTL_ATTEMPT" -gt 1 ] || exit 1; {command}'
        elif number % SLOW_EVERY == 7:
            command = f"sleep 0.2; {command}"
        job["command"] = command
        jobs.append(job)
    return jobs


def run_chaos(workers: WorkerProcesses, *, jobs: int, worker_count: int, kill_every: float, ran_file: str,
              timeout: float, seed: int = 1) -> ChaosReport:
    """Run `jobs` jobs on `worker_count` workers, SIGKILLing a random one every `kill_every` seconds."""
    spool = workers.spool
    for key, value in {"durable": "false", "backoff_base": "1", "backoff_max": "1",
                       "recovery_interval": "0.5"}.items():
        spool.set_config(key, value)
    rng = random.Random(seed)
    report = ChaosReport(jobs=jobs)
    started = time.monotonic()
    live = [workers.start() for _ in range(worker_count)]
    spool.enqueue_many(chaos_jobs(jobs, ran_file))
    deadline = started + timeout
    while time.monotonic() < deadline:
        counts = spool.counts()
        if counts["completed"] + counts["dead"] >= jobs and not counts["processing"]:
            break
        time.sleep(kill_every)
        victim = live.pop(rng.randrange(len(live)))
        running = _running_under(spool, victim.pid)
        victim.popen.kill()
        victim.popen.wait()
        report.kills += 1
        report.killed_pids.add(victim.pid)
        report.running_when_killed.update(running)
        live.append(workers.start())
    report.seconds = time.monotonic() - started
    workers.kill_all()
    _tally(spool, report, ran_file)
    return report


def _running_under(spool: Spool, pid: int) -> list[str]:
    """The jobs in processing/ claimed by the worker with this pid (its record gives its name)."""
    names = {record["name"] for record in registry.records(spool) if record.get("pid") == pid}
    return [job["id"] for job in spool.iter_jobs("processing") if job.get("worker") in names]


def _tally(spool: Spool, report: ChaosReport, ran_file: str) -> None:
    report.runs = collections.Counter(read_lines(ran_file))
    for state in STATES:
        for name in spool.names(state):
            job = spool.read(state, name)
            report.states[job["id"]] = state
            for entry in job.get("history") or []:
                match = DIED.match(entry.get("error") or "")
                if match:
                    report.died.setdefault(job["id"], []).append(match.group(1))


def worker_pid(name: str) -> int:
    """Worker names are `<host>-<pid>-<millis>`."""
    return int(name.rsplit("-", 2)[1])


def dump(report: ChaosReport) -> str:
    return json.dumps({"summary": report.summary(), "repeats": report.repeats, "died": report.died}, indent=1)
