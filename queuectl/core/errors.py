"""The errors queuectl raises on purpose.

Every one of them carries a message a person can act on; the CLI prints it
on one line and exits 1. Anything else escaping is a bug.
"""


class QueueError(Exception):
    """Base class: an operational error with a one-line explanation."""


class InvalidJob(QueueError):
    """A job (from the CLI, Python or a drop-in) breaks the job file's rules (docs/guide/jobs.md, "The job file")."""


class DuplicateJob(QueueError):
    """A job with this id already exists in some state folder."""


class JobNotFound(QueueError):
    """No state folder holds a job with this id."""


class ConfigError(QueueError):
    """An unknown configuration key or a value of the wrong kind."""


class SpoolError(QueueError):
    """The spool cannot be used: not a directory, unsafe permissions, disk full."""


class WrongState(QueueError):
    """The job exists but the requested action does not apply to its state."""


class KeyTaken(DuplicateJob):
    """The unique key is held by a live job: `holder` is its id."""

    def __init__(self, message: str, holder: str):
        super().__init__(message)
        self.holder = holder
