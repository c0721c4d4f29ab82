"""Images from OCI/Docker registries as template bases: pulled with skopeo (the registry v2
protocol, token and basic auth, the digest pinned), unpacked with umoci (layers in order,
whiteouts honoured), kept by digest next to the templates so a second build from the same
image pulls nothing."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from corral_libs.contracts.messages import RegistryAuth

from ..commands import CommandFailed, run_status

_REFERENCE = re.compile(r"[a-z0-9][a-z0-9._/:@-]{0,254}", re.I)
PULL_TIMEOUT_S = 1800.0


class ImageError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class PulledImage:
    reference: str
    digest: str
    rootfs: Path
    env: dict[str, str]


class ImageStore:
    def __init__(self, root: Path, insecure_registries: set[str]) -> None:
        self.root = root
        self._insecure = insecure_registries

    def _plain_http(self, reference: str) -> bool:
        """Registries the operator allows over plain HTTP (`insecure_registries`)."""
        return "/" in reference and reference.split("/", 1)[0] in self._insecure

    async def pull(
        self, reference: str, auth: RegistryAuth | None, log: Callable[[str], None]
    ) -> PulledImage:
        if not _REFERENCE.fullmatch(reference):
            raise ImageError(f"invalid image reference '{reference}'")
        creds = ["--creds", f"{auth.username}:{auth.password}"] if auth else []
        plain = self._plain_http(reference)
        log(f"Resolving {reference}")
        tls = ["--tls-verify=false"] if plain else []
        raw = await _skopeo(["inspect", *tls, *creds, f"docker://{reference}"], reference)
        digest = json.loads(raw)["Digest"]
        target = self.root / digest.replace(":", "-")
        if not (target / "ready").is_file():
            log(f"Pulling {reference} ({digest})")
            await self._fetch(reference, auth, ["--src-tls-verify=false"] if plain else [], target, log)
        else:
            log(f"Using {reference} ({digest}), pulled before")
            await asyncio.to_thread(os.utime, target)
        config = json.loads((target / "config.json").read_text())
        env = dict(
            item.split("=", 1) for item in (config.get("config") or {}).get("Env") or [] if "=" in item
        )
        return PulledImage(reference=reference, digest=digest, rootfs=target / "rootfs", env=env)

    async def _fetch(
        self,
        reference: str,
        auth: RegistryAuth | None,
        tls: list[str],
        target: Path,
        log: Callable[[str], None],
    ) -> None:
        await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)
        work = Path(await asyncio.to_thread(tempfile.mkdtemp, None, ".pull-", self.root))
        try:
            creds = ["--src-creds", f"{auth.username}:{auth.password}"] if auth else []
            await _skopeo(
                ["copy", *tls, *creds, f"docker://{reference}", f"oci:{work / 'oci'}:image"], reference, log
            )
            log("Unpacking the image's layers")
            await _command(
                ["umoci", "raw", "unpack", "--image", f"{work / 'oci'}:image", str(work / "rootfs")]
            )
            image_config = await asyncio.to_thread(_image_config, work / "oci")
            await asyncio.to_thread((work / "config.json").write_text, json.dumps(image_config))
            await asyncio.to_thread(shutil.rmtree, work / "oci")
            await asyncio.to_thread((work / "ready").write_text, reference)
            try:
                await asyncio.to_thread(os.rename, work, target)
            except OSError:
                if not (target / "ready").is_file():
                    raise
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)

    def collect(self, older_than_s: float) -> None:
        """Images no build pulled or used for `older_than_s` (and leftovers of pulls) go."""
        if not self.root.is_dir():
            return
        cutoff = time.time() - older_than_s
        for entry in self.root.iterdir():
            if entry.name.startswith(".pull-") or entry.stat().st_mtime < cutoff:
                shutil.rmtree(entry, ignore_errors=True)


def _image_config(layout: Path) -> dict[str, object]:
    """The image's configuration (Env, WorkingDir, User, ...) from the OCI layout."""
    index = json.loads((layout / "index.json").read_text())
    manifest_digest = index["manifests"][0]["digest"]
    manifest = json.loads(_blob(layout, manifest_digest))
    return json.loads(_blob(layout, manifest["config"]["digest"]))


def _blob(layout: Path, digest: str) -> bytes:
    algorithm, value = digest.split(":", 1)
    return (layout / "blobs" / algorithm / value).read_bytes()


async def _skopeo(args: list[str], reference: str, log: Callable[[str], None] | None = None) -> str:
    try:
        return await _command(["skopeo", *args], log)
    except ImageError as exc:
        raise ImageError(_explain(reference, str(exc))) from None


def _explain(reference: str, output: str) -> str:
    """skopeo's errors, said for people."""
    lowered = output.lower()
    if "unauthorized" in lowered or "authentication required" in lowered or "401" in lowered:
        return f"pulling {reference}: the registry refused the credentials (unauthorized): {output[-300:]}"
    if "manifest unknown" in lowered or "not found" in lowered:
        return f"pulling {reference}: no such image or tag in the registry: {output[-300:]}"
    return f"pulling {reference} failed: {output[-500:]}"


async def _command(argv: list[str], log: Callable[[str], None] | None = None) -> str:
    try:
        code, out, err = await run_status(*argv, timeout_s=PULL_TIMEOUT_S)
    except CommandFailed as exc:
        raise ImageError(str(exc)) from None
    if log is not None:
        for line in out.splitlines():
            if line.strip():
                log(line.strip())
    if code != 0:
        raise ImageError(err.strip() or out.strip())
    return out
