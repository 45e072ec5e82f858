"""A memory cgroup per job, where the worker may make one (docs/guide/limits.md, "Memory").

A memory rlimit holds each process of a job on its own; a cgroup counts the
memory of every process the job starts, together, and the kernel says when
it killed one for it. The runner asks `make()` for a job's group, has the
job's shell move itself in before it runs the command, asks `oom_killed()`
after the run and `remove()`s the group.

Where a group can be made:

- cgroup v2, in a cgroup delegated to the worker (systemd's `Delegate=yes`,
  which contrib/queuectl-worker.service sets; systemd marks such a cgroup
  with the `trusted.delegate` or `user.delegate` attribute, and a non-root
  user owns it only by delegation). v2 lets no cgroup hold processes and
  give controllers to children at once, so the first worker that needs a
  group moves the delegated cgroup's processes (the unit's own: the
  workers) into a child `queuectl-workers` and enables the memory
  controller for the children; each job's group is a sibling of it.
- cgroup v1's memory controller, under the worker's own memory cgroup, where
  the worker may write (usually as root).

Anywhere else (or with QUEUECTL_CGROUPS=off in the worker's environment)
`make()` returns None and the runner holds memory with RLIMIT_DATA only.
"""

from __future__ import annotations

import errno
import os
import time

LEAF = "queuectl-workers"  # v2: where the delegated cgroup's own processes go (see above)
PREFIX = "queuectl-job-"  # a job's group: PREFIX + worker pid + "-" + job id
REMOVE_WAIT = 1.0  # seconds a group's killed processes are given to leave it before it is left behind
_DISCOVERY: dict[int, _Hierarchy | None] = {}  # per process id: a child of fork() looks again


class _Hierarchy:
    """Where this process makes job groups: `parent` holds them; leftovers go to `home`."""

    def __init__(self, version: int, parent: str, home: str):
        self.version = version
        self.parent = parent
        self.home = home


class JobGroup:
    """One job's memory cgroup."""

    def __init__(self, hierarchy: _Hierarchy, path: str):
        self.hierarchy = hierarchy
        self.path = path
        self.procs = os.path.join(path, "cgroup.procs")  # the job's shell writes its pid here

    def oom_killed(self) -> bool:
        """Whether the kernel killed a process of the group for its memory limit."""
        name = "memory.events" if self.hierarchy.version == 2 else "memory.oom_control"
        for line in _read(os.path.join(self.path, name)).splitlines():
            key, _, count = line.partition(" ")
            if key == "oom_kill" and count.strip() not in ("", "0"):
                return True
        return False

    def remove(self) -> None:
        """Remove the group. What the job left running outside its process group (it called
        setsid: not the job's any more, runner._end_group) is moved to the worker's own cgroup
        first, as if the job had run without one."""
        deadline = time.monotonic() + REMOVE_WAIT
        while True:
            try:
                os.rmdir(self.path)
                return
            except FileNotFoundError:
                return
            except OSError as exc:
                if exc.errno != errno.EBUSY or time.monotonic() >= deadline:
                    return  # left for the next make() of this worker's pid to try again
            for pid in _read(self.procs).split():
                _write(os.path.join(self.hierarchy.home, "cgroup.procs"), pid)
            time.sleep(0.01)  # a process just killed leaves its cgroup a moment after


def make(job_id: str, memory: int) -> JobGroup | None:
    """A new cgroup for one run of `job_id`, limited to `memory` bytes without swap; None where none can be made."""
    if os.environ.get("QUEUECTL_CGROUPS", "").lower() in ("0", "off", "false", "no"):
        return None
    pid = os.getpid()
    if pid not in _DISCOVERY:
        _DISCOVERY[pid] = _discover()
    hierarchy = _DISCOVERY[pid]
    if hierarchy is None:
        return None
    path = os.path.join(hierarchy.parent, f"{PREFIX}{pid}-{job_id}")
    try:
        try:
            os.mkdir(path)
        except FileExistsError:  # this worker pid's earlier group, left behind: a recycled pid's
            JobGroup(hierarchy, path).remove()
            os.mkdir(path)
        if hierarchy.version == 2:
            settings = [("memory.max", memory), ("memory.swap.max", 0), ("memory.oom.group", 1)]
        else:
            settings = [("memory.limit_in_bytes", memory), ("memory.memsw.limit_in_bytes", memory)]
        # Only the first is a must: memory.swap.max and memsw exist only with swap accounting, and
        # without it there is no swap to limit; memory.oom.group is newer than the rest (Linux 4.19).
        if not _write(os.path.join(path, settings[0][0]), str(memory)):
            raise OSError(errno.EIO, f"cannot write {settings[0][0]}")
        for name, value in settings[1:]:
            _write(os.path.join(path, name), str(value))
    except OSError:
        try:
            os.rmdir(path)
        except OSError:
            pass
        return None
    return JobGroup(hierarchy, path)


def _discover() -> _Hierarchy | None:
    """Where this process may make job groups (see the module's text), or None."""
    own = _own_cgroups()
    mounts = _mounts()
    unified = _path(mounts.get("cgroup2"), own.get(""))
    if unified is not None:
        found = _delegated_v2(unified)
        if found is not None:
            return found
    home = _path(mounts.get("memory"), own.get("memory"))
    if home is not None and os.access(home, os.W_OK) and os.path.exists(os.path.join(home, "memory.limit_in_bytes")):
        return _Hierarchy(1, home, home)
    return None


def _path(mount: tuple[str, str] | None, cgroup: str | None) -> str | None:
    """The folder of `cgroup` (a path from /proc/self/cgroup) in a mount (its root, its mount point)."""
    if mount is None or cgroup is None:
        return None
    root, point = mount
    relative = os.path.relpath(cgroup, root)
    if relative == ".." or relative.startswith("../"):
        return None  # the mount shows another part of the hierarchy
    return os.path.normpath(os.path.join(point, relative))


def _delegated_v2(own: str) -> _Hierarchy | None:
    parent = os.path.dirname(own) if os.path.basename(own) == LEAF else own
    if "memory" not in _read(os.path.join(parent, "cgroup.controllers")).split() or not _is_delegated(parent):
        return None
    leaf = os.path.join(parent, LEAF)
    enabled = os.path.join(parent, "cgroup.subtree_control")
    for _ in range(5):  # a process forked meanwhile lands in `parent` and blocks the enabling: again
        if "memory" in _read(enabled).split():
            return _Hierarchy(2, parent, leaf)
        try:
            os.makedirs(leaf, exist_ok=True)
        except OSError:
            return None
        for pid in _read(os.path.join(parent, "cgroup.procs")).split():
            _write(os.path.join(leaf, "cgroup.procs"), pid)
        _write(enabled, "+memory")
    return None


def _is_delegated(path: str) -> bool:
    for name in ("trusted.delegate", "user.delegate"):
        try:
            if os.getxattr(path, name) == b"1":
                return True
        except (OSError, AttributeError):
            continue
    try:
        uid = os.geteuid()
        return uid != 0 and os.stat(os.path.join(path, "cgroup.subtree_control")).st_uid == uid
    except OSError:
        return False


def _own_cgroups() -> dict[str, str]:
    """This process's cgroup per controller ("" for v2) from /proc/self/cgroup."""
    found: dict[str, str] = {}
    for line in _read("/proc/self/cgroup").splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            for controller in parts[1].split(",") if parts[1] else [""]:
                found.setdefault(controller, parts[2])
    return found


def _mounts() -> dict[str, tuple[str, str]]:
    """The (root, mount point) of cgroup2 ("cgroup2") and of v1's memory controller ("memory")."""
    found: dict[str, tuple[str, str]] = {}
    for line in _read("/proc/self/mountinfo").splitlines():
        # "id parent major:minor root mount-point options [optional...] - fstype source super-options"
        before, _, after = line.partition(" - ")
        fields, tail = before.split(), after.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        root, point = (_unescape(field) for field in fields[3:5])
        if tail[0] == "cgroup2":
            found.setdefault("cgroup2", (root, point))
        elif tail[0] == "cgroup" and "memory" in tail[2].split(","):
            found.setdefault("memory", (root, point))
    return found


def _unescape(field: str) -> str:
    """mountinfo writes a space, tab, newline and backslash of a path as an octal escape."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return ""


def _write(path: str, text: str) -> bool:
    try:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
        return True
    except OSError:
        return False
