"""`corral up` as a user starts it (the CLI, in its own process), on random ports over the
shared templates, and `corral status` to see its processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from corral_libs.stack import free_port

REPO = Path(__file__).resolve().parents[2]
TEMPLATE_DIR = Path(os.environ.get("CORRAL_TEST_TEMPLATE_DIR", "/var/lib/corral/templates"))
CORRAL = [sys.executable, "-m", "corral_libs.cli"]
# What `corral up` runs, in the order the tests and bench/recovery.py kill them.
PROCESSES = ("scheduler", "nodeagent", "api", "proxy", "redis", "nats")


class CorralUp:
    def __init__(self, data_dir: Path, slot_base: int = 22000) -> None:
        self.slot_base = slot_base
        self.data_dir = data_dir
        self.env_file = data_dir / "corral.env"
        self.ports = {name: free_port() for name in ("api", "proxy", "nats", "redis")}
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        argv = [
            *CORRAL, "up", "--data-dir", str(self.data_dir), "--template-dir", str(TEMPLATE_DIR),
            "--templates", "base", "--env-file", str(self.env_file),
            *(arg for name, port in self.ports.items() for arg in (f"--{name}-port", str(port))),
        ]  # fmt: skip
        env = {
            **os.environ,
            "CORRAL_SLOT_BASE": str(self.slot_base),
            "CORRAL_RUNTIME": "gvisor",
            "CORRAL_NODE_ID": "upnode",
        }
        self.log = (self.data_dir / "up.out").open("w")
        self.process = subprocess.Popen(
            argv, cwd=REPO, env=env, stdout=self.log, stderr=subprocess.STDOUT, text=True
        )
        deadline = time.time() + 240
        while not self.env_file.exists() or self.status() is None:
            assert self.process.poll() is None, (self.data_dir / "up.out").read_text()[-3000:]
            assert time.time() < deadline, "corral up did not come up"
            time.sleep(0.5)

    def conn(self) -> dict[str, str]:
        exports = dict(
            line.removeprefix("export ").split("=", 1)
            for line in self.env_file.read_text().splitlines()
            if line
        )
        return {
            "api_key": exports["E2B_API_KEY"],
            "api_url": exports["E2B_API_URL"],
            "sandbox_url": exports["E2B_SANDBOX_URL"],
            "domain": exports["E2B_DOMAIN"],
        }

    def status(self) -> dict | None:
        out = subprocess.run(
            [*CORRAL, "status", "--json", "--data-dir", str(self.data_dir)],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
        return {row["process"]: row for row in json.loads(out.stdout)} if out.returncode == 0 else None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            self.process.wait(120)
        self.log.close()
