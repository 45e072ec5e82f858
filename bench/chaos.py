"""Chaos run: jobs append their id to a file while workers are SIGKILLed at random.

    python bench/chaos.py [--jobs 10000] [--workers 4] [--kill-every 0.2] [--seed 1]

A random worker is SIGKILLed (and a fresh one started) every --kill-every
seconds until every job is completed or dead. Then it counts: jobs lost (in
no folder), jobs stuck (not finished), and repeats (ids the file holds twice),
each of which must be a job whose worker died during its run (its history
says so, naming a worker this run killed). The scenario is the one
tests/scenarios/test_nothing_lost.py runs with smaller numbers (tests/support/chaos.py).
Exit status 0 when nothing is lost, stuck or repeated without cause.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from support.chaos import dump, run_chaos  # noqa: E402
from support.workers import WorkerProcesses  # noqa: E402

from queuectl.doctor import check  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--kill-every", type=float, default=0.2)
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--seed", type=int, default=1)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="queuectl-chaos-") as folder:
        spool_path = os.path.join(folder, "spool")
        workers = WorkerProcesses(spool_path, folder)
        try:
            report = run_chaos(workers, jobs=options.jobs, worker_count=options.workers,
                               kill_every=options.kill_every, ran_file=os.path.join(folder, "ran.txt"),
                               timeout=options.timeout, seed=options.seed)
        finally:
            workers.kill_all()
        print(report.summary())
        print(dump(report))
        crashes = workers.tracebacks()
        check(workers.spool, repair=True)
        unrepaired = check(workers.spool)
        print(f"worker tracebacks: {len(crashes)}; doctor after repair: {unrepaired or 'healthy'}")
        failed = (report.lost or report.stuck or report.unexplained_repeats or report.unknown_killers
                  or crashes or unrepaired)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
