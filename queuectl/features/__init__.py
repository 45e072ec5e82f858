"""queuectl's features, each plugged into the transitions through `lifecycle.Plugin`.

Groups, unique keys, dependencies and the worker's gate, resources, rate
limits, schedules, completion hooks and retention; `plugins.install()` puts
the default ones in (docs/decisions/layers.md). Empty on purpose: a command
loads only the features it uses.
"""
