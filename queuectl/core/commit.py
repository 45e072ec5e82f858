"""The group commit: a worker's settles made durable in groups, and when to use it.

Above lifecycle (it moves jobs with lifecycle.move_on) and below the
worker, which starts a GroupCommit at its first slow settle and asks
FlushPace, settle by settle, whether to settle at once instead.
"""

from __future__ import annotations

import collections
import os
import threading

from . import fsops, lifecycle
from .spool import LockedJob, Spool

Item = tuple[LockedJob, str]  # a staged settle and the state it moves to


class GroupCommit:
    """A worker's settles, made durable in groups: the flushes by a thread, the renames by the worker.

    With `durable`, a settle alone costs three flushes to disk: the new
    bytes, the destination folder and processing/. Here the worker stages
    the outcome (a new file in tmp/, locked) and goes on with its next job.
    A group then takes three steps, each for every settle staged meanwhile:
    the thread fsyncs the new files; the worker, at its next `advance`,
    renames each over its job's name and into its destination folder; the
    thread fsyncs the destination folders and then processing/ (a power cut
    between them leaves a job under both names, never under none), and only
    then releases the jobs' locks. A job is locked until its outcome is on
    disk, so no other worker recovers it meanwhile. The thread only waits
    on the disk: the Python work stays on the worker's own thread, because
    two busy threads of one process hand the interpreter's lock back and
    forth at every system call.

    The worker calls `advance` between jobs, while a job runs (with its
    other periodic duties) and whenever `wake_fd` turns readable. What this
    changes: an outcome reaches the disk one short group commit after the
    run ended, not before settle returns; a crash or power cut inside that
    window runs the job again (docs/decisions/delivery.md). An error (a
    full disk) stops the commit; the worker sees it at its next `submit`,
    `advance` or `close`, and the jobs not yet settled stay in processing/
    unlocked, for recovery.
    """

    def __init__(self, spool: Spool):
        self.spool = spool
        self._changed = threading.Condition()
        self._staged: list[Item] = []                # submitted: their new bytes are not flushed yet
        self._flushing: list[Item] = []              # the thread flushes their new bytes now
        self._flushed: list[list[Item]] = []         # new bytes on disk: the worker renames them (advance)
        self._renamed: list[tuple[list[Item], set[str]]] = []  # the thread flushes their folders
        self._closing = False
        self._done = False
        self.error: BaseException | None = None
        self.wake_fd, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)  # readable: renames to make
        self._thread = threading.Thread(target=self._run, name="queuectl-commit", daemon=True)
        self._thread.start()

    def submit(self, held: LockedJob, state: str) -> None:
        """Take over `held` (staged, locked) and move it to `state` in the next group."""
        with self._changed:
            if self.error is not None:
                raise self.error
            self._staged.append((held, state))
            self._changed.notify_all()

    def owns(self, held: LockedJob) -> bool:
        with self._changed:
            return any(item[0] is held for item in self._items())

    def _items(self) -> list[Item]:
        return (self._staged + self._flushing + [item for group in self._flushed for item in group]
                + [item for group, _ in self._renamed for item in group])

    def advance(self) -> None:
        """Rename what the thread has flushed; quick when there is nothing to do. Raises the commit's error."""
        try:
            # Emptied before the groups are taken: a group flushed after this read leaves
            # the pipe readable, so a worker that sleeps on it now wakes for that group.
            os.read(self.wake_fd, 4096)
        except BlockingIOError:
            pass
        with self._changed:
            if self.error is not None:
                raise self.error
            groups, self._flushed = self._flushed, []
        for position, group in enumerate(groups):
            touched: set[str] = set()
            try:
                for held, state in group:
                    touched.add(held.state)
                    held.publish_staged(durable=False)
                    final = lifecycle.move_on(self.spool, held, state, sync=False)
                    if final != "lost":  # moved by another host: no folder of ours to flush
                        touched.add(final)
            except BaseException as exc:
                with self._changed:
                    self.error = exc
                    self._flushed[:0] = groups[position:]  # released by close(), with the rest
                    self._changed.notify_all()
                raise
            with self._changed:
                self._renamed.append((group, touched))
                self._changed.notify_all()

    def close(self) -> None:
        """Settle everything submitted, then stop the thread; raises the commit's error, if any."""
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        try:
            while True:
                with self._changed:
                    while not (self._flushed or self._done or self.error is not None):
                        self._changed.wait()
                    if self._done or self.error is not None:
                        break
                self.advance()
        except BaseException:
            pass  # kept in self.error, raised below once everything is let go
        finally:
            with self._changed:
                self._closing = True
                self._changed.notify_all()
            self._thread.join()
            for held, _ in self._items():  # settles cut short by an error: recovery's now
                held.unlock()
            self._staged, self._flushing, self._flushed, self._renamed = [], [], [], []
            os.close(self.wake_fd)
            os.close(self._wake_w)
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        while True:
            with self._changed:
                while not (self._staged or self._renamed or self.error is not None
                           or (self._closing and not self._flushed)):
                    self._changed.wait()
                if self.error is not None or not (self._staged or self._renamed):
                    self._done = True  # closing, and nothing is left to flush
                    self._changed.notify_all()
                    return
                renamed, self._renamed = self._renamed, []
                self._flushing, self._staged = self._staged, []
            try:
                self._flush_folders(renamed)
                self._flush_bytes(self._flushing)
            except BaseException as exc:  # noqa: BLE001 - handed to the worker's thread
                with self._changed:
                    self.error = exc
                    self._renamed[:0] = renamed  # released by close(), with the rest
                    self._changed.notify_all()
                return
            with self._changed:
                if self._flushing:
                    self._flushed.append(self._flushing)
                    self._flushing = []
                    try:
                        os.write(self._wake_w, b"!")
                    except BlockingIOError:
                        pass  # the worker has a wake-up waiting already
                self._changed.notify_all()

    def _flush_bytes(self, group: list[Item]) -> None:
        if self.spool.durable:
            for held, _ in group:
                assert held.staged is not None  # settle staged it before submitting
                fsops.fsync(held.staged[1])

    def _flush_folders(self, renamed: list[tuple[list[Item], set[str]]]) -> None:
        if not renamed:
            return
        if self.spool.durable:
            touched = set().union(*(folders for _, folders in renamed))
            for folder in sorted(touched, key=lambda name: name == "processing"):  # processing/ last
                fsops.fsync_dir(self.spool.dir(folder))
        for group, _ in renamed:
            for held, _ in group:
                held.unlock()


class FlushPace:
    """Whether the next settle's flushes are quick enough to make on the worker's own path.

    The group commit hides slow flushes (a journaled disk: each waits for a
    journal commit) behind the worker's next job, but every settle it takes
    costs a hand-off between two threads, and on a disk whose flushes cost
    next to nothing (tmpfs) that hand-off is the dearer part. So a worker
    settles at once while its recent settles made at once spent less than
    QUICK_FLUSH in fsync (their median), and through its GroupCommit
    otherwise. Only settles made at once are measured, because only they
    answer the question (a group's flushes are shared and batched); in
    group mode every PROBE-th settle is made at once to measure the disk
    again, so a worker whose disk became quick switches back. Either way
    the outcome is on disk before the job's lock is given up: the choice
    changes only the speed, never what `durable` promises (docs/decisions/durable.md).
    """

    QUICK_FLUSH = 100e-6  # seconds: about what handing a settle to another thread costs
    RECENT = 9            # settles the choice looks at: their median, so one preempted flush does not flip it
    PROBE = 256           # in group mode, one settle in this many is made at once, and measured (a cost there)

    def __init__(self) -> None:
        self.recent: collections.deque[float] = collections.deque(maxlen=self.RECENT)
        self.grouped = 0  # settles sent to the group commit since the last one made at once

    def observe(self, seconds: float) -> None:
        """The fsync time of a settle made at once."""
        self.recent.append(seconds)

    def inline(self) -> bool:
        """Whether to make the next settle at once (and measure it); True before anything is measured."""
        recent = sorted(self.recent)
        if not recent or recent[len(recent) // 2] < self.QUICK_FLUSH or self.grouped >= self.PROBE - 1:
            self.grouped = 0
            return True
        self.grouped += 1
        return False
