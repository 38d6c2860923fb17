"""`stream-monitor forward`: the consume loop that hands each alert to every sink, at least once.

Offsets (`enable.auto.commit` and `enable.auto.offset.store` off): every `commit_interval`, per
partition, the group commits the lowest offset some sink has not taken yet (accepted, or given
up on and dead-lettered). So a crash re-delivers, and never loses, what was read after the last
commit. Each sink's own position goes into the commit's metadata: after a restart a sink skips
what it had already taken, and a healthy sink is not re-sent everything a failing sink still
owed (it is only told about those alerts, through `remember`, to rebuild its state). Dead
letters are flushed before the commit that covers them; one that cannot be written stops the
forwarder (exit 1) rather than commit past an alert nobody has.

Isolation: each sink has its own queue and thread (`SinkWorker`), so a failing sink delays only
its own deliveries. Reading pauses when a sink holds `max_pending` alerts (memory stays
bounded), which `give_up_after` bounds in time: past it, a failing sink's alerts are
dead-lettered for that sink and the others carry on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from stream_monitor.config import Config, ForwardConfig
from stream_monitor.forward import ForwardError
from stream_monitor.forward.alertmanager import AlertmanagerSink
from stream_monitor.forward.http import HttpEndpoint
from stream_monitor.forward.metrics import ForwardMetrics
from stream_monitor.forward.records import AlertRecord, from_message
from stream_monitor.forward.sinks import Sink, SinkError, SinkWorker
from stream_monitor.forward.webhook import WebhookSink
from stream_monitor.kafka.offsets import committed_offsets
from stream_monitor.kafka.settings import common, instance_id, reader_settings
from stream_monitor.processing import deadletters
from stream_monitor.secrets import display_url

log = logging.getLogger(__name__)

SINK_HEADER = "stream_monitor-sink"
ALL_SINKS = "*"


def build_sinks(forward: ForwardConfig) -> list[Sink]:
    """The sinks `forward.alertmanager` and `forward.webhooks[]` describe, in that order."""
    sinks: list[Sink] = []
    names = iter(forward.sink_names())
    manager = forward.alertmanager
    if manager is not None:
        resolve = (manager.resolve_timeout or 300_000) / 1000
        sinks.append(
            AlertmanagerSink(
                name=next(names),
                endpoint=HttpEndpoint(manager.url, timeout=(manager.timeout or 5000) / 1000),
                headers=manager.headers,
                repeat_post=(manager.repeat_post or 0) / 1000 or resolve / 2,
                active_for=(manager.active_for or 86_400_000) / 1000,
                max_active=manager.max_active,
            )
        )
    for hook in forward.webhooks:
        sinks.append(
            WebhookSink(
                name=next(names),
                endpoint=HttpEndpoint(hook.url, timeout=(hook.timeout or 5000) / 1000),
                headers=hook.headers,
                format=hook.format,
                mode=hook.mode,
            )
        )
    return sinks


def history_window(forward: ForwardConfig) -> float | None:
    """How far back (seconds) a restart reads to rebuild sink state: Alertmanager's active set."""
    if forward.alertmanager is None:
        return None
    return (forward.alertmanager.active_for or 86_400_000) / 1000


class ForwardService:
    """Reads `kafka.topics.alerts` in group `forward.group_id`; delivers to every sink."""

    def __init__(
        self,
        config: Config,
        *,
        sinks: list[Sink] | None = None,
        stop: threading.Event | None = None,
        metrics: ForwardMetrics | None = None,
        consumer_factory: Callable[[dict[str, Any]], Consumer] = Consumer,
        producer_factory: Callable[[dict[str, Any]], Producer] = Producer,
        wall_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self.config = config
        self.forward = config.forward
        self.topic = config.kafka.topics.alerts
        self.stop = stop or threading.Event()
        self.metrics = metrics or ForwardMetrics()
        self.sinks = build_sinks(self.forward) if sinks is None else sinks
        if not self.sinks:
            raise ForwardError(
                "forward: no sinks configured (set forward.alertmanager.url or forward.webhooks)"
            )
        self.workers = [
            SinkWorker(
                sink,
                dead_letter=self._dead_letter,
                outcomes=self.metrics,
                give_up_after=(self.forward.give_up_after or 600_000) / 1000,
                backoff=(self.forward.retry_backoff or 500) / 1000,
                backoff_max=(self.forward.retry_backoff_max or 30_000) / 1000,
            )
            for sink in self.sinks
        ]
        for worker in self.workers:
            self.metrics.pending.labels(worker.name).set_function(
                lambda worker=worker: float(worker.backlog)  # type: ignore[misc]
            )
        for sink in self.sinks:
            if isinstance(sink, AlertmanagerSink):
                self.metrics.active.set_function(lambda sink=sink: float(sink.active))  # type: ignore[misc]
        self._window = history_window(self.forward)
        self._consumer_factory = consumer_factory
        self._producer_factory = producer_factory
        self._wall_ms = wall_ms
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._assigned: set[int] = set()
        self._to_rebuild: set[int] = set()
        self._read_upto: dict[int, int] = {}  # partition -> offset after the last record read
        self._skip: dict[tuple[str, int], int] = {}  # (sink, partition) -> its committed position
        self._committed: dict[int, tuple[int, str]] = {}
        self._dead_letters_unflushed = False
        self._dead_letter_errors: list[str] = []
        self._paused = False
        self.joined = False
        self.looping = False
        self.last_progress = time.monotonic()
        self.metrics.partitions.set_function(lambda: float(len(self._assigned)))
        self.metrics.last_progress.set_function(
            lambda: time.time() - (time.monotonic() - self.last_progress)
        )

    # --- lifecycle -------------------------------------------------------------------------
    def run(self) -> None:
        """Until `stop` is set; then finish in-flight attempts, commit and close."""
        self._consumer = consumer = self._consumer_factory(self._consumer_settings())
        self._producer = self._producer_factory(self._producer_settings())
        for worker in self.workers:
            worker.start()
        consumer.subscribe(
            [self.topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        log.info(
            "forwarding topic=%s group=%s sinks=%s dead_letters=%s",
            self.topic,
            self.forward.group_id,
            ",".join(self._describe_sinks()),
            self.forward.dead_letter_topic,
        )
        interval = (self.forward.commit_interval or 1000) / 1000
        # consume() returns early only with a full batch: its timeout is what a lone alert waits
        # (100 ms gave a 60 ms median latency), so use the short kafka.poll_timeout (20 ms).
        timeout = (self.config.kafka.poll_timeout or 20) / 1000
        next_commit = time.monotonic() + interval
        self.looping = True
        try:
            while not self.stop.is_set():
                self._backpressure()
                messages = consumer.consume(500, timeout)
                if self._to_rebuild:
                    self._rebuild()
                for message in messages:
                    self._handle(message)
                self._producer.poll(0)
                now = self.last_progress = time.monotonic()
                if now >= next_commit:
                    next_commit = now + interval
                    self._commit()
        finally:
            self.looping = False
            for worker in self.workers:
                worker.stop()
            try:
                self._commit()
            finally:
                consumer.close()
                self._producer.flush(10)

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        stalled = time.monotonic() - self.last_progress
        limit = (self.config.metrics.stall_timeout or 90_000) / 1000
        ok = not self.looping or stalled < limit
        return ok, {"loop_seconds_since_progress": round(stalled, 3)}

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        ok = self.looping and self.joined and not self._to_rebuild
        return ok, {"partitions": sorted(self._assigned), "rebuilding": bool(self._to_rebuild)}

    # --- reading -----------------------------------------------------------------------------
    def _handle(self, message: Message) -> None:
        error = message.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                return
            if error.fatal():
                raise ForwardError(f"reading {self.topic}: {error.str()}")
            log.warning("reading topic=%s: %s", self.topic, error.str())
            return
        record = from_message(message)
        self.metrics.count_read(record)
        if record.partition not in self._assigned:
            return
        if record.event is None:
            self._dead_letter(
                record,
                ALL_SINKS,
                SinkError("not_an_alert", "not a CloudEvent JSON object", retryable=False),
            )
        else:
            for worker in self.workers:
                skip = self._skip.get((worker.name, record.partition))
                worker.offer(record, deliver=skip is None or record.offset >= skip)
        self._read_upto[record.partition] = record.offset + 1

    def _backpressure(self) -> None:
        assert self._consumer is not None
        fullest = max(worker.backlog for worker in self.workers)
        if not self._paused and fullest >= self.forward.max_pending:
            self._consumer.pause(self._consumer.assignment())
            self._paused = True
            log.warning("a sink holds %d alerts (forward.max_pending): reading paused", fullest)
        elif self._paused and fullest < self.forward.max_pending // 2:
            self._consumer.resume(self._consumer.assignment())
            self._paused = False
            log.info("reading resumed")

    # --- rebalancing and restart -------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.joined = True
        fresh = {tp.partition for tp in partitions}
        self._assigned |= fresh
        self._to_rebuild |= fresh
        log.info("assigned partitions=%s", ",".join(str(p) for p in sorted(fresh)) or "-")
        if self._paused:
            consumer.pause(partitions)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        gone = {tp.partition for tp in partitions}
        try:
            self._commit(only=gone)
        except (ForwardError, KafkaException) as exc:
            log.warning("commit on revoke failed: %s (the next owner re-delivers)", exc)
        self._forget(gone)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._forget({tp.partition for tp in partitions})

    def _forget(self, partitions: set[int]) -> None:
        for worker in self.workers:
            worker.drop(partitions)
        self._assigned -= partitions
        self._to_rebuild -= partitions
        for partition in partitions:
            self._read_upto.pop(partition, None)
            self._committed.pop(partition, None)
        self._skip = {key: value for key, value in self._skip.items() if key[1] not in partitions}

    def _rebuild(self) -> None:
        """Per newly assigned partition: each sink's committed position (commit metadata), and
        the sink state the alerts before it imply (Alertmanager's active set)."""
        assert self._consumer is not None
        partitions = sorted(self._to_rebuild)
        self._to_rebuild.clear()
        committed = committed_offsets(
            self._consumer, [TopicPartition(self.topic, p) for p in partitions]
        )
        upto: dict[int, int] = {}
        for tp in committed:
            if tp.offset < 0:
                continue
            upto[tp.partition] = tp.offset
            self._read_upto[tp.partition] = tp.offset
            self._committed[tp.partition] = (tp.offset, tp.metadata or "")
            for name, offset in _positions(tp.metadata).items():
                if offset > tp.offset:
                    self._skip[(name, tp.partition)] = offset
        if self._window is None or not upto:
            return
        since = self._wall_ms() - int(self._window * 1000)
        rebuilt = 0
        for record in self._history(upto, since):
            rebuilt += 1
            for worker in self.workers:
                worker.offer(record, deliver=False)
        log.info(
            "rebuilt sink state from alerts=%d partitions=%s", rebuilt, ",".join(map(str, upto))
        )

    def _history(self, upto: dict[int, int], since_ms: int) -> list[AlertRecord]:
        """Alerts published since `since_ms` and before the committed offsets."""
        reader = self._consumer_factory(
            reader_settings(
                self.config, "forward-rebuild", **{"group.id": f"{self.forward.group_id}-rebuild"}
            )
        )
        try:
            starts = reader.offsets_for_times(
                [TopicPartition(self.topic, p, since_ms) for p in upto], timeout=10
            )
            todo = {tp.partition: tp.offset for tp in starts if 0 <= tp.offset < upto[tp.partition]}
            if not todo:
                return []
            reader.assign([TopicPartition(self.topic, p, offset) for p, offset in todo.items()])
            records: list[AlertRecord] = []
            deadline = time.monotonic() + 60
            while todo and time.monotonic() < deadline and not self.stop.is_set():
                for message in reader.consume(500, 0.2):
                    partition = message.partition()
                    error = message.error()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            todo.pop(partition, None)
                        continue
                    if partition in todo and message.offset() < upto[partition]:
                        record = from_message(message)
                        if record.event is not None:
                            records.append(record)
                    if message.offset() >= upto[partition] - 1:
                        todo.pop(partition, None)
            return records
        finally:
            reader.close()

    # --- committing and dead letters -------------------------------------------------------
    def _commit(self, only: set[int] | None = None) -> None:
        consumer, producer = self._consumer, self._producer
        if consumer is None or producer is None:
            return
        self._advance_past_markers(consumer)
        offsets = []
        chosen = sorted(self._assigned if only is None else only & self._assigned)
        for partition in chosen:
            read = self._read_upto.get(partition)
            if read is None:
                continue
            positions = {}
            for worker in self.workers:
                pending = worker.first_pending(partition)
                positions[worker.name] = read if pending is None else pending
            low = min(positions.values())
            metadata = orjson.dumps(positions).decode()
            if self._committed.get(partition) == (low, metadata):
                continue
            offsets.append(TopicPartition(self.topic, partition, low, metadata=metadata))
        if not offsets:
            return
        if self._dead_letters_unflushed:  # what these offsets cover must be on the topic first
            self._dead_letters_unflushed = False
            left = producer.flush(30)
            if left or self._dead_letter_errors:
                raise ForwardError(
                    f"cannot write to {self.forward.dead_letter_topic}: "
                    f"{self._dead_letter_errors[:1] or [f'{left} undelivered']}; not committing"
                )
        try:
            consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            self.metrics.commit_failures.inc()
            log.warning("commit failed: %s; trying again in the next interval", exc.args[0].str())
            return
        self.metrics.commits.inc()
        for tp in offsets:
            self._committed[tp.partition] = (tp.offset, tp.metadata)

    def _advance_past_markers(self, consumer: Consumer) -> None:
        """Every record consume() returned has been handed to the sinks, so the consumer's
        position may be committed: on a transactional alerts topic it also steps over the
        commit markers after the last alert, which would otherwise show as lag forever."""
        partitions = [TopicPartition(self.topic, p) for p in self._read_upto]
        if not partitions:
            return
        try:
            positions = consumer.position(partitions)
        except KafkaException:
            return
        for tp in positions:
            if tp.offset >= 0 and tp.partition in self._read_upto:
                self._read_upto[tp.partition] = max(self._read_upto[tp.partition], tp.offset)

    def _dead_letter(self, record: AlertRecord, sink: str, error: SinkError) -> None:
        """Called from sink workers (and the loop, for records that are not alerts)."""
        assert self._producer is not None
        headers = [
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
        self._dead_letters_unflushed = True
        self._producer.produce(
            self.forward.dead_letter_topic,
            record.value,
            record.key,
            headers=headers,
            on_delivery=self._dead_letter_delivered,
        )

    def _dead_letter_delivered(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self._dead_letter_errors.append(error.str())

    # --- clients -------------------------------------------------------------------------------
    def _consumer_settings(self) -> dict[str, Any]:
        kafka = self.config.kafka
        settings = common(self.config)
        settings.update(
            {
                "group.id": self.forward.group_id,
                "client.id": f"{self.forward.group_id}-{instance_id(self.config)}",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": self.forward.start_at,
                "isolation.level": "read_committed",
                "session.timeout.ms": kafka.session_timeout,
                "heartbeat.interval.ms": max(100, (kafka.session_timeout or 10_000) // 5),
                # An alert is forwarded as soon as it is committed, even from brokers that hold
                # fetches for the whole wait when there is nothing new.
                "fetch.wait.max.ms": 100,
            }
        )
        settings.update(kafka.consumer)
        return settings

    def _producer_settings(self) -> dict[str, Any]:
        settings = common(self.config)
        settings.update({"enable.idempotence": True, "linger.ms": 5})
        return settings

    def _describe_sinks(self) -> list[str]:
        shown = []
        forward = self.forward
        if forward.alertmanager is not None:
            shown.append(f"alertmanager({display_url(forward.alertmanager.url)})")
        for name, hook in zip(forward.sink_names()[len(shown) :], forward.webhooks, strict=False):
            shown.append(f"{name}({display_url(hook.url)} {hook.format}/{hook.mode})")
        return shown or [sink.name for sink in self.sinks]


def _positions(metadata: str | None) -> dict[str, int]:
    """Each sink's position from a commit's metadata (written by `_commit`); {} when foreign."""
    try:
        found = orjson.loads(metadata or "{}")
    except orjson.JSONDecodeError:
        return {}
    if not isinstance(found, dict):
        return {}
    return {str(k): v for k, v in found.items() if isinstance(v, int) and not isinstance(v, bool)}


def ensure_dead_letter_topic(admin: AdminClient, config: Config) -> None:
    """Create `forward.dead_letter_topic` when it is missing (idempotent)."""
    topic = config.forward.dead_letter_topic
    wanted = NewTopic(topic, config.kafka.partitions, config.kafka.replication_factor)
    try:
        admin.create_topics([wanted], operation_timeout=15, request_timeout=15)[topic].result()
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise ForwardError(f"cannot create topic {topic}: {exc.args[0].str()}") from exc
