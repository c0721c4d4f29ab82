"""The interpreter as a real process on a free loopback port, with real Jupyter kernels,
optionally reading the sandbox's env vars from a real envd."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from corral_libs.stack import free_port

REPO_ROOT = str(Path(__file__).resolve().parents[2])


class InterpreterProcess:
    def __init__(self, envd_url: str | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = Path(tempfile.mkdtemp(prefix="corral-interpreter-"))
        self.log_path = self.workdir / "interpreter.log"
        self._envd_url = envd_url or f"http://127.0.0.1:{free_port()}"  # none: no sandbox env vars
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 60) -> InterpreterProcess:
        env = {
            **os.environ,
            "CORRAL_HOST": "127.0.0.1",
            "CORRAL_PORT": str(self.port),
            "CORRAL_DEFAULT_CWD": str(self.workdir),
            "CORRAL_ENVD_URL": self._envd_url,
            "CORRAL_RUNTIME_DIR": str(self.workdir / "kernels"),
        }
        (self.workdir / "kernels").mkdir()
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "corral_services.interpreter"],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=log,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the interpreter exited early:\n{self.log_path.read_text()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.stop()
        log = self.log_path.read_text()
        raise RuntimeError(f"the interpreter did not answer within {timeout_s}s:\n{log}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
