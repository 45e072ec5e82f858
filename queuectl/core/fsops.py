"""The few file-system operations every state change is made of.

- `write_new` creates a file under a unique temporary name and fills it;
  nobody else ever sees that name before it is complete (`write_new_locked`
  also takes its flock first, for a job file's next version).
- `rename_noreplace` moves a file and fails with EEXIST instead of silently
  replacing a file already there, so no move can destroy another job
  (renameat2(RENAME_NOREPLACE); link + unlink where the kernel lacks it).
- `publish` writes a new file and gives it its name in one step (a link
  that refuses an existing name, or a rename over the old version), and
  removes the temporary file on failure.
- `lock_fd` takes the advisory flock that marks a job file as owned; the
  kernel drops it when the owner dies, which is what crash recovery reads.
- `open_nofollow` is the one way the spool opens a file it did not just
  create: never through a symlink, never blocking on a FIFO.

Nothing here writes into a file that others can already see: every new
version is a new inode under a new name, renamed into place (Maildir's
rule). So a reader that opened a job's file reads that job's bytes, an
older version at worst, however long it takes.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

T = TypeVar("T")

_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2
_libc_renameat2: Any = None  # libc's renameat2 through ctypes, loaded by the first move


def _renameat2(src: bytes, dst: bytes, flags: int) -> int:
    """renameat2(2) through libc: 0, or the errno it failed with (ENOSYS where libc lacks it).

    ctypes is imported here, at the first move, not with the module: it is
    most of what importing fsops would cost, and commands that only read the
    spool (list, status, show) never move a file.
    """
    global _libc_renameat2
    if _libc_renameat2 is None:
        import ctypes
        function = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
        if function is None:
            _libc_renameat2 = False
        else:
            function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
            function.restype = ctypes.c_int
            _libc_renameat2 = (function, ctypes.get_errno)
    if _libc_renameat2 is False:
        return errno.ENOSYS
    function, get_errno = _libc_renameat2
    return 0 if function(_AT_FDCWD, src, _AT_FDCWD, dst, flags) == 0 else get_errno()


def rename_noreplace(src: str, dst: str, *, fold_cut: bool = True) -> None:
    """Atomically move src to dst; FileExistsError when dst exists, never an overwrite.

    A dst that is already src itself (a link + unlink move cut between its
    two steps) is not in the way: dropping the old name finishes that move.
    Unless `fold_cut` is False: on a shared spool, where flocks may not
    reach the other hosts, that second name may be another host's move in
    flight, and the move fails with FileNotFoundError (the file is not ours
    to move) instead of claiming it twice (docs/guide/several-hosts.md,
    "What is guaranteed").
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


def replace(src: str, dst: str) -> None:
    """os.replace(src, dst), made by exchanging the two names where the file system can.

    ext4 starts writing any file that is renamed over another name (its
    auto_da_alloc guard for programs that never fsync): a rewrite that is
    fsynced anyway, or replaced a moment later (a claim's), does not need
    that write. Exchanged, `dst` holds the new file at once, as after a
    replace, and the old one, now under `src`, is unlinked: it is never
    written again (docs/decisions/file-bytes.md).
    A crash between the two steps leaves the old version under its tmp/
    name, which doctor removes. Where renameat2's flags are refused (NFS,
    FUSE) or `dst` is gone, os.replace.
    """
    try:
        exchanged = _renameat2_flags(src, dst, _RENAME_EXCHANGE)
    except FileNotFoundError:
        exchanged = False
    if not exchanged:
        os.replace(src, dst)
        return
    os.unlink(src)


# Folders (the target's) where renameat2 refused `flags` (on NFS and FUSE it always does): asked
# once per folder and flag, not at every move, since a refusal costs a call into libc and the kernel
# (a round trip on some file systems) before the fallback every time. Only a spool's few folders land
# here. A folder that could take the flags but is listed (another file system mounted on it since)
# only moves by the fallback, which is correct everywhere.
_refused: set[tuple[str, int]] = set()


def _renameat2_flags(src: str, dst: str, flags: int) -> bool:
    """renameat2 with `flags`; False when the kernel or the file system does not support them."""
    if _renameat2 is None:  # tests set it so, to move files as where renameat2 is missing
        return False
    folder = (dst.rpartition("/")[0], flags)  # its folder (os.path.dirname, without the call)
    if folder in _refused:
        return False
    code = _renameat2(os.fsencode(src), os.fsencode(dst), flags)
    if code == 0:
        return True
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        _refused.add(folder)
        return False
    raise OSError(code, os.strerror(code), src, None, dst)


def fsync(fd: int) -> None:
    """os.fsync, timed: `flush_seconds` tells a worker how slow this disk's flushes are."""
    started = time.perf_counter()
    try:
        os.fsync(fd)
    finally:
        _flush_clock.seconds = flush_seconds() + time.perf_counter() - started


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fsync(fd)
    finally:
        os.close(fd)


_flush_clock = threading.local()


def flush_seconds() -> float:
    """Seconds this thread has spent in fsync (files and folders) so far."""
    return getattr(_flush_clock, "seconds", 0.0)


# What link() fails with where the file system has no hard links (or no more for this file).
NO_LINKS = (errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK)

_temp_counter = 0


def temp_name(directory: str, stem: str) -> str:
    """A name in `directory` that no other process or thread will pick."""
    global _temp_counter
    _temp_counter += 1
    return f"{directory}/.{stem}.{os.getpid()}.{_temp_counter}.{os.urandom(3).hex()}.tmp"


def write_new(directory: str, stem: str, data: bytes, *, durable: bool) -> str:
    """Write `data` to a fresh temporary file; returns its path."""
    path = temp_name(directory, stem)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        _write_all(fd, data, durable)
    except BaseException:
        os.close(fd)
        os.unlink(path)
        raise
    os.close(fd)
    return path


def write_new_locked(directory: str, stem: str, data: bytes) -> tuple[str, int, tuple[int, int]]:
    """Write `data` to a fresh temporary file under its flock; returns its path, the fd holding the
    lock, and the file's (st_dev, st_ino).

    The inode is asked before the write: through FUSE (GlusterFS, bindfs)
    the create's reply carries the new file's attributes, which the kernel
    keeps, while a write makes them stale, so an fstat after it is one more
    round trip to the servers. The name in tmp/ is this process's alone, so
    the fstat is this file's even where FUSE answers it by path (bindfs).
    """
    path = temp_name(directory, stem)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        import fcntl  # here, not at the top: an enqueue locks nothing and need not load it
        fcntl.flock(fd, fcntl.LOCK_EX)
        info = os.fstat(fd)
        _write_all(fd, data, False)
    except BaseException:
        os.close(fd)
        os.unlink(path)
        raise
    return path, fd, (info.st_dev, info.st_ino)


def _write_all(fd: int, data: bytes, durable: bool) -> None:
    """Write `data` at fd's offset (a fresh fd: the start), fsynced when `durable`."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    if durable:
        fsync(fd)


def publish(tmp_dir: str, target: str, data: bytes, *, durable: bool, replace: bool = False) -> None:
    """Make `target` hold `data` in one step: written in tmp_dir, then put in place.

    With `replace` the new file is renamed over the old version. Without it,
    it is linked under the new name: an existing target raises
    FileExistsError and is left untouched. The temporary file never outlives
    a failure, so an error between the write and that step leaves nothing
    behind in tmp/.
    """
    temp = write_new(tmp_dir, os.path.basename(target), data, durable=durable)
    try:
        (os.replace if replace else _link_new)(temp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise


# A network file system answers ESTALE when a name this client cached now
# leads to a file another client replaced; looking the path up again finds
# the new one (docs/guide/several-hosts.md, "Network file-system errors never stop a worker")
# once the client's cache of that name has expired: a GlusterFS client keeps
# it a second (its FUSE entry timeout), and until then an open of the path
# hands out the old file again. The waits between attempts (0.05 s, doubled
# each time: 1.55 s in all) outlast that second.
STALE_ATTEMPTS = 6
# What a network file system answers when a name this client cached leads nowhere now: ESTALE,
# and from a GlusterFS client, for the path of a file another client has just moved or removed,
# EBADFD ("File descriptor in bad state"), an lstat included.
STALE = (errno.ESTALE, errno.EBADFD)


def retry_stale(operation: Callable[..., T], *args: Any) -> T:
    """`operation(*args)`, done again from its paths after ESTALE (STALE); only for operations safe to repeat."""
    for attempt in range(STALE_ATTEMPTS):
        try:
            return operation(*args)
        except OSError as exc:
            if exc.errno not in STALE or attempt == STALE_ATTEMPTS - 1:
                raise
            time.sleep(0.05 * 2 ** attempt)
    raise AssertionError("unreachable")


def close_quietly(fd: int) -> None:
    """Close an fd nothing was written through. Linux frees the fd even when close fails, and a
    network file system may report ESTALE there (GlusterFS does, for a file another client moved)."""
    try:
        os.close(fd)
    except OSError:
        pass


def link_new(temp: str, target: str) -> None:
    """Give the fresh temporary file `temp` the name `target` (see _link_new); FileExistsError when taken."""
    _link_new(temp, target)


def _link_new(temp: str, target: str) -> None:
    """Give a fresh temporary file its final name; FileExistsError when the name is taken.

    link() refuses an existing name as renameat2(RENAME_NOREPLACE) does, and
    needs no ctypes, which an enqueue would otherwise load at start-up. A
    crash between the link and the unlink leaves only a second name in tmp/,
    which doctor removes (the file under `target` is complete either way).
    """
    try:
        os.link(temp, target, follow_symlinks=False)
    except FileExistsError:
        if not os.path.samestat(os.lstat(temp), os.lstat(target)):
            raise
        # A link retried by an NFS client reports EEXIST after it succeeded.
    except OSError as exc:
        if exc.errno not in NO_LINKS:
            raise
        rename_noreplace(temp, target)  # a file system without hard links
        return
    os.unlink(temp)


def open_nofollow(path: str, flags: int = os.O_RDONLY) -> int:
    """An fd of `path` itself: OSError (ELOOP) for a symlink, and O_NONBLOCK so a FIFO never blocks."""
    return os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)


def lock_fd(fd: int) -> bool:
    """Take the exclusive flock on fd; False when another process holds it."""
    import fcntl  # here, not at the top: an enqueue locks nothing and need not load it
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def read_file(path: str, limit: int) -> tuple[bytes | None, str | None]:
    """Up to `limit` + 1 bytes of the regular file `path` itself, never through a symlink.

    (bytes, None); (None, why it cannot be read); (None, None) when it is
    gone. ESTALE is raised: the caller looks the path up again (retry_stale).
    Gone includes an ENOENT after the open: another client moved the file,
    and bindfs answers the fstat by path, GlusterFS may fail the read.
    """
    try:
        fd = open_nofollow(path)
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        if exc.errno in STALE:
            raise
        return None, "a symlink (never followed)" if os.path.islink(path) else f"cannot be read: {exc.strerror}"
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None, "not a regular file (a folder, FIFO or device)"
        return read_fd(fd, limit), None
    except FileNotFoundError:
        return None, None
    finally:
        close_quietly(fd)  # GlusterFS may report ENOENT here for a file another client moved


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


def make_folder(path: str) -> str:
    """`path`, a private folder made if missing (a feature's own folder: groups/, unique/, waiting/)."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    return path


def unlink_if_there(path: str) -> bool:
    """Remove `path`; False when it was already gone."""
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False


def listdir_if_there(path: str) -> list[str]:
    """The names in folder `path`; none when it does not exist (yet)."""
    try:
        return os.listdir(path)
    except FileNotFoundError:
        return []


def wait_readable(fds: Iterable[int], timeout: float) -> set[int]:
    """The descriptors of `fds` readable (or closed at the other end) within `timeout` seconds.

    poll, not select: select cannot watch a descriptor numbered 1024 or more,
    which a worker started with many open files gets for its pipes.
    """
    import select  # here, not at the top: an enqueue waits for nothing and need not load it

    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    milliseconds = min(max(0.0, timeout) * 1000, 2**31 - 1)
    return {fd for fd, _ in poller.poll(milliseconds)}
