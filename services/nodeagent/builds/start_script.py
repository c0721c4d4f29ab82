"""The init of a template with a start command: a script in its root that starts the
command (as the template's user, in its working directory, with its environment, output in
the start log) and then becomes what runs envd and the template's services."""

from __future__ import annotations

import os
import shlex
import stat
from pathlib import Path

from ..app_ready import START_LOG
from .steps import BECOME_USER

SCRIPT_DIR = "/opt/corral/bin"


def script_path(build_id: str) -> str:
    return f"{SCRIPT_DIR}/start-{build_id}"


def services_argv(init: list[str]) -> list[str]:
    """What tini runs in `init` (`tini [flags] -- <this>`), or `init` itself."""
    if init and init[0].endswith("/tini") and "--" in init:
        return init[init.index("--") + 1 :]
    return init


def write(
    rootfs: Path,
    build_id: str,
    *,
    start_cmd: str,
    user: str,
    workdir: str,
    env: dict[str, str],
    services_init: list[str],
) -> list[str]:
    """Writes the script; the template's new init."""
    exports = "".join(f"  export {name}={shlex.quote(value)}\n" for name, value in env.items())
    script = (
        "#!/bin/sh\n"
        "# The template's start command, then envd and the template's services. tini -g passes\n"
        "# SIGUSR1 (listen again, after a restore) to the whole group: ignored here and by it.\n"
        "trap '' USR1\n"
        + BECOME_USER
        + "(\n"
        + exports
        + f"  cd {shlex.quote(workdir)} 2>/dev/null || cd /\n"
        + "  shell=/bin/sh\n"
        + "  [ -x /bin/bash ] && shell=/bin/bash\n"
        + f'  become {shlex.quote(user)} "$shell" {shlex.quote(start_cmd)}\n'
        + f") >>{START_LOG} 2>&1 </dev/null &\n"
        + f"exec {shlex.join(services_argv(services_init))}\n"
    )
    directory = rootfs
    for part in Path(SCRIPT_DIR.lstrip("/")).parts:
        directory = directory / part
        try:
            st = os.lstat(directory)
        except FileNotFoundError:
            directory.mkdir(mode=0o755)
            continue
        # The root is what the build's steps made it: nothing in it is followed.
        if not stat.S_ISDIR(st.st_mode):
            raise ValueError(f"{directory.relative_to(rootfs)} in the template is not a directory")
    fd = os.open(directory / f"start-{build_id}", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o755)
    with os.fdopen(fd, "w") as handle:
        handle.write(script)
    tini = services_init[0] if services_init and services_init[0].endswith("/tini") else "/usr/bin/tini"
    return [tini, "-s", "-g", "--", script_path(build_id)]
