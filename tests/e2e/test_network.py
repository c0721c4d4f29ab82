"""Sandbox egress through the whole stack with the e2b SDK: the default internet, E2B's
`allow_internet_access` and `network.allowOut` / `denyOut`, live updates, what no policy opens,
denial records and the proxy's network options. The "internet" is the test network's hosts
(tests/harness/testnet.py); the stack's node denies everything else."""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time

import httpx
import pytest
from e2b import CommandExitException, Sandbox, SandboxException

from corral_libs.contracts.sandbox_net import SANDBOX_RANGE
from tests.harness.testnet import API, ECHO_PORT, OTHER, WEB, TestNet

from .test_node_faults import _restart_node_agent

DENY_ALL = ["0.0.0.0/0"]


def sh(sbx: Sandbox, command: str, user: str = "user") -> str:
    try:
        return sbx.commands.run(command, user=user, timeout=60).stdout  # type: ignore[arg-type]
    except CommandExitException as exc:
        return exc.stdout


def http(sbx: Sandbox, url: str, *options: str) -> str:
    """What a test host answered (`testnet <its address> host=...`), or '' if nothing did."""
    return sh(sbx, f"curl -sS -m 3 {' '.join(options)} {url} 2>/dev/null || true").strip()


def udp(sbx: Sandbox, address: str) -> bool:
    script = (
        "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3); "
        f"s.sendto(b'ping', ('{address}', {ECHO_PORT})); print(s.recv(64).decode())"
    )
    return sh(sbx, f'python3 -c "{script}" 2>/dev/null || true').strip() == "ping"


def trust_test_ca(sbx: Sandbox, testnet: TestNet) -> None:
    sbx.files.write("/tmp/test-ca.pem", testnet.ca_pem)


def answered_by(answer: str, address: str) -> bool:
    return answer.startswith(f"testnet {address} ")


def denials(stack, sandbox_id: str) -> list[dict[str, object]]:
    url = f"{stack.config.api_url}/sandboxes/{sandbox_id}/network/denials"
    deadline = time.monotonic() + 10  # the node writes them about once a second
    while True:
        found = httpx.get(url, headers={"X-API-Key": stack.api_key}).json()["denials"]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def sandbox_slot(sbx: Sandbox) -> tuple[int, str]:
    """The sandbox's network slot and address, from inside it."""
    address = sh(sbx, "ip -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1").strip()
    base = ipaddress.ip_network(SANDBOX_RANGE).network_address
    return (int(ipaddress.ip_address(address)) - int(base)) // 4, address


def test_default_internet_reaches_test_hosts(conn, testnet):
    sbx = Sandbox.create(**conn)
    try:
        assert answered_by(http(sbx, "http://web.test.example/"), WEB)
        assert answered_by(http(sbx, f"http://{OTHER}:8080/"), OTHER)
        trust_test_ca(sbx, testnet)
        assert answered_by(http(sbx, "https://api.test.example/", "--cacert /tmp/test-ca.pem"), API)
        assert udp(sbx, OTHER)
    finally:
        sbx.kill()


def test_no_internet_access_blocks_all_but_the_resolver(conn, stack):
    sbx = Sandbox.create(allow_internet_access=False, **conn)
    try:
        assert sh(sbx, "getent hosts web.test.example").split()[0] == WEB
        assert http(sbx, "http://web.test.example/") == ""
        assert not udp(sbx, OTHER)
        assert sbx.get_info().allow_internet_access is False
        assert {"udp", "tcp"} <= {d["protocol"] for d in denials(stack, sbx.sandbox_id)}
    finally:
        sbx.kill()


def test_allow_a_cidr_deny_the_rest(conn):
    sbx = Sandbox.create(network={"allow_out": [f"{WEB}/32"], "deny_out": DENY_ALL}, **conn)
    try:
        assert answered_by(http(sbx, f"http://{WEB}/"), WEB)
        assert http(sbx, f"http://{OTHER}/") == ""
        assert not udp(sbx, OTHER)
    finally:
        sbx.kill()


def test_allow_domains_deny_the_rest(conn, stack, testnet):
    network = {"allow_out": ["web.test.example", "*.wild.test.example"], "deny_out": DENY_ALL}
    sbx = Sandbox.create(network=network, **conn)
    try:
        trust_test_ca(sbx, testnet)
        assert answered_by(http(sbx, "http://web.test.example/"), WEB)
        assert answered_by(http(sbx, "https://web.test.example/", "--cacert /tmp/test-ca.pem"), WEB)
        assert answered_by(http(sbx, "http://a.wild.test.example:8080/"), WEB)  # any port
        assert http(sbx, "http://api.test.example/") == ""
        assert http(sbx, "https://api.test.example/", "--cacert /tmp/test-ca.pem") == ""
        assert http(sbx, f"http://{OTHER}/") == ""
        # Pointing a permitted name at another host does not widen the policy: the node
        # dials the name itself.
        sh(sbx, f"echo '{OTHER} web.test.example' | sudo tee -a /etc/hosts")
        assert answered_by(http(sbx, "http://web.test.example/"), WEB)
        assert answered_by(http(sbx, f"http://{OTHER}/", "-H 'Host: web.test.example'"), WEB)
        resolve = f"--resolve web.test.example:443:{OTHER} --cacert /tmp/test-ca.pem"
        assert answered_by(http(sbx, "https://web.test.example/", resolve), WEB)
        refused = denials(stack, sbx.sandbox_id)
        assert {"name": "api.test.example", "rule": "deny-out", "port": 80}.items() <= refused[-1].items()
        assert all({"timestamp", "protocol", "destination", "rule"} <= d.keys() for d in refused)
    finally:
        sbx.kill()


def test_deny_one_host(conn):
    sbx = Sandbox.create(network={"deny_out": [OTHER]}, **conn)
    try:
        assert http(sbx, f"http://{OTHER}/") == ""
        assert answered_by(http(sbx, "http://web.test.example/"), WEB)
    finally:
        sbx.kill()


@pytest.fixture
def host_listener():
    """A TCP listener on every address of this host, counting who connects."""
    server = socket.create_server(("0.0.0.0", 0))
    server.settimeout(0.2)
    accepted: list[str] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                client, peer = server.accept()
            except TimeoutError:
                continue
            accepted.append(peer[0])
            client.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], accepted
    stop.set()
    thread.join()
    server.close()


def test_private_ranges_and_the_node_stay_denied(conn, stack, host_listener):
    port, accepted = host_listener
    allow = [
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "169.254.169.254",
        "198.51.100.1",
        "198.18.0.0/15",
    ]
    sbx = Sandbox.create(network={"allow_out": allow, "deny_out": DENY_ALL}, **conn)
    try:
        gateway = sh(sbx, "ip route show default | awk '{print $3}'").strip()
        for address in ("198.51.100.1", gateway, "169.254.169.254", "10.0.0.1"):
            assert http(sbx, f"http://{address}:{port}/") == ""
        assert accepted == []
        assert {d["destination"] for d in denials(stack, sbx.sandbox_id)} >= {"198.51.100.1", gateway}
    finally:
        sbx.kill()


def test_live_update_holds_across_pause_and_resume(conn):
    sbx = Sandbox.create(**conn)
    try:
        sleeper = sbx.commands.run("sleep 1000", background=True)
        assert answered_by(http(sbx, f"http://{OTHER}/"), OTHER)
        sbx.update_network({"allow_internet_access": False})
        assert http(sbx, f"http://{OTHER}/") == ""
        sbx.update_network({"allow_out": [f"{WEB}/32"], "deny_out": DENY_ALL})
        assert answered_by(http(sbx, f"http://{WEB}/"), WEB)
        assert http(sbx, f"http://{OTHER}/") == ""
        assert sleeper.pid in [p.pid for p in sbx.commands.list()]  # no restart
        info = sbx.get_info()
        assert info.network is not None and info.network.get("allow_out") == [f"{WEB}/32"]
        assert sbx.pause()
        sbx = Sandbox.connect(sbx.sandbox_id, **conn)
        assert answered_by(http(sbx, f"http://{WEB}/"), WEB)
        assert http(sbx, f"http://{OTHER}/") == ""
    finally:
        sbx.kill()


def test_update_while_paused_applies_on_resume(conn):
    sbx = Sandbox.create(**conn)
    try:
        assert sbx.pause()
        Sandbox.update_network(sbx.sandbox_id, {"deny_out": [OTHER]}, **conn)
        sbx = Sandbox.connect(sbx.sandbox_id, **conn)
        assert http(sbx, f"http://{OTHER}/") == ""
        assert answered_by(http(sbx, f"http://{WEB}/"), WEB)
    finally:
        sbx.kill()


def test_bad_network_input(stack, conn):
    api = httpx.Client(base_url=stack.config.api_url, headers={"X-API-Key": stack.api_key})
    before = len(api.get("/v2/sandboxes").json())
    cases = [
        ({"allowOut": ["10.0.0.0/33"], "denyOut": DENY_ALL}, "allowOut"),
        ({"denyOut": ["example.com"]}, "denyOut"),
        ({"allowOut": ["web.test.example"]}, "0.0.0.0/0"),
        ({"allowOut": ["198.51.100.1"] * 2001, "denyOut": DENY_ALL}, "at most 2000"),
        ({"egressProxy": {"address": "198.51.100.1:1080"}}, "egressProxy"),
    ]
    for network, words in cases:
        answer = api.post("/v2/sandboxes", json={"templateID": "base", "network": network})
        assert answer.status_code == 400, answer.text
        assert words in answer.json()["message"]
    assert len(api.get("/v2/sandboxes").json()) == before  # nothing half-made
    with pytest.raises(SandboxException, match=r"0\.0\.0\.0/0"):
        Sandbox.create(network={"allow_out": ["web.test.example"]}, **conn)
    sbx = Sandbox.create(**conn)
    bad = api.put(f"/sandboxes/{sbx.sandbox_id}/network", json={"denyOut": ["*.example.com"]})
    assert bad.status_code == 400 and "denyOut" in bad.json()["message"]
    sbx.kill()
    gone = api.put(f"/sandboxes/{sbx.sandbox_id}/network", json={"denyOut": DENY_ALL})
    assert gone.status_code == 404
    with pytest.raises(SandboxException):
        Sandbox.update_network(sbx.sandbox_id, {"deny_out": DENY_ALL}, **conn)


def test_traffic_token_and_masked_host(stack, conn):
    network = {"allow_public_traffic": False, "mask_request_host": "${PORT}-masked.example"}
    sbx = Sandbox.create(network=network, **conn)
    try:
        app = (
            "import http.server\n"
            "class H(http.server.BaseHTTPRequestHandler):\n"
            "    def do_GET(self):\n"
            "        body = self.headers['Host'].encode()\n"
            "        self.send_response(200); self.send_header('Content-Length', str(len(body)))\n"
            "        self.end_headers(); self.wfile.write(body)\n"
            "http.server.HTTPServer(('0.0.0.0', 8000), H).serve_forever()\n"
        )
        sbx.files.write("/tmp/app.py", app)
        sbx.commands.run("python3 /tmp/app.py", background=True)
        headers = {"E2b-Sandbox-Id": sbx.sandbox_id, "E2b-Sandbox-Port": "8000"}
        token = sbx.traffic_access_token
        assert token
        assert httpx.get(stack.config.sandbox_url, headers=headers).status_code == 403
        deadline = time.monotonic() + 30
        while True:
            answer = httpx.get(
                stack.config.sandbox_url, headers={**headers, "e2b-traffic-access-token": token}
            )
            if answer.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert answer.text == "8000-masked.example"
    finally:
        sbx.kill()


def _nft_objects() -> set[str]:
    listing = json.loads(subprocess.run(["nft", "-j", "list", "table", "inet", "corral"], capture_output=True,
                                        text=True, check=True).stdout)  # fmt: skip
    names = set()
    for item in listing["nftables"]:
        for kind in ("chain", "set", "counter"):
            if kind in item:
                names.add(item[kind]["name"])
        if "map" in item:
            names |= {str(element[0]) for element in item["map"].get("elem", [])}
    return names


def test_kill_leaves_no_nft_or_conntrack_state(conn):
    sbx = Sandbox.create(network={"allow_out": ["web.test.example"], "deny_out": DENY_ALL}, **conn)
    slot, address = sandbox_slot(sbx)
    assert answered_by(http(sbx, "http://web.test.example/"), WEB)
    assert http(sbx, f"http://{OTHER}:8080/") == ""
    mine = {f"f_{slot}", f"n_{slot}", f"a4_{slot}", f"d4_{slot}", f"ok_{slot}", f"no_{slot}", f"crv{slot}"}
    assert mine <= _nft_objects()
    sbx.kill()
    assert not mine & _nft_objects()  # fenced off before the kill answers
    deadline = time.time() + 30  # its flows are forgotten once it is torn down
    while address in (flows := _flows(address)) and time.time() < deadline:
        time.sleep(0.2)
    assert address not in flows


def _flows(address: str) -> str:
    return subprocess.run(["conntrack", "-L", "-s", address], capture_output=True, text=True).stdout


def test_node_agent_restart_keeps_policies(conn, stack):
    sbx = Sandbox.create(network={"allow_out": [f"{WEB}/32"], "deny_out": DENY_ALL}, **conn)
    try:
        _restart_node_agent(stack)
        assert answered_by(http(sbx, f"http://{WEB}/"), WEB)
        assert http(sbx, f"http://{OTHER}/") == ""
        sbx.update_network({"allow_out": ["web.test.example"], "deny_out": DENY_ALL})
        assert answered_by(http(sbx, "http://web.test.example/"), WEB)
        assert http(sbx, f"http://{WEB}/") == ""  # no longer by address: only by that name
    finally:
        sbx.kill()


def test_https_host_routing(stack, conn):
    """`https://<port>-<id>.<domain>` as TLS clients use it: the name resolves to this
    machine, the certificate is the local CA's, and the Host picks sandbox and port."""
    tls, port, domain = stack.config.tls_files, stack.config.tls_port, stack.config.domain
    trust = ssl.create_default_context(cafile=str(tls.ca))
    sbx = Sandbox.create(**conn)
    try:
        health = httpx.get(f"https://49983-{sbx.sandbox_id}.{domain}:{port}/health", verify=trust)
        assert health.status_code == 204
        sbx.files.write("/home/user/index.html", "over https")
        sbx.commands.run("python3 -m http.server 8000 --directory /home/user", background=True)
        page = f"https://8000-{sbx.sandbox_id}.{domain}:{port}/index.html"
        deadline = time.monotonic() + 30
        while (answer := httpx.get(page, verify=trust)).status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.3)
        assert answer.text == "over https"
        # The SDK itself, in a process that trusts the CA the way `corral up --tls` says to.
        script = (
            "import sys; from e2b import Sandbox; "
            "s = Sandbox.connect(sys.argv[1], api_key=sys.argv[2], api_url=sys.argv[3], "
            "sandbox_url=sys.argv[4]); print(s.commands.run('echo over tls').stdout, end='')"
        )
        envd_url = f"https://49983-{sbx.sandbox_id}.{domain}:{port}"
        env = {**os.environ, **stack.client_env()}
        done = subprocess.run(
            [sys.executable, "-c", script, sbx.sandbox_id, stack.api_key, stack.config.api_url, envd_url],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.stdout == "over tls\n", done.stderr
    finally:
        sbx.kill()


def test_snapshots_and_forks_keep_the_policy(conn):
    sbx = Sandbox.create(network={"deny_out": [OTHER]}, **conn)
    children: list[Sandbox] = []
    try:
        snapshot = sbx.create_snapshot()
        assert http(sbx, f"http://{OTHER}/") == ""  # the source goes on with its policy
        children.append(Sandbox.create(snapshot.snapshot_id, **conn))
        children += sbx.fork(count=1)
        for child in children:
            assert http(child, f"http://{OTHER}/") == ""
            assert answered_by(http(child, f"http://{WEB}/"), WEB)
        # A create from the snapshot that names a policy gets that one instead.
        children.append(Sandbox.create(snapshot.snapshot_id, allow_internet_access=False, **conn))
        assert http(children[-1], f"http://{WEB}/") == ""
        Sandbox.delete_snapshot(snapshot.snapshot_id, **conn)
    finally:
        for sandbox in [sbx, *children]:
            sandbox.kill()
