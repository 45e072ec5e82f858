"""queuectl: a background job queue for shell commands kept in a folder of JSON files.

    from queuectl import Spool
    spool = Spool("/tmp/spool")
    job = spool.enqueue("echo hello", priority=5)
    spool.get(job["id"])["state"]
"""

__version__ = "0.1.0"

from .api import Spool  # noqa: E402
from .errors import ConfigError, DuplicateJob, InvalidJob, JobNotFound, QueueError, SpoolError, WrongState  # noqa: E402

__all__ = ["Spool", "QueueError", "InvalidJob", "DuplicateJob", "JobNotFound", "ConfigError",
           "SpoolError", "WrongState", "__version__"]
