"""The examples in examples/, run against the test stack as their READMEs say."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TRPC_PYTHON = REPO / ".venv-trpc" / "bin" / "python"


def test_trpc_agent_cube_executor(stack, code_interpreter):
    if not TRPC_PYTHON.exists():
        pytest.skip("run scripts/install.sh: it makes .venv-trpc with trpc-agent-py[cube]")
    example = REPO / "examples" / "trpc_agent_cube"
    env = {**os.environ, **stack.client_env()}
    completed = subprocess.run(
        [str(TRPC_PYTHON), "run.py"], cwd=example, env=env, capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    seen = json.loads(completed.stdout.strip().splitlines()[-1])
    assert seen["code_outcome"].endswith("OUTCOME_OK")
    assert "python 3\nbash 42\n" in seen["code_output"]
    assert seen["run_exit_code"] == 0 and seen["run_stdout"] == "3\n"
    assert seen["collected"] == {"out/total.txt": "42"}
