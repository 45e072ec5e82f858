"""queuectl beside task-spooler, nq and RQ (issue 5): `python bench/compare.py [--install] [--fs KIND ...] [--chart]`.

The same work for every system, measured the same way, in one run, beside
the baseline `seq N | xargs -P2 -I{} sh -c true` (no queue at all):

- throughput: 2 gate jobs hold both workers while N+K trivial jobs are
  enqueued (each runs `sh -c true` in every system, as a queuectl job runs
  its command through `sh -c` and as the baseline does); the time from opening the gate to the last job done gives jobs/s;
- enqueue cost from a shell: K enqueues, one client process each (while the
  gate holds the workers, so no job runs meanwhile), through each of the
  system's shell clients (queuectl has two: `queuectl enqueue`, a Python
  process, and `queuectl-enqueue`, the sh script that drops a file in); and
  K calls in a loop inside one `sh`, timed by that shell, where queuectl
  also has the function `queuectl shell-init` defines;
- pick-up latency of one job on idle workers, from the enqueue call to the
  job's own `date +%s%N` (p50, p95, max over --tries): through the system's
  in-process API where it has one, and through its shell client;
- memory of the idle workers and their server, found by a marker in their
  environment: PSS summed over them (/proc/PID/smaps_rollup; each shared
  page counted once, split between its users: forked workers share most of
  their pages, which a sum of RSS would count once per process), with the
  sum of VmRSS beside it.

Every table says which systems fsync: queuectl with `durable` on fsyncs each
job file and its folder; with it off, and task-spooler, never; nq fsyncs its
queue folder once a job; RQ's Redis here keeps nothing on disk.

Systems: queuectl with `durable` on and off (2 workers each); task-spooler (`tsp`, 2 slots, its own socket);
nq (no worker pool: every job is its own waiting process and jobs run one at
a time, so it is measured as it is); RQ on a real Redis started here on
127.0.0.1 (2 `rq worker` processes, jobs call subprocess.run(['sh', '-c', 'true']) from a
module on PYTHONPATH). A system that is not installed is skipped with a
message; `--install` installs them (apt-get for tsp, nq and redis-server; rq
and redis into a throwaway venv in the run's temporary folder).

Then scale runs of queuectl alone: one worker's claim rate and memory with
100, 10,000 and 100,000 jobs pending; `status` and `list --limit 20` on
100,000 jobs; enqueue rate with `durable` on and off.

All of it runs on every file system --fs names (default: tmpfs, a journaled
ext4 loop image, and /tmp; see benchlib.file_system): the spools, tsp's
output files, nq's queue and Redis's folder live there, and every row names
its file system. The figures go to bench/out/compare.json (--json);
`--systems queuectl` picks both queuectl rows. `--chart` then draws bench/compare-jobs-per-s.png and
bench/compare-pickup-latency.png from them (matplotlib: `pip install
-e '.[bench]'`; `bench/charts.py` redraws them from the JSON).
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable

import benchlib as lib
from bench_spool import publish_rates

MARKER = "QUEUECTL_BENCH_SYSTEM"


def gate_command(gate: str, slot: int) -> str:
    """A job that says it runs, then waits until the gate file appears."""
    return f"touch {gate}.running-{slot}; while [ ! -e {gate} ]; do sleep 0.002; done"


class System:
    """One queue under test; subclasses say how to start it, enqueue into it and know it is done."""

    name = ""
    key = ""  # what --systems calls it (the name by default)
    fsyncs = "?"  # said beside every figure: like is compared with like
    slots = 2
    needs: tuple[str, ...] = ()

    def __init__(self, workdir: str):
        self.workdir = os.path.join(workdir, self.key or self.name)  # a name for shell commands: no spaces
        os.makedirs(self.workdir)
        self.marker = f"{self.key or self.name}-{uuid.uuid4().hex[:8]}"
        self.env = {**os.environ, MARKER: self.marker}
        self.processes: list[subprocess.Popen] = []

    @classmethod
    def missing(cls) -> str | None:
        absent = [tool for tool in cls.needs if shutil.which(tool) is None]
        return f"not installed ({', '.join(absent)}); --install installs it" if absent else None

    def start(self) -> None: ...
    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        for pid in marked_pids(self.marker):  # daemons that left their parent
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def spawn(self, argv: list[str], **options) -> subprocess.Popen:
        process = subprocess.Popen(argv, env=self.env, start_new_session=True, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **options)
        self.processes.append(process)
        return process

    def shell_enqueue(self, command: str) -> list[str]: ...
    def shell_clients(self) -> dict[str, Callable[[str], list[str]]]:
        """Every shell client, by label: each is timed for the enqueue-from-a-shell table."""
        return {self.client_label(): self.shell_enqueue}

    def client_label(self) -> str:
        return self.name

    def loop_clients(self) -> dict[str, tuple[str, str]]:
        """Each shell client as (set-up, call) for a loop inside one shell: the client's own cost per job."""
        return {label: ("", shlex.join(client("true"))) for label, client in self.shell_clients().items()}

    def enqueue(self, command: str) -> None:
        """The in-process API where there is one, else the shell client."""
        subprocess.run(self.shell_enqueue(command), env=self.env, check=True, stdout=subprocess.DEVNULL)

    def enqueue_many(self, count: int) -> None:
        for _ in range(count):
            self.enqueue("true")

    def wait_done(self, total: int) -> None: ...

    def pids(self) -> set[int]:
        """Its workers, daemons and server: marked, or started here (redis-server rewrites its environ)."""
        return set(marked_pids(self.marker)) | {process.pid for process in self.processes if process.poll() is None}

    def memory_kb(self) -> tuple[int, int]:
        """(PSS, VmRSS) summed over its processes, in kB."""
        pids = self.pids()
        return sum(lib.process_pss_kb(pid) for pid in pids), sum(lib.process_memory_kb(pid)[0] for pid in pids)

    def processes_named(self) -> str:
        names = sorted(process_name(pid) for pid in self.pids())
        return ", ".join(f"{names.count(name)}x {name}" for name in sorted(set(names))) or "none"


class Queuectl(System):
    name = "queuectl, durable on"
    key = "queuectl-durable-on"
    durable = True
    fsyncs = "yes (each job file and its folder)"

    def start(self) -> None:
        self.spool = lib.new_spool(os.path.join(self.workdir, "spool"), durable=self.durable)
        self.spawn(lib.queuectl_argv(self.spool.root) + ["worker", "start", "-n", "2"])
        lib.wait_for(lambda: len(lib.worker_pids(self.spool)) >= 2, 60, "queuectl workers")

    def shell_enqueue(self, command: str) -> list[str]:
        return lib.queuectl_argv(self.spool.root) + ["enqueue", command]

    def shell_clients(self) -> dict[str, Callable[[str], list[str]]]:
        clients = {f"{self.name}: `queuectl enqueue`": self.shell_enqueue}
        script = lib.shell_enqueue_script()
        if script:
            clients[f"{self.name}: `queuectl-enqueue`"] = lambda command: [script, "--spool", self.spool.root,
                                                                          command]
        return clients

    def loop_clients(self) -> dict[str, tuple[str, str]]:
        clients = super().loop_clients()
        if lib.shell_enqueue_script():
            init = shlex.join(lib.queuectl_argv(self.spool.root) + ["shell-init"])
            clients[f"{self.name}: `queuectl_enqueue` (shell-init)"] = (f'eval "$({init})"', "queuectl_enqueue true")
        return clients

    def enqueue(self, command: str) -> None:
        self.spool.enqueue(command)

    def enqueue_many(self, count: int) -> None:
        self.spool.enqueue_many([{"command": "true"}] * count)

    def wait_done(self, total: int) -> None:
        lib.wait_for(lambda: lib.count_files(self.spool.dir("completed")) >= total, 600, "queuectl jobs")


class QueuectlNoSync(Queuectl):
    name = "queuectl, durable off"
    key = "queuectl-durable-off"
    durable = False
    fsyncs = "no"


class TaskSpooler(System):
    name = "task-spooler"
    fsyncs = "never"
    needs = ("tsp",)

    def start(self) -> None:
        self.env.update(TS_SOCKET=os.path.join(self.workdir, "socket"), TS_SLOTS="2", TS_MAXFINISHED="1000000",
                        TMPDIR=self.workdir)
        subprocess.run(["tsp", "-S", "2"], env=self.env, check=True)  # starts its server

    def shell_enqueue(self, command: str) -> list[str]:
        return ["tsp", "sh", "-c", command]

    def enqueue_many(self, count: int) -> None:
        for _ in range(count):
            # `sh -c true`, the work of a queuectl job and of the xargs baseline: tsp alone would run `true` bare.
            subprocess.run(["tsp", "sh", "-c", "true"], env=self.env, check=True, stdout=subprocess.DEVNULL)

    def wait_done(self, total: int) -> None:
        def finished() -> bool:
            listing = subprocess.run(["tsp", "-l"], env=self.env, capture_output=True, text=True).stdout
            states = [line.split()[1] for line in listing.splitlines()[1:] if line.strip()]
            return states.count("finished") >= total
        subprocess.run(["tsp", "-w"], env=self.env, stdout=subprocess.DEVNULL)
        lib.wait_for(finished, 600, "tsp jobs", interval=0.02)

    def stop(self) -> None:
        subprocess.run(["tsp", "-K"], env=self.env, stderr=subprocess.DEVNULL)
        super().stop()


class Nq(System):
    name = "nq"
    fsyncs = "its queue folder, once a job"  # strace: fsync of NQDIR after creating the job's file
    slots = 1  # nq runs one job at a time
    needs = ("nq",)

    def start(self) -> None:
        self.env["NQDIR"] = os.path.join(self.workdir, "queue")
        os.makedirs(self.env["NQDIR"])

    def shell_enqueue(self, command: str) -> list[str]:
        return ["nq", "-q", "sh", "-c", command]

    def enqueue_many(self, count: int) -> None:
        for _ in range(count):
            subprocess.run(["nq", "-q", "sh", "-c", "true"], env=self.env, check=True)  # as tsp's, above

    def wait_done(self, total: int) -> None:
        subprocess.run(["nq", "-w"], env=self.env, check=True, stdout=subprocess.DEVNULL)


RQ_JOBS = """import subprocess

def true():
    subprocess.run(['sh', '-c', 'true'])

def shell(command):
    subprocess.run(command, shell=True)
"""

RQ_CLIENT = """import sys, time
from redis import Redis
from rq import Queue, Worker
import benchjobs
redis = Redis.from_url(sys.argv[1])
queue = Queue("bench", connection=redis)
if len(sys.argv) > 2:  # one job from a shell
    queue.enqueue(benchjobs.shell, sys.argv[2])
    raise SystemExit
for line in sys.stdin:
    verb, _, argument = line.rstrip("\\n").partition(" ")
    if verb == "ready":
        while len(Worker.all(connection=redis)) < int(argument):
            time.sleep(0.05)
    elif verb == "shell":
        queue.enqueue(benchjobs.shell, argument)
    elif verb == "many":
        for _ in range(int(argument)):
            queue.enqueue(benchjobs.true)
    elif verb == "done":
        while queue.finished_job_registry.count < int(argument):
            time.sleep(0.005)
    print("ok", flush=True)
"""


class Rq(System):
    name = "rq"
    fsyncs = "no (Redis without persistence here)"
    needs = ("redis-server",)
    python = ""  # the Python that can import rq: set by main()

    @classmethod
    def missing(cls) -> str | None:
        if shutil.which("redis-server") is None:
            return "not installed (redis-server); --install installs it"
        if not cls.python:
            return "rq is not importable; --install puts rq and redis into a throwaway venv"
        return None

    def start(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.url = f"redis://127.0.0.1:{port}/0"
        self.spawn(["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                    "--appendonly", "no", "--dir", self.workdir])
        with open(os.path.join(self.workdir, "benchjobs.py"), "w", encoding="utf-8") as handle:
            handle.write(RQ_JOBS)
        self.client_script = os.path.join(self.workdir, "client.py")
        with open(self.client_script, "w", encoding="utf-8") as handle:
            handle.write(RQ_CLIENT)
        self.env["PYTHONPATH"] = self.workdir
        lib.wait_for(self._redis_up, 30, "redis-server")
        rq = os.path.join(os.path.dirname(self.python), "rq")
        for _ in range(2):
            self.spawn([rq, "worker", "-q", "-u", self.url, "bench"], cwd=self.workdir)
        unmarked = {name: value for name, value in self.env.items() if name != MARKER}  # not a worker
        self.client = subprocess.Popen([self.python, self.client_script, self.url], env=unmarked, text=True,
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=self.workdir)
        self._ask("ready 2")

    def _redis_up(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", int(self.url.rsplit(":", 1)[1].split("/")[0])), 1) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def _ask(self, line: str) -> None:
        self.client.stdin.write(line + "\n")
        self.client.stdin.flush()
        if self.client.stdout.readline().strip() != "ok":
            raise RuntimeError(f"rq client failed on {line!r}")

    def shell_enqueue(self, command: str) -> list[str]:
        return [self.python, self.client_script, self.url, command]

    def enqueue(self, command: str) -> None:
        self._ask(f"shell {command}")  # the client's own round trip is < 0.1 ms of this

    def enqueue_many(self, count: int) -> None:
        self._ask(f"many {count}")

    def wait_done(self, total: int) -> None:
        self._ask(f"done {total}")

    def stop(self) -> None:
        self.client.stdin.close()
        self.client.wait(timeout=10)
        super().stop()


SYSTEMS = (Queuectl, QueuectlNoSync, TaskSpooler, Nq, Rq)


def marked_pids(marker: str) -> list[int]:
    """Processes whose environment carries this system's marker (its workers, server and daemons)."""
    needle = f"{MARKER}={marker}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open(f"/proc/{entry}/environ", "rb") as handle:
                    if needle in handle.read().split(b"\0"):
                        found.append(int(entry))
            except OSError:
                continue
    return found


def process_name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            argv = handle.read().split(b"\0")
    except OSError:
        return "?"
    words = [os.path.basename(word.decode(errors="replace")) for word in argv if word]
    if words and words[0].startswith("python") and len(words) > 2:
        return " ".join(words[:4]) if words[1] == "-m" else " ".join(words[1:3])
    return " ".join(words[:2])


# -- measurements -------------------------------------------------------------

def measure(system: System, jobs: int, shell_jobs: int, tries: int) -> dict:
    stamps = os.path.join(system.workdir, "stamps")
    os.makedirs(stamps)
    result: dict = {}
    system.start()
    try:
        time.sleep(1.0)  # idle: start-up work done
        result["pss_kb"], result["memory_kb"] = system.memory_kb()
        result["processes"] = system.processes_named()
        result["latency_api"] = pickup(system, stamps, tries, shell=False)
        result["latency_shell"] = pickup(system, stamps, tries, shell=True)
        result["latency_script"] = pickup(system, stamps, tries, shell=True, script=True)
        gate = os.path.join(system.workdir, "gate")
        for slot in range(system.slots):
            system.enqueue(gate_command(gate, slot))
        lib.wait_for(lambda: os.path.exists(f"{gate}.running-0"), 60, f"{system.name} gate job")
        clients = system.shell_clients()
        result["enqueue_shell"] = {}
        for label, client in clients.items():
            before = time.perf_counter()
            for _ in range(shell_jobs):
                subprocess.run(client("true"), env=system.env, check=True, stdout=subprocess.DEVNULL)
            result["enqueue_shell"][label] = (time.perf_counter() - before) / shell_jobs
        shell_total = shell_jobs * len(clients)
        loops = system.loop_clients()
        result["enqueue_loop"] = {label: loop_cost(setup, call, shell_jobs, system.env)
                                  for label, (setup, call) in loops.items()}
        shell_total += shell_jobs * len(loops)
        system.enqueue_many(jobs)
        opened = time.perf_counter()
        with open(gate, "w"):
            pass
        latency_jobs = sum(len(result[kind] or []) for kind in ("latency_api", "latency_shell", "latency_script"))
        system.wait_done(latency_jobs + system.slots + shell_total + jobs)
        result["rate"] = (jobs + shell_total) / (time.perf_counter() - opened)
    finally:
        system.stop()
    return result


def pickup(system: System, stamps: str, tries: int, *, shell: bool, script: bool = False) -> list[float] | None:
    """`script`: through the second shell client, where there is one (queuectl-enqueue)."""
    if not shell and type(system).enqueue is System.enqueue:
        return None  # no in-process API: the shell row says it
    clients = list(system.shell_clients().values())
    if script and len(clients) < 2:
        return None
    client = clients[-1] if script else system.shell_enqueue
    latencies = []
    for attempt in range(tries):
        stamp = os.path.join(stamps, f"{'script' if script else 'shell' if shell else 'api'}-{attempt}")
        before = time.time()
        if shell:
            subprocess.run(client(lib.stamp_command(stamp)), env=system.env, check=True, stdout=subprocess.DEVNULL)
        else:
            system.enqueue(lib.stamp_command(stamp))
        lib.wait_for(lambda: os.path.exists(stamp), 30, f"{system.name} job", interval=0.0005)
        latencies.append(lib.read_stamp(stamp) - before)
        time.sleep(0.05)  # the job settles; the workers are idle again
    return latencies


def shell_process_cost(count: int) -> float:
    """Seconds per `sh -c true` started from here: the floor of any one-process-per-job client."""
    before = time.perf_counter()
    for _ in range(count):
        subprocess.run(["sh", "-c", "true"], check=True)
    return (time.perf_counter() - before) / count


def loop_cost(setup: str, call: str, count: int, env: dict) -> float:
    """Seconds per `call` in a loop of `count` inside one sh, timed by the shell (its set-up not counted)."""
    script = (f"{setup}\nstart=$(date +%s%N); i=0\nwhile [ $i -lt {count} ]; do {call} >/dev/null || exit 1; "
              f"i=$((i + 1)); done\nend=$(date +%s%N); echo $((end - start))")
    done = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, check=True)
    return int(done.stdout.split()[-1]) / 1e9 / count


def idle_xargs_kb() -> tuple[int, int]:
    """(PSS, VmRSS) of an idle xargs, in kB."""
    process = subprocess.Popen(["xargs", "-P2", "-I{}", "sh", "-c", "true"], stdin=subprocess.PIPE)
    try:
        time.sleep(0.2)
        return lib.process_pss_kb(process.pid), lib.process_memory_kb(process.pid)[0]
    finally:
        process.stdin.close()
        process.wait()


def comparison(fs: str, workdir: str, systems: list[type[System]], jobs: int, shell_jobs: int, tries: int,
               repeat: int, record: lib.Results) -> list[str]:
    rates: dict[str, list[float]] = {"xargs": []}
    measured: dict[str, list[dict]] = {}
    notes = []
    for attempt in range(repeat):
        rates["xargs"].append(lib.xargs_rate(jobs + shell_jobs))
        for kind in systems:
            reason = kind.missing()
            if reason:
                if attempt == 0:
                    notes.append(f"- {kind.name}: skipped, {reason}")
                    print(f"compare: {kind.name} skipped: {reason}", file=sys.stderr)
                continue
            result = measure(kind(os.path.join(workdir, f"run-{attempt}")), jobs, shell_jobs, tries)
            measured.setdefault(kind.name, []).append(result)
            rates.setdefault(kind.name, []).append(result["rate"])
    stamps = os.path.join(workdir, "baseline-stamps")
    os.makedirs(stamps)
    spawn = lib.spawn_latency(stamps, tries)
    sh_cost = shell_process_cost(shell_jobs)
    loop_floor = lib.median([loop_cost("", "/bin/true", shell_jobs, dict(os.environ)) for _ in range(repeat)])
    xargs_kb = idle_xargs_kb()
    base_rate = lib.median(rates["xargs"])

    def latency_cells(values):
        if values is None:
            return ["(no API)", "", "", ""]
        return [f"{lib.median(values) * 1e3:.1f} ms", f"{lib.quantile(values, 0.95) * 1e3:.1f} ms",
                f"{max(values) * 1e3:.1f} ms", f"{lib.quantile(values, 0.95) / lib.quantile(spawn, 0.95):.1f}x"]

    def quantiles(values):
        return None if not values else {"p50": lib.median(values), "p95": lib.quantile(values, 0.95),
                                        "max": max(values)}

    pss_xargs, rss_xargs = xargs_kb
    throughput_rows = [[fs, "xargs -P2 (baseline)", "n/a", f"{base_rate:.0f}", "100 %", "", lib.mb(pss_xargs),
                        lib.mb(rss_xargs), "1.0x", "xargs"]]
    shell_rows = [[fs, "`sh -c true` (the floor of any one-process client)", "n/a", f"{sh_cost * 1e3:.2f} ms",
                   "1.0x", ""]]
    latency_rows = [[fs, "xargs (baseline): `sh -c date` spawned", "", *latency_cells(spawn)]]
    record.add(fs=fs, section="compare", system="xargs -P2", baseline=True, jobs_per_s=base_rate,
               runs=rates["xargs"], enqueue_shell_s=sh_cost, pss_kb=pss_xargs, memory_kb=rss_xargs, fsyncs="n/a",
               latency={"spawn": quantiles(spawn)})
    fsyncs = {kind.name: kind.fsyncs for kind in systems}
    tsp_rate = lib.median(rates["task-spooler"]) if "task-spooler" in rates else None
    costs = {name: {label: lib.median([result["enqueue_shell"][label] for result in results])
                    for label in results[0]["enqueue_shell"]} for name, results in measured.items()}
    tsp_client = costs.get("task-spooler", {}).get("task-spooler")
    loop_costs = {name: {label: lib.median([result["enqueue_loop"][label] for result in results])
                         for label in results[0]["enqueue_loop"]} for name, results in measured.items()}
    tsp_loop = loop_costs.get("task-spooler", {}).get("task-spooler")
    loop_rows = [[fs, "`/bin/true` (the floor: one program per job)", "n/a", f"{loop_floor * 1e3:.2f} ms", "1.0x", ""]]
    for name, results in measured.items():
        rate = lib.median(rates[name])
        pss = lib.median([result["pss_kb"] for result in results])
        memory = lib.median([result["memory_kb"] for result in results])
        throughput_rows.append([fs, name, fsyncs[name], f"{rate:.0f}", f"{rate / base_rate:.0%}",
                                f"{rate / tsp_rate:.2f}x" if tsp_rate else "", lib.mb(pss), lib.mb(memory),
                                f"{pss / pss_xargs:.1f}x", results[0]["processes"]])
        for label, cost in costs[name].items():
            shell_rows.append([fs, label, fsyncs[name], f"{cost * 1e3:.2f} ms", f"{cost / sh_cost:.1f}x",
                               f"{cost / tsp_client:.2f}x" if tsp_client else ""])
        for label, cost in loop_costs[name].items():
            loop_rows.append([fs, label, fsyncs[name], f"{cost * 1e3:.2f} ms", f"{cost / loop_floor:.1f}x",
                              f"{cost / tsp_loop:.2f}x" if tsp_loop else ""])
        latencies = {}
        for kind, label in (("latency_api", "in-process API"), ("latency_shell", "shell client"),
                            ("latency_script", "`queuectl-enqueue`")):
            values = [value for result in results if result[kind] for value in result[kind]]
            if kind == "latency_script" and not values:
                continue
            latency_rows.append([fs, name, label, *latency_cells(values or None)])
            latencies[kind.removeprefix("latency_")] = quantiles(values)
        record.add(fs=fs, section="compare", system=name, baseline=False, jobs_per_s=rate,
                   vs_xargs=rate / base_rate, vs_task_spooler=rate / tsp_rate if tsp_rate else None,
                   runs=rates[name], enqueue_shell_s=costs[name], enqueue_loop_s=loop_costs[name],
                   pss_kb=pss, memory_kb=memory,
                   fsyncs=fsyncs[name], latency=latencies)
    lines = [f"### Comparison on {fs}: {jobs} trivial jobs in bulk + {shell_jobs} per shell client through 2 "
             f"workers, median of {repeat} runs", "",
             *notes, "" if notes else None,
             "Idle memory: PSS (proportional set size, /proc/PID/smaps_rollup) summed over the system's "
             "processes counts each shared page once, split between the processes that map it; the sum of "
             "VmRSS beside it counts a page shared by forked workers once per worker.", "",
             *lib.table(["fs", "system", "fsyncs", "jobs/s", "vs xargs", "vs task-spooler",
                         "idle memory (PSS, sum)", "(VmRSS, sum)", "PSS vs idle xargs", "idle processes"],
                        throughput_rows), "",
             f"### Enqueue from a shell on {fs}: one client process per job, {shell_jobs} jobs, median of "
             f"{repeat} runs", "",
             *lib.table(["fs", "client", "fsyncs", "per job", "vs `sh -c true`", "vs task-spooler's client"],
                        shell_rows), "",
             f"### Enqueue from a shell loop on {fs}: {shell_jobs} calls inside one `sh`, timed by that shell, "
             f"median of {repeat} runs", "",
             "What a script that enqueues many jobs pays per job: the client, without the Python that starts "
             "the loop. `queuectl_enqueue` is the function `eval \"$(queuectl shell-init)\"` defines.", "",
             *lib.table(["fs", "client", "fsyncs", "per job", "vs `/bin/true`", "vs task-spooler's client"],
                        loop_rows), "",
             f"### Pick-up latency on {fs}, idle workers: enqueue call to the job's own start, {tries} tries "
             f"x {repeat} runs", "",
             *lib.table(["fs", "system", "enqueued through", "p50", "p95", "max", "p95 vs baseline"], latency_rows), ""]
    return [line for line in lines if line is not None]


# -- queuectl at scale ----------------------------------------------------------

def scale(fs: str, workdir: str, sizes: list[int], claims: int, enqueue_jobs: int) -> list[str]:
    rows, base = [], None
    biggest = None
    for size in sizes:
        path = os.path.join(workdir, f"scale-{size}")
        run = lib.claim_run(path, size, min(claims, size))
        base = base or run["rate"]
        rows.append([fs, f"{size:,}", f"{run['rate']:.0f}", f"{run['rate'] / base:.0%}", f"{run['startup']:.2f} s",
                     lib.mb(run["rss_kb"]), lib.mb(run["hwm_kb"])])
        if biggest is not None:
            shutil.rmtree(biggest)
        biggest = path
    lines = [f"### queuectl at scale on {fs}: one worker, jobs 21 to {claims} after start-up (durable off)", "",
             *lib.table(["fs", "pending", "claims/s", f"vs {sizes[0]:,}", "start-up to first job", "VmRSS", "VmHWM"], rows),
             ""]
    lines += cli_times(fs, biggest, max(sizes))
    shutil.rmtree(biggest)
    lines += enqueue_rates(fs, workdir, enqueue_jobs)
    return lines


def cli_times(fs: str, spool_path: str, size: int, repeat: int = 3) -> list[str]:
    commands = {"queuectl --version (start-up floor)": ["--version"], "queuectl status": ["status"],
                "queuectl list --limit 20": ["list", "--limit", "20"]}
    times: dict[str, list[float]] = {label: [] for label in commands}
    for _ in range(repeat):
        for label, args in commands.items():
            before = time.perf_counter()
            subprocess.run(lib.queuectl_argv(spool_path) + args, check=True, stdout=subprocess.DEVNULL)
            times[label].append(time.perf_counter() - before)
    floor = lib.median(times["queuectl --version (start-up floor)"])
    rows = [[fs, label, f"{lib.median(values) * 1e3:.0f} ms", f"{lib.median(values) / floor:.1f}x"]
            for label, values in times.items()]
    return [f"### CLI on {fs}, a spool of {size:,} jobs (median of {repeat})", "",
            *lib.table(["fs", "command", "wall time", "vs start-up floor"], rows), ""]


def enqueue_rates(fs: str, workdir: str, count: int) -> list[str]:
    """bench_spool.py's measure: raw publish loops and `Spool.enqueue` taking turns of 200 jobs."""
    rows = []
    for durable in (True, False):
        rate = publish_rates(tempfile.mkdtemp(dir=workdir), count, durable=durable)
        raw = rate["raw + dir fsync"] if durable else rate["raw"]  # the same guarantees as an enqueue
        rows.append([fs, f"durable {'on' if durable else 'off'}", f"{rate['single']:.0f}", f"{rate['batch']:.0f}",
                     f"{raw:.0f}", f"{rate['single'] / raw:.0%}"])
    return [f"### Enqueue rate in-process on {fs}, {count} jobs", "",
            "Baseline: a raw loop of open, write, (fsync file), rename, (fsync folder) of the same bytes.", "",
            *lib.table(["fs", "setting", "`Spool.enqueue` jobs/s", "`enqueue_many` jobs/s", "raw loop /s",
                        "enqueue vs raw"], rows), ""]


# -- set-up ---------------------------------------------------------------------

def install(workdir: str) -> str:
    """apt-get the peers (as root) and a throwaway venv with rq; returns that venv's Python."""
    if shutil.which("apt-get") and os.geteuid() == 0:
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "task-spooler", "nq", "redis-server"], check=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    else:
        print("compare: not root or no apt-get: install task-spooler, nq and redis-server yourself", file=sys.stderr)
    venv = os.path.join(workdir, "rq-venv")
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    python = os.path.join(venv, "bin", "python")
    subprocess.run([python, "-m", "pip", "install", "-q", "rq", "redis"], check=True)
    return python


def rq_python(workdir: str, wanted: bool, given: str | None) -> str:
    if wanted:
        return install(workdir)
    if given:
        return given
    probe = subprocess.run([sys.executable, "-c", "import rq, redis"], capture_output=True)
    return sys.executable if probe.returncode == 0 else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=500, help="trivial jobs enqueued in bulk per run [500]")
    parser.add_argument("--shell-jobs", type=int, default=30, help="jobs enqueued one shell process each [30]")
    parser.add_argument("--tries", type=int, default=30, help="pick-up latency tries per run [30]")
    parser.add_argument("--repeat", type=int, default=1, help="runs of every system [1]")
    parser.add_argument("--systems", default=",".join(kind.key or kind.name for kind in SYSTEMS),
                        help="comma-separated subset: queuectl (both rows), queuectl-durable-on, "
                             "queuectl-durable-off, task-spooler, nq, rq [all]")
    parser.add_argument("--scale", default="100,10000,100000", help="pending-queue sizes for queuectl ('' to skip)")
    parser.add_argument("--claims", type=int, default=100, help="jobs measured per scale run [100]")
    parser.add_argument("--enqueue-jobs", type=int, default=1000, help="jobs per enqueue-rate row [1000]")
    parser.add_argument("--install", action="store_true", help="install the peers first (apt-get, pip in a venv)")
    parser.add_argument("--rq-python", help="a Python that imports rq and redis (instead of --install's venv)")
    parser.add_argument("--chart", action="store_true",
                        help="also draw bench/compare-jobs-per-s.png and bench/compare-pickup-latency.png "
                             "(needs matplotlib: the bench extra)")
    lib.add_fs_option(parser)
    parser.add_argument("--out", help="also write the report (markdown) to this file")
    parser.add_argument("--json", help=f"where the figures go [{os.path.join(lib.OUT_DIR, 'compare.json')}]")
    args = parser.parse_args()
    wanted = args.systems.split(",")
    chosen = [kind for kind in SYSTEMS if {kind.name, kind.key or kind.name, kind.key.split("-")[0]} & set(wanted)]
    kinds = lib.chosen_file_systems(args.fs)
    if args.chart:
        try:
            import charts  # fails now, not after the whole run, when matplotlib is missing
        except ImportError as exc:
            raise SystemExit(f"compare: --chart needs matplotlib ({exc}): pip install -e '.[bench]'") from None
    setup = tempfile.mkdtemp(prefix="qc-compare-setup-")
    started = time.time()
    record = lib.Results("compare")
    try:
        Rq.python = rq_python(setup, args.install, args.rq_python)
        lines = ["## queuectl beside task-spooler, nq and RQ (`bench/compare.py`)", "", *lib.machine(),
                 f"- versions: {versions()}", ""]
        for fs in kinds:
            with lib.file_system(fs) as workdir:
                lines += [f"File system `{fs}`: {record.file_system(fs, workdir)}", ""]
                lines += comparison(fs, workdir, chosen, args.jobs, args.shell_jobs, args.tries, args.repeat, record)
                if args.scale:
                    lines += scale(fs, workdir, [int(size) for size in args.scale.split(",")], args.claims,
                                   args.enqueue_jobs)
            saved = record.save(args.json)
        if args.chart:
            drawn = charts.draw_compare(record.data, lib.HERE)
            lines += [f"Charts: {', '.join(f'`{os.path.relpath(path)}`' for path in drawn)} (from `{saved}`)", ""]
    finally:
        shutil.rmtree(setup, ignore_errors=True)
    lines.append(f"(run took {time.time() - started:.0f} s: `{' '.join(['python', *sys.argv])}`)")
    lib.emit(lines, args.out)


def versions() -> str:
    found = []
    for package in ("task-spooler", "nq", "redis-server"):
        probe = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", package], capture_output=True, text=True)
        if probe.returncode == 0 and probe.stdout:
            found.append(f"{package} {probe.stdout}")
    if Rq.python:
        probe = subprocess.run([Rq.python, "-c", "import rq, redis; print(rq.__version__, redis.__version__)"],
                               capture_output=True, text=True)
        if probe.returncode == 0:
            rq_version, redis_py = probe.stdout.split()
            found.append(f"rq {rq_version} (redis-py {redis_py})")
    return ", ".join(found) or "no peers"


if __name__ == "__main__":
    main()
