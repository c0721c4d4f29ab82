"""Egress from inside a sandbox to a test host (tests/harness/testnet.py), with no policy,
with a CIDR policy (kernel rules only) and with a domain policy (through the node's egress
proxy): TCP connect latency, an HTTP request on a fresh connection, and 100 MB each way.

    .venv/bin/python bench/network.py [--connects 200] [--megabytes 100] [--rounds 3]

The client runs inside the sandbox (Python, under gVisor), so the figures include the
sandbox's own network stack, as an agent's traffic does. The policies take turns, round after
round, and each figure is the median over the rounds (a small node's throughput swings from
run to run). Prints a table and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from e2b import Sandbox

from corral_libs.stack import LocalStack, StackConfig
from corral_services.nodeagent.cleanup import kill_all_sandboxes
from corral_services.nodeagent.templates.builtin import ensure_template
from corral_services.nodeagent.templates.store import TemplateStore
from tests.e2e.conftest import TEMPLATE_DIR
from tests.harness.testnet import WEB, running_testnet

POLICIES = {
    "none": None,
    "cidr": {"allow_out": [f"{WEB}/32"], "deny_out": ["0.0.0.0/0"]},
    "domain": {"allow_out": ["web.test.example"], "deny_out": ["0.0.0.0/0"]},
}

# Runs inside the sandbox: prints one JSON object of measurements.
CLIENT = r"""
import json, socket, statistics, sys, time
host, connects, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
address = (host, 80)

def pct(values, q):
    values = sorted(values)
    return round(values[min(len(values) - 1, int(q * len(values)))] * 1000, 3)

connect = []
for _ in range(connects):
    start = time.perf_counter()
    s = socket.create_connection(address)
    connect.append(time.perf_counter() - start)
    s.close()

def request(sock, raw):
    sock.sendall(raw)
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(65536)
    header, _, body = head.partition(b"\r\n\r\n")
    lines = header.split(b"\r\n")
    length = int(next(l for l in lines if l.lower().startswith(b"content-length")).split(b":")[1])
    received = len(body)
    while received < length:
        chunk = sock.recv(1 << 20)
        if not chunk:
            break
        received += len(chunk)
    return received

get = f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
fresh = []
for _ in range(max(1, connects // 2)):
    start = time.perf_counter()
    s = socket.create_connection(address)
    request(s, get)
    fresh.append(time.perf_counter() - start)
    s.close()

s = socket.create_connection(address)
start = time.perf_counter()
got = request(s, f"GET /bytes/{size} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
down = time.perf_counter() - start
s.close()

s = socket.create_connection(address)
block = b"x" * (1 << 20)
start = time.perf_counter()
s.sendall(f"POST /sink HTTP/1.1\r\nHost: {host}\r\nContent-Length: {size}\r\n\r\n".encode())
sent = 0
while sent < size:
    s.sendall(block[: min(len(block), size - sent)])
    sent += min(len(block), size - sent)
request(s, b"")
up = time.perf_counter() - start
s.close()
assert got == size
print(json.dumps({
    "connect_p50_ms": pct(connect, 0.5), "connect_p95_ms": pct(connect, 0.95),
    "request_p50_ms": pct(fresh, 0.5), "request_p95_ms": pct(fresh, 0.95),
    "download_MBps": round(size / down / 1e6, 1), "upload_MBps": round(size / up / 1e6, 1),
}))
"""


def measure(sbx: Sandbox, host: str, connects: int, megabytes: int) -> dict[str, float]:
    sbx.files.write("/tmp/netbench.py", CLIENT)
    result = sbx.commands.run(f"python3 /tmp/netbench.py {host} {connects} {megabytes << 20}", timeout=900)
    return json.loads(result.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connects", type=int, default=200)
    parser.add_argument("--megabytes", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    ensure_template(TemplateStore(TEMPLATE_DIR))
    results: dict[str, dict[str, float]] = {}
    with running_testnet() as testnet:
        data_dir = Path(tempfile.mkdtemp(prefix="corral-netbench-"))
        env = {"CORRAL_SLOT_BASE": "29000", "CORRAL_RUNTIME": "gvisor", **testnet.node_env()}
        config = StackConfig.random_ports(
            data_dir, template_dir=TEMPLATE_DIR, node_id="netbench", extra_env=env
        )
        stack = LocalStack(config)
        try:
            stack.start_infrastructure()
            stack.start_services()
            key = asyncio.run(stack.create_api_key("bench"))
            sandboxes = {
                label: Sandbox.create(network=network, timeout=3600, **stack.sdk_options(key))  # type: ignore[arg-type]
                for label, network in POLICIES.items()
            }
            rounds: dict[str, list[dict[str, float]]] = {label: [] for label in POLICIES}
            for round_ in range(args.rounds):
                for label, sbx in sandboxes.items():
                    host = "web.test.example" if label == "domain" else WEB
                    rounds[label].append(measure(sbx, host, args.connects, args.megabytes))
                    print(f"round {round_ + 1} {label:<7} {rounds[label][-1]}", flush=True)
            results = {
                label: {key: statistics.median(r[key] for r in runs) for key in runs[0]}
                for label, runs in rounds.items()
            }
        finally:
            stack.stop(kill_sandboxes=lambda: kill_all_sandboxes(data_dir, config.redis_url))
            shutil.rmtree(data_dir, ignore_errors=True)
    base = results["none"]
    overhead = {
        label: {
            "connect_p50_added_ms": round(r["connect_p50_ms"] - base["connect_p50_ms"], 3),
            "download_vs_none": round(r["download_MBps"] / base["download_MBps"], 2),
            "upload_vs_none": round(r["upload_MBps"] / base["upload_MBps"], 2),
        }
        for label, r in results.items()
        if label != "none"
    }
    columns = (
        ("connect p50", 12),
        ("p95", 8),
        ("request p50", 13),
        ("p95", 8),
        ("down MB/s", 11),
        ("up MB/s", 9),
    )
    print("\n" + f"{'policy':<8}" + "".join(f"{name:>{width}}" for name, width in columns))
    for label, r in results.items():
        print(
            f"{label:<8}{r['connect_p50_ms']:>12}{r['connect_p95_ms']:>8}{r['request_p50_ms']:>13}"
            f"{r['request_p95_ms']:>8}{r['download_MBps']:>11}{r['upload_MBps']:>9}"
        )
    summary = {"bench": "network", "megabytes": args.megabytes, "rounds": args.rounds}
    print(json.dumps({**summary, **results, "overhead": overhead}))


if __name__ == "__main__":
    main()
