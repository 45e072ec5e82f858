"""Rate limits: at most N starts of a group's jobs in any sliding window of W, across every worker and host.

The contract (docs/guide/workflows.md, "Rate limits"):
- a group's rate lives in groups/NAME.json (`{"rate": {"starts": N, "seconds": W, "tokens": F}}`)
  and its N tokens in the folder groups/F (`NAME.rate-<random>`: group names have no '.', so the
  folder never meets a group's slot folder or its files);
- token K is used for the n-th time by creating the name `kK.n` with link(): EEXIST decides
  which worker used it; the file holds the time of that start (`<milliseconds> <worker>`);
- a worker uses token K only when its last start `kK.(n-1)` is at least W old, so two
  starts on one token are W apart and any window of W holds at most N starts.

A start taken for a claim that then did not happen (another worker won the
job) is given back by the name `kK.n.void` beside it: the name `kK.n` stays
as it was (a name once made keeps its bytes), and the token's last real
start is its newest use without such a mark (`kK.(n-1)`, which a use keeps).
When every use left is marked, the newest counts as a start: fewer starts,
never more.

Only link() decides, never rename: on a network file system two clients can both
"win" a rename of one file (docs/guide/several-hosts.md), while link() of one new
name gives EEXIST to all but one. A name once used is never made again: names
are removed only behind a newer use of their token, and a worker whose listing
was so old that it made a removed name again sees the newer one at once and
takes its start back.

Times are each host's wall clock: across hosts the window holds as well as
their clocks agree (NTP keeps them within milliseconds).
"""

from __future__ import annotations

import math
import os
import random
import re
from dataclasses import dataclass

from ..core import fsops
from ..core.units import format_duration, parse_duration

MAX_STARTS = 10000
# A window of a week at most: longer is no rate but a quota, and its tokens would pin files for that long.
MAX_WINDOW = 7 * 86400.0
_RATE = re.compile(r"\s*([0-9]{1,6})\s*/\s*(\S+)\s*")
_TOKEN = re.compile(r"k([0-9]{1,5})\.([0-9]{1,12})")
_VOID = re.compile(r"k([0-9]{1,5})\.([0-9]{1,12})\.void")
VOID = ".void"


@dataclass(frozen=True)
class Rate:
    starts: int
    seconds: float
    tokens: str = ""  # the token folder's name under groups/

    def text(self) -> str:
        return f"{self.starts}/{format_duration(self.seconds)}"

    def as_json(self) -> dict:
        return {"starts": self.starts, "seconds": self.seconds, "tokens": self.tokens}


def parse_rate(text: str) -> Rate | None:
    """`10/1m`, `5/2s`, `100/1h` as a Rate; `0` or `none` for no rate. ValueError with a one-line message."""
    if text.strip().lower() in ("0", "none", "off", ""):
        return None
    match = _RATE.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a rate: use STARTS/WINDOW, e.g. 10/1m or 5/2s")
    starts = int(match.group(1))
    seconds = parse_duration(match.group(2) if match.group(2)[0].isdigit() else "1" + match.group(2))
    if not 1 <= starts <= MAX_STARTS:
        raise ValueError(f"rate {text!r}: starts must be from 1 to {MAX_STARTS}")
    if not 0.001 <= seconds <= MAX_WINDOW:
        raise ValueError(f"rate {text!r}: the window must be from 1ms to {format_duration(MAX_WINDOW)}")
    return Rate(starts, seconds)


def from_json(value: object) -> Rate | None:
    """The rate stored in groups/NAME.json; None when absent or not valid (then the group has no rate)."""
    if not isinstance(value, dict):
        return None
    starts, seconds, tokens = value.get("starts"), value.get("seconds"), value.get("tokens")
    if (not isinstance(starts, int) or isinstance(starts, bool) or not 1 <= starts <= MAX_STARTS
            or not isinstance(seconds, int | float) or isinstance(seconds, bool)
            or not 0.001 <= seconds <= MAX_WINDOW or not isinstance(tokens, str)
            or not re.fullmatch(r"[A-Za-z0-9_-]{1,64}\.rate-[0-9a-f]{8}", tokens)):
        return None
    return Rate(starts, float(seconds), tokens)


def _millis(moment: float) -> int:
    # Truncated as job.iso truncates: a start's token time and its job's `started_at` are one time.
    return math.floor(moment * 1000)


def _parse(name: str) -> tuple[int, int] | None:
    match = _TOKEN.fullmatch(name)
    return (int(match.group(1)), int(match.group(2))) if match else None


def _last_real_starts(names: list[str], starts: int, stamp_of) -> dict[int, tuple[int, int | None]]:
    """Each token's newest use n and the time of its last real start (a use given back is no start)."""
    uses: dict[int, list[int]] = {}
    void: set[tuple[int, int]] = set()
    for name in names:
        parsed = _parse(name)
        if parsed is not None:
            if parsed[0] < starts:
                uses.setdefault(parsed[0], []).append(parsed[1])
            continue
        match = _VOID.fullmatch(name)
        if match:
            void.add((int(match.group(1)), int(match.group(2))))
    found = {}
    for token, numbers in uses.items():
        numbers.sort(reverse=True)
        real = next((number for number in numbers if (token, number) not in void), numbers[0])
        found[token] = (numbers[0], stamp_of(f"k{token}.{real}"))
    return found


def give_back(path: str) -> None:
    """Mark the start `path` (a `kK.n` that take returned) as no start: its claim did not happen."""
    try:
        fsops.close_quietly(os.open(path + VOID, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
                                    | os.O_NOFOLLOW, 0o600))
    except (FileExistsError, FileNotFoundError):
        pass  # marked already (a retried call), or the folder went with a change of rate


def _read_stamp(path: str) -> int | None:
    try:
        fd = fsops.open_nofollow(path)
    except OSError:
        return None
    try:
        text = os.read(fd, 256).decode("ascii", "replace")
    except OSError:
        return None
    finally:
        os.close(fd)
    head = text.split(" ", 1)[0].strip()
    return int(head) if head.isdigit() else None


def make_tokens(groups_dir: str, group: str, rate: Rate, carried: list[int], tmp_dir: str) -> Rate:
    """A new token folder for `rate`; `carried`: start times (ms) of the old folder, newest first.

    The newest old starts are carried over to the new tokens, so a change of
    rate does not open a fresh window: any window holds at most the larger of
    the two rates' starts.
    """
    name = f"{group}.rate-{os.urandom(4).hex()}"
    folder = fsops.make_folder(os.path.join(groups_dir, name))
    for number in range(rate.starts):
        stamp = carried[number] if number < len(carried) else 0
        fsops.publish(tmp_dir, os.path.join(folder, f"k{number}.0"), f"{stamp} -\n".encode(), durable=False)
    return Rate(rate.starts, rate.seconds, name)


def recent_starts(groups_dir: str, rate: Rate) -> list[int]:
    """Each token's last start (ms), newest first (0 for a token never used)."""
    folder = os.path.join(groups_dir, rate.tokens)
    last = _last_real_starts(fsops.listdir_if_there(folder), MAX_STARTS,
                             lambda name: _read_stamp(os.path.join(folder, name)))
    return sorted((stamp or 0 for _, stamp in last.values()), reverse=True)


def remove_tokens(groups_dir: str, name: str) -> None:
    """An old token folder, once its group's file names a new one (or no rate)."""
    folder = os.path.join(groups_dir, name)
    for entry in fsops.listdir_if_there(folder):
        fsops.unlink_if_there(os.path.join(folder, entry))
    try:
        os.rmdir(folder)
    except OSError:
        pass  # a worker with an old view used a token meanwhile: the next change, or doctor, removes it


class Window:
    """One worker's view of a group's tokens: the start time of every token name it has read.

    A token file never changes once made, so each is read once.
    """

    def __init__(self, groups_dir: str, rate: Rate):
        self.rate = rate
        self.folder = os.path.join(groups_dir, rate.tokens)
        self.stamps: dict[str, int] = {}

    def take(self, now: float, worker: str, tmp_dir: str) -> tuple[str | None, float]:
        """Use a token for a start at `now`: (the start's name, now) when one was free, else (None, when
        one frees). `give_back` of that name undoes the start, for a claim that did not happen."""
        now_ms = _millis(now)
        window = _millis(self.rate.seconds)
        names = fsops.listdir_if_there(self.folder)
        self.stamps = {name: stamp for name, stamp in self.stamps.items() if name in names}
        free, frees_at = [], None
        for token, (used, stamp) in _last_real_starts(names, self.rate.starts, self._stamp).items():
            if stamp is None:
                continue  # being made (or made by hand): not a free token
            if stamp + window <= now_ms:
                free.append((token, used))
            else:
                frees_at = stamp + window if frees_at is None else min(frees_at, stamp + window)
        random.shuffle(free)  # workers that list at once try different tokens first
        if free:
            temp = fsops.write_new(tmp_dir, "rate", f"{now_ms} {worker}\n".encode(), durable=False)
            try:
                for token, used in free:
                    if self._use(temp, token, used + 1):
                        return os.path.join(self.folder, f"k{token}.{used + 1}"), now
            finally:
                fsops.unlink_if_there(temp)
        return None, (frees_at / 1000 if frees_at is not None else now + self.rate.seconds)

    def _stamp(self, name: str) -> int | None:
        stamp = self.stamps.get(name)
        if stamp is None:
            stamp = _read_stamp(os.path.join(self.folder, name))
            if stamp is not None:
                self.stamps[name] = stamp
        return stamp

    def _use(self, temp: str, token: int, number: int) -> bool:
        """Make `k<token>.<number>`; True when this worker made it and it is the token's newest use."""
        path = os.path.join(self.folder, f"k{token}.{number}")
        try:
            os.link(temp, path)
        except FileExistsError:
            try:
                if os.lstat(path).st_ino != os.lstat(temp).st_ino:  # not a retried call of ours (NFS)
                    return False
            except FileNotFoundError:
                return False
        except FileNotFoundError:
            return False  # the folder went: the group's rate changed (the next claim reads it again)
        names = fsops.listdir_if_there(self.folder)
        newer = [parsed[1] for parsed in map(_parse, names) if parsed and parsed[0] == token]
        if max(newer, default=number) > number:
            # Made again from a listing older than a later use of this token: not a use.
            fsops.unlink_if_there(path)
            return False
        # The previous use stays (a late lister's link gets EEXIST), and so does the newest use
        # not given back: the token's last real start if this one is given back too.
        present = set(names)
        real = max((used for used in newer if used < number and f"k{token}.{used}{VOID}" not in present),
                   default=-1)
        for used in newer:
            if used < number - 1 and used != real:
                fsops.unlink_if_there(os.path.join(self.folder, f"k{token}.{used}"))
                fsops.unlink_if_there(os.path.join(self.folder, f"k{token}.{used}{VOID}"))
        return True
