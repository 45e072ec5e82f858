"""The dashboard's API on a spool of 100,000 jobs: `python bench/bench_dashboard.py`.

Builds the spool in a temporary folder (job files written directly, no
fsync, `durable` off), starts the dashboard in a thread on a free port,
and times each call over HTTP: the median of a few runs after one warm-up,
printed as a ratio to the target of 200 ms per call.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time

from queuectl import Spool
from queuectl.core import locks, registry
from queuectl.core.config import defaults
from queuectl.core.job import build, dumps, new_id
from queuectl.dashboard.server import TOKEN_HEADER, make_server

TARGET_SECONDS = 0.2
SHARES = {"pending": 0.2, "processing": 0.0005, "completed": 0.6, "failed": 0.05, "dead": 0.1495}
WORKERS = 4


def fill_spool(path: str, total: int) -> tuple[Spool, dict[str, list[str]], list[int]]:
    """`total` job files spread over the states, settled over the last two hours; a few live workers."""
    spool = Spool(path)
    spool.set_config("durable", "false")
    config = defaults()
    now = time.time()
    ids: dict[str, list[str]] = {}
    for state, share in SHARES.items():
        ids[state] = []
        folder = spool.dir(state)
        template = build({"command": "sh -c 'make report > /tmp/report.txt'"}, config, state=state, now=now)
        for _ in range(max(1, int(total * share))):
            job_id = new_id()
            template.update(id=job_id, attempts=1, last_duration=0.25, last_exit_code=0 if state == "completed" else 1)
            path_name = os.path.join(folder, job_id + ".json")
            with open(path_name, "wb") as handle:
                handle.write(dumps(template))
            if state in ("completed", "failed", "dead"):
                settled = now - 7200 * (len(ids[state]) / (total * share))
                os.utime(path_name, (settled, settled))
            ids[state].append(job_id)
    with open(spool.log_path(ids["completed"][-1]), "wb") as handle:
        handle.write(b"=== attempt 1 ===\n" + b"a line of output from the job\n" * 200_000)  # 6 MB
    held = []
    for number in range(WORKERS):
        name = f"bench-worker-{number}"
        held.append(locks.take_worker_lock(spool, name))  # holds the worker's lock
        registry.write_record(spool, name, {"pid": os.getpid(), "host": platform.node(), "started": now,
                                            "job": ids["processing"][number % len(ids["processing"])],
                                            "heartbeat": now})
    return spool, ids, held


def call(port: int, token: str, method: str, path: str) -> float:
    """Seconds for one request, answer read in full; any status but 200 stops the benchmark."""
    headers = {}
    if method == "POST":
        headers = {"Origin": f"http://127.0.0.1:{port}", TOKEN_HEADER: token}
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    started = time.perf_counter()
    connection.request(method, path, headers=headers)
    response = connection.getresponse()
    body = response.read()
    elapsed = time.perf_counter() - started
    connection.close()
    if response.status != 200:
        raise SystemExit(f"{method} {path}: {response.status} {body[:200]!r}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per call [default: 5]")
    parser.add_argument("--dir", default=None, help="folder for the spool [default: the system temp folder]")
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="queuectl-bench-dashboard-", dir=args.dir)
    try:
        started = time.perf_counter()
        spool, ids, _held = fill_spool(os.path.join(workdir, "spool"), args.jobs)
        built = time.perf_counter() - started
        started = time.perf_counter()
        server = make_server(spool, "127.0.0.1", 0)
        first_scan = time.perf_counter() - started
        threading.Thread(target=server.serve_forever, daemon=True).start()
        dead = iter(reversed(ids["dead"]))  # a different dead job for every retry
        some_job = ids["completed"][len(ids["completed"]) // 2]
        logged_job = ids["completed"][-1]
        calls = [
            ("GET", "/", "the page"),
            ("GET", "/api/status", "counts, workers, chart"),
            ("GET", "/api/jobs", "latest 25 jobs, all states"),
            ("GET", "/api/jobs?state=completed&limit=100", "latest 100 completed"),
            ("GET", "/api/jobs?state=dead&limit=20", "DLQ panel"),
            ("GET", "/api/jobs?offset=50000&limit=25", "page at offset 50,000"),
            ("GET", f"/api/jobs?q={some_job[-9:]}", "search by id"),
            ("GET", f"/api/jobs/{some_job}", "one job"),
            ("GET", f"/api/jobs/{logged_job}/log", "64 KiB tail of a 6 MB log"),
            ("GET", "/metrics", "Prometheus text"),
            ("POST", lambda: f"/api/jobs/{next(dead)}/retry", "retry one dead job"),
            ("POST", "/api/dlq/retry-all", "retry-all, one batch"),
        ]
        rows = []
        for method, path, what in calls:
            paths = [path() if callable(path) else path for _ in range(args.repeat + 1)]
            median = statistics.median([call(server.port, server.token, method, each) for each in paths][1:])
            shown = paths[-1] if len(paths[-1]) < 60 else paths[-1][:57] + "..."
            rows.append(f"| `{method} {shown}` | {what} | {median * 1000:.1f} ms | "
                        f"{median / TARGET_SECONDS:.2f} |")
        server.shutdown()
        server.server_close()
        counts = spool.counts()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"Machine: {platform.system()} {platform.release()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}")
    print(f"Command: `{' '.join([os.path.basename(sys.executable), *sys.argv])}`")
    print(f"Spool: {args.jobs:,} jobs written in {built:.1f} s; after the run {json.dumps(counts)}; "
          f"{WORKERS} live workers")
    print(f"Server start-up (first scan stats every settled file): {first_scan * 1000:.0f} ms")
    print()
    print(f"Median of {args.repeat} runs after a warm-up, over HTTP; ratio = median ÷ 200 ms (≤ 1 meets the target).")
    print()
    print("| call | what | median | ÷ 200 ms |")
    print("|---|---|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
