"""Which file system a path lives on, so watches refuse network mounts unless asked."""

from __future__ import annotations

import os

NETWORK_FS_TYPES = frozenset(
    {"nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "ceph", "glusterfs", "fuse.sshfs"}
)


def _unescape(field: str) -> str:
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def fs_type(path: str) -> str:
    real = os.path.realpath(path)
    best, best_type = "", ""
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            left, _, right = line.partition(" - ")
            mount_point = _unescape(left.split()[4])
            inside = real == mount_point or real.startswith(mount_point.rstrip("/") + "/")
            if inside and len(mount_point) >= len(best):
                best, best_type = mount_point, right.split()[0]
    return best_type


def is_network_mount(path: str) -> bool:
    return fs_type(path) in NETWORK_FS_TYPES
