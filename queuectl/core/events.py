"""What a worker tells its operator: one line per event on stderr.

Promises: `worker start` prints a banner (spool, mode, workers, pid), one
line when a job starts and one when it ends (time, worker, id, attempt,
outcome, exit code or signal, duration), and why a worker stops. Text
lines are for people; with `--log-format json` each line is one JSON
object (a log shipper parses it without patterns). Each line is one
`write` (so lines of workers sharing a terminal or a pipe never
interleave), costs a few microseconds, and never stops a worker: a closed
terminal (EIO after a hang-up) or a reader that went away (EPIPE) only
loses the line. `quiet` keeps only what needs an operator's attention (a
worker that died and is restarted).
"""

from __future__ import annotations

import json
import os
import signal
import time

from .job import iso
from .outcome import Outcome

FORMATS = ("text", "json")


class EventLog:
    """Writes events to a file descriptor (stderr by default) in one of FORMATS."""

    def __init__(self, log_format: str = "text", *, quiet: bool = False, fd: int = 2):
        if log_format not in FORMATS:
            raise ValueError(f"log format must be one of {', '.join(FORMATS)}")
        self.json = log_format == "json"
        self.quiet = quiet
        self.fd = fd

    def banner(self, spool_root: str, *, mode: str, workers: int, pid: int) -> None:
        if self.quiet:
            return
        if self.json:
            self._emit({"event": "start", "spool": spool_root, "mode": mode, "workers": workers, "pid": pid})
        else:
            plural = "s" if workers != 1 else ""
            self._line(f"queuectl worker start: spool {spool_root}, mode {mode}, {workers} worker{plural}, "
                       f"pid {pid}")

    def job_started(self, worker: str, job: dict) -> None:
        if self.quiet:
            return
        if self.json:
            self._emit({"event": "job_start", "worker": worker, "job": job["id"], "attempt": job["attempts"]})
        else:
            self._line(f"{worker} job {job['id']} attempt {job['attempts']}: started")

    def job_ended(self, worker: str, job: dict, attempt: int, outcome: Outcome, state: str) -> None:
        if self.quiet:
            return
        duration = round(outcome.finished - outcome.started, 3)
        if self.json:
            self._emit({"event": "job_end", "worker": worker, "job": job["id"], "attempt": attempt,
                        "state": state, "exit_code": outcome.exit_code, "signal": _signal_name(outcome.signal),
                        "error": job.get("last_error"), "duration": duration})
            return
        how = _how(outcome, job.get("last_error"))
        self._line(f"{worker} job {job['id']} attempt {attempt}: {state} ({how}) in {duration:.3f}s")

    def stopping(self, worker: str, reason: str) -> None:
        if self.quiet:
            return
        if self.json:
            self._emit({"event": "stopping", "worker": worker, "reason": reason})
        else:
            self._line(f"{worker} stopping: {reason}")

    def worker_exited(self, pid: int, code: int, *, restarting: bool) -> None:
        """A supervisor's child ended with a non-zero code; printed even when quiet."""
        if self.json:
            self._emit({"event": "worker_exit", "pid": pid, "exit_code": code, "restarting": restarting})
        else:
            self._write(f"queuectl: worker {pid} exited with {code}" + ("; restarting it" if restarting else ""))

    def error(self, text: str) -> None:
        """Printed even when quiet."""
        if self.json:
            self._emit({"event": "error", "error": text})
        else:
            self._write(f"queuectl: {text}")

    def _emit(self, fields: dict) -> None:
        self._write(json.dumps({"time": iso(time.time()), **fields}, ensure_ascii=False))

    def _line(self, text: str) -> None:
        self._write(f"{iso(time.time())} {text}")

    def _write(self, text: str) -> None:
        try:
            os.write(self.fd, (text + "\n").encode("utf-8", "backslashreplace"))
        except OSError:
            pass  # a hung-up terminal or a closed pipe: the line is lost, the worker goes on


def _signal_name(number: int | None) -> str | None:
    if number is None:
        return None
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def _how(outcome: Outcome, error: str | None) -> str:
    """The short reason in a text line: the exit code when there is one, else what the job's history says."""
    if outcome.interrupted or outcome.timed_out or outcome.exit_code is None:
        return error or "no exit code"
    return f"exit {outcome.exit_code}"
