"""Helpers shared by bench_worker.py and compare.py: the machine, the xargs
baseline, spools built fast, worker processes and their memory.

Nothing here asserts a target: the scripts print figures and ratios, and
RESULTS.md says which targets they meet.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time

from queuectl import Spool
from queuectl.config import defaults
from queuectl.job import build, dumps

HERE = os.path.dirname(os.path.abspath(__file__))


def machine() -> list[str]:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return [f"- nproc: {os.cpu_count()}", f"- CPU: {cpu}",
            f"- kernel: {platform.system()} {platform.release()}",
            f"- python: {platform.python_version()} ({sys.executable})",
            f"- load average at start: {' '.join(open('/proc/loadavg').read().split()[:3])}"]


def queuectl_argv(spool_path: str) -> list[str]:
    return [sys.executable, "-m", "queuectl", "--spool", spool_path]


def quantile(values: list[float], q: float) -> float:
    """Nearest-rank quantile: p95 of 30 values is the 29th smallest."""
    ordered = sorted(values)
    rank = max(1, -(-int(q * 100) * len(ordered) // 100))
    return ordered[min(rank, len(ordered)) - 1]


def median(values: list[float]) -> float:
    return statistics.median(values)


def wait_for(predicate, timeout: float, message: str, interval: float = 0.005):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


# -- the baseline -------------------------------------------------------------

def xargs_rate(jobs: int) -> float:
    """Jobs/s of `seq N | xargs -P2 -I{} sh -c true`: two slots, one /bin/sh per job, no queue."""
    started = time.perf_counter()
    subprocess.run(f"seq {jobs} | xargs -P2 -I{{}} sh -c true", shell=True, check=True)
    return jobs / (time.perf_counter() - started)


def spawn_latency(stamp_dir: str, tries: int) -> list[float]:
    """Seconds from Popen to the timestamp a fresh `sh -c date` writes: the floor of any pick-up."""
    latencies = []
    for attempt in range(tries):
        stamp = os.path.join(stamp_dir, f"spawn-{attempt}")
        before = time.time()
        subprocess.run(["/bin/sh", "-c", stamp_command(stamp)], check=True)
        latencies.append(read_stamp(stamp) - before)
    return latencies


def stamp_command(path: str) -> str:
    """A job that writes the time it really started, in nanoseconds."""
    return f"date +%s%N > {path}.part && mv {path}.part {path}"


def read_stamp(path: str) -> float:
    with open(path, encoding="ascii") as handle:
        return int(handle.read().strip()) / 1e9


# -- spools -------------------------------------------------------------------

def new_spool(path: str, **settings) -> Spool:
    spool = Spool(path)
    for key, value in settings.items():
        spool.set_config(key, str(value).lower() if isinstance(value, bool) else str(value))
    return spool


def fill_pending(spool: Spool, count: int, command: str = "true", prefix: str = "job") -> list[str]:
    """Write `count` canonical job files straight into pending/ (no fsync): 100,000 in a few seconds.

    The files are exactly what `enqueue` writes (built by job.build), named
    so that they sort in creation order.
    """
    template = dumps(build({"id": "ID-PLACEHOLDER", "command": command}, defaults())).decode()
    head, tail = template.split("ID-PLACEHOLDER")
    pending = spool.dir("pending")
    ids = [f"{prefix}-{number:07d}" for number in range(count)]
    for job_id in ids:
        with open(os.path.join(pending, job_id + ".json"), "w", encoding="utf-8") as handle:
            handle.write(head + job_id + tail)
    os.sync()  # the write-back of the new files must not run during the measurement that follows
    return ids


def count_files(folder: str) -> int:
    with os.scandir(folder) as entries:
        return sum(1 for entry in entries if entry.name.endswith(".json") and not entry.name.startswith("."))


def job_times(spool: Spool, state: str, ids: list[str]) -> list[tuple[float, float]]:
    """(started, finished) of each job, from the job files (the worker's own timestamps)."""
    from queuectl.job import parse_time
    times = []
    for job_id in ids:
        with open(os.path.join(spool.dir(state), job_id + ".json"), encoding="utf-8") as handle:
            job = json.load(handle)
        times.append((parse_time(job["started_at"]), parse_time(job["finished_at"])))
    return times


# -- worker processes ---------------------------------------------------------

class Workers:
    """`queuectl worker start -n COUNT` in its own process group; stopped (and killed if stuck) on exit."""

    def __init__(self, spool: Spool, count: int, *, burst: bool = False, profile: str | None = None,
                 log_to: str | None = None):
        """`log_to`: a file for the workers' lines on stderr (banner, one per job start and end); else --quiet."""
        self.spool = spool
        self.count = count
        argv = queuectl_argv(spool.root) + ["worker", "start", "-n", str(count)] + (["--burst"] if burst else [])
        if log_to is None:
            argv.append("--quiet")
        if profile:
            argv = [sys.executable, "-m", "cProfile", "-o", profile, "-m", "queuectl"] + argv[3:]
        self.started = time.time()
        with open(log_to or os.devnull, "ab") as stderr:
            self.process = subprocess.Popen(argv, start_new_session=True, stdout=subprocess.DEVNULL, stderr=stderr)

    def wait_ready(self, timeout: float = 120) -> None:
        """Until every worker has written its record (it then watches pending/)."""
        wait_for(lambda: len(self.pids()) >= self.count, timeout, "workers to register")

    def pids(self) -> list[int]:
        return worker_pids(self.spool)

    def memory_kb(self) -> list[tuple[int, int]]:
        """(VmRSS, VmHWM) in kB of each worker process."""
        return [process_memory_kb(pid) for pid in self.pids()]

    def wait(self, timeout: float) -> float:
        """Wait for a --burst run to end; returns its wall time from the spawn."""
        self.process.wait(timeout=timeout)
        return time.time() - self.started

    def stop(self, timeout: float = 60) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def __enter__(self) -> "Workers":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def worker_pids(spool: Spool) -> list[int]:
    """The pids in the workers' records (a worker writes its record once it watches pending/)."""
    found = []
    folder = spool.dir("workers")
    for name in os.listdir(folder):
        if name.endswith(".json") and name != "stop.json" and not name.startswith("."):
            try:
                with open(os.path.join(folder, name), encoding="utf-8") as handle:
                    found.append(json.load(handle)["pid"])
            except (OSError, ValueError, KeyError):
                continue
    return found


def process_memory_kb(pid: int) -> tuple[int, int]:
    fields = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0])
    return fields.get("VmRSS", 0), fields.get("VmHWM", 0)


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


def emit(lines: list[str], out: str | None) -> None:
    """Print the report and, with --out, also write it to a file."""
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    if out:
        with open(out, "w", encoding="utf-8") as handle:
            handle.write(text)


# -- measurements both scripts make -------------------------------------------

def claim_run(spool_path: str, depth: int, claims: int, warm_up: int = 20) -> dict:
    """One worker on a spool of `depth` pending `true` jobs, stopped after `claims` of them.

    The claim rate counts the jobs after the first `warm_up` ones (which pay
    for the worker's first-time work whatever the depth), from the job files'
    own timestamps: first start to last finish. The start-up scan time is
    from the worker's spawn to its first job's start. Memory is read while
    the worker still holds its index of the pending jobs.
    """
    spool = new_spool(spool_path, durable=False)
    if count_files(spool.dir("pending")) + count_files(spool.dir("completed")) == 0:
        fill_pending(spool, depth)
    done_before = set(os.listdir(spool.dir("completed")))
    with Workers(spool, 1) as workers:
        wait_for(lambda: len(os.listdir(spool.dir("completed"))) - len(done_before) >= claims,
                 600, f"{claims} jobs done")
        memory = workers.memory_kb()[0]
        spawned = workers.started
    ids = sorted(name[:-5] for name in set(os.listdir(spool.dir("completed"))) - done_before
                 if name.endswith(".json"))
    times = sorted(job_times(spool, "completed", ids))
    measured = times[warm_up:]
    rate = len(measured) / (max(finish for _, finish in measured) - measured[0][0])
    return {"depth": depth, "rate": rate, "startup": times[0][0] - spawned,
            "rss_kb": memory[0], "hwm_kb": memory[1]}


def mb(kilobytes: float) -> str:
    return f"{kilobytes / 1024:.1f} MB"


def job_created(spool: Spool, job_id: str) -> float:
    from queuectl.job import parse_time
    return parse_time(spool.get(job_id)["created_at"])


def file_system(path: str) -> str:
    """The type and mount point of the file system holding `path` (the longest matching mount)."""
    best = ("?", "", "")
    path = os.path.realpath(path)
    with open("/proc/mounts", encoding="utf-8") as handle:
        for line in handle:
            device, mount, kind, *_ = line.split()
            if (path == mount or path.startswith(mount.rstrip("/") + "/")) and len(mount) >= len(best[1]):
                best = (kind, mount, device)
    kind, mount, device = best
    journal = ""
    if kind == "ext4":
        try:
            with open(f"/sys/fs/ext4/{os.path.basename(os.path.realpath(device))}/journal_task",
                      encoding="ascii") as handle:
                journal = " without a journal" if handle.read().strip() == "<none>" else " with a journal"
        except OSError:
            pass
    return f"{path}: {kind}{journal} (mounted at {mount or '?'})"
