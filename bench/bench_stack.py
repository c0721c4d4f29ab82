"""The stack every runtime benchmark runs against: real NATS, Redis and runsc on random
ports, over the shared templates, torn down with its sandboxes afterwards; and the runtime
facts every figure is reported with (runsc version and platform)."""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from corral_libs.stack import LocalStack, StackConfig
from corral_services.nodeagent.cleanup import kill_all_sandboxes
from corral_services.nodeagent.templates.builtin import ensure_template
from corral_services.nodeagent.templates.store import TemplateStore
from tests.e2e.conftest import TEMPLATE_DIR


def add_runtime_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--platform",
        choices=("ptrace", "systrap"),
        default=None,
        help="gVisor platform (default: the node's)",
    )


@contextlib.contextmanager
def bench_stack(
    node_id: str,
    slot_base: int,
    *,
    platform: str | None = None,
    templates: tuple[str, ...] = ("base",),
    env: dict[str, str] | None = None,
    log_dir: Path | None = None,
) -> Iterator[LocalStack]:
    store = TemplateStore(TEMPLATE_DIR)
    for template in templates:
        ensure_template(store, template)
    data_dir = Path(tempfile.mkdtemp(prefix=f"corral-{node_id}-"))
    extra = {"CORRAL_SLOT_BASE": str(slot_base), "CORRAL_RUNTIME": "gvisor", **(env or {})}
    if platform:
        extra["CORRAL_GVISOR_PLATFORM"] = platform
    config = StackConfig.random_ports(
        data_dir, template_dir=TEMPLATE_DIR, node_id=node_id, log_dir=log_dir, extra_env=extra
    )
    stack = LocalStack(config)
    try:
        stack.start_infrastructure()
        stack.start_services()
        yield stack
    finally:
        stack.stop(kill_sandboxes=lambda: kill_all_sandboxes(data_dir, config.redis_url))
        shutil.rmtree(data_dir, ignore_errors=True)


def runtime_of(stack: LocalStack) -> str:
    """What ran the sandboxes, e.g. `runsc go-20260709-8ed0c00a3f90 (systrap)`."""
    return stack.node.runtime_version if stack.node is not None else "unknown"
