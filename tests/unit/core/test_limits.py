"""Per-job limits (docs/guide/limits.md): the fields, their config defaults, and the runner holding a job to them.

The cgroup tests need a memory cgroup the test process may make (cgroup v1's
memory controller as root, or a delegated cgroup v2). The CI machine is the
same kind of container as the development one, where v1's memory controller
is writable as root: there they must run, so with $CI set a missing cgroup
fails them instead of skipping them.
"""

from __future__ import annotations

import os
import sys

import pytest
from support.workers import wait_for_state

from queuectl.core import config, job, limits
from queuectl.core.errors import ConfigError, InvalidJob
from queuectl.run import cgroups, runner

CONFIG = config.defaults()
ALLOCATE_1G = f'{sys.executable} -c "b = bytearray(1 << 30)"'


# -- fields and config ---------------------------------------------------------

def test_fields_are_normalized_to_numbers_at_enqueue():
    built = job.build({"command": "true", "memory": "2G", "cpu_time": "10m", "max_files": 20}, CONFIG)
    assert (built["memory"], built["cpu_time"], built["max_files"]) == (2 << 30, 600, 20)
    assert job.build({"command": "true", "memory": 1 << 30, "cpu_time": 1.5}, CONFIG)["cpu_time"] == 1.5
    plain = job.build({"command": "true"}, CONFIG)
    assert not {"memory", "cpu_time", "max_files"} & set(plain)  # a job without limits stays as it was


@pytest.mark.parametrize("fields, words", [
    ({"memory": "lots"}, "memory: 'lots' is not a size"),
    ({"memory": 1000}, "too small"),
    ({"memory": True}, "memory must be"),
    ({"memory": 1.5}, "memory must be"),
    ({"cpu_time": "-1s"}, "cpu_time:"),
    ({"cpu_time": [1]}, "cpu_time must be"),
    ({"max_files": "many"}, "not a number of open files"),
    ({"max_files": 2}, "too small"),
    ({"max_files": -3}, "between 0 and"),
])
def test_bad_limit_fields_are_refused_with_a_reason(fields, words):
    with pytest.raises(InvalidJob, match=words):
        job.build({"command": "true", **fields}, CONFIG)


def test_config_keys_take_sizes_and_durations_and_refuse_text_in_the_file():
    assert config.parse_value("memory", "512M") == 512 << 20
    assert config.parse_value("cpu-time", "1h30m") == 5400
    assert config.parse_value("max_files", "64") == 64
    with pytest.raises(ConfigError, match="memory"):
        config.parse_value("memory", "big")
    with pytest.raises(ConfigError, match="memory"):
        config.validate({"memory": "2G"})  # config.json holds what `config set` stored: bytes
    with pytest.raises(ConfigError, match="max_files"):
        config.validate({"max_files": 2})  # what `config set` refuses, the file may not hold either
    assert config.validate({"memory": 1 << 30, "cpu_time": 2.5})["cpu_time"] == 2.5


def test_a_job_field_wins_over_the_config_and_0_means_none():
    settings = {**CONFIG, "memory": 1 << 30, "cpu_time": 60}
    assert limits.resolve({"memory": None}, CONFIG) is None
    found = limits.resolve({"memory": None, "max_files": 10}, settings)
    assert (found.memory, found.cpu_time, found.max_files) == (1 << 30, 60, 10)
    found = limits.resolve({"memory": 0, "cpu_time": 2.5}, settings)
    assert (found.memory, found.cpu_time, found.cpu_seconds) == (None, 2.5, 3)


# -- the runner ----------------------------------------------------------------

@pytest.fixture
def run(tmp_path):
    """Run a command under limits as job `job-1`; returns (outcome, description)."""
    def run_command(command: str, cwd: str | None = None, **fields):
        job = {"id": "job-1", "attempts": 1, "command": command, "cwd": cwd}
        outcome = runner.run(job, log_path=str(tmp_path / "job.log"), worker="w", spool_root=str(tmp_path),
                             timeout=30, kill_grace=0.3, pass_env=[], tail_lines=5, interruption=lambda: None,
                             wait_step=0.05, limits=limits.Limits(**fields))
        return outcome, outcome.describe(30)
    return run_command


@pytest.fixture
def no_cgroups(monkeypatch):
    monkeypatch.setenv("QUEUECTL_CGROUPS", "off")


@pytest.fixture
def cgroup():
    """A memory cgroup can be made here (skipped where not, but in CI: see the module's text)."""
    group = cgroups.make("probe", 100 << 20)
    if group is None:
        message = "no memory cgroup can be made here (needs cgroup v1's memory controller as root, or Delegate=yes)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}: required in CI")
        pytest.skip(message)
    group.remove()
    assert not os.path.exists(group.path)


def job_groups() -> list[str]:
    hierarchy = cgroups._DISCOVERY.get(os.getpid())
    if hierarchy is None:
        return []
    return [name for name in os.listdir(hierarchy.parent) if name.startswith(f"{cgroups.PREFIX}{os.getpid()}-")]


@pytest.mark.parametrize("cwd", [None, "/"], ids=["posix_spawn", "popen"])
def test_memory_rlimit_fails_an_allocation_and_says_so(run, no_cgroups, cwd):
    outcome, description = run(ALLOCATE_1G, cwd=cwd, memory=100 << 20)
    assert outcome.exit_code == 1 and "MemoryError" in outcome.stderr_tail[-1]
    assert description == "memory limit 100M exceeded"


def test_memory_rlimit_holds_a_pipeline_stage_too(run, no_cgroups):
    """`tail` of a line that never ends keeps it all in memory."""
    outcome, description = run("head -c 1G /dev/zero | tail", memory=100 << 20)
    assert description == "memory limit 100M exceeded"


def test_cgroup_kills_a_job_over_its_memory_and_is_removed(run, cgroup):
    outcome, description = run(ALLOCATE_1G, memory=100 << 20)
    assert outcome.exit_code == 137 or outcome.signal == 9  # the OOM killer's SIGKILL, not a MemoryError
    assert description == "memory limit 100M exceeded"
    assert job_groups() == []


def test_cgroup_counts_every_process_of_the_job(run, cgroup):
    """Two processes of 60M each: under 100M apiece (an rlimit lets both live), over it together."""
    one = f'{sys.executable} -c "import time; b = bytearray(60 << 20); time.sleep(3)"'
    outcome, description = run(f"{one} & a=$!; {one} & b=$!; wait $a && wait $b", memory=100 << 20)
    assert description == "memory limit 100M exceeded"
    assert job_groups() == []


def test_a_job_within_its_limits_succeeds(run, cgroup):
    outcome, description = run(f'{sys.executable} -c "b = bytearray(10 << 20)"', memory=100 << 20, cpu_time=30,
                               max_files=64)
    assert description is None and outcome.exit_code == 0


def test_cpu_time_limit_kills_a_busy_loop(run):
    outcome, description = run(f'{sys.executable} -c "while True: pass"', cpu_time=1)
    assert description == "cpu time limit 1s exceeded"
    assert 0.9 <= outcome.cpu < 10  # killed at its CPU limit, long before the 30 s timeout


def test_a_sleeping_job_is_not_held_by_its_cpu_time(run):
    outcome, description = run("sleep 1.5", cpu_time=1)
    assert description is None


def test_open_files_limit(run):
    opener = f'{sys.executable} -c "files = [open(\'/dev/null\') for _ in range(100)]"'
    outcome, description = run(opener, max_files=20)
    assert description == "open files limit 20 reached"
    outcome, description = run(opener.replace("100", "10"), max_files=20)
    assert description is None


def test_a_failure_of_its_own_keeps_its_reason(run, no_cgroups):
    assert run("echo nope >&2; exit 3", memory=100 << 20, cpu_time=5, max_files=20)[1] == "exit code 3"


def test_the_job_sees_its_limits_and_the_same_shell_as_without(run, tmp_path, no_cgroups):
    outcome, description = run(f'echo "$0 $(ulimit -n) $(ulimit -t) $(ulimit -d)" > {tmp_path}/seen',
                               memory=100 << 20, cpu_time=2.5, max_files=20)
    assert description is None
    assert (tmp_path / "seen").read_text().split() == ["/bin/sh", "20", "3", str(100 << 10)]


def test_a_worker_records_the_reason_and_retries_as_any_failure(spool, spool_path, workers, no_cgroups):
    spool.set_config("max_files", "20")
    job_id = spool.enqueue({"command": f'{sys.executable} -c "f = [open(\'/dev/null\') for _ in range(100)]"',
                            "max_retries": 1})["id"]
    assert workers.start("--until-empty").wait() == 0
    dead = wait_for_state(spool_path, job_id, "dead")
    assert dead["last_error"] == "open files limit 20 reached"
    assert [entry["error"] for entry in dead["history"]] == ["open files limit 20 reached"] * 2


# -- where a cgroup is made (cgroup v2 cannot be had here: its rules, on a fake tree) -----------

class FakeCgroupFs:
    """Plain folders with the few cgroup v2 rules `cgroups` relies on: writing a pid to cgroup.procs
    moves it there, and "+memory" is taken by cgroup.subtree_control only while the cgroup holds no process."""

    def __init__(self, root, pids):
        self.root = str(root)
        self.where = {pid: self.root for pid in pids}

    def read(self, path):
        folder, name = os.path.split(path)
        if name == "cgroup.procs":
            return "".join(f"{pid}\n" for pid, at in self.where.items() if at == folder)
        with open(path) as handle:
            return handle.read()

    def write(self, path, text):
        folder, name = os.path.split(path)
        if name == "cgroup.procs":
            self.where[int(text)] = folder
        elif name == "cgroup.subtree_control":
            if any(at == folder for at in self.where.values()):
                return False  # EBUSY: "no internal processes"
            with open(path, "w") as handle:
                handle.write(text.lstrip("+"))
        return True


@pytest.mark.parametrize("delegated", [True, False])
def test_v2_moves_the_delegated_cgroups_processes_to_a_leaf_before_enabling_memory(tmp_path, monkeypatch,
                                                                                  delegated):
    (tmp_path / "cgroup.controllers").write_text("cpu memory pids\n")
    (tmp_path / "cgroup.subtree_control").write_text("")
    fs = FakeCgroupFs(tmp_path, [101, 102, 103])
    monkeypatch.setattr(cgroups, "_read", fs.read)
    monkeypatch.setattr(cgroups, "_write", fs.write)
    monkeypatch.setattr(cgroups, "_is_delegated", lambda path: delegated)
    found = cgroups._delegated_v2(str(tmp_path))
    if not delegated:
        assert found is None and set(fs.where.values()) == {str(tmp_path)}  # nobody moved
        return
    leaf = str(tmp_path / cgroups.LEAF)
    assert (found.version, found.parent, found.home) == (2, str(tmp_path), leaf)
    assert set(fs.where.values()) == {leaf}
    assert (tmp_path / "cgroup.subtree_control").read_text() == "memory"
    # A worker already in the leaf finds the same place without moving anyone again.
    assert cgroups._delegated_v2(leaf).parent == str(tmp_path)


def test_the_cgroup_folder_comes_from_mountinfo_and_proc_self_cgroup(monkeypatch):
    files = {
        "/proc/self/cgroup": "4:memory:/process_api/abc\n1:cpu,cpuacct:/\n0::/system.slice/q.service/queuectl-workers\n",
        "/proc/self/mountinfo": (
            "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"
            "35 31 0:32 /process_api /sys/fs/cgroup/mem\\040ory rw,relatime - cgroup cgroup rw,memory\n"),
    }
    monkeypatch.setattr(cgroups, "_read", lambda path: files.get(path, ""))
    own, mounts = cgroups._own_cgroups(), cgroups._mounts()
    assert own["memory"] == "/process_api/abc" and own["cpuacct"] == "/"
    assert cgroups._path(mounts["cgroup2"], own[""]) == "/sys/fs/cgroup/unified/system.slice/q.service/queuectl-workers"
    assert cgroups._path(mounts["memory"], own["memory"]) == "/sys/fs/cgroup/mem ory/abc"  # a bind of a sub-tree
    assert cgroups._path(mounts["memory"], "/elsewhere") is None
