"""The two local brokers behind tests and benchmarks, chosen by name: Apache Kafka or Tansu.

`kafka` (the default of tests and benchmarks) is Apache Kafka from Maven Central's jars
(`stream_monitor.apache_kafka`, needs Java 17); `tansu` is the embedded in-memory broker of
`make demo` (`stream_monitor.embedded`), for a machine without a JDK.
"""

from __future__ import annotations

import os
from types import TracebackType
from typing import Protocol

from stream_monitor.errors import StreamMonitorError

KINDS = ("kafka", "tansu")
ENVIRONMENT = "STREAM_MONITOR_TEST_BROKER"


class LocalBroker(Protocol):
    """What tests and benchmarks need of a broker they start themselves."""

    kind: str  # "kafka" or "tansu"
    durable: bool  # whether a stopped and restarted broker still holds its data
    # Whether a dead producer's open transaction is aborted (by its successor or by timeout), so
    # that read_committed readers never see it; Tansu 0.6 does neither (docs/reliability.md).
    aborts_dead_transactions: bool

    @property
    def bootstrap_servers(self) -> str: ...

    def start(self) -> LocalBroker: ...

    def stop(self) -> None: ...

    def close(self) -> None: ...

    def __enter__(self) -> LocalBroker:  # starts it
        ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:  # closes it
        ...


def chosen_kind(option: str | None = None) -> str:
    """The broker named on the command line, else by $STREAM_MONITOR_TEST_BROKER, else kafka."""
    kind = (option or os.environ.get(ENVIRONMENT) or "kafka").strip().lower()
    if kind not in KINDS:
        raise StreamMonitorError(
            f"unknown broker {kind!r}: choose one of {', '.join(KINDS)} "
            f"(--broker or ${ENVIRONMENT})"
        )
    return kind


def local_broker(kind: str) -> LocalBroker:
    """A broker of that kind, not started yet."""
    if kind == "tansu":
        from stream_monitor.embedded import EmbeddedBroker

        return EmbeddedBroker()
    from stream_monitor.apache_kafka import ApacheKafka

    return ApacheKafka()
