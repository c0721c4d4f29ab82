"""Templates built through the API with the real SDKs' builder (E2B's `Template`): from
Corral's `base`, with files copied from a local directory and a single file, environment,
working directory, user, a start command and its ready check; a sandbox of the result sees
all of it with the app running; a rebuild after changing one step runs only that step; a
failing step fails the build with its output; the async and JS builders work the same."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import pytest
from e2b import AsyncTemplate, Sandbox, Template, wait_for_port
from e2b.exceptions import BuildException

from corral_libs.contracts.records import NodeRecord
from corral_libs.state import Store
from tests.harness.corral_up import TEMPLATE_DIR
from tests.harness.registry import PASSWORD, USERNAME

from .test_other_clients import NODE_DIR, _run


def name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def delete_template(conn: dict[str, str], template: str) -> None:
    response = httpx.delete(
        f"{conn['api_url']}/templates/{template}", headers={"X-API-Key": conn["api_key"]}, timeout=60
    )
    assert response.status_code in (204, 404), response.text


@pytest.fixture
def context(tmp_path: Path) -> Path:
    app = tmp_path / "app"
    (app / "static").mkdir(parents=True)
    (app / "static" / "index.html").write_text("served from the template\n")
    (app / "run.sh").write_text("#!/bin/sh\ncd static && exec python3 -m http.server 8080\n")
    (app / "run.sh").chmod(0o755)
    (tmp_path / "settings.json").write_text('{"mode": "test"}\n')
    return tmp_path


def app_template(context: Path, greeting: str) -> Template:
    return (
        Template(file_context_path=context)
        .from_template("base")
        .copy("app", "/home/user/app")
        .copy("settings.json", "/etc/corral-test/", user="root", mode=0o600)
        .set_envs({"GREETING": "hello"})
        .run_cmd("echo $GREETING from $(whoami) > /home/user/greeting.txt")
        .set_workdir("/home/user/app")
        .run_cmd("sudo apt-get --version | head -1 > apt-version.txt", user="root")
        .set_user("user")
        .run_cmd(f"echo {greeting} > last-step.txt")
        .set_start_cmd("./run.sh", wait_for_port(8080))
    )


def test_sdk_builder_makes_a_template_sandboxes_use(stack, conn, context):
    template = name("app")
    logs: list[str] = []
    try:
        info = Template.build(
            app_template(context, "first"), template, on_build_logs=lambda e: logs.append(e.message), **conn
        )
        assert info.template_id and info.build_id
        assert any("COPY app /home/user/app" in line for line in logs)

        sbx = Sandbox.create(template, **conn)
        try:
            run = sbx.commands.run
            assert run("cat /home/user/app/static/index.html").stdout == "served from the template\n"
            assert run("cat /home/user/greeting.txt").stdout == "hello from user\n"
            assert run("echo $GREETING").stdout == "hello\n"
            assert run("pwd").stdout == "/home/user/app\n"
            assert run("whoami").stdout == "user\n"
            assert run("stat -c '%U %a' /etc/corral-test/settings.json").stdout == "root 600\n"
            assert run("stat -c %U /home/user/app/run.sh").stdout == "user\n"
            assert run("cat last-step.txt").stdout == "first\n"
            assert run("stat -c %U apt-version.txt").stdout == "root\n"
            # The start command runs (in the snapshot) and was ready before the create answered.
            served = run("curl -s http://127.0.0.1:8080/index.html").stdout
            assert served == "served from the template\n"
        finally:
            sbx.kill()

        # Only the changed last step runs again; everything before it comes from the cache.
        logs.clear()
        Template.build(
            app_template(context, "second"), template, on_build_logs=lambda e: logs.append(e.message), **conn
        )
        cached = [line for line in logs if line.startswith("CACHED ")]
        ran = [line for line in logs if line.startswith("[") and "/" in line.split("]")[0]]
        assert len(cached) >= 3, logs
        assert [line for line in ran if "RUN" in line or "COPY" in line] == [
            line for line in ran if "last-step" in line
        ], logs
        sbx = Sandbox.create(template, **conn)
        try:
            assert sbx.commands.run("cat last-step.txt").stdout == "second\n"
        finally:
            sbx.kill()

        exists = httpx.get(
            f"{conn['api_url']}/templates/aliases/{template}", headers={"X-API-Key": conn["api_key"]}
        )
        assert exists.status_code == 200
    finally:
        delete_template(conn, template)
    gone = httpx.get(
        f"{conn['api_url']}/templates/aliases/{template}", headers={"X-API-Key": conn["api_key"]}
    )
    assert gone.status_code == 404


def test_a_step_cannot_fill_the_node_disk(stack, conn):
    template = name("bigwrite")
    greedy = Template().from_template("base").run_cmd("dd if=/dev/zero of=/home/user/big bs=1M count=700")
    try:
        with pytest.raises(BuildException) as caught:
            Template.build(greedy, template, **conn)
        assert "No space left on device" in str(caught.value) and "disk" in str(caught.value)
    finally:
        delete_template(conn, template)


def test_failing_step_fails_the_build_with_its_output(stack, conn):
    template = name("broken")
    failing = Template().from_template("base").run_cmd("echo about to fail; echo on stderr >&2; exit 3")
    try:
        with pytest.raises(BuildException) as caught:
            Template.build(failing, template, **conn)
        message = str(caught.value)
        assert "exit code 3" in message and "about to fail" in message and "on stderr" in message
        listed = httpx.get(f"{conn['api_url']}/templates", headers={"X-API-Key": conn["api_key"]}).json()
        assert template not in {alias for t in listed for alias in t["aliases"]}
    finally:
        delete_template(conn, template)


async def test_async_builder(stack, conn):
    template = name("async")
    built = (
        AsyncTemplate()
        .from_base_image()  # E2B's base image: Corral's base template
        .set_envs({"BUILT_BY": "async"})
        .run_cmd("echo $BUILT_BY > /home/user/by.txt")
    )
    try:
        await AsyncTemplate.build(built, template, **conn)
        sbx = Sandbox.create(template, **conn)
        try:
            assert sbx.files.read("/home/user/by.txt") == "async\n"
        finally:
            sbx.kill()
    finally:
        delete_template(conn, template)


def test_js_builder(stack, conn):
    template = name("js")
    try:
        seen = _run(["node", "template_build.mjs", template], stack, NODE_DIR)
        assert seen == {"built": True, "content": "from node\n", "user": "user\n"}
    finally:
        delete_template(conn, template)


def test_a_template_built_once_reaches_every_node(stack, conn):
    """A second node agent with its own data and template directories (Corral's base linked
    in): whichever node builds the template, the other fetches it and runs sandboxes of it."""
    root = Path(tempfile.mkdtemp(prefix="corral-node2-"))
    (root / "templates").mkdir()
    subprocess.run(["cp", "-al", str(TEMPLATE_DIR / "base"), str(root / "templates" / "base")], check=True)
    env = {
        "CORRAL_NODE_ID": "e2enode2",
        "CORRAL_DATA_DIR": str(root / "data"),
        "CORRAL_TEMPLATE_DIR": str(root / "templates"),
        "CORRAL_SLOT_BASE": "21000",
        # The freest node: placement picks it when neither has a warm clone (users' templates
        # are warmed on demand only).
        "CORRAL_MAX_SANDBOXES": "900",
    }
    template = name("shared")
    stack.start_service("nodeagent", env=env, label="nodeagent2")
    try:
        asyncio.run(stack.wait_node("e2enode2", label="nodeagent2"))
        built = Template().from_template("base").run_cmd("echo on every node > /home/user/shared.txt")
        template_id = Template.build(built, template, **conn).template_id

        async def nodes() -> dict[str, NodeRecord]:
            store = Store.connect(stack.config.redis_url)
            try:
                return {n.node_id: n for n in await store.nodes()}
            finally:
                await store.close()

        async def placed_on(sandbox_id: str) -> str:
            store = Store.connect(stack.config.redis_url)
            try:
                record = await store.sandbox(sandbox_id)
                assert record is not None
                return record.node_id
            finally:
                await store.close()

        def wait_for(what: str, condition) -> None:
            deadline = time.monotonic() + 180
            while not condition(asyncio.run(nodes())):
                assert time.monotonic() < deadline, what
                time.sleep(1)

        wait_for(
            "both nodes to hold it",
            lambda n: all(template_id in n[i].templates for i in (stack.config.node_id, "e2enode2")),
        )
        for expected in ("e2enode2", stack.config.node_id):
            if expected == stack.config.node_id:
                stack.stop_service("nodeagent2")  # the only node left
            sbx = Sandbox.create(template, **conn)
            try:
                assert asyncio.run(placed_on(sbx.sandbox_id)) == expected
                assert sbx.files.read("/home/user/shared.txt") == "on every node\n"
            finally:
                sbx.kill()
    finally:
        delete_template(conn, template)
        stack.stop_service("nodeagent2")
        shutil.rmtree(root, ignore_errors=True)


def test_from_image_pulls_unpacks_and_adds_envd(stack, conn, registry):
    """A two-layer busybox image from a password-protected registry: the second layer's
    whiteout is honoured, the image's environment kept, the sandbox user added and envd (with
    its own Python) run in a root that has no Python or libc of its own."""
    template = name("image")
    built = (
        Template()
        .from_image(registry.image, username=USERNAME, password=PASSWORD)
        .run_cmd("echo built in the image > /home/user/built.txt")
    )
    try:
        Template.build(built, template, **conn)
        sbx = Sandbox.create(template, **conn)
        try:
            run = sbx.commands.run
            assert sbx.files.read("/etc/layer-one.txt") == "one\n"
            assert sbx.files.read("/etc/layer-two.txt") == "two\n"
            assert not sbx.files.exists("/etc/removed.txt")
            assert sbx.files.read("/home/user/built.txt") == "built in the image\n"
            assert run("whoami").stdout == "user\n"
            assert run("echo $GREETING").stdout == "from the image\n"
            assert not sbx.files.exists("/usr/bin/python3")
        finally:
            sbx.kill()
    finally:
        delete_template(conn, template)


@pytest.mark.parametrize(
    ("reference", "password", "expected"),
    [
        ("{image}", "wrong-password", "refused the credentials"),
        ("{address}/corral/busybox:no-such-tag", PASSWORD, "no such image or tag"),
    ],
)
def test_from_image_failures_say_why(stack, conn, registry, reference, password, expected):
    template = name("badimage")
    image = reference.format(image=registry.image, address=registry.address)
    try:
        with pytest.raises(BuildException) as caught:
            Template.build(
                Template().from_image(image, username=USERNAME, password=password), template, **conn
            )
        assert expected in str(caught.value)
    finally:
        delete_template(conn, template)


def test_dockerfile(stack, conn, tmp_path):
    """`Template.from_dockerfile`: the SDK turns it into steps (E2B's base image is Corral's base)."""
    (tmp_path / "note.txt").write_text("copied by the Dockerfile\n")
    (tmp_path / "Dockerfile").write_text(
        "FROM e2bdev/base\n"
        "ENV GREETING=dockerfile\n"
        "WORKDIR /home/user/work\n"
        "COPY note.txt .\n"
        "RUN echo $GREETING > built.txt\n"
        "USER user\n"
    )
    template = name("dockerfile")
    try:
        built = Template(file_context_path=tmp_path).from_dockerfile(str(tmp_path / "Dockerfile"))
        Template.build(built, template, **conn)
        sbx = Sandbox.create(template, **conn)
        try:
            assert (
                sbx.commands.run("cat note.txt built.txt").stdout == "copied by the Dockerfile\ndockerfile\n"
            )
            assert sbx.commands.run("pwd").stdout == "/home/user/work\n"
        finally:
            sbx.kill()
    finally:
        delete_template(conn, template)


def test_base_has_what_agents_need(stack, conn):
    """E2B's base offers these: Node.js 22 with npm (Debian 12 ships 18), a C toolchain, git,
    curl and sudo."""
    sbx = Sandbox.create("base", **conn)
    try:
        run = sbx.commands.run
        assert run("node --version").stdout.startswith("v22.")
        assert run("npm --version && npx --version").exit_code == 0
        assert run("gcc --version && make --version && git --version && curl --version").exit_code == 0
        assert run("sudo -n true").exit_code == 0
        # `pip install` works (root: system-wide; users: --user by itself), as in E2B's base.
        stdlib = run("python3 -c 'import sysconfig; print(sysconfig.get_path(\"stdlib\"))'").stdout.strip()
        assert not sbx.files.exists(f"{stdlib}/EXTERNALLY-MANAGED")
    finally:
        sbx.kill()
