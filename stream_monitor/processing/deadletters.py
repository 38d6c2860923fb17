"""Dead-letter records: the original bytes plus headers that say where they came from and why.

Header names follow Spring Kafka's dead-letter topic convention (`kafka_dlt-*`), with values as
UTF-8 text, plus our own reason code, field and a deterministic id for de-duplication.
"""

from __future__ import annotations

from typing import Any

import orjson

from stream_monitor.core.events import EventError
from stream_monitor.core.monitor import DeadLetter

ORIGINAL_TOPIC = "kafka_dlt-original-topic"
ORIGINAL_PARTITION = "kafka_dlt-original-partition"
ORIGINAL_OFFSET = "kafka_dlt-original-offset"
ORIGINAL_TIMESTAMP = "kafka_dlt-original-timestamp"
EXCEPTION_CLASS = "kafka_dlt-exception-fqcn"
EXCEPTION_MESSAGE = "kafka_dlt-exception-message"
REASON = "stream_monitor-error-reason"
FIELD = "stream_monitor-error-field"
DEAD_LETTER_ID = "stream_monitor-dead-letter-id"
TRUNCATED = "stream_monitor-truncated"

MAX_MESSAGE_CHARS = 1000


def dead_letter_id(topic: str, partition: int, offset: int) -> str:
    """Deterministic: the same input record always gets the same dead-letter id."""
    return f"{topic}/{partition}/{offset}"


def headers(
    error: EventError,
    topic: str,
    partition: int,
    offset: int,
    timestamp_ms: int | None,
    truncated: bool,
) -> list[tuple[str, bytes]]:
    cls = type(error)
    result = [
        (ORIGINAL_TOPIC, topic.encode()),
        (ORIGINAL_PARTITION, str(partition).encode()),
        (ORIGINAL_OFFSET, str(offset).encode()),
        (ORIGINAL_TIMESTAMP, b"" if timestamp_ms is None else str(timestamp_ms).encode()),
        (EXCEPTION_CLASS, f"{cls.__module__}.{cls.__qualname__}".encode()),
        (EXCEPTION_MESSAGE, error.message[:MAX_MESSAGE_CHARS].encode("utf-8", "replace")),
        (REASON, error.reason.encode()),
        (FIELD, (error.field or "").encode("utf-8", "replace")),
        (DEAD_LETTER_ID, dead_letter_id(topic, partition, offset).encode()),
    ]
    if truncated:
        result.append((TRUNCATED, b"true"))
    return result


def record(dead: DeadLetter, max_bytes: int) -> tuple[str, bytes, list[tuple[str, bytes]]]:
    """(dead-letter id, value, headers) for one dead letter, shared by every runtime.

    The value is the original bytes (re-encoded when a runtime handed over decoded data), cut to
    `max_bytes` so one huge record cannot block the topic.
    """
    value, timestamp = dead.record.value, dead.record.timestamp_ms
    topic, partition, offset = dead.record.topic, dead.record.partition, dead.record.offset
    assert topic is not None
    raw = value if isinstance(value, bytes) else orjson.dumps(value)
    truncated = len(raw) > max_bytes
    return (
        dead_letter_id(topic, partition, offset),
        raw[:max_bytes] if truncated else raw,
        headers(dead.error, topic, partition, offset, timestamp, truncated),
    )


def header_dict(raw: Any) -> dict[str, str]:
    """Kafka headers (list of (name, bytes|None)) as text, for readers such as `tail`."""
    return {name: (value or b"").decode("utf-8", "replace") for name, value in (raw or [])}
