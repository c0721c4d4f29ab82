"""envd for templates built from images: a Python of its own (the host's Debian Python with
the libraries it loads, glibc and its loader included, rewritten with patchelf to find them
under /opt/corral/python), envd and its libraries, and a static tini: whatever libc and
Python the image has, or none, envd runs. Made once per node for this checkout, kept by its
fingerprint next to the templates, and laid into each such template's root."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..templates.envd_payload import envd_requirements
from ..templates.fingerprint import REPO_ROOT, SOURCES

PREFIX = "/opt/corral"
PYTHON_DIR = f"{PREFIX}/python"
PYTHON = f"{PYTHON_DIR}/bin/python3"
TINI = f"{PREFIX}/bin/tini"
HOST_PYTHON = Path("/usr/bin/python3")
HOST_TINI = Path("/usr/bin/tini-static")
LOADER = "ld-linux-x86-64.so.2"
# Parts of the standard library envd never imports.
_SKIPPED = {"test", "idlelib", "tkinter", "turtledemo", "lib2to3", "ensurepip", "pydoc_data", "dist-packages",
            "site-packages", "__pycache__", "venv"}  # fmt: skip
_LDD_LINE = re.compile(r"=>\s+(/\S+)|^\s*(/\S+)\s+\(")


class KitError(RuntimeError):
    pass


def envd_init() -> list[str]:
    return [TINI, "-s", "--", PYTHON, "-P", "-m", "corral_services.envd"]


def fingerprint() -> str:
    digest = hashlib.sha256(Path(__file__).read_bytes())
    digest.update(os.path.realpath(HOST_PYTHON).encode())
    digest.update(str(HOST_PYTHON.stat().st_mtime_ns).encode())
    digest.update(" ".join(envd_requirements()).encode())
    for source in SOURCES:
        path = REPO_ROOT / source
        files = sorted(p for p in path.rglob("*.py")) if path.is_dir() else [path]
        for file in files:
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def ensure(root: Path) -> Path:
    """The kit for this checkout under `root`, made if missing: a directory holding
    `opt/corral`, to lay over a template's root."""
    target = root / fingerprint()
    if (target / "ready").is_file():
        return target / "root"
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".kit-", dir=root))
    try:
        _make(work / "root")
        (work / "ready").write_text("")
        with contextlib.suppress(OSError):  # made meanwhile by another node agent sharing the directory
            os.rename(work, target)
        return target / "root"
    finally:
        shutil.rmtree(work, ignore_errors=True)


def collect(root: Path) -> None:
    """Kits of other checkouts go (templates hold their own links to what they use)."""
    if not root.is_dir():
        return
    current = fingerprint()
    for entry in root.iterdir():
        making = entry.name.startswith(".kit-") and time.time() - entry.stat().st_mtime < 3600
        if entry.name != current and not making:  # another agent may be making one now
            shutil.rmtree(entry, ignore_errors=True)


def _make(work: Path) -> None:
    work.mkdir()
    if not HOST_PYTHON.exists() or not HOST_TINI.exists():
        raise KitError("envd for images needs the host's python3 and tini-static (scripts/install.sh)")
    python = Path(os.path.realpath(HOST_PYTHON))
    version = subprocess.run(
        [str(python), "-c", "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    home = work / PYTHON_DIR.lstrip("/")
    lib = home / "lib"
    (home / "bin").mkdir(parents=True)
    lib.mkdir()
    stdlib = Path(f"/usr/lib/python{version}")
    shutil.copytree(
        stdlib, lib / f"python{version}", symlinks=False, ignore_dangling_symlinks=True,
        ignore=lambda _, names: [n for n in names if n in _SKIPPED or n.startswith("sitecustomize")],
    )  # fmt: skip
    shutil.copy2(python, home / "bin" / python.name)
    (home / "bin" / "python3").symlink_to(python.name)
    objects = [python, *sorted((stdlib / "lib-dynload").glob("*.so"))]
    for dependency in sorted({dep for obj in objects for dep in _dependencies(obj)}):
        name = LOADER if dependency.name.startswith("ld-linux") else dependency.name
        shutil.copy2(os.path.realpath(dependency), lib / name)
    patch = [
        "patchelf",
        "--set-interpreter",
        f"{PYTHON_DIR}/lib/{LOADER}",
        "--set-rpath",
        f"{PYTHON_DIR}/lib",
    ]
    _run([*patch, str(home / "bin" / python.name)])
    for shared in [*lib.glob("*.so*"), *(lib / f"python{version}" / "lib-dynload").glob("*.so")]:
        if shared.name != LOADER:
            _run(["patchelf", "--set-rpath", f"{PYTHON_DIR}/lib", str(shared)])
    site = lib / "python3" / "dist-packages"  # where Debian's Python looks under its prefix
    wheels = work / "wheels"
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(REPO_ROOT)])
    _run([*pip, "download", "--only-binary=:all:", "-d", str(wheels), *envd_requirements()])
    # Exactly what was fetched (the requirements with theirs, and Corral itself).
    _run(
        [*pip, "install", "--no-deps", "--target", str(site), "--no-compile", *map(str, wheels.glob("*.whl"))]
    )
    shutil.rmtree(wheels)
    # The libraries' own extensions: what they load comes from the kit too.
    extensions = sorted(site.rglob("*.so"))
    for dependency in sorted({dep for obj in extensions for dep in _dependencies(obj)} - set(objects)):
        name = LOADER if dependency.name.startswith("ld-linux") else dependency.name
        if not (lib / name).exists() and not str(dependency).startswith(str(site)):
            shutil.copy2(os.path.realpath(dependency), lib / name)
            _run(["patchelf", "--set-rpath", f"{PYTHON_DIR}/lib", str(lib / name)])
    for extension in extensions:
        _run(["patchelf", "--add-rpath", f"{PYTHON_DIR}/lib", str(extension)])
    bin_dir = work / PREFIX.lstrip("/") / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(HOST_TINI, bin_dir / "tini")
    _check(work)


def _dependencies(obj: Path) -> list[Path]:
    out = subprocess.run(["ldd", str(obj)], capture_output=True, text=True).stdout
    found = []
    for line in out.splitlines():
        match = _LDD_LINE.search(line)
        if match:
            found.append(Path(match.group(1) or match.group(2)))
    return found


def _run(argv: list[str]) -> None:
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        raise KitError(f"{' '.join(argv[:3])} failed: {(result.stderr or result.stdout).strip()[-800:]}")


def _check(work: Path) -> None:
    """envd's imports work in a root where only the kit is (nothing of the host's libraries)."""
    _run([
        "bwrap", "--bind", str(work / PREFIX.lstrip("/")), PREFIX, "--proc", "/proc", "--dev", "/dev",
        "--tmpfs", "/tmp", "--clearenv", PYTHON, "-P", "-c",
        "import ssl, ctypes, uvloop, msgspec, corral_services.envd.server",
    ])  # fmt: skip
