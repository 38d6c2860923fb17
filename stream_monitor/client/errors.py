"""What the producer SDK raises: one root, `ClientError`, so a service can catch all of it."""

from __future__ import annotations

from dataclasses import dataclass

from stream_monitor.errors import StreamMonitorError


class ClientError(StreamMonitorError):
    """The producer SDK could not take or send an event."""


class InvalidEvent(ClientError, ValueError):
    """The monitor would reject this event: `reason` is its dead-letter reason code, `field` the
    offending field (None when the event as a whole is at fault)."""

    def __init__(self, message: str, *, reason: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.field = field


class QueueFull(ClientError, BufferError):
    """The local send queue stayed full for `max_block` seconds: the broker is not keeping up."""


class UnknownTopic(ClientError):
    """The topic is not in the broker's metadata (create it with `stream-monitor topics create`)."""


@dataclass(frozen=True)
class UndeliveredEvent:
    """One event the broker did not take; `code` is librdkafka's error name (e.g. MSG_TIMED_OUT)."""

    topic: str
    partition: int
    model: str
    prediction_id: str | None
    code: str
    reason: str


class DeliveryError(ClientError):
    """Events were not delivered: failed, or still queued when `flush()` timed out."""

    def __init__(self, failures: list[UndeliveredEvent], failed: int, undelivered: int) -> None:
        first = f"; first: {failures[0].code} ({failures[0].reason})" if failures else ""
        super().__init__(f"{failed} events failed and {undelivered} are still queued{first}")
        self.failures = failures  # the first ones (at most 100)
        self.failed = failed
        self.undelivered = undelivered
