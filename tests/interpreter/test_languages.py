"""JavaScript, TypeScript, R and Java with the real e2b-code-interpreter SDK (sync and async)
against the interpreter and its real kernels (Deno, IRkernel, JShell): results, output,
errors, state, isolation, env vars, working directories, restart, interrupts, plots, the
default contexts and bad working directories."""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from e2b import SandboxException, TimeoutException
from e2b_code_interpreter import AsyncSandbox, Sandbox

from tests.harness.interpreter import InterpreterProcess


@dataclass(frozen=True)
class Code:
    hello: str  # prints "hello" and a newline
    value: str  # its result's text is 42
    value_text: str
    keep: str  # defines kept = 41
    read_kept: str  # kept + 1, as `value_text`
    error: str  # throws with the message "bad input"
    error_name: str
    env: str  # prints "$SANDBOX_VAR|$RUN_ONLY" and a newline
    cwd: str  # prints the working directory and a newline
    busy: str  # loops forever


CODE = {
    "javascript": Code(
        hello='console.log("hello")',
        value="6 * 7",
        value_text="42",
        keep="var kept = 41",
        read_kept="kept + 1",
        error='throw new TypeError("bad input")',
        error_name="TypeError",
        env='console.log(Deno.env.get("SANDBOX_VAR") + "|" + (process.env.RUN_ONLY ?? ""))',
        cwd="console.log(Deno.cwd())",
        busy="while (true) {}",
    ),
    "typescript": Code(
        hello='const greeting: string = "hello"; console.log(greeting)',
        value="const six: number = await Promise.resolve(6); six * 7",
        value_text="42",
        keep="let kept: number = 41",
        read_kept="kept + 1",
        error='function fail(): never { throw new RangeError("bad input") }\nfail()',
        error_name="RangeError",
        env='console.log(`${Deno.env.get("SANDBOX_VAR")}|${Deno.env.get("RUN_ONLY") ?? ""}`)',
        cwd="console.log(Deno.cwd())",
        busy="while (true) {}",
    ),
    "r": Code(
        hello='cat("hello\\n")',
        value="6 * 7",
        value_text="[1] 42",
        keep="kept <- 41",
        read_kept="kept + 1",
        error='stop("bad input")',
        error_name="ERROR",
        env='cat(Sys.getenv("SANDBOX_VAR"), "|", Sys.getenv("RUN_ONLY"), "\\n", sep = "")',
        cwd='cat(getwd(), "\\n", sep = "")',
        busy="while (TRUE) {}",
    ),
    "java": Code(
        hello='System.out.println("hello");',
        value="6 * 7",
        value_text="42",
        keep="int kept = 41;",
        read_kept="kept + 1",
        error='throw new IllegalStateException("bad input");',
        error_name="java.lang.IllegalStateException",
        env=(
            'System.out.println(System.getenv("SANDBOX_VAR") + "|"'
            ' + java.util.Objects.toString(System.getenv("RUN_ONLY"), ""));'
        ),
        cwd='System.out.println(System.getProperty("user.dir"));',
        busy="while (true) {}",
    ),
}
LANGUAGES = list(CODE)


@pytest.fixture
def sbx(interpreter) -> Sandbox:
    return Sandbox.create(debug=True, sandbox_url=interpreter.url)


def texts(execution) -> list[str]:
    return [result.text for result in execution.results]


@pytest.mark.parametrize("language", LANGUAGES)
def test_results_output_errors_and_state(sbx, language):
    code = CODE[language]
    hello = sbx.run_code(code.hello, language=language)
    assert hello.error is None, hello.error
    assert "".join(hello.logs.stdout) == "hello\n"
    value = sbx.run_code(code.value, language=language)
    assert value.error is None, value.error
    assert texts(value) == [code.value_text]

    failed = sbx.run_code(code.error, language=language)
    assert failed.error is not None
    assert failed.error.name == code.error_name
    assert "bad input" in failed.error.value

    assert sbx.run_code(code.keep, language=language).error is None
    assert texts(sbx.run_code(code.read_kept, language=language)) == [code.value_text]


@pytest.mark.parametrize("language", LANGUAGES)
def test_contexts_are_isolated_and_restart(sbx, language, tmp_path):
    code = CODE[language]
    workdir = tmp_path / f"ctx-{language}"
    workdir.mkdir()
    context = sbx.create_code_context(cwd=str(workdir), language=language)
    assert context.language == language and context.cwd == str(workdir)
    assert "".join(sbx.run_code(code.cwd, context=context).logs.stdout) == f"{workdir}\n"

    sbx.run_code(code.keep, context=context)
    assert texts(sbx.run_code(code.read_kept, context=context)) == [code.value_text]
    other = sbx.create_code_context(language=language)
    assert sbx.run_code(code.read_kept, context=other).error is not None

    sbx.restart_code_context(context)
    assert sbx.run_code(code.read_kept, context=context).error is not None
    for each in (context, other):
        sbx.remove_code_context(each)


@pytest.mark.parametrize("language", LANGUAGES)
def test_sandbox_and_per_run_env_vars(sbx, language):
    code = CODE[language]
    context = sbx.create_code_context(language=language)
    assert sbx.run_code(code.env, context=context).logs.stdout == ["from-envd|\n"]
    during = sbx.run_code(code.env, context=context, envs={"RUN_ONLY": "yes", "SANDBOX_VAR": "run"})
    assert during.logs.stdout == ["run|yes\n"]
    assert sbx.run_code(code.env, context=context).logs.stdout == ["from-envd|\n"]
    sbx.remove_code_context(context)


@pytest.mark.parametrize("language", LANGUAGES)
def test_timeout_interrupts_and_keeps_state(sbx, language):
    code = CODE[language]
    context = sbx.create_code_context(language=language)
    sbx.run_code(code.keep, context=context)
    with pytest.raises(TimeoutException):
        sbx.run_code(code.busy, context=context, timeout=3)
    assert texts(sbx.run_code(code.read_kept, context=context)) == [code.value_text]
    sbx.remove_code_context(context)


def test_r_data_frames_and_plots_are_rich_results(sbx):
    frame = sbx.run_code('data.frame(a = 1:2, b = c("x", "y"))', language="r")
    assert frame.error is None, frame.error
    assert "<table" in (frame.results[0].html or "")
    plot = sbx.run_code("plot(1:10)", language="r")
    pngs = [r.png for r in plot.results if r.png]
    assert pngs and base64.b64decode(pngs[0]).startswith(b"\x89PNG\r\n\x1a\n")


def test_javascript_modules_and_top_level_await(sbx):
    execution = sbx.run_code(
        'import { join } from "node:path";\nconst parts = await Promise.all([Promise.resolve("a"), "b"]);\n'
        "join(...parts)",
        language="js",
    )
    assert execution.error is None, execution.error
    assert execution.text == "a/b"


def test_default_contexts_are_python_and_javascript(sbx):
    languages = {context.language for context in sbx.list_code_contexts()}
    assert {"python", "javascript"} <= languages


def test_bad_input_and_working_directories_are_400s(sbx, interpreter, tmp_path):
    (tmp_path / "a-file").write_text("")
    with httpx.Client(base_url=interpreter.url) as client:
        for cwd in ("/no/such/dir", str(tmp_path / "a-file"), "relative/dir"):
            response = client.post("/contexts", json={"language": "python", "cwd": cwd})
            assert response.status_code == 400, response.text
            assert cwd in response.text
        for body in ({"code": 5}, {"code": "1", "env_vars": ["A"]}, {"code": "1", "language": "cobol"}):
            response = client.post("/execute", json=body)
            assert response.status_code == 400 and response.text, body
        assert client.post("/contexts", json={"language": 5}).status_code == 400
        assert client.post("/contexts", json={"language": "fortran"}).status_code == 400
    with pytest.raises(SandboxException, match="/no/such/dir"):
        sbx.create_code_context(cwd="/no/such/dir")


async def test_async_sdk_runs_each_language(interpreter):
    sbx = await AsyncSandbox.create(debug=True, sandbox_url=interpreter.url)
    for language, code in CODE.items():
        lines: list[str] = []
        execution = await sbx.run_code(code.hello, language=language, on_stdout=lines.append)
        assert execution.error is None, (language, execution.error)
        assert "".join(m.line for m in lines) == "hello\n", language
        assert texts(await sbx.run_code(code.value, language=language)) == [code.value_text], language


def test_no_kernel_outlives_the_interpreter():
    """Deno's and R's kernels do not watch their parent: killed with it, an interpreter that
    is started again would leave a set of kernels behind each time."""
    server = InterpreterProcess().start()
    assert server.process is not None
    kernels = [
        int(pid)
        for pid in Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children").read_text().split()
    ]
    assert len(kernels) >= len(CODE)  # every language starts warm
    server.process.kill()
    server.process.wait()
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{pid}").exists() for pid in kernels) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in kernels if Path(f"/proc/{pid}").exists()]
