"""The SDK never waits on the broker beyond max_block, and re-reads a stale partition count."""

from __future__ import annotations

import time
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from stream_monitor.client import MonitorProducer, QueueFull, partition_for
from tests.client.fakes import Metadata


class FakeProducer:
    """Stands in for confluent_kafka.Producer: a full queue, or a topic that grew."""

    def __init__(self, counts: list[int], full: bool = False, stale_once: bool = False) -> None:
        self.counts = counts
        self.full = full
        self.stale_once = stale_once
        self.sent: list[tuple[str, int]] = []
        self.polls = 0

    def list_topics(self, topic: str, timeout: float) -> Metadata:
        return Metadata(self.counts.pop(0) if len(self.counts) > 1 else self.counts[0])

    def produce(self, topic: str, value: bytes, key: bytes, partition: int, **extra: Any) -> None:
        if self.full:
            raise BufferError("Local: Queue full")
        if self.stale_once:
            self.stale_once = False
            raise KafkaException(KafkaError(KafkaError._UNKNOWN_PARTITION))
        self.sent.append((topic, partition))

    def poll(self, timeout: float = 0) -> int:
        self.polls += 1
        time.sleep(timeout)
        return 0

    def flush(self, timeout: float = 0) -> int:
        return 0

    def __len__(self) -> int:
        return 100_000


def test_a_full_queue_is_waited_out_for_max_block_then_raises() -> None:
    fake = FakeProducer([4], full=True)
    sdk = MonitorProducer(producer=fake, max_block=0.3)  # type: ignore[arg-type]
    started = time.monotonic()
    with pytest.raises(QueueFull, match="100000 events waiting"):
        sdk.log_prediction(model="credit", prediction=1)
    assert 0.3 <= time.monotonic() - started < 1.5
    assert fake.polls > 1  # deliveries were served while waiting
    assert isinstance(QueueFull("x"), BufferError)


def test_an_unknown_partition_rereads_the_partition_count_once() -> None:
    fake = FakeProducer([2, 8], stale_once=True)
    sdk = MonitorProducer(producer=fake)  # type: ignore[arg-type]
    sdk.log_prediction(model="credit", prediction=1)
    assert fake.sent == [("predictions", partition_for(b"credit", 8))]


def test_everything_the_sdk_raises_is_a_client_error() -> None:
    from stream_monitor import client

    raised = [client.InvalidEvent, client.QueueFull, client.UnknownTopic, client.DeliveryError]
    assert all(issubclass(kind, client.ClientError) for kind in raised)
    assert issubclass(client.InvalidEvent, ValueError) and issubclass(client.QueueFull, BufferError)
    with pytest.raises(client.ClientError, match="needs bootstrap_servers"):
        MonitorProducer()
    # Only checked events are sent: there is no public way to send unchecked bytes.
    assert not hasattr(MonitorProducer, "send")
