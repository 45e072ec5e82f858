"""A group's rate under contention: how close N workers come to the starts the rate allows.

`python bench/bench_rates.py [--python LABEL=PATH ...] [--fs KIND ...]`

Each run: a spool whose group `api` has the rate STARTS/WINDOW, JOBS `true`
jobs of that group, `queuectl worker start -n WORKERS --until-empty`. The
baseline is what the rate allows at best: JOBS at STARTS per WINDOW start in
ceil(JOBS/STARTS) bursts one WINDOW apart, so (JOBS - 1) starts after the
first span (ceil(JOBS/STARTS) - 1) windows. Every run also checks the guarantee: the most starts in any
window (never above STARTS). `--python` compares installs (each with queuectl
installed, `pip install .` of a commit) interleaved in one run.
Run it with the test extras installed: the window count is the tests' own (tests/support).
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import subprocess
import sys
import time

import benchlib as lib

from queuectl.core.job import parse_time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from support import most_in_a_window  # noqa: E402  the tests' count, so bench and tests judge alike


def starts_of(spool: str) -> list[float]:
    found = []
    for path in glob.glob(os.path.join(spool, "completed", "*.json")):
        with open(path, encoding="utf-8") as handle:
            stamp = json.load(handle)["started_at"]
        found.append(parse_time(stamp))
    return sorted(found)


def run(python: str, folder: str, starts: int, window: float, jobs: int, workers: int) -> tuple[float, int]:
    spool = os.path.join(folder, f"spool-{time.monotonic_ns()}")
    argv = [python, "-m", "queuectl", "--spool", spool]
    subprocess.run(argv + ["config", "set", "durable", "false"], check=True, capture_output=True)
    subprocess.run(argv + ["group", "set", "api", "--rate", f"{starts}/{window:g}s"], check=True, capture_output=True)
    subprocess.run(argv + ["enqueue", "-"], input="\n".join(['{"command": "true", "group": "api"}'] * jobs),
                   text=True, check=True, capture_output=True)
    subprocess.run(argv + ["worker", "start", "-n", str(workers), "--until-empty", "--quiet"], check=True,
                   capture_output=True, timeout=600)
    found = starts_of(spool)
    assert len(found) == jobs, f"{len(found)} of {jobs} jobs ran"
    rate = (len(found) - 1) / (found[-1] - found[0])
    return rate, most_in_a_window(found, window)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", action="append", metavar="LABEL=PATH",
                        help="an install to measure, repeatable [this Python]")
    parser.add_argument("--starts", type=int, default=20)
    parser.add_argument("--window", type=float, default=1.0)
    parser.add_argument("--jobs", type=int, default=120)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    lib.add_fs_option(parser)
    parser.add_argument("--out", default=None, help="append the results to this file")
    args = parser.parse_args()
    pythons = dict(item.split("=", 1) for item in (args.python or [f"this={sys.executable}"]))
    ceiling = (args.jobs - 1) / ((math.ceil(args.jobs / args.starts) - 1) * args.window)
    rows = []
    for kind in lib.chosen_file_systems(args.fs):
        with lib.file_system(kind) as folder:
            rates: dict[str, list[float]] = {label: [] for label in pythons}
            most: dict[str, int] = dict.fromkeys(pythons, 0)
            for _ in range(args.repeat):
                for label, python in pythons.items():
                    rate, peak = run(python, folder, args.starts, args.window, args.jobs, args.workers)
                    rates[label].append(rate)
                    most[label] = max(most[label], peak)
            for label in pythons:
                rate = lib.median(rates[label])
                rows.append([kind, label, f"{rate:.1f}", f"{rate / ceiling:.2f}x", f"{most[label]} (≤ {args.starts})",
                             " ".join(f"{value:.1f}" for value in rates[label])])
    lines = [f"### A rate of {args.starts}/{args.window:g}s, {args.jobs} `true` jobs, {args.workers} workers, "
             f"median of {args.repeat}", "",
             f"Baseline: the most the rate allows, {ceiling:.1f} starts/s from the first start to the last.", "",
             *lib.table(["fs", "install", "starts/s", "vs the most allowed", "most in a window", "runs"], rows), ""]
    lib.emit(lines, args.out)


if __name__ == "__main__":
    main()
