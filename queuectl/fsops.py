"""The few file-system operations every state change is made of.

- `write_new` creates a file under a unique temporary name and fills it;
  nobody else ever sees that name before it is complete.
- `rename_noreplace` moves a file and fails with EEXIST instead of silently
  replacing a file already there, so no move can destroy another job
  (renameat2(RENAME_NOREPLACE); link + unlink where the kernel lacks it).
- `publish` is the two together, and removes the temporary file on failure.
- `lock_fd` takes the advisory flock that marks a job file as owned; the
  kernel drops it when the owner dies, which is what crash recovery reads.
- `Spare` rewrites a file by swapping a private, already written file into
  its place (renameat2(RENAME_EXCHANGE)), so a rewrite creates no inode.
"""

from __future__ import annotations

import collections
import ctypes
import errno
import fcntl
import os
import time

_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2
_libc = ctypes.CDLL(None, use_errno=True)
_renameat2 = getattr(_libc, "renameat2", None)
if _renameat2 is not None:
    _renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    _renameat2.restype = ctypes.c_int


def rename_noreplace(src: str, dst: str, *, fold_cut: bool = True) -> None:
    """Atomically move src to dst; FileExistsError when dst exists, never an overwrite.

    A dst that is already src itself (a link + unlink move cut between its
    two steps) is not in the way: dropping the old name finishes that move.
    Unless `fold_cut` is False: on a shared spool, where flocks may not
    reach the other hosts, that second name may be another host's move in
    flight, and the move fails with FileNotFoundError (the file is not ours
    to move) instead of claiming it twice (README.md "Running on several
    hosts").
    """
    try:
        _rename_noreplace(src, dst)
    except FileExistsError:
        if not os.path.samestat(os.lstat(src), os.lstat(dst)):
            raise
        if not fold_cut:
            raise FileNotFoundError(errno.ENOENT, "being moved by another process", src) from None
        os.unlink(src)


def _rename_noreplace(src: str, dst: str) -> None:
    if _renameat2_flags(src, dst, _RENAME_NOREPLACE):
        return
    # The file system cannot rename without replacing (renameat2's flags give
    # EINVAL on NFS and FUSE): link() refuses an existing name; for an
    # instant the job has two names, which doctor folds.
    os.link(src, dst, follow_symlinks=False)
    try:
        os.unlink(src)
    except FileNotFoundError:
        # Our link stands: whoever dropped the old name (a fold of the two
        # names, or a retried NFS call that reported ENOENT after it had
        # succeeded) finished this very move.
        pass


def _renameat2_flags(src: str, dst: str, flags: int) -> bool:
    """renameat2 with `flags`; False when the kernel or the file system does not support them."""
    if _renameat2 is None:
        return False
    if _renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), src, None, dst)


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_temp_counter = 0


def temp_name(directory: str, stem: str) -> str:
    """A name in `directory` that no other process or thread will pick."""
    global _temp_counter
    _temp_counter += 1
    return os.path.join(directory, f".{stem}.{os.getpid()}.{_temp_counter}.{os.urandom(3).hex()}.tmp")


def write_new(directory: str, stem: str, data: bytes, *, durable: bool, lock: bool = False) -> tuple[str, int | None]:
    """Write `data` to a fresh temporary file; returns its path and, with `lock`, an fd holding its flock."""
    path = temp_name(directory, stem)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        if lock:
            fcntl.flock(fd, fcntl.LOCK_EX)
        _write_all(fd, data, durable)
    except BaseException:
        os.close(fd)
        os.unlink(path)
        raise
    if lock:
        return path, fd
    os.close(fd)
    return path, None


def _write_all(fd: int, data: bytes, durable: bool) -> None:
    """Write `data` at fd's offset (a fresh fd: the start), fsynced when `durable`."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    if durable:
        os.fsync(fd)


def publish(tmp_dir: str, target: str, data: bytes, *, durable: bool, replace: bool = False,
            lock: bool = False) -> int | None:
    """Make `target` hold `data` in one step: written in tmp_dir, then renamed into place.

    Without `replace`, an existing target raises FileExistsError and is left
    untouched. The temporary file never outlives a failure, so an error
    between the write and the rename leaves nothing behind in tmp/. With
    `lock`, returns an fd holding the new file's flock, taken before the
    file became visible.
    """
    temp, fd = write_new(tmp_dir, os.path.basename(target), data, durable=durable, lock=lock)
    try:
        (os.replace if replace else rename_noreplace)(temp, target)
    except BaseException:
        if fd is not None:
            os.close(fd)
        os.unlink(temp)
        raise
    return fd


# "~" is not allowed in ids, so no job's temporary file is ever taken for a spare.
SPARE_STEM = "spare~"


class Spare:
    """Files in a temporary folder that rewrites swap into the place of the file they replace.

    `swap` writes the new contents into a spare, then exchanges the two
    names in one atomic step (renameat2(RENAME_EXCHANGE)): the target's
    name now holds the new inode, complete, and the old inode rests under
    the spare's name until it is reused. Nothing is created or freed per
    rewrite. That matters on ext4 without a journal, where each file
    creation scans past every inode freed in the last minutes: a create +
    rename-over rewrite cost ~550 us there against ~18 us for a swap, and
    a job is rewritten twice per run.

    A reader may have opened the old inode just before the swap, so it is
    written again only after QUARANTINE seconds out of sight (and readers
    check that what they read was still under its name: `read_named`).
    An old inode that has another name as well (a link + unlink move cut
    between its steps) is never a spare, and a resting one that somebody
    wrote to or linked meanwhile (a dropped-in file whose writer kept it
    open) is thrown away, not reused.

    Ownership travels with the inodes: the caller's locked fd of the old
    inode becomes a resting spare's, and the spare's locked fd is returned
    as the owner of the new one, so the file under the target name is
    never unlocked. Used by one thread at a time (a worker's main loop).
    """

    QUARANTINE = 0.05
    LIMIT = 128

    def __init__(self, directory: str, visible_in: tuple[str, ...] = ()):
        self.directory = directory
        # The folders whose names the swapped-out inodes may have had. Durable,
        # an inode is reused only after they were fsynced: otherwise a power cut
        # could bring back a stale name (a claim's rename is not fsynced) on top
        # of another job's bytes.
        self.visible_in = visible_in
        self.synced_at = float("-inf")
        self.resting: collections.deque[tuple[float, str, int, tuple[int, int, int]]] = collections.deque()
        self.usable = _renameat2 is not None

    def swap(self, held_fd: int, target: str, data: bytes, *, durable: bool) -> int | None:
        """Make `target` hold `data`; returns the locked fd that owns it now, and keeps `held_fd`.

        None when this file system cannot exchange names: nothing changed,
        `held_fd` stays the caller's, and spares are no longer used.
        """
        if not self.usable:
            return None
        path, owner = self._take(durable)
        try:
            write_fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                os.ftruncate(write_fd, len(data))
                _write_all(write_fd, data, durable)
            finally:
                os.close(write_fd)
            exchanged = _renameat2_flags(path, target, _RENAME_EXCHANGE)
        except BaseException:
            _discard(path, owner)
            raise
        if not exchanged:
            _discard(path, owner)
            self.close()
            self.usable = False
            return None
        seen = _signature(held_fd)
        if seen[2] != 1:  # the old inode has another name too (a cut link + unlink move): not a spare
            _discard(path, held_fd)
        else:
            self.resting.append((time.monotonic(), path, held_fd, seen))
            if len(self.resting) > self.LIMIT:
                _discard(*self.resting.popleft()[1:3])
        return owner

    def _take(self, durable: bool) -> tuple[str, int]:
        """A spare's path and locked fd: a rested one nobody touched, else a new file."""
        now = time.monotonic()
        while self.resting and self.resting[0][0] + self.QUARANTINE <= now:
            if durable and self.resting[0][0] >= self.synced_at:
                for folder in self.visible_in:
                    fsync_dir(folder)
                self.synced_at = now
            _, path, fd, seen = self.resting.popleft()
            if _signature(fd) == seen:
                return path, fd
            _discard(path, fd)
        path, fd = write_new(self.directory, SPARE_STEM, b"", durable=False, lock=True)
        return path, fd

    def close(self) -> None:
        """Remove the spares (old versions of jobs, never a visible one)."""
        while self.resting:
            _discard(*self.resting.popleft()[1:3])


# A live owner holds the flock of every spare it has, except for the instant
# between creating one and locking it, which this age covers.
SPARE_MIN_AGE = 1.0


def remove_dead_spares(directory: str) -> None:
    """Delete the spares of processes that are gone (nobody holds their flock)."""
    prefix = f".{SPARE_STEM}."
    for name in os.listdir(directory):
        if not name.startswith(prefix):
            continue
        path = os.path.join(directory, name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            info = os.fstat(fd)
            if time.time() - info.st_mtime < SPARE_MIN_AGE or not lock_fd(fd):
                continue
            try:
                if os.path.samestat(info, os.stat(path, follow_symlinks=False)):
                    os.unlink(path)
            except FileNotFoundError:
                pass
        finally:
            os.close(fd)


def _signature(fd: int) -> tuple[int, int, int]:
    info = os.fstat(fd)
    return info.st_size, info.st_mtime_ns, info.st_nlink


def _discard(path: str, fd: int) -> None:
    os.close(fd)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def lock_fd(fd: int) -> bool:
    """Take the exclusive flock on fd; False when another process holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def read_fd(fd: int, limit: int) -> bytes:
    """Up to `limit` + 1 bytes from the start of fd (one more than allowed tells 'too big')."""
    chunks = []
    offset = 0
    while offset <= limit:
        chunk = os.pread(fd, 1 << 16, offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def read_named(fd: int, path: str, limit: int, info: os.stat_result) -> bytes | None:
    """`read_fd`, kept only if `path` still names the inode read (`info`, its fstat); None if not.

    A worker's rewrite swaps a new inode in and, 50 ms later, may reuse the
    old one for another job (`Spare`): bytes read after the inode left its
    name may belong to another job.
    """
    data = read_fd(fd, limit)
    try:
        still = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return None
    return data if (still.st_dev, still.st_ino) == (info.st_dev, info.st_ino) else None


def open_for_writing(info: os.stat_result) -> bool:
    """Whether a process we can inspect has this file (by device and inode) open for writing.

    Reads /proc; where it is missing or hidden the answer is False, and the
    caller falls back on the file's age alone.
    """
    try:
        pids = [entry for entry in os.listdir("/proc") if entry.isdigit()]
    except OSError:
        return False
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.stat(f"/proc/{pid}/fd/{fd}")
                if (target.st_dev, target.st_ino) != (info.st_dev, info.st_ino):
                    continue
                with open(f"/proc/{pid}/fdinfo/{fd}", encoding="ascii") as handle:
                    flags = next(int(line.split()[1], 8) for line in handle if line.startswith("flags:"))
            except (OSError, StopIteration, ValueError):
                continue
            if flags & (os.O_WRONLY | os.O_RDWR):
                return True
    return False
