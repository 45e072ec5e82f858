"""How a worker is asked to stop: signals, its supervisor's end, `worker stop`.

The first SIGTERM, SIGINT or SIGHUP finishes the running job and exits 0; a
second one, SIGQUIT, or `worker stop --now` stops the job too, which goes
back to pending/ without using a retry. A worker forked by a supervisor
also stops as for SIGTERM when the supervisor is gone, however it died: it
watches the read end of a pipe whose write end only the supervisor holds
(supervisor.py).
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator
from typing import Any

from .core import fsops, registry
from .core.events import EventLog
from .core.spool import Spool

# What a terminal or an init system sends to end a process: a graceful stop
# (finish the running job), except SIGQUIT (Ctrl-\\), which stops it now.
GRACEFUL_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
STOP_SIGNALS = (*GRACEFUL_SIGNALS, signal.SIGQUIT)


@contextlib.contextmanager
def stop_signals(handler: Callable[[int, Any], None]) -> Iterator[None]:
    """STOP_SIGNALS go to `handler` inside the block, and to whatever took them before after it:
    `queuectl demo` runs workers several times in one process.

    They are unblocked inside: a supervisor forks its children with them
    blocked, so one sent while a child starts waits for its handler instead
    of killing it. On the way out they are blocked, one that arrived
    meanwhile is dropped (it asked the block's owner to stop, which it is
    doing), the handlers are put back, then the mask is restored (a child
    exits with them blocked).
    """
    previous = {signum: signal.signal(signum, handler) for signum in STOP_SIGNALS}
    mask = signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        while signal.sigtimedwait(STOP_SIGNALS, 0) is not None:
            pass
        for signum, handler_before in previous.items():
            signal.signal(signum, handler_before)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


@contextlib.contextmanager
def signals_blocked() -> Iterator[None]:
    """For starting a thread: it begins with the stop signals blocked and keeps them so, so they
    reach the worker's own thread, which runs the handler and wakes its select."""
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


class StopFlags:
    """Whether the worker should stop (`stopping`), and stop its running job too (`now`)."""

    def __init__(self, spool: Spool, name: str, log: EventLog | None, supervisor_fd: int | None, started: float,
                 wake: Callable[[], None]):
        self.spool = spool
        self.name = name
        self.log = log
        self.supervisor_fd = supervisor_fd
        self.started = started
        self.wake = wake  # wakes the worker's sleep
        self.stopping = False
        self.now = False

    def on_signal(self, signum: int, frame: Any) -> None:
        now = self.stopping or signum == signal.SIGQUIT
        if self.log is not None and not self.now:
            what = "stopping the running job" if now else "finishing the running job"
            self.log.stopping(self.name, f"{signal.Signals(signum).name}: {what}, then exiting")
        self.now = self.now or now
        self.stopping = True
        self.wake()

    def supervisor_gone(self) -> bool:
        """Whether the supervisor's pipe reads as end-of-file (only ever True once)."""
        return self.supervisor_fd is not None and bool(fsops.wait_readable((self.supervisor_fd,), 0))

    def leave_with_supervisor(self) -> None:
        """Stop as for SIGTERM once the supervisor is gone."""
        self.supervisor_fd = None  # noticed once; the worker is on its way out
        self.stopping = True
        if self.log is not None:
            self.log.stopping(self.name, "the supervisor is gone: finishing the running job, then exiting")

    def check_request(self) -> None:
        """Obey `worker stop` requests made after this worker started."""
        request = registry.stop_request(self.spool)
        if request and request.get("requested_at", 0) >= self.started:
            self.stopping = True
            self.now = self.now or bool(request.get("now"))
