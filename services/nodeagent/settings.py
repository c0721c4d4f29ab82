"""Node agent settings (CORRAL_* variables)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import msgspec


def _default_node_id() -> str:
    return "".join(ch for ch in socket.gethostname().lower() if ch.isalnum())[:20] or "node"


class NodeSettings(msgspec.Struct):
    node_id: str = msgspec.field(default_factory=_default_node_id)
    nats_url: str = "nats://127.0.0.1:4222"
    redis_url: str = "redis://127.0.0.1:6379/0"
    data_dir: str = "/var/lib/corral"
    # Templates may live apart from the node's other state (shared by several nodes on a host).
    template_dir: str | None = None
    # First network slot of this node: node agents sharing a host need disjoint ranges.
    slot_base: int = 0
    max_sandboxes: int = 200
    heartbeat_s: float = 2.0
    # gvisor, microvm, or auto: microVMs where KVM really works (see runtime/select.py).
    runtime: str = "auto"
    gvisor_platform: str = "ptrace"
    # kvm, tcg (software emulation: slow, for hosts without KVM) or auto (probed).
    microvm_accel: str = "auto"
    envd_ready_timeout_s: float = 90.0
    # Warm pool per template: as deep as the peak demand (creates in any pool_window_s
    # over the last pool_peak_horizon_s), at least pool_min for Corral's own templates (0 for
    # templates built through the API), or a template's own minimum in
    # pool_min_templates, `base=4,code-interpreter=2`), at most pool_max, all templates'
    # clones together within pool_memory_mb (0: an eighth of the host's memory);
    # pool_restore_concurrency refills at a time (0: one per two cores). pool_max 0 turns
    # the pool off (every create restores or boots).
    pool_min: int = 1
    pool_min_templates: str = ""
    pool_max: int = 8
    pool_memory_mb: int = 0
    pool_restore_concurrency: int = 0
    pool_window_s: float = 10.0
    pool_peak_horizon_s: float = 300.0
    # Comma-separated template ids the pool keeps warm; empty: every template.
    pool_templates: str = ""
    # Restores for creates that found the pool empty, at a time (about the node's cores).
    create_restore_concurrency: int = 2
    # Egress: ranges no policy opens besides the built-in private and reserved ones
    # (comma-separated CIDRs); where sandbox DNS goes (empty: this host's resolv.conf, `none`:
    # nowhere); names answered here first (/etc/hosts format); listening ports (0: any free).
    egress_always_deny: str = ""
    dns_upstreams: str = ""
    dns_hosts: str = ""
    dns_port: int = 0
    egress_proxy_port: int = 0
    # Volumes: the size (a hard quota) of each new one.
    volume_size_mb: int = 10240
    # The content server (volume files, build uploads, template archives): where it listens
    # (port 0: any free) and is reached by the API and other nodes (empty: the listening host).
    content_host: str = "127.0.0.1"
    content_port: int = 0
    content_advertise_host: str = ""
    # Corral's own templates (recipes in templates/, comma-separated) this node builds when
    # they are missing or stale (`corral up` sets it).
    builtin_templates: str = ""
    # Registries (host:port, comma-separated) that template builds may pull images from
    # over plain HTTP (a registry on the node's own network); all others need TLS.
    insecure_registries: str = ""
    # Template builds: each step's time limit, and where build steps may connect (the
    # package registries; `*.domain` patterns), everything else denied.
    build_step_timeout_s: float = 1800.0
    # What one build step may write (its layer is made on a sparse disk of the build's own).
    build_disk_mb: int = 20480
    # Networks (CIDRs) of the operator's mirrors and registries that build steps may reach
    # although they are private or reserved (no sandbox reaches those otherwise).
    build_allow_networks: str = ""
    # A CA bundle on the node (PEM) that build steps trust, for networks whose TLS proxy signs
    # the registries' certificates: pip, npm, curl, git and Python see it (not in templates).
    build_ca_bundle: str = ""
    build_allow_out: str = (
        "deb.debian.org,security.debian.org,*.debian.org,pypi.org,files.pythonhosted.org,"
        "registry.npmjs.org,*.npmjs.org,github.com,*.github.com,codeload.github.com,"
        "objects.githubusercontent.com,proxy.golang.org,sum.golang.org,repo.maven.apache.org,"
        "repo1.maven.org,crates.io,static.crates.io,index.crates.io"
    )
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        for item in filter(None, (i.strip() for i in self.pool_min_templates.split(","))):
            name, sep, value = item.partition("=")
            if not sep or not name.strip() or not value.strip().isdigit():
                raise ValueError(f"pool_min_templates: '{item}' is not template=count")

    @property
    def pool_memory_budget_mb(self) -> int:
        if self.pool_memory_mb > 0:
            return self.pool_memory_mb
        with open("/proc/meminfo") as f:
            return int(f.readline().split()[1]) // 1024 // 8

    @property
    def pool_refills_at_once(self) -> int:
        return self.pool_restore_concurrency or max(1, (os.cpu_count() or 1) // 2)

    def pool_minimum(self, template_id: str, *, users: bool = False) -> int:
        """The clones kept warm without demand: a template's own minimum if it has one, else
        pool_min for Corral's templates and none for users' (`users`: built through the API;
        their pools follow demand alone, or a node would hold a clone of every one)."""
        for item in self.pool_min_templates.split(","):
            name, sep, value = item.strip().partition("=")
            if sep and name.strip() == template_id:
                return int(value)
        return 0 if users else self.pool_min

    @property
    def pooled_templates(self) -> set[str] | None:
        names = {name.strip() for name in self.pool_templates.split(",") if name.strip()}
        return names or None

    @property
    def builtin_template_names(self) -> list[str]:
        return list(dict.fromkeys(n.strip() for n in self.builtin_templates.split(",") if n.strip()))

    @property
    def template_root(self) -> Path:
        return Path(self.template_dir or Path(self.data_dir) / "templates")
