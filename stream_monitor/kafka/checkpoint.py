"""Checkpoints: the records of one commit (outputs, state) made durable together with the offsets.

Two implementations, one order of work (quixstreams' checkpoint has the same shape):

- `ExactlyOnce`: one Kafka transaction holds the alerts, dead letters, state records and the
  input offsets (`send_offsets_to_transaction`); readers with `read_committed` see all or none.
- `AtLeastOnce`: the same records are produced and flushed, every delivery checked, and only then
  are the offsets committed (synchronously). A crash in between leaves outputs without their
  offsets; a successor does not publish them again (`processing.outputs`).

Both hold the producer, and replace it when it can do nothing more (a fatal error, or records
that stay undelivered because the broker forgot the producer's id).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from stream_monitor.kafka import KafkaRuntimeError
from stream_monitor.kafka.watchdog import Watchdog

log = logging.getLogger(__name__)

Delivered = Callable[[KafkaError | None, Message], None]


class Checkpoint:
    """What both guarantees share: producing through a bounded queue, and the producer's life."""

    exactly_once = False

    def __init__(
        self,
        new_producer: Callable[[], Producer],
        *,
        on_delivery: Delivered | None = None,
        commit_timeout: float = 60.0,
        watchdog: Watchdog | None = None,
    ) -> None:
        self._new_producer = new_producer
        self._on_delivery = on_delivery
        self.commit_timeout = commit_timeout
        self.watchdog = watchdog or Watchdog()
        self.producer = new_producer()
        self.pending = 0  # records produced since the last commit
        self._errors: list[str] = []

    def produce(self, topic: str, **kwargs: Any) -> None:
        while True:
            try:
                self.producer.produce(topic, on_delivery=self._delivered, **kwargs)
                break
            except BufferError:
                self.producer.poll(0.1)  # local queue full: let deliveries drain
        self.pending += 1

    def _delivered(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self._errors.append(f"{message.topic()}: {error.str()}")
        if self._on_delivery is not None:
            self._on_delivery(error, message)

    def poll(self) -> None:
        self.producer.poll(0)

    def commit(self, offsets: list[TopicPartition], consumer: Consumer) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        """Drop what was produced since the last commit (as far as the guarantee allows)."""
        self.pending = 0
        self._errors.clear()

    def renew(self, why: str) -> None:
        """Replace a producer that cannot deliver or abort any more, dropping what it holds.

        A producer whose broker forgot its producer id retries its records forever, or cannot
        abort its transaction; a new producer (with the same settings, and the same
        transactional.id, initialised again) gets a new id and works. Its dropped records were
        never committed: the rewind that follows processes their input again.
        """
        with contextlib.suppress(KafkaException):  # a producer in a fatal state raises here
            self.producer.purge()
            self.producer.flush(0)
        self.producer = self._new_producer()
        self.pending = 0
        self._errors.clear()
        log.warning("replaced the producer: %s", why)

    def close(self) -> None:
        with contextlib.suppress(KafkaException):
            self.producer.flush(10)


class ExactlyOnce(Checkpoint):
    exactly_once = True

    def __init__(
        self,
        new_producer: Callable[[], Producer],
        *,
        on_delivery: Delivered | None = None,
        commit_timeout: float = 60.0,
        watchdog: Watchdog | None = None,
    ) -> None:
        super().__init__(
            new_producer,
            on_delivery=on_delivery,
            commit_timeout=commit_timeout,
            watchdog=watchdog,
        )
        self.in_transaction = False

    def produce(self, topic: str, **kwargs: Any) -> None:
        if not self.in_transaction:
            self.producer.begin_transaction()
            self.in_transaction = True
        super().produce(topic, **kwargs)

    def commit(self, offsets: list[TopicPartition], consumer: Consumer) -> None:
        if not self.in_transaction:
            if not offsets:
                return
            self.producer.begin_transaction()
            self.in_transaction = True
        if offsets:
            with self.watchdog.guard("send_offsets_to_transaction", self.commit_timeout):
                self.producer.send_offsets_to_transaction(
                    offsets, consumer.consumer_group_metadata(), self.commit_timeout
                )
        with self.watchdog.guard("commit_transaction", self.commit_timeout):
            self.producer.commit_transaction(self.commit_timeout)
        self.in_transaction = False
        self.pending = 0

    def abort(self) -> None:
        if self.in_transaction:
            try:
                with self.watchdog.guard("abort_transaction", 30):
                    self.producer.abort_transaction(30)
            except KafkaException as exc:
                log.warning("abort failed: %s", exc.args[0].str())
                self.in_transaction = False
                self.renew("its transaction could not be aborted")
        self.in_transaction = False
        super().abort()

    def renew(self, why: str) -> None:
        self.in_transaction = False
        super().renew(why)

    def close(self) -> None:
        if self.in_transaction:
            with contextlib.suppress(KafkaException):
                self.producer.abort_transaction(10)
            self.in_transaction = False
        super().close()


class AtLeastOnce(Checkpoint):
    def commit(self, offsets: list[TopicPartition], consumer: Consumer) -> None:
        remaining = self.producer.flush(self.commit_timeout)
        if remaining or self._errors:
            errors = "; ".join(self._errors[:3])
            raise KafkaRuntimeError(f"{remaining} records undelivered, errors: {errors}")
        if offsets:
            consumer.commit(offsets=offsets, asynchronous=False)
        self.pending = 0
