"""Workers and the supervisor take SIGTERM/SIGINT only while they run.

`queuectl demo` runs workers several times in one process: a handler left
behind by a finished worker wrote to its closed wake-up pipe on the next
Ctrl-C (or, with a supervisor, swallowed it).
"""

from __future__ import annotations

import os
import signal

from queuectl import Spool
from queuectl.supervisor import Supervisor
from queuectl.worker import Worker, stop_signals


def marker(signum, frame):
    raise AssertionError("only installed to be given back")


def test_a_worker_gives_the_signals_back(spool_path):
    before = {signum: signal.signal(signum, marker) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        assert Worker(Spool(spool_path), burst=True).run() == 0
        assert signal.getsignal(signal.SIGTERM) is marker and signal.getsignal(signal.SIGINT) is marker
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)


def test_a_supervisor_gives_the_signals_back(spool_path):
    before = {signum: signal.signal(signum, marker) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        assert Supervisor(Spool(spool_path), 2, burst=True).run() == 0
        assert signal.getsignal(signal.SIGTERM) is marker and signal.getsignal(signal.SIGINT) is marker
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)


def test_a_supervisor_asked_to_stop_forks_no_new_worker(spool_path):
    """A stop that arrives between two forks was forwarded to the children forked so far: a later fork
    would start a worker nobody asked to stop (it kept `systemctl stop` waiting)."""
    supervisor = Supervisor(Spool(spool_path), 2, burst=False)
    supervisor.lifeline = os.pipe2(os.O_CLOEXEC)
    try:
        supervisor.signals = 1
        supervisor._spawn()
        assert supervisor.children == set()
    finally:
        for fd in supervisor.lifeline:
            os.close(fd)  # a worker forked by mistake sees its supervisor gone and exits
        for pid in supervisor.children:
            os.waitpid(pid, 0)


def test_a_stop_signal_that_arrives_while_a_worker_leaves_is_not_passed_on():
    """One more SIGTERM while a worker cleans up asked it to stop, which it is doing: it must not reach
    the handler put back after it (SIG_DFL in the CLI, which would end a clean exit with -15)."""
    received = []
    before = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    try:
        with stop_signals(lambda signum, frame: None):
            # Stands for a signal that lands while the block is being left (it is blocked then).
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
            os.kill(os.getpid(), signal.SIGTERM)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        assert received == []
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        signal.signal(signal.SIGTERM, before)


def test_worker_start_in_process_leaves_the_signals_as_it_found_them(spool_path):
    """Only the program itself keeps the stop signals blocked on its way out; an in-process caller (here
    click's CliRunner) would otherwise start every later command with SIGTERM blocked."""
    from click.testing import CliRunner

    from queuectl.cli import main
    from queuectl.worker import STOP_SIGNALS

    result = CliRunner().invoke(main, ["--spool", spool_path, "worker", "start", "--burst", "--quiet"])
    assert result.exit_code == 0, result.output
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) & set(STOP_SIGNALS) == set()
