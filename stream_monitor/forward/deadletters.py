"""Dead letters of the forwarder: alerts a sink gave up on, written to `forward.dead_letter_topic`.

Key and value are the alert's; headers follow the monitor's dead-letter convention plus the sink's
name. What `write` queued must be on the topic before a commit covers the alert: `settle` flushes
and checks every delivery. A dead letter that cannot be written is a permanent failure: from then
on every `settle` raises, so no later commit (the loop's last one, a rebalance's) can pass over an
alert nobody has.
"""

from __future__ import annotations

import threading
import time

from confluent_kafka import KafkaError, KafkaException, Message, Producer

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
    """Writes dead letters (from sink workers and the consume loop) through one producer.

    `write` is thread-safe. A letter counts as written once `produce()` has queued it, and as
    settled once a flush saw it delivered: `settle` flushes whenever some letter is not settled
    yet or the producer still holds one, so a letter queued while a commit was being prepared is
    never taken for delivered.
    """

    def __init__(self, producer: Producer, topic: str, *, queue_wait: float = 30.0) -> None:
        self.topic = topic
        self._producer = producer
        self._queue_wait = queue_wait
        self._lock = threading.Lock()
        self._written = 0
        self._settled = 0
        self._failure: str | None = None

    @property
    def failure(self) -> str | None:
        """Why dead letters cannot be written (for good), or None."""
        return self._failure

    def write(self, record: AlertRecord, sink: str, error: SinkError) -> None:
        """Queue a dead letter; `ForwardError` when it cannot be queued (nor ever will be)."""
        self.check()
        headers = dead_letter_headers(record, sink, error)
        deadline: float | None = None
        while True:
            try:
                self._producer.produce(
                    self.topic,
                    record.value,
                    record.key,
                    headers=headers,
                    on_delivery=self._delivered,
                )
                break
            except BufferError:  # the local queue is full: serve deliveries, then try again
                now = time.monotonic()
                deadline = now + self._queue_wait if deadline is None else deadline
                if now >= deadline:
                    self._fail(f"the producer's queue stayed full for {self._queue_wait:g}s")
                    self.check()
                self._producer.poll(0.1)
            except KafkaException as exc:
                self._fail(exc.args[0].str())
                raise ForwardError(self._message()) from exc
        with self._lock:  # only now: a settle that ran meanwhile saw it in len(producer)
            self._written += 1

    def settle(self, timeout: float = 30.0) -> None:
        """Before a commit: every dead letter written is on the topic, or `ForwardError`."""
        self.check()
        with self._lock:
            written = self._written
        if written == self._settled and len(self._producer) == 0:
            return
        left = self._producer.flush(timeout)
        if left:
            self._fail(f"{left} dead letters still undelivered after {timeout:g}s")
        self.check()
        self._settled = written

    def check(self) -> None:
        """`ForwardError` once some dead letter could not be written."""
        if self._failure is not None:
            raise ForwardError(self._message())

    def _delivered(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self._fail(error.str())

    def _fail(self, reason: str) -> None:
        with self._lock:
            if self._failure is None:
                self._failure = reason

    def _message(self) -> str:
        return f"cannot write to {self.topic}: {self._failure}; not committing past it"
