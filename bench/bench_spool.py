"""Benchmarks of the spool and the CLI that need no worker: `python bench/bench_spool.py [--fs KIND ...]`.

Every figure is set beside a baseline measured in the same run on the same
machine and file system, because absolute numbers mean little across
machines while the ratios carry over:

1. start-up: `queuectl enqueue`, `list` and `status` as whole processes
   against `python -c 'import click'` (target: enqueue <= 1.15x), plus which
   heavy modules each command imports (`-X importtime`; ctypes is loaded
   only by commands that move a file, locale by none), and, where valgrind
   is installed, the instructions each runs (the same whatever the load);
2. `Spool.enqueue` jobs/s with `durable` on (target >= 1,500/s) and off
   (target >= 10,000/s) against a raw open/write/fsync/rename loop;
3. `status` on a spool of 100,000 jobs (target < 0.5 s).

Each part runs on every file system --fs names (default: tmpfs, a journaled
ext4 loop image, and /tmp; see benchlib.file_system); the spools, and the
bytecode cache of the start-up runs, live there. The figures also go to
bench/out/spool.json (--json).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import benchlib as lib

from queuectl import Spool
from queuectl.core.config import defaults
from queuectl.core.job import build, dumps
from queuectl.stats import summary

# Modules an enqueue, list or status must never pay for at start-up.
HEAVY_MODULES = ("watchdog", "queuectl.worker", "queuectl.supervisor", "queuectl.dashboard",
                 "queuectl.run.runner", "http.server")


def queuectl_command() -> list[str]:
    """The installed `queuectl` script next to this Python, as a user runs it; else `python -m queuectl`."""
    script = os.path.join(os.path.dirname(os.path.abspath(sys.executable)), "queuectl")
    return [script] if os.access(script, os.X_OK) else [sys.executable, "-m", "queuectl"]


def child_environment(workdir: str) -> dict[str, str]:
    """Bytecode cached for every module alike, as after `pip install`, even where
    PYTHONDONTWRITEBYTECODE is set (an editable checkout would otherwise
    recompile queuectl on every run while click loads its .pyc files)."""
    environment = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}
    environment["PYTHONPYCACHEPREFIX"] = os.path.join(workdir, "pycache")
    return environment


def median_seconds(commands: dict[str, list[str]], repeat: int, environment: dict[str, str]) -> dict[str, float]:
    """Median wall time of each command after one warm-up run; runs are interleaved so drift hits all alike."""
    times: dict[str, list[float]] = {label: [] for label in commands}
    for round_number in range(repeat + 1):
        for label, argv in commands.items():
            started = time.perf_counter()
            subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, env=environment)
            if round_number:
                times[label].append(time.perf_counter() - started)
    return {label: statistics.median(values) for label, values in times.items()}


def imported_modules(argv: list[str], environment: dict[str, str]) -> set[str]:
    """Module names a command imports, from `python -X importtime`."""
    result = subprocess.run([sys.executable, "-X", "importtime", *argv], capture_output=True, text=True,
                            check=True, env=environment)
    return {line.rsplit("|", 1)[1].strip() for line in result.stderr.splitlines()
            if line.startswith("import time:") and "|" in line}


def heavy_imports(modules: set[str]) -> list[str]:
    return sorted(name for name in modules
                  if any(name == heavy or name.startswith(heavy + ".") for heavy in HEAVY_MODULES))


STARTUP_TARGET = 1.15


def bench_startup(fs: str, workdir: str, repeat: int, results: lib.Results) -> list[str]:
    spool = os.path.join(workdir, "startup")
    Spool(spool).enqueue("echo ready")
    # The same enqueue without its two fsyncs: what the file system adds to the start-up.
    fast = os.path.join(workdir, "startup-durable-off")
    lib.new_spool(fast, durable=False)
    queuectl = [*queuectl_command(), "--spool", spool]
    environment = child_environment(workdir)
    medians = median_seconds({
        "python -c pass": [sys.executable, "-c", "pass"],
        "python -c 'import click'": [sys.executable, "-c", "import click"],
        "queuectl enqueue 'echo hi'": [*queuectl, "enqueue", "echo hi"],
        "queuectl enqueue 'echo hi' (durable off)": [*queuectl_command(), "--spool", fast, "enqueue", "echo hi"],
        "queuectl list": [*queuectl, "list"],
        "queuectl status": [*queuectl, "status"],
    }, repeat, environment)
    click_time = medians["python -c 'import click'"]
    lines = [f"Start-up on {fs}, median of {repeat} interleaved runs (`{' '.join(queuectl_command())}`):", "",
             "| fs | command | median | ÷ import click |", "|---|---|---:|---:|"]
    lines += [f"| {fs} | `{label}` | {seconds * 1000:.1f} ms | {seconds / click_time:.2f}× |"
              for label, seconds in medians.items()]
    ratio = medians["queuectl enqueue 'echo hi'"] / click_time
    for label, seconds in medians.items():
        results.add(fs=fs, section="startup", command=label, median_s=seconds, vs_click=seconds / click_time)
    lines += ["", f"{fs}: enqueue ÷ import click = {ratio:.2f}× (target ≤ {STARTUP_TARGET}×: "
              f"{'met' if ratio <= STARTUP_TARGET else 'MISSED'})", ""]
    for command in (["enqueue", "echo"], ["list"], ["status"]):
        modules = imported_modules(["-m", "queuectl", "--spool", spool, *command], environment)
        heavy = heavy_imports(modules)
        lines.append(f"- `python -X importtime -m queuectl --spool SPOOL {' '.join(command)}`: "
                     f"{len(modules)} modules; heavy ones: {', '.join(heavy) or 'none'}; " +
                     "; ".join(f"{name} {'imported' if name in modules else 'not imported'}"
                               for name in ("filelock", "ctypes", "locale")))
    if shutil.which("valgrind"):
        lines += ["", *instruction_counts(spool, fast, environment, fs, results)]
    return lines


def instruction_counts(spool: str, fast: str, environment: dict[str, str], fs: str,
                       results: lib.Results) -> list[str]:
    """User-space instructions of each process (valgrind's callgrind): the start-up cost, whatever the load.

    Wall times on a busy machine swing by tens of percent; an instruction
    count is the same from run to run (hash seed fixed), so it shows what an
    import change saves. It leaves out the kernel's part (exec, page faults,
    fsync), which the wall times above include.
    """
    env = dict(environment, PYTHONHASHSEED="0")
    queuectl = queuectl_command()
    commands = {"python -c 'import click'": [sys.executable, "-c", "import click"],
                "queuectl enqueue 'echo hi'": [*queuectl, "--spool", spool, "enqueue", "echo hi"],
                "queuectl enqueue 'echo hi' (durable off)": [*queuectl, "--spool", fast, "enqueue", "echo hi"],
                "queuectl list": [*queuectl, "--spool", spool, "list"],
                "queuectl --version": [*queuectl, "--version"]}
    counts = {}
    for label, argv in commands.items():
        subprocess.run(argv, env=env, capture_output=True, check=True)  # bytecode cached
        run = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *argv], env=env,
                             capture_output=True, text=True, check=True)
        counts[label] = int(run.stderr.rsplit("Collected :", 1)[1].split()[0])
    click = counts["python -c 'import click'"]
    for label, count in counts.items():
        results.add(fs=fs, section="instructions", command=label, instructions=count, vs_click=count / click)
    return [f"Instructions on {fs} (`valgrind --tool=callgrind`, one run each, the same commands):",
            "", "| fs | command | instructions | ÷ import click |", "|---|---|---:|---:|",
            *[f"| {fs} | `{label}` | {count / 1e6:.1f} M | {count / click:.3f}× |" for label, count in counts.items()]]


CHUNK = 200  # jobs per turn: the ways of publishing take turns, so a busy disk slows them all alike


def raw_publisher(workdir: str, *, fsync_file: bool, fsync_dir: bool):
    """The bare minimum a publish costs: open, write, (fsync), close, rename, (fsync the folder)."""
    staging, target = os.path.join(workdir, "tmp"), os.path.join(workdir, "pending")
    os.makedirs(staging)
    os.makedirs(target)
    data = dumps(build({"command": "echo hi"}, defaults()))
    numbers = itertools.count()

    def publish(count: int) -> None:
        for number in itertools.islice(numbers, count):
            temp = os.path.join(staging, f".{number}.tmp")
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.write(fd, data)
            if fsync_file:
                os.fsync(fd)
            os.close(fd)
            os.rename(temp, os.path.join(target, f"{number}.json"))
            if fsync_dir:
                fsync_dir_fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY)
                os.fsync(fsync_dir_fd)
                os.close(fsync_dir_fd)
    return publish


def spool_publisher(workdir: str, *, durable: bool, batch: bool):
    """`Spool.enqueue` one call per job, or `Spool.enqueue_many` one call per turn."""
    spool = Spool(workdir)
    spool.set_config("durable", str(durable))
    if batch:
        return lambda count: spool.enqueue_many({"command": "echo hi"} for _ in range(count))
    return lambda count: [spool.enqueue("echo hi") for _ in range(count)]


def publish_rates(workdir: str, count: int, *, durable: bool) -> dict[str, float]:
    """Jobs/s of each way of publishing, taking turns of CHUNK jobs in fresh folders."""
    publishers = {"raw": raw_publisher(os.path.join(workdir, "raw"), fsync_file=durable, fsync_dir=False)}
    if durable:
        publishers["raw + dir fsync"] = raw_publisher(os.path.join(workdir, "rawdir"), fsync_file=True,
                                                      fsync_dir=True)
    publishers["single"] = spool_publisher(os.path.join(workdir, "single"), durable=durable, batch=False)
    publishers["batch"] = spool_publisher(os.path.join(workdir, "batch"), durable=durable, batch=True)
    elapsed = dict.fromkeys(publishers, 0.0)
    for _ in range(count // CHUNK):
        for name, publish in publishers.items():
            started = time.perf_counter()
            publish(CHUNK)
            elapsed[name] += time.perf_counter() - started
    return {name: CHUNK * (count // CHUNK) / seconds for name, seconds in elapsed.items()}


def bench_enqueue(fs: str, workdir: str, durable_count: int, fast_count: int, results: lib.Results) -> list[str]:
    lines = [f"Enqueue throughput on {fs}, jobs/s; the four ways take turns of {CHUNK} jobs, so disk noise hits "
             f"all alike (`enqueue_many`: one call per {CHUNK} jobs):", "",
             "| fs | durable | jobs | raw loop | raw loop + dir fsync | `Spool.enqueue` | ÷ raw loop with the same "
             "guarantees | `enqueue_many` | target for `Spool.enqueue` |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for durable, count, target in ((True, durable_count, 1500), (False, fast_count, 10000)):
        rate = publish_rates(tempfile.mkdtemp(dir=workdir), count, durable=durable)
        # A durable enqueue fsyncs the file and then the folder, as the second raw loop does.
        same_guarantees = rate["raw + dir fsync"] if durable else rate["raw"]
        raw_dir = f"{rate['raw + dir fsync']:,.0f}" if durable else "-"
        results.add(fs=fs, section="enqueue", durable=durable, jobs=count, rates=rate,
                    vs_same_guarantees=rate["single"] / same_guarantees)
        lines.append(f"| {fs} | {'on' if durable else 'off'} | {count:,} | {rate['raw']:,.0f} | {raw_dir} | "
                     f"{rate['single']:,.0f} | {rate['single'] / same_guarantees:.2f} | {rate['batch']:,.0f} | "
                     f"≥ {target:,}: {'met' if rate['single'] >= target else 'MISSED'} |")
    return lines


def fill_spool(path: str, total: int) -> dict[str, int]:
    """A spool of `total` realistic job files, written directly (no fsync) to build it fast."""
    spool = Spool(path)
    shares = {"pending": 0.5, "completed": 0.4, "failed": 0.05, "dead": 0.05}
    made = {}
    now = time.time()
    config = defaults()
    for state, share in shares.items():
        made[state] = int(total * share)
        template = build({"command": "echo hi"}, config, state=state, now=now)
        if state == "completed":
            template.update(attempts=1, last_exit_code=0, last_duration=0.012)
        folder = spool.dir(state)
        for number in range(made[state]):
            template["id"] = f"{state}-{number:07d}"
            with open(os.path.join(folder, template["id"] + ".json"), "wb") as handle:
                handle.write(dumps(template))
    return made


def bench_status(fs: str, workdir: str, total: int, repeat: int, results: lib.Results) -> list[str]:
    path = os.path.join(workdir, "big")
    started = time.perf_counter()
    made = fill_spool(path, total)
    filled = time.perf_counter() - started
    in_process = []
    for _ in range(repeat):
        started = time.perf_counter()
        summary(Spool(path))
        in_process.append(time.perf_counter() - started)
    whole = median_seconds({"status": [*queuectl_command(), "--spool", path, "status"],
                            "status --json": [*queuectl_command(), "--spool", path, "status", "--json"]}, repeat,
                           child_environment(workdir))
    best = min(in_process)
    results.add(fs=fs, section="status", jobs=total, in_process_s=statistics.median(in_process),
                process_s=whole["status"], process_json_s=whole["status --json"])
    return [f"`status` on {fs}, {total:,} jobs ({json.dumps(made)}; written in {filled:.1f} s):", "",
            f"- in-process `stats.summary(Spool(path))`: median {statistics.median(in_process) * 1000:.0f} ms, "
            f"best {best * 1000:.0f} ms",
            f"- `queuectl status` as a process: median {whole['status'] * 1000:.0f} ms "
            f"(target < 500 ms: {'met' if whole['status'] < 0.5 else 'MISSED'}); "
            f"`status --json` {whole['status --json'] * 1000:.0f} ms"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=30, help="Runs per start-up figure [default: 30].")
    parser.add_argument("--durable-jobs", type=int, default=4000, help="Jobs per way with durable on.")
    parser.add_argument("--fast-jobs", type=int, default=20000, help="Jobs per way with durable off.")
    parser.add_argument("--status-jobs", type=int, default=100_000, help="Size of the spool `status` reads.")
    parser.add_argument("--only", choices=("startup", "enqueue", "status"), action="append",
                        help="run only these parts (repeatable)")
    lib.add_fs_option(parser)
    parser.add_argument("--out", help="also write the report (markdown) to this file")
    parser.add_argument("--json", help=f"where the figures go [{os.path.join(lib.OUT_DIR, 'spool.json')}]")
    args = parser.parse_args()
    parts = args.only or ["startup", "enqueue", "status"]
    results = lib.Results("spool")
    started = time.time()
    report = ["## Spool and CLI benchmarks (`bench/bench_spool.py`)", "", "Machine:", *lib.machine(), f"- command: `{' '.join([os.path.basename(sys.executable), *sys.argv])}`",
              ""]
    for fs in lib.chosen_file_systems(args.fs):
        with lib.file_system(fs) as workdir:
            report += [f"File system `{fs}`: {results.file_system(fs, workdir)}", ""]
            if "startup" in parts:
                report += bench_startup(fs, workdir, args.repeat, results) + [""]
            if "enqueue" in parts:
                report += bench_enqueue(fs, workdir, args.durable_jobs, args.fast_jobs, results) + [""]
            if "status" in parts:
                report += bench_status(fs, workdir, args.status_jobs, max(5, args.repeat // 6), results) + [""]
        results.save(args.json)
    report.append(f"(run took {time.time() - started:.0f} s)")
    lib.emit(report, args.out)


if __name__ == "__main__":
    main()
