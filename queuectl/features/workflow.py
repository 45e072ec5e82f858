"""Workflows, as one name: dependencies, groups with limits, pause and resume, unique keys, the worker's gate.

The code lives in feature modules (dependencies.py, groups.py, unique.py,
gate.py, each plugged into lifecycle: docs/decisions/layers.md); this
module gathers their public names for callers that use several, and
installs the features when imported.
"""

from __future__ import annotations

from ..core import lifecycle
from ..core.errors import KeyTaken
from ..core.job import GROUP_PATTERN, MAX_AFTER, MAX_KEY, check_fields, check_group
from .dependencies import (
    MARK_GRACE,
    annotate,
    check_dependencies_exist,
    dependency_states,
    end_ring,
    find_ring,
    mark_waiting,
    prune_guard,
    rings,
    waiting_dir,
    waiting_on,
)
from .gate import PARK_POLL, Gate
from .groups import (
    BADGE_PREFIX,
    GROUPS,
    NO_SLOT,
    PAUSE_FILE,
    Badge,
    Slot,
    free_job_slots,
    free_orphan_slots,
    groups,
    groups_dir,
    is_paused,
    limit_path,
    pause,
    pause_path,
    paused_groups,
    read_limit,
    read_slot,
    resume,
    running_by_worker,
    set_limit,
    set_rate,
    slot_dir,
    slot_holders,
    slot_names,
    take_slot,
)
from .unique import LOCK_GRACE, UNIQUE, key_held_for, key_holder, key_path, release_key, stale_keys, take_key


def install_features() -> None:
    """Install queuectl's features (plugins.install), when a transition first needs them.

    Imported then, not with this module: `queuectl list` and `status` read
    through this module and never load the completion hooks' runner.
    """
    from . import plugins

    plugins.install()


lifecycle.install_later(install_features)

__all__ = [
    "BADGE_PREFIX", "GROUPS", "LOCK_GRACE", "MARK_GRACE",
    "GROUP_PATTERN", "MAX_AFTER", "MAX_KEY", "NO_SLOT", "PARK_POLL", "PAUSE_FILE",
    "UNIQUE", "Badge", "Gate", "KeyTaken", "Slot", "annotate", "check_dependencies_exist", "check_fields",
    "check_group", "dependency_states", "end_ring", "find_ring", "free_job_slots", "free_orphan_slots", "groups",
    "groups_dir", "is_paused", "key_held_for", "key_holder", "key_path", "limit_path", "mark_waiting", "pause",
    "pause_path", "paused_groups", "prune_guard", "read_limit", "read_slot", "release_key", "resume", "rings",
    "running_by_worker", "set_limit", "set_rate", "slot_dir", "slot_holders", "slot_names", "stale_keys", "take_key",
    "take_slot", "waiting_dir", "waiting_on",
]
