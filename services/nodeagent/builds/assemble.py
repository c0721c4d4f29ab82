"""The end of a build: the template assembled from its base and layers and installed, and
what a node says of the templates it holds."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import time
from pathlib import Path

from corral_libs.contracts.records import TemplateBuildRecord, TemplateRecord

from ..templates.store import TemplateManifest, TemplateStore
from . import layers as layer_fs
from . import start_script
from .bases import Base, BaseUnavailable
from .layers import LayerError
from .steps import StepState


class BuildFailed(Exception):
    """A build that cannot go on: what to tell its owner, the step, its last output."""

    def __init__(self, message: str, step: str, tail: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.step = step
        self.tail = tail or []

    @property
    def reason(self) -> str:
        """The build's error reason: the message and the step's last lines."""
        return self.message if not self.tail else self.message + "\n" + "\n".join(self.tail)


async def assemble(
    templates: TemplateStore,
    record: TemplateBuildRecord,
    base: Base,
    uppers: list[Path],
    state: StepState,
    start_cmd: str | None,
    ready_cmd: str | None,
    runtime_name: str,
) -> TemplateManifest:
    """Installs the template: the base's root with the layers (`uppers`, oldest first) and
    the base's overlays applied, its start command made the init, its manifest written."""
    try:
        base_rootfs = await asyncio.to_thread(base.rootfs)
    except BaseUnavailable as exc:
        raise BuildFailed(str(exc), "finalize") from None
    await asyncio.to_thread(templates.root.mkdir, parents=True, exist_ok=True)
    work = Path(await asyncio.to_thread(tempfile.mkdtemp, f"-{record.build_id}", ".build-", templates.root))
    try:
        uppers = [*uppers, *base.overlays]
        try:
            await asyncio.to_thread(layer_fs.flatten, base_rootfs, uppers, work / "rootfs")
        except (LayerError, OSError) as exc:
            raise BuildFailed(f"assembling the template failed: {exc}", "finalize") from None
        init = base.init
        if start_cmd:
            try:
                init = await asyncio.to_thread(
                    start_script.write,
                    work / "rootfs",
                    record.build_id,
                    start_cmd=start_cmd,
                    user=state.user,
                    workdir=state.workdir,
                    env=state.env,
                    services_init=base.services_init,
                )
            except (ValueError, OSError) as exc:
                raise BuildFailed(f"installing the start command failed: {exc}", "finalize") from None
        names = [record.name, *(f"{record.name}:{tag}" for tag in record.tags)]
        manifest = TemplateManifest(
            template_id=record.template_id,
            aliases=names,
            build_id=record.build_id,
            envd_version=base.envd_version,
            cpu_count=record.cpu_count,
            memory_mb=record.memory_mb,
            disk_mb=base.disk_mb,
            user=state.user,
            init=init,
            built_at=time.time(),
            services=base.services,
            runtimes=[runtime_name],
            owner=record.owner,
            names=[record.name],
            workdir=state.workdir,
            env_vars=state.env,
            start_cmd=start_cmd if start_cmd else base.start_cmd,
            ready_cmd=ready_cmd if (ready_cmd or start_cmd) else base.ready_cmd,
            base_init=base.services_init,
        )
        await asyncio.to_thread((work / "template.json").write_text, json.dumps(manifest.to_dict(), indent=2))
        await asyncio.to_thread(templates.install, record.template_id, work)
        return manifest
    finally:
        await asyncio.to_thread(shutil.rmtree, work, True)


def template_record(manifest: TemplateManifest) -> TemplateRecord:
    """What the node says of a template it holds (heart-beats, and a build that finished)."""
    return TemplateRecord(
        template_id=manifest.template_id,
        aliases=manifest.aliases,
        build_id=manifest.build_id,
        envd_version=manifest.envd_version,
        cpu_count=manifest.cpu_count,
        memory_mb=manifest.memory_mb,
        disk_mb=manifest.disk_mb,
        created_at=manifest.built_at,
        public=not manifest.owner,
        owner=manifest.owner,
        names=manifest.names,
        runtimes=manifest.runtimes,
    )
