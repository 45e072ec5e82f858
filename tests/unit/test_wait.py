"""`queuectl wait`: its progress bar on a terminal, and its silence elsewhere."""

from __future__ import annotations

import os
import pty
import subprocess
import sys

from queuectl import Spool


def finish(spool: Spool, job_id: str, state: str) -> None:
    os.rename(os.path.join(spool.dir("pending"), job_id + ".json"), os.path.join(spool.dir(state), job_id + ".json"))


def run_wait_on_a_terminal(spool_path: str, *args: str) -> tuple[int, str, str]:
    """`queuectl wait` with stderr on a pseudo-terminal, as a person would run it."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "queuectl", "--spool", spool_path, "wait", *args],
                               stdout=subprocess.PIPE, stderr=terminal, text=True)
    os.close(terminal)
    stdout, _ = process.communicate(timeout=60)
    seen = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # EIO: the terminal's last writer is gone
            break
        if not chunk:
            break
        seen += chunk
    os.close(controller)
    return process.returncode, stdout, seen.decode()


def test_a_terminal_gets_a_progress_bar_and_the_exit_code_says_dead(spool):
    for job_id, state in (("a", "completed"), ("b", "completed"), ("c", "dead")):
        spool.enqueue({"id": job_id, "command": "true"})
        finish(spool, job_id, state)

    code, stdout, terminal = run_wait_on_a_terminal(spool.root, "a", "b", "c")

    assert code == 1  # one of them is dead
    assert "3/3 finished" in terminal and "[" + "#" * 30 + "]" in terminal
    assert stdout.strip() == "2 completed, 1 dead"


def test_without_a_terminal_there_is_no_bar(spool, qc):
    spool.enqueue({"id": "a", "command": "true"})
    finish(spool, "a", "completed")

    result = qc("wait", "a")

    assert result.returncode == 0
    assert result.stderr == "" and result.stdout.strip() == "1 completed, 0 dead"
