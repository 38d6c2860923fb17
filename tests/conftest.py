"""Session fixtures: one broker per test session, started on free loopback ports.

Apache Kafka by default (from Maven Central's jars, needs Java 17); `--broker=tansu` (or
STREAM_MONITOR_TEST_BROKER=tansu) runs the same tests on the embedded broker.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from stream_monitor.brokers import KINDS, LocalBroker, chosen_kind, local_broker


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--broker",
        choices=KINDS,
        default=None,
        help="broker for tests that need one: kafka (Apache Kafka, default) or tansu (embedded)",
    )


def pytest_report_header(config: pytest.Config) -> str:
    return f"broker: {chosen_kind(config.getoption('--broker'))}"


@pytest.fixture(scope="session")
def broker_kind(request: pytest.FixtureRequest) -> str:
    return chosen_kind(request.config.getoption("--broker"))


@pytest.fixture(scope="session")
def broker(broker_kind: str) -> Iterator[LocalBroker]:
    instance = local_broker(broker_kind).start()
    try:
        yield instance
    finally:
        instance.close()


@pytest.fixture(scope="session")
def tansu_broker(request: pytest.FixtureRequest, broker_kind: str) -> Iterator[LocalBroker]:
    """The embedded broker, for tests that run on both brokers whatever the session's broker."""
    if broker_kind == "tansu":
        yield request.getfixturevalue("broker")
        return
    instance = local_broker("tansu").start()
    try:
        yield instance
    finally:
        instance.close()


@pytest.fixture(params=KINDS)
def each_broker(request: pytest.FixtureRequest, broker_kind: str) -> LocalBroker:
    """The test runs once per broker: Apache Kafka (skipped under --broker=tansu) and Tansu."""
    if request.param == "tansu":
        return request.getfixturevalue("tansu_broker")  # type: ignore[no-any-return]
    if broker_kind != "kafka":
        pytest.skip("this session runs on the embedded broker only (--broker=tansu)")
    return request.getfixturevalue("broker")  # type: ignore[no-any-return]
