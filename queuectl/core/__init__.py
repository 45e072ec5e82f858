"""The spool itself: files, the job format, config, the layout, and every transition.

Nothing here imports a module outside this folder. From the bottom up:
file operations (fsops, errors, order, units, fstype, transient), the job
format and its field checks (job, limits), config, the workers' own files
(workerfiles, locks, registry, lease, events), the layout (spool), the
state machine (lifecycle, with the `Plugin` interface features join
through) and the group commit (commit). docs/decisions/layers.md draws it.

Empty on purpose: `queuectl enqueue` loads only the modules it uses.
"""
