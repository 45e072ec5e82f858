"""The JSON Schema (draft 2020-12) of a job file, as it may be enqueued or dropped in.

The schema ships in the package as `schema.json` so any tool can check a
file before it reaches the spool (`queuectl schema` prints it). It agrees
with `job.build()`, the one gate every job passes, on everything a JSON
Schema can say; what it cannot say (the 1 MiB limit, lone surrogates,
whether a time parses, integers written as 1.0) is listed in its
descriptions and in docs/spool-format.md, and `build()` still refuses it.
tests/unit/test_schema.py holds the two to each other. Reading the file fails
only if the package is broken (OSError, ValueError).
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any


def schema_text() -> str:
    """The schema exactly as packaged (what `queuectl schema` prints)."""
    return resources.files(__package__).joinpath("schema.json").read_text(encoding="utf-8")


def job_schema() -> dict[str, Any]:
    """The schema as a dict, for `jsonschema.validate(job, job_schema())`."""
    return json.loads(schema_text())
