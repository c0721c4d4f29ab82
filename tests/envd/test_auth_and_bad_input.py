"""Access tokens, signed URLs and malformed requests."""

from collections.abc import Iterator

import httpx
import pytest
from e2b import AuthenticationException, Sandbox
from e2b.sandbox.signature import get_signature

from tests.harness.envd import EnvdInSandbox

pytestmark = pytest.mark.sandbox

TOKEN = "test-access-token-1234"


@pytest.fixture(scope="module")
def locked_envd() -> Iterator[EnvdInSandbox]:
    server = EnvdInSandbox().start()
    assert server.init(accessToken=TOKEN, envVars={"LOCKED": "1"}).status_code == 204
    yield server
    server.stop()


def test_sdk_without_token_is_refused(locked_envd):
    sbx = Sandbox.create(debug=True, sandbox_url=locked_envd.url)
    with pytest.raises(AuthenticationException):
        sbx.commands.run("true")
    with pytest.raises(AuthenticationException):
        sbx.files.list("/tmp")
    with pytest.raises(AuthenticationException):
        sbx.files.read("/etc/hostname")
    assert sbx.is_running()  # /health stays open


def test_requests_with_token_pass(locked_envd):
    headers = {"X-Access-Token": TOKEN}
    envs = httpx.get(f"{locked_envd.url}/envs", headers=headers)
    assert envs.status_code == 200 and envs.json() == {"LOCKED": "1"}
    up = httpx.post(
        f"{locked_envd.url}/files",
        params={"path": "/tmp/t.txt"},
        headers=headers,
        files={"file": ("/tmp/t.txt", b"tok")},
    )
    assert up.status_code == 200 and up.json()[0]["path"] == "/tmp/t.txt"
    wrong = httpx.get(f"{locked_envd.url}/envs", headers={"X-Access-Token": "wrong"})
    assert wrong.status_code == 401
    assert wrong.json() == {
        "code": 401,
        "message": "unauthorized access, please provide a valid access token or method signing if supported",
    }


def test_init_needs_the_current_token(locked_envd):
    assert httpx.post(f"{locked_envd.url}/init", json={"accessToken": "stolen"}).status_code == 401
    same = httpx.post(
        f"{locked_envd.url}/init", json={"accessToken": TOKEN}, headers={"X-Access-Token": TOKEN}
    )
    assert same.status_code == 204


def test_signed_urls(locked_envd):
    httpx.post(
        f"{locked_envd.url}/files",
        params={"path": "/tmp/signed.txt"},
        headers={"X-Access-Token": TOKEN},
        files={"file": ("/tmp/signed.txt", b"signed")},
    )
    sig = get_signature("/tmp/signed.txt", "read", None, TOKEN, 60)
    ok = httpx.get(
        f"{locked_envd.url}/files",
        params={
            "path": "/tmp/signed.txt",
            "signature": sig["signature"],
            "signature_expiration": sig["expiration"],
        },
    )
    assert ok.status_code == 200 and ok.content == b"signed"

    write = get_signature("/tmp/up.txt", "write", "root", TOKEN)
    up = httpx.post(
        f"{locked_envd.url}/files",
        params={"path": "/tmp/up.txt", "username": "root", "signature": write["signature"]},
        files={"file": ("up.txt", b"u")},
    )
    assert up.status_code == 200

    expired = get_signature("/tmp/signed.txt", "read", None, TOKEN, -10)
    gone = httpx.get(
        f"{locked_envd.url}/files",
        params={
            "path": "/tmp/signed.txt",
            "signature": expired["signature"],
            "signature_expiration": expired["expiration"],
        },
    )
    assert gone.status_code == 401
    assert gone.json() == {"code": 401, "message": "signature is already expired"}

    missing = httpx.get(f"{locked_envd.url}/files", params={"path": "/tmp/signed.txt"})
    assert missing.json() == {"code": 401, "message": "missing signature query parameter"}
    forged = httpx.get(
        f"{locked_envd.url}/files", params={"path": "/tmp/signed.txt", "signature": "v1_forged"}
    )
    assert forged.status_code == 401


def test_invalid_json_is_a_clear_400(envd):
    rpc = httpx.post(
        f"{envd.url}/filesystem.Filesystem/Stat",
        content=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    assert rpc.status_code == 400
    assert rpc.json()["code"] == "invalid_argument"
    init = httpx.post(f"{envd.url}/init", content=b"[1, 2", headers={"Content-Type": "application/json"})
    assert init.status_code == 400 and init.json()["code"] == 400


def test_uploads_without_a_file_part_or_path_are_refused(envd):
    no_part = httpx.post(f"{envd.url}/files", params={"path": "/tmp/x"}, files={"other": ("x", b"x")})
    assert no_part.status_code == 400
    no_path = httpx.post(
        f"{envd.url}/files", content=b"raw", headers={"Content-Type": "application/octet-stream"}
    )
    assert no_path.status_code == 400
    odd_type = httpx.post(
        f"{envd.url}/files", params={"path": "/tmp/x"}, content=b"x", headers={"Content-Type": "text/csv"}
    )
    assert odd_type.status_code == 400
    twice = httpx.post(
        f"{envd.url}/files",
        params={"path": "/tmp/dup.txt"},
        files=[("file", ("a", b"1")), ("file", ("b", b"2"))],
    )
    assert twice.status_code == 400


def test_unknown_user_on_files_is_401(envd):
    response = httpx.get(f"{envd.url}/files", params={"path": "/etc/hostname", "username": "ghost"})
    assert response.status_code == 401


def test_unknown_route_is_json_404(envd):
    response = httpx.get(f"{envd.url}/nope")
    assert response.status_code == 404 and response.json()["code"] == 404
    assert httpx.post(f"{envd.url}/process.Process/Nope", json={}).status_code == 404


def test_metrics(envd):
    body = httpx.get(f"{envd.url}/metrics").json()
    assert body["cpu_count"] >= 1 and body["mem_total"] > body["mem_used"] > 0
    assert body["disk_total"] > 0
