"""The interpreter with real kernels, reading sandbox env vars from a real envd (in
bubblewrap), driven by the real e2b-code-interpreter SDK in debug mode."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.harness.envd import EnvdInSandbox, bwrap_available
from tests.harness.interpreter import InterpreterProcess

SANDBOX_ENV = {"SANDBOX_VAR": "from-envd", "SHARED": "sandbox-value"}


@pytest.fixture(scope="session")
def interpreter() -> Iterator[InterpreterProcess]:
    if not bwrap_available():
        pytest.skip("needs root and bubblewrap (scripts/install.sh)")
    envd = EnvdInSandbox().start()
    response = httpx.post(f"{envd.url}/init", json={"envVars": SANDBOX_ENV}, timeout=10)
    assert response.status_code == 204, response.text
    server = InterpreterProcess(envd.url).start()
    yield server
    server.stop()
    envd.stop()
