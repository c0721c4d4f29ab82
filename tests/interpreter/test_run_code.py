"""`run_code` with the real e2b-code-interpreter SDK, sync and async: results, logs, state,
errors, env vars, contexts, rich results, interrupts, streaming and dead kernels."""

from __future__ import annotations

import base64
import uuid
from pathlib import Path

import httpx
import pytest
from e2b import NotFoundException, TimeoutException
from e2b_code_interpreter import AsyncSandbox, Sandbox


@pytest.fixture
def sbx(interpreter) -> Sandbox:
    # Debug mode makes no API call; sandbox_url sends every request to our interpreter.
    return Sandbox.create(debug=True, sandbox_url=interpreter.url)


def test_results_logs_and_state(sbx):
    first = sbx.run_code("counter = 41\nprint('hello')")
    assert first.logs.stdout == ["hello\n"] and first.results == []
    second = sbx.run_code("import sys\nsys.stderr.write('careful\\n')\ncounter + 1")
    assert second.text == "42"
    assert second.logs.stderr == ["careful\n"]
    assert second.execution_count == first.execution_count + 1
    assert sbx.run_code("'quoted'").text == "quoted"


def test_error_with_traceback(sbx):
    execution = sbx.run_code("def f():\n    return undefined_name\nf()")
    assert execution.error is not None
    assert execution.error.name == "NameError"
    assert execution.error.value == "name 'undefined_name' is not defined"
    assert "undefined_name" in execution.error.traceback
    assert sbx.run_code("1 + 1").text == "2"  # the context goes on


def test_sandbox_and_per_run_env_vars(sbx):
    read = "import os; (os.environ.get('SANDBOX_VAR'), os.environ.get('SHARED'), os.environ.get('RUN_ONLY'))"
    assert sbx.run_code(read).text == "('from-envd', 'sandbox-value', None)"
    during = sbx.run_code(read, envs={"RUN_ONLY": "yes", "SHARED": "overridden"})
    assert during.text == "('from-envd', 'overridden', 'yes')"
    assert sbx.run_code(read).text == "('from-envd', 'sandbox-value', None)"


def test_contexts(sbx, tmp_path):
    workdir = tmp_path / "ctx"
    workdir.mkdir()
    context = sbx.create_code_context(cwd=str(workdir))
    assert context.language == "python" and context.cwd == str(workdir)
    assert context.id in {c.id for c in sbx.list_code_contexts()}
    assert sbx.run_code("import os; os.getcwd()", context=context).text == str(workdir)

    sbx.run_code("only_here = 1", context=context)
    assert sbx.run_code("'only_here' in globals()").text == "False"  # the default context
    assert sbx.run_code("only_here", context=context).text == "1"

    sbx.restart_code_context(context)
    restarted = sbx.run_code("only_here", context=context)
    assert restarted.error is not None and restarted.error.name == "NameError"

    sbx.remove_code_context(context)
    assert context.id not in {c.id for c in sbx.list_code_contexts()}
    with pytest.raises(NotFoundException):
        sbx.run_code("1", context=context)


def test_a_users_own_packages_in_the_working_directory(sbx, tmp_path):
    """A project with its own `services/` package (a common name) is where the kernel
    starts: the kernel still starts, and the project's modules are what `import` finds."""
    workdir = tmp_path / "project"
    (workdir / "services").mkdir(parents=True)
    (workdir / "services" / "__init__.py").write_text("WHOSE = 'the project'\n")
    (workdir / "helpers.py").write_text("VALUE = 42\n")
    context = sbx.create_code_context(cwd=str(workdir))
    assert sbx.run_code("import services; services.WHOSE", context=context).text == "the project"
    assert sbx.run_code("import helpers; helpers.VALUE", context=context).text == "42"


def test_bad_requests(interpreter):
    with httpx.Client(base_url=interpreter.url) as client:
        both = client.post("/execute", json={"code": "1", "context_id": "x", "language": "python"})
        assert both.status_code == 400
        unknown = client.post("/execute", json={"code": "1", "context_id": "nosuchcontext"})
        assert unknown.status_code == 404 and unknown.text == "Context nosuchcontext not found"
        assert client.post("/execute", json={"code": "1", "language": "cobol"}).status_code == 400
        assert client.post("/contexts/nosuchcontext/restart").status_code == 404
        assert client.delete("/contexts/nosuchcontext").status_code == 404
        assert client.post("/execute", content=b"not json").status_code == 400


def test_matplotlib_figure_is_a_png(sbx):
    execution = sbx.run_code(
        "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [1, 4, 9])\nplt.title('squares')\nplt.show()"
    )
    assert execution.error is None, execution.error
    pngs = [r.png for r in execution.results if r.png]
    assert pngs and base64.b64decode(pngs[0]).startswith(b"\x89PNG\r\n\x1a\n")


def test_pandas_dataframe_is_rendered(sbx):
    execution = sbx.run_code("import pandas as pd\npd.DataFrame({'a': [1, 2], 'b': ['x', 'y']})")
    assert execution.error is None, execution.error
    result = execution.results[0]
    assert result.is_main_result
    assert "<table" in (result.html or "")
    assert "a" in (result.text or "") and "x" in (result.text or "")


def test_timeout_interrupts_and_keeps_state(sbx):
    sbx.run_code("kept = 'still here'")
    with pytest.raises(TimeoutException):
        sbx.run_code("import time\nwhile True:\n    time.sleep(0.1)", timeout=2)
    # The kernel was interrupted, not restarted: the next run answers and state survives.
    assert sbx.run_code("kept").text == "still here"


def test_output_streams_while_the_code_runs(sbx, tmp_path):
    # The code waits for a file that only the on_stdout callback creates: it can only end
    # if its first line reached the client while it was still running.
    flag = tmp_path / f"seen-{uuid.uuid4().hex}"
    seen: list[str] = []

    def on_stdout(message) -> None:
        seen.append(message.line)
        if "waiting" in message.line:
            flag.touch()

    code = (
        "import os, time\nprint('waiting', flush=True)\n"
        f"while not os.path.exists({str(flag)!r}):\n    time.sleep(0.05)\nprint('released')"
    )
    execution = sbx.run_code(code, on_stdout=on_stdout, timeout=60)
    assert execution.error is None
    assert seen == ["waiting\n", "released\n"]


def test_dead_kernel_is_reported_then_restarted(sbx):
    context = sbx.create_code_context()
    sbx.run_code("before = 1", context=context)
    died = sbx.run_code("import os\nos._exit(1)", context=context)
    assert died.error is not None and died.error.name == "DeadKernelError"
    after = sbx.run_code("1 + 1", context=context)
    assert after.text == "2"
    assert sbx.run_code("'before' in globals()", context=context).text == "False"
    sbx.remove_code_context(context)


def test_huge_output_streams_without_piling_up(sbx, interpreter):
    lines: list[int] = []
    execution = sbx.run_code(
        "for i in range(200_000):\n    print('x' * 200)",
        on_stdout=lambda message: lines.append(len(message.line)),
        timeout=300,
    )
    assert execution.error is None
    assert sum(lines) == 200_000 * 201
    peak_kb = int(
        next(
            line.split()[1]
            for line in Path(f"/proc/{interpreter.process.pid}/status").read_text().splitlines()
            if line.startswith("VmHWM:")
        )
    )
    assert peak_kb < 250 * 1024, f"the interpreter peaked at {peak_kb // 1024} MB for 40 MB of output"


def test_bash_context(sbx):
    execution = sbx.run_code('echo "$SANDBOX_VAR"; pwd', language="bash")
    assert execution.error is None
    assert "".join(execution.logs.stdout).splitlines()[0] == "from-envd"


async def test_async_sdk_with_callbacks(interpreter):
    sbx = await AsyncSandbox.create(debug=True, sandbox_url=interpreter.url)
    results, stdout = [], []
    execution = await sbx.run_code(
        "print('from async')\n6 * 7",
        on_stdout=lambda message: stdout.append(message.line),
        on_result=lambda result: results.append(result),
    )
    assert execution.text == "42"
    assert stdout == ["from async\n"]
    assert [r.text for r in results] == ["42"]
    context = await sbx.create_code_context()
    assert (await sbx.run_code("21 * 2", context=context)).text == "42"
    await sbx.remove_code_context(context)


def test_output_of_forked_processes_reaches_the_client(sbx):
    # ipykernel carries it over a pipe that Corral moves onto a Unix socket (kernel_launcher).
    execution = sbx.run_code(
        "import os\npid = os.fork()\nif pid == 0:\n    print('from the child', flush=True)\n    os._exit(0)\n"
        "os.waitpid(pid, 0)\nprint('from the parent')"
    )
    assert execution.error is None
    output = "".join(execution.logs.stdout)
    assert "from the child\n" in output and output.endswith("from the parent\n")


def test_chart_and_data_results(sbx):
    chart = sbx.run_code(
        "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [2, 4, 8], label='growth')\n"
        "plt.title('Doubling')\nplt.xlabel('step')\nplt.show()"
    )
    assert chart.error is None, chart.error
    charted = [r for r in chart.results if r.chart]
    assert charted and charted[0].png
    assert charted[0].chart.title == "Doubling"
    assert charted[0].chart.type.value == "line"

    frame = sbx.run_code("import pandas as pd\npd.DataFrame({'a': [1, 2], 'b': ['x', 'y']})")
    assert frame.results[0].data == {"a": [1, 2], "b": ["x", "y"]}
