import pytest

from tests.harness.e2b_transports import drop_e2b_transports
from tests.harness.envd import bwrap_available


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    drop_e2b_transports()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if bwrap_available():
        return
    skip = pytest.mark.skip(reason="needs root and bubblewrap (scripts/install.sh installs it)")
    for item in items:
        if "sandbox" in item.keywords:
            item.add_marker(skip)
