"""Resources (docs/guide/resources.md): indexes never held by two running jobs, freed when a worker is
SIGKILLed, refused at enqueue when no host has enough; real workers on a real spool."""

from __future__ import annotations

import os
import signal

from support import read_job, wait_until
from support.workers import enqueue, wait_for_state


def _uses_index(marks: str) -> str:
    # mkdir fails when the index is in use by another running job: the job then fails (exit 1).
    return (f'mkdir "{marks}/gpu$CUDA_VISIBLE_DEVICES" || exit 1; '
            f'[ "$CUDA_VISIBLE_DEVICES" = "$QUEUECTL_GPU" ] || exit 2; '
            f'echo "$CUDA_VISIBLE_DEVICES" > "{marks}/$QUEUECTL_JOB_ID"; sleep 0.5; '
            f'rmdir "{marks}/gpu$CUDA_VISIBLE_DEVICES"')


def test_two_gpus_four_jobs_four_workers_never_share_an_index(qc, workers, spool_path, tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    assert qc("resource", "set", "gpu", "2").returncode == 0
    ids = [qc("enqueue", "--needs", "gpu=1", "--max-retries", "0", "-c", _uses_index(str(marks))).stdout.strip()
           for _ in range(4)]
    workers.start("-n", "4", "--until-empty").wait()
    for job_id in ids:
        assert read_job(spool_path, "completed", job_id)["state"] == "completed"
        assert (marks / job_id).read_text().strip() in ("0", "1")
    assert not os.listdir(os.path.join(spool_path, "resources", "held", os.uname().nodename))


def test_a_job_that_needs_two_gets_two_distinct_indexes(qc, workers, spool_path, tmp_path):
    out = tmp_path / "env"
    qc("resource", "set", "gpu", "4")
    job_id = qc("enqueue", "--needs", "gpu=2", "-c", f'echo "$QUEUECTL_GPU $CUDA_VISIBLE_DEVICES" > {out}').stdout.strip()
    workers.start("--until-empty").wait()
    wait_for_state(spool_path, job_id, "completed")
    assert out.read_text().split() == ["0,1", "0,1"]


def test_sigkilled_worker_frees_its_index(qc, workers, spool_path, tmp_path):
    started = tmp_path / "started"
    qc("resource", "set", "gpu", "1")
    first = qc("enqueue", "--needs", "gpu=1", "--max-retries", "0", "-c", f"touch {started}; sleep 300").stdout.strip()
    doomed = workers.start()
    wait_until(lambda: started.exists(), message="the first job to start")
    held = os.path.join(spool_path, "resources", "held", os.uname().nodename)
    assert os.listdir(held) == ["gpu-0"]
    doomed.send(signal.SIGKILL)
    doomed.wait()
    second = enqueue(spool_path, {"command": "true", "needs": {"gpu": 1}})
    workers.start()
    # Recovery kills the first job's leftover sleep, frees gpu 0, and the second job gets it.
    wait_for_state(spool_path, second, "completed", timeout=60)
    assert not os.path.exists(os.path.join(spool_path, "processing", first + ".json"))
    wait_until(lambda: not os.listdir(held), message="gpu 0 freed after the second job")


def test_needs_more_than_any_host_is_refused_with_one_line(qc, spool_path):
    assert qc("resource", "set", "gpu", "2").returncode == 0
    result = qc("enqueue", "--needs", "gpu=3", "true")
    assert result.returncode != 0
    assert "more than any host has" in result.stderr and "gpu=2" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not os.listdir(os.path.join(spool_path, "pending"))


def test_bad_names_and_counts_are_one_line_errors(qc):
    for args in (["enqueue", "--needs", "spool=1", "true"], ["enqueue", "--needs", "gpu=-1", "true"],
                 ["enqueue", "--needs", "GPU=1", "true"], ["enqueue", "--needs", "gpu=99999", "true"],
                 ["resource", "set", "../x", "1"], ["resource", "set", "gpu", "5000"],
                 ["resource", "set", "gpu", "1", "--host", "../etc"]):
        result = qc(*args)
        assert result.returncode != 0, args
        assert "Traceback" not in result.stderr and result.stderr.strip(), args


def test_a_dropped_in_job_that_does_not_fit_waits_and_a_declaration_starts_it(qc, workers, spool_path):
    qc("resource", "set", "gpu", "1")
    job_id = enqueue(spool_path, {"command": "true", "needs": {"gpu": 1}})
    qc("resource", "set", "gpu", "0")  # no gpu any more: the job waits, and an --until-empty worker leaves it
    assert workers.start("--until-empty").wait() == 0
    assert os.path.exists(os.path.join(spool_path, "pending", job_id + ".json"))
    workers.start()
    qc("resource", "set", "gpu", "1")  # a running worker sees the new declaration
    wait_for_state(spool_path, job_id, "completed", timeout=30)
