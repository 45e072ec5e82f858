"""The spool: its layout, paths, configuration, enqueue, reading and locking.

Promises:
- a job file is in exactly one state folder at any instant; every move is
  one rename that refuses to replace an existing file;
- every file a reader can see is complete and is never written again: a
  new version is written under a temporary name, fsynced (with `durable`),
  then renamed into place, and with `durable` the folder is fsynced too;
- whoever moves or rewrites a job first takes the flock of its file
  (`LockedJob`), so a worker, `cancel` and `dlq retry` never act on the
  same file at once, and a job in processing/ without a lock holder has a
  dead owner.
Which moves a job may make, and in which order its file is moved and
rewritten, is lifecycle.py's business; this module only provides the
moves. Counting and listing read directory entries only; nothing here
parses every file to answer a question about many jobs.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from . import config as config_mod
from . import fsops
from .errors import InvalidJob, JobNotFound, SpoolError, WrongState
from .job import MAX_JOB_BYTES, STATES, check_id, dumps, is_valid_id, iso, loads
from .transient import LOST_RACE

# ids/<id>: the id's marker, held from enqueue until the job is deleted (docs/decisions/identity.md);
# purging/<id>: the marker of an id whose job is being deleted.
IDS = "ids"
PURGING = "purging"
FOLDERS = ("tmp", *STATES, "logs", "workers", "schedules", IDS, PURGING, "cancels", "suspends")
# adopting/<name>: a drop-in one process took out of pending/ to adopt it, on a shared spool
# (docs/decisions/identity.md, "Drop-ins on a shared spool"); made on first use, not by every open.
ADOPTING = "adopting"
SUFFIX = ".json"
# In ids/: present once every job of the spool has its marker (spools made before markers get them once).
IDS_COMPLETE = ".complete"
# Reads of a job file that fails to parse, before it is judged as it is (Spool.read).
TORN_READS = 5
# A marker smaller than this is text (see Spool.take_id); every job file queuectl writes is larger.
MARKER_TEXT = 64


def default_path() -> str:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "queuectl", "spool")


def resolve_path(path: str | os.PathLike | None) -> str:
    """--spool, else $QUEUECTL_SPOOL, else the XDG data folder."""
    chosen = os.fspath(path) if path else os.environ.get("QUEUECTL_SPOOL") or default_path()
    return os.path.abspath(os.path.expanduser(chosen))


def file_name(job_id: str) -> str:
    """The file that holds job `job_id` in any state folder."""
    return job_id + SUFFIX


def id_of(name: str) -> str:
    """The id a job file's name stands for (`<id>.json`)."""
    return name.removesuffix(SUFFIX)


def job_name(name: str) -> bool:
    """Names that hold jobs: `*.json`, not hidden; everything else is ignored."""
    return name.endswith(SUFFIX) and not name.startswith(".")


class LockedJob:
    """A job file this process owns through its flock, and may move or rewrite.

    The lock lives on the file's inode: a rename keeps it, a rewrite (which
    replaces the inode) takes the new file's lock before it becomes visible.

    `inode` is the owned file's (st_dev, st_ino), taken when it was locked
    or written: whether the name still leads to it is a stat of the name
    against this, never an fstat of `fd`. A FUSE file system that answers
    getattr by path (bindfs) gives an open file the attributes of whatever
    file has its name now, so fstat cannot tell that another host replaced it.
    """

    def __init__(self, spool: Spool, state: str, name: str, fd: int, job: Any, unreadable: str | None,
                 inode: tuple[int, int]):
        self.spool = spool
        self.state = state
        self.name = name
        self.fd = fd
        self.inode = inode
        self.job = job  # None when the file is not JSON: `unreadable` says why
        self.unreadable = unreadable
        self.staged: tuple[str, int] | None = None  # (path in tmp/, its locked fd): see stage()
        self.staged_inode = (0, 0)  # that file's (st_dev, st_ino)

    @property
    def path(self) -> str:
        return f"{self.spool.root}/{self.state}/{self.name}"

    def at_name(self) -> os.stat_result | None:
        """The stat of the job's name when it still leads to the file owned here; None if not (moved or replaced)."""
        try:
            info = os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            return None
        return info if (info.st_dev, info.st_ino) == self.inode else None

    def move(self, state: str, name: str | None = None, *, sync: bool = True, fold_cut: bool | None = None) -> None:
        """Rename into another folder; FileExistsError if that name is taken there.

        `sync=False` skips the fsyncs even when durable: for a claim, whose
        loss in a power cut only means the job runs again (it was cut anyway).
        FileNotFoundError: another process moved the file first (possible
        only on a shared spool, where flocks may not reach other hosts).
        `fold_cut`: see fsops.rename_noreplace; by default not on a shared spool.
        """
        target = name or self.name
        source_dir, target_dir = self.spool.dir(self.state), self.spool.dir(state)
        fsops.rename_noreplace(f"{source_dir}/{self.name}", f"{target_dir}/{target}",
                               fold_cut=not self.spool.shared if fold_cut is None else fold_cut)
        if sync and self.spool.durable:
            fsops.fsync_dir(target_dir)
            if source_dir != target_dir:  # a rename within pending/ (adopting a drop-in)
                fsops.fsync_dir(source_dir)
        self.state, self.name = state, target

    def save(self, *, sync: bool = True, moving_on: bool = False) -> None:
        """Replace the file with the current `job`, keeping ownership of the new inode.

        The new version is a new file (tmp/, then renamed over the old name),
        locked before it becomes visible; the old inode is never written
        again, so whoever still has it open reads this job's older bytes.
        `moving_on`: a `move` follows at once and fsyncs this folder, so
        the rename here needs no folder fsync of its own.
        """
        durable = sync and self.spool.durable
        self.stage()
        self.publish_staged(durable=durable)
        if durable and not moving_on:
            fsops.fsync_dir(self.spool.dir(self.state))

    def stage(self) -> None:
        """Write the current `job` into a new file in tmp/, locked, not visible yet and not fsynced."""
        self.job["updated_at"] = iso(time.time())
        path, fd, self.staged_inode = fsops.write_new_locked(self.spool.dir("tmp"), self.name, dumps(self.job))
        self.staged = (path, fd)

    def publish_staged(self, *, durable: bool, to: tuple[str, str] | None = None) -> None:
        """Put the staged file under the job's name (fsynced first when `durable`); it owns the job now.

        `to` (state, name): publish there instead, never over a file in the
        way (FileExistsError), and then drop this file's own name.
        """
        assert self.staged is not None, "stage() first"
        path, fd = self.staged
        self.staged = None
        inode = self.staged_inode
        try:
            if durable:
                fsops.fsync(fd)
            if to is None:
                fsops.replace(path, self.path)
            else:
                fsops.rename_noreplace(path, os.path.join(self.spool.root, *to), fold_cut=False)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)
                self.state, self.name = to
        except BaseException:
            os.close(fd)
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            raise
        os.close(self.fd)
        self.fd = fd
        self.inode = inode

    def unlock(self) -> None:
        """Let the file go: its flock and descriptor (and a staged version never published)."""
        if self.staged is not None:  # staged but never published: not a job's file, nobody else saw it
            path, fd = self.staged
            self.staged = None
            os.close(fd)
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> LockedJob:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.unlock()


class _IdMarkers:
    """ids/<id> and purging/<id> (docs/decisions/identity.md): a part of Spool, kept apart for its size."""

    root: str

    def dir(self, folder: str) -> str:
        return os.path.join(self.root, folder)

    def names(self, state: str) -> list[str]:
        raise NotImplementedError

    def _config_text(self) -> str | None:
        raise NotImplementedError

    def marker(self, job_id: str) -> str:
        """ids/<id>: a hard link of the file queuectl last placed into pending/ under this id."""
        return f"{self.root}/{IDS}/{job_id}"  # asked at every enqueue and claim: no os.path.join

    def take_id(self, job_id: str, source: str) -> bool:
        """Make ids/<id> a name of `source`; False when the id is taken (by another file).

        link() decides: of processes taking one id at once, exactly one
        succeeds, whatever folder the id's job is in or moving between.
        On a file system without hard links, and on a shared spool, the
        marker is a small file that holds the inode's numbers instead,
        written whole before it takes its name (_write_marker).
        """
        path = self.marker(job_id)
        if self._text_markers():
            return self._write_marker(path, source, exclusive=True)
        try:
            os.link(source, path, follow_symlinks=False)
            return True
        except FileExistsError:
            pass
        except OSError as exc:
            if exc.errno not in fsops.NO_LINKS:
                raise
            return self._write_marker(path, source, exclusive=True)
        try:  # an NFS client may report EEXIST for its own retried link
            same = os.path.samestat(os.lstat(source), os.lstat(path))
            return same or self.id_holds(job_id, _inode_of(source)) is True
        except FileNotFoundError:
            return False

    def _write_marker(self, path: str, source: str, *, exclusive: bool) -> bool:
        """A marker as text, `<st_dev> <st_ino>` of `source` (file systems without hard links)."""
        dev, ino = _inode_of(source)
        data = f"{dev} {ino}\n".encode()
        try:
            # Written whole in tmp/, then put in place: an O_EXCL create would be seen empty by
            # another host until its write, and an empty marker names no inode, so that host
            # would judge the id's own job a duplicate. Without `exclusive`, renamed over the
            # old marker; with it, linked, which refuses a taken name.
            fsops.publish(self.dir("tmp"), path, data, durable=False, replace=not exclusive)
        except FileExistsError:
            return self.id_holds(os.path.basename(path), (dev, ino)) is True
        return True

    def relink_id(self, job_id: str, source: str) -> None:
        """Point ids/<id> at `source` in one rename (for a job about to be moved back into pending/)."""
        temp = fsops.temp_name(self.dir(IDS), job_id)  # '.'-names: never an id
        if self._text_markers():
            self._write_marker(self.marker(job_id), source, exclusive=False)
            return
        try:
            os.link(source, temp, follow_symlinks=False)
        except OSError as exc:
            if exc.errno not in fsops.NO_LINKS:
                raise
            self._write_marker(self.marker(job_id), source, exclusive=False)
            return
        try:
            os.replace(temp, self.marker(job_id))
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise

    def id_holds(self, job_id: str, inode: tuple[int, int]) -> bool | None:
        """Whether ids/<id> names the file of `inode` (st_dev, st_ino); None when the id is free.

        A text marker (see take_id) is compared by st_ino alone: it may have
        been written through another host's mount, whose st_dev differs.
        """
        path = self.marker(job_id)
        if self._text_markers():  # read at once: a look first would be one more round trip to a server
            try:
                fd = fsops.open_nofollow(path)
            except FileNotFoundError:
                return None
            except OSError:
                fd = -1  # a symlink or stranger: judged below
            if fd >= 0:
                try:
                    data = os.read(fd, MARKER_TEXT)
                    if len(data) < MARKER_TEXT:  # as the size a look would have shown
                        _, ino = data.split()
                        return int(ino) == inode[1]
                except (OSError, ValueError):
                    pass  # not a text marker: judged below
                finally:
                    fsops.close_quietly(fd)
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return None
        if info.st_size < MARKER_TEXT and stat.S_ISREG(info.st_mode):  # a text marker
            try:
                with open(fsops.open_nofollow(path), "rb") as handle:
                    _, ino = handle.read(MARKER_TEXT).split()
                return int(ino) == inode[1]
            except (OSError, ValueError):
                pass  # a small file of another kind: its own numbers
        return (info.st_dev, info.st_ino) == inode

    def id_taken(self, job_id: str) -> bool:
        return os.path.lexists(self.marker(job_id))

    def drop_id(self, job_id: str, source: str) -> None:
        """Remove ids/<id> if it is still a name of `source` (an enqueue that failed after taking it)."""
        path = self.marker(job_id)
        try:
            if self.id_holds(job_id, _inode_of(source)) is True:
                os.unlink(path)
        except FileNotFoundError:
            pass

    _text: bool | None = None

    def _text_markers(self) -> bool:
        """Whether this spool's markers are text (ids/.complete says `text`), read once per Spool object.

        On a file system other hosts share, a hard link would keep the enqueued
        inode reachable after a worker of another host moved the job on, and a
        client whose cache of names still leads to it would then act on a job
        that is gone from there (GlusterFS does: its names lead to a file by its
        gfid). Such file systems number files from random ids, so the numbers a
        text marker holds are not reused as ext4's are.
        """
        if self._text is None:
            try:
                with open(os.path.join(self.root, IDS, IDS_COMPLETE), "rb") as handle:
                    self._text = handle.read(16).strip() == b"text"
            except FileNotFoundError:
                self._text = False
        return self._text

    def _mark_every_id(self) -> None:
        """Give every job of a spool made before id markers its marker, once (idempotent: a crash redoes it)."""
        shared = config_mod.shared_choice(self._config_text())
        if shared is None:
            from . import fstype  # once per spool's life (its first marker): enqueue's start-up does not load it

            shared = fstype.is_shared_type(fstype.filesystem(self.root))
        self._text = shared
        for state in STATES:
            for name in self.names(state):
                job_id = id_of(name)
                if is_valid_id(job_id):
                    with contextlib.suppress(OSError):
                        self.take_id(job_id, os.path.join(self.root, state, name))
        dead = self.dir("dead")
        # Kept bytes of invalid files whose record is missing keep their id too.
        for name in fsops.listdir_if_there(dead):
            if name.endswith(".invalid") and is_valid_id(name[: -len(".invalid")]):
                with contextlib.suppress(OSError):
                    self.take_id(name[: -len(".invalid")], os.path.join(dead, name))
        temp = fsops.temp_name(self.dir("tmp"), IDS_COMPLETE)
        try:
            handle = open(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600), "wb")
        except OSError:
            return  # a reader without write access: the next process that may write does it
        with handle:
            handle.write(b"text\n" if shared else b"links\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            fsops.link_new(temp, os.path.join(self.root, IDS, IDS_COMPLETE))  # by rename where links are missing
        except FileExistsError:
            pass  # another process marked them at the same time
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)


class _Settings:
    """config.json as a spool reads and writes it: a part of Spool, kept apart for its size."""

    root: str
    _config_cache: tuple[tuple, dict] | None
    _held_config: dict[str, Any] | None

    def dir(self, folder: str) -> str:
        return os.path.join(self.root, folder)

    @property
    def config(self) -> dict[str, Any]:
        """config.json with defaults, re-read only when the file changed (looked at each time,
        except inside held_config)."""
        held = self._held_config  # read once: the group commit's thread asks too
        if held is not None:
            return dict(held)
        return fsops.retry_stale(self._read_config)

    @contextlib.contextmanager
    def held_config(self) -> Iterator[dict[str, Any]]:
        """One reading of config.json for everything inside: a worker's claim, and then its settle,
        each see one set of settings and look at the file once instead of at every step."""
        self._held_config = self.config
        try:
            yield dict(self._held_config)
        finally:
            self._held_config = None

    def _read_config(self) -> dict[str, Any]:
        path = f"{self.root}/config.json"
        try:
            info = os.stat(path)
        except FileNotFoundError:
            return config_mod.defaults()
        key = (info.st_ino, info.st_mtime_ns, info.st_size)
        if self._config_cache is None or self._config_cache[0] != key:
            text = self._config_text()
            if text is None:
                return config_mod.defaults()
            self._config_cache = (key, config_mod.loads(text))
        return dict(self._config_cache[1])

    def _config_text(self) -> str | None:
        """config.json's text; None when there is none.

        An ENOENT after the open is not "no file": another client replaced it
        mid-read (GlusterFS fails the read of a file moved away), so look again.
        """
        path = os.path.join(self.root, "config.json")
        for attempt in range(fsops.STALE_ATTEMPTS):
            try:
                handle = open(path, encoding="utf-8")
            except FileNotFoundError:
                return None
            try:
                with handle:
                    return handle.read()
            except FileNotFoundError:
                if attempt == fsops.STALE_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    @property
    def durable(self) -> bool:
        return self.config["durable"]

    def set_config(self, key: str, text: str) -> tuple[str, Any]:
        name = config_mod.canonical_key(key)
        value = config_mod.parse_value(name, text)
        current = self._stored_config()
        current[name] = value
        self._publish_file("config.json", (json.dumps(current, indent=2) + "\n").encode())
        return name, value

    def _stored_config(self) -> dict:
        """Only the keys the file sets, so defaults stay defaults."""
        return fsops.retry_stale(self._read_stored_config)

    def _read_stored_config(self) -> dict:
        text = self._config_text()
        return {} if text is None else config_mod.stored(text)

    def _publish_file(self, relative: str, data: bytes) -> None:
        """Atomically replace a spool file that is not a job (config, worker records)."""
        target = os.path.join(self.root, relative)
        fsops.retry_stale(lambda: fsops.publish(self.dir("tmp"), target, data, durable=True, replace=True))
        fsops.fsync_dir(os.path.dirname(target))


class Spool(_Settings, _IdMarkers):
    """A spool folder: `Spool(path).enqueue("echo hi")`, `.get(id)`, `.counts()`."""

    def __init__(self, path: str | os.PathLike | None = None, *, create: bool = True,
                 allow_shared: bool = False):
        self.root = resolve_path(path)
        self.warnings: list[str] = []
        # Set by a worker on a spool other hosts share (lease.py, docs/guide/several-hosts.md):
        # its lease, and moves that never take a
        # second name for their own.
        self.shared = False
        self.lease: Any = None  # lease.Lease (not imported here: commands that read never need it)
        self._config_cache: tuple[tuple, dict] | None = None
        self._held_config: dict[str, Any] | None = None  # see held_config()
        self._prepare(create, allow_shared)
        if not os.path.lexists(os.path.join(self.root, IDS, IDS_COMPLETE)):
            self._mark_every_id()

    # -- layout and safety ---------------------------------------------------

    def _prepare(self, create: bool, allow_shared: bool) -> None:
        try:
            info = os.stat(self.root)
        except FileNotFoundError:
            if not create:
                raise SpoolError(f"no spool at {self.root}") from None
            try:
                os.makedirs(self.root, mode=0o700)
            except OSError as exc:
                raise SpoolError(f"cannot create spool {self.root}: {exc.strerror}") from None
            info = os.stat(self.root)
        except NotADirectoryError:
            raise SpoolError(f"spool path {self.root} is inside a file, not a directory") from None
        if not stat.S_ISDIR(info.st_mode):
            raise SpoolError(f"spool path {self.root} is a file, not a directory")
        self._check_private(self.root, info, allow_shared)
        for folder in FOLDERS:
            path = self.dir(folder)
            try:
                folder_info = os.lstat(path)
            except FileNotFoundError:
                try:
                    os.mkdir(path, 0o700)
                except FileExistsError:
                    pass
                except OSError as exc:
                    raise SpoolError(f"cannot create {path}: {exc.strerror}") from None
                continue
            if not stat.S_ISDIR(folder_info.st_mode):
                raise SpoolError(f"{path} must be a directory (symlinks are not followed)")
            self._check_private(path, folder_info, allow_shared)

    def _check_private(self, path: str, info: os.stat_result, allow_shared: bool) -> None:
        """Whoever can write here can run commands as the worker's user (docs/guide/security.md)."""
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o022 and not allow_shared:
            raise SpoolError(
                f"spool folder {path} is writable by group or others (mode {mode:04o}), so they could "
                f"run commands as you; run 'chmod go-w {path}' or pass --allow-shared-spool")
        if info.st_uid != os.getuid() and not allow_shared:
            raise SpoolError(f"spool folder {path} belongs to another user (uid {info.st_uid}); "
                             f"pass --allow-shared-spool to use it anyway")
        if path == self.root and mode & 0o077:
            self.warnings.append(f"spool {path} is readable by others (mode {mode:04o}); "
                                 f"'chmod 700 {path}' keeps job commands and logs private")

    # Paths are joined with "/" by hand: `root` is absolute and normalized (resolve_path) and a
    # folder or job name never is, so os.path.join would only cost a worker a few calls a job.
    def dir(self, folder: str) -> str:
        return f"{self.root}/{folder}"

    def path(self, state: str, job_id: str) -> str:
        return f"{self.root}/{state}/{check_id(job_id)}{SUFFIX}"

    def log_path(self, job_id: str) -> str:
        return f"{self.root}/logs/{check_id(job_id)}.log"

    # -- inspection ----------------------------------------------------------

    def names(self, state: str) -> list[str]:
        """File names of the jobs in one folder (directory entries only, nothing parsed)."""
        check_state(state)
        try:
            return [name for name in os.listdir(self.dir(state)) if job_name(name)]
        except FileNotFoundError:
            return []

    def counts(self) -> dict[str, int]:
        return {state: len(self.names(state)) for state in STATES}

    def find(self, job_id: str) -> str | None:
        """The state folder holding this id, or None."""
        check_id(job_id)
        for state in STATES:
            if _present(os.path.join(self.root, state, job_id + SUFFIX)):
                return state
        return None

    def get(self, job_id: str) -> dict:
        """The job with its `state` taken from its folder (the folder is the truth)."""
        for _ in range(5):
            state = self.find(job_id)
            if state is None:
                break
            job = self.read(state, job_id + SUFFIX)
            if job is not None:
                return job
        raise JobNotFound(f"no job with id {job_id!r}")

    def read(self, state: str, name: str) -> dict | None:
        """One job file as a dict; None if it moved away meanwhile.

        A file that is not a job object (a half-written drop-in) is shown as a
        stub whose `last_error` says why, rather than hidden or crashed on.
        """
        job = _parse_whole(lambda: self.read_raw(state, name))
        if isinstance(job, str):
            return _stub(name, state, job)
        if job is not None:
            job["state"] = state
        return job

    def read_raw(self, state: str, name: str) -> tuple[bytes | None, str | None]:
        """The bytes of `state/name`, never through a symlink.

        (bytes, None); (None, why it cannot be read); (None, None) when it is
        gone. Bytes read from an inode that has since left its name are
        still this job's (no inode is ever rewritten), only perhaps older.
        """
        return fsops.retry_stale(self._read_raw, state, name)

    def _read_raw(self, state: str, name: str) -> tuple[bytes | None, str | None]:
        return fsops.read_file(os.path.join(self.root, state, name), MAX_JOB_BYTES)

    def jobs(self, state: str | None = None, limit: int | None = None) -> list[dict]:
        """Jobs newest id first (generated ids sort by creation time)."""
        return self.newest(state, limit)[0]

    def newest(self, state: str | None = None, limit: int | None = None) -> tuple[list[dict], int]:
        """(up to `limit` jobs newest id first, how many jobs the listing held).

        The total comes from the directory listing the page is chosen from,
        so telling the reader that rows were cut costs no extra file read.
        """
        states = [check_state(state)] if state else list(STATES)
        entries = sorted(((name, st) for st in states for name in self.names(st)), reverse=True)
        return self.read_listed(((st, name) for name, st in entries), limit), len(entries)

    def read_listed(self, entries: Iterable[tuple[str, str]], limit: int | None = None) -> list[dict]:
        """The jobs of listed (state, name) entries, in their order, up to `limit`; a file that moved
        away since the listing is left out, and only as many files are read as the page needs."""
        found: list[dict] = []
        for state, name in entries:
            if limit is not None and len(found) >= limit:
                break
            job = self.read(state, name)
            if job is not None:
                found.append(job)
        return found

    def iter_jobs(self, state: str) -> Iterator[dict]:
        for name in self.names(state):
            job = self.read(state, name)
            if job is not None:
                yield job

    def read_log(self, job_id: str, tail_bytes: int | None = None, offset: int = 0) -> bytes:
        """The job's log from byte `offset`, or its last `tail_bytes`.

        SpoolError naming the path when the log is not a regular file (a
        symlink is never followed; a folder, FIFO or device is not read).
        """
        path = self.log_path(job_id)
        try:
            # Never through a symlink: a log is the spool's own file, or nothing.
            fd = fsops.open_nofollow(path)
        except FileNotFoundError:
            if self.find(job_id) is None:
                raise JobNotFound(f"no job with id {job_id!r}") from None
            return b""
        except OSError as exc:
            if os.path.islink(path):
                raise SpoolError(f"log {path} is a symlink, which queuectl never follows") from None
            raise SpoolError(f"cannot read log {path}: {exc.strerror}") from None
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            fsops.close_quietly(fd)
            raise SpoolError(f"log {path} is not a regular file (a folder, FIFO or device)")
        with open(fd, "rb") as handle:
            if tail_bytes is not None:
                offset = max(0, info.st_size - tail_bytes)
            handle.seek(offset)
            return handle.read()

    # -- changing jobs -------------------------------------------------------

    def lock(self, state: str, name: str) -> LockedJob | None:
        """Own the file `state/name`; None when it is gone or another process owns it."""
        path = f"{self.root}/{state}/{name}"
        try:
            fd = fsops.open_nofollow(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno in LOST_RACE:
                return None  # the name this client cached leads nowhere now: gone from here
            raise
        try:
            if not fsops.lock_fd(fd):
                fsops.close_quietly(fd)
                return None
            # The name may have been moved or replaced between open and lock.
            info = os.fstat(fd)
            if not os.path.samestat(os.stat(path, follow_symlinks=False), info):
                fsops.close_quietly(fd)
                return None
            # A folder or a FIFO has no job to read: its owner moves it aside unread.
            raw = fsops.read_fd(fd, MAX_JOB_BYTES) if stat.S_ISREG(info.st_mode) else b""
        except OSError as exc:
            fsops.close_quietly(fd)
            if exc.errno in LOST_RACE:
                # Moved away since the open: the stat finds no name; or, by another
                # client, the fstat (bindfs answers it by path) or the read (GlusterFS).
                return None
            raise
        except BaseException:
            fsops.close_quietly(fd)
            raise
        try:
            return LockedJob(self, state, name, fd, loads(raw, info.st_size), None, (info.st_dev, info.st_ino))
        except InvalidJob as exc:
            return LockedJob(self, state, name, fd, None, str(exc), (info.st_dev, info.st_ino))

    def lock_job(self, job_id: str, allowed: tuple[str, ...], action: str) -> LockedJob:
        """Own job `job_id`, which must be in one of `allowed`; a clear error otherwise."""
        state = self.find(job_id)
        if state is None:
            raise JobNotFound(f"no job with id {job_id!r}")
        if state not in allowed:
            raise WrongState(f"cannot {action} job {job_id!r}: it is {state} "
                             f"(only {' or '.join(allowed)} jobs)")
        held = self.lock(state, job_id + SUFFIX)
        if held is None:
            raise WrongState(f"job {job_id!r} is busy (a worker is moving it); try again")
        if not isinstance(held.job, dict):
            held.unlock()
            raise InvalidJob(f"job file {state}/{job_id}{SUFFIX} is not valid JSON")
        return held


def _present(path: str) -> bool:
    """Whether `path` names something, asked of the file system itself.

    An open, not a stat: a GlusterFS client may answer lstat from its cache
    of names long after another client moved the file away, while open
    looks the name up, unless the file lives on elsewhere (a drop-in set
    aside as .invalid: docs/guide/several-hosts.md, "A name another host set
    aside"). Symlinks, FIFOs and unreadable files count as present.
    """
    try:
        fd = fsops.open_nofollow(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        return exc.errno not in fsops.STALE  # ELOOP (a symlink), EACCES...: something is there
    fsops.close_quietly(fd)
    return True


def _inode_of(path: str) -> tuple[int, int]:
    info = os.lstat(path)
    return info.st_dev, info.st_ino


def _parse_whole(read: Callable[[], tuple[bytes | None, str | None]]) -> dict | str | None:
    """A job file's object; why it is no job object (text); None when it is gone.

    A FUSE file system that reads by path (bindfs) can hand an open file the
    bytes of whatever file has its name now, so a rewrite by another client
    mid-read tears the read: only bytes that read the same twice are judged
    (docs/guide/several-hosts.md).
    """
    data, unreadable = read()
    for _ in range(TORN_READS):
        if unreadable is not None or data is None:
            return unreadable
        try:
            job = loads(data)
        except InvalidJob as exc:
            again, unreadable = read()
            if again == data:
                return str(exc)
            data = again
            continue
        return job if isinstance(job, dict) else "not a JSON object"
    return "the file kept changing while it was read"


def _stub(name: str, state: str, reason: str) -> dict:
    return {"id": id_of(name), "state": state, "command": None, "last_error": f"unreadable job file: {reason}"}


def check_state(state: str) -> str:
    if state not in STATES:
        raise InvalidJob(f"unknown state {state!r}; valid states: {', '.join(STATES)}")
    return state
