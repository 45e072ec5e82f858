"""queuectl's own features, plugged into the transitions (docs/decisions/layers.md).

`install()` puts every default feature into lifecycle's list once per
process; the worker, the CLI and the Python API (`queuectl.Spool`) call it
before they change a job. A program that uses lifecycle alone gets the
bare state machine: no unique keys, no dependencies, no hooks, no groups.
"""

from __future__ import annotations

from ..core import lifecycle
from ..run.runner import LeftoversPlugin
from .dependencies import DependenciesPlugin
from .groups import GroupsPlugin
from .hooks import HooksPlugin
from .resources import ResourcesPlugin
from .unique import UniquePlugin


def default_plugins() -> list[lifecycle.Plugin]:
    """In the order they act: a dead worker's leftovers killed first (before a feature frees what the
    job held), the key before the waiting markers, the hook last."""
    return [LeftoversPlugin(), UniquePlugin(), DependenciesPlugin(), GroupsPlugin(), ResourcesPlugin(), HooksPlugin()]


def install() -> None:
    """Install the default features (idempotent)."""
    for plugin in default_plugins():
        lifecycle.install(plugin)


