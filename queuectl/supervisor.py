"""`worker start --count N`: N worker processes in the foreground.

With one worker the process is the worker. With more, this process forks
N children, each in its own process group so that a Ctrl-C reaches them
once, through here: the supervisor forwards the stop signals to every
child (SIGTERM, SIGINT and SIGHUP as SIGTERM: the first finishes running
jobs, the second stops them; SIGQUIT as SIGQUIT: stop them now), restarts
a child that crashed, and exits 0 when all children exited cleanly.

Children never outlive the supervisor, however it dies (SIGKILL
included): before forking it opens a pipe and keeps the only write end;
each child closes its inherited copy at once and watches the read end,
which reads as end-of-file once the supervisor is gone, and then stops as
for SIGTERM. A supervisor that died before a child closed its copy is
seen just the same. Rejected: prctl(PR_SET_PDEATHSIG), which is Linux
only, fires on the exit of the forking thread rather than the process,
and needs a getppid() check for a supervisor that died before it was set.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from .core import fstype
from .core.errors import QueueError
from .core.events import EventLog
from .core.registry import MAX_WORKERS
from .core.spool import Spool
from .stopping import STOP_SIGNALS, stop_signals
from .worker import Worker

RESTART_DELAY = 1.0


def run_workers(spool: Spool, *, count: int, burst: bool, until_empty: bool = False,
                log: EventLog | None = None, then_exit: bool = False) -> int:
    """Run `count` workers until stopped (or, with `burst`/`until_empty`, until done); `log` None is silent.

    `then_exit`: the caller exits once this returns (`worker start`), so the
    stop signals are left blocked: one that arrives while the process exits
    is dropped instead of ending a clean exit with -15 or a KeyboardInterrupt.
    """
    if not 1 <= count <= MAX_WORKERS:
        raise QueueError(f"a supervisor runs 1 to {MAX_WORKERS} workers, not {count}")
    if then_exit:
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)  # the workers' handlers unblock them inside
    def announce() -> None:
        if log is not None:
            # local (flock, inotify) or shared (leases, polling): docs/guide/several-hosts.md, "Local or shared mode"
            log.banner(spool.root, mode=fstype.mode(spool), workers=count, pid=os.getpid())
    if count == 1:  # the banner once the worker is up: a spool it cannot use gets only the error
        return Worker(spool, burst=burst, until_empty=until_empty, log=log, announce=announce).run()
    announce()
    return Supervisor(spool, count, burst, until_empty, log).run()


class Supervisor:
    def __init__(self, spool: Spool, count: int, burst: bool, until_empty: bool = False,
                 log: EventLog | None = None):
        self.spool = spool
        self.count = count
        self.burst = burst or until_empty
        self.until_empty = until_empty
        self.log = log
        self.notices = log or EventLog()  # a crashed worker is reported even when the rest is silent
        self.children: set[int] = set()
        self.signals = 0
        self.lifeline: tuple[int, int] | None = None  # (read end, write end) of the children's pipe

    def run(self) -> int:
        self.lifeline = os.pipe2(os.O_CLOEXEC)
        try:
            with stop_signals(self._forward):
                return self._supervise()
        finally:
            for fd in self.lifeline:
                os.close(fd)
            self.lifeline = None

    def _supervise(self) -> int:
        for _ in range(self.count):
            self._spawn()
        failures = 0
        while self.children:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            except InterruptedError:
                continue
            if pid not in self.children:
                continue
            self.children.discard(pid)
            code = os.waitstatus_to_exitcode(status)
            if code == 0:
                continue
            restarting = not (self.signals or self.burst)
            self.notices.worker_exited(pid, code, restarting=restarting)
            if not restarting:
                failures += 1
                continue
            time.sleep(RESTART_DELAY)
            if not self.signals:
                self._spawn()
        return 1 if failures else 0

    def _spawn(self) -> None:
        # Blocked across the fork: a stop signal then never runs this process's
        # handler in the child, nor kills a child that has no handler yet; the
        # worker unblocks them once its own handler is in place (stop_signals).
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        if self.signals:  # asked to stop before this fork: no new worker (checked while blocked: no race)
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            return
        try:
            pid = os.fork()
        except BaseException:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            raise
        if pid != 0:
            self.children.add(pid)  # before a blocked signal is let in: it is forwarded to this child too
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            return
        code = 1
        try:
            assert self.lifeline is not None  # run() opens it before the first fork
            read_end, write_end = self.lifeline
            os.close(write_end)  # now only the supervisor holds it
            os.setpgid(0, 0)
            for signum in STOP_SIGNALS:  # the supervisor's handler is not the child's
                signal.signal(signum, signal.SIG_DFL)
            code = Worker(self.spool, burst=self.burst, until_empty=self.until_empty, log=self.log,
                          supervisor_fd=read_end).run()
        except BaseException as exc:  # a child must never return into the parent's code
            self.notices.error(f"worker failed: {exc}")
        finally:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except (OSError, ValueError):
                    pass
            os._exit(code)

    def _forward(self, signum, frame) -> None:
        self.signals += 1
        forwarded = signal.SIGQUIT if signum == signal.SIGQUIT else signal.SIGTERM
        if self.log is not None:
            self.log.stopping(f"supervisor {os.getpid()}", f"{signal.Signals(signum).name}: "
                              f"sending {forwarded.name} to {len(self.children)} workers")
        for pid in list(self.children):
            try:
                os.kill(pid, forwarded)
            except ProcessLookupError:
                pass
