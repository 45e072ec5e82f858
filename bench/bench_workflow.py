"""Workflow benchmarks (issue 13): `python bench/bench_workflow.py [--depth N] [--repeat R] [--out FILE]`.

Every figure stands beside a baseline measured in the same run, interleaved
and repeated (medians), because the machine is shared:

a. claim+settle rate of one worker on a spool of `depth` pending `true` jobs:
   a plain queue (the baseline); the same number of jobs spread over 10
   groups with a limit of 2 each (every claim takes and frees a slot); and
   the same number with 10,000 of them waiting on a dependency that does
   not complete during the run (target for both: >= 0.8x the plain queue);
b. `Spool.enqueue` of one job: plain (the baseline), with `after` naming an
   existing job, with a `unique_key` (a new key each time); durable on and
   off (target: <= 1.1x the plain enqueue);
c. the same as `queuectl enqueue` processes (what a script pays).

Spools live in a temporary folder under --dir (default: the system's temp
folder, i.e. the disk users' spools would be on).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import benchlib as lib

from queuectl.core.config import defaults
from queuectl.core.job import build, dumps
from queuectl.features import workflow

GROUPS = 10
GROUP_LIMIT = 2
WAITING = 10_000


def _template(**fields) -> tuple[str, str]:
    text = dumps(build({"id": "ID-PLACEHOLDER", "command": "true", **fields}, defaults())).decode()
    head, tail = text.split("ID-PLACEHOLDER")
    return head, tail


def fill(spool, depth: int, kind: str) -> None:
    """`depth` pending jobs named in claim order; `kind` is plain, groups or deps."""
    pending = spool.dir("pending")
    templates = {"plain": _template()}
    if kind == "groups":
        for number in range(GROUPS):
            workflow.set_limit(spool, f"g{number}", GROUP_LIMIT)
            templates[number] = _template(group=f"g{number}")
    if kind == "deps":
        blocker = spool.enqueue({"id": "blocker", "command": "true", "run_at": "2999-01-01T00:00:00Z"})
        templates["waiting"] = _template(after=[blocker["id"]])
    every = max(1, depth // WAITING)
    for number in range(depth):
        if kind == "groups":
            head, tail = templates[number % GROUPS]
        elif kind == "deps" and number % every == 0 and number // every < WAITING:
            head, tail = templates["waiting"]
        else:
            head, tail = templates["plain"]
        job_id = f"job-{number:07d}"
        with open(os.path.join(pending, job_id + ".json"), "w", encoding="utf-8") as handle:
            handle.write(head + job_id + tail)
    os.sync()


def claim_rate(workdir: str, depth: int, claims: int, repeat: int) -> list[str]:
    kinds = ("plain", "groups", "deps")
    rates: dict[str, list[float]] = {kind: [] for kind in kinds}
    startups: dict[str, list[float]] = {kind: [] for kind in kinds}
    for attempt in range(repeat):
        # Each kind goes first in turn, and no spool is deleted before the end: on an
        # ext4 without a journal, deleting many files slows every file creation nearby
        # for minutes (bench/RESULTS.md), which would be charged to the next run.
        for kind in kinds[attempt % 3:] + kinds[:attempt % 3]:
            path = os.path.join(workdir, f"claims-{kind}-{attempt}")
            spool = lib.new_spool(path, durable=False)
            fill(spool, depth, kind)
            run = lib.claim_run(path, depth, claims)
            rates[kind].append(run["rate"])
            startups[kind].append(run["startup"])
    base = lib.median(rates["plain"])
    labels = {"plain": "plain queue (baseline)",
              "groups": f"over {GROUPS} groups, limit {GROUP_LIMIT} each",
              "deps": f"{WAITING:,} of them waiting on a dependency"}
    rows = [[labels[kind], f"{lib.median(rates[kind]):.0f}", f"{lib.median(rates[kind]) / base:.2f}x",
             " ".join(f"{rate:.0f}" for rate in rates[kind]), f"{lib.median(startups[kind]):.2f} s"]
            for kind in kinds]
    return [f"### a. One worker, {depth:,} pending jobs: claim+settle rate of jobs 21 to {claims}", "",
            f"Target: groups and dependencies >= 0.8x the plain queue. Durable off; medians of {repeat} "
            f"interleaved runs.", "",
            *lib.table(["spool", "claims/s", "vs plain", "runs", "start-up to first job"], rows), ""]


def enqueue_cost(workdir: str, jobs: int, repeat: int) -> list[str]:
    lines = [f"### b. `Spool.enqueue` of one job, {jobs} per round, {repeat} interleaved rounds", "",
             "Target: with `after` or `unique_key` <= 1.1x a plain enqueue.", ""]
    rows = []
    for durable in (False, True):
        path = os.path.join(workdir, f"enqueue-{durable}")
        spool = lib.new_spool(path, durable=durable)
        dependency = spool.enqueue("true")["id"]
        costs: dict[str, list[float]] = {"plain": [], "after": [], "unique": []}
        serial = 0
        for _ in range(repeat):
            for kind in costs:
                started = time.perf_counter()
                for _ in range(jobs):
                    serial += 1
                    if kind == "plain":
                        spool.enqueue("true")
                    elif kind == "after":
                        spool.enqueue("true", after=[dependency])
                    else:
                        spool.enqueue("true", unique=f"key-{serial}")
                costs[kind].append((time.perf_counter() - started) / jobs * 1e6)
        base = lib.median(costs["plain"])
        for kind in costs:
            value = lib.median(costs[kind])
            rows.append([f"durable {'on' if durable else 'off'}", kind, f"{value:.0f} µs", f"{value / base:.2f}x",
                         " ".join(f"{cost:.0f}" for cost in costs[kind])])
        shutil.rmtree(path)
    return lines + lib.table(["durable", "enqueue", "per job (median)", "vs plain", "rounds (µs)"], rows) + [""]


def cli_enqueue_cost(workdir: str, runs: int) -> list[str]:
    """`queuectl enqueue` as a process (what a shell script pays), interleaved."""
    import subprocess
    path = os.path.join(workdir, "enqueue-cli")
    spool = lib.new_spool(path)
    dependency = spool.enqueue("true")["id"]
    argv = lib.queuectl_argv(path) + ["enqueue"]
    variants = {"plain": [], "after": ["--after", dependency], "unique": ["--unique"]}
    costs: dict[str, list[float]] = {kind: [] for kind in variants}
    for number in range(runs):
        for kind, extra in variants.items():
            extra = extra + [f"key-{number}"] if kind == "unique" else extra
            started = time.perf_counter()
            subprocess.run(argv + extra + ["true"], check=True, stdout=subprocess.DEVNULL)
            costs[kind].append((time.perf_counter() - started) * 1000)
    shutil.rmtree(path)
    base = lib.median(costs["plain"])
    rows = [[kind, f"{lib.median(costs[kind]):.1f} ms", f"{lib.median(costs[kind]) / base:.2f}x"] for kind in costs]
    return [f"### c. `queuectl enqueue` as a process, durable on, {runs} interleaved runs each", "",
            *lib.table(["enqueue", "wall time (median)", "vs plain"], rows), ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=100_000, help="pending jobs in the claim runs")
    parser.add_argument("--claims", type=int, default=1500, help="jobs claimed per claim run")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--enqueues", type=int, default=100, help="jobs per enqueue round")
    parser.add_argument("--rounds", type=int, default=9, help="interleaved enqueue rounds")
    parser.add_argument("--cli-runs", type=int, default=15, help="interleaved `queuectl enqueue` processes")
    parser.add_argument("--dir", default=None, help="where the spools live [default: the temp folder]")
    parser.add_argument("--only", choices=("claims", "enqueue"), default=None)
    parser.add_argument("--tmpfs", action="store_true", help="spools in /dev/shm (no disk in the figures)")
    parser.add_argument("--out", default=None, help="append the results to this file")
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="queuectl-bench-workflow-", dir="/dev/shm" if args.tmpfs else args.dir)
    try:
        lines = [f"## Workflows (`python bench/bench_workflow.py --depth {args.depth} --repeat {args.repeat}`)", "",
                 *lib.machine(), f"Spools in {workdir} ({lib.file_system(workdir)}).", ""]
        if args.only in (None, "claims"):
            lines += claim_rate(workdir, args.depth, min(args.claims, args.depth - WAITING), args.repeat)
        if args.only in (None, "enqueue"):
            lines += enqueue_cost(workdir, args.enqueues, args.rounds)
            lines += cli_enqueue_cost(workdir, args.cli_runs)
        lib.emit(lines, args.out)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
