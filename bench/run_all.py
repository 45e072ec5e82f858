"""Every benchmark on every file system, then the charts: `sudo .venv/bin/python bench/run_all.py`.

Runs, one after the other (each a process of its own, so a failure in one
does not hide the others' figures):

1. bench_spool.py   start-up vs `import click`, enqueue rates, status;
2. bench_worker.py  throughput vs xargs, pick-up latency, deep queues;
3. compare.py       queuectl beside task-spooler, nq and RQ (--chart);
4. charts.py        bench/*.png from bench/out/*.json;

each on tmpfs, a journaled ext4 loop image and /tmp (--fs to choose; the
ext4 image and the private tmpfs need root). Reports go to
bench/out/{spool,worker,compare}.md, figures to bench/out/*.json, and
bench/out/report.md gathers them: the targets first, then one section per
file system, ready to paste into bench/RESULTS.md.

--quick runs small sizes to prove the harness works (about 2 minutes);
the full run is what RESULTS.md reports (about 30 minutes on a quiet
2-core machine). The peers of compare.py must be installed (`--install`
passes on to compare.py: apt-get task-spooler, nq, redis-server, and rq in
a throwaway venv).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "out")
sys.path.insert(0, HERE)

import benchlib as lib  # noqa: E402

QUICK = {
    "spool": ["--repeat", "5", "--durable-jobs", "400", "--fast-jobs", "400", "--status-jobs", "2000"],
    "worker": ["--jobs", "200", "--repeat", "1", "--tries", "5", "--big", "2000", "--claims", "60",
               "--repeat-big", "1"],
    "compare": ["--jobs", "100", "--shell-jobs", "5", "--tries", "5", "--scale", "100,1000", "--claims", "40",
                "--enqueue-jobs", "400"],
}
CLICK = "python -c 'import click'"
# The full run: each script's defaults, but three runs of every system in compare.py (its default is one).
FULL = {"spool": [], "worker": [], "compare": ["--repeat", "3"]}
SCRIPTS = {"spool": "bench_spool.py", "worker": "bench_worker.py", "compare": "compare.py"}


def run(name: str, argv: list[str], timings: dict[str, float]) -> bool:
    report = os.path.join(OUT, f"{name}.md")
    command = [sys.executable, os.path.join(HERE, SCRIPTS[name]), *argv, "--out", report,
               "--json", os.path.join(OUT, f"{name}.json")]
    print(f"run_all: {' '.join(command)}", file=sys.stderr, flush=True)
    started = time.time()
    result = subprocess.run(command, cwd=HERE, stdout=subprocess.DEVNULL)
    timings[name] = time.time() - started
    if result.returncode != 0:
        print(f"run_all: {SCRIPTS[name]} exited {result.returncode}", file=sys.stderr)
    return result.returncode == 0


def split_by_fs(markdown: str) -> tuple[list[str], dict[str, list[str]]]:
    """The lines before the first file system's block, and each block (from its `File system `KIND`:` line)."""
    head: list[str] = []
    blocks: dict[str, list[str]] = {}
    current = None
    for line in markdown.splitlines():
        match = re.match(r"File system `([^`]+)`:", line)
        if match:
            current = match.group(1)
            blocks.setdefault(current, [])
        if line.startswith("(run took"):
            current = None
            continue
        if current is None:
            head.append(line)
        else:
            blocks[current].append("#" + line if line.startswith("### ") else line)
    return head, blocks


def load(name: str) -> dict | None:
    path = os.path.join(OUT, f"{name}.json")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def targets(kinds: list[str]) -> list[str]:
    """The issue's targets, each figure beside its baseline from the same run."""
    rows = []
    worker, spool, compare = load("worker"), load("spool"), load("compare")
    for kind in kinds:
        if worker:
            found = {row["system"]: row for row in worker["rows"] if row["section"] == "throughput"
                     and row["fs"] == kind}
            on = found.get("queuectl, durable on")
            if on:
                goal = "≥ 0.6×" if kind in ("tmpfs", "ext4-journal") else "reported as it is"
                met = "" if kind not in ("tmpfs", "ext4-journal") else (" met" if on["vs_baseline"] >= 0.6
                                                                          else " MISSED")
                rows.append([kind, "throughput, 2 workers, durable on ÷ `seq N | xargs -P2 -I{} sh -c true`",
                             goal, f"{on['vs_baseline']:.2f}× ({on['jobs_per_s']:.0f} vs "
                             f"{found['xargs -P2']['jobs_per_s']:.0f} jobs/s){met}"])
        if compare:
            found = {row["system"]: row for row in compare["rows"] if row["section"] == "compare"
                     and row["fs"] == kind}
            if "queuectl, durable on" in found and "task-spooler" in found:
                ours, theirs = found["queuectl, durable on"]["jobs_per_s"], found["task-spooler"]["jobs_per_s"]
                verdict = ("met" if ours > theirs else "MISSED") if kind == "tmpfs" else "reported"
                rows.append([kind, "`compare.py`: queuectl ÷ task-spooler jobs/s (same run)",
                             "> 1×" if kind == "tmpfs" else "reported as it is", f"{ours / theirs:.2f}× ({ours:.0f} vs {theirs:.0f} jobs/s; "
                             f"xargs {found['xargs -P2']['jobs_per_s']:.0f}) {verdict}"])
        if spool:
            found = {row["command"]: row for row in spool["rows"] if row["section"] == "startup"
                     and row["fs"] == kind}
            enqueue = found.get("queuectl enqueue 'echo hi'")
            if enqueue:
                rows.append([kind, "`queuectl enqueue` process ÷ `python -c 'import click'`", "≤ 1.15×",
                             f"{enqueue['vs_click']:.2f}× ({enqueue['median_s'] * 1000:.1f} vs "
                             f"{found[CLICK]['median_s'] * 1000:.1f} ms) "
                             f"{'met' if enqueue['vs_click'] <= 1.15 else 'MISSED'}"])
            counted = {row["command"]: row for row in spool["rows"] if row["section"] == "instructions"
                       and row["fs"] == kind}
            enqueue = counted.get("queuectl enqueue 'echo hi'")
            if enqueue:
                rows.append([kind, "the same in instructions (callgrind; the kernel's part left out)", "≤ 1.15×",
                             f"{enqueue['vs_click']:.3f}× ({enqueue['instructions'] / 1e6:.1f} M vs "
                             f"{counted[CLICK]['instructions'] / 1e6:.1f} M) "
                             f"{'met' if enqueue['vs_click'] <= 1.15 else 'MISSED'}"])
    return lib.table(["fs", "target", "goal", "measured"], rows)


def report(kinds: list[str], timings: dict[str, float], command: str) -> str:
    lines = ["# Benchmark run", "", f"Command: `{command}`; took {sum(timings.values()) / 60:.1f} min "
             f"({', '.join(f'{name} {seconds:.0f} s' for name, seconds in timings.items())}).", "",
             *lib.machine(), "", "## Targets", "", *targets(kinds), "",
             "Charts: [jobs/s](../compare-jobs-per-s.png), [pick-up latency](../compare-pickup-latency.png), "
             "[worker throughput](../worker-throughput.png), [start-up](../spool-startup.png), "
             "[start-up in instructions](../spool-startup-instructions.png).", ""]
    pieces = {}
    for name in ("spool", "worker", "compare"):
        path = os.path.join(OUT, f"{name}.md")
        if os.path.exists(path):
            with open(path, encoding="utf-8") as handle:
                pieces[name] = split_by_fs(handle.read())[1]
    for kind in kinds:
        described = next((blocks[kind][0].split(": ", 1)[1] for blocks in pieces.values() if kind in blocks), "")
        title = {"tmp": "/tmp"}.get(kind, kind)
        lines += [f"## On {title}", "", f"File system `{kind}`: {described}", ""]
        for name, blocks in pieces.items():
            if kind in blocks:
                lines += [f"### {SCRIPTS[name]}", "", *blocks[kind][1:]]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes: proves the harness, not the figures")
    parser.add_argument("--only", choices=tuple(SCRIPTS), action="append", help="run only these scripts")
    parser.add_argument("--install", action="store_true", help="compare.py installs the peers first")
    parser.add_argument("--rq-python", help="a Python that imports rq and redis (passed to compare.py)")
    lib.add_fs_option(parser)
    args = parser.parse_args()
    kinds = lib.chosen_file_systems(args.fs)
    if "ext4-journal" in kinds and os.geteuid() != 0:
        print("run_all: --fs ext4-journal needs root (mkfs.ext4, a loop mount): run it with sudo, "
              "or name other --fs kinds", file=sys.stderr)
        return 2
    if importlib.util.find_spec("matplotlib") is None:
        print("run_all: the charts need matplotlib: pip install -e '.[bench]'", file=sys.stderr)
        return 2
    os.makedirs(OUT, exist_ok=True)
    fs_args = [argument for kind in kinds for argument in ("--fs", kind)]
    timings: dict[str, float] = {}
    ok = True
    for name in args.only or list(SCRIPTS):
        extra = QUICK[name] if args.quick else FULL[name]
        if name == "compare":
            extra = [*extra, "--chart"] + (["--install"] if args.install else []) + \
                (["--rq-python", args.rq_python] if args.rq_python else [])
        ok = run(name, [*extra, *fs_args], timings) and ok
    started = time.time()
    subprocess.run([sys.executable, os.path.join(HERE, "charts.py")], check=False)
    timings["charts"] = time.time() - started
    path = os.path.join(OUT, "report.md")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(report(kinds, timings, " ".join(["python", *sys.argv])))
    print(f"run_all: {path} ({sum(timings.values()) / 60:.1f} min)", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    if shutil.which("mkfs.ext4") is None:
        print("run_all: warning: no mkfs.ext4 on PATH (--fs ext4-journal will fail)", file=sys.stderr)
    sys.exit(main())
