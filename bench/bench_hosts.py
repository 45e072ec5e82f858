"""Throughput across hosts beside its floor: `python bench/bench_hosts.py [--jobs N] [--pair gluster|bindfs]` as root.

On two clients of one GlusterFS volume (or two bindfs views of one folder),
in the same run and on the same mounts:

- the floor: a bare claim-by-rename loop, two racers per mount, each
  listing pending/, renaming a file into processing/ and running
  `sh -c CMD` for it: no locks, no JSON, no fsync. It is no queue (a
  retried rename can report success to both clients: its double claims
  are counted and printed), only the speed the volume allows;
- queuectl: 2 + 2 workers (`worker start --count 2` in each host's own
  UTS and PID namespaces), durable off, draining the same number of jobs.

Each job's command appends its name to a local file with one O_APPEND
write, so duplicates (a name twice) and losses (a name missing) are counted
for both. The ratio queuectl / floor is the figure; nothing is asserted.
Beside each, the CPU the file system's own daemons (glusterfs, glusterfsd,
bindfs) used per job: every request through FUSE costs them some.

Where the time goes: `--strace` (host A's workers' system calls per job),
`--profile` (GlusterFS: the requests the brick served per job, by kind,
for the floor and for queuectl).
"""

from __future__ import annotations

import argparse
import collections
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

import benchlib as lib  # noqa: E402
from support.multihost import Host, bindfs_views, gluster_volume, spool_pair  # noqa: E402

DAEMONS = ("gluster", "bindfs")  # process names (comm) of the file systems' own processes


def daemons_cpu() -> dict[int, float]:
    """CPU seconds each of the file systems' daemons has used so far (its threads included), by pid."""
    used = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as handle:
                data = handle.read()
        except OSError:
            continue
        if data[data.index("(") + 1:data.rindex(")")].startswith(DAEMONS):
            fields = data[data.rindex(")") + 2:].split()
            used[int(pid)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return used


def cpu_between(before: dict[int, float], after: dict[int, float]) -> float:
    """The daemons' CPU seconds from one sample to the next: only daemons alive at the second count,
    so that another mount's daemon that ended meanwhile (an earlier run's) takes nothing off."""
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


def _record_command(record: str, name: str) -> str:
    return f"echo {name} >> {record}"


def _racer(root: str, record: str, deadline: float) -> None:
    """Claim by rename until pending/ is empty, running each job's command."""
    pending, processing = os.path.join(root, "pending"), os.path.join(root, "processing")
    while time.monotonic() < deadline:
        names = sorted(os.listdir(pending))
        if not names:
            return
        for name in names:
            try:
                os.rename(os.path.join(pending, name), os.path.join(processing, name))
            except OSError:
                continue  # another racer got it (or says it did)
            subprocess.run(["sh", "-c", _record_command(record, name)], check=False)


def floor(pair: tuple[str, str], jobs: int, scratch: str, filled: Callable[[], None] = lambda: None) -> dict:
    """The rename loop: 2 racers on each mount; `filled` is called once the jobs are in pending/."""
    base_a, base_b = spool_pair(pair)
    for folder in ("pending", "processing"):
        os.makedirs(os.path.join(base_a, folder))
    for index in range(jobs):
        with open(os.path.join(base_a, "pending", f"job{index:06d}.json"), "w") as handle:
            handle.write('{"command": "true"}')
    record = os.path.join(scratch, "floor-record")
    open(record, "w").close()
    filled()
    started = time.monotonic()
    racers = [multiprocessing.Process(target=_racer, args=(root, record, started + 600))
              for root in (base_a, base_a, base_b, base_b)]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join()
    elapsed = time.monotonic() - started
    return {"rate": jobs / elapsed, **_tally(record, [f"job{i:06d}.json" for i in range(jobs)])}


class TracedHost(Host):
    """A host whose queuectl runs under `strace -f -c -w` (counts and wall time per system call)."""

    def __init__(self, name: str, spool_path: str, trace: str):
        super().__init__(name, spool_path)
        self.trace = trace

    def command(self, *args: str) -> list[str]:
        command = super().command(*args)
        at = command.index(sys.executable)
        return [*command[:at], "strace", "-f", "-c", "-w", "-o", self.trace, *command[at:]]


def queue(pair: tuple[str, str], jobs: int, scratch: str, trace: str | None = None,
          counts: tuple[int, int] = (2, 2), filled: Callable[[], None] = lambda: None) -> dict:
    """queuectl `counts` workers (host A, host B: 2 + 2), durable off, on the same mounts; `trace`: host A's
    workers under strace; `filled` is called once the jobs are in pending/, before any worker starts."""
    path_a, path_b = spool_pair(pair)
    spool = lib.new_spool(path_a, durable=False)
    record = os.path.join(scratch, "queue-record")
    open(record, "w").close()
    ids = lib.fill_pending(spool, jobs, command=f'echo "$QUEUECTL_JOB_ID" >> {record}')
    filled()
    started = time.monotonic()
    hosts = [TracedHost("hostA", path_a, trace) if trace else Host("hostA", path_a), Host("hostB", path_b)]
    hosts = [host for host, count in zip(hosts, counts) if count]
    try:
        procs = [host.start("worker", "start", "--count", str(count), "--quiet")
                 for host, count in zip(hosts, [count for count in counts if count])]
        seen: dict[str, int] = {}

        def drained() -> bool:
            _keep_lost_claims(spool, seen)
            return lib.count_files(spool.dir("completed")) >= jobs

        lib.wait_for(drained, 900, "every job", interval=0.05)
        elapsed = time.monotonic() - started
        if trace:  # strace writes its table when the traced workers end: stop them, not kill them
            hosts[0].run("worker", "stop", "--no-wait")
            for proc in procs:
                proc.wait(timeout=60)
        noise = [line for host, proc in zip(hosts, procs) for line in host.output(proc).splitlines()
                 if line.strip()]
    finally:
        for host in hosts:
            host.close()
    return {"rate": jobs / elapsed, **_tally(record, ids), "stderr_lines": len(noise),
            "stderr_sample": noise[:3], "by_a": _done_by(spool, "hostA-"), "lost_claims": sum(seen.values())}


def _done_by(spool, prefix: str) -> int:
    """How many completed jobs a worker whose name starts with `prefix` ran (names start with the host)."""
    count = 0
    for entry in os.scandir(spool.dir("completed")):
        if entry.name.endswith(".json"):
            with open(entry.path, encoding="utf-8") as handle:
                count += json.load(handle).get("worker", "").startswith(prefix)
    return count


def _keep_lost_claims(spool, seen: dict[str, int]) -> None:
    """Each worker's latest `lost_claims` (its record, workers/NAME.json, rewritten at most once a second
    and removed when it stops: the last second's losses may be missed)."""
    for entry in os.scandir(spool.dir("workers")):
        if entry.name.endswith(".json") and not entry.name.startswith("."):
            try:
                with open(entry.path, encoding="utf-8") as handle:
                    record = json.load(handle)
            except (OSError, ValueError):
                continue
            if isinstance(record, dict) and isinstance(record.get("lost_claims"), int):
                seen[entry.name] = max(seen.get(entry.name, 0), record["lost_claims"])


def _strace_table(trace: str, jobs: int) -> list[str]:
    """strace -c's table as calls per job (those made at least 0.5 times per job) and their wall time."""
    rows = []
    with open(trace, encoding="utf-8") as handle:
        for line in handle:
            parts = line.split()
            if len(parts) >= 5 and parts[0][0].isdigit() and parts[-1] != "total":
                seconds, calls, name = float(parts[1]), int(parts[3]), parts[-1]
                errors = int(parts[4]) if len(parts) == 6 else 0
                if calls / jobs >= 0.5:
                    rows.append((calls, f"| {name} | {calls / jobs:.1f} | {errors / jobs:.1f} "
                                        f"| {seconds * 1e3 / jobs:.2f} |"))
    return ["| system call | calls per job | errors per job | wall ms per job |", "|---|---|---|---|",
            *(row for _, row in sorted(rows, reverse=True))]


def _tally(record: str, expected: list[str]) -> dict:
    with open(record, encoding="utf-8") as handle:
        seen = collections.Counter(line.strip() for line in handle if line.strip())
    return {"duplicates": sum(count - 1 for count in seen.values() if count > 1),
            "lost": sum(1 for name in expected if name not in seen)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=400)
    parser.add_argument("--pair", action="append", choices=("gluster", "bindfs"))
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--out")
    parser.add_argument("--workers", default="2+2", metavar="A+B",
                        help="queuectl workers on host A and on host B [2+2]; 0 leaves a host out")
    parser.add_argument("--strace", action="store_true",
                        help="run host A's workers under strace -f -c -w and print its calls per job it ran")
    parser.add_argument("--profile", action="store_true",
                        help="GlusterFS: the requests the volume's brick served per job, by kind, and their time")
    args = parser.parse_args()
    if args.strace:
        trace_mode(args)
        return
    if args.profile:
        profile_mode(args)
        return
    counts = tuple(int(count) for count in args.workers.split("+"))
    if len(counts) != 2 or not any(counts):
        parser.error("--workers takes A+B, such as 2+2 or 1+0")
    lines = ["### Machine", *lib.machine(), "",
             f"### Several hosts: {args.jobs} jobs, {counts[0]} + {counts[1]} workers against the rename-loop floor, "
             "same mounts, same run",
             "", "| pair | run | floor jobs/s | floor double claims | queuectl jobs/s | ratio | duplicates | lost "
                 "| stderr lines | lost claims | daemons' CPU a job: floor, queuectl |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    scratch = tempfile.mkdtemp(prefix="qc-bench-hosts-")
    mounts = {"gluster": gluster_volume, "bindfs": bindfs_views}
    try:
        for kind in args.pair or ["gluster"]:
            with mounts[kind]() as pair:
                for run in range(1, args.repeat + 1):
                    before = daemons_cpu()
                    low = floor(pair, args.jobs, tempfile.mkdtemp(dir=scratch))
                    between = daemons_cpu()
                    ours = queue(pair, args.jobs, tempfile.mkdtemp(dir=scratch), counts=counts)
                    after = daemons_cpu()
                    lines.append(f"| {kind} | {run} | {low['rate']:.0f} | {low['duplicates']} | {ours['rate']:.0f} "
                                 f"| {ours['rate'] / low['rate']:.2f}x | {ours['duplicates']} | {ours['lost']} "
                                 f"| {ours['stderr_lines']} | {ours['lost_claims']} "
                                 f"| {cpu_between(before, between) * 1e3 / args.jobs:.1f}, "
                                 f"{cpu_between(between, after) * 1e3 / args.jobs:.1f} ms |")
                    for sample in ours["stderr_sample"]:
                        print("stderr:", sample, file=sys.stderr)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    lib.emit(lines, args.out)


def trace_mode(args: argparse.Namespace) -> None:
    """One queuectl run per pair with host A traced: its system calls per job it ran."""
    scratch = tempfile.mkdtemp(prefix="qc-bench-hosts-")
    mounts = {"gluster": gluster_volume, "bindfs": bindfs_views}
    lines = ["### Machine", *lib.machine(), ""]
    try:
        for kind in args.pair or ["gluster"]:
            with mounts[kind]() as pair:
                trace = os.path.join(scratch, f"strace-{kind}")
                ours = queue(pair, args.jobs, tempfile.mkdtemp(dir=scratch), trace)
                lines += [f"### {kind}: host A under strace, {ours['by_a']} of {args.jobs} jobs run there "
                          f"({ours['rate']:.0f} jobs/s traced, duplicates {ours['duplicates']}, "
                          f"lost {ours['lost']})", "", *_strace_table(trace, max(1, ours["by_a"])), ""]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    lib.emit(lines, args.out)


def _brick_requests(volume: str) -> dict[str, tuple[int, float]]:
    """`gluster volume profile VOLUME info cumulative`: each kind of request -> (count, average µs)."""
    out = subprocess.run(["gluster", "volume", "profile", volume, "info", "cumulative"],
                         capture_output=True, text=True, check=True).stdout
    kinds = {}
    for line in out.splitlines():
        parts = line.split()  # %-latency, average, min, max (each "N ns"), calls, kind
        if len(parts) >= 9 and parts[-1].isupper() and parts[-2].isdigit() and parts[2] == "ns":
            kinds[parts[-1]] = (int(parts[-2]), float(parts[1]) / 1000)
    return kinds


def profile_mode(args: argparse.Namespace) -> None:
    """One queuectl run (and one floor run) on a fresh GlusterFS volume with its brick profiled."""
    scratch = tempfile.mkdtemp(prefix="qc-bench-hosts-")
    lines = ["### Machine", *lib.machine(), ""]
    volume = f"qctest{os.getpid()}"  # support.multihost's name for the volume this process makes

    def clear() -> None:
        subprocess.run(["gluster", "volume", "profile", volume, "info", "clear"], capture_output=True, check=True)
    try:
        with gluster_volume() as pair:
            subprocess.run(["gluster", "volume", "profile", volume, "start"], capture_output=True, check=True)
            for name, run in (("floor", lambda: floor(pair, args.jobs, tempfile.mkdtemp(dir=scratch), clear)),
                              ("queuectl", lambda: queue(pair, args.jobs, tempfile.mkdtemp(dir=scratch),
                                                         filled=clear))):
                result = run()
                kinds = _brick_requests(volume)
                total = sum(count * micros for count, micros in kinds.values()) / args.jobs / 1000
                lines += [f"### {name}: {result['rate']:.0f} jobs/s; the brick's requests per job "
                          f"({sum(count for count, _ in kinds.values()) / args.jobs:.1f} in all, {total:.1f} ms)", "",
                          "| request | per job | average µs | ms per job |", "|---|---|---|---|"]
                lines += [f"| {kind} | {count / args.jobs:.2f} | {micros:.0f} | {count * micros / args.jobs / 1000:.2f} |"
                          for kind, (count, micros) in sorted(kinds.items(), key=lambda kv: -kv[1][0] * kv[1][1])
                          if count / args.jobs >= 0.05]
                lines.append("")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    lib.emit(lines, args.out)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # teardown runs on a kill too
    main()
