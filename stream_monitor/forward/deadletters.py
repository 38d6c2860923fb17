"""Dead letters of the forwarder: alerts a sink gave up on, written to `forward.dead_letter_topic`.

Key and value are the alert's; headers follow the monitor's dead-letter convention plus the sink's
name. What `write` queued must be on the topic before a commit covers the alert (`settle`).
"""

from __future__ import annotations

from confluent_kafka import KafkaError, Message, Producer

from stream_monitor.forward import ForwardError
from stream_monitor.forward.records import AlertRecord
from stream_monitor.forward.sinks import SinkError
from stream_monitor.processing import deadletters

SINK_HEADER = "stream_monitor-sink"
ALL_SINKS = "*"


def dead_letter_headers(
    record: AlertRecord, sink: str, error: SinkError
) -> list[tuple[str, bytes]]:
    return [
        (deadletters.ORIGINAL_TOPIC, record.topic.encode()),
        (deadletters.ORIGINAL_PARTITION, str(record.partition).encode()),
        (deadletters.ORIGINAL_OFFSET, str(record.offset).encode()),
        (
            deadletters.ORIGINAL_TIMESTAMP,
            b"" if record.timestamp_ms is None else str(record.timestamp_ms).encode(),
        ),
        (
            deadletters.EXCEPTION_CLASS,
            f"{SinkError.__module__}.{SinkError.__qualname__}".encode(),
        ),
        (
            deadletters.EXCEPTION_MESSAGE,
            error.detail[: deadletters.MAX_MESSAGE_CHARS].encode("utf-8", "replace"),
        ),
        (deadletters.REASON, error.reason.encode()),
        (SINK_HEADER, sink.encode()),
        (deadletters.DEAD_LETTER_ID, f"{record.position}/{sink}".encode()),
    ]


class DeadLetters:
    """Writes dead letters (from sink workers and the consume loop) through one producer."""

    def __init__(self, producer: Producer, topic: str) -> None:
        self.topic = topic
        self._producer = producer
        self._unflushed = False
        self._errors: list[str] = []

    def write(self, record: AlertRecord, sink: str, error: SinkError) -> None:
        self._unflushed = True
        self._producer.produce(
            self.topic,
            record.value,
            record.key,
            headers=dead_letter_headers(record, sink, error),
            on_delivery=self._delivered,
        )

    def settle(self) -> None:
        """Before a commit: every dead letter written is on the topic, or `ForwardError`."""
        if not self._unflushed:
            return
        self._unflushed = False
        left = self._producer.flush(30)
        if left or self._errors:
            raise ForwardError(
                f"cannot write to {self.topic}: "
                f"{self._errors[:1] or [f'{left} undelivered']}; not committing"
            )

    def _delivered(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self._errors.append(error.str())
