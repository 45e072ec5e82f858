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
   and off, with its top costs;
e. the cost of the worker's output (issue 11): the throughput of a. with a
   line per job start and end written to a file, against `--quiet`, in
   alternating runs, the CPU per job, and the lines' in-process cost
   (target: the lines cost <= 3 %);
f. recovery while busy (issue 11): two single-worker processes with the
   default settings each run a `sleep 3600`; one is SIGKILLed; the time until
   its job leaves processing/ (target <= 10 s), worst of the rounds.

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
import random
import resource
import shutil
import signal
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


def output_cost(fs: str, workdir: str, jobs: int, repeat: int, record: lib.Results) -> list[str]:
    """Alternating --quiet and logged runs of the same burst; durable off, so a job costs least and a line most."""
    rates: dict[str, list[float]] = {"quiet": [], "logged": []}
    cpu: dict[str, list[float]] = {"quiet": [], "logged": []}  # CPU seconds per 1000 jobs: workers and jobs
    lines_written = []
    for attempt in range(repeat):
        for label in (("quiet", "logged") if attempt % 2 == 0 else ("logged", "quiet")):
            path = os.path.join(workdir, f"output-{attempt}-{label}")
            spool = lib.new_spool(path, durable=False)
            lib.fill_pending(spool, jobs)
            log = os.path.join(workdir, f"output-{attempt}.log") if label == "logged" else None
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            with lib.Workers(spool, 2, burst=True, log_to=log) as workers:
                seconds = workers.wait(timeout=600)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            done = lib.count_files(spool.dir("completed"))
            if done != jobs:
                raise RuntimeError(f"{label}: {done} of {jobs} jobs completed")
            rates[label].append(jobs / seconds)
            used = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
            cpu[label].append(used / jobs * 1000)
            if log:
                with open(log, "rb") as handle:
                    lines_written.append(handle.read().count(b"\n"))
            shutil.rmtree(path)
    line_cost = _line_cost(os.path.join(workdir, "lines.log"))
    quiet, logged = lib.median(rates["quiet"]), lib.median(rates["logged"])
    pair_costs = [1 - lg / q for q, lg in zip(rates["quiet"], rates["logged"], strict=True)]
    pairs = [f"{cost:+.1%}" for cost in pair_costs]
    cpu_quiet, cpu_logged = lib.median(cpu["quiet"]), lib.median(cpu["logged"])
    rows = [[label, f"{lib.median(rates[key]):.0f}", ", ".join(f"{r:.0f}" for r in rates[key]),
             f"{lib.median(cpu[key]):.2f} s", ", ".join(f"{c:.2f}" for c in cpu[key])]
            for label, key in (("`worker start -n 2 --burst --quiet`", "quiet"),
                               ("`worker start -n 2 --burst` (lines to a file)", "logged"))]
    record.add(fs=fs, section="output", quiet_jobs_per_s=quiet, logged_jobs_per_s=logged,
               quiet_cpu_per_1000=cpu_quiet, logged_cpu_per_1000=cpu_logged, pair_costs=pair_costs,
               line_cost_s=line_cost)
    return [f"### e. Cost of the worker's output on {fs}: {jobs} trivial jobs, 2 workers, durable off, "
            f"{repeat} alternating pairs", "",
            "Target: the lines cost <= 3 % of the throughput. The machine is shared and noisy: the runs alternate "
            "(quiet first in even pairs, logged first in odd ones) and the medians are compared.", "",
            *lib.table(["run", "jobs/s (median)", "jobs/s (each run)", "CPU s per 1000 jobs (median)",
                        "CPU s per 1000 jobs (each run)"], rows), "",
            "CPU is the user + system time of the workers and their jobs (`RUSAGE_CHILDREN` of the bench around "
            "each run): on a shared, loaded machine it moves far less than wall-clock throughput.", "",
            f"Cost in CPU per job (logged/quiet - 1): {cpu_logged / cpu_quiet - 1:+.1%} of the medians. "
            f"Cost in throughput (1 - logged/quiet): {lib.median(pair_costs):+.1%} as the median of the "
            f"alternating pairs ({', '.join(pairs)}); {1 - logged / quiet:+.1%} between the medians. "
            f"Lines written per logged run: {', '.join(map(str, lines_written))} "
            f"(banner + 2 per job).", "",
            f"Direct cost, in-process: a job's two lines (`EventLog.job_started` + `job_ended`, text, to a file) "
            f"take {line_cost * 1e6:.1f} µs (median of 5 x 20,000); a worker spends {2 / quiet * 1e6:.0f} µs per "
            f"job at the quiet rate above, so the lines are {line_cost / (2 / quiet):.2%} of it.", ""]


def _line_cost(path: str, jobs: int = 20_000) -> float:
    """Seconds of the two lines a job prints, written to a file as a worker's stderr would be."""
    from queuectl.core.events import EventLog
    from queuectl.core.outcome import Outcome

    job = {"id": "20261201T101939112249-3883", "attempts": 1, "last_error": None}
    outcome = Outcome(exit_code=0, started=time.time(), finished=time.time() + 0.004)
    runs = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        log = EventLog("text", fd=fd)
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(jobs):
                log.job_started("vm-14475-120379560", job)
                log.job_ended("vm-14475-120379560", job, 1, outcome, "completed")
            runs.append((time.perf_counter() - started) / jobs)
    finally:
        os.close(fd)
    return lib.median(runs)


def recovery_while_busy(fs: str, workdir: str, rounds: int, record: lib.Results) -> list[str]:
    """Default settings (recovery_interval 5 s): the survivor is busy for the whole measurement.

    The bound is one recovery period plus the runner's 0.5 s between asks plus
    the sweep itself.
    """
    from queuectl.core import registry
    from queuectl.run.runner import kill_leftovers

    results = []
    for attempt in range(rounds):
        path = os.path.join(workdir, f"recovery-{attempt}")
        spool = lib.new_spool(path)
        first = spool.enqueue("exec sleep 3600")["id"]
        pair = [lib.Workers(spool, 1)]
        lib.wait_for(lambda spool=spool, first=first: spool.find(first) == "processing", 60,
                     "the first job to start")
        second = spool.enqueue("exec sleep 3600")["id"]
        pair.append(lib.Workers(spool, 1))
        lib.wait_for(lambda spool=spool, second=second: spool.find(second) == "processing", 60,
                     "the second job to start")
        doomed_name = spool.get(first)["worker"]
        doomed_pid = registry.read_record(spool, doomed_name)["pid"]
        try:
            # At a random point of the survivor's recovery period, so the rounds sample its phases.
            time.sleep(random.uniform(0, spool.config["recovery_interval"]))
            os.kill(doomed_pid, signal.SIGKILL)
            killed = time.time()
            lib.wait_for(lambda spool=spool, first=first: spool.find(first) != "processing", 60,
                         "the dead worker's job to leave processing/", interval=0.01)
            results.append((time.time() - killed, spool.find(first), spool.find(second)))
        finally:
            for workers in pair:
                if workers.process.poll() is None:
                    os.killpg(workers.process.pid, signal.SIGKILL)
                workers.process.wait()
            for job_id in (first, second):
                kill_leftovers(job_id, spool.root)
            shutil.rmtree(path, ignore_errors=True)
    rows = [[str(number + 1), f"{seconds:.2f} s", f"{state}/", f"{other}/"]
            for number, (seconds, state, other) in enumerate(results)]
    record.add(fs=fs, section="recovery", seconds=[seconds for seconds, _, _ in results],
               worst=max(seconds for seconds, _, _ in results))
    return [f"### f. Recovery on {fs} while every live worker is busy: default settings, {rounds} rounds", "",
            "Two `worker start` processes each run `sleep 3600`; the first is SIGKILLed. Target: its job is "
            "out of processing/ within 10 s although the survivor never finishes a job.", "",
            *lib.table(["round", "SIGKILL to out of processing/", "the dead worker's job is in",
                        "the survivor's job is in"], rows), "",
            f"Worst case: {max(seconds for seconds, _, _ in results):.2f} s.", ""]


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
    parser.add_argument("--rounds", type=int, default=3, help="recovery-while-busy rounds [3]")
    parser.add_argument("--only", choices=("throughput", "latency", "depth", "output", "recovery"), action="append",
                        help="run only these parts (repeatable)")
    parser.add_argument("--profile", metavar="DIR", help="also profile a worker; .prof files go to DIR")
    lib.add_fs_option(parser)
    parser.add_argument("--out", help="also write the report (markdown) to this file")
    parser.add_argument("--json", help=f"where the figures go [{os.path.join(lib.OUT_DIR, 'worker.json')}]")
    args = parser.parse_args()
    parts = args.only or ["throughput", "latency", "depth", "output", "recovery"]
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
            if "output" in parts:
                lines += output_cost(fs, workdir, args.jobs, max(args.repeat, 2), results)
            if "recovery" in parts:
                lines += recovery_while_busy(fs, workdir, args.rounds, results)
            if args.profile:
                lines += profile(fs, workdir, args.jobs, args.profile)
        results.save(args.json)
    lines.append(f"(run took {time.time() - started:.0f} s: `{' '.join(['python', *sys.argv])}`)")
    lib.emit(lines, args.out)


if __name__ == "__main__":
    main()
