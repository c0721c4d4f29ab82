"""EntryInfo for a path: type, size, mode, owner, times, symlink target and `user.e2b.*`
metadata, the way E2B's envd reports them."""

from __future__ import annotations

import os
import stat

from protobuf.wkt.google.protobuf.timestamp_pb import Timestamp

from ..gen.filesystem import filesystem_pb as pb
from ..users import group_name, owner_name

METADATA_XATTR_PREFIX = "user.e2b."


def file_type(mode: int) -> pb.FileType:
    if stat.S_ISDIR(mode):
        return pb.FileType.DIRECTORY
    if stat.S_ISLNK(mode):
        return pb.FileType.SYMLINK
    return pb.FileType.FILE


def read_metadata(path: str) -> dict[str, str]:
    try:
        names = os.listxattr(path)
    except OSError:
        return {}
    metadata = {}
    for name in names:
        if name.startswith(METADATA_XATTR_PREFIX):
            try:
                value = os.getxattr(path, name)
            except OSError:
                continue
            metadata[name[len(METADATA_XATTR_PREFIX) :]] = value.decode(errors="replace")
    return metadata


def entry_info(path: str) -> pb.EntryInfo:
    """Raises FileNotFoundError when `path` does not exist."""
    link = os.lstat(path)
    entry = pb.EntryInfo(name=os.path.basename(path) or "/", path=path)
    st = link
    if stat.S_ISLNK(link.st_mode):
        entry.is_symlink = True
        entry.symlink_target = os.path.realpath(path)
        try:
            st = os.stat(path)
        except OSError:  # dangling: all there is to report is the link itself
            st = link
    entry.type = file_type(st.st_mode)
    entry.size = st.st_size
    entry.mode = stat.S_IMODE(st.st_mode)
    entry.permissions = stat.filemode(st.st_mode)
    entry.owner = owner_name(st.st_uid)
    entry.group = group_name(st.st_gid)
    entry.modified_time = Timestamp.from_nanos(st.st_mtime_ns)
    metadata = read_metadata(path)
    if metadata:
        entry.metadata = metadata
    return entry
