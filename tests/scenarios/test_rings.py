"""Rings of `after` written by drop-ins end in dead/ naming the ring; workers and `wait` end (issue #18)."""

from __future__ import annotations

import json
import os

import pytest
from support import read_job, run_queuectl


def drop(spool_path: str, job_id: str, after: list[str]) -> None:
    tmp = os.path.join(spool_path, "tmp", f"{job_id}.json")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump({"id": job_id, "command": "true", "after": after}, handle)
    os.rename(tmp, os.path.join(spool_path, "pending", f"{job_id}.json"))


@pytest.mark.parametrize("ring", [["a", "b"], ["p", "q", "r", "s"]])
def test_a_ring_written_by_drop_ins_goes_to_dead_and_the_worker_ends(spool_path, qc, ring):
    qc("status")  # the spool exists
    for index, job_id in enumerate(ring):
        drop(spool_path, job_id, [ring[(index + 1) % len(ring)]])
    drop(spool_path, "outside", [ring[0]])  # waits for the ring: its dependency dies with it
    finished = run_queuectl(spool_path, "worker", "start", "--until-empty", "--quiet", timeout=60)
    assert finished.returncode == 0, finished.stderr
    for job_id in ring:
        error = read_job(spool_path, "dead", job_id)["last_error"]
        assert error.startswith("dependency ring: ") and error.count("->") == len(ring)
        assert set(error.removeprefix("dependency ring: ").split(" -> ")) == set(ring)
    assert "dependency" in read_job(spool_path, "dead", "outside")["last_error"]
    waited = run_queuectl(spool_path, "wait", timeout=30)
    assert waited.returncode in (0, 1), waited.stderr


def test_doctor_reports_a_ring_and_repair_ends_it(spool_path, qc):
    qc("status")
    drop(spool_path, "a", ["b"])
    drop(spool_path, "b", ["c"])
    drop(spool_path, "c", ["a"])
    # Dropped-in files not adopted yet are left to the workers: adopt them first, as a worker would.
    from queuectl import Spool
    from queuectl.core import lifecycle
    spool = Spool(spool_path)
    for name in ("a.json", "b.json", "c.json"):
        assert lifecycle.adopt(spool, name, complete=True) == name
    checked = run_queuectl(spool_path, "doctor", "--json")
    findings = json.loads(checked.stdout)
    rings = [finding for finding in findings if finding["problem"] == "dependency-ring"]
    assert len(rings) == 1 and "a -> b -> c -> a" in rings[0]["detail"]
    repaired = run_queuectl(spool_path, "doctor", "--repair", "--json")
    assert repaired.returncode in (0, 1), repaired.stderr
    for job_id in "abc":
        assert read_job(spool_path, "dead", job_id)["last_error"].startswith("dependency ring: ")
    final = json.loads(run_queuectl(spool_path, "doctor", "--json").stdout)
    assert [finding for finding in final if finding["problem"] == "dependency-ring"] == []
