"""The Python API: `queuectl.Spool`, a spool with enqueue (docs/api.md).

spool.Spool is the layout (reading, locking, moving files); enqueueing is a
transition, so it lives in lifecycle, and this class, above both, gives the
one object users hold. Importing it arranges for queuectl's features to be
installed at the first transition that needs them (lifecycle.install_later).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from . import lifecycle
from . import spool as spool_layout


def install_features() -> None:
    """Install queuectl's features (features.install).

    Imported here, when first needed, to keep `queuectl enqueue` of a plain
    job from loading them at start-up (a feature module loads hashlib,
    socket, subprocess).
    """
    from . import features

    features.install()


lifecycle.install_later(install_features)


class Spool(spool_layout.Spool):
    """A spool folder: `Spool(path).enqueue("echo hi")`, `.get(id)`, `.counts()`."""

    def enqueue(self, job: dict | str, *, if_absent: bool = False, **options: Any) -> dict:
        """Enqueue one job from a dict of fields or a command string; returns the stored job."""
        return lifecycle.enqueue(self, job, if_absent=if_absent, **options)

    def enqueue_many(self, jobs: Iterable[dict], *, if_absent: bool = False) -> list[dict]:
        """Validate every job, then publish them in order (lifecycle.enqueue_many)."""
        return lifecycle.enqueue_many(self, jobs, if_absent=if_absent)
