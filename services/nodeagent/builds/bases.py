"""What a build starts from: one of this node's templates, or an image from a registry
(unpacked, provisioned with the sandbox user, and given envd and the sandbox's network files
by Corral)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from corral_libs.contracts.envd import ENVD_VERSION
from corral_libs.contracts.messages import BuildSpec
from corral_libs.contracts.sandbox_net import RESOLVER_ADDRESS

from ..templates.store import TemplateManifest, TemplateStore
from . import envd_kit
from .images import ImageError, ImageStore

SANDBOX_USER = "user"
IMAGE_DISK_MB = 4096
# Run as root in the image's first step: the sandbox user E2B's templates have (uid 1000,
# home /home/user, passwordless sudo where sudo exists), with whatever tools the image has.
PROVISION_SCRIPT = r"""
set -e
if ! grep -q '^user:' /etc/passwd 2>/dev/null; then
  shell=/bin/sh
  [ -x /bin/bash ] && shell=/bin/bash
  if command -v useradd >/dev/null 2>&1; then
    useradd -m -u 1000 -s "$shell" user
  elif command -v adduser >/dev/null 2>&1; then
    adduser -D -u 1000 -s "$shell" user
  else
    echo "user:x:1000:1000::/home/user:$shell" >> /etc/passwd
    echo "user:x:1000:" >> /etc/group
  fi
fi
mkdir -p /home/user
chown 1000:1000 /home/user
if [ -d /etc/sudoers.d ]; then
  echo 'user ALL=(ALL:ALL) NOPASSWD: ALL' > /etc/sudoers.d/corral-user
  chmod 440 /etc/sudoers.d/corral-user
fi
"""


class BaseUnavailable(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class Base:
    """A build's starting point: its root (resolved when needed: a template's may move
    aside), the cache key it gives the first step, and what the template inherits."""

    describe: str
    key: str
    rootfs: Callable[[], Path]
    user: str
    workdir: str
    env: dict[str, str]
    envd_version: str
    disk_mb: int
    services: list[int]
    init: list[str]
    services_init: list[str]
    start_cmd: str | None = None
    ready_cmd: str | None = None
    # Directories laid over the finished root last (envd's kit, the network files).
    overlays: list[Path] = field(default_factory=list)
    needs_provisioning: bool = False


def template_base(templates: TemplateStore, parent: TemplateManifest) -> Base:
    def rootfs() -> Path:
        found = templates.find_build(parent.template_id, parent.build_id)
        if found is None:
            raise BaseUnavailable(f"template {parent.template_id} build {parent.build_id} is gone")
        return found[1] / "rootfs"

    home = "/root" if parent.user == "root" else f"/home/{parent.user}"
    return Base(
        describe=f"template {parent.template_id} (build {parent.build_id})",
        key=hashlib.sha256(f"template:{parent.template_id}:{parent.build_id}".encode()).hexdigest(),
        rootfs=rootfs,
        user=parent.user,
        workdir=parent.workdir or home,
        env=dict(parent.env_vars),
        envd_version=parent.envd_version,
        disk_mb=parent.disk_mb,
        services=parent.services,
        init=parent.init,
        services_init=parent.services_init,
        start_cmd=parent.start_cmd,
        ready_cmd=parent.ready_cmd,
    )


async def image_base(images: ImageStore, spec: BuildSpec, root: Path, log: Callable[[str], None]) -> Base:
    """Pulls the image; the envd kit (made once) and the network files go over it at the end."""
    try:
        image = await images.pull(spec.from_image, spec.registry_auth, log)
    except ImageError as exc:
        raise BaseUnavailable(str(exc)) from None
    if not await asyncio.to_thread(_has_shell, image.rootfs):
        raise BaseUnavailable(
            f"image {spec.from_image} has no shell (/bin/sh): Corral runs build steps and commands with "
            "it; use an image with a shell (and a libc or static tools)"
        )
    try:
        kit = await asyncio.to_thread(envd_kit.ensure, root / ".envd-kit")
    except envd_kit.KitError as exc:
        raise BaseUnavailable(f"preparing envd for the image failed: {exc}") from None
    files = await asyncio.to_thread(_network_files, root / ".network-files")
    init = envd_kit.envd_init()
    return Base(
        describe=f"image {spec.from_image} ({image.digest})",
        key=hashlib.sha256(f"image:{image.digest}".encode()).hexdigest(),
        rootfs=lambda: image.rootfs,
        user="root",
        workdir="/",
        env=image.env,
        envd_version=ENVD_VERSION,
        disk_mb=IMAGE_DISK_MB,
        services=[],
        init=init,
        services_init=init,
        overlays=[kit, files],
        needs_provisioning=True,
    )


def _has_shell(rootfs: Path) -> bool:
    """Only whether the path exists in the image (a symlink is not followed out of it)."""
    return any(os.path.lexists(rootfs / path) for path in ("bin/sh", "usr/bin/sh"))


def _network_files(directory: Path) -> Path:
    """/etc/resolv.conf, hosts and hostname as every sandbox has them (the node answers DNS
    at one fixed address: libs/contracts/sandbox_net.py)."""
    etc = directory / "etc"
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "resolv.conf").write_text(f"nameserver {RESOLVER_ADDRESS}\noptions timeout:2 attempts:2\n")
    (etc / "hosts").write_text("127.0.0.1 localhost\n127.0.1.1 sandbox\n::1 localhost\n")
    (etc / "hostname").write_text("sandbox\n")
    return directory
