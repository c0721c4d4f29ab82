"""The OCI runtime spec for one sandbox."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import SandboxSpec

if TYPE_CHECKING:
    from .gvisor import OneShot

# Root in the sandbox acts as the sandbox's administrator (envd switches users, sudo
# works), but only inside gVisor's own kernel: none of this reaches the host.
CAPABILITIES = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_RAW",
    "CAP_SYS_CHROOT",
    "CAP_MKNOD",
    "CAP_AUDIT_WRITE",
    "CAP_SETFCAP",
    "CAP_SYS_PTRACE",
]
# gVisor counts its own host threads against pids.max (about 50 idle, a few per guest
# process) and kills the whole sandbox at the limit: this only stops fork bombs.
PIDS_LIMIT = 16384
# Bumped whenever the spec changes what a checkpoint captures: template snapshots taken under
# another version are taken again.
SPEC_VERSION = 3
CPU_PERIOD_US = 100_000
VOLUME_OPTIONS = ["rbind", "rw", "nosuid", "nodev"]


def sandbox_spec(spec: SandboxSpec, netns_path: str) -> dict[str, Any]:
    caps = {kind: CAPABILITIES for kind in ("bounding", "effective", "inheritable", "permitted", "ambient")}
    return {
        "ociVersion": "1.0.0",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": spec.init,
            "env": [
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "HOME=/root",
                "LANG=C.UTF-8",
                "PYTHONDONTWRITEBYTECODE=1",
            ],
            "cwd": "/",
            "capabilities": caps,
            "noNewPrivileges": False,
        },
        "root": {"path": str(spec.rootfs), "readonly": False},
        "hostname": "sandbox",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]},
            {
                "destination": "/dev/pts",
                "type": "devpts",
                "source": "devpts",
                "options": ["nosuid", "noexec"],
            },
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "nodev"]},
            {
                "destination": "/sys",
                "type": "sysfs",
                "source": "sysfs",
                "options": ["nosuid", "noexec", "nodev", "ro"],
            },
            {
                "destination": "/tmp",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "nodev", "mode=1777"],
            },
            *(
                {"destination": path, "type": "bind", "source": host, "options": VOLUME_OPTIONS}
                for host, path in spec.volumes
            ),
        ],
        "linux": {
            "namespaces": [
                {"type": "pid"},
                {"type": "network", "path": netns_path},
                {"type": "ipc"},
                {"type": "uts"},
                {"type": "mount"},
            ],
            "resources": {
                "memory": {"limit": spec.memory_mb << 20},
                "cpu": {"quota": spec.cpu_count * CPU_PERIOD_US, "period": CPU_PERIOD_US},
                "pids": {"limit": PIDS_LIMIT},
            },
            "cgroupsPath": f"/corral/{spec.sandbox_id}",
        },
    }


def build_step_spec(job: OneShot, netns_path: str) -> dict[str, Any]:
    """A sandbox's spec for one template build step: the job's process as root, its root the
    build's overlay (writes go through to it: no /tmp of its own), its files bound read-only."""
    base = SandboxSpec(
        sandbox_id=job.container_id,
        template_id="",
        build_id="",
        rootfs=job.rootfs,
        init=job.argv,
        cpu_count=job.cpu_count,
        memory_mb=job.memory_mb,
        slot=job.slot,
    )
    spec = sandbox_spec(base, netns_path)
    spec["process"]["env"] = [f"{name}={value}" for name, value in job.env.items()]
    spec["mounts"] = [
        *(m for m in spec["mounts"] if m["destination"] != "/tmp"),
        *(
            {"destination": path, "type": "bind", "source": host, "options": ["rbind", "ro"]}
            for host, path in job.files
        ),
        *(
            {
                "destination": path,
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "nodev", "mode=1777"],
            }
            for path in job.tmpfs
        ),
    ]
    return spec
