"""Prometheus text for a spool: what the dashboard's `GET /metrics` serves and `queuectl metrics` prints.

Promises:
- one function (`prometheus_text`) writes every metric name, HELP and TYPE
  line, so the dashboard and the command always agree on them;
- the text follows the Prometheus text exposition format 0.0.4, ending in
  a newline (node_exporter's textfile collector reads it as it is);
- the cost stays flat at any spool size: directory listings, one stat per
  settled file the scanner has not seen before, and the duration summary
  reads only the latest settled job files (`recent_durations`, a bounded sample).

The counters count what one long-lived process saw: a dashboard counts the
settled jobs there at its first scan plus each arrival it saw since, so
they never fall while it runs (a purge or retention deletes files, not
what was counted). The one-shot command has no earlier scan to count from:
the settled files there now are a gauge (`queuectl_jobs`), not a counter,
so it prints no counters rather than ones that fall after a purge.
Failures: OSError from the spool's folders propagates (the CLI prints it
as one line).
"""

from __future__ import annotations

import os

from .core import fsops, registry
from .features import resources
from .snapshot import FAILURES, Scanner, Snapshot, recent_durations

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DURATION_QUANTILES = (0.5, 0.9, 0.99)


def render(spool, scanner: Scanner | None = None) -> str:
    """The metrics of `spool` now; a long-lived `scanner` counts settles across calls (the counters)."""
    snapshot = (scanner or Scanner(spool)).scan()
    return prometheus_text(snapshot, len(registry.records(spool)), recent_durations(spool, snapshot),
                           counters=scanner is not None) + resource_text(resources.overview(spool))


def resource_text(hosts: list[dict]) -> str:
    """Each host's declared and held resources (docs/guide/resources.md), when any host declared some."""
    declared, held = [], []
    for host in hosts:
        for entry in host["resources"]:
            labels = f'host="{_label(host["host"])}",resource="{entry["name"]}"'
            declared.append(f"queuectl_resource_declared{{{labels}}} {entry['declared']}")
            held.append(f"queuectl_resource_held{{{labels}}} {len(entry['held'])}")
    if not declared:
        return ""
    return "\n".join(["# HELP queuectl_resource_declared How many of a resource a host declared.",
                      "# TYPE queuectl_resource_declared gauge", *declared,
                      "# HELP queuectl_resource_held How many of a resource's indexes running jobs hold.",
                      "# TYPE queuectl_resource_held gauge", *held]) + "\n"


def _label(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def prometheus_text(snapshot: Snapshot, workers: int, durations: list[float], counters: bool = True) -> str:
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str, samples: list[str]) -> None:
        lines.extend([f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *samples])

    metric("queuectl_jobs", "gauge", "Jobs in each state folder.",
           [f'queuectl_jobs{{state="{state}"}} {count}' for state, count in snapshot.counts.items()])
    metric("queuectl_workers", "gauge", "Live workers (holding their lock).",
           [f"queuectl_workers {workers}"])
    seen = snapshot.settles_seen
    if counters:
        metric("queuectl_completions_total", "counter",
               "Jobs seen arriving in completed/ by this dashboard (those there at its first scan "
               "included); a purge does not lower it.",
               [f"queuectl_completions_total {seen['completed']}"])
        metric("queuectl_failures_total", "counter",
               "Failed runs seen arriving in failed/ or dead/ by this dashboard (those there at its "
               "first scan included); a purge does not lower it.",
               [f"queuectl_failures_total {sum(seen[state] for state in FAILURES)}"])
    ordered = sorted(durations)
    quantiles = [
        f'queuectl_job_duration_seconds{{quantile="{q}"}} '
        f'{_number(ordered[min(len(ordered) - 1, int(q * len(ordered)))]) if ordered else "NaN"}'
        for q in DURATION_QUANTILES]
    metric("queuectl_job_duration_seconds", "summary",
           "Duration of the last run of the jobs that settled last (a bounded sample; _count says "
           "how many).",
           [*quantiles, f"queuectl_job_duration_seconds_sum {_number(sum(ordered))}",
            f"queuectl_job_duration_seconds_count {len(ordered)}"])
    return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    return repr(float(value))


def write_file(path: str, text: str) -> None:
    """Replace `path` with `text` in one rename, so a collector never reads half a file.

    The temporary name starts with "." and ends in ".tmp", which the textfile
    collector skips; the file gets the umask's mode, not the spool's private
    0600, because node_exporter usually runs as another user.
    """
    target = os.path.abspath(path)
    temp = fsops.write_new(os.path.dirname(target), os.path.basename(target), text.encode(), durable=False)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp, 0o666 & ~umask)
        os.replace(temp, target)
    except BaseException:
        os.unlink(temp)
        raise
