"""A sandbox killed while a client is in the middle of a request: the client's stream breaks
(the proxy drops it), and the SDKs say what E2B's say."""

from __future__ import annotations

import threading
import time

import pytest
from e2b import Sandbox, SandboxNotRunningException, TimeoutException
from e2b_code_interpreter import Sandbox as CodeInterpreter


def _kill_soon(sandbox: Sandbox, after_s: float = 2.0) -> None:
    def kill() -> None:
        time.sleep(after_s)
        sandbox.kill()

    threading.Thread(target=kill, daemon=True).start()


def test_a_command_running_at_kill_reports_the_sandbox_gone(conn):
    sbx = Sandbox.create(**conn)
    _kill_soon(sbx)
    with pytest.raises(SandboxNotRunningException, match="killed or reached its end of life"):
        sbx.commands.run("sleep 60", timeout=120)


def test_run_code_at_kill_is_a_timeout(conn, code_interpreter):
    sbx = CodeInterpreter.create(template=code_interpreter, **conn)
    sbx.run_code("1")  # the kernel is up: the kill lands mid-execution
    _kill_soon(sbx)
    with pytest.raises(TimeoutException, match="killed while the request was in progress"):
        sbx.run_code("import time; time.sleep(60)", timeout=120)
