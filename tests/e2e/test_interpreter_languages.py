"""Every language of the code-interpreter template in a real sandbox (gVisor), with the
unmodified e2b-code-interpreter SDK: the kernels installed by the template's build (Deno,
IRkernel, the JShell kernel) answer, the default contexts come warm from the template's
snapshot, and root's home is a working directory as in E2B's template. The semantics per
language (state, env vars, interrupts, restarts) are covered against the same kernels on the
host in tests/interpreter/test_languages.py."""

from __future__ import annotations

import base64

import pytest
from e2b import SandboxException, TimeoutException
from e2b_code_interpreter import AsyncSandbox, Sandbox

HELLO = {
    "javascript": ('console.log("hello"); 6 * 7', "42"),
    "typescript": ('const n: number = await Promise.resolve(6); console.log("hello"); n * 7', "42"),
    "r": ('cat("hello\\n"); 6 * 7', "[1] 42"),
    "java": ('System.out.println("hello"); 6 * 7', "42"),
    "bash": ("echo hello", None),
}


def test_every_language_answers_in_a_sandbox(conn, code_interpreter):
    with Sandbox.create(envs={"FROM_CREATE": "yes"}, **conn) as sbx:
        languages = {context.language for context in sbx.list_code_contexts()}
        assert {"python", "javascript"} <= languages  # E2B's default contexts
        for language, (code, text) in HELLO.items():
            execution = sbx.run_code(code, language=language)
            assert execution.error is None, (language, execution.error)
            assert "".join(execution.logs.stdout) == "hello\n", language
            if text is not None:
                assert [r.text for r in execution.results] == [text], language

        env = sbx.run_code('System.out.println(System.getenv("FROM_CREATE"));', language="java")
        assert env.logs.stdout == ["yes\n"]
        error = sbx.run_code('throw new TypeError("bad input")', language="js").error
        assert error is not None and error.name == "TypeError" and error.value == "bad input"

        plot = sbx.run_code("plot(1:10)", language="r")
        pngs = [r.png for r in plot.results if r.png]
        assert pngs and base64.b64decode(pngs[0]).startswith(b"\x89PNG")

        root = sbx.create_code_context(cwd="/root", language="js")
        assert sbx.run_code("Deno.cwd()", context=root).text == "/root"
        with pytest.raises(SandboxException, match="/no/such/dir"):
            sbx.create_code_context(cwd="/no/such/dir")

        sbx.run_code("int kept = 41;", language="java")
        with pytest.raises(TimeoutException):
            sbx.run_code("while (true) {}", language="java", timeout=3)
        assert sbx.run_code("kept + 1", language="java").text == "42"


async def test_async_sdk_runs_javascript_and_r(conn, code_interpreter):
    sbx = await AsyncSandbox.create(**conn)
    try:
        lines: list = []
        execution = await sbx.run_code(
            'console.log("streamed"); [1, 2, 3].length', language="js", on_stdout=lines.append
        )
        assert execution.text == "3" and [m.line for m in lines] == ["streamed\n"]
        frame = await sbx.run_code('data.frame(a = 1:2, b = c("x", "y"))', language="r")
        assert "<table" in (frame.results[0].html or "")
    finally:
        await sbx.kill()
