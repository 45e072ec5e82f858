"""A running job's progress: what it reports, and the time left it suggests (docs/guide/limits.md, "Progress").

A job reports progress in either of two ways:

- it writes a number from 0 to 100 (`42`, `42.5`, `42%`) to the file named
  by $QUEUECTL_PROGRESS, `<spool>/progress/<id>`: a folder of its own, so the
  name never meets an id-named file (docs/spool-format.md);
- it prints a line that starts with such a number and a `%` (`42%`,
  `42.5% copying`), on stdout or stderr: both go to its log. A carriage
  return ends a line too, as progress bars redraw with one.

The last report wins; the file wins over the log when both hold one. The
log is not scanned as the job writes it: output goes from the job straight
to the log file, and whoever shows the progress reads the log's tail
(`read`), so a job that reports nothing costs nothing.

The runner sets $QUEUECTL_PROGRESS, makes the folder, and removes the file
when the run ends; a file older than the run's start (left by a run whose
worker died) is not read as the current run's.
"""

from __future__ import annotations

import os
import re
import stat

FOLDER = "progress"
ENV = "QUEUECTL_PROGRESS"
TAIL_BYTES = 65536  # of the log, read for its last progress line
_FILE_BYTES = 64
# A file's time stamp comes from the kernel's coarse clock, up to a clock tick behind time.time():
# a report written just after a run started may carry a time a few milliseconds before its start.
CLOCK_SLACK = 0.02
# A whole line (or the text before the first space after it) that is a percentage.
_LINE = re.compile(rb"[ \t]*(\d{1,3}(?:\.\d+)?)[ \t]*%(?:[ \t].*)?")
_FILE = re.compile(r"\s*(\d{1,3}(?:\.\d+)?)\s*%?\s*")
_ATTEMPT_HEADER = b"=== attempt "
_made: set[str] = set()


def path(spool_root: str, job_id: str) -> str:
    """The file a job writes its progress to (its $QUEUECTL_PROGRESS)."""
    return f"{spool_root}/{FOLDER}/{job_id}"


def prepare(spool_root: str) -> None:
    """Make the progress folder once per process and spool, before the first job that may write there."""
    if spool_root not in _made:
        try:
            os.makedirs(os.path.join(spool_root, FOLDER), mode=0o700, exist_ok=True)
        except OSError:
            return  # a job's write then fails on its own; the run does not
        _made.add(spool_root)


def remove(spool_root: str, job_id: str) -> None:
    """Forget a job's reported progress: at the end of each run (runner) and when a job is purged."""
    try:
        os.unlink(path(spool_root, job_id))
    except OSError:
        pass


def read(spool_root: str, job_id: str, *, since: float | None = None) -> tuple[float, float] | None:
    """The job's latest report as (percent, when), or None: from its progress file, else its log.

    `since`: the run's start (the job's `started_at`); a report older than
    it belongs to an earlier run and is not returned. `when` is the file's
    modification time; for a line in the log, the log's, which is when the
    job last wrote anything.
    """
    found = _from_file(path(spool_root, job_id))
    if found is None:
        found = _from_log(os.path.join(spool_root, "logs", f"{job_id}.log"))
    if found is None or (since is not None and found[1] < since - CLOCK_SLACK):
        return None
    return found


def parse_file(text: str) -> float | None:
    """The percentage a progress file's text holds, or None."""
    match = _FILE.fullmatch(text)
    return _percent(match.group(1)) if match else None


def parse_output(data: bytes) -> float | None:
    """The percentage of the last progress line in a run's output, or None (rules: the module's text)."""
    for line in reversed(re.split(rb"[\r\n]", data)):
        match = _LINE.fullmatch(line)
        if match:
            found = _percent(match.group(1).decode())
            if found is not None:
                return found
    return None


def remaining(percent: float, updated: float, first: tuple[float, float]) -> float | None:
    """Seconds left at the rate seen from the `first` sample (percent, time) to the latest one.

    A linear estimate: (100 - percent) / rate, with rate = (percent -
    first percent) / (updated - first time). The caller's first sample is
    the first report it saw, or (0, the run's start) when it saw none
    before. None when no rate can be told (no progress since the first
    sample, or no time).
    """
    gained, elapsed = percent - first[0], updated - first[1]
    if gained <= 0 or elapsed <= 0:
        return None
    return max(0.0, (100.0 - percent) * elapsed / gained)


def _percent(text: str) -> float | None:
    value = float(text)
    return value if 0.0 <= value <= 100.0 else None


def _from_file(name: str) -> tuple[float, float] | None:
    data, mtime = _read_regular(name, _FILE_BYTES, tail=False)
    if not data:
        return None
    percent = parse_file(data.decode("utf-8", "replace"))
    return None if percent is None else (percent, mtime)


def _from_log(name: str) -> tuple[float, float] | None:
    data, mtime = _read_regular(name, TAIL_BYTES, tail=True)
    if not data:
        return None
    if len(data) == TAIL_BYTES:
        data = data.partition(b"\n")[2]  # the first line is cut: its end alone may look like a report
    header = data.rfind(_ATTEMPT_HEADER)
    if header >= 0:
        data = data[header:].partition(b"\n")[2]  # the latest attempt's output only
    percent = parse_output(data)
    return None if percent is None else (percent, mtime)


def _read_regular(name: str, size: int, *, tail: bool) -> tuple[bytes, float]:
    """Up to `size` bytes of a regular file (its end with `tail`) and its mtime; (b"", 0) for anything else.

    O_NONBLOCK and O_NOFOLLOW: a FIFO or a symlink planted in its place is
    not waited on or followed (docs/spool-format.md, odd entries).
    """
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return b"", 0.0
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return b"", 0.0
        offset = max(0, info.st_size - size) if tail else 0
        return os.pread(fd, size, offset), info.st_mtime
    except OSError:
        return b"", 0.0
    finally:
        os.close(fd)
