"""queuectl: a background job queue for shell commands kept in a folder of JSON files.

    from queuectl import Spool
    spool = Spool("/tmp/spool")
    job = spool.enqueue("echo hello", priority=5)
    spool.get(job["id"])["state"]

The API is `queuectl.Spool` (queuectl/api.py, docs/api.md).
"""

from .api import AmbiguousId, Spool, WaitTimeout
from .core.errors import ConfigError, DuplicateJob, InvalidJob, JobNotFound, QueueError, SpoolError, WrongState


def __getattr__(name: str) -> str:
    """`queuectl.__version__`, read from the installed package's metadata (pyproject.toml has it once)."""
    if name == "__version__":
        from importlib.metadata import version  # not at import: every command would pay for it

        return version("queuectl")
    raise AttributeError(f"module 'queuectl' has no attribute {name!r}")


__all__ = ["Spool", "QueueError", "InvalidJob", "DuplicateJob", "JobNotFound", "AmbiguousId", "WaitTimeout",
           "ConfigError", "SpoolError", "WrongState", "__version__"]
