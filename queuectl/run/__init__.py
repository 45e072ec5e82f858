"""Running one job's command: the process group, its limits and cgroup, its progress.

Above core/ (it reads the job format and writes through fsops), below the
features and the worker; nothing here knows a transition
(docs/decisions/layers.md). Empty on purpose: only the worker, and the
commands that read progress, load these modules.
"""
