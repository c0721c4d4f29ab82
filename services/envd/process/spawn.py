"""Starting a process as a sandbox user, on pipes or on a real pseudo-terminal."""

from __future__ import annotations

import asyncio
import fcntl
import os
import struct
import termios
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from ..users import User

READ_CHUNK = 32 * 1024


@dataclass(slots=True)
class Spawned:
    process: asyncio.subprocess.Process
    # Pipe mode: stdout/stderr readers. PTY mode: one reader on the master side.
    stdout: asyncio.StreamReader
    stderr: asyncio.StreamReader | None
    pty_master: int | None


def process_env(
    user: User, sandbox_envs: Mapping[str, str], request_envs: Mapping[str, str]
) -> dict[str, str]:
    """PATH from envd's own environment, the user's identity, then sandbox-level env vars,
    then the request's own (last wins)."""
    env = {"PATH": os.environ.get("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")}
    env.update(HOME=user.home, USER=user.name, LOGNAME=user.name)
    env.update(sandbox_envs)
    env.update(request_envs)
    return env


def set_winsize(fd: int, cols: int, rows: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _child_setup(user: User, pty_slave: int | None) -> Callable[[], None]:
    """What the child does between fork and exec: lead a new session with the PTY as its
    terminal, then become the user. uvloop runs this before it sets up stdio and has no
    user/group arguments, hence the explicit slave fd and the id changes here."""
    groups = sorted(user.groups)

    def setup() -> None:
        if pty_slave is not None:
            os.setsid()
            fcntl.ioctl(pty_slave, termios.TIOCSCTTY, 0)
        if not user.is_root:
            os.setgroups(groups)
            os.setgid(user.gid)
            os.setuid(user.uid)

    return setup


async def _reader_for_fd(fd: int) -> asyncio.StreamReader:
    """A reader over its own duplicate of `fd`: the transport closes that copy when it
    sees EIO, while `fd` stays valid for writes and resizes until its owner closes it."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=READ_CHUNK * 4)
    pipe = os.fdopen(os.dup(fd), "rb", buffering=0)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
    return reader


async def spawn(
    cmd: str,
    args: Sequence[str],
    *,
    user: User,
    env: Mapping[str, str],
    cwd: str,
    stdin: bool,
    pty_size: tuple[int, int] | None,
) -> Spawned:
    """Raises OSError when the program cannot be started."""
    if pty_size is None:
        process = await asyncio.create_subprocess_exec(
            cmd,
            *args,
            stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
            preexec_fn=_child_setup(user, None),
            limit=READ_CHUNK * 4,
        )
        assert process.stdout is not None and process.stderr is not None
        return Spawned(process, process.stdout, process.stderr, None)

    master, slave = os.openpty()
    try:
        set_winsize(master, *pty_size)
        process = await asyncio.create_subprocess_exec(
            cmd,
            *args,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=dict(env),
            cwd=cwd,
            preexec_fn=_child_setup(user, slave),
        )
    except BaseException:
        os.close(master)
        raise
    finally:
        os.close(slave)
    os.set_blocking(master, False)
    return Spawned(process, await _reader_for_fd(master), None, master)
