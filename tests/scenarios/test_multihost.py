"""Several hosts on one shared spool (README "Running on several hosts").

Each test runs two "hosts" (tests/multihost.py: own host name and pid
namespace each) on the two mounts of a GlusterFS volume or on two bindfs
views of one folder. Required in CI, skipped elsewhere when GlusterFS,
bindfs or root is missing.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from support import most_in_a_window, multihost, schedule_jobs, slot_times, wait_until
from support.multihost import spool_pair
from support.workers import read_lines

from queuectl import Spool
from queuectl.core import fsops, lease, lifecycle
from queuectl.core.job import parse_time
from queuectl.core.outcome import Outcome
from queuectl.core.spool import LockedJob
from queuectl.features import schedules

# The several-host fixtures (tests/multihost.py), used by the tests below by name.
gluster_pair = multihost.gluster_pair
bindfs_pair = multihost.bindfs_pair
hosts = multihost.hosts
uncached_bindfs_pair = multihost.uncached_bindfs_pair


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


def test_a_file_the_other_host_moves_just_after_an_open_is_gone_not_an_error(uncached_bindfs_pair, monkeypatch):
    """bindfs answers fstat by path: an open file the other view renamed gives ENOENT there.

    Every reader of a job by name (Spool.read, Spool.lock) opens it, then
    fstats it; the other host's move is made to land between the two. With
    the kernel's attribute cache on, the same happens once the cache expires.
    (GlusterFS answers by the descriptor: the reader gets the job's bytes.)
    """
    path_a, path_b = spool_pair(uncached_bindfs_pair)
    spool, other = Spool(path_a), Spool(path_b)
    job_id = spool.enqueue({"command": "true"})["id"]
    name = job_id + ".json"
    opened = fsops.open_nofollow

    def open_then_moved_by_the_other_host(path):
        fd = opened(path)
        os.rename(os.path.join(other.dir("pending"), name), os.path.join(other.dir("processing"), name))
        return fd

    for reader in (spool.read, spool.lock):
        monkeypatch.setattr(fsops, "open_nofollow", open_then_moved_by_the_other_host)
        assert reader("pending", name) is None
        monkeypatch.setattr(fsops, "open_nofollow", opened)
        assert spool.read("processing", name)["id"] == job_id
        os.rename(os.path.join(other.dir("processing"), name), os.path.join(other.dir("pending"), name))


def test_a_job_the_other_host_replaced_under_its_name_is_no_longer_owned(uncached_bindfs_pair):
    """On bindfs an fstat of the held file reports the file now under its name: ownership is
    judged against the inode taken at the lock (LockedJob.inode), not against an fstat."""
    path_a, path_b = spool_pair(uncached_bindfs_pair)
    spool, other = Spool(path_a), Spool(path_b)
    spool.shared = True  # as a worker sets it on a FUSE spool (fstype.mode)
    spool.lease = lease.Lease(spool, "me-1", 30)
    job_id = spool.enqueue({"command": "true"})["id"]
    held = lifecycle.claim(spool, "pending", job_id, "me-1", time.time())
    assert held is not None and lifecycle.still_owned(spool, held)
    # The other host's recovery, then its claim: a new file under the same name.
    path = other.path("processing", job_id)
    with open(path, "rb") as handle:
        data = handle.read()
    with open(path + ".new", "wb") as handle:
        handle.write(data.replace(b'"attempts": 1', b'"attempts": 2'))
    os.rename(path + ".new", path)
    before = open(path, "rb").read()
    assert not lifecycle.still_owned(spool, held)
    now = time.time()
    assert lifecycle.settle(spool, held, Outcome(exit_code=0, started=now, finished=now), None) == "lost"
    assert open(path, "rb").read() == before
    held.unlock()


def test_a_drop_in_the_other_host_adopted_after_this_ones_lock_stays_queued(bindfs_pair, monkeypatch):
    """The other host adopts a drop-in between this host's lock and its move into adopting/: the
    move then carries that host's result (the id's own job) along. It goes back into pending/ at
    once, not a lease later at the sweep, and the job stays its id's own, ready to run."""
    path_a, path_b = spool_pair(bindfs_pair)
    spool, other = Spool(path_a), Spool(path_b)
    spool.shared = other.shared = True  # as a worker sets them on a FUSE spool (fstype.mode)
    spool.enqueue({"id": "first", "command": "true"})  # makes the spool's folders and text markers
    temp = os.path.join(path_b, "tmp", "hand")
    with open(temp, "w") as handle:
        json.dump({"command": "true"}, handle)
    os.rename(temp, os.path.join(path_b, "pending", "dropped.json"))
    locked = spool.lock

    def locked_then_adopted_by_the_other_host(state, name):
        held = locked(state, name)
        if state == "pending":
            assert lifecycle.adopt(other, name, complete=True) == name
        return held

    monkeypatch.setattr(spool, "lock", locked_then_adopted_by_the_other_host)
    assert lifecycle.adopt(spool, "dropped.json", complete=True) is None
    monkeypatch.setattr(spool, "lock", locked)
    assert os.listdir(other.dir("adopting")) == []
    assert sorted(os.listdir(other.dir("pending"))) == ["dropped.json", "first.json"]
    assert other.get("dropped")["state"] == "pending"
    held = lifecycle.claim(other, "pending", "dropped", "me-1", time.time() + 60)
    assert isinstance(held, LockedJob)  # its id's own job, claimed: not left as a drop-in
    held.unlock()


@pytest.mark.parametrize("lapsed", [False, True])
def test_a_claim_whose_move_took_the_other_hosts_adopted_job_puts_it_back(bindfs_pair, monkeypatch, lapsed):
    """A worker locks a drop-in while the other host adopts it, after the id's marker has named the
    drop-in and before it names the rewrite: the worker takes the file for the id's own job and
    claims it. Its move takes what the name leads to by then, the other host's rewrite. That job
    is not the worker's: it goes back into pending/ at once (not a lease later at recovery) and runs.
    A worker whose lease has lapsed cannot tell that file from another worker's claim: it leaves it."""
    path_a, path_b = spool_pair(bindfs_pair)
    spool, other = Spool(path_a), Spool(path_b)
    spool.shared = other.shared = True  # as a worker sets them on a FUSE spool (fstype.mode)
    spool.enqueue({"id": "first", "command": "true"})  # makes the spool's folders and text markers
    spool.lease = lease.Lease(spool, "me-1", 30)
    if not lapsed:
        spool.lease.beat()  # a worker's lease, beaten a moment ago
    temp = os.path.join(path_b, "tmp", "hand")
    with open(temp, "w") as handle:
        json.dump({"command": "true"}, handle)
    os.rename(temp, os.path.join(path_b, "pending", "dropped.json"))
    held_ids = spool.id_holds
    adopted = []

    def marker_read_mid_adoption(job_id, inode):
        if job_id != "dropped" or adopted:
            return held_ids(job_id, inode)
        adopted.append(lifecycle.adopt(other, "dropped.json", complete=True))
        return True  # what the marker said while the other host held the drop-in in adopting/

    monkeypatch.setattr(spool, "id_holds", marker_read_mid_adoption)
    assert lifecycle.claim(spool, "pending", "dropped", "me-1", time.time() + 60) is None
    monkeypatch.setattr(spool, "id_holds", held_ids)
    assert adopted == ["dropped.json"]
    if lapsed:
        assert os.listdir(other.dir("processing")) == ["dropped.json"]  # recovery's, a lease later
        return
    assert os.listdir(other.dir("processing")) == []
    assert sorted(os.listdir(other.dir("pending"))) == ["dropped.json", "first.json"]
    assert other.get("dropped")["state"] == "pending" and other.get("dropped")["attempts"] == 0
    held = lifecycle.claim(other, "pending", "dropped", "me-2", time.time() + 60)
    assert isinstance(held, LockedJob)  # its id's own job, claimed
    held.unlock()


def test_hosts_have_their_own_names_and_pids(gluster_pair, hosts):
    """What the pair stands for: each Host's worker records its own host name, and a pid of its own
    namespace (the two may be equal: pids are only unique per host)."""
    path_a, path_b = spool_pair(gluster_pair)
    for name, path in (("hostA", path_a), ("hostB", path_b)):
        hosts(name, path).start("worker", "start", "--quiet")
    spool = Spool(path_a)
    wait_until(lambda: len(_workers_of(spool, "hostA")) == 1 and len(_workers_of(spool, "hostB")) == 1,
               timeout=30, message="a worker on each host")
    for name in ("hostA", "hostB"):
        pid = _workers_of(spool, name)[0]["pid"]
        assert pid < 10, pid  # the namespace's first processes: unshare's sh exec'd queuectl as pid 1


# -- workers on two hosts -------------------------------------------------------

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


def _unreadable(job: dict) -> str:
    raise AssertionError(f"a job file read as no job: {job}")


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
    # Long enough that the other host's recovery sweeps pass over running jobs.
    command = f'sleep 0.3; echo "$QUEUECTL_JOB_ID" >> {runs}'
    workers = [(host_a, host_a.start("worker", "start", "--count", "2")),
               (host_b, host_b.start("worker", "start", "--count", "2"))]
    wait_until(lambda: len(_workers_of(spool, "hostA")) == 2 and len(_workers_of(spool, "hostB")) == 2,
               timeout=30, message="two workers on each host")
    assert {w["mode"] for w in _workers_of(spool, "hostA") + _workers_of(spool, "hostB")} == {"shared"}
    status = host_a.run("status").stdout
    assert "workers     4 live (hostA: 2 shared, hostB: 2 shared)" in status.splitlines(), status
    doctor = host_b.run("doctor").stdout.splitlines()
    assert sorted(line.split(" on ")[1] for line in doctor if line.startswith("worker ")) == [
        "hostA: shared mode"] * 2 + ["hostB: shared mode"] * 2, doctor
    ids = []
    spool_b = Spool(host_b.spool_path)
    for _ in range(3):  # both hosts enqueue while the workers of both claim
        ids += [job["id"] for job in spool.enqueue_many([{"command": command}] * 10)]
        ids += [job["id"] for job in spool_b.enqueue_many([{"command": command}] * 10)]
    wait_until(lambda: _all_finished(spool, ids), timeout=60, message="every job finished")
    assert set(_states(spool, ids).values()) == {"completed"}
    assert sorted(_runs(runs)) == sorted(ids)  # each exactly once
    _no_tracebacks(*workers)


def test_files_dropped_in_through_both_hosts_each_run_once(two_hosts, tmp_path):
    """Hand-made files in pending/ (no marker), adopted while the workers of both hosts look at them:
    every one runs exactly once and ends completed, none is set aside as a duplicate of itself."""
    host_a, host_b, spool = two_hosts
    runs = tmp_path / "runs"
    workers = [(host_a, host_a.start("worker", "start", "--count", "2")),
               (host_b, host_b.start("worker", "start", "--count", "2"))]
    wait_until(lambda: len(_workers_of(spool, "hostA")) == 2 and len(_workers_of(spool, "hostB")) == 2,
               timeout=30, message="two workers on each host")
    ids = []
    for n in range(120):
        job_id = f"dropped-{n}"
        root = host_a.spool_path if n % 2 else host_b.spool_path
        temp = os.path.join(root, "tmp", f"hand-{n}")
        with open(temp, "w") as handle:
            json.dump({"id": job_id, "command": f'echo "$QUEUECTL_JOB_ID" >> {runs}'}, handle)
        os.rename(temp, os.path.join(root, "pending", f"{job_id}.json"))
        ids.append(job_id)
    wait_until(lambda: _all_finished(spool, ids), timeout=60,
               message="every dropped-in job finished",
               explain=lambda: {i: s for i, s in _states(spool, ids).items() if s != "completed"})
    assert set(_states(spool, ids).values()) == {"completed"}, _states(spool, ids)
    assert sorted(_runs(runs)) == sorted(ids)  # each exactly once
    assert os.listdir(spool.dir("dead")) == []
    _no_tracebacks(*workers)


def test_a_drop_in_is_renamed_after_its_id_or_its_stem_on_a_shared_spool(two_hosts, tmp_path):
    """SPEC 3 through adopting/: no id takes the file's stem; an id names the file."""
    host_a, host_b, spool = two_hosts
    runs = tmp_path / "runs"
    command = f'echo "$QUEUECTL_JOB_ID" >> {runs}'
    for name, job in (("from-stem.json", {"command": command}), ("other-name.json", {"id": "by-id", "command": command})):
        temp = os.path.join(host_b.spool_path, "tmp", name)
        with open(temp, "w") as handle:
            json.dump(job, handle)
        os.rename(temp, os.path.join(host_b.spool_path, "pending", name))
    workers = [(host_a, host_a.start("worker", "start")), (host_b, host_b.start("worker", "start"))]
    wait_until(lambda: _all_finished(spool, ["from-stem", "by-id"]), timeout=30, message="both drop-ins to run",
               explain=lambda: _states(spool, ["from-stem", "by-id"]))
    assert _states(spool, ["from-stem", "by-id"]) == {"from-stem": "completed", "by-id": "completed"}
    assert sorted(_runs(runs)) == ["by-id", "from-stem"]
    # A listing, not a look at the name: a GlusterFS client may answer lstat from its cache of names.
    assert "other-name.json" not in os.listdir(spool.dir("pending")) and os.listdir(spool.dir("dead")) == []
    _no_tracebacks(*workers)


def test_copies_of_a_finished_job_in_its_own_form_go_to_dead_unrun_through_both_hosts(two_hosts, tmp_path):
    """A file in queuectl's stored form on a taken id: every worker's claim leaves it to adoption
    (lifecycle.DROP_IN), and one adopter sets it aside; the finished job stays as it was."""
    host_a, host_b, spool = two_hosts
    runs = tmp_path / "runs"
    workers = [(host_a, host_a.start("worker", "start", "--count", "2")),
               (host_b, host_b.start("worker", "start", "--count", "2"))]
    spool.enqueue({"id": "kept", "command": "true"})
    wait_until(lambda: spool.find("kept") == "completed", timeout=30, message="the job to complete")
    original = spool.get("kept")
    for root in (host_a.spool_path, host_b.spool_path):
        temp = os.path.join(root, "tmp", "copy")
        with open(temp, "w") as handle:
            json.dump(dict(original, state="pending", command=f'echo copy >> {runs}', finished_at=None), handle)
        os.rename(temp, os.path.join(root, "pending", "kept.json"))
        # A listing, not a look at the name: a GlusterFS client may keep a name it saw in its cache.
        wait_until(lambda: "kept.json" not in os.listdir(spool.dir("pending")), timeout=30,
                   message="the copy to leave pending/",
                   explain=lambda: {folder: sorted(os.listdir(os.path.join(spool.root, folder)))
                                    for folder in ("pending", "adopting", "dead", "ids")})

    def dead():
        return [job for job in spool.iter_jobs("dead") if job.get("original_name") == "kept.json"]
    wait_until(lambda: len(dead()) == 2, timeout=30, message="both copies in dead/", explain=dead)
    assert all("duplicate id 'kept'" in job["last_error"] for job in dead()), dead()
    # Read from completed/, not by id: a GlusterFS client that wrote a copy may lead its old name
    # in pending/ to the copy's file, now in dead/, for as long as it keeps the name
    # (docs/guide/several-hosts.md, "A name another host set aside").
    assert spool.read("completed", "kept.json") == original
    assert sorted(os.listdir(spool.dir("pending"))) == [] and not runs.exists()
    _no_tracebacks(*workers)


def test_a_drop_in_whose_adopter_died_in_adopting_comes_back_and_runs(two_hosts, tmp_path):
    """A crash after a drop-in was taken into adopting/ leaves it there: once it has not changed
    for a lease, recovery puts it back into pending/, and it runs."""
    host_a, host_b, spool = two_hosts
    runs = tmp_path / "runs"
    os.makedirs(spool.dir("adopting"), exist_ok=True)  # made by the first adoption
    left = os.path.join(spool.dir("adopting"), "left-behind.json")
    with open(left, "w") as handle:
        json.dump({"command": f'echo "$QUEUECTL_JOB_ID" >> {runs}'}, handle)
    worker = host_b.start("worker", "start")
    wait_until(lambda: spool.find("left-behind") == "completed", timeout=30,
               message="the drop-in left in adopting/ to run")
    assert _runs(runs) == ["left-behind"]
    assert os.listdir(spool.dir("adopting")) == []
    _no_tracebacks((host_b, worker))


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
    # A cancel and a stop asked on host B reach host A (its worker polls workers/).
    long_id = "cancelled-through-host-b"
    assert host_b.run("enqueue", "--id", long_id, "sleep 60").returncode == 0
    wait_until(lambda: spool.find(long_id) == "processing", timeout=10, message="host A to start the long job")
    assert host_b.run("cancel", long_id).returncode == 0
    wait_until(lambda: spool.find(long_id) == "dead", timeout=10, message="the cancel to reach host A")
    assert host_b.run("worker", "stop", "--no-wait").returncode == 0
    wait_until(lambda: worker.poll() is not None, timeout=10, message="the stop to reach host A")
    _no_tracebacks((host_a, worker))


def _slow_first_attempt(runs, steps: int) -> str:
    """Attempt 1 takes `steps` tenths of a second of its own running time (not wall time: a paused host's
    command resumes where it was), later attempts none; each run that ends appends "<id> <attempt>"."""
    return (f'if [ "$QUEUECTL_ATTEMPT" = 1 ]; then i=0; while [ $i -lt {steps} ]; do sleep 0.1; i=$((i+1)); done; fi; '
            f'echo "$QUEUECTL_JOB_ID $QUEUECTL_ATTEMPT" >> {runs}')


def _running_on(spool, host_name, ids):
    jobs = [spool.read("processing", job_id + ".json") for job_id in ids]
    return all(job and str(job.get("worker", "")).startswith(host_name) for job in jobs)


def test_a_dead_hosts_jobs_come_back_and_only_they_run_again(two_hosts, tmp_path):
    host_a, host_b, spool = two_hosts
    runs = tmp_path / "runs"
    host_a.start("worker", "start", "--count", "2")
    wait_until(lambda: len(_workers_of(spool, "hostA")) == 2, timeout=30, message="host A's workers")
    killed = [job["id"] for job in spool.enqueue_many([{"command": _slow_first_attempt(runs, 600)}] * 2)]
    wait_until(lambda: _running_on(spool, "hostA", killed), timeout=30, message="host A to run both jobs")
    b_workers = host_b.start("worker", "start", "--count", "2")
    wait_until(lambda: len(_workers_of(spool, "hostB")) == 2, timeout=30, message="host B's workers")
    others = [job["id"] for job in spool.enqueue_many([{"command": _slow_first_attempt(runs, 3)}] * 6)]
    # Host B sweeps for dead workers all along; host A lives: its jobs stay its own
    # for longer than a lease (B's leases beat 6 times per lease_timeout).
    start = _lease_beats(spool, "hostB")
    wait_until(lambda: _lease_beats(spool, "hostB") >= start + 2 * 6 * 2, timeout=30, message="two leases' time")
    assert _running_on(spool, "hostA", killed), "a live host's job was recovered"
    host_a.kill()
    wait_until(lambda: _all_finished(spool, killed + others), timeout=LEASE + 30, message="every job finished")
    for job_id in killed:
        job = spool.get(job_id)
        assert job["state"] == "completed" and job["attempts"] == 2, job
        assert "died" in job["history"][0]["error"] and job["worker"].startswith("hostB")
    # Only the killed runs ran again: every other job ran once, and the killed ones ended once (attempt 2).
    assert sorted(_runs(runs)) == sorted([f"{job_id} 1" for job_id in others] + [f"{job_id} 2" for job_id in killed])
    assert spool.counts()["processing"] == 0
    _no_tracebacks((host_b, b_workers))


def test_a_host_paused_past_its_lease_never_settles_over_the_recovery(two_hosts, tmp_path):
    host_a, host_b, spool = two_hosts
    runs = tmp_path / "runs"
    a_workers = host_a.start("worker", "start")
    wait_until(lambda: _workers_of(spool, "hostA"), timeout=30, message="host A's worker")
    job_id = spool.enqueue({"command": _slow_first_attempt(runs, 30)})["id"]
    wait_until(lambda: _running_on(spool, "hostA", [job_id]), timeout=30, message="host A to run the job")
    b_workers = host_b.start("worker", "start")
    wait_until(lambda: _workers_of(spool, "hostB"), timeout=30, message="host B's worker")
    host_a.signal_all(signal.SIGSTOP)
    try:
        if host_a.pair == "bindfs_pair":
            # No shared flocks: host B judges A by its lease alone, and takes the job back.
            wait_until(lambda: spool.find(job_id) == "completed", timeout=LEASE + 30, message="host B to rerun it")
        else:
            # GlusterFS: A's flock on the job reaches B, so a paused owner keeps its job.
            start = _lease_beats(spool, "hostB")
            wait_until(lambda: _lease_beats(spool, "hostB") >= start + 2 * 6, timeout=30, message="two leases' time")
            assert spool.find(job_id) == "processing"
    finally:
        host_a.signal_all(signal.SIGCONT)
    if host_a.pair == "bindfs_pair":
        wait_until(lambda: "outcome is dropped" in host_a.output(a_workers), timeout=30,
                   message="host A to drop its stale run")
        job = spool.get(job_id)
        assert job["attempts"] == 2 and job["worker"].startswith("hostB"), job
        expected = [f"{job_id} 2"]
    else:
        wait_until(lambda: spool.find(job_id) == "completed", timeout=30, message="host A to finish its job")
        expected = [f"{job_id} 1"]
    # Host A's copy of the run was killed, not finished: one line, from the run that counts.
    stop_all = host_b.run("worker", "stop")
    assert stop_all.returncode == 0, stop_all.stderr
    wait_until(lambda: a_workers.poll() is not None, timeout=30, message="host A's worker to exit")
    assert _runs(runs) == expected
    assert spool.get(job_id)["state"] == "completed"
    _no_tracebacks((host_a, a_workers), (host_b, b_workers))


def test_both_hosts_enqueue_every_one_second_slot_of_a_schedule_exactly_once(two_hosts, tmp_path):
    """Issue 14 on two hosts: 2 workers per host sweep one `--every 1s` schedule for 12 slots."""
    host_a, host_b, spool = two_hosts
    runs = tmp_path / "runs"
    window = 12
    # Each run records its job id and the host it ran on; 2 s per run is more than one
    # host's two workers keep up with, so workers are busy (and sweep during runs) and
    # both hosts run slots.
    command = f'sleep 2; echo "$QUEUECTL_JOB_ID $(hostname)" >> {runs}'
    workers = [(host_a, host_a.start("worker", "start", "--count", "2")),
               (host_b, host_b.start("worker", "start", "--count", "2"))]
    wait_until(lambda: len(_workers_of(spool, "hostA")) == 2 and len(_workers_of(spool, "hostB")) == 2,
               timeout=30, message="two workers on each host")
    added = host_a.run("schedule", "add", "tick", "--every", "1s", command)
    assert added.returncode == 0, added.stderr
    created = int(parse_time(schedules.get(spool, "tick")["created_at"]))

    def window_jobs():
        return {job_id: job for job_id, job in schedule_jobs(spool, "tick").items()
                if parse_time(job.get("slot") or _unreadable(job)) <= created + window}

    first = wait_until(lambda: slot_times(schedule_jobs(spool, "tick"))[:1], timeout=30, message="the first slot")[0]
    assert first == created + 1  # the first slot after the schedule was added: none skipped at the start
    last = created + window
    wait_until(lambda: len(window_jobs()) >= window or time.time() > last + 20, timeout=60,
               message=f"{window} slots")
    wait_until(lambda: all(job["state"] == "completed" for job in window_jobs().values()), timeout=30,
               message="the window's jobs to finish")
    jobs = window_jobs()
    directory = schedules.fired_dir(spool, "tick")
    claimers = {name: schedules._owner_token(os.path.join(directory, name)) for name in
                schedules._slot_names(directory) if schedules.slot_time(name) <= last}
    # Every slot once, none skipped while the workers ran, each job's id derived from its slot.
    assert slot_times(jobs) == list(range(first, last + 1)), claimers
    assert sorted(jobs) == [schedules.job_id("tick", slot) for slot in range(first, last + 1)]
    assert all(job["schedule"] == "tick" and not job.get("catch_up") for job in jobs.values())
    assert len(claimers) == window and all(claimers.values()), claimers

    def in_two_folders():
        listed = {state: set(os.listdir(spool.dir(state)))
                  for state in ("pending", "processing", "completed", "failed", "dead")}
        return {job_id: found for job_id in jobs if (found := [
            state for state, names in listed.items() if job_id + ".json" in names]) != ["completed"]}
    # A move seen half done (a link, then an unlink) settles. Asked of the folders' listings, which
    # ask the servers: this client may go on leading processing/<id>.json, a name it looked up, to
    # the settled file, which lives on in completed/ (docs/guide/several-hosts.md, "A name another
    # host set aside").
    wait_until(lambda: not in_two_folders(), timeout=10, message="each job in completed/ alone")
    # Each ran exactly once. (Which host ran which is the workers' race, not a promise: not asserted.)
    ran = [line.split() for line in _runs(runs)]
    in_window = [(job_id, host) for job_id, host in ran if job_id in jobs]
    assert sorted(job_id for job_id, _ in in_window) == sorted(jobs), (in_window, claimers)
    _no_tracebacks(*workers)


# -- rates and resources held across hosts (docs/guide/workflows.md "Rate limits", docs/guide/resources.md) --

def test_a_group_rate_holds_across_hosts(two_hosts):
    host_a, host_b, spool = two_hosts
    assert host_a.run("group", "set", "api", "--rate", "5/2s").returncode == 0
    ids = [job["id"] for job in spool.enqueue_many([{"command": "true", "group": "api"}] * 40)]
    workers = [(host_a, host_a.start("worker", "start", "--count", "2")),
               (host_b, host_b.start("worker", "start", "--count", "2"))]
    wait_until(lambda: _all_finished(spool, ids), timeout=120, message="every job finished")
    assert set(_states(spool, ids).values()) == {"completed"}
    starts = sorted(parse_time(spool.get(job_id)["started_at"]) for job_id in ids)
    assert most_in_a_window(starts, 2.0) <= 5
    _no_tracebacks(*workers)


def test_each_host_gives_out_only_its_own_indexes_and_never_one_twice(two_hosts, tmp_path):
    host_a, host_b, spool = two_hosts
    marks = tmp_path / "marks"
    marks.mkdir()
    for host in (host_a, host_b):
        assert host.run("resource", "set", "gpu", "1").returncode == 0
    # mkdir fails while another job of the same host holds the same index: that job would fail.
    command = (f'd="{marks}/$(uname -n)-gpu$CUDA_VISIBLE_DEVICES"; mkdir "$d" || exit 1; '
               f'echo "$(uname -n)" >> "{marks}/hosts"; sleep 0.3; rmdir "$d"')
    ids = [job["id"] for job in spool.enqueue_many([{"command": command, "needs": {"gpu": 1},
                                                     "max_retries": 0}] * 8)]
    workers = [(host_a, host_a.start("worker", "start", "--count", "2")),
               (host_b, host_b.start("worker", "start", "--count", "2"))]
    wait_until(lambda: _all_finished(spool, ids), timeout=120, message="every job finished")
    assert set(_states(spool, ids).values()) == {"completed"}
    assert set((marks / "hosts").read_text().split()) <= {"hostA", "hostB"}
    _no_tracebacks(*workers)
