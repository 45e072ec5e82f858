"""Which file system a spool lives on, and whether other hosts may share it.

`mode(spool)` is "shared" or "local"; the config key `shared`
(auto/true/false) overrides what the file system type says. "local" means
flocks prove who is alive and inotify sees every change; "shared" means
other hosts may write here, so liveness comes from leases (lease.py) and
wake-ups from polling (watch.py). docs/guide/several-hosts.md, "Local or shared mode".

The type is read from /proc/self/mountinfo (the mount holding the spool's
real path), else from statfs(2)'s f_type. When neither answers, the spool
is taken as local: an unknown file system is most often a local one, and
the config key `shared` says otherwise where it is not.
"""

from __future__ import annotations

import os

# Types whose files other machines can change: network and cluster file
# systems, and FUSE (sshfs, glusterfs, bindfs of a share...), which
# queuectl cannot see through.
SHARED_TYPES = ("nfs", "nfs4", "cifs", "smb3", "smbfs", "ceph", "lustre", "gpfs", "9p", "afs", "ocfs2",
                "gfs2", "glusterfs", "beegfs", "orangefs", "pvfs2", "virtiofs", "davfs", "fuse", "fuseblk")

# statfs f_type magic numbers of the same file systems (linux/magic.h and the file systems' own sources).
SHARED_MAGIC = {
    0x6969: "nfs", 0xFF534D42: "cifs", 0xFE534D42: "smb3", 0x517B: "smbfs", 0x00C36400: "ceph",
    0x0BD00BD0: "lustre", 0x47504653: "gpfs", 0x01021997: "9p", 0x5346414F: "afs", 0x7461636F: "ocfs2",
    0x01161970: "gfs2", 0x65735546: "fuse", 0x6A656A63: "virtiofs",
}


def is_shared_type(fstype: str) -> bool:
    """True for network, cluster and FUSE file systems ("fuse.glusterfs", "nfs4", ...)."""
    return fstype.split(".")[0] in SHARED_TYPES or fstype in SHARED_TYPES


def filesystem(path: str) -> str:
    """The type of the file system holding `path` ("ext4", "nfs4", "fuse.glusterfs"...); "" if unknown."""
    real = os.path.realpath(path)
    found = _from_mountinfo(real)
    return found if found is not None else _from_statfs(real)


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash in paths as octal escapes."""
    for code in ("\\040", "\\011", "\\012", "\\134"):
        field = field.replace(code, chr(int(code[1:], 8)))
    return field


def _from_mountinfo(real: str) -> str | None:
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return None
    best, best_type = -1, None
    for line in lines:
        fields = line.split()
        try:
            point = _unescape(fields[4])
            fstype = fields[fields.index("-") + 1]
        except (IndexError, ValueError):
            continue
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= best:  # the last of equal mount points is the one on top
            best, best_type = len(point), fstype
    return best_type


def _from_statfs(real: str) -> str:
    # ctypes only here, where /proc is missing: `status` and the other commands that
    # only read must not load it (tests/unit/test_cli.py checks their imports).
    import ctypes

    class _Statfs(ctypes.Structure):
        # Only f_type is read; the rest of struct statfs is room for the kernel to write into.
        _fields_ = [("f_type", ctypes.c_long), ("rest", ctypes.c_byte * 256)]
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        buffer = _Statfs()
        if libc.statfs(os.fsencode(real), ctypes.byref(buffer)) != 0:
            return ""
    except (OSError, AttributeError):
        return ""
    return SHARED_MAGIC.get(buffer.f_type & 0xFFFFFFFF, f"0x{buffer.f_type & 0xFFFFFFFF:x}")


def mode(spool) -> str:
    """ "shared" or "local" for this spool on this host (config `shared`: auto, true or false)."""
    chosen = spool.config.get("shared", "auto")
    if chosen == "true":
        return "shared"
    if chosen == "false":
        return "local"
    return "shared" if is_shared_type(filesystem(spool.root)) else "local"
