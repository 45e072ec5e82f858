"""Helpers shared by the bench scripts: the file systems they run on, the
machine, the xargs baseline, spools built fast, worker processes and their
memory, and the JSON results file the charts are drawn from.

Nothing here asserts a target: the scripts print figures and ratios, and
RESULTS.md says which targets they meet.

File systems (`file_system(kind)`, chosen with each script's `--fs`):
- "tmpfs": a private tmpfs mounted for the run (as root), else a folder in
  /dev/shm;
- "ext4-journal": a sparse image file formatted with `mkfs.ext4` (with a
  journal) and loop-mounted under a temporary folder (root only);
- "tmp": a folder in the system's temp folder (on this machine's disk, an
  ext4 without a journal);
- any absolute path: a fresh folder under it (e.g. an NFS mount).
Every one is unmounted and removed when the block ends, also on Ctrl-C,
SIGTERM or an error; a SIGKILLed run leaves `qc-bench-fs-*` folders (and
their mounts) in the temp folder for `umount` and `rm -r`.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

from queuectl import Spool
from queuectl.core.config import defaults
from queuectl.core.job import build, dumps

HERE = os.path.dirname(os.path.abspath(__file__))
OUT_DIR = os.path.join(HERE, "out")

FS_KINDS = ("tmpfs", "ext4-journal", "tmp")
EXT4_IMAGE_SIZE = 4 << 30  # sparse: only what the runs write takes disk space


# -- file systems ---------------------------------------------------------------

def add_fs_option(parser) -> None:
    """The `--fs` option every script shares: repeatable, all three kinds by default."""
    parser.add_argument("--fs", action="append", metavar="KIND",
                        help=f"file system to run on, repeatable: {', '.join(FS_KINDS)} or an absolute path "
                             "(a temporary folder is made under it) [all three kinds]; "
                             "ext4-journal (and a private tmpfs) need root")


def chosen_file_systems(kinds: list[str] | None) -> list[str]:
    chosen = kinds or list(FS_KINDS)
    for kind in chosen:
        if kind not in FS_KINDS and not os.path.isabs(kind):
            raise SystemExit(f"--fs: {kind!r} is neither one of {', '.join(FS_KINDS)} nor an absolute path")
    return chosen


@contextlib.contextmanager
def file_system(kind: str) -> Iterator[str]:
    """A fresh, empty folder on the file system `kind` names, removed (and unmounted) when the block ends.

    Raises SystemExit with one line when the kind cannot be had (ext4-journal
    without root, mkfs.ext4 or mount failing).
    """
    base = tempfile.mkdtemp(prefix=f"qc-bench-fs-{kind.strip('/').replace('/', '_') or 'root'}-")
    mounted: list[str] = []
    previous = _raise_on_sigterm()
    try:
        if kind == "tmp":
            folder = base
        elif kind == "tmpfs":
            folder = os.path.join(base, "mnt")
            os.mkdir(folder, 0o700)
            if os.geteuid() == 0:
                _run(["mount", "-t", "tmpfs", "-o", "mode=700,size=8g", "qc-bench-tmpfs", folder])
                mounted.append(folder)
            else:  # /dev/shm is a tmpfs on every Linux we know; checked below
                os.rmdir(folder)
                folder = tempfile.mkdtemp(prefix="qc-bench-", dir="/dev/shm")
                mounted.append("rm:" + folder)
        elif kind == "ext4-journal":
            if os.geteuid() != 0:
                raise SystemExit("--fs ext4-journal needs root (mkfs.ext4 and a loop mount): "
                                 "run with sudo, or choose other --fs kinds")
            image = os.path.join(base, "ext4.img")
            with open(image, "wb") as handle:
                handle.truncate(EXT4_IMAGE_SIZE)
            # -i 8192: room for the 100,000-job spools of the scale runs and their logs.
            _run(["mkfs.ext4", "-q", "-F", "-j", "-i", "8192", image])
            folder = os.path.join(base, "mnt")
            os.mkdir(folder, 0o700)
            _run(["mount", "-o", "loop", image, folder])
            mounted.append(folder)
            os.chmod(folder, 0o700)
            folder = os.path.join(folder, "bench")  # beside lost+found: the folder starts empty
            os.mkdir(folder, 0o700)
        else:
            folder = tempfile.mkdtemp(prefix="qc-bench-", dir=kind)
            mounted.append("rm:" + folder)
        _check_kind(kind, folder)
        yield folder
    finally:
        try:
            for entry in reversed(mounted):
                if entry.startswith("rm:"):
                    shutil.rmtree(entry[3:], ignore_errors=True)
                else:
                    _unmount(entry)
            shutil.rmtree(base, ignore_errors=True)
        finally:
            signal.signal(signal.SIGTERM, previous)


def _raise_on_sigterm():
    """SIGTERM unwinds like Ctrl-C, so the mounts and images are cleaned up; returns the old handler."""
    def stop(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    previous = signal.getsignal(signal.SIGTERM)
    if previous in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, stop)
    return previous if previous is not None else signal.SIG_DFL


def _run(argv: list[str]) -> None:
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"bench: {' '.join(argv)} failed: {(result.stderr or result.stdout).strip()}")


def _unmount(folder: str) -> None:
    """umount, retried while something (a worker being stopped) still holds it; lazily as the last resort."""
    for _ in range(50):
        if subprocess.run(["umount", folder], capture_output=True).returncode == 0:
            return
        time.sleep(0.1)
    subprocess.run(["umount", "-l", folder], capture_output=True)


def _check_kind(kind: str, folder: str) -> None:
    """The folder really is on the file system its kind promises (a wrong table is worse than none)."""
    described = describe_fs(folder)
    wanted = {"tmpfs": ": tmpfs", "ext4-journal": "ext4 with a journal"}.get(kind)
    if wanted and wanted not in described:
        raise SystemExit(f"bench: --fs {kind} gave {described}")


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


def fill_pending(spool: Spool, count: int, command: str = "true", prefix: str = "job",
                 *, drop_ins: bool = False) -> list[str]:
    """Write `count` canonical job files into pending/ (no fsync): 100,000 in a few seconds.

    The files are exactly what `enqueue` writes (built by job.build), named
    so that they sort in creation order, and each is published as enqueue
    publishes one: written in tmp/, its id's marker taken, then renamed into
    pending/ (docs/decisions/identity.md). With `drop_ins`, written straight
    into pending/ without a marker instead: files another tool dropped in,
    which a worker adopts before it claims them.
    """
    template = dumps(build({"id": "ID-PLACEHOLDER", "command": command}, defaults())).decode()
    head, tail = template.split("ID-PLACEHOLDER")
    pending, temp = spool.dir("pending"), spool.dir("tmp")
    ids = [f"{prefix}-{number:07d}" for number in range(count)]
    for job_id in ids:
        name = job_id + ".json"
        path = os.path.join(pending, name) if drop_ins else os.path.join(temp, f".{name}.fill.tmp")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(head + job_id + tail)
        if not drop_ins:
            if not spool.take_id(job_id, path):
                raise RuntimeError(f"id {job_id} is taken in {spool.root}")
            os.rename(path, os.path.join(pending, name))
    os.sync()  # the write-back of the new files must not run during the measurement that follows
    return ids


def count_files(folder: str) -> int:
    with os.scandir(folder) as entries:
        return sum(1 for entry in entries if entry.name.endswith(".json") and not entry.name.startswith("."))


def job_times(spool: Spool, state: str, ids: list[str]) -> list[tuple[float, float]]:
    """(started, finished) of each job, from the job files (the worker's own timestamps)."""
    from queuectl.core.job import parse_time
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

    def __enter__(self) -> Workers:
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


def process_pss_kb(pid: int) -> int:
    """Proportional set size in kB: each page shared by N processes counts 1/N here, so a sum over
    forked processes counts a shared page once (a sum of VmRSS counts it N times)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def shell_enqueue_script() -> str | None:
    """`queuectl-enqueue` as installed beside this Python's queuectl, else the repository's copy."""
    for candidate in (os.path.join(os.path.dirname(sys.executable), "queuectl-enqueue"),
                      os.path.join(os.path.dirname(HERE), "bin", "queuectl-enqueue")):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    # A `|` inside a cell (`seq N | xargs`) would end the cell: escaped.
    lines += ["| " + " | ".join(str(cell).replace("|", "\\|") for cell in row) + " |" for row in rows]
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
    from queuectl.core.job import parse_time
    return parse_time(spool.get(job_id)["created_at"])


def describe_fs(path: str) -> str:
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


# -- results for the charts -------------------------------------------------------

def short_command() -> str:
    """This script's command line without the folders: what a chart or report needs to say how it was run."""
    words, skip = ["python", os.path.basename(sys.argv[0])], False
    for word in sys.argv[1:]:
        if skip:
            skip = False
        elif word in ("--out", "--json", "--rq-python"):
            skip = True
        else:
            words.append(word)
    return " ".join(words)


class Results:
    """The figures of one script's run, written to bench/out/NAME.json for charts.py.

    Rows are flat dicts; every row names its file system (`fs`, a --fs kind)
    and its section, so a chart can pick what it draws.
    """

    def __init__(self, name: str):
        self.name = name
        self.data: dict = {"bench": name, "started": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"), "command": short_command(), "machine": machine(),
            "file_systems": {}, "rows": []}

    def file_system(self, kind: str, folder: str) -> str:
        described = describe_fs(folder)
        self.data["file_systems"][kind] = described.split(": ", 1)[-1]
        return described

    def add(self, **row) -> None:
        self.data["rows"].append(row)

    def save(self, path: str | None = None) -> str:
        path = path or os.path.join(OUT_DIR, f"{self.name}.json")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self.data["finished"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        with open(path + ".part", "w", encoding="utf-8") as handle:
            json.dump(self.data, handle, indent=1)
        os.replace(path + ".part", path)
        return path
