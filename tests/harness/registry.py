"""A Docker registry (Debian's docker-registry, the registry v2 server) on a loopback port
with token auth (registry_tokens.py issues tokens for a user and password), and a test image
assembled with umoci from a busybox root in two layers (the second deletes a file of the
first: a whiteout), pushed with skopeo."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from corral_libs.stack import free_port

from .registry_tokens import ISSUER, SERVICE, TokenService

USERNAME = "corral"
PASSWORD = "registry-secret"
IMAGE = "corral/busybox"
TAG = "v1"


@dataclass(frozen=True)
class Registry:
    address: str  # host:port

    @property
    def image(self) -> str:
        return f"{self.address}/{IMAGE}:{TAG}"


def available() -> bool:
    return all(shutil.which(tool) for tool in ("docker-registry", "skopeo", "umoci", "busybox"))


@contextlib.contextmanager
def running_registry() -> Iterator[Registry]:
    root = Path(tempfile.mkdtemp(prefix="corral-registry-"))
    port = free_port()
    tokens = TokenService(root, USERNAME, PASSWORD)
    tokens.start()
    (root / "config.yml").write_text(
        f"""version: 0.1
storage:
  filesystem:
    rootdirectory: {root / "data"}
http:
  addr: 127.0.0.1:{port}
auth:
  token:
    realm: {tokens.realm}
    service: {SERVICE}
    issuer: {ISSUER}
    rootcertbundle: {tokens.cert_path}
log:
  level: warn
"""
    )
    log = (root / "registry.log").open("w")
    process = subprocess.Popen(["docker-registry", "serve", str(root / "config.yml")], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=1).status_code == 401:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, (root / "registry.log").read_text()
            time.sleep(0.1)
        registry = Registry(address=f"127.0.0.1:{port}")
        _push_test_image(registry, root / "image")
        yield registry
    finally:
        process.terminate()
        process.wait(10)
        log.close()
        tokens.stop()
        shutil.rmtree(root, ignore_errors=True)


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


def _push_test_image(registry: Registry, work: Path) -> None:
    layout, bundle = work / "layout", work / "bundle"
    work.mkdir()
    _run("umoci", "init", "--layout", str(layout))
    _run("umoci", "new", "--image", f"{layout}:{TAG}")
    _run("umoci", "unpack", "--image", f"{layout}:{TAG}", str(bundle))
    rootfs = bundle / "rootfs"
    for directory in ("bin", "etc", "tmp", "root", "home", "proc", "dev", "sys"):
        (rootfs / directory).mkdir(exist_ok=True)
    (rootfs / "tmp").chmod(0o1777)
    shutil.copy2(shutil.which("busybox") or "/bin/busybox", rootfs / "bin" / "busybox")
    for applet in subprocess.run(["busybox", "--list"], capture_output=True, text=True).stdout.split():
        if not (rootfs / "bin" / applet).exists():
            (rootfs / "bin" / applet).symlink_to("busybox")
    # The SDKs run commands with `/bin/bash -l -c`: busybox's ash under that name.
    (rootfs / "bin" / "bash").unlink(missing_ok=True)
    (rootfs / "bin" / "bash").write_text('#!/bin/busybox ash\nexec /bin/busybox ash "$@"\n')
    (rootfs / "bin" / "bash").chmod(0o755)
    (rootfs / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (rootfs / "etc" / "group").write_text("root:x:0:\n")
    (rootfs / "etc" / "layer-one.txt").write_text("one\n")
    (rootfs / "etc" / "removed.txt").write_text("deleted in the second layer\n")
    _run("umoci", "repack", "--image", f"{layout}:{TAG}", str(bundle))
    (rootfs / "etc" / "removed.txt").unlink()
    (rootfs / "etc" / "layer-two.txt").write_text("two\n")
    _run("umoci", "repack", "--image", f"{layout}:{TAG}", str(bundle))
    _run("umoci", "config", "--image", f"{layout}:{TAG}", "--config.env", "GREETING=from the image",
         "--config.env", "PATH=/bin")  # fmt: skip
    _run(
        "skopeo", "copy", "--dest-tls-verify=false", "--dest-creds", f"{USERNAME}:{PASSWORD}",
        f"oci:{layout}:{TAG}", f"docker://{registry.image}",
    )  # fmt: skip
