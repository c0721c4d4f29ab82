"""Volumes (E2B's persistent storage) with the real SDKs: create and list them, fill them
through the content API without a sandbox, mount them into sandboxes (what one writes the
next sees, and so does the content API), keep them through pause and resume, refuse deleting
a mounted one, fill one to its quota, and keep one volume's token away from another."""

from __future__ import annotations

import shutil
import uuid

import httpx
import pytest
from e2b import AsyncSandbox, AsyncVolume, Sandbox, Volume
from e2b.exceptions import VolumeException

from .test_other_clients import NODE_DIR, _run


def name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_volume_lifecycle_and_content_sync(stack, conn, monkeypatch):
    monkeypatch.setenv("E2B_VOLUME_API_URL", stack.config.api_url)
    vol = Volume.create(name("sync"), **conn)
    try:
        assert vol.volume_id in [v.volume_id for v in Volume.list(**conn)]
        info = Volume.get_info(vol.volume_id, **conn)
        assert (info.name, info.token) == (vol.name, vol.token)

        entry = vol.write_file("/seed/hello.txt", "from the content API")
        assert (entry.path, entry.size, entry.type.value) == ("/seed/hello.txt", 20, "file")
        assert vol.read_file("/seed/hello.txt") == "from the content API"
        made = vol.make_dir("/made/deep", force=True)
        assert made.type.value == "directory"
        listed = sorted(e.path for e in vol.list("/", depth=2))
        assert listed == ["/made", "/made/deep", "/seed", "/seed/hello.txt"]
        updated = vol.update_metadata("/seed/hello.txt", mode=0o600)
        assert updated.mode == 0o600
        assert vol.exists("/seed/hello.txt") and not vol.exists("/nope")

        sbx = Sandbox.create(volume_mounts={"/mnt/vol": vol}, **conn)
        try:
            assert sbx.files.read("/mnt/vol/seed/hello.txt", user="root") == "from the content API"
            sbx.commands.run("echo 'from sandbox one' > /mnt/vol/one.txt")
            assert sbx.commands.run("stat -c %U /mnt/vol/one.txt").stdout.strip() == "user"
            # Mounted: it stays.
            with pytest.raises(VolumeException):
                Volume.destroy(vol.volume_id, **conn)
            # Paused and resumed, the mount comes back with the sandbox.
            sbx.pause()
            with pytest.raises(VolumeException):
                Volume.destroy(vol.volume_id, **conn)
            sbx = Sandbox.connect(sbx.sandbox_id, **conn)
            sbx.commands.run("echo after-resume >> /mnt/vol/one.txt")
            info = Sandbox.get_info(sbx.sandbox_id, **conn)
            assert info.volume_mounts == [{"name": vol.name, "path": "/mnt/vol"}]
        finally:
            sbx.kill()
        assert vol.read_file("/one.txt") == "from sandbox one\nafter-resume\n"

        second = Sandbox.create(volume_mounts={"/data": vol.name}, **conn)
        try:
            assert second.files.read("/data/one.txt") == "from sandbox one\nafter-resume\n"
        finally:
            second.kill()

        vol.remove("/seed")
        assert not vol.exists("/seed/hello.txt")
    finally:
        assert Volume.destroy(vol.volume_id, **conn)
    assert vol.volume_id not in [v.volume_id for v in Volume.list(**conn)]
    assert Volume.destroy(vol.volume_id, **conn) is False


async def test_volume_async_and_tokens(stack, conn, monkeypatch):
    monkeypatch.setenv("E2B_VOLUME_API_URL", stack.config.api_url)
    vol = await AsyncVolume.create(name("async"), **conn)
    other = await AsyncVolume.create(name("other"), **conn)
    try:
        await vol.write_file("/a.bin", b"\x00\x01" * 1000)
        assert await vol.read_file("/a.bin", format="bytes") == b"\x00\x01" * 1000
        # Another volume's token, or none, opens nothing.
        async with httpx.AsyncClient(base_url=stack.config.api_url) as http:
            path = f"/volumecontent/{vol.volume_id}/file"
            foreign_token = {"Authorization": f"Bearer {other.token}"}
            foreign = await http.get(path, params={"path": "/a.bin"}, headers=foreign_token)
            assert foreign.status_code == 401
            assert (await http.get(path, params={"path": "/a.bin"})).status_code == 401
            own = {"Authorization": f"Bearer {vol.token}"}
            assert (await http.get(path, params={"path": "/../etc/passwd"}, headers=own)).status_code == 400
        sbx = await AsyncSandbox.create(volume_mounts={"/work": vol}, **conn)
        try:
            assert (await sbx.commands.run("wc -c < /work/a.bin")).stdout.strip() == "2000"
            # A link a sandbox leaves does not lead the content API out of the volume.
            await sbx.commands.run("ln -s /etc/passwd /work/passwd")
            with pytest.raises(VolumeException):
                await vol.read_file("/passwd")
        finally:
            await sbx.kill()
    finally:
        await AsyncVolume.destroy(vol.volume_id, **conn)
        await AsyncVolume.destroy(other.volume_id, **conn)


def test_bad_volume_requests(stack, conn):
    headers = {"X-API-Key": conn["api_key"]}
    with httpx.Client(base_url=stack.config.api_url, headers=headers) as http:
        assert http.post("/volumes", json={"name": "bad name!"}).status_code == 400
        assert http.post("/volumes", json={}).status_code == 400
        assert http.get("/volumes/vol-missing").status_code == 404
        assert http.delete("/volumes/vol-missing").status_code == 404
        created = http.post("/volumes", json={"name": name("dup")})
        assert created.status_code == 201
        try:
            assert http.post("/volumes", json={"name": created.json()["name"]}).status_code == 409
            volume_name = created.json()["name"]
            mount = {"templateID": "base", "volumeMounts": [{"name": volume_name, "path": "/proc/x"}]}
            assert http.post("/sandboxes", json=mount).status_code == 400
            mount["volumeMounts"] = [{"name": "no-such-volume", "path": "/data"}]
            assert http.post("/sandboxes", json=mount).status_code == 404
        finally:
            assert http.delete(f"/volumes/{created.json()['volumeID']}").status_code == 204


def test_volume_quota(stack, conn, monkeypatch):
    """The stack's volumes are small (CORRAL_VOLUME_SIZE_MB): a sandbox that fills one gets
    ENOSPC, the content API a 507, and the sandbox's own disk is untouched."""
    monkeypatch.setenv("E2B_VOLUME_API_URL", stack.config.api_url)
    vol = Volume.create(name("quota"), **conn)
    try:
        sbx = Sandbox.create(volume_mounts={"/q": vol}, **conn)
        try:
            filled = sbx.commands.run(
                "dd if=/dev/zero of=/q/big bs=1M count=200 2>&1; echo rc=$?", timeout=120
            ).stdout
            assert "No space left on device" in filled
            assert sbx.commands.run("echo still-fine > /tmp/ok && cat /tmp/ok").stdout == "still-fine\n"
        finally:
            sbx.kill()
        with pytest.raises(VolumeException):
            vol.write_file("/more", b"x" * (4 << 20))
    finally:
        Volume.destroy(vol.volume_id, **conn)


def test_volumes_npm_sdk(stack):
    if shutil.which("node") is None or not (NODE_DIR / "node_modules" / "e2b").exists():
        pytest.skip("run scripts/install.sh: it installs node and the npm e2b SDK")
    seen = _run(["node", "volumes.mjs"], stack, NODE_DIR)
    assert seen["readInSandbox"] == "from node"
    assert seen["readBack"] == "written inside\n"
    assert seen["listed"] == ["/inside.txt", "/seed.txt"]
    assert seen["destroyed"] is True
