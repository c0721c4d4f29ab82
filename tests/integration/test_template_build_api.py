"""The template builder API's HTTP semantics in-process (the API app, a real scheduler, real
NATS and Redis; a node record stands in for a builder, no build runs): what a build request
answers, and the clear 4xx every kind of bad input gets."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import httpx
import pytest

from corral_libs.apikeys import new_api_key
from corral_libs.contracts.records import NodeRecord, TemplateRecord
from corral_services.api.app import create_app
from corral_services.scheduler.settings import SchedulerSettings
from corral_services.scheduler.worker import Scheduler

HASH = "a" * 64


@pytest.fixture
async def api(store, bus) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str], dict[str, str]]]:
    await Scheduler(SchedulerSettings(), bus, store).start()
    now = time.time()
    await store.save_node(
        NodeRecord(
            node_id="builder",
            runtimes=["gvisor"],
            templates=["base"],
            cpu_count=2,
            memory_mb=4096,
            max_sandboxes=10,
            heartbeat_at=now,
            started_at=now,
            content_url="http://127.0.0.1:9",  # nothing listens: uploads are not the subject here
            builds_templates=True,
        )
    )
    await store.save_template(
        TemplateRecord(
            template_id="base",
            aliases=["base"],
            build_id="1",
            envd_version="0.4.0",
            cpu_count=2,
            memory_mb=1024,
            disk_mb=2048,
            created_at=now,
        )
    )
    keys = []
    for name in ("alice", "bob"):
        key, record = new_api_key(name, 5)
        await store.save_api_key(record)
        keys.append({"X-API-Key": key})
    app = create_app(bus, store, domain="sandbox.test", place_timeout_s=10)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://api.test"
    ) as client:
        yield client, keys[0], keys[1]


async def request_build(client: httpx.AsyncClient, key: dict[str, str], name: str) -> dict:
    response = await client.post(
        "/v3/templates", json={"name": name, "cpuCount": 1, "memoryMB": 512}, headers=key
    )
    assert response.status_code == 202, response.text
    return response.json()


async def test_build_request_and_status(api):
    client, alice, _ = api
    body = await request_build(client, alice, "my-app:v1")
    assert body["names"] == ["my-app"] and body["tags"] == ["v1"] and body["public"] is False
    template_id, build_id = body["templateID"], body["buildID"]
    status = await client.get(f"/templates/{template_id}/builds/{build_id}/status", headers=alice)
    assert status.status_code == 200
    assert status.json() | {"logs": [], "logEntries": []} == {
        "templateID": template_id,
        "buildID": build_id,
        "status": "waiting",
        "logs": [],
        "logEntries": [],
    }
    # The same name again is a new build of the same template.
    again = await request_build(client, alice, "my-app")
    assert again["templateID"] == template_id and again["buildID"] != build_id
    assert again["tags"] == ["default"]


async def test_bad_input_is_a_clear_4xx(api):
    client, alice, bob = api
    cases = [
        ({"name": "Bad Name!"}, "invalid template name"),
        ({"name": "ok", "cpuCount": 0}, "cpuCount"),
        ({"name": "ok", "memoryMB": 10}, "memoryMB"),
        ({}, "name is required"),
        ({"name": "ok", "tags": ["Bad Tag"]}, "invalid tag"),
        ({"name": "base"}, "Corral provides"),
    ]
    for payload, message in cases:
        response = await client.post("/v3/templates", json=payload, headers=alice)
        assert response.status_code in (400, 409), (payload, response.text)
        assert message in response.json()["message"], (payload, response.text)
    assert (await client.post("/v3/templates", content=b"{not json", headers=alice)).status_code == 400

    body = await request_build(client, alice, "mine")
    path = f"/v2/templates/{body['templateID']}/builds/{body['buildID']}"
    starts = [
        (
            {
                "fromImage": "ubuntu:22.04",
                "fromImageRegistry": {"type": "aws", "awsRegion": "x"},
                "steps": [],
            },
            400,
            "type 'aws' is not supported",
        ),
        ({"fromImage": "x", "fromTemplate": "base"}, 400, "not both"),
        ({"fromTemplate": "nope", "steps": []}, 400, "base template 'nope' not found"),
        ({"steps": []}, 400, "fromTemplate or fromImage is required"),
        (
            {"fromTemplate": "base", "steps": [{"type": "EXPLODE", "args": []}]},
            400,
            "step 1: unknown step type",
        ),
        ({"fromTemplate": "base", "steps": [{"type": "RUN", "args": []}]}, 400, "step 1: RUN takes"),
        (
            {
                "fromTemplate": "base",
                "steps": [{"type": "ENV", "args": ["A", "1"]}, {"type": "COPY", "args": ["a", "/b"]}],
            },
            400,
            "step 2: COPY needs the filesHash",
        ),
        (
            {"fromTemplate": "base", "steps": [{"type": "COPY", "args": ["../x", "/b"], "filesHash": HASH}]},
            400,
            "inside the build context",
        ),
        ({"fromTemplate": "base", "steps": "RUN ls"}, 400, "invalid request body"),
    ]
    for payload, status, message in starts:
        response = await client.post(path, json=payload, headers=alice)
        assert response.status_code == status, (payload, response.text)
        assert message in response.json()["message"], (payload, response.text)

    # Someone else's build, template and name.
    assert (await client.post(path, json={"fromTemplate": "base"}, headers=bob)).status_code == 404
    status_path = f"/templates/{body['templateID']}/builds/{body['buildID']}/status"
    assert (await client.get(status_path, headers=bob)).status_code == 404
    taken = await client.post("/v3/templates", json={"name": "mine"}, headers=bob)
    assert taken.status_code == 409 and "taken" in taken.json()["message"]
    assert (await client.get(f"{status_path}?logsOffset=-1", headers=alice)).status_code == 400
    assert (await client.get(f"{status_path}?level=loud", headers=alice)).status_code == 400

    # Files: a malformed hash, and an upload without the build's token.
    assert (await client.get(f"/templates/{body['templateID']}/files/xyz", headers=alice)).status_code == 400
    upload = await client.put(f"/templatefiles/{body['templateID']}/{HASH}", content=b"tar")
    assert upload.status_code == 401
    odd = {"x-corral-upload-token": "tökén".encode("latin-1")}
    assert (
        await client.put(f"/templatefiles/{body['templateID']}/{HASH}", content=b"tar", headers=odd)
    ).status_code == 401


async def test_alias_lookup_tells_yours_from_others(api, store):
    client, alice, bob = api
    await store.save_template(
        TemplateRecord(
            template_id="privtpl",
            aliases=["private-one"],
            build_id="b",
            envd_version="0.4.0",
            cpu_count=1,
            memory_mb=512,
            disk_mb=2048,
            created_at=time.time(),
            public=False,
            owner=(await store.api_keys())[0].key_hash,
        )
    )
    owner_key = alice if (await store.api_keys())[0].name == "alice" else bob
    other_key = bob if owner_key is alice else alice
    assert (await client.get("/templates/aliases/private-one", headers=owner_key)).status_code == 200
    assert (await client.get("/templates/aliases/private-one", headers=other_key)).status_code == 403
    assert (await client.get("/templates/aliases/nothing-here", headers=alice)).status_code == 404
    assert (await client.get("/templates/aliases/base", headers=alice)).json()["public"] is True
    listed = {t["templateID"] for t in (await client.get("/templates", headers=other_key)).json()}
    assert listed == {"base"}
    assert (await client.get("/templates/privtpl", headers=other_key)).status_code == 404
    assert (await client.delete("/templates/base", headers=alice)).status_code == 403
