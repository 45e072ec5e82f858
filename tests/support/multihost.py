"""Several "hosts" on one shared spool, on this one machine (README "Running on several hosts").

Two pairs of mounts play two hosts' views of one shared file system:

- `gluster_pair`: one GlusterFS volume (one brick, `force` because the
  brick lives on the root file system) mounted twice with
  `mount -t glusterfs`; its clients share flocks, and inotify never sees the
  other client's writes.
- `bindfs_pair`: two `bindfs` views of one folder; a flock taken through
  one view is not seen through the other (checked by
  test_multihost.py::test_bindfs_views_do_not_share_flocks), like NFSv3
  clients without a lock manager.

`Host` runs a host's processes in their own UTS and PID namespaces
(`unshare --uts --pid --fork --mount-proc`), so host names and pids differ
as on real hosts, and the whole host can be SIGKILLed, SIGSTOPped and
SIGCONTed at once.

Outside CI a missing component (not root, no glusterd, no bindfs, no FUSE)
skips these tests with the reason; with $CI set they fail instead.
Everything started is torn down: mounts, the volume, and glusterd when the
fixture started it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid

import pytest


class Missing(Exception):
    """A component the several-host setup needs is not here (its text says which)."""


def require(condition: bool, what: str) -> None:
    if not condition:
        raise Missing(what)


def _required(setup):
    """Enter a setup in a fixture: skip outside CI, fail in CI, when a component is missing."""
    try:
        return setup.__enter__()
    except Missing as exc:
        message = f"several-host tests need {exc}"
        if os.environ.get("CI"):
            pytest.fail(f"{message} (required in CI)")
        pytest.skip(message)


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)


def _check(*args: str, timeout: float = 60) -> str:
    result = _run(*args, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {(result.stderr or result.stdout).strip()}")
    return result.stdout


def _require_basics() -> None:
    require(os.geteuid() == 0, "root (mounts and namespaces)")
    require(shutil.which("unshare") is not None, "unshare (util-linux)")
    require(os.path.exists("/dev/fuse"), "/dev/fuse")


def _mounted(path: str) -> bool:
    with open("/proc/self/mountinfo", encoding="utf-8") as handle:
        return any(line.split()[4] == path for line in handle)


def _unmount(path: str) -> None:
    if _mounted(path) and _run("umount", path).returncode != 0:
        _run("umount", "-l", path)


def _volume_host() -> str:
    """The name glusterd knows this machine by: its host name if it resolves, else 127.0.0.1."""
    name = socket.gethostname()
    try:
        socket.gethostbyname(name)
        return name
    except OSError:
        return "127.0.0.1"


def _glusterd_answers() -> bool:
    return _run("gluster", "--mode=script", "volume", "list", timeout=20).returncode == 0


@pytest.fixture(scope="session")
def gluster_pair():
    """(mount A, mount B): two GlusterFS clients of one fresh one-brick volume."""
    setup = gluster_volume()
    yield _required(setup)
    setup.__exit__(None, None, None)


@contextlib.contextmanager
def gluster_volume():
    """(mount A, mount B): two GlusterFS clients of one fresh one-brick volume, all removed on exit."""
    _require_basics()
    for tool in ("glusterd", "gluster", "mount.glusterfs"):
        require(shutil.which(tool) is not None or os.path.exists(f"/sbin/{tool}"),
                f"{tool} (Debian's glusterfs-server)")
    base = tempfile.mkdtemp(prefix="qc-gluster-")
    started = None
    if not _glusterd_answers():
        pidfile = os.path.join(base, "glusterd.pid")
        _check("glusterd", "-p", pidfile)
        deadline = time.monotonic() + 30
        while not _glusterd_answers():
            if time.monotonic() > deadline:
                raise RuntimeError("glusterd did not answer within 30 s")
            time.sleep(0.2)
        with open(pidfile, encoding="ascii") as handle:
            started = int(handle.read().strip())
    volume = f"qctest{os.getpid()}"
    brick = os.path.join(base, "brick")
    mounts = [os.path.join(base, "hostA"), os.path.join(base, "hostB")]
    for path in (brick, *mounts):
        os.makedirs(path)
    created = False
    try:
        host = _volume_host()
        _check("gluster", "--mode=script", "volume", "create", volume, f"{host}:{brick}", "force")
        created = True
        _check("gluster", "--mode=script", "volume", "start", volume)
        for path in mounts:
            _check("mount", "-t", "glusterfs", f"{host}:/{volume}", path)
        yield tuple(mounts)
    finally:
        for path in mounts:
            _unmount(path)
        if created:
            _run("gluster", "--mode=script", "volume", "stop", volume, "force")
            _run("gluster", "--mode=script", "volume", "delete", volume)
        if started is not None:
            _stop_glusterd(started)
        shutil.rmtree(base, ignore_errors=True)


def _stop_glusterd(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="session")
def bindfs_pair():
    """(view A, view B): two bindfs views of one folder; flocks do not cross between them."""
    setup = bindfs_views()
    yield _required(setup)
    setup.__exit__(None, None, None)


@pytest.fixture
def uncached_bindfs_pair():
    """Like bindfs_pair, but the kernel keeps no attributes: every fstat asks bindfs, at once."""
    setup = bindfs_views("-o", "attr_timeout=0,entry_timeout=0")
    yield _required(setup)
    setup.__exit__(None, None, None)


@contextlib.contextmanager
def bindfs_views(*options: str):
    """(view A, view B): two bindfs views of one folder, unmounted and removed on exit."""
    _require_basics()
    require(shutil.which("bindfs") is not None, "bindfs (Debian's bindfs)")
    base = tempfile.mkdtemp(prefix="qc-bindfs-")
    source = os.path.join(base, "source")
    views = [os.path.join(base, "hostA"), os.path.join(base, "hostB")]
    for path in (source, *views):
        os.makedirs(path)
    try:
        for view in views:
            _check("bindfs", *options, source, view)
        yield tuple(views)
    finally:
        for view in views:
            _unmount(view)
        shutil.rmtree(base, ignore_errors=True)


def spool_pair(pair: tuple[str, str]) -> tuple[str, str]:
    """A fresh spool folder, as each of the two hosts sees it."""
    name = f"spool-{uuid.uuid4().hex[:8]}"
    return os.path.join(pair[0], name), os.path.join(pair[1], name)


class Host:
    """One "host": its own host name and pid namespace, its own view of the spool."""

    def __init__(self, name: str, spool_path: str):
        self.name = name
        self.spool_path = spool_path
        self.procs: list[subprocess.Popen] = []

    def command(self, *args: str) -> list[str]:
        return ["unshare", "--uts", "--pid", "--fork", "--kill-child", "--mount-proc",
                "sh", "-c", 'hostname "$0" && exec "$@"', self.name,
                sys.executable, "-m", "queuectl", "--spool", self.spool_path, *args]

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """A queuectl command on this host, to its end."""
        return subprocess.run(self.command(*args), capture_output=True, text=True, timeout=timeout)

    def start(self, *args: str) -> subprocess.Popen:
        """A long-lived queuectl command on this host (`worker start ...`), its stderr kept in a file."""
        log = tempfile.TemporaryFile()
        proc = subprocess.Popen(self.command(*args), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        proc.log = log  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def output(self, proc: subprocess.Popen) -> str:
        proc.log.seek(0)  # type: ignore[attr-defined]
        return proc.log.read().decode("utf-8", "replace")  # type: ignore[attr-defined]

    def pids(self) -> list[int]:
        """Every process of this host, as pids of the outer namespace (its namespaces' init included)."""
        namespaces = set()
        for proc in self.procs:
            init = _init_of(proc.pid)
            if init is not None:
                try:
                    namespaces.add(os.readlink(f"/proc/{init}/ns/pid"))
                except OSError:
                    pass
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if os.readlink(f"/proc/{entry}/ns/pid") in namespaces:
                        found.append(int(entry))
                except OSError:
                    continue
        return found

    def signal_all(self, signum: int) -> None:
        """`signum` to every process of the host, again until no new process appeared meanwhile."""
        done: set[int] = set()
        while True:
            todo = [pid for pid in self.pids() if pid not in done]
            if not todo:
                return
            for pid in todo:
                try:
                    os.kill(pid, signum)
                except ProcessLookupError:
                    pass
                done.add(pid)

    def kill(self) -> None:
        """SIGKILL every process of the host at once: the host died."""
        self.signal_all(signal.SIGSTOP)  # nobody forks or finishes a move while the rest is killed
        self.signal_all(signal.SIGKILL)
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass

    def close(self) -> None:
        self.kill()
        self.procs.clear()


def _init_of(unshare_pid: int) -> int | None:
    """The pid (outside) of the namespace's init: the child `unshare --fork` made."""
    try:
        with open(f"/proc/{unshare_pid}/task/{unshare_pid}/children", encoding="ascii") as handle:
            children = handle.read().split()
    except OSError:
        return None
    return int(children[0]) if children else None


@pytest.fixture
def hosts():
    """make(name, spool_path) -> Host; every host's processes are SIGKILLed at the end."""
    made: list[Host] = []

    def make(name: str, spool_path: str) -> Host:
        host = Host(name, spool_path)
        made.append(host)
        return host
    yield make
    for host in made:
        host.close()
