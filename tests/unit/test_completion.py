"""`queuectl completion bash|zsh|fish`: the script is click's, and bash itself completes with it.

Each completion runs the real thing: bash sources the printed script and calls
its completion function with COMP_WORDS/COMP_CWORD set as readline would,
which runs `queuectl` as a process with click's completion protocol.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from support import put_job, run_queuectl

BIN = os.path.dirname(sys.executable)

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def bash_complete(spool_path, words, env=None):
    """What bash's <TAB> offers after `words` (the last one is the word being completed)."""
    script = run_queuectl(spool_path, "completion", "bash")
    assert script.returncode == 0, script.stderr
    program = (script.stdout
               + "\nCOMP_WORDS=(" + " ".join(f"'{word}'" for word in words) + ")"
               + f"\nCOMP_CWORD={len(words) - 1}"
               + "\n_queuectl_completion queuectl"
               + '\nprintf "%s\\n" "${COMPREPLY[@]}"\n')
    result = subprocess.run(["bash", "--norc", "--noprofile", "-c", program], capture_output=True, text=True,
                            timeout=60, env={**os.environ, "PATH": BIN + os.pathsep + os.environ["PATH"],
                                             "QUEUECTL_SPOOL": spool_path, **(env or {})})
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return [line for line in result.stdout.splitlines() if line]


def test_commands_complete(spool_path):
    assert bash_complete(spool_path, ["queuectl", "sch"]) == ["schedule", "schema"]


def test_dlq_retry_completes_the_ids_in_dead(spool, spool_path):
    put_job(spool_path, "dead", "beta-1", attempts=4)
    put_job(spool_path, "dead", "alpha-2", attempts=4)
    put_job(spool_path, "pending", "alpha-pending")
    put_job(spool_path, "completed", "gamma")
    assert bash_complete(spool_path, ["queuectl", "dlq", "retry", ""]) == ["alpha-2", "beta-1"]
    assert bash_complete(spool_path, ["queuectl", "dlq", "retry", "al"]) == ["alpha-2"]
    # an id already on the line is not offered again
    assert bash_complete(spool_path, ["queuectl", "dlq", "retry", "alpha-2", ""]) == ["beta-1"]


def test_dlq_retry_completion_reads_the_spool_named_on_the_line(spool, spool_path, tmp_path):
    put_job(spool_path, "dead", "here", attempts=4)
    assert bash_complete(str(tmp_path / "other"), ["queuectl", "--spool", spool_path, "dlq", "retry", ""]) == ["here"]


def test_no_spool_completes_nothing_and_creates_nothing(tmp_path):
    missing = str(tmp_path / "none")
    assert bash_complete(missing, ["queuectl", "dlq", "retry", ""]) == []
    assert not os.path.exists(missing)


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_each_shell_gets_clicks_script(spool_path, shell):
    result = run_queuectl(spool_path, "completion", shell)
    assert result.returncode == 0, result.stderr
    assert "_QUEUECTL_COMPLETE" in result.stdout


def test_unknown_shell_is_a_usage_error(spool_path):
    result = run_queuectl(spool_path, "completion", "tcsh")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
