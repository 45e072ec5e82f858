"""Running one command: its process group, environment, log, limits and outcome.

The command runs as `/bin/sh -c` in a new session (so a timeout or a stop
can signal every process it started, and nothing it started in the
background outlives it: see `_end_group`), with stdin from /dev/null, stdout
appended to the job's log and stderr copied there too while its last lines
are kept for the job's history. The job sees a small base environment, not
the worker's: secrets in the worker's environment do not leak into jobs
unless `pass_env` names them.
"""

from __future__ import annotations

import errno
import math
import os
import re
import resource
import signal
import subprocess
import time
from collections.abc import Callable

from ..core import fsops, lifecycle
from ..core.job import iso
from ..core.limits import Limits
from ..core.limits import resolve as job_limits  # noqa: F401 - for the worker: runner.job_limits(job, settings)
from ..core.outcome import Outcome
from ..core.spool import Spool
from . import cgroups, progress

LEFTOVER_POLL = 0.05  # seconds between looks for a finished job's leftover processes
# What a job inherits from the worker's environment without being asked.
BASE_ENV = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TERM")


def base_environment(pass_env: list[str]) -> dict[str, str]:
    """What a job takes from this process's environment: BASE_ENV, LC_*, and what `pass_env` names."""
    source = os.environ
    names = list(source) if "*" in pass_env else [*BASE_ENV, *pass_env]
    env = {name: source[name] for name in names if name in source}
    env.update({name: source[name] for name in source if name.startswith("LC_")})
    env.setdefault("PATH", os.defpath)
    return env


def job_environment(job: dict, attempt: int, spool_root: str, pass_env: list[str],
                    base: dict[str, str] | None = None) -> dict[str, str]:
    """The job's whole environment; `base` is base_environment(pass_env), when the caller keeps it."""
    env = dict(base) if base is not None else base_environment(pass_env)
    env.update(job.get("env") or {})
    env.update(QUEUECTL_JOB_ID=job["id"], QUEUECTL_ATTEMPT=str(attempt), QUEUECTL_SPOOL=spool_root,
               QUEUECTL_PROGRESS=progress.path(spool_root, job["id"]))
    return env


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def kill_leftovers(job_id: str, spool_root: str) -> int:
    """SIGKILL what is left of a dead worker's job; returns how many processes got it.

    A process counts only if its environment carries the job's
    QUEUECTL_JOB_ID and QUEUECTL_SPOOL, which every process the command
    started inherits, so a recycled pid is never hit and the worker needs
    to write nothing down per job.
    """
    return _kill_job_processes(job_id, spool_root, None)


LEFTOVER_WAIT = 10.0  # seconds recovery waits for a dead worker's command to be gone


def end_leftovers(job_id: str, spool_root: str) -> None:
    """SIGKILL what is left of a dead worker's job and wait until none of it lives (at most
    LEFTOVER_WAIT): a signal is delivered later than kill() returns."""
    deadline = time.monotonic() + LEFTOVER_WAIT
    while kill_leftovers(job_id, spool_root) and time.monotonic() < deadline:
        time.sleep(0.01)


class LeftoversPlugin(lifecycle.Plugin):
    """Recovery of a job whose worker died during its run: what its command left running is
    ended (end_leftovers) before any feature frees what the job held, so a group slot or a
    resource index is never held by two running jobs, and before the job can run again.
    plugins.default_plugins() puts it first."""

    def on_recover(self, spool: Spool, job: dict, leftovers: bool) -> None:
        if leftovers:
            end_leftovers(job["id"], spool.root)


def _job_processes(job_id: str, spool_root: str, pgid: int | None) -> list[int]:
    """Live (not zombie) processes whose environment carries the job's QUEUECTL_JOB_ID and
    QUEUECTL_SPOOL; with `pgid`, only those still in that process group."""
    markers = _markers(job_id, spool_root)
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    return [int(entry) for entry in entries if entry.isdigit() and _is_job_process(entry, markers, pgid)]


def _markers(job_id: str, spool_root: str) -> set[bytes]:
    return {f"QUEUECTL_JOB_ID={job_id}".encode(), f"QUEUECTL_SPOOL={spool_root}".encode()}


def _is_job_process(pid: str, markers: set[bytes], pgid: int | None) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:  # a zombie's reads empty
            if not markers <= set(handle.read().split(b"\0")):
                return False
        if pgid is None:
            return True
        with open(f"/proc/{pid}/stat", "rb") as handle:
            # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses
            return int(handle.read().rsplit(b")", 1)[1].split()[2]) == pgid
    except (OSError, ValueError, IndexError):
        return False


def _kill_job_processes(job_id: str, spool_root: str, pgid: int | None) -> int:
    """SIGKILL the job's processes (see `_job_processes`); returns how many got it.

    With pidfds a process is pinned, then checked again, then signalled, so
    the signal cannot reach a process that took a recycled pid in between.
    """
    markers = _markers(job_id, spool_root)
    killed = 0
    for pid in _job_processes(job_id, spool_root, pgid):
        try:
            pidfd = os.pidfd_open(pid)
        except (AttributeError, OSError):
            pidfd = None
        try:
            if pidfd is None:
                os.kill(pid, signal.SIGKILL)
            elif _is_job_process(str(pid), markers, pgid):
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            else:
                continue
            killed += 1
        except OSError:
            continue
        finally:
            if pidfd is not None:
                os.close(pidfd)
    return killed


def run(job: dict, *, log_path: str, worker: str, spool_root: str, timeout: float | None,
        kill_grace: float, pass_env: list[str], tail_lines: int,
        interruption: Callable[[], str | None], wait_step: float = 0.5, header: str | None = None,
        base_env: dict[str, str] | None = None, limits: Limits | None = None) -> Outcome:
    """Run the job's command once and say how it ended.

    `header` starts the log line written before the run (a completion hook's, hooks.run).
    `base_env`: base_environment(pass_env), from a caller that runs many jobs.
    `limits`: what the run is held to (limits.resolve, docs/guide/limits.md); a run that
    fails on one of them ends with its reason as `error`.

    `interruption()` is asked every `wait_step` seconds for the whole run,
    the kill grace and the wait for leftover processes included (the worker
    does its periodic duties there, such as recovery); when it returns "stop" or "cancel" the process group
    gets SIGTERM, then SIGKILL after `kill_grace`, like a timeout. "suspend": the group gets SIGSTOP
    (once), and SIGCONT at the first answer that is not "suspend"; the time it spent stopped does not
    count against `timeout`.
    """
    attempt = job["attempts"]
    outcome = Outcome(started=time.time())
    try:
        # O_NONBLOCK: a FIFO planted as the log fails at once instead of blocking the worker.
        log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
                         | os.O_NONBLOCK, 0o600)
    except OSError as exc:
        outcome.error = f"cannot open its log {log_path}: {exc.strerror}"
        outcome.finished = time.time()
        return outcome
    try:
        header = header or f"=== attempt {attempt} started"
        os.write(log_fd, f"{header} {iso(outcome.started)} by {worker} ===\n".encode())
        progress.prepare(spool_root)
        group = cgroups.make(job["id"], limits.memory) if limits is not None and limits.memory else None
        try:
            try:
                process = start(job["command"], log_fd, job.get("cwd") or None,
                                job_environment(job, attempt, spool_root, pass_env, base_env),
                                None if limits is None else _limited(job["command"], limits, group))
            except OSError as exc:
                outcome.error = f"cannot start: {exc.strerror}: {exc.filename or job.get('cwd')}"
                os.write(log_fd, f"queuectl: {outcome.error}\n".encode())
                outcome.finished = time.time()
                return outcome
            try:
                tail = _supervise(process, log_fd, outcome, timeout, kill_grace, interruption, tail_lines,
                                  wait_step, owner=(job["id"], spool_root),
                                  cpu=limits is not None and limits.cpu_time is not None)
            except BaseException:
                # An error in the worker's periodic duties (interruption) leaves nobody to watch the
                # command's time limit or read its stderr: it is ended, not left running unsupervised.
                _signal_group(process.pid, signal.SIGKILL)
                process.wait()
                raise
            if limits is not None and not outcome.succeeded:
                outcome.error = _limit_reached(limits, group, outcome, tail)
        finally:
            if group is not None:
                group.remove()
            progress.remove(spool_root, job["id"])
    finally:
        os.close(log_fd)
    outcome.finished = time.time()
    return outcome


def _limited(command: str, limits: Limits, group: cgroups.JobGroup | None) -> list[str]:
    """The argv of a shell that puts itself in the job's cgroup, sets the job's rlimits, then
    becomes `/bin/sh -c command` (so the job sees the same $0, pid and process group as without).

    The shell's own ulimit sets them in the process that then execs the
    command: no code of ours runs between fork and exec (docs/guide/limits.md,
    "How they are enforced"), and a job without limits starts as before.
    """
    steps = []
    if group is not None:
        steps.append('echo $$ >"$2"')  # before any process of the job exists: all of them are counted
    if limits.memory and group is None:
        # RLIMIT_DATA, not RLIMIT_AS: see docs/guide/limits.md, "Memory". In KiB, rounded up.
        steps.append(f"ulimit -d {_capped(resource.RLIMIT_DATA, math.ceil(limits.memory / 1024) * 1024) // 1024}")
    if limits.cpu_seconds:
        # Soft and hard at once: SIGKILL at the limit (SIGXCPU would dump core by default).
        steps.append(f"ulimit -t {_capped(resource.RLIMIT_CPU, limits.cpu_seconds)}")
    if limits.max_files:
        steps.append(f"ulimit -n {_capped(resource.RLIMIT_NOFILE, limits.max_files)}")
    steps.append('exec /bin/sh -c "$1"')
    argv = ["/bin/sh", "-c", " && ".join(steps), "/bin/sh", command]
    if group is not None:
        argv.append(group.procs)
    return argv


def _capped(kind: int, value: int) -> int:
    """`value`, or the worker's own hard limit where that is lower: the job cannot be allowed more anyway,
    and asking for more would fail the shell's ulimit."""
    try:
        hard = resource.getrlimit(kind)[1]
    except (OSError, ValueError):
        return value
    return value if hard == resource.RLIM_INFINITY or hard < 0 else min(value, hard)


# What a program prints when an allocation fails: Python, coreutils' xalloc, strerror(ENOMEM), C++,
# Java, Go, Node and Rust. Only read for a failed run with a memory rlimit and no cgroup to ask.
_OUT_OF_MEMORY = re.compile(rb"MemoryError|out of memory|memory exhausted|cannot allocate memory|bad_alloc"
                            rb"|OutOfMemory|memory allocation of \d+ bytes failed", re.IGNORECASE)
_TOO_MANY_FILES = b"Too many open files"  # strerror(EMFILE)
_CPU_SIGNALS = (signal.SIGKILL, signal.SIGXCPU)
# The CPU time wait4 reports of a process the limit killed can fall short of it by a few clock ticks.
CPU_SLACK = 0.1


def _limit_reached(limits: Limits, group: cgroups.JobGroup | None, outcome: Outcome, tail: bytes) -> str | None:
    """The reason a failed run with `limits` failed, when one of them made it fail; else its `error` as it was.

    Memory: the cgroup's count of OOM kills where there is a cgroup, else
    what the program said on stderr, since an rlimit makes an allocation
    fail, not the process. CPU: killed by SIGKILL or SIGXCPU (or a shell
    saying so in its exit code) after using the limit's CPU time. Open
    files: "Too many open files" on stderr.
    """
    if outcome.timed_out or outcome.interrupted or outcome.error:
        return outcome.error
    if limits.memory and (group.oom_killed() if group is not None else _OUT_OF_MEMORY.search(tail)):
        return limits.memory_reason()
    seconds = limits.cpu_seconds
    if seconds and outcome.cpu is not None and outcome.cpu >= seconds - CPU_SLACK and (
            outcome.signal in _CPU_SIGNALS or (outcome.exit_code or 0) - 128 in _CPU_SIGNALS):
        return limits.cpu_reason()
    if limits.max_files and _TOO_MANY_FILES in tail:
        return limits.files_reason()
    return None


def start(command: str, log_fd: int, cwd: str | None, env: dict[str, str],
          argv: list[str] | None = None) -> subprocess.Popen | Shell:
    """`/bin/sh -c command` in a new session: stdin /dev/null, stdout to `log_fd`, stderr a pipe to us.

    `argv` replaces `/bin/sh -c command` (a run with limits: `_limited`).

    The shell starts with no signal blocked or ignored, no handler, and no
    descriptor of ours but those three, however it is started. posix_spawn
    (a vfork in the C library) costs a fraction of what subprocess.Popen
    spends in Python around its own fork; Popen is kept for a job with a
    `cwd` (Python's posix_spawn cannot change directory) and where
    /proc/self/fd cannot be listed.
    """
    argv = argv or ["/bin/sh", "-c", command]
    closing = None if cwd is not None else _descriptors_to_close()
    if closing is not None:
        try:
            return _spawn(argv, log_fd, env, closing)
        except OSError as exc:
            if exc.errno != errno.EBADF:
                raise
            # A C library whose posix_spawn fails to close a descriptor another thread closed
            # since the listing: Popen closes what is open at the time.
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log_fd,
                                stderr=subprocess.PIPE, cwd=cwd, start_new_session=True, env=env)


def _spawn(argv: list[str], log_fd: int, env: dict[str, str], closing: list[int]) -> Shell:
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    try:
        actions = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                   (os.POSIX_SPAWN_DUP2, log_fd, 1), (os.POSIX_SPAWN_DUP2, write_end, 2)]
        actions += [(os.POSIX_SPAWN_CLOSE, fd) for fd in closing if fd not in (log_fd, write_end)]
        pid = os.posix_spawn("/bin/sh", argv, env, file_actions=actions, setsid=True,
                             setsigmask=(), setsigdef=_DEFAULT_SIGNALS)
    except BaseException:
        os.close(read_end)
        raise
    finally:
        os.close(write_end)
    return Shell(pid, open(read_end, "rb", buffering=0))


# The signals set to SIG_DFL in the shell. The C library's posix_spawn resets every signal the
# child may have a handler for anyway: a signal it is told to default costs one sigaction, any
# other a look first, then a reset. So every signal is named but one ignored when this worker
# started (as under nohup), which the shell inherits ignored as from any parent; SIGPIPE and
# SIGXFSZ, which Python itself ignores, are named always (as Popen's restore_signals does).
_PYTHONS_OWN = {getattr(signal, name) for name in ("SIGPIPE", "SIGXFZ", "SIGXFSZ") if hasattr(signal, name)}
_DEFAULT_SIGNALS = frozenset(number for number in signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP}
                             if number in _PYTHONS_OWN or signal.getsignal(number) != signal.SIG_IGN)


def _descriptors_to_close() -> list[int] | None:
    """Our descriptors from 3 up that an exec would pass on, for the shell to close: close-on-exec
    is not left to every library that opened one (watchdog's inotify descriptor is not). The rest
    (Python opens every descriptor close-on-exec) need no close of their own, each of which costs
    the C library a look at the descriptor limit and the child a close(2). None: no /proc/self/fd."""
    if not hasattr(os, "posix_spawn"):
        return None
    try:
        listed = [fd for fd in map(int, os.listdir("/proc/self/fd")) if fd > 2]
    except OSError:
        return None
    closing = []
    for fd in listed:
        try:
            if os.get_inheritable(fd):
                closing.append(fd)
        except OSError:
            continue  # closed since the listing (the listing's own descriptor among them)
    return closing


class Shell:
    """A shell started by posix_spawn, with what the runner uses of a subprocess.Popen."""

    def __init__(self, pid: int, stderr) -> None:
        self.pid = pid
        self.stderr = stderr
        self.returncode: int | None = None

    def wait(self) -> int:
        if self.returncode is None:
            _, status = os.waitpid(self.pid, 0)
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


def _supervise(process: subprocess.Popen | Shell, log_fd: int, outcome: Outcome, timeout: float | None,
               kill_grace: float, interruption: Callable[[], str | None], tail_lines: int,
               wait_step: float, owner: tuple[str, str], cpu: bool = False) -> bytes:
    """Copy stderr to the log until the shell exits, enforcing the time limit and requests;
    then end what the job left running (`_end_group`). Returns the last 8 KiB of stderr.
    With `cpu`, `outcome.cpu` is set too."""
    deadline = outcome.started + timeout if timeout else None
    kill_at = None
    stopped_at = None  # when the job's group got SIGSTOP ("suspend"); its stopped time does not count
    # against its timeout: the deadline moves on by it at SIGCONT (docs/guide/limits.md)
    # Every wait_step, not at each chunk of stderr, and not at once: the worker looked for
    # requests just before the claim, and most jobs of a busy queue end before the first ask.
    ask_at = outcome.started + wait_step
    stderr = process.stderr
    tail = b""
    while True:
        now = time.time()
        if now >= ask_at:
            asked = interruption()
            ask_at = now + wait_step
            if asked == "suspend":
                if stopped_at is None and kill_at is None:
                    _signal_group(process.pid, signal.SIGSTOP)
                    stopped_at = now
                asked = None
            elif stopped_at is not None:  # resumed, or ended: a stopped process acts on SIGTERM after SIGCONT
                _signal_group(process.pid, signal.SIGCONT)
                if deadline is not None:
                    deadline += now - stopped_at
                stopped_at = None
            if kill_at is None:
                outcome.interrupted = asked
        if kill_at is None:
            if not outcome.interrupted and deadline is not None and stopped_at is None and now >= deadline:
                outcome.timed_out = True
            if outcome.interrupted or outcome.timed_out:
                _signal_group(process.pid, signal.SIGTERM)
                # A lost job runs elsewhere already: no grace for this copy.
                kill_at = now if outcome.interrupted == "lost" else now + kill_grace
        elif now >= kill_at:
            _signal_group(process.pid, signal.SIGKILL)
            kill_at = float("inf")
        limit = None if stopped_at is not None else deadline
        wake = min(x for x in (ask_at, limit if kill_at is None else kill_at) if x is not None)
        if stderr is not None:
            if fsops.wait_readable((stderr.fileno(),), wake - now):
                chunk = os.read(stderr.fileno(), 65536)
                if chunk:
                    os.write(log_fd, chunk)
                    tail = (tail + chunk)[-8192:]
                else:
                    stderr.close()
                    stderr = None
        if stderr is None or _exited(process):
            if not _wait_exit(process, 0 if stderr is not None else max(0.0, wake - time.time())):
                continue
            if stderr is not None:
                tail = _drain(stderr, log_fd, tail)
            break
    code = _end_group(process, kill_at, kill_grace, owner, interruption, wait_step, outcome if cpu else None)
    if code < 0:
        outcome.signal = -code
    else:
        outcome.exit_code = code
    lines = tail.decode("utf-8", "replace").splitlines()
    outcome.stderr_tail = lines[-tail_lines:] if tail_lines else []
    return tail


def _wait_exit(process: subprocess.Popen | Shell, timeout: float) -> bool:
    """Wait up to `timeout` for the shell to exit, woken by the exit itself (a pidfd); never reaps it.

    Popen.wait polls with sleeps: a shell that closed stderr a moment before
    exiting would keep its worker waiting for the next poll.
    """
    if timeout > 0 and not _exited(process):
        try:
            pidfd = os.pidfd_open(process.pid)
        except (AttributeError, OSError):  # no pidfds (before Linux 5.3): poll
            deadline = time.monotonic() + timeout
            while not _exited(process) and time.monotonic() < deadline:
                time.sleep(0.005)
            return _exited(process)
        try:
            fsops.wait_readable((pidfd,), timeout)
        finally:
            os.close(pidfd)
    return _exited(process)


def _exited(process: subprocess.Popen | Shell) -> bool:
    """Whether the shell has exited, leaving it unreaped (see `_end_group`)."""
    if process.returncode is not None:
        return True
    try:
        return os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _end_group(process: subprocess.Popen | Shell, kill_at: float | None, kill_grace: float,
               owner: tuple[str, str], tick: Callable[[], object] = lambda: None, wait_step: float = 0.5,
               outcome: Outcome | None = None) -> int:
    """Reap the exited shell and end the processes the job left behind; returns the shell's status.

    A finished job leaves nothing running (docs/decisions/process-groups.md):
    its process group gets SIGTERM, and what is still there after
    `kill_grace` (counted from the first SIGTERM of a timeout or a stop) gets
    SIGKILL. The SIGTERM goes while the shell is still a zombie, so its pid,
    the group's id, cannot belong to anyone else yet. The usual job, which
    leaves nothing, costs two kill(2) calls. Otherwise the wait looks for
    the job's live processes by their QUEUECTL_JOB_ID and QUEUECTL_SPOOL in
    that group (`owner` is the job id and spool root), since an orphan's
    zombie keeps a group alive until init reaps it. A process that left the
    job's process group (setsid) is not the job's any more: left alone.
    `tick` is called every `wait_step` meanwhile, its answer ignored (the
    worker's periodic duties). With an `outcome`, the shell's CPU time goes to its `cpu`.
    """
    if kill_at is None:
        _signal_group(process.pid, signal.SIGTERM)
        kill_at = time.time() + kill_grace
    elif kill_at == float("inf"):
        _signal_group(process.pid, signal.SIGKILL)  # the group was killed already: no more grace
        kill_at = time.time()
    pgid = process.pid
    code = process.wait() if outcome is None else _reap(process, outcome)
    if not _group_alive(pgid):
        return code
    tick_at = time.time() + wait_step
    while _job_processes(*owner, pgid):
        now = time.time()
        if now >= kill_at:
            _kill_job_processes(*owner, pgid)
            break
        if now >= tick_at:
            tick()
            tick_at = now + wait_step
        time.sleep(LEFTOVER_POLL)
    return code


def _reap(process: subprocess.Popen | Shell, outcome: Outcome) -> int:
    """process.wait(), by wait4: with the CPU time the shell and what it waited for used (a CPU
    limit's reason, `_limit_reached`); only for a run with one, as the usage costs a little."""
    if process.returncode is None:
        try:
            _, status, usage = os.wait4(process.pid, 0)
        except ChildProcessError:
            return process.wait()
        process.returncode = os.waitstatus_to_exitcode(status)
        outcome.cpu = usage.ru_utime + usage.ru_stime
    return process.returncode


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _drain(stderr, log_fd: int, tail: bytes) -> bytes:
    """What the shell wrote before exiting; background children may hold the pipe open."""
    os.set_blocking(stderr.fileno(), False)
    try:
        while True:
            chunk = os.read(stderr.fileno(), 65536)
            if not chunk:
                break
            os.write(log_fd, chunk)
            tail = (tail + chunk)[-8192:]
    except BlockingIOError:
        pass
    stderr.close()
    return tail
