"""trpc-agent-py's Cube code executor and workspace runtime, pointed at Corral instead of
Tencent Cube, without an LLM: the calls an agent's tools would make.

    E2B_API_URL=... E2B_SANDBOX_URL=... E2B_API_KEY=... python run.py

Prints what it did, and last one JSON line with the results.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os

from trpc_agent_sdk.code_executors import (
    CodeBlock,
    CodeExecutionInput,
    WorkspaceOutputSpec,
    WorkspacePutFileInfo,
    WorkspaceRunProgramSpec,
)
from trpc_agent_sdk.code_executors.cube import (
    CubeCodeExecutor,
    CubeCodeExecutorConfig,
    create_cube_workspace_runtime,
)

TEMPLATE = os.environ.get("CUBE_TEMPLATE_ID", "code-interpreter-v1")


async def main() -> None:
    # api_url and api_key come from E2B_API_URL / E2B_API_KEY; the SDK underneath reads
    # E2B_SANDBOX_URL (and E2B_DOMAIN) for the sandbox traffic.
    executor = await CubeCodeExecutor.create(CubeCodeExecutorConfig(template=TEMPLATE))
    try:
        # 1. Code blocks, as an agent's code-execution tool sends them.
        blocks = CodeExecutionInput(
            code_blocks=[
                CodeBlock(language="python", code="import sys\nprint('python', sys.version_info[0])"),
                CodeBlock(language="bash", code="echo bash $((6 * 7))"),
            ]
        )
        executed = await executor.execute_code(None, blocks)  # type: ignore[arg-type]
        print("code blocks:", executed.outcome, executed.output.strip().splitlines())

        # 2. The workspace runtime: put files, run a program, collect what it wrote.
        runtime = create_cube_workspace_runtime(executor=executor)
        workspace = await runtime.manager().create_workspace("corral-example")
        script = b"import csv, pathlib\nrows = list(csv.reader(open('work/data.csv')))\n" + (
            b"pathlib.Path('out/total.txt').write_text(str(sum(int(r[1]) for r in rows)))\nprint(len(rows))\n"
        )
        await runtime.fs().put_files(
            workspace,
            [
                WorkspacePutFileInfo(path="work/data.csv", content=b"a,1\nb,2\nc,39\n"),
                WorkspacePutFileInfo(path="work/sum.py", content=script),
            ],
        )
        ran = await runtime.runner().run_program(
            workspace, WorkspaceRunProgramSpec(cmd="python3", args=["work/sum.py"], timeout=60)
        )
        print("run_program:", ran.exit_code, ran.stdout.strip())
        outputs = await runtime.fs().collect_outputs(
            workspace, WorkspaceOutputSpec(globs=["out/*.txt"], inline=True)
        )
        collected = {f.name: f.content for f in outputs.files}
        print("collected:", collected)
        await runtime.manager().cleanup("corral-example")
        print(
            json.dumps(
                {
                    "sandbox_id": executor.sandbox_id,
                    "code_outcome": str(executed.outcome),
                    "code_output": executed.output,
                    "run_exit_code": ran.exit_code,
                    "run_stdout": ran.stdout,
                    "collected": collected,
                }
            )
        )
    finally:
        await executor.destroy()


def drop_e2b_transports() -> None:
    """The e2b SDK (2.63, pyqwest 0.12) keeps Rust HTTP transports in module-level pools;
    freed only during interpreter teardown, they sometimes abort the process (SIGABRT) after
    all the work is done. Freeing them while Python is whole avoids that."""
    import e2b.api.client_async as pools

    for name in ("_transports", "_pools", "_httpx_transports"):
        getattr(pools, name, {}).clear()
    gc.collect()


if __name__ == "__main__":
    asyncio.run(main())
    drop_e2b_transports()
