"""`MonitorProducer`: what a model service calls to send predictions and labels to the monitor."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from stream_monitor.client.contract import (
    LabelFields,
    PredictionFields,
    check_label,
    check_prediction,
    event_time,
    label_event,
    now_ms,
    prediction_event,
)
from stream_monitor.client.errors import ClientError, DeliveryError, QueueFull, UndeliveredEvent
from stream_monitor.client.ids import uuid7
from stream_monitor.client.partitioning import PartitionMap
from stream_monitor.core.events import DEFAULT_MAX_EVENT_BYTES

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from stream_monitor.config import Config

log = logging.getLogger(__name__)

# The partition count a record was sent with is stale: read it again before the next record.
_STALE_PARTITIONS = frozenset(
    {KafkaError._UNKNOWN_PARTITION, KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC}
)
_KEPT_FAILURES = 100


class MonitorProducer:
    """Sends prediction and label events, validated locally, keyed and partitioned by model.

    Events are checked by the monitor's own contract code: an invalid call raises `InvalidEvent`
    and sends nothing. Sending does not wait for the broker: events join librdkafka's local
    queue (bounded by `queue_size`), and when it is full `log_*` serves deliveries for up to
    `max_block` seconds before raising `QueueFull`. The one exception is the first event to each
    topic, which reads the topic's partition count (up to `metadata_timeout`); later reads run
    in the background and a failed one keeps the count known (`PartitionMap`). Delivery failures reach `on_delivery_error`
    (called from `log_*`, `poll()` or `flush()`, on the caller's thread) and make the next
    `flush()` raise `DeliveryError`.

    Give it `bootstrap_servers` (it then owns a producer with `settings` on top of its
    defaults), or your own confluent-kafka `producer` (its partitioner setting does not matter:
    the partition is computed here), and optionally the monitor's `config` file for topic names,
    `events.max_bytes` and `kafka.client` settings. Explicit arguments win over the file.
    """

    def __init__(
        self,
        *,
        bootstrap_servers: str | None = None,
        producer: Producer | None = None,
        config: str | Path | Config | None = None,
        predictions_topic: str | None = None,
        labels_topic: str | None = None,
        max_event_bytes: int | None = None,
        settings: Mapping[str, Any] | None = None,
        queue_size: int = 100_000,
        max_block: float = 5.0,
        on_delivery_error: Callable[[UndeliveredEvent], None] | None = None,
        metadata_timeout: float = 10.0,
        prediction_ids: Callable[[], str] = uuid7,
        clock_ms: Callable[[], int] = now_ms,
        report_successes: bool = False,
    ) -> None:
        loaded = _load(config)
        topics = loaded.kafka.topics if loaded is not None else None
        self.predictions_topic = predictions_topic or (
            topics.predictions if topics else "predictions"
        )
        self.labels_topic = labels_topic or (topics.labels if topics else "labels")
        self.max_event_bytes = max_event_bytes or (
            loaded.events.max_bytes if loaded is not None else DEFAULT_MAX_EVENT_BYTES
        )
        if producer is None:
            servers = bootstrap_servers or (
                loaded.kafka.bootstrap_servers if loaded is not None else None
            )
            if not servers:
                raise ClientError("MonitorProducer needs bootstrap_servers, producer or config")
            reports: dict[str, Any] = {}
            if not report_successes:
                # A report per delivered event costs a Python call each (a third of the SDK's
                # time in benchmarks/client_forward.py): an owned producer reports failures only.
                reports = {"delivery.report.only.error": True, "on_delivery": self._delivered}
            producer = Producer(
                {
                    "bootstrap.servers": servers,
                    # Per partition, events arrive in the order they were logged, without duplicates.
                    "enable.idempotence": True,
                    "linger.ms": 5,
                    "queue.buffering.max.messages": queue_size,
                    **(loaded.kafka.client if loaded is not None else {}),
                    **(settings or {}),
                    **reports,
                }
            )
            self._owned = True
        else:
            self._owned = False
        # Whose callback reports failures: the producer's own (owned, failures only), or one
        # passed with each event (a caller's producer, whose settings are not ours to change).
        self._per_event_reports = not self._owned or report_successes
        self._producer = producer
        self._partitions = PartitionMap(producer, metadata_timeout=metadata_timeout)
        self._max_block = max_block
        self._on_delivery_error = on_delivery_error
        self._new_id = prediction_ids
        self._clock_ms = clock_ms
        self._failures: list[UndeliveredEvent] = []
        self._failed = 0
        self._lock = threading.Lock()

    # --- the two calls a model service makes ---------------------------------------------------
    def log_prediction(self, **fields: Unpack[PredictionFields]) -> str:
        """Send one prediction; returns its `prediction_id` (a new UUIDv7 unless given).

        `model` and `prediction` are required; `score`, `features`, `model_version`,
        `segment`, `timestamp` (epoch ms or an aware datetime; default now) and
        `prediction_id` are optional (`PredictionFields`)."""
        prediction_id, value = self.encode_prediction(**fields)
        self._send(self.predictions_topic, fields["model"], value)
        return prediction_id

    def log_label(self, **fields: Unpack[LabelFields]) -> None:
        """Send the ground truth for an earlier prediction (same `model` and `prediction_id`).

        `model`, `prediction_id` and `label` are required; `timestamp`, `prediction`,
        `model_version` and `segment` are optional (`LabelFields`)."""
        value = self.encode_label(**fields)
        self._send(self.labels_topic, fields["model"], value)

    # --- building blocks (the asyncio variant shares them) -------------------------------------
    def encode_prediction(self, **fields: Unpack[PredictionFields]) -> tuple[str, bytes]:
        """The prediction id and the checked event bytes; raises `InvalidEvent`."""
        prediction_id = fields.get("prediction_id")
        if prediction_id is None:
            prediction_id = self._new_id()
        event = prediction_event(
            fields,
            prediction_id=prediction_id,
            timestamp=event_time(fields.get("timestamp"), self._clock_ms),
        )
        return prediction_id, check_prediction(event, self.max_event_bytes)

    def encode_label(self, **fields: Unpack[LabelFields]) -> bytes:
        """The checked label event bytes; raises `InvalidEvent`."""
        event = label_event(fields, timestamp=event_time(fields.get("timestamp"), self._clock_ms))
        return check_label(event, self.max_event_bytes)

    # --- delivery ----------------------------------------------------------------------------
    def poll(self, timeout: float = 0.0) -> int:
        """Serve delivery reports (and so `on_delivery_error`); returns how many were served."""
        return int(self._producer.poll(timeout))

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every queued event is delivered; raise `DeliveryError` if any was not
        (since the last `flush()`), or if some are still queued after `timeout` seconds."""
        undelivered = int(self._producer.flush(timeout))
        with self._lock:
            failures, failed = self._failures, self._failed
            self._failures, self._failed = [], 0
        if failed or undelivered:
            raise DeliveryError(failures, failed, undelivered)

    def close(self, timeout: float = 30.0) -> None:
        """Flush (raising `DeliveryError` as `flush` does). A producer you passed in stays yours."""
        self.flush(timeout)

    def __enter__(self) -> MonitorProducer:
        return self

    def __exit__(self, kind: object, error: object, traceback: object) -> None:
        if kind is None:
            self.close()
        else:  # do not mask the caller's exception with a delivery error
            self._producer.flush(5.0)

    @property
    def pending(self) -> int:
        """Events queued locally, not yet acknowledged by the broker."""
        return len(self._producer)

    def _send(
        self,
        topic: str,
        model: str,
        value: bytes,
        *,
        max_block: float | None = None,
        on_delivery: Callable[[KafkaError | None, Message], None] | None = None,
    ) -> None:
        """Queue bytes `encode_*` checked, keyed by `model`, on the partition the Java client
        would pick. Private: bytes that did not come through the contract must not be sent."""
        key = model.encode()
        callback = on_delivery
        if callback is None and self._per_event_reports:
            callback = self._delivered
        extra: dict[str, Any] = {} if callback is None else {"on_delivery": callback}
        max_block = self._max_block if max_block is None else max_block
        partition = self._partitions.partition(topic, key)
        deadline: float | None = None
        while True:
            try:
                self._producer.produce(topic, value, key, partition=partition, **extra)
                break
            except BufferError as exc:
                now = time.monotonic()
                if deadline is None:
                    deadline = now + max_block
                if now >= deadline:
                    raise QueueFull(
                        f"the local queue stayed full for {max_block}s "
                        f"({len(self._producer)} events waiting for the broker)"
                    ) from exc
                self._producer.poll(0.01)
            except KafkaException as exc:
                if exc.args[0].code() not in _STALE_PARTITIONS:
                    raise
                # The topic has fewer partitions than we knew (re-created): read the count
                # again now, once; no event can go out with the count known.
                self._partitions.reread(topic)
                partition = self._partitions.partition(topic, key)
                self._producer.produce(topic, value, key, partition=partition, **extra)
                break
        self._producer.poll(0)

    def _delivered(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self._record_failure(self._undelivered(error, message))

    def _undelivered(self, error: KafkaError, message: Message) -> UndeliveredEvent:
        """What failed, logged once (and a stale partition count noticed)."""
        topic = message.topic() or ""
        if error.code() in _STALE_PARTITIONS:
            self._partitions.expire(topic)
        failure = UndeliveredEvent(
            topic=topic,
            partition=message.partition() if message.partition() is not None else -1,
            model=(message.key() or b"").decode("utf-8", "replace"),
            prediction_id=_prediction_id(message.value()),
            code=error.name(),
            reason=error.str(),
        )
        log.warning(
            "event not delivered topic=%s model=%s prediction_id=%s code=%s: %s",
            failure.topic,
            failure.model,
            failure.prediction_id,
            failure.code,
            failure.reason,
        )
        return failure

    def _record_failure(self, failure: UndeliveredEvent) -> None:
        """Count a failure for the next `flush()` and tell `on_delivery_error`."""
        with self._lock:
            self._failed += 1
            if len(self._failures) < _KEPT_FAILURES:
                self._failures.append(failure)
        report_failure(self._on_delivery_error, failure)


def report_failure(
    callback: Callable[[UndeliveredEvent], None] | None, failure: UndeliveredEvent
) -> None:
    if callback is not None:
        try:
            callback(failure)
        except Exception:  # a failing callback must not break delivery of the others
            log.exception("on_delivery_error raised")


def _prediction_id(value: bytes | None) -> str | None:
    try:
        found = orjson.loads(value or b"").get("prediction_id")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return found if isinstance(found, str) else None


def _load(config: str | Path | Config | None) -> Config | None:
    """The monitor's config (imported only when asked for: it pulls in the detectors)."""
    if config is None:
        return None
    from stream_monitor.config import Config, load_config

    return config if isinstance(config, Config) else load_config(config)
