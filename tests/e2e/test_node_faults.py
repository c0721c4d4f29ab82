"""The node agent SIGKILLed in the middle of a pause and of a resume, then restarted: the
sandbox's files and processes survive and nothing is left behind."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

from e2b import Sandbox, SandboxState


def _wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _in_background(call: Callable[[], object]) -> None:
    """The call the agent dies under: its answer (an error, later) does not matter."""

    def run() -> None:
        with contextlib.suppress(Exception):
            call()

    threading.Thread(target=run, daemon=True).start()


def _restart_node_agent(stack) -> None:
    stack.stop_service("nodeagent", signal.SIGKILL)
    stack.start_service("nodeagent")
    asyncio.run(stack.wait_node(stack.config.node_id))


def _unfinished(root: Path, sandbox_id: str) -> list[Path]:
    return [p for p in root.glob(f".*-{sandbox_id}-*")] if root.exists() else []


def test_node_agent_killed_mid_pause(conn, stack):
    data = stack.config.data_dir
    sbx = Sandbox.create(**conn)
    try:
        sbx.files.write("/home/user/data.txt", "must survive")
        sleeper = sbx.commands.run("sleep 3600", background=True)

        _in_background(sbx.pause)
        _wait_for(lambda: bool(_unfinished(data / "paused", sbx.sandbox_id)), "the pause to start saving")
        _restart_node_agent(stack)

        # The checkpoint either finished (the sandbox is now paused) or never ran (it runs
        # on): either way it is all there after a connect.
        if (data / "paused" / sbx.sandbox_id).exists():
            _wait_for(
                lambda: Sandbox.get_info(sbx.sandbox_id, **conn).state == SandboxState.PAUSED,
                "the scheduler to hear of the pause",
            )
        assert not _unfinished(data / "paused", sbx.sandbox_id)
        back = Sandbox.connect(sbx.sandbox_id, **conn)
        assert back.files.read("/home/user/data.txt") == "must survive"
        assert sleeper.pid in {p.pid for p in back.commands.list()}
    finally:
        sbx.kill()
    assert not (data / "paused" / sbx.sandbox_id).exists()
    _wait_for(lambda: not (data / "sandboxes" / sbx.sandbox_id).exists(), "the teardown after the kill")


def test_node_agent_killed_mid_resume(conn, stack):
    data = stack.config.data_dir
    sbx = Sandbox.create(**conn)
    try:
        sbx.files.write("/home/user/data.txt", "must survive")
        sleeper = sbx.commands.run("sleep 3600", background=True)
        assert sbx.pause()

        _in_background(lambda: Sandbox.connect(sbx.sandbox_id, **conn))
        _wait_for(lambda: (data / "sandboxes" / sbx.sandbox_id).exists(), "the resume to start restoring")
        _restart_node_agent(stack)

        # The half-restored sandbox goes; the paused image is whole and still paused.
        _wait_for(lambda: not (data / "sandboxes" / sbx.sandbox_id).exists(), "the half-restored copy to go")
        assert (data / "paused" / sbx.sandbox_id).is_dir()
        assert Sandbox.get_info(sbx.sandbox_id, **conn).state == SandboxState.PAUSED

        back = Sandbox.connect(sbx.sandbox_id, **conn)
        assert back.files.read("/home/user/data.txt") == "must survive"
        assert sleeper.pid in {p.pid for p in back.commands.list()}
        assert not (data / "paused" / sbx.sandbox_id).exists()
    finally:
        sbx.kill()
    _wait_for(lambda: not (data / "sandboxes" / sbx.sandbox_id).exists(), "the teardown after the kill")
