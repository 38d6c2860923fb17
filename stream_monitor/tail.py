"""`stream-monitor tail`: the ops view of the alerts (or dead-letter) topic.

Reads committed data only (`read_committed`). Without `--from-beginning` it starts at the end.
With `--no-follow` it stops once every partition has been read to its end (partition EOF).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from stream_monitor.core.alerts import describe
from stream_monitor.kafka import KafkaRuntimeError
from stream_monitor.kafka.settings import LIBRDKAFKA_LOGGER
from stream_monitor.processing import deadletters

OFFSET_BEGINNING = -2
OFFSET_END = -1


@dataclass
class TailOptions:
    bootstrap_servers: str
    topic: str = "alerts"
    from_beginning: bool = False
    follow: bool = True
    max_messages: int | None = None
    timeout: float | None = None  # seconds; None: until stopped (or EOF with follow=False)
    model: str | None = None
    client: dict[str, Any] | None = None  # extra librdkafka settings (security, ...)
    stop: threading.Event | None = None


def messages(options: TailOptions) -> Iterator[Message]:
    consumer = Consumer(
        {
            "bootstrap.servers": options.bootstrap_servers,
            "group.id": f"stream-monitor-tail-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
            # Show an alert as soon as it is committed, even from a broker that holds fetches.
            "fetch.wait.max.ms": 100,
            "logger": LIBRDKAFKA_LOGGER,
            **(options.client or {}),
        }
    )
    try:
        metadata = consumer.list_topics(options.topic, timeout=10).topics.get(options.topic)
        if metadata is None or metadata.error is not None or not metadata.partitions:
            raise KafkaRuntimeError(f"topic {options.topic!r} does not exist")
        start = OFFSET_BEGINNING if options.from_beginning else OFFSET_END
        consumer.assign([TopicPartition(options.topic, p, start) for p in metadata.partitions])
        pending = set(metadata.partitions)
        deadline = None if options.timeout is None else time.monotonic() + options.timeout
        shown = 0
        stop = options.stop or threading.Event()
        while (deadline is None or time.monotonic() < deadline) and not stop.is_set():
            for message in consumer.consume(100, 0.2):
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        pending.discard(message.partition())
                        continue
                    raise KafkaRuntimeError(f"reading {options.topic}: {error.str()}")
                if options.model is not None and _model(message) != options.model:
                    continue
                yield message
                shown += 1
                if options.max_messages is not None and shown >= options.max_messages:
                    return
            if not options.follow and not pending:
                return
    finally:
        consumer.close()


def _model(message: Message) -> str | None:
    try:
        event = orjson.loads(message.value() or b"")
    except orjson.JSONDecodeError:
        return None
    if not isinstance(event, dict):
        return None
    data = event.get("data")
    model = data.get("model") if isinstance(data, dict) else event.get("model")
    return model if isinstance(model, str) else None


def is_dead_letter(message: Message) -> bool:
    return any(name == deadletters.REASON for name, _ in (message.headers() or []))


def as_json(message: Message) -> bytes:
    """One JSON line: the alert itself, or for a dead letter its headers and value."""
    if not is_dead_letter(message):
        return message.value() or b"null"
    value = message.value() or b""
    return orjson.dumps(
        {
            "headers": deadletters.header_dict(message.headers()),
            "key": (message.key() or b"").decode("utf-8", "replace"),
            "value": value.decode("utf-8", "replace"),
        }
    )


def as_text(message: Message) -> str:
    """One readable line per alert or dead letter."""
    if is_dead_letter(message):
        headers = deadletters.header_dict(message.headers())
        field = headers.get(deadletters.FIELD)
        return (
            f"DEAD LETTER {headers.get(deadletters.ORIGINAL_TOPIC)}/{headers.get(deadletters.ORIGINAL_PARTITION)}"
            f"@{headers.get(deadletters.ORIGINAL_OFFSET)} {headers.get(deadletters.REASON)}"
            f"{' (' + field + ')' if field else ''}: {headers.get(deadletters.EXCEPTION_MESSAGE)}"
        )
    try:
        return describe(orjson.loads(message.value() or b""))
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return f"(not an alert) {(message.value() or b'')[:200]!r}"
