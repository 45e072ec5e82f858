"""How one run of a job ended, as the runner reports it and settle records it.

Its own module so that the transitions (core/lifecycle.py) and the event
log can name an outcome without loading the runner (subprocess): recovery
records one for a run whose worker died.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, field


@dataclass
class Outcome:
    exit_code: int | None = None
    signal: int | None = None
    error: str | None = None
    timed_out: bool = False
    # "stop" or "cancel": the worker ended the run on request; "lost": the job
    # was recovered by another host while this worker's lease had lapsed.
    interrupted: str | None = None
    started: float = 0.0
    finished: float = 0.0
    stderr_tail: list[str] = field(default_factory=list)
    # CPU seconds the shell and the processes it waited for used: measured for a run with a CPU limit only.
    cpu: float | None = None

    @property
    def succeeded(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and self.interrupted is None

    def describe(self, timeout: float | None) -> str | None:
        """The `last_error` sentence for a run, None when it succeeded."""
        if self.succeeded:
            return None
        if self.interrupted == "cancel":
            return "cancelled while running"
        if self.interrupted == "stop":
            return "stopped by worker shutdown; retried later"
        if self.interrupted == "lost":
            return "abandoned: recovered by another host while this worker's lease had lapsed"
        if self.timed_out:
            return f"timed out after {timeout:g}s"
        if self.error:
            return self.error
        if self.signal is not None:
            try:
                name = signal.Signals(self.signal).name
            except ValueError:
                name = str(self.signal)
            return f"killed by signal {name}"
        if self.exit_code == 127:
            return "exit code 127 (command not found)"
        return f"exit code {self.exit_code}"
