"""A/B of two installs of queuectl: `python bench/bench_ab.py --a VENV --b VENV [--fs KIND ...]`.

Each VENV is a virtual environment with queuectl installed from a checkout
(`pip install .`, not editable: an editable install adds an import hook to
every start). On each file system, interleaved A, B, B, A, ...:

- throughput: `--jobs` trivial jobs (`true`) enqueued in one call of that
  install's own `enqueue`, then `worker start -n 2 --burst` (`--workers`) with
  `durable` off (or on, `--durable`), timed from the workers' spawn to their
  exit; and the CPU it took a job (the workers' and their shells', from
  wait4), which the machine's other load sways far less than the wall clock;
- start-up: `queuectl enqueue true` as a whole process, `--starts` runs.

Medians of each; the figure is B / A, measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import benchlib as lib


def queuectl(venv: str) -> str:
    return os.path.join(venv, "bin", "queuectl")


def throughput(venv: str, folder: str, jobs: int, durable: bool, workers: int) -> tuple[float, float]:
    """Jobs a second, and CPU seconds a job (the workers' and every process they waited for)."""
    spool = tempfile.mkdtemp(dir=folder)
    os.rmdir(spool)
    subprocess.run([queuectl(venv), "--spool", spool, "config", "set", "durable", "true" if durable else "false"],
                   check=True, stdout=subprocess.DEVNULL)
    lines = "\n".join(json.dumps({"command": "true"}) for _ in range(jobs)) + "\n"
    subprocess.run([queuectl(venv), "--spool", spool, "enqueue", "-"], input=lines.encode(),
                   check=True, stdout=subprocess.DEVNULL)
    started = time.perf_counter()
    process = subprocess.Popen([queuectl(venv), "--spool", spool, "worker", "start", "-n", str(workers), "--burst",
                                "--quiet"], stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"{venv}: the workers exited with status {status}")
    done = lib.count_files(os.path.join(spool, "completed"))
    if done != jobs:
        raise SystemExit(f"{venv}: {done} of {jobs} jobs completed")
    return jobs / elapsed, (usage.ru_utime + usage.ru_stime) / jobs


def start_up(venv: str, spool: str) -> float:
    started = time.perf_counter()
    subprocess.run([queuectl(venv), "--spool", spool, "enqueue", "true"], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", required=True, help="the baseline's venv")
    parser.add_argument("--b", required=True, help="the venv measured against it")
    parser.add_argument("--jobs", type=int, default=1500, help="jobs per throughput run [1500]")
    parser.add_argument("--runs", type=int, default=5, help="throughput runs of each [5]")
    parser.add_argument("--starts", type=int, default=30, help="start-up runs of each [30]")
    parser.add_argument("--workers", type=int, default=2, help="workers of each throughput run [2]")
    parser.add_argument("--durable", action="store_true", help="throughput with durable on")
    parser.add_argument("--out", help="also write the report (markdown) to this file")
    lib.add_fs_option(parser)
    args = parser.parse_args()
    lines = ["### Machine", *lib.machine(), "",
             f"### A/B: {args.runs} throughput runs ({args.jobs} `true` jobs, {args.workers} workers, durable "
             f"{'on' if args.durable else 'off'}) and {args.starts} starts of `enqueue` each, interleaved",
             "", "| fs | A jobs/s | B jobs/s | B ÷ A | A CPU µs a job | B CPU µs a job | B ÷ A "
             "| A start-up ms | B start-up ms | B ÷ A |", "|---|---|---|---|---|---|---|---|---|---|"]
    for kind in lib.chosen_file_systems(args.fs):
        with lib.file_system(kind) as folder:
            rates: dict[str, list[float]] = {"a": [], "b": []}
            cpus: dict[str, list[float]] = {"a": [], "b": []}
            starts: dict[str, list[float]] = {"a": [], "b": []}
            spools = {}
            for key, venv in (("a", args.a), ("b", args.b)):
                spools[key] = os.path.join(folder, f"start-{key}")
                start_up(venv, spools[key])  # a warm-up, which also makes the spool
            pair = [("a", args.a), ("b", args.b)]
            for turn in range(args.runs):
                for key, venv in pair[::-1] if turn % 2 else pair:  # each goes first as often
                    rate_now, cpu_now = throughput(venv, folder, args.jobs, args.durable, args.workers)
                    rates[key].append(rate_now)
                    cpus[key].append(cpu_now)
            for turn in range(args.starts):
                for key, venv in pair[::-1] if turn % 2 else pair:
                    starts[key].append(start_up(venv, spools[key]))
            rate = {key: lib.median(values) for key, values in rates.items()}
            cpu = {key: lib.median(values) * 1e6 for key, values in cpus.items()}
            start = {key: lib.median(values) * 1e3 if values else float("nan") for key, values in starts.items()}
            lines.append(f"| {kind} | {rate['a']:.0f} | {rate['b']:.0f} | {rate['b'] / rate['a']:.3f}x "
                         f"| {cpu['a']:.0f} | {cpu['b']:.0f} | {cpu['b'] / cpu['a']:.3f}x "
                         f"| {start['a']:.1f} | {start['b']:.1f} | {start['b'] / start['a']:.3f}x |")
            print(lines[-1], file=sys.stderr)
    lib.emit(lines, args.out)


if __name__ == "__main__":
    main()
