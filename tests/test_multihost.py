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


# -- workers on two hosts -------------------------------------------------------

import json
import signal
import subprocess
import sys
import time

from conftest import wait_until
from queuectl import Spool
from workers_util import read_lines

PAIRS = ["gluster_pair", "bindfs_pair"]
LEASE = 3  # lease_timeout in these tests: a dead host's jobs come back within LEASE + one sweep


@pytest.fixture(params=PAIRS)
def two_hosts(request, hosts, tmp_path):
    """(host A, host B, Spool as host A sees it) on a fresh spool of the GlusterFS or the bindfs pair."""
    path_a, path_b = spool_pair(request.getfixturevalue(request.param))
    spool = Spool(path_a)
    for key, value in {"lease_timeout": LEASE, "recovery_interval": 0.5, "kill_grace": 0.5,
                       "durable": "false", "backoff_base": 1}.items():
        spool.set_config(key, str(value))
    host_a, host_b = hosts("hostA", path_a), hosts("hostB", path_b)
    host_a.pair = host_b.pair = request.param
    return host_a, host_b, spool


def _runs(path) -> list[str]:
    return read_lines(path)


def _states(spool, ids):
    return {job_id: spool.find(job_id) for job_id in ids}


def _all_finished(spool, ids):
    return all(spool.find(job_id) in ("completed", "dead") for job_id in ids)


def _workers_of(spool, host):
    return [w for w in json.loads(subprocess.run(
        [sys.executable, "-m", "queuectl", "--spool", spool.root, "worker", "list", "--json"],
        capture_output=True, text=True, check=True).stdout) if w.get("host") == host]


def _no_tracebacks(*pairs):
    for host, proc in pairs:
        assert "Traceback" not in host.output(proc), host.output(proc)
        assert "restarting" not in host.output(proc), host.output(proc)


def _lease_beats(spool, host_name) -> int:
    """How many times the workers of `host_name` beat their leases, summed (they only grow)."""
    total = 0
    for entry in os.listdir(spool.dir("workers")):
        if entry.endswith(".lease") and entry.startswith(host_name):
            try:
                with open(os.path.join(spool.dir("workers"), entry)) as handle:
                    total += int(handle.read().split()[1])
            except (OSError, ValueError, IndexError):
                pass
    return total


def test_both_hosts_enqueue_and_run_every_job_exactly_once(two_hosts, tmp_path):
    host_a, host_b, spool = two_hosts
    runs = tmp_path / "runs"
    command = f'echo "$QUEUECTL_JOB_ID" >> {runs}'
    workers = [(host_a, host_a.start("worker", "start", "--count", "2")),
               (host_b, host_b.start("worker", "start", "--count", "2"))]
    wait_until(lambda: len(_workers_of(spool, "hostA")) == 2 and len(_workers_of(spool, "hostB")) == 2,
               timeout=30, message="two workers on each host")
    assert {w["mode"] for w in _workers_of(spool, "hostA") + _workers_of(spool, "hostB")} == {"shared"}
    ids = []
    spool_b = Spool(host_b.spool_path)
    for round_ in range(3):  # both hosts enqueue while the workers of both claim
        ids += [job["id"] for job in spool.enqueue_many([{"command": command}] * 10)]
        ids += [job["id"] for job in spool_b.enqueue_many([{"command": command}] * 10)]
    wait_until(lambda: _all_finished(spool, ids), timeout=60, message="every job finished")
    assert set(_states(spool, ids).values()) == {"completed"}
    assert sorted(_runs(runs)) == sorted(ids)  # each exactly once
    _no_tracebacks(*workers)


def test_a_job_enqueued_through_one_host_starts_on_the_other(two_hosts, tmp_path):
    host_a, host_b, spool = two_hosts
    spool.set_config("scan_interval", "300")  # only the wake-ups can find it in time
    worker = host_a.start("worker", "start")
    wait_until(lambda: _workers_of(spool, "hostA"), timeout=30, message="host A's worker")
    job_id = "through-host-b"
    done = host_b.run("enqueue", "--id", job_id, "true")
    assert done.returncode == 0, done.stderr
    # Far below the safety scan: a wake-up found it.
    wait_until(lambda: spool.find(job_id) == "completed", timeout=10, message="the job to run on host A")
    assert spool.get(job_id)["worker"].startswith("hostA")
    _no_tracebacks((host_a, worker))
