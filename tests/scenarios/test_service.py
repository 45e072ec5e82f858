"""contrib/queuectl-worker.service (README "Running workers as a service"): its ExecStart line, run as
written, stopped the way systemd stops it for the unit's KillMode, lets the running job finish.

systemd is not needed: the test reads Environment=, ExecStart= and KillMode= from the file, runs the
command line (only the program's directory is swapped for this virtualenv's, and the spool for the
test's), and sends on stop what systemd sends for that KillMode: SIGTERM (then SIGCONT) to the main
process only for `mixed` and `process`, to every process of the service (jobs included) for
`control-group`. So a unit changed to `control-group` fails here: its running job would be killed.
"""

from __future__ import annotations

import os
import pathlib
import shlex
import signal
import subprocess
import sys

from support import wait_until
from support.workers import enqueue, process_alive, wait_for_running

from queuectl import Spool

UNIT = pathlib.Path(__file__).resolve().parent.parent.parent / "contrib" / "queuectl-worker.service"


def service_section() -> dict[str, list[str]]:
    """Key -> values of the [Service] section (a key may repeat, as Environment= does)."""
    values: dict[str, list[str]] = {}
    section = None
    for line in UNIT.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]":
            key, _, value = line.partition("=")
            values.setdefault(key.strip(), []).append(value.strip())
    return values


def descendants(pid: int) -> set[int]:
    """`pid` and every process under it (what the service's control group would hold)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                parent = int(handle.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry))
    found, todo = set(), [pid]
    while todo:
        current = todo.pop()
        found.add(current)
        todo.extend(children.get(current, []))
    return found


def test_the_unit_stops_with_the_running_job_finished(spool_path, workers, tmp_path):
    service = service_section()
    environment = dict(item.split("=", 1) for value in service.get("Environment", []) for item in shlex.split(value))
    assert "QUEUECTL_SPOOL" in environment, "the unit names its spool"
    environment["QUEUECTL_SPOOL"] = str(Spool(spool_path).root)
    [exec_start] = service["ExecStart"]
    assert "%" not in exec_start and "$" not in exec_start, "no specifiers or variables: it runs as written"
    argv = shlex.split(exec_start)
    assert os.path.basename(argv[0]) == "queuectl"
    argv[0] = os.path.join(os.path.dirname(sys.executable), "queuectl")
    [kill_mode] = service.get("KillMode", ["control-group"])
    [kill_signal] = service.get("KillSignal", ["SIGTERM"])

    marker = tmp_path / "running"
    job_id = enqueue(spool_path, f"echo $$ > '{marker}'; sleep 1; echo finished")
    main = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True, env={**os.environ, **environment})
    try:
        wait_for_running(spool_path, job_id, marker)
        service_processes = descendants(main.pid)

        # systemctl stop
        targets = [main.pid] if kill_mode in ("mixed", "process") else sorted(service_processes)
        for pid in targets:
            for signum in (signal.Signals[kill_signal], signal.SIGCONT):
                try:
                    os.kill(pid, signum)
                except ProcessLookupError:
                    pass

        try:
            main.wait(timeout=60)
        except subprocess.TimeoutExpired:
            main.kill()
        assert main.wait() == 0, main.stderr.read().decode()
        wait_until(lambda: not any(process_alive(pid) for pid in service_processes),
                   message="every process of the service to exit")
    finally:
        if main.poll() is None:
            main.kill()
            main.wait()
        main.stderr.close()
    job = Spool(spool_path).get(job_id)
    assert (job["state"], job["last_exit_code"]) == ("completed", 0)
    assert "finished" in Spool(spool_path).read_log(job_id).decode()
    assert Spool(spool_path).counts()["processing"] == 0


def test_the_unit_waits_longer_than_the_kill_grace_and_restarts_on_failure():
    service = service_section()
    [timeout] = service["TimeoutStopSec"]
    units = {"min": 60, "s": 1, "h": 3600}
    number = timeout.rstrip("minsh")
    seconds = float(number) * units.get(timeout[len(number):] or "s", 1)
    assert seconds > 5, "TimeoutStopSec must exceed kill_grace (5 s) plus the longest job waited for"
    assert service["Restart"] == ["on-failure"]
    assert service["KillMode"] == ["mixed"]


def test_the_docs_show_the_unit_as_it_is():
    readme = (UNIT.parent.parent / "docs" / "guide" / "service.md").read_text(encoding="utf-8")
    shown = readme.split("```ini\n", 1)[1].split("```", 1)[0]
    unit_lines = {line.strip() for line in UNIT.read_text(encoding="utf-8").splitlines()}
    assert [line for line in shown.splitlines() if line.strip() not in unit_lines] == []
