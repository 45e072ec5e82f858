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
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

import benchlib as lib  # noqa: E402
from support.multihost import Host, bindfs_views, gluster_volume, spool_pair  # noqa: E402


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


def floor(pair: tuple[str, str], jobs: int, scratch: str) -> dict:
    """The rename loop: 2 racers on each mount."""
    base_a, base_b = spool_pair(pair)
    for folder in ("pending", "processing"):
        os.makedirs(os.path.join(base_a, folder))
    for index in range(jobs):
        with open(os.path.join(base_a, "pending", f"job{index:06d}.json"), "w") as handle:
            handle.write('{"command": "true"}')
    record = os.path.join(scratch, "floor-record")
    open(record, "w").close()
    started = time.monotonic()
    racers = [multiprocessing.Process(target=_racer, args=(root, record, started + 600))
              for root in (base_a, base_a, base_b, base_b)]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join()
    elapsed = time.monotonic() - started
    return {"rate": jobs / elapsed, **_tally(record, [f"job{i:06d}.json" for i in range(jobs)])}


def queue(pair: tuple[str, str], jobs: int, scratch: str) -> dict:
    """queuectl 2 + 2 workers, durable off, on the same mounts."""
    path_a, path_b = spool_pair(pair)
    spool = lib.new_spool(path_a, durable=False)
    record = os.path.join(scratch, "queue-record")
    open(record, "w").close()
    ids = lib.fill_pending(spool, jobs, command=f'echo "$QUEUECTL_JOB_ID" >> {record}')
    started = time.monotonic()
    hosts = [Host("hostA", path_a), Host("hostB", path_b)]
    try:
        procs = [host.start("worker", "start", "--count", "2", "--quiet") for host in hosts]
        lib.wait_for(lambda: lib.count_files(spool.dir("completed")) >= jobs, 900, "every job", interval=0.05)
        elapsed = time.monotonic() - started
        noise = [line for host, proc in zip(hosts, procs) for line in host.output(proc).splitlines()
                 if line.strip()]
    finally:
        for host in hosts:
            host.close()
    return {"rate": jobs / elapsed, **_tally(record, ids), "stderr_lines": len(noise),
            "stderr_sample": noise[:3]}


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
    args = parser.parse_args()
    lines = ["### Machine", *lib.machine(), "",
             f"### Several hosts: {args.jobs} jobs, 2 + 2 workers against the rename-loop floor, same mounts, same run",
             "", "| pair | run | floor jobs/s | floor double claims | queuectl jobs/s | ratio | duplicates | lost "
                 "| stderr lines |", "|---|---|---|---|---|---|---|---|---|"]
    scratch = tempfile.mkdtemp(prefix="qc-bench-hosts-")
    mounts = {"gluster": gluster_volume, "bindfs": bindfs_views}
    try:
        for kind in args.pair or ["gluster"]:
            with mounts[kind]() as pair:
                for run in range(1, args.repeat + 1):
                    low = floor(pair, args.jobs, tempfile.mkdtemp(dir=scratch))
                    ours = queue(pair, args.jobs, tempfile.mkdtemp(dir=scratch))
                    lines.append(f"| {kind} | {run} | {low['rate']:.0f} | {low['duplicates']} | {ours['rate']:.0f} "
                                 f"| {ours['rate'] / low['rate']:.2f}x | {ours['duplicates']} | {ours['lost']} "
                                 f"| {ours['stderr_lines']} |")
                    for sample in ours["stderr_sample"]:
                        print("stderr:", sample, file=sys.stderr)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    lib.emit(lines, args.out)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # teardown runs on a kill too
    main()
