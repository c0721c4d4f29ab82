"""envd as a real process in a root of its own.

bubblewrap gives it the host's programs read-only, plus its own /etc/passwd and /etc/group
(with the sandbox user `user`, uid 1000), /home, /root and /tmp from a temporary directory:
the test can create users and files freely and the host's own files never change.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from corral_libs.stack import free_port

REPO_ROOT = str(Path(__file__).resolve().parents[2])
USER_UID = 1000
PASSWD = """root:x:0:0:root:/root:/bin/bash
user:x:1000:1000:sandbox user:/home/user:/bin/bash
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
"""
GROUP = """root:x:0:
user:x:1000:
nogroup:x:65534:
"""


SMALL_FS = "/tmp/small"
SMALL_FS_BYTES = 1 << 20


def bwrap_available() -> bool:
    return shutil.which("bwrap") is not None and os.geteuid() == 0


class EnvdInSandbox:
    """Start with `start()`, stop with `stop()`; `url` is envd's base URL."""

    def __init__(self, extra_args: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.root = Path(tempfile.mkdtemp(prefix="corral-envd-"))
        self._extra_args = extra_args
        self._process: subprocess.Popen[bytes] | None = None
        self.log_path = self.root / "envd.log"

    def host_path(self, sandbox_path: str) -> Path:
        """Where a path under /home, /root or /tmp of the sandbox lies on the host."""
        top, _, rest = sandbox_path.lstrip("/").partition("/")
        return self.root / top / rest

    def _prepare_root(self) -> None:
        (self.root / "etc").mkdir()
        (self.root / "etc" / "passwd").write_text(PASSWD)
        (self.root / "etc" / "group").write_text(GROUP)
        for directory in ("home/user", "root", "tmp"):
            (self.root / directory).mkdir(parents=True)
        os.chown(self.root / "home" / "user", USER_UID, USER_UID)
        (self.root / "root").chmod(0o700)
        (self.root / "tmp").chmod(0o1777)

    @staticmethod
    def _host_binds() -> list[str]:
        """The interpreter, the virtualenv or this checkout may live under a directory the
        sandbox gets its own copy of (pyenv under /root, a clone under /tmp): bind them back."""
        binds: list[str] = []
        for path in {os.path.realpath(p) for p in (sys.base_prefix, sys.prefix, REPO_ROOT)}:
            if path.startswith(("/root/", "/home/", "/tmp/")):
                binds += ["--ro-bind", path, path]
        return binds

    def command(self) -> list[str]:
        envd = [
            sys.executable,
            "-m",
            "corral_libs.cli",
            "envd",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        return [
            "bwrap",
            "--ro-bind",
            "/",
            "/",
            "--dev",
            "/dev",
            "--proc",
            "/proc",
            "--bind",
            str(self.root / "tmp"),
            "/tmp",
            # A small filesystem to run out of space on.
            "--size",
            str(SMALL_FS_BYTES),
            "--tmpfs",
            SMALL_FS,
            "--bind",
            str(self.root / "home"),
            "/home",
            "--bind",
            str(self.root / "root"),
            "/root",
            *self._host_binds(),
            "--ro-bind",
            str(self.root / "etc" / "passwd"),
            "/etc/passwd",
            "--ro-bind",
            str(self.root / "etc" / "group"),
            "/etc/group",
            "--unshare-pid",
            "--unshare-ipc",
            "--die-with-parent",
            "--cap-add",
            "ALL",
            "--chdir",
            REPO_ROOT,
            *envd,
            *self._extra_args,
        ]

    def start(self, timeout_s: float = 30) -> EnvdInSandbox:
        self._prepare_root()
        log = self.log_path.open("wb")
        self._process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"envd exited early:\n{self.log_path.read_text()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 204:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"envd did not answer within {timeout_s}s:\n{self.log_path.read_text()}")

    def daemon_pid(self) -> int:
        """The envd process itself (bwrap's descendant that the CLI became)."""
        assert self._process is not None
        parents: dict[int, int] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
        for pid in parents:
            ancestor = parents.get(pid)
            while ancestor and ancestor != self._process.pid:
                ancestor = parents.get(ancestor)
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            # `corral envd` becomes `python -P -m corral_services.envd`.
            if ancestor and b"corral_services.envd" in argv[1:4]:
                return pid
        raise LookupError("envd process not found")

    def peak_rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.daemon_pid()}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise LookupError("VmHWM missing")

    def init(self, **body: object) -> httpx.Response:
        return httpx.post(f"{self.url}/init", json=body, timeout=10)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        shutil.rmtree(self.root, ignore_errors=True)
