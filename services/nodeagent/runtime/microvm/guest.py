"""The guest every microVM boots: Debian's cloud kernel as a PVH `vmlinux` (unpacked from
the kernel package's bzImage) and a small initramfs (static busybox, the virtio drivers and
`guest_init.sh`). Made once per kernel package, from the host's apt sources, into
`<dir>/<package>_<version>/`; a half-made guest never appears there."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
import re
import shutil
import stat
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

KERNEL_META_PACKAGE = "linux-image-cloud-amd64"
BUSYBOX = Path("/bin/busybox")
INIT_SCRIPT = Path(__file__).with_name("guest_init.sh")
# What the guest needs to reach its disk, network and volumes; their dependencies come along.
MODULES = ("virtio_mmio", "virtio_blk", "virtio_net", "virtio-rng", "virtiofs")
# The bzImage payload's compression, by its first bytes, and the tool that unpacks it.
DECOMPRESSORS = {
    b"\x1f\x8b\x08": ["gzip", "-dc"],
    b"\xfd7zXZ": ["xz", "-dc"],
    b"(\xb5/\xfd": ["zstd", "-dc"],
    b"\x02!L\x18": ["lz4", "-dc"],
}


class GuestBuildError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class Guest:
    kernel: Path
    initramfs: Path


def kernel_package() -> tuple[str, str]:
    """The versioned kernel package the meta package points at now, and its version."""
    out = _check_output(["apt-cache", "depends", "--no-recommends", KERNEL_META_PACKAGE])
    for line in out.splitlines():
        name = line.strip().removeprefix("Depends:").strip()
        if line.strip().startswith("Depends:") and name.startswith("linux-image-"):
            policy = _check_output(["apt-cache", "policy", name])
            for policy_line in policy.splitlines():
                if policy_line.strip().startswith("Candidate:"):
                    return name, policy_line.split(":", 1)[1].strip()
    raise GuestBuildError(f"apt knows no kernel behind {KERNEL_META_PACKAGE} (run apt-get update)")


def ensure_guest(root: Path) -> Guest:
    """The guest for the current kernel package, made now if missing. Blocking: call it
    from a thread."""
    name, version = kernel_package()
    target = root / f"{name}_{version.replace(':', '%')}-{_initramfs_recipe_digest()}"
    guest = Guest(target / "vmlinux", target / "initramfs.img")
    if guest.kernel.is_file() and guest.initramfs.is_file():
        return guest
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".guest-", dir=root))
    try:
        subprocess.run(["apt-get", "download", name], cwd=work, check=True, capture_output=True)
        (deb,) = work.glob("*.deb")
        unpacked = work / "pkg"
        subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], check=True, capture_output=True)
        (vmlinuz,) = (unpacked / "boot").glob("vmlinuz-*")
        (modules_dir,) = (unpacked / "lib" / "modules").iterdir()
        (work / "vmlinux").write_bytes(extract_vmlinux(vmlinuz.read_bytes()))
        (work / "initramfs.img").write_bytes(build_initramfs(modules_dir))
        shutil.rmtree(unpacked)
        deb.unlink()
        with contextlib.suppress(OSError):  # another node agent made it first
            os.rename(work, target)
    except (subprocess.CalledProcessError, ValueError) as exc:
        detail = (getattr(exc, "stderr", b"") or b"").decode(errors="replace")
        raise GuestBuildError(f"cannot make the microVM guest: {exc} {detail}") from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return guest


def _initramfs_recipe_digest() -> str:
    """Changes whenever what goes into the initramfs does: the guest is made again."""
    recipe = INIT_SCRIPT.read_bytes() + ",".join(MODULES).encode() + str(BUSYBOX.stat().st_size).encode()
    return hashlib.sha256(recipe).hexdigest()[:12]


def extract_vmlinux(bzimage: bytes) -> bytes:
    """The ELF kernel inside a bzImage (PVH needs the ELF: its Xen note is the entry)."""
    if bzimage[0x202:0x206] != b"HdrS":
        raise ValueError("not a bzImage")
    setup_sectors = bzimage[0x1F1] or 4
    payload_offset, payload_length = struct.unpack_from("<II", bzimage, 0x248)
    start = (setup_sectors + 1) * 512 + payload_offset
    payload = bzimage[start : start + payload_length]
    for magic, argv in DECOMPRESSORS.items():
        if payload.startswith(magic):
            # The tools stop at the end of the stream and may complain about the padding.
            result = subprocess.run(argv, input=payload, capture_output=True)
            if result.stdout.startswith(b"\x7fELF"):
                return result.stdout
            detail = result.stderr.decode(errors="replace")
            raise ValueError(f"{argv[0]} did not give an ELF kernel: {detail}")
    raise ValueError("unknown kernel compression")


def module_load_order(modules_dir: Path, wanted: tuple[str, ...] = MODULES) -> list[str]:
    """Paths (relative to `modules_dir`) of the wanted modules and what they depend on,
    each after its dependencies. The package ships no modules.dep (depmod makes it at
    install), so the dependencies come from each module's own `depends=` field."""
    by_name = {
        _module_name(path.name): str(path.relative_to(modules_dir)) for path in modules_dir.rglob("*.ko")
    }
    builtin_list = (modules_dir / "modules.builtin").read_text().split()
    builtin = {_module_name(Path(line).name) for line in builtin_list}
    order: list[str] = []

    def visit(name: str) -> None:
        path = by_name.get(_module_name(name))
        if path is None:
            if _module_name(name) in builtin:
                return
            raise ValueError(f"the kernel has no module {name}")
        if path in order:
            return
        for dependency in _depends(modules_dir / path):
            visit(dependency)
        order.append(path)

    for name in wanted:
        visit(name)
    return order


def _module_name(file_name: str) -> str:
    return file_name.split(".ko")[0].replace("-", "_")


def _depends(module: Path) -> list[str]:
    match = re.search(rb"\0depends=([^\0]*)\0", module.read_bytes())
    return [name.decode() for name in match.group(1).split(b",") if name] if match else []


def build_initramfs(modules_dir: Path) -> bytes:
    """A gzipped newc cpio: busybox, the modules, /etc/modules.order and /init."""
    order = module_load_order(modules_dir)
    archive = _Cpio()
    for directory in ("bin", "dev", "proc", "sys", "etc", "newroot", "lib", "lib/modules"):
        archive.add_dir(directory)
    archive.add_file("bin/busybox", BUSYBOX.read_bytes(), 0o755)
    archive.add_file("init", INIT_SCRIPT.read_bytes(), 0o755)
    for path in order:
        archive.add_file(f"lib/modules/{Path(path).name}", (modules_dir / path).read_bytes(), 0o644)
    archive.add_file("etc/modules.order", "".join(f"{Path(p).name}\n" for p in order).encode(), 0o644)
    archive.add_char_device("dev/console", 5, 1)
    return gzip.compress(archive.finish(), compresslevel=6)


class _Cpio:
    """Writes the `newc` format the kernel unpacks into its initial root."""

    def __init__(self) -> None:
        self._out = io.BytesIO()
        self._ino = 1

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        encoded = name.encode() + b"\0"
        fields = [self._ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0]
        self._ino += 1
        self._out.write(b"070701" + b"".join(b"%08X" % value for value in fields))
        self._out.write(encoded)
        self._pad()
        self._out.write(data)
        self._pad()

    def _pad(self) -> None:
        self._out.write(b"\0" * (-self._out.tell() % 4))

    def add_dir(self, name: str) -> None:
        self._entry(name, stat.S_IFDIR | 0o755)

    def add_file(self, name: str, data: bytes, perm: int) -> None:
        self._entry(name, stat.S_IFREG | perm, data)

    def add_char_device(self, name: str, major: int, minor: int) -> None:
        self._entry(name, stat.S_IFCHR | 0o600, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return self._out.getvalue()


def _check_output(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise GuestBuildError(f"{argv[0]} failed: {exc}") from exc
