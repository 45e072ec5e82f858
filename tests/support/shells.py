"""What the tests of the shell's ways to enqueue share: the shells found here, and the clock in an id."""

from __future__ import annotations

import shutil

SHELLS = [shell for shell in ("dash", "bash", "busybox") if shutil.which(shell)]


def id_clock(job_id: str) -> int:
    """The millisecond clock in an id's first nine base32 digits (docs/guide/jobs.md "Ids")."""
    digits = "0123456789abcdefghjkmnpqrstvwxyz"
    value = 0
    for char in job_id.replace("-", "")[:9]:
        value = value * 32 + digits.index(char)
    return value
