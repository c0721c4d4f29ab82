"""OS users inside the sandbox: who a request runs as, where its relative paths land, and
what it may touch.

envd runs as root and acts for the requested user, so every file operation checks the
user's POSIX permissions first and answers a clear permission error instead of quietly
doing as root what the user could not.
"""

from __future__ import annotations

import grp
import os
import posixpath
import pwd
import stat
from dataclasses import dataclass


class UnknownUserError(LookupError):
    pass


@dataclass(frozen=True, slots=True)
class User:
    name: str
    uid: int
    gid: int
    home: str
    groups: frozenset[int]

    @property
    def is_root(self) -> bool:
        return self.uid == 0


def lookup_user(name: str) -> User:
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise UnknownUserError(f"invalid username: '{name}'") from None
    groups = frozenset(os.getgrouplist(entry.pw_name, entry.pw_gid))
    return User(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir or "/", groups)


def resolve_path(path: str, user: User, default_workdir: str | None = None) -> str:
    """Absolute, normalised path: `~` is the user's home, relative paths join the home and
    an empty path means the default workdir (or the home)."""
    if path == "":
        return posixpath.normpath(default_workdir or user.home)
    if path == "~" or path.startswith("~/"):
        path = user.home + path[1:]
    elif not path.startswith("/"):
        path = posixpath.join(user.home, path)
    return posixpath.normpath(path)


def _allowed(st: os.stat_result, user: User, want: int) -> bool:
    """`want` is a mask of R_OK/W_OK/X_OK; the owner, group and other bits are checked the
    way the kernel does (the first class that matches decides)."""
    if user.is_root:
        # Root may execute only what someone may execute; everything else it may do.
        return not (want & os.X_OK) or stat.S_ISDIR(st.st_mode) or bool(st.st_mode & 0o111)
    mode = st.st_mode
    if st.st_uid == user.uid:
        bits = (mode >> 6) & 7
    elif st.st_gid in user.groups:
        bits = (mode >> 3) & 7
    else:
        bits = mode & 7
    return bits & want == want


def can_access(path: str, user: User, want: int) -> bool:
    """Whether `user` may reach `path` (search on every ancestor) and do `want` on it.
    A path that does not exist reports True: the caller's own error handling names it."""
    parts = path.split("/")
    for depth in range(1, len(parts)):
        ancestor = "/".join(parts[:depth]) or "/"
        try:
            st = os.stat(ancestor)
        except OSError:
            return True
        if not _allowed(st, user, os.X_OK):
            return False
    try:
        st = os.stat(path)
    except OSError:
        return True
    return _allowed(st, user, want)


def nearest_existing(path: str) -> str:
    while not os.path.lexists(path) and path != "/":
        path = posixpath.dirname(path)
    return path


def can_create(path: str, user: User) -> bool:
    """Whether `user` may create `path`, including any missing parent directories."""
    parent = nearest_existing(posixpath.dirname(path))
    return can_access(parent, user, os.W_OK | os.X_OK)


def owner_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def make_dirs_as(path: str, user: User) -> None:
    """mkdir -p, with every directory it creates owned by `user`."""
    missing: list[str] = []
    current = path
    while not os.path.lexists(current):
        missing.append(current)
        current = posixpath.dirname(current)
    for directory in reversed(missing):
        try:
            os.mkdir(directory, 0o755)
        except FileExistsError:
            continue
        os.chown(directory, user.uid, user.gid)
