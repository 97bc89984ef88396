"""Markers of the integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.helpers import Sender


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: takes seconds (processes, long chains)")


@pytest.fixture
def sender(broker_url: str) -> Iterator[Sender]:
    """A plain Celery client on the test broker."""
    client = Sender(broker_url)
    try:
        yield client
    finally:
        client.close()
