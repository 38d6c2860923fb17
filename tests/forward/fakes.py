"""Stand-ins for confluent-kafka's Consumer and Producer, to drive `ForwardService` without a
broker: scripted batches, rebalances on demand, and every commit and dead letter recorded."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import orjson
from confluent_kafka import KafkaError, TopicPartition

from stream_monitor.config import Config, build_config
from stream_monitor.forward.metrics import ForwardMetrics
from stream_monitor.forward.records import AlertRecord
from stream_monitor.forward.service import ForwardService
from stream_monitor.forward.sinks import BaseSink, Sink, SinkError
from tests.kafka.support import ServiceThread, wait_for

TOPIC = "alerts"


class FakeMessage:
    def __init__(
        self,
        partition: int,
        offset: int,
        value: bytes | None = None,
        error: KafkaError | None = None,
        timestamp_ms: int | None = None,
    ) -> None:
        self._partition, self._offset, self._value, self._error = partition, offset, value, error
        self._timestamp_ms = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms

    def error(self) -> KafkaError | None:
        return self._error

    def topic(self) -> str:
        return TOPIC

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes:
        return b"k"

    def value(self) -> bytes | None:
        return self._value

    def timestamp(self) -> tuple[int, int]:
        return (1, self._timestamp_ms)

    def headers(self) -> list[tuple[str, bytes]]:
        return []


def alert_message(partition: int, offset: int, **extra: Any) -> FakeMessage:
    event = {"id": f"id-{partition}-{offset}", "type": "stream_monitor.drift_detected"}
    return FakeMessage(partition, offset, orjson.dumps(event), **extra)


class FakeConsumer:
    """The group consumer: `batches` are returned by consume() one per call (then nothing);
    `on_consume(consumer)` runs inside consume() before the batch is returned (a rebalance)."""

    def __init__(self, partitions: list[int], committed: dict[int, int] | None = None) -> None:
        self.partitions = partitions
        self.batches: list[list[FakeMessage]] = []
        self.on_consume: list[Callable[[FakeConsumer], None]] = []
        self.commits: list[list[tuple[int, int]]] = []
        self.committed_offsets = dict(committed or {})
        self.paused: set[int] = set()
        self.positions: dict[int, int] = {}
        self.closed = False
        self._callbacks: dict[str, Any] = {}
        self._assigned = False
        self.lock = threading.Lock()

    def subscribe(self, topics: list[str], **callbacks: Any) -> None:
        self._callbacks = callbacks

    def consume(self, count: int, timeout: float) -> list[FakeMessage]:
        if not self._assigned:
            self._assigned = True
            self.assign_now(self.partitions)
        with self.lock:
            hooks, self.on_consume = self.on_consume, []
            batch = self.batches.pop(0) if self.batches else []
        for message in batch:  # what librdkafka hands over moves the position
            if message.error() is None:
                self.positions[message.partition()] = message.offset() + 1
        for hook in hooks:
            hook(self)
        if not batch:
            time.sleep(min(timeout, 0.005))
        return batch

    def add(self, *messages: FakeMessage) -> None:
        with self.lock:
            self.batches.append(list(messages))

    def assign_now(self, partitions: list[int]) -> None:
        self._callbacks["on_assign"](self, [TopicPartition(TOPIC, p) for p in partitions])

    def revoke_now(self, partitions: list[int]) -> None:
        self._callbacks["on_revoke"](self, [TopicPartition(TOPIC, p) for p in partitions])

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(TOPIC, p) for p in self.partitions]

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.paused |= {tp.partition for tp in partitions}

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.paused -= {tp.partition for tp in partitions}

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [
            TopicPartition(TOPIC, tp.partition, self.positions.get(tp.partition, -1001))
            for tp in partitions
        ]

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        return [
            TopicPartition(TOPIC, tp.partition, self.committed_offsets.get(tp.partition, -1001))
            for tp in partitions
        ]

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        self.commits.append([(tp.partition, tp.offset) for tp in offsets])
        for tp in offsets:
            self.committed_offsets[tp.partition] = tp.offset

    def close(self) -> None:
        self.closed = True
        if self._assigned:
            self.revoke_now(self.partitions)

    def highest_commit(self, partition: int) -> int | None:
        found = [offset for commit in self.commits for p, offset in commit if p == partition]
        return max(found) if found else None


class FakeProducer:
    """The dead-letter producer. `fail_with` makes every delivery report that error."""

    def __init__(self, fail_with: int | None = None) -> None:
        self.fail_with = fail_with
        self.queued: list[tuple[bytes, Any]] = []
        self.delivered: list[bytes] = []
        self.flushes = 0

    def produce(self, topic: str, value: bytes, key: bytes | None, **extra: Any) -> None:
        self.queued.append((value, extra["on_delivery"]))

    def poll(self, timeout: float = 0) -> int:
        return self._serve()

    def flush(self, timeout: float = 0) -> int:
        self.flushes += 1
        self._serve()
        return 0

    def _serve(self) -> int:
        served, self.queued = self.queued, []
        for value, callback in served:
            if self.fail_with is None:
                self.delivered.append(value)
                callback(None, None)
            else:
                callback(KafkaError(self.fail_with), None)
        return len(served)

    def __len__(self) -> int:
        return len(self.queued)


class Taking(BaseSink):
    """Takes every alert; remembers what it was shown."""

    def __init__(self, name: str = "taking") -> None:
        self.name = name
        self.taken: list[tuple[int, int]] = []

    def deliver(self, record: AlertRecord) -> None:
        self.taken.append((record.partition, record.offset))


class Refusing(BaseSink):
    """Refuses every alert for good (a 400): each is dead-lettered at once."""

    name = "refusing"

    def deliver(self, record: AlertRecord) -> None:
        raise SinkError("http_400", "bad request", retryable=False)


def config(**forward: Any) -> Config:
    return build_config(
        {
            "kafka": {"topics": {"alerts": TOPIC}},
            "forward": {
                "webhooks": [{"url": "http://unused.invalid"}],
                "commit_interval": "10ms",
                **forward,
            },
        },
        environ={},
    )


class Harness(ServiceThread):
    """A ForwardService on fake clients, run on a thread; `error` is what run() raised."""

    def __init__(
        self,
        sinks: list[Sink],
        consumer: FakeConsumer,
        producer: FakeProducer | None = None,
        **forward: Any,
    ) -> None:
        self.consumer = consumer
        self.producer = producer if producer is not None else FakeProducer()
        self.metrics = ForwardMetrics()
        service = ForwardService(
            config(**forward),
            sinks=sinks,
            metrics=self.metrics,
            consumer_factory=lambda settings: self.consumer,  # type: ignore[arg-type,return-value]
            producer_factory=lambda settings: self.producer,  # type: ignore[arg-type,return-value]
        )
        super().__init__(service=service)

    def __enter__(self) -> Harness:
        self.thread.start()
        wait_for(lambda: self.service.looping or not self.thread.is_alive(), 5, "the loop")
        return self

    def ended(self, timeout: float = 10) -> BaseException | None:
        """Until run() returns by itself; what it raised."""
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the service is still running"
        return self.error


def alert_record(offset: int, partition: int = 0) -> AlertRecord:
    """A record of the alerts topic as a sink worker gets it."""
    return AlertRecord(
        topic=TOPIC,
        partition=partition,
        offset=offset,
        key=None,
        value=b"{}",
        timestamp_ms=None,
        event={"id": f"id-{offset}", "type": "t"},
    )
