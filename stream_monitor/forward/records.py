"""An alert as read from the alerts topic: the CloudEvent, its bytes, and where it was read."""

from __future__ import annotations

import time
from typing import Any

import orjson
from confluent_kafka import Message

from stream_monitor.core.alerts import ALERT_TYPE

DETECTED = ALERT_TYPE
# Issue 12's contract: `data.resolves` is the id of the drift_detected alert it closes.
RESOLVED = "stream_monitor.drift_resolved"


class AlertRecord:
    """One record of the alerts topic. `event` is None when it is not a CloudEvent JSON object."""

    __slots__ = ("event", "key", "offset", "partition", "read_at", "timestamp_ms", "topic", "value")

    def __init__(
        self,
        *,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes,
        timestamp_ms: int | None,
        event: dict[str, Any] | None,
        read_at: float | None = None,
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.key = key
        self.value = value
        self.timestamp_ms = timestamp_ms
        self.event = event
        self.read_at = time.monotonic() if read_at is None else read_at  # for give_up_after

    @property
    def id(self) -> str:
        return str(self.event["id"]) if self.event is not None else self.position

    @property
    def type(self) -> str | None:
        return str(self.event.get("type")) if self.event is not None else None

    @property
    def data(self) -> dict[str, Any]:
        data = self.event.get("data") if self.event is not None else None
        return data if isinstance(data, dict) else {}

    @property
    def position(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"


def parse_event(value: bytes) -> dict[str, Any] | None:
    """The CloudEvent in a record, or None (not JSON, not an object, no id or type)."""
    try:
        event = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(event, dict):
        return None
    if not isinstance(event.get("id"), str) or not isinstance(event.get("type"), str):
        return None
    return event


def from_message(message: Message) -> AlertRecord:
    value = message.value() or b""
    kind, stamp = message.timestamp()
    return AlertRecord(
        topic=message.topic(),
        partition=message.partition(),
        offset=message.offset(),
        key=message.key(),
        value=value,
        timestamp_ms=stamp if kind != 0 and stamp >= 0 else None,
        event=parse_event(value),
    )
