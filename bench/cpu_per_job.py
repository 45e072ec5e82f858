"""CPU per job of a worker (issue 22): `python bench/cpu_per_job.py [--jobs N] [--repeat R] [--dir PATH]`.

CPU time, not wall clock, resolves a few per cent on a shared machine: N
`true` jobs drained by one `worker start -n 1 --burst --quiet` process, its
own CPU and its children's (the shells) from wait4, beside
`seq N | xargs -P1 -I{} sh -c true` (one shell per job, no queue) in the
same run, alternating. The jobs are enqueued in-process (Spool.enqueue_many),
as compare.py does. The difference is the worker's own cost per job.
`--strace`: one more run under `strace -f -c` (system calls per job).
`--split`: the worker's steps timed apart in-process (lifecycle.claim,
runner.run, lifecycle.settle), CPU of this process and of the shells.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import tempfile
import time

import benchlib as lib

from queuectl.core import lifecycle
from queuectl.run import runner


def _cpu(argv: list[str], **kwargs) -> float:
    """CPU seconds (user + system) the command and every process it waited for used."""
    process = subprocess.Popen(argv, **kwargs)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime + usage.ru_stime


def worker_cpu(workdir: str, jobs: int, durable: bool, prefix: list[str] | None = None) -> float:
    path = tempfile.mkdtemp(dir=workdir)
    spool = lib.new_spool(path, durable=durable)
    spool.enqueue_many([{"command": "true"}] * jobs)  # as enqueue leaves them: each with its id's marker
    argv = [*(prefix or []), *lib.queuectl_argv(spool.root), "worker", "start", "-n", "1", "--burst", "--quiet"]
    seconds = _cpu(argv, stdout=subprocess.DEVNULL)
    done = lib.count_files(spool.dir("completed"))
    if done != jobs:
        raise SystemExit(f"only {done} of {jobs} jobs completed")
    shutil.rmtree(path)
    return seconds


def xargs_cpu(jobs: int) -> float:
    return _cpu(["sh", "-c", f"seq {jobs} | xargs -P1 -I{{}} sh -c true"])


def split(workdir: str, jobs: int, batch: int = 5) -> str:
    """CPU µs a job of claim, run (this process's side) and settle, and of the shells, in-process.
    A few jobs at a time: each held job keeps a descriptor open, which every spawn lists."""
    spool = lib.new_spool(tempfile.mkdtemp(dir=workdir), durable=False)
    ids = [job["id"] for job in spool.enqueue_many([{"command": "true"}] * jobs)]
    env = runner.base_environment([])

    def own() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    def shells() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime
    claim = run = settle = children = 0.0
    for start in range(0, jobs, batch):
        before = own()
        held = []
        for job_id in ids[start:start + batch]:
            with spool.held_config():
                held.append(lifecycle.claim(spool, "pending", job_id, "bench", time.time()))
        claimed, forked = own(), shells()
        outcomes = [runner.run(one.job, log_path=spool.log_path(one.job["id"]), worker="bench",
                               spool_root=spool.root, timeout=None, kill_grace=5, pass_env=[], tail_lines=10,
                               interruption=lambda: None, base_env=env) for one in held]
        ran, reaped = own(), shells()
        for one, outcome in zip(held, outcomes):
            with spool.held_config():
                lifecycle.settle(spool, one, outcome, None)
        claim, run, settle = claim + claimed - before, run + ran - claimed, settle + own() - ran
        children += reaped - forked
    return (f"in-process, CPU a job: claim {claim * 1e6 / jobs:.0f} us, run {run * 1e6 / jobs:.0f} us "
            f"(the worker's side), settle {settle * 1e6 / jobs:.0f} us; shells {children * 1e6 / jobs:.0f} us")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dir", default="/dev/shm", help="where the spools go [/dev/shm, a tmpfs]")
    parser.add_argument("--durable", action="store_true")
    parser.add_argument("--strace", metavar="FILE", help="one more run under strace -f -c -o FILE")
    parser.add_argument("--split", action="store_true", help="also time claim, run and settle apart, in-process")
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(dir=args.dir, prefix="qc-cpu-")
    rows = []
    try:
        for _ in range(args.repeat):
            base = xargs_cpu(args.jobs)
            ours = worker_cpu(workdir, args.jobs, args.durable)
            rows.append((ours, base))
            print(f"worker {ours * 1e6 / args.jobs:.0f} us/job, xargs {base * 1e6 / args.jobs:.0f} us/job, "
                  f"worker's own {(ours - base) * 1e6 / args.jobs:.0f} us/job", flush=True)
        if args.split:
            print(split(workdir, args.jobs), flush=True)
        if args.strace:
            worker_cpu(workdir, args.jobs, args.durable, ["strace", "-f", "-c", "-o", args.strace])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    own = sorted((ours - base) * 1e6 / args.jobs for ours, base in rows)
    total = sorted(ours * 1e6 / args.jobs for ours, _ in rows)
    print(f"median: worker {total[len(total) // 2]:.0f} us/job, own {own[len(own) // 2]:.0f} us/job "
          f"(min {own[0]:.0f}, max {own[-1]:.0f}), {args.jobs} jobs x {args.repeat}")


if __name__ == "__main__":
    main()
