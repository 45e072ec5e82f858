"""Several hosts on one shared spool (README "Running on several hosts").

Each test runs two "hosts" (tests/multihost.py: own host name and pid
namespace each) on the two mounts of a GlusterFS volume or on two bindfs
views of one folder. Required in CI, skipped elsewhere when GlusterFS,
bindfs or root is missing.
"""

from __future__ import annotations

import fcntl
import os

import pytest

from multihost import bindfs_pair, gluster_pair, hosts, spool_pair  # noqa: F401 (fixtures)


def _flock_crosses(pair) -> bool:
    a, b = (os.path.join(view, "flock-probe") for view in pair)
    with open(a, "w") as mine:
        fcntl.flock(mine, fcntl.LOCK_EX)
        with open(b) as theirs:
            try:
                fcntl.flock(theirs, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            return False


def test_bindfs_views_do_not_share_flocks(bindfs_pair):
    """The fact the bindfs pair stands for: one view's flock is invisible through the other."""
    assert not _flock_crosses(bindfs_pair)


def test_gluster_clients_share_flocks(gluster_pair):
    assert _flock_crosses(gluster_pair)


def test_hosts_have_their_own_names_and_pids(gluster_pair, hosts):
    path_a, path_b = spool_pair(gluster_pair)
    a, b = hosts("hostA", path_a), hosts("hostB", path_b)
    out = a.run("status")
    assert out.returncode == 0, out.stderr
    probe = ["unshare", "--uts", "--pid", "--fork", "--mount-proc", "sh", "-c", 'hostname "$0" && hostname && echo $$', "hostB"]
    import subprocess
    result = subprocess.run(probe, capture_output=True, text=True)
    assert result.stdout.split() == ["hostB", "1"]
