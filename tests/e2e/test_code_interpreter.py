"""The code-interpreter template through the whole stack, with the unmodified
e2b-code-interpreter SDKs (Python sync and async, npm): `Sandbox.create()` with no template
gets `code-interpreter-v1` from the warm pool, and `run_code` keeps state, renders charts and
data frames, streams output and sees the sandbox's env vars."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from e2b_code_interpreter import AsyncSandbox, Sandbox

NODE_DIR = Path(__file__).parent / "node"


def test_run_code_in_a_sandbox(conn, code_interpreter):
    with Sandbox.create(envs={"FROM_CREATE": "yes"}, **conn) as sbx:
        assert sbx.run_code("x = 41\nprint('hi')").logs.stdout == ["hi\n"]
        assert sbx.run_code("x + 1").text == "42"
        assert sbx.run_code("import os; os.environ['FROM_CREATE']").text == "yes"
        # As in E2B's template: kernels run as root, in the user's home.
        assert sbx.run_code("import getpass; getpass.getuser()").text == "root"
        assert sbx.run_code("import os; os.getcwd()").text == "/home/user"

        error = sbx.run_code("1 / 0").error
        assert error is not None and error.name == "ZeroDivisionError"

        chart = sbx.run_code("import matplotlib.pyplot as plt\nplt.plot([1, 2], [3, 4])\nplt.show()")
        pngs = [r.png for r in chart.results if r.png]
        assert pngs and base64.b64decode(pngs[0]).startswith(b"\x89PNG")
        assert [r.chart.type.value for r in chart.results if r.chart] == ["line"]

        frame = sbx.run_code("import pandas as pd\npd.DataFrame({'a': [1, 2]})")
        assert "<table" in (frame.results[0].html or "")
        assert frame.results[0].data == {"a": [1, 2]}

        # envd and the interpreter share the sandbox: files and commands see each other.
        sbx.run_code("open('/home/user/from_kernel.txt', 'w').write('kernel')")
        assert sbx.files.read("/home/user/from_kernel.txt") == "kernel"
        assert sbx.commands.run("python3 -c 'print(1)'").stdout == "1\n"

        context = sbx.create_code_context(cwd="/tmp")
        assert sbx.run_code("import os; os.getcwd()", context=context).text == "/tmp"
        bash = sbx.run_code("echo $FROM_CREATE", language="bash")
        assert bash.logs.stdout == ["yes\n"]


async def test_async_sdk(conn, code_interpreter):
    sbx = await AsyncSandbox.create(**conn)
    try:
        lines: list[str] = []
        execution = await sbx.run_code(
            "for i in range(3):\n    print(i)", on_stdout=lambda message: lines.append(message.line)
        )
        assert execution.error is None
        assert "".join(lines) == "0\n1\n2\n"
        contexts = await sbx.list_code_contexts()
        assert "python" in {c.language for c in contexts}
    finally:
        await sbx.kill()


def test_pause_and_resume_keep_kernel_state(conn, code_interpreter):
    sbx = Sandbox.create(**conn)
    try:
        sbx.run_code("kept = [1, 2, 3]")
        assert sbx.pause()
        resumed = Sandbox.connect(sbx.sandbox_id, **conn)
        assert resumed.run_code("sum(kept)").text == "6"
    finally:
        sbx.kill()


def test_npm_code_interpreter_sdk(stack, code_interpreter):
    if shutil.which("node") is None or not (NODE_DIR / "node_modules" / "@e2b" / "code-interpreter").exists():
        pytest.skip("run scripts/install.sh: it installs node and the npm SDKs")
    env = {**os.environ, **stack.client_env()}
    completed = subprocess.run(
        ["node", "code_interpreter.mjs"], cwd=NODE_DIR, env=env, capture_output=True, text=True, timeout=240
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    seen = json.loads(completed.stdout.strip().splitlines()[-1])
    assert seen["stdout"] == ["from node\n"]
    assert seen["text"] == "42"
    assert seen["error"] == "ZeroDivisionError"
    assert seen["cwd"] == "/tmp"
    assert seen["streamed"] == ["streamed\n"]
    assert {"python", "javascript"} <= set(seen["contexts"])
    assert seen["languages"] == {"js": "42", "ts": "42", "r": "[1] 42", "java": "42"}
