"""queuectl: a background job queue for shell commands kept in a folder of JSON files.

    from queuectl import Spool
    spool = Spool("/tmp/spool")
    job = spool.enqueue("echo hello", priority=5)
    spool.get(job["id"])["state"]

The API is `queuectl.Spool` (queuectl/api.py, docs/api.md). The names
below are loaded when first asked for, not with the package: the program
(`__main__.py`) imports the package before it can set up its start-up, and
a command loads only the modules it uses (docs/decisions/layers.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what a type checker and a reader see; at run time, __getattr__ below
    from .api import AmbiguousId, Spool, WaitTimeout
    from .core.errors import ConfigError, DuplicateJob, InvalidJob, JobNotFound, QueueError, SpoolError, WrongState

_API = ("Spool", "AmbiguousId", "WaitTimeout")
_ERRORS = ("QueueError", "InvalidJob", "DuplicateJob", "JobNotFound", "ConfigError", "SpoolError", "WrongState")

__all__ = ["Spool", "AmbiguousId", "WaitTimeout", "QueueError", "InvalidJob", "DuplicateJob", "JobNotFound",
           "ConfigError", "SpoolError", "WrongState", "__version__"]


def __getattr__(name: str) -> Any:
    """`queuectl.Spool`, the errors, and `queuectl.__version__` (from the installed package's
    metadata: pyproject.toml has it once)."""
    if name in _API:
        from . import api

        return getattr(api, name)
    if name in _ERRORS:
        from .core import errors

        return getattr(errors, name)
    if name == "__version__":
        from importlib.metadata import version

        return version("queuectl")
    raise AttributeError(f"module 'queuectl' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API, *_ERRORS, "__version__"])
