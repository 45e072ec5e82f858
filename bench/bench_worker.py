"""Worker benchmarks (issue 3): `python bench/bench_worker.py [--fs KIND ...] [--out FILE]`.

Every figure is printed beside a baseline measured in the same run, and the
runs are interleaved and repeated (medians), because the machine is shared:

a. throughput: N `true` jobs drained by `worker start -n 2 --burst`, against
   `seq N | xargs -P2 -I{} sh -c true` (target >= 50 %), durable on and off;
b. pick-up latency on idle workers, from the enqueue call to the job's own
   `date +%s%N` (target p95 <= 20 ms): `Spool.enqueue` in-process, and
   `queuectl enqueue` as a process (its own start-up included, and from the
   job's created_at), against the spawn of the same `sh -c date`;
c. claim+settle rate of one worker with 100,000 jobs pending against 100
   pending (target >= 80 %), the start-up scan time, and the worker's memory
   (VmRSS, VmHWM; target <= 60 MB with 100,000 pending);
d. with --profile DIR: a cProfile of one worker draining N jobs, durable on
   and off, with its top costs.

Every part runs on each file system --fs names (default: tmpfs, a journaled
ext4 loop image, and /tmp; see benchlib.file_system), and every row names
its file system. The figures also go to bench/out/worker.json (--json),
from which `bench/charts.py` draws.
"""

from __future__ import annotations

import argparse
import io
import os
import pstats
import shutil
import subprocess
import sys
import time

import benchlib as lib


def throughput(fs: str, workdir: str, jobs: int, repeat: int, results: lib.Results) -> list[str]:
    record = results
    results: dict[str, list[float]] = {"xargs": [], "durable off": [], "durable on": []}
    steady: dict[str, list[float]] = {"durable off": [], "durable on": []}
    for attempt in range(repeat):
        results["xargs"].append(lib.xargs_rate(jobs))
        for label, durable in (("durable off", False), ("durable on", True)):
            path = os.path.join(workdir, f"burst-{attempt}-{durable}")
            spool = lib.new_spool(path, durable=durable)
            ids = lib.fill_pending(spool, jobs)
            with lib.Workers(spool, 2, burst=True) as workers:
                seconds = workers.wait(timeout=600)
            done = lib.count_files(spool.dir("completed"))
            if done != jobs:
                raise RuntimeError(f"{label}: {done} of {jobs} jobs completed")
            times = lib.job_times(spool, "completed", ids)
            results[label].append(jobs / seconds)
            steady[label].append(jobs / (max(f for _, f in times) - min(s for s, _ in times)))
            # Kept until the end: on an ext4 without a journal, deleting 4,000 files
            # slows every file creation nearby for minutes, and that is the cleanup's
            # cost, not the next run's.
    base = lib.median(results["xargs"])
    rows = [[fs, "`seq N | xargs -P2 -I{} sh -c true` (baseline)", f"{base:.0f}", "100 %", "", ""]]
    record.add(fs=fs, section="throughput", system="xargs -P2", jobs_per_s=base, runs=results["xargs"])
    for label in ("durable off", "durable on"):
        whole, inner = lib.median(results[label]), lib.median(steady[label])
        ratios = sorted(q / x for q, x in zip(results[label], results["xargs"]))
        rows.append([fs, f"queuectl `worker start -n 2 --burst`, {label}", f"{whole:.0f}",
                     f"{whole / base:.0%} (per-run {', '.join(f'{r:.0%}' for r in ratios)})",
                     f"{inner:.0f}", f"{inner / base:.0%}"])
        record.add(fs=fs, section="throughput", system=f"queuectl, {label}", jobs_per_s=whole, steady=inner,
                   vs_baseline=whole / base, runs=results[label], run_ratios=ratios)
    return [f"### a. Throughput on {fs}: {jobs} trivial jobs (`true`), 2 workers, median of {repeat} "
            "interleaved runs", "",
            "Target: >= 60 % of the baseline with durable on (tmpfs, journaled ext4). *Whole run* is spawn of "
            "`worker start` to its exit (Python start-up and the scan included); *steady* is first job start "
            "to last job finish (the jobs' own timestamps).", "",
            *lib.table(["fs", "system", "jobs/s (whole run)", "vs baseline", "jobs/s (steady)",
                        "steady vs baseline"], rows), ""]


def latency(fs: str, workdir: str, tries: int, results: lib.Results) -> list[str]:
    stamps = os.path.join(workdir, "stamps")
    os.makedirs(stamps, exist_ok=True)
    base = lib.spawn_latency(stamps, tries)
    rows = [_latency_row(fs, "`sh -c 'date ...'` spawned directly (baseline)", base, base, results)]
    for durable in (True, False):
        path = os.path.join(workdir, f"latency-{durable}")
        spool = lib.new_spool(path, durable=durable)
        with lib.Workers(spool, 2) as workers:
            workers.wait_ready()
            time.sleep(0.5)
            in_process, shell_total, shell_pickup = [], [], []
            for attempt in range(tries):
                stamp = os.path.join(stamps, f"api-{durable}-{attempt}")
                before = time.time()
                job = spool.enqueue(lib.stamp_command(stamp))
                in_process.append(_await_stamp(spool, job["id"], stamp) - before)
            for attempt in range(tries):
                stamp = os.path.join(stamps, f"cli-{durable}-{attempt}")
                before = time.time()
                job_id = subprocess.run(lib.queuectl_argv(path) + ["enqueue", lib.stamp_command(stamp)],
                                        check=True, capture_output=True, text=True).stdout.strip()
                started = _await_stamp(spool, job_id, stamp)
                shell_total.append(started - before)
                shell_pickup.append(started - lib.job_created(spool, job_id))
        label = "durable on (default)" if durable else "durable off"
        rows.append(_latency_row(fs, f"`Spool.enqueue` in-process, {label}", in_process, base, results))
        rows.append(_latency_row(fs, f"`queuectl enqueue` process, {label}: spawn to start", shell_total, base,
                                 results))
        rows.append(_latency_row(fs, f"`queuectl enqueue` process, {label}: created_at to start "
                                 "(ms resolution)", shell_pickup, base, results))
        shutil.rmtree(path)
    return [f"### b. Pick-up latency on {fs}, 2 idle workers, {tries} tries each", "",
            "Target: p95 <= 20 ms from the enqueue call to the job's own start (`date +%s%N` in the job).", "",
            *lib.table(["fs", "from", "p50", "p95", "max", "p95 vs baseline"], rows), ""]


def _await_stamp(spool, job_id: str, stamp: str) -> float:
    """The job's own start time, once it has finished (so the workers are idle again)."""
    lib.wait_for(lambda: os.path.exists(os.path.join(spool.dir("completed"), job_id + ".json")), 30,
                 f"job {job_id}", interval=0.001)
    time.sleep(0.02)
    return lib.read_stamp(stamp)


def _latency_row(fs: str, label: str, values: list[float], base: list[float], results: lib.Results) -> list[str]:
    results.add(fs=fs, section="latency", system=label, p50=lib.median(values), p95=lib.quantile(values, 0.95),
                max=max(values), baseline_p95=lib.quantile(base, 0.95))
    return [fs, label, f"{lib.median(values) * 1000:.1f} ms", f"{lib.quantile(values, 0.95) * 1000:.1f} ms",
            f"{max(values) * 1000:.1f} ms", f"{lib.quantile(values, 0.95) / lib.quantile(base, 0.95):.1f}x"]


def depth(fs: str, workdir: str, small: int, big: int, claims: int, repeat_small: int, repeat_big: int,
          results: lib.Results) -> list[str]:
    rows = []
    measured = {}
    for size, repeat in ((small, repeat_small), (big, repeat_big)):
        path = os.path.join(workdir, f"depth-{size}")
        runs = []
        for _ in range(repeat):
            if size == small:
                shutil.rmtree(path, ignore_errors=True)
            runs.append(lib.claim_run(path, size, min(claims, size)))
        shutil.rmtree(path)
        measured[size] = runs
    base_rate = lib.median([run["rate"] for run in measured[small]])
    for size in (small, big):
        runs = measured[size]
        rate = lib.median([run["rate"] for run in runs])
        rows.append([fs, f"{size:,}", f"{rate:.0f}", f"{rate / base_rate:.0%}",
                     f"{lib.median([run['startup'] for run in runs]):.2f} s",
                     lib.mb(lib.median([run["rss_kb"] for run in runs])),
                     lib.mb(max(run["hwm_kb"] for run in runs))])
        results.add(fs=fs, section="depth", pending=size, claims_per_s=rate, vs_shallow=rate / base_rate,
                    startup_s=lib.median([run["startup"] for run in runs]),
                    rss_kb=lib.median([run["rss_kb"] for run in runs]), hwm_kb=max(run["hwm_kb"] for run in runs))
    return [f"### c. One worker with a deep queue on {fs}: claim+settle rate of jobs 21 to {claims} after "
            "start-up", "",
            f"Targets: rate with {big:,} pending >= 80 % of the rate with {small} pending; memory <= 60 MB. "
            f"Durable off (the fsyncs are measured in a.); medians of {repeat_small} runs ({small}) and "
            f"{repeat_big} runs ({big:,}). Start-up scan = worker spawn to its first job's start "
            "(Python start-up included: the {small} row is that floor).".replace("{small}", str(small)), "",
            *lib.table(["fs", "pending", "claims/s", f"vs {small} pending", "start-up to first job",
                        "VmRSS", "VmHWM (peak)"], rows), ""]


def profile(fs: str, workdir: str, jobs: int, out_dir: str) -> list[str]:
    os.makedirs(out_dir, exist_ok=True)
    lines = [f"### d. cProfile on {fs} of one worker draining {jobs} `true` jobs (`python -m cProfile -o ...`)",
             ""]
    for durable in (False, True):
        path = os.path.join(workdir, f"profile-{durable}")
        spool = lib.new_spool(path, durable=durable)
        lib.fill_pending(spool, jobs)
        target = os.path.join(out_dir, f"worker-{fs.strip('/').replace('/', '_')}-durable-"
                                       f"{'on' if durable else 'off'}.prof")
        with lib.Workers(spool, 1, burst=True, profile=target) as workers:
            seconds = workers.wait(timeout=600)
        shutil.rmtree(path)
        text = io.StringIO()
        stats = pstats.Stats(target, stream=text)
        stats.sort_stats("tottime").print_stats(12)
        lines += [f"{fs}, durable {'on' if durable else 'off'}: {jobs / seconds:.0f} jobs/s under the profiler; "
                  f"`{target}`", "", "```", *_stats_rows(text.getvalue()), "```", ""]
    return lines


def _stats_rows(report: str) -> list[str]:
    rows = report.splitlines()
    start = next(i for i, line in enumerate(rows) if line.strip().startswith("ncalls"))
    return [line.replace(sys.prefix, "").rstrip() for line in rows[start:] if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2000, help="jobs per throughput run [2000]")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved throughput runs [3]")
    parser.add_argument("--tries", type=int, default=30, help="latency tries per row [30]")
    parser.add_argument("--small", type=int, default=100, help="the shallow queue [100]")
    parser.add_argument("--big", type=int, default=100_000, help="the deep queue [100000]")
    parser.add_argument("--claims", type=int, default=100, help="jobs measured after start-up [100]")
    parser.add_argument("--repeat-big", type=int, default=2, help="runs on the deep queue [2]")
    parser.add_argument("--only", choices=("throughput", "latency", "depth"), action="append",
                        help="run only these parts (repeatable)")
    parser.add_argument("--profile", metavar="DIR", help="also profile a worker; .prof files go to DIR")
    lib.add_fs_option(parser)
    parser.add_argument("--out", help="also write the report (markdown) to this file")
    parser.add_argument("--json", help=f"where the figures go [{os.path.join(lib.OUT_DIR, 'worker.json')}]")
    args = parser.parse_args()
    parts = args.only or ["throughput", "latency", "depth"]
    kinds = lib.chosen_file_systems(args.fs)
    results = lib.Results("worker")
    lines = ["## Worker benchmarks (`bench/bench_worker.py`)", "", *lib.machine(), ""]
    started = time.time()
    for fs in kinds:
        with lib.file_system(fs) as workdir:
            lines += [f"File system `{fs}`: {results.file_system(fs, workdir)}", ""]
            if "throughput" in parts:
                lines += throughput(fs, workdir, args.jobs, args.repeat, results)
            if "latency" in parts:
                lines += latency(fs, workdir, args.tries, results)
            if "depth" in parts:
                lines += depth(fs, workdir, args.small, args.big, args.claims, 3, args.repeat_big, results)
            if args.profile:
                lines += profile(fs, workdir, args.jobs, args.profile)
        results.save(args.json)
    lines.append(f"(run took {time.time() - started:.0f} s: `{' '.join(['python', *sys.argv])}`)")
    lib.emit(lines, args.out)


if __name__ == "__main__":
    main()
