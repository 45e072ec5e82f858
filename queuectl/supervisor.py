"""`worker start --count N`: N worker processes in the foreground.

With one worker the process is the worker. With more, this process forks
N children, each in its own process group so that a Ctrl-C reaches them
once, through here: the supervisor forwards SIGTERM/SIGINT to every child
(the first signal finishes running jobs, the second stops them), restarts
a child that crashed, and exits 0 when all children exited cleanly.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from .spool import Spool
from .worker import Worker, stop_signals

RESTART_DELAY = 1.0


def run_workers(spool: Spool, *, count: int, burst: bool, until_empty: bool = False) -> int:
    if count == 1:
        return _run_child(spool, burst, until_empty)
    return Supervisor(spool, count, burst, until_empty).run()


def _run_child(spool: Spool, burst: bool, until_empty: bool = False) -> int:
    return Worker(spool, burst=burst, until_empty=until_empty).run()


class Supervisor:
    def __init__(self, spool: Spool, count: int, burst: bool, until_empty: bool = False):
        self.spool = spool
        self.count = count
        self.burst = burst or until_empty
        self.until_empty = until_empty
        self.children: set[int] = set()
        self.signals = 0

    def run(self) -> int:
        with stop_signals(self._forward):
            return self._supervise()

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
            if self.signals or self.burst:
                failures += 1
                continue
            print(f"queuectl: worker {pid} exited with {code}; restarting it", file=sys.stderr)
            time.sleep(RESTART_DELAY)
            if not self.signals:
                self._spawn()
        return 1 if failures else 0

    def _spawn(self) -> None:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.setpgid(0, 0)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                code = _run_child(self.spool, self.burst, self.until_empty)
            except BaseException as exc:  # a child must never return into the parent's code
                print(f"queuectl: worker failed: {exc}", file=sys.stderr)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        self.children.add(pid)

    def _forward(self, signum, frame) -> None:
        self.signals += 1
        for pid in list(self.children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
