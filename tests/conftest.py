"""Session fixtures: one embedded broker per test session, started on a free loopback port."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from stream_monitor.embedded import EmbeddedBroker


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker() as embedded:
        yield embedded
