"""Publishing events to Kafka as the event contract says: JSON values keyed by model."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
from confluent_kafka import Producer

from stream_monitor.kafka import KafkaRuntimeError
from stream_monitor.kafka.settings import LIBRDKAFKA_LOGGER


def event_producer(bootstrap_servers: str, **settings: Any) -> Producer:
    return Producer(
        {
            "bootstrap.servers": bootstrap_servers,
            "enable.idempotence": True,
            "partitioner": "murmur2_random",
            "linger.ms": 20,
            "logger": LIBRDKAFKA_LOGGER,
            **settings,
        }
    )


def publish(
    producer: Producer,
    topic: str,
    events: Iterable[dict[str, Any]],
    *,
    keyed: bool = True,
    flush: bool = True,
) -> int:
    """Produce each event keyed by its model (or unkeyed). Returns how many were produced."""
    failures: list[str] = []

    def delivered(error: Any, message: Any) -> None:
        if error is not None:
            failures.append(error.str())

    count = 0
    for event in events:
        key = str(event.get("model", "")).encode() if keyed else None
        while True:
            try:
                producer.produce(topic, key=key, value=orjson.dumps(event), on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)
        count += 1
        if count % 10_000 == 0:
            producer.poll(0)
    if flush:
        remaining = producer.flush(60)
        if remaining or failures:
            raise KafkaRuntimeError(f"{remaining} events undelivered; errors: {failures[:3]}")
    return count
