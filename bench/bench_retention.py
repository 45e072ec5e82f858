"""Retention benchmark (issue 14): `python bench/bench_retention.py [--finished 100000] [--out FILE]`.

One worker sits on a spool holding `--finished` completed jobs (each with
its log); `--claims` pending `true` jobs land and it drains them. Twice per
repeat, in the same run, order alternating:

- "pruning": `keep_completed 1000`; the jobs land once the worker's sweeps
  have begun deleting (after the listing and the stat batches), so they are
  claimed while it deletes the other ~99,000 jobs in bounded batches;
- "no pruning": `keep_completed ""` (the default), the same spool shape.

In both, the jobs land no sooner than `--settle` seconds after the worker
started, so neither run claims while the freshly written spool is still
being written back.

Runs alternate their order between repeats. The claim rate counts the jobs after the first 20, from the job files' own
timestamps (first start to last finish). Target: pruning >= 0.8x of no
pruning (median of the repeats' ratios). `--recovery-interval` sets how often
the worker sweeps, and so prunes: 1 s by default, five times the config
default's pace, the harder case.
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


def fill_completed(spool, count: int) -> None:
    """`count` completed job files (as a worker leaves them) with a one-line log each, oldest first."""
    template = dumps(build({"id": "ID-PLACEHOLDER", "command": "true", "attempts": 1, "last_exit_code": 0},
                           defaults(), state="completed")).decode()
    head, tail = template.split("ID-PLACEHOLDER")
    completed, logs = spool.dir("completed"), spool.dir("logs")
    then = time.time() - 86400
    for number in range(count):
        job_id = f"old-{number:07d}"
        path = os.path.join(completed, job_id + ".json")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(head + job_id + tail)
        os.utime(path, (then + number / 1000, then + number / 1000))
        with open(os.path.join(logs, job_id + ".log"), "w", encoding="utf-8") as handle:
            handle.write("=== attempt 1 ===\n")
    os.sync()


def one_run(path: str, finished: int, claims: int, keep: str, interval: float, settle: float) -> dict:
    """A worker on `finished` completed jobs; `settle` seconds after it started, and once its
    pruning has begun (when `keep` is set), `claims` jobs land in pending/ and the rate it
    drains them at is measured."""
    spool = lib.new_spool(path, durable=False, recovery_interval=interval, keep_completed=keep)
    fill_completed(spool, finished)
    with lib.Workers(spool, 1) as workers:
        workers.wait_ready()
        started = time.monotonic()
        if keep:
            lib.wait_for(lambda: lib.count_files(spool.dir("completed")) < finished, 900, "pruning to begin",
                         interval=0.2)
        # Both runs start claiming as long after the spool was filled: the write-back of
        # 200,000 new files must not weigh on one run only.
        time.sleep(max(0.0, settle - (time.monotonic() - started)))
        waited = time.monotonic() - started
        before = lib.count_files(spool.dir("completed"))
        ids = lib.fill_pending(spool, claims)
        lib.wait_for(lambda: all(os.path.exists(os.path.join(spool.dir("completed"), i + ".json"))
                                 for i in ids[-50:]) and lib.count_files(spool.dir("pending")) == 0,
                     900, "the claims to finish", interval=0.1)
        lib.wait_for(lambda: all(os.path.exists(os.path.join(spool.dir("completed"), i + ".json"))
                                 for i in ids), 900, "every claim", interval=0.1)
        after = lib.count_files(spool.dir("completed"))
    times = sorted(lib.job_times(spool, "completed", ids))[20:]
    seconds = max(finish for _, finish in times) - times[0][0]
    return {"rate": len(times) / seconds, "pruned": before + claims - after, "seconds": seconds,
            "waited": waited}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--finished", type=int, default=100_000)
    parser.add_argument("--claims", type=int, default=2_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--recovery-interval", type=float, default=1,
                        help="seconds between a worker's sweeps, which prune [default: 1; the config's is 5]")
    parser.add_argument("--settle", type=float, default=40,
                        help="seconds from the worker's start to the claims, at least, in both runs [default: 40]")
    parser.add_argument("--dir", default=None, help="where the spools go [default: the system temp folder]")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="bench-retention-", dir=args.dir)
    rows, ratios = [], []
    try:
        for attempt in range(args.repeat):
            results = {}
            order = [("no pruning", ""), ("pruning", "1000")]
            for label, keep in order if attempt % 2 == 0 else order[::-1]:
                run_dir = os.path.join(workdir, f"{attempt}-{label.replace(' ', '-')}")
                # Spools are removed only at the end: on an ext4 without a journal every
                # file creation scans past the inodes freed in the last minutes, so a
                # cleanup between runs would slow the next run (README "Benchmarks").
                results[label] = one_run(run_dir, args.finished, args.claims, keep, args.recovery_interval,
                                         args.settle)
            ratio = results["pruning"]["rate"] / results["no pruning"]["rate"]
            ratios.append(ratio)
            for label, result in results.items():
                rows.append([str(attempt + 1), label, f"{result['waited']:.0f}", f"{result['rate']:.0f}",
                             str(result["pruned"]), f"{result['seconds']:.1f}",
                             f"{ratio:.2f}" if label == "pruning" else ""])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    lines = ["# bench_retention.py", "", *lib.machine(),
             f"- spools under: {args.dir or tempfile.gettempdir()}", f"- finished jobs: {args.finished:,}, "
             f"claims per run: {args.claims:,}, repeats: {args.repeat}, "
             f"recovery_interval: {args.recovery_interval:g} s",
             f"- claims land at least {args.settle:g} s after the worker started, in both runs", "",
             *lib.table(["repeat", "run", "s until the claims landed", "claims/s", "jobs pruned while claiming",
                         "claiming seconds",
                         "pruning / no pruning"], rows), "",
             f"median ratio: {lib.median(ratios):.2f} (target >= 0.80)"]
    lib.emit(lines, args.out)


if __name__ == "__main__":
    main()
