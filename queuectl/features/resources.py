"""Resources: what each host has (GPUs, licences, ...), what a job needs, and the indexes a running job holds.

The contract (docs/guide/resources.md):
- host H declares its counts in resources/hosts/H.json (`{"gpu": 4}`): each host
  writes its own file, so hosts sharing a spool never edit one file;
- index K of resource R on host H is held by one name, resources/held/H/R-K, a
  hard link of the holding worker's badge (groups.Badge), made with link():
  EEXIST decides, as for a group's slots, so no index is held by two running jobs;
- a worker takes every index a job needs, or none (what it took it gives back),
  before it claims the job, and frees them when the command ends; a dead
  worker's indexes are freed by recovery once no process of its job is left
  (runner.LeftoversPlugin ends them first), or after a sweep when the worker runs no job;
- a job gets its indexes in its environment: QUEUECTL_<R>=0,2, and for `gpu`
  also CUDA_VISIBLE_DEVICES.
Resource names have no '-', so `R-K` names one index of one resource.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

from ..core import fsops, lifecycle
from ..core.errors import InvalidJob
from ..core.job import check_count, check_resource, is_valid_id
from ..core.spool import Spool
from . import groups
from .groups import Badge, Slot, read_slot, running_by_worker

ROOT = "resources"
HOSTS = os.path.join(ROOT, "hosts")
HELD = os.path.join(ROOT, "held")
HOST_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# Environment variables a resource's indexes are also given in, as the tools that use it expect.
ALSO = {"gpu": "CUDA_VISIBLE_DEVICES"}


def host_name() -> str:
    """This host's name for its declarations: $QUEUECTL_HOST, else the node name."""
    name = os.environ.get("QUEUECTL_HOST") or os.uname().nodename
    return check_host(name)


def check_host(name: Any) -> str:
    if not isinstance(name, str) or not HOST_PATTERN.fullmatch(name):
        raise InvalidJob(f"invalid host name {str(name)[:40]!r}: use 1-128 characters of A-Z a-z 0-9 . _ -, "
                         f"starting with a letter or digit (set QUEUECTL_HOST)")
    return name


def declaration_path(spool, host: str) -> str:
    return os.path.join(spool.root, HOSTS, check_host(host) + ".json")


def declared(spool, host: str) -> dict[str, int]:
    """What `host` declared ({} when nothing, or when its file is not valid: `resource list` says so)."""
    try:
        with open(declaration_path(spool, host), encoding="utf-8") as handle:
            found = json.load(handle)
    except (OSError, ValueError):
        return {}
    if not isinstance(found, dict):
        return {}
    valid = {}
    for name, count in found.items():
        try:
            valid[check_resource(name)] = check_count(name, count, 0)
        except InvalidJob:
            continue
    return {name: count for name, count in valid.items() if count}


def declarations(spool) -> dict[str, dict[str, int]]:
    """Every host's declaration, by host."""
    found = {}
    for entry in sorted(fsops.listdir_if_there(os.path.join(spool.root, HOSTS))):
        host = entry.removesuffix(".json")
        if entry.endswith(".json") and HOST_PATTERN.fullmatch(host):
            found[host] = declared(spool, host)
    return found


def declare(spool, name: str, count: int, host: str | None = None) -> dict[str, int]:
    """Declare that `host` (this one by default) has `count` of `name` (0 removes it); returns its declaration.

    The caller holds the resources' edit lock. Indexes at or above a lowered
    count stay with the jobs holding them until they end; none is given out again.
    """
    host = host_name() if host is None else check_host(host)
    check_resource(name)
    check_count(name, count, 0)
    fsops.make_folder(os.path.join(spool.root, ROOT))
    fsops.make_folder(os.path.join(spool.root, HOSTS))
    have = declared(spool, host)
    have.pop(name, None)
    if count:
        have[name] = count
    path = declaration_path(spool, host)
    if have:
        fsops.publish(spool.dir("tmp"), path, json.dumps(dict(sorted(have.items()))).encode() + b"\n",
                      durable=spool.durable, replace=True)
    else:
        fsops.unlink_if_there(path)
    return have


def fits(needs: dict[str, int], have: dict[str, int]) -> bool:
    return all(have.get(name, 0) >= count for name, count in needs.items())


def needs_text(needs: dict[str, int]) -> str:
    return ",".join(f"{name}={count}" for name, count in needs.items())


def refusal(needs: dict[str, int], found: dict[str, dict[str, int]]) -> str | None:
    """Why no host can ever run a job that needs `needs` (None: some host has enough)."""
    if any(fits(needs, have) for have in found.values()):
        return None
    if not found:
        return (f"needs {needs_text(needs)}, but no host has declared any resource "
                f"('queuectl resource set NAME COUNT' on the host that has it)")
    hosts = "; ".join(f"{host}: {needs_text(have) or 'nothing'}" for host, have in found.items())
    return f"needs {needs_text(needs)}, more than any host has ({hosts})"


# -- indexes -------------------------------------------------------------------

def held_dir(spool, host: str) -> str:
    return os.path.join(spool.root, HELD, host)


def take(spool, host: str, needs: dict[str, int], have: dict[str, int], badge: Badge) -> Slot | None:
    """The indexes `needs` asks for on `host`, every one or none (None: not enough free now).

    Resources in name order, indexes from the lowest: every worker takes them in
    one order and gives back all it took when one is missing, so no two
    workers wait on each other.
    """
    folder = held_dir(spool, host)
    taken: list[str] = []
    env: dict[str, str] = {}
    for name, count in needs.items():
        got: list[int] = []
        for index in range(have.get(name, 0)):
            if len(got) == count:
                break
            path = os.path.join(folder, f"{name}-{index}")
            if _link(spool, badge, path, folder):
                taken.append(path)
                got.append(index)
        if len(got) < count:
            for path in taken:
                fsops.unlink_if_there(path)
            return None
        text = ",".join(map(str, got))
        env[f"QUEUECTL_{name.upper()}"] = text
        if name in ALSO:
            env[ALSO[name]] = text
    holding = Slot(env=env)
    holding.paths = taken
    return holding


def _link(spool, badge: Badge, path: str, folder: str) -> bool:
    for _ in range(2):
        try:
            os.link(badge.path, path)
            return True
        except FileExistsError:
            try:
                return os.lstat(path).st_ino == badge.ino  # a retried call that had succeeded (NFS)
            except FileNotFoundError:
                continue
        except FileNotFoundError:  # the host's first index: make its folders
            for part in (ROOT, HELD, os.path.join(HELD, os.path.basename(folder))):
                fsops.make_folder(os.path.join(spool.root, part))
    return False


def _held(spool) -> list[tuple[str, str, int, str]]:
    """(host, resource, index, path) of every index held on any host."""
    found = []
    root = os.path.join(spool.root, HELD)
    for host in sorted(fsops.listdir_if_there(root)):
        if not HOST_PATTERN.fullmatch(host):
            continue
        for entry in sorted(fsops.listdir_if_there(os.path.join(root, host))):
            name, _, index = entry.rpartition("-")
            if index.isdigit() and re.fullmatch(r"[a-z][a-z0-9_]{0,31}", name):
                found.append((host, name, int(index), os.path.join(root, host, entry)))
    return found


def held_count(spool, host: str) -> dict[str, int]:
    """How many indexes of each resource are held on `host` now."""
    counts: dict[str, int] = {}
    for entry in fsops.listdir_if_there(held_dir(spool, host)):
        name, _, index = entry.rpartition("-")
        if index.isdigit():
            counts[name] = counts.get(name, 0) + 1
    return counts


def free_job_indexes(spool, job: dict) -> None:
    """Free the indexes the job's dead worker held (recovery, under the job's flock); no process of
    the job is left by then (runner.LeftoversPlugin acts first)."""
    if not isinstance(job.get("needs"), dict):
        return
    worker = job.get("worker")
    if not isinstance(worker, str) or groups.worker_alive(spool, worker):
        return
    mine = [path for _, _, _, path in _held(spool) if (read_slot(path) or {}).get("worker") == worker]
    for path in mine:
        fsops.unlink_if_there(path)


def free_orphan_indexes(spool, *, repair: bool = True) -> list[dict[str, Any]]:
    """Free indexes whose worker is dead and runs no job in processing/ (recovery frees the others)."""
    found = []
    running = None
    for host, name, index, path in _held(spool):
        holder = read_slot(path)
        if holder is None or groups.worker_alive(spool, holder.get("worker")):
            continue
        worker = holder.get("worker")
        running = running_by_worker(spool) if running is None else running
        if isinstance(worker, str) and worker in running:
            continue  # recovery frees it when it moves the job on
        finding = {"problem": "orphan-resource", "path": os.path.relpath(path, spool.root),
                   "detail": f"{name} {index} on {host}, held by worker {worker}, which is gone", "repaired": False}
        if repair:
            finding["repaired"] = groups.remove_if(spool, path, holder["ino"])
        found.append(finding)
    return found


def overview(spool) -> list[dict[str, Any]]:
    """Each host's resources: declared count and who holds which index (worker, job)."""
    running = running_by_worker(spool)
    hosts: dict[str, dict[str, dict[str, Any]]] = {}
    for host, have in declarations(spool).items():
        hosts[host] = {name: {"declared": count, "held": []} for name, count in have.items()}
    for host, name, index, path in _held(spool):
        holder = read_slot(path) or {}
        worker = holder.get("worker")
        job = running.get(worker) if isinstance(worker, str) else None
        entry = hosts.setdefault(host, {}).setdefault(name, {"declared": 0, "held": []})
        entry["held"].append({"index": index, "worker": worker, "job": job.get("id") if job else None})
    return [{"host": host, "resources": [{"name": name, **entry} for name, entry in sorted(found.items())]}
            for host, found in sorted(hosts.items())]


def waiting_reason(spool, job: dict) -> str | None:
    """Why a pending job with `needs` cannot start on any host (None: some host has enough)."""
    needs = job.get("needs")
    if not isinstance(needs, dict) or not needs:
        return None
    return refusal(needs, declarations(spool))


class ResourcesPlugin(lifecycle.Plugin):
    """Refuses at enqueue a job no host can run; frees a dead worker's indexes in recovery."""

    def check_enqueue(self, spool: Spool, job: dict, earlier: set[str]) -> None:
        needs = job.get("needs")
        if not isinstance(needs, dict) or not needs or spool.shared:
            return  # a shared spool's hosts may declare later: the job waits, and `show` says why
        reason = refusal(needs, declarations(spool))
        if reason is not None:
            raise InvalidJob(f"job {job['id']} {reason}")

    def on_recover(self, spool: Spool, job: dict, leftovers: bool) -> None:
        free_job_indexes(spool, job)

    def after_recover(self, spool: Spool) -> None:
        free_orphan_indexes(spool)


def worker_names(values: Any) -> list[str]:
    return [value for value in values if is_valid_id(value)]
