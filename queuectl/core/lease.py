"""Who is alive, across hosts: leases, and the one judge of a worker's death.

Promises:
- `Liveness.worker_alive` is the only place that decides whether a worker
  lives. A worker lock seen held proves life from anywhere. On the
  worker's own host (its record names this host) a free lock proves death
  at once, as on one machine. For a worker of another host, whose flocks
  may not reach here, its lease decides.
- A lease (`Lease`, workers/<name>.lease) holds a random nonce and a
  counter that a thread of the worker bumps every lease_timeout/6 seconds,
  in place, for the worker's whole life, also while a job runs.
- A long-lived judge (a worker) declares another host's worker dead only
  after it has read the SAME lease bytes for lease_timeout seconds of its
  OWN monotonic clock. No two clocks are ever compared, so clock skew
  between hosts cannot make a live worker look dead; a judge that was
  paused itself sees the counter moved on when it resumes.
- A one-shot judge (`status`, `doctor`) cannot watch for lease_timeout: it
  compares the lease's mtime with a probe file it stamps in tmp/, both set
  by the file system's own clock (Postfix's trick), and only reports.
- A file in processing/ whose owner is unknown (a claim or settle cut
  between its rename and its rewrite) is, on a shared spool, recovered only
  after the judge saw it unchanged for lease_timeout.
- `Lease.lapsed` tells the worker itself that another host may have judged
  it dead (it went half a lease_timeout without a beat: paused, or cut
  off), so it checks that its job is still its own before settling.

Fails: a lease that cannot be written is retried at the next beat; a worker
that cannot beat for lease_timeout is judged dead by the other hosts and
its job is run again (at-least-once). docs/decisions/leases.md.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from typing import Any

from . import fstype
from .fsops import publish
from .workerfiles import LEASE_SUFFIX as SUFFIX
from .workerfiles import holds_lock, lease_path, read_record

__all__ = ["SUFFIX", "Lease", "Liveness", "lease_path", "this_host"]
BEATS_PER_TIMEOUT = 6
# A worker whose last beat is older than this share of lease_timeout may
# have been judged dead: far below 1, so drift between two monotonic clocks
# and the time a beat takes to be seen cannot hide a real expiry.
LAPSE_SHARE = 0.5


def this_host() -> str:
    return os.uname().nodename


class Lease:
    """The owner's side: workers/<name>.lease, beaten by a thread until `stop`."""

    def __init__(self, spool, name: str, timeout: float):
        self.spool = spool
        self.name = name
        self.timeout = float(timeout)
        self.path = lease_path(spool, name)
        self.nonce = secrets.token_hex(8)
        self.count = 0
        self.last_beat = float("-inf")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _data(self) -> bytes:
        # Fixed width: an in-place rewrite never changes the size, and a torn
        # read only shows different bytes, which judges take for "alive".
        return f"{self.nonce} {self.count:020d}\n".encode()

    def start(self) -> None:
        started = time.monotonic()
        publish(self.spool.dir("tmp"), self.path, self._data(), durable=False, replace=True)
        self.last_beat = started
        self._thread = threading.Thread(target=self._run, name=f"lease-{self.name}", daemon=True)
        self._thread.start()

    def beat(self) -> None:
        """Bump the counter in place (the same inode, so no client serves an old name's bytes)."""
        started = time.monotonic()  # judges see the new bytes after this, never before
        self.count += 1
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:  # removed by a judge that took this worker for dead: back it comes
            publish(self.spool.dir("tmp"), self.path, self._data(), durable=False, replace=True)
        else:
            try:
                os.pwrite(fd, self._data(), 0)
            finally:
                os.close(fd)  # close flushes to the server (NFS close-to-open)
        self.last_beat = started

    def _run(self) -> None:
        interval = self.timeout / BEATS_PER_TIMEOUT
        while not self._stop.wait(interval):
            try:
                self.beat()
            except OSError:
                continue  # ESTALE, EIO, a full disk: the next beat tries again from the path

    def lapsed(self) -> bool:
        """Whether another host may have judged this worker dead since its last beat."""
        return time.monotonic() - self.last_beat >= self.timeout * LAPSE_SHARE

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class Liveness:
    """The judge: whether workers (and the unknown owners of files in processing/) are alive.

    `observing=True` for a long-lived process that judges again and again
    (a worker's recovery sweeps): it remembers what it read and when, on its
    own clock. A one-shot judge uses the file system's clock instead.
    """

    def __init__(self, spool, *, mode: str | None = None, observing: bool = False):
        self.spool = spool
        self._mode = mode
        self.observing = observing
        self.host = this_host()
        self._seen: dict[tuple, tuple[Any, float, float]] = {}  # key -> (bytes seen, first seen, last looked)
        self._fs_now: float | None = None
        self._expired: set[str] = set()  # leases look_at_leases already reported
        self._dead: set[str] = set()  # workers of other hosts this judge found dead
        self.beating: set[str] = set()  # the workers whose lease the last look_at_leases saw beat

    @property
    def mode(self) -> str:
        """ "local" or "shared" (fstype.mode), looked up only when a decision needs it."""
        if self._mode is None:
            self._mode = fstype.mode(self.spool)
        return self._mode

    @property
    def timeout(self) -> float:
        return float(self.spool.config["lease_timeout"])

    def worker_alive(self, name: str, record: dict | None = None) -> bool:
        """Whether worker `name` lives: its flock on its own host, its lease from any other."""
        if holds_lock(self.spool, name):
            return True  # a lock seen held is held, from any host
        if record is None:
            record = read_record(self.spool, name)
        if (record is not None and record.get("host") == self.host) or (record is None and self.mode == "local"):
            return False  # on its own host a free lock proves it gone
        if self.observing:
            token = _read_or_none(lease_path(self.spool, name))
            if token is None and name in self._dead:
                return False  # its lease was removed after this judge found it expired
            alive = self._unchanged_for(("lease", name), token) < self.timeout
            if not alive:
                self._dead.add(name)
            elif token is not None:
                self._dead.discard(name)  # it beat again (it was paused, not dead)
            return alive
        return self.lease_age(name) < self.timeout

    def look_at_leases(self, skip: str = "") -> bool:
        """Read every lease (but `skip`'s) once; True when one has just been unchanged for lease_timeout.

        A long-lived judge calls this more often than it sweeps, so the
        time it first sees a lease's last bytes is close to when they were
        written, and its worker can sweep as soon as a lease expires.
        """
        expired = False
        timeout = self.timeout
        beating = set()
        for entry in os.listdir(self.spool.dir("workers")):
            if not entry.endswith(SUFFIX) or entry.startswith(".") or entry == skip + SUFFIX:
                continue
            name = entry.removesuffix(SUFFIX)
            seen = self._unchanged_for(("lease", name), _read_or_none(lease_path(self.spool, name)))
            if seen >= timeout and name not in self._expired:
                self._expired.add(name)
                expired = True
            elif seen < timeout:
                self._expired.discard(name)
                beating.add(name)
        self.beating = beating
        return expired

    def owner_dead(self, held) -> bool:
        """For recovery, which holds the flock of a file in processing/: is the job's owner dead?"""
        job = held.job
        if isinstance(job, dict) and job.get("state") == "processing" and isinstance(job.get("worker"), str):
            record = read_record(self.spool, job["worker"])
            if (record is not None and record.get("host") == self.host) or (record is None and self.mode == "local"):
                # We hold the job file's flock, and on its owner's own host a flock
                # is seen by everyone: the owner died, or gave the run up after an
                # error and lives on (then its own next sweep takes the job back).
                return True
            return not self.worker_alive(job["worker"], record)
        return self.abandoned(held)

    def abandoned(self, held) -> bool:
        """For a file no worker is named in (held, flock taken): has whoever moved it there died?

        A claim cut between its rename and its rewrite (the bytes are still
        the old state's), a drop-in left in adopting/, or a file that is not
        a job. Alone on this machine, the free flock says nobody holds it; on
        a shared spool a process on another host may be between its two
        steps: it is judged dead once the file has not changed for a lease.
        """
        if self.mode == "local":
            return True
        if not self.observing:
            return False
        try:
            info = os.fstat(held.fd)
        except FileNotFoundError:
            return False  # moved on since it was locked (bindfs answers fstat by path)
        token = (info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
        return self._unchanged_for(("file", held.state, held.name), token) >= self.timeout

    def lease_age(self, name: str) -> float:
        """Seconds since worker `name` last beat, by the file system's clock; infinite without a lease."""
        try:
            beat = os.stat(lease_path(self.spool, name)).st_mtime
        except OSError:
            return float("inf")
        return max(0.0, self._file_system_now() - beat)

    def _file_system_now(self) -> float:
        """Now, as the file system stamps it (a probe file's mtime); this host's clock if tmp/ is not writable."""
        if self._fs_now is None:
            probe = os.path.join(self.spool.dir("tmp"),
                                 f".lease-probe.{self.host}.{os.getpid()}.{secrets.token_hex(3)}")
            try:
                fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
                try:
                    os.write(fd, b"probe\n")
                    self._fs_now = os.fstat(fd).st_mtime
                finally:
                    os.close(fd)
                    os.unlink(probe)
            except OSError:
                self._fs_now = time.time()
        return self._fs_now

    def _unchanged_for(self, key: tuple, token: Any) -> float:
        """How long this judge has seen `token` under `key` (0 when it just changed or is new)."""
        now = time.monotonic()
        seen = self._seen.get(key)
        if seen is None or seen[0] != token:
            self._seen[key] = (token, now, now)
            if len(self._seen) > 4096:
                self._forget(now)
            return 0.0
        self._seen[key] = (token, seen[1], now)
        return now - seen[1]

    def _forget(self, now: float) -> None:
        """Drop what was not looked at for a while (workers and files long gone)."""
        horizon = now - 3 * self.timeout
        for key in [key for key, seen in self._seen.items() if seen[2] < horizon]:
            del self._seen[key]


def _read_or_none(path: str) -> bytes | None:
    try:
        with open(path, "rb") as handle:
            return handle.read(256)
    except FileNotFoundError:
        return None
    except OSError as exc:  # ESTALE, EIO: unknown, which is not "unchanged"
        return f"unreadable {exc.errno} {time.monotonic()}".encode()
