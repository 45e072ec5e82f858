"""What changed in a worker's folders, read by the worker's own loop.

On Linux the worker reads inotify itself, through watchdog's inotify
bindings, whenever its loop comes round: no thread wakes up per change.
watchdog's observer (kept for systems without inotify) hands each change
through three threads, and every worker sees every other worker's claims:
busy workers would spend much of their time on each other's changes
(docs/decisions/wake-ups.md).

A change is (kind, folder, name): "created" (the file may still be being
written), "moved" (renamed in: complete), "closed" (written and closed),
"gone" (moved out or deleted), or RESCAN when the kernel dropped changes
and the folders must be listed again.

On a spool other hosts share, inotify never hears of their writes: there
`poll=` swaps inotify for `_PollSource`, which stats each folder every
POLL_INTERVAL and lists it only when it changed, and once more FULL_LISTING
seconds after it last changed, in case a second change fell within the
same tick of the folder's timestamp (docs/guide/several-hosts.md, "Local
or shared mode").
A listing there is a round trip per batch of names and a stat of each
name on the servers, so the worker may say how often each folder is worth
it (`FolderWatch.set_cadence`): a busy worker's queue changes at every
claim, and a listing that soon only tells it what it does not need yet.
"""

from __future__ import annotations

import collections
import ctypes
import errno
import importlib
import logging
import os
import struct
import time
from collections.abc import Callable

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from .core import fsops
from .core.errors import SpoolError

RESCAN = ("rescan", "", "")
# A job that lands through another host is seen within one interval, a
# folder whose timestamp did not move within FULL_LISTING; an idle worker
# pays a few stats per interval.
POLL_INTERVAL = 0.25
FULL_LISTING = 1.0

# watchdog logs this error when its reader thread sees a last event while
# the observer is being stopped; it is harmless at shutdown.
logging.getLogger("watchdog.observers.inotify").addFilter(
    lambda record: "called when the thread is inactive" not in record.getMessage())


class FolderWatch:
    """Changes in a few folders (name -> path), and a wake-up any thread or signal handler can send."""

    def __init__(self, folders: dict[str, str], *, poll: bool = False):
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._source: _InotifySource | _ObserverSource | _PollSource
        if poll:
            self._source = _PollSource(folders)
            return
        try:
            self._source = _InotifySource(folders)
        except OSError as exc:  # inotify is there but refused (its limits): say which
            os.close(self._wake_r)
            os.close(self._wake_w)
            raise SpoolError(f"cannot watch the spool: {exc.strerror}") from None
        except Exception:  # watchdog has no inotify bindings here: its observer instead
            self._source = _ObserverSource(folders, self.wake)

    def wake(self) -> None:
        """End a `wait` now; safe from a signal handler."""
        try:
            os.write(self._wake_w, b"!")
        except BlockingIOError:
            pass  # a wake-up is already pending

    def wait(self, timeout: float, also: tuple[int, ...] = ()) -> None:
        """Sleep until a change, a `wake`, the timeout, or one of the `also` descriptors is readable."""
        readable = [self._wake_r, *also] + ([self._source.fd] if self._source.fd is not None else [])
        timeout = min(timeout, self._source.next_check())
        if self._wake_r in fsops.wait_readable(readable, timeout):
            try:
                while os.read(self._wake_r, 512):
                    pass
            except BlockingIOError:
                pass

    def changes(self) -> list[tuple[str, str, str]]:
        """Every change since the last call, at once; never blocks."""
        return self._source.changes()

    def set_cadence(self, cadence: Callable[[str], float | None]) -> None:
        """When polling: how often each folder is looked at, asked at every tick. POLL_INTERVAL: its
        stat each tick, its listing when the stat moved (the default); more: listed that often,
        and not stat'ed between; None: not looked at until the cadence says otherwise (the
        changes meanwhile are reported by the next listing). inotify sees every change for free
        and ignores it."""
        if isinstance(self._source, _PollSource):
            self._source.cadence = cadence

    def close(self) -> None:
        self._source.close()
        os.close(self._wake_r)
        os.close(self._wake_w)


class _InotifySource:
    def next_check(self) -> float:
        return float("inf")  # its fd wakes `wait`

    def __init__(self, folders: dict[str, str]):
        inotify = importlib.import_module("watchdog.observers.inotify_c")
        flags = inotify.InotifyConstants
        self._gone = flags.IN_MOVED_FROM | flags.IN_DELETE
        self._moved_to, self._closed = flags.IN_MOVED_TO, flags.IN_CLOSE_WRITE
        self._moves, self._is_dir, self._overflow = flags.IN_MOVE, flags.IN_ISDIR, flags.IN_Q_OVERFLOW
        mask = flags.IN_CREATE | flags.IN_MOVE | flags.IN_DELETE | flags.IN_CLOSE_WRITE | flags.IN_ONLYDIR
        self.fd = inotify.inotify_init()
        if self.fd < 0:
            raise _inotify_error("inotify_init", "fs.inotify.max_user_instances")
        os.set_blocking(self.fd, False)
        os.set_inheritable(self.fd, False)
        self._folders: dict[int, str] = {}
        for folder, path in folders.items():
            wd = inotify.inotify_add_watch(self.fd, os.fsencode(path), mask)
            if wd < 0:
                error = _inotify_error(f"watching {path}", "fs.inotify.max_user_watches")
                os.close(self.fd)
                raise error
            self._folders[wd] = folder

    def changes(self) -> list[tuple[str, str, str]]:
        found: list[tuple[str, str, str]] = []
        while True:
            try:
                data = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                return found
            offset = 0
            while offset + 16 <= len(data):
                wd, mask, _cookie, length = struct.unpack_from("iIII", data, offset)
                name = data[offset + 16: offset + 16 + length].rstrip(b"\0")
                offset += 16 + length
                if mask & self._overflow:
                    found.append(RESCAN)
                    continue
                folder = self._folders.get(wd)
                if folder is None or mask & self._is_dir and not mask & self._moves:
                    continue
                kind = ("gone" if mask & self._gone else "moved" if mask & self._moved_to
                        else "closed" if mask & self._closed else "created")
                found.append((kind, folder, os.fsdecode(name)))

    def close(self) -> None:
        os.close(self.fd)


def _inotify_error(action: str, limit: str) -> OSError:
    code = ctypes.get_errno()
    hint = f" (raise the sysctl {limit})" if code in (errno.EMFILE, errno.ENOSPC) else ""
    return OSError(code, f"{action}: {os.strerror(code)}{hint}")


class _ObserverSource(FileSystemEventHandler):
    """watchdog's observer threads, for systems without inotify: its events become changes."""

    fd = None

    def next_check(self) -> float:
        return float("inf")  # its thread wakes `wait`

    def __init__(self, folders: dict[str, str], wake: Callable[[], None]):
        self._folders = {path: folder for folder, path in folders.items()}
        self._wake = wake
        self._queued: collections.deque[tuple[str, str, str]] = collections.deque()
        self._observer = Observer()
        for path in folders.values():
            self._observer.schedule(self, path, recursive=False)
        self._observer.start()

    def on_any_event(self, event: FileSystemEvent) -> None:
        """Runs in watchdog's thread."""
        kind = event.event_type
        if kind not in ("created", "moved", "deleted", "closed") or event.is_directory and kind != "moved":
            return
        if kind == "moved":
            paths = [("gone", event.src_path), ("moved", event.dest_path)]
        else:
            paths = [("gone" if kind == "deleted" else kind, event.src_path)]
        for change, path in paths:
            path = os.fsdecode(path)
            folder = self._folders.get(os.path.dirname(path))
            if folder is not None:
                self._queued.append((change, folder, os.path.basename(path)))
        self._wake()

    def changes(self) -> list[tuple[str, str, str]]:
        found = []
        while self._queued:
            found.append(self._queued.popleft())
        return found

    def close(self) -> None:
        self._observer.stop()
        if self._observer.is_alive():
            self._observer.join(timeout=2)


class _PollSource:
    """Changes found by looking: a folder's stat every POLL_INTERVAL, its listing when the stat moved.

    Names are compared with their inode numbers (from the listing, no stat
    per file), so a file replaced under the same name (a new stop request)
    shows as "gone" then "created". An error (ESTALE after another host
    replaced the folder's entries, EIO) skips the folder until the next
    poll: nothing here ever stops the worker.
    """

    fd = None

    def __init__(self, folders: dict[str, str]):
        self._folders = folders
        self._stamps: dict[str, tuple | None] = dict.fromkeys(folders)
        self._entries = {folder: self._list(path) or {} for folder, path in folders.items()}
        now = time.monotonic()
        self._next = now + POLL_INTERVAL
        # folder -> when to list it once more, its stamp unchanged: a second change within the tick
        # of its timestamp (1 s on some servers) would not move the stamp, and the tick is over then.
        self._confirm_at: dict[str, float] = dict.fromkeys(folders, now + FULL_LISTING)
        self._slow_at: dict[str, float] = {}  # folder -> when a folder on a slower cadence is listed next
        self.cadence: Callable[[str], float | None] = _every_tick

    def next_check(self) -> float:
        return max(0.0, self._next - time.monotonic())

    @staticmethod
    def _list(path: str) -> dict[str, int] | None:
        try:
            with os.scandir(path) as entries:
                return {entry.name: entry.inode() for entry in entries}
        except OSError:
            return None

    def changes(self) -> list[tuple[str, str, str]]:
        now = time.monotonic()
        if now < self._next:
            return []
        self._next = now + POLL_INTERVAL
        found: list[tuple[str, str, str]] = []
        for folder, path in self._folders.items():
            every = self.cadence(folder)
            if every is None:
                continue
            confirming = False
            if every > POLL_INTERVAL:
                if now < self._slow_at.get(folder, 0.0):
                    continue
                self._slow_at[folder] = now + every
                stamp = None  # listed without a stat: back on every tick, the first stat lists it again
            else:
                self._slow_at.pop(folder, None)
                try:
                    info = os.stat(path)
                except OSError:
                    continue
                stamp = (info.st_mtime_ns, info.st_ctime_ns, info.st_size, info.st_nlink)
                if stamp != self._stamps[folder]:
                    self._confirm_at[folder] = now + FULL_LISTING
                elif now >= self._confirm_at.get(folder, float("inf")):
                    confirming = True
                else:
                    continue
            entries = self._list(path)
            if entries is None:
                continue  # a passing error: looked at again at the folder's next look
            self._stamps[folder] = stamp
            if confirming:
                del self._confirm_at[folder]
            before = self._entries[folder]
            for name, inode in entries.items():
                if before.get(name) != inode:
                    if name in before:
                        found.append(("gone", folder, name))
                    found.append(("created", folder, name))
            found.extend(("gone", folder, name) for name in before.keys() - entries.keys())
            self._entries[folder] = entries
        return found

    def close(self) -> None:
        pass


def _every_tick(folder: str) -> float:
    return POLL_INTERVAL
