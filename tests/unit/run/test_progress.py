"""A job's progress (docs/guide/limits.md, "Progress"): the file, the output lines, the estimate, the cleanup."""

from __future__ import annotations

import os
import time

import pytest
from support import wait_until
from support.workers import wait_for_state

from queuectl.run import progress, runner


@pytest.mark.parametrize("text, percent", [
    ("42", 42.0), ("42.5%\n", 42.5), (" 7 % ", 7.0), ("100", 100.0), ("0", 0.0),
    ("", None), ("abc", None), ("101", None), ("-1", None), ("4 2", None), ("42%%", None),
])
def test_the_file_holds_one_number(text, percent):
    assert progress.parse_file(text) == percent


@pytest.mark.parametrize("output, percent", [
    (b"10%\n20% copying files\nsome other line\n", 20.0),
    (b"  5.5%\n", 5.5),
    (b"1%\r2%\r3%", 3.0),  # a progress bar redrawn with carriage returns
    (b"at 50% now\n", None),  # not at the start of its line
    (b"50%done\n", None),  # text after the % must be set apart by a space
    (b"1000%\n", None),
    (b"30%\n250%\n", 30.0),  # out of range: not a report, the one before it stands
    (b"", None),
])
def test_output_lines(output, percent):
    assert progress.parse_output(output) == percent


def write(path, data: bytes, mtime: float | None = None) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))


def test_read_prefers_the_file_then_the_latest_attempts_log(tmp_path):
    root = str(tmp_path)
    log = os.path.join(root, "logs", "job-1.log")
    assert progress.read(root, "job-1") is None
    write(log, b"=== attempt 1 started ===\n90%\n=== attempt 2 started ===\nhello\n")
    assert progress.read(root, "job-1") is None  # 90% was the earlier attempt's
    write(log, b"=== attempt 1 started ===\n90%\n=== attempt 2 started ===\n12%\n", mtime=1000.0)
    assert progress.read(root, "job-1") == (12.0, 1000.0)
    write(progress.path(root, "job-1"), b"55\n", mtime=2000.0)
    assert progress.read(root, "job-1") == (55.0, 2000.0)
    assert progress.read(root, "job-1", since=2500.0) is None  # an earlier run's report
    progress.remove(root, "job-1")
    assert progress.read(root, "job-1") == (12.0, 1000.0)


def test_only_the_logs_tail_is_read_and_its_cut_line_is_not_a_report(tmp_path):
    root = str(tmp_path)
    cut = b"x" * (progress.TAIL_BYTES - 7) + b"\n"  # the tail starts inside "9 75% a", at "75% a"
    write(os.path.join(root, "logs", "job-1.log"), b"=== attempt 1 started ===\n9 75% a\n" + cut)
    assert progress.read(root, "job-1") is None


def test_odd_entries_in_place_of_the_file_are_not_read(tmp_path):
    root = str(tmp_path)
    os.makedirs(os.path.join(root, progress.FOLDER))
    os.mkfifo(progress.path(root, "fifo"))  # a reader would block on it without O_NONBLOCK
    assert progress.read(root, "fifo") is None
    write(os.path.join(root, "secret"), b"33")
    os.symlink(os.path.join(root, "secret"), progress.path(root, "link"))
    assert progress.read(root, "link") is None
    os.mkdir(progress.path(root, "dir"))
    assert progress.read(root, "dir") is None
    progress.remove(root, "dir")  # no error


def test_time_left_from_the_rate_between_two_samples():
    assert progress.remaining(25.0, 110.0, (0.0, 100.0)) == pytest.approx(30.0)  # 25 % in 10 s: 75 % in 30 s
    assert progress.remaining(60.0, 20.0, (40.0, 10.0)) == pytest.approx(20.0)
    assert progress.remaining(100.0, 20.0, (0.0, 10.0)) == 0.0
    assert progress.remaining(40.0, 20.0, (40.0, 10.0)) is None  # no progress since the first sample
    assert progress.remaining(40.0, 10.0, (0.0, 10.0)) is None


def test_the_runner_gives_the_job_its_file_and_removes_it_after(tmp_path):
    job = {"id": "job-1", "attempts": 1,
           "command": 'echo 40 > "$QUEUECTL_PROGRESS" && cp "$QUEUECTL_PROGRESS" seen && echo "$QUEUECTL_PROGRESS"',
           "cwd": str(tmp_path)}
    outcome = runner.run(job, log_path=str(tmp_path / "job.log"), worker="w", spool_root=str(tmp_path),
                         timeout=None, kill_grace=0.3, pass_env=[], tail_lines=5, interruption=lambda: None)
    assert outcome.succeeded
    assert (tmp_path / "seen").read_text() == "40\n"
    assert str(tmp_path / "progress" / "job-1") in (tmp_path / "job.log").read_text()
    assert not os.path.lexists(progress.path(str(tmp_path), "job-1"))


def test_progress_of_a_running_job_as_a_reader_sees_it(spool, spool_path, workers, tmp_path):
    gate = tmp_path / "gate"
    job_id = spool.enqueue(f'echo 30 > "$QUEUECTL_PROGRESS"; echo "70% halfway"; '
                           f'while [ ! -e {gate} ]; do sleep 0.02; done')["id"]
    started = time.time()
    workers.start("--until-empty")
    wait_until(lambda: progress.read(spool_path, job_id) is not None, message="the job's progress")
    percent, when = progress.read(spool_path, job_id)
    assert percent == 30.0 and when >= started - 1
    os.unlink(progress.path(spool_path, job_id))  # the file gone: the log's line is the report
    assert progress.read(spool_path, job_id)[0] == 70.0
    gate.touch()
    wait_for_state(spool_path, job_id, "completed")
    assert not os.path.lexists(progress.path(spool_path, job_id))
