from collections.abc import Iterator

import pytest
from e2b import AsyncSandbox, Sandbox

from tests.harness.envd import EnvdInSandbox

pytestmark = pytest.mark.sandbox


@pytest.fixture(scope="session")
def envd() -> Iterator[EnvdInSandbox]:
    server = EnvdInSandbox().start()
    yield server
    server.stop()


@pytest.fixture
def sbx(envd: EnvdInSandbox) -> Sandbox:
    # Debug mode makes no API call; sandbox_url sends every envd request to our envd.
    return Sandbox.create(debug=True, sandbox_url=envd.url)


@pytest.fixture
async def async_sbx(envd: EnvdInSandbox) -> AsyncSandbox:
    return await AsyncSandbox.create(debug=True, sandbox_url=envd.url)
