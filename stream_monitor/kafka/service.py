"""`stream-monitor run`: consume predictions and labels, run the core per partition, publish alerts.

Per commit interval, in exactly-once mode, one Kafka transaction holds the alerts, the dead
letters, the changed state and the input offsets. In at-least-once mode the same records are
flushed before the offsets are committed. In both modes, recovery does not trust the broker alone:
state records carry the input offsets they reflect (restore skips anything beyond the committed
offsets), and a recovering instance reads the alerts and dead letters already visible since the
last checkpoint and never emits those ids again.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import Counter as Tally
from collections.abc import Callable
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from stream_monitor.config import Config
from stream_monitor.core.events import (
    LABEL,
    PREDICTION,
    EventError,
    MissingField,
    WrongType,
    parse_json,
)
from stream_monitor.core.monitor import DeadLetter, Monitor, Output, Record
from stream_monitor.core.state import StateCodec
from stream_monitor.kafka import FencedError, KafkaRuntimeError, deadletters
from stream_monitor.kafka.changelog import RUNTIME_KEY, Changelog, Prefetch, read_to_end
from stream_monitor.kafka.retry import give_up_after, with_retry
from stream_monitor.kafka.settings import (
    consumer_settings,
    describe,
    instance_id,
    producer_settings,
    reader_settings,
)
from stream_monitor.kafka.topics import TopicNames
from stream_monitor.metrics import Metrics, MonitorTally

log = logging.getLogger(__name__)

ORIGIN_HEADER = "stream_monitor-origin"
ALERT_HEADERS = [("content-type", b"application/cloudevents+json")]
_OFFSET_BEGINNING = -2


class PartitionTask:
    """The monitor of one input partition, and where its two input streams stand."""

    __slots__ = ("monitor", "offsets", "origins", "partition", "tally")

    def __init__(self, partition: int, monitor: Monitor, offsets: list[int]) -> None:
        self.partition = partition
        self.monitor = monitor
        self.offsets = offsets  # next offset to process: [predictions stream, labels stream]
        self.origins: dict[str, int] = {}  # repartition mode: last origin offset processed
        self.tally = MonitorTally()  # how much of the monitor's counters reached the metrics


class ServiceCounters:
    __slots__ = (
        "alerts",
        "commits",
        "consumed",
        "dead_letters",
        "duplicates_skipped",
        "forwarded",
        "processed",
        "suppressed",
    )

    def __init__(self) -> None:
        self.consumed = 0
        self.processed = 0  # records handed to a Monitor
        self.alerts = 0
        self.dead_letters = 0
        self.suppressed = 0  # alerts / dead letters a predecessor had already made visible
        self.duplicates_skipped = 0  # repartitioned records seen twice
        self.forwarded = 0
        self.commits = 0


class MonitorService:
    """The long-running consumer/producer loop around `Monitor`s, one per assigned partition."""

    def __init__(
        self,
        config: Config,
        *,
        codec: StateCodec,
        stop: threading.Event | None = None,
        consumer_factory: Callable[[dict[str, Any]], Consumer] = Consumer,
        producer_factory: Callable[[dict[str, Any]], Producer] = Producer,
        metrics: Metrics | None = None,
    ) -> None:
        self.config = config
        self.kafka = config.kafka
        self.names = TopicNames.from_config(config)
        self.exactly_once = self.kafka.processing_guarantee == "exactly_once"
        self.repartition = self.kafka.partitioning == "repartition"
        self.stop = stop or threading.Event()
        self.changelog = Changelog(self.names.state, codec)
        self.counters = ServiceCounters()
        self.tasks: dict[int, PartitionTask] = {}
        self.ready = threading.Event()  # set once assigned partitions are restored
        self._consumer_factory = consumer_factory
        self._producer_factory = producer_factory
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        if self.repartition:
            self._streams = {
                self.names.repartition_predictions: 0,
                self.names.repartition_labels: 1,
            }
            self._forward_to = {
                self.names.predictions: self.names.repartition_predictions,
                self.names.labels: self.names.repartition_labels,
            }
        else:
            self._streams = {self.names.predictions: 0, self.names.labels: 1}
            self._forward_to = {}
        self._stream_topics = list(self._streams)
        self._kinds = {topic: (PREDICTION, LABEL)[index] for topic, index in self._streams.items()}
        self._raw_offsets: dict[tuple[str, int], int] = {}
        self._positions: dict[str, int] = {}  # "topic/partition" -> next offset after our output
        self._suppressed: set[str] = set()
        self._delivery_errors: list[str] = []
        self._in_transaction = False
        self._uncommitted = 0
        self._last_commit = time.monotonic()
        # Exactly once, an alert is visible only once committed: do not let it wait for the timer.
        self._commit_on_alert = self.exactly_once and self.kafka.commit_on_alert
        self._alerts_at_commit = 0
        self._down_since: float | None = None
        self._next_down_report = 0.0
        self._next_probe = 0.0
        self._max_bytes = config.events.max_bytes
        self.metrics = metrics or Metrics(
            max_models=config.metrics.max_models, max_signals=config.metrics.max_signals
        )
        self.restoring = False
        self.looping = False  # False while starting: waiting for the broker is not a stall
        self.last_progress = time.monotonic()  # the loop's last turn, for /healthz
        self._next_state_report = 0.0
        self.metrics.watch(
            ready=lambda: float(self.readiness()[0]),
            partitions=lambda: float(len(self.tasks)),
            progress=lambda: time.time() - (time.monotonic() - self.last_progress),
        )
        self._producer_config: dict[str, Any] = {}
        self._prefetch: Prefetch | None = None
        self._message_room = 1_000_000 - 65_536

    # --- lifecycle ---------------------------------------------------------------------------
    def run(self) -> None:
        """Until `stop` is set: consume, process, commit. Then commit and close cleanly."""
        self._connect()
        consumer = self._consumer
        assert consumer is not None
        self._prefetch = self._start_prefetch()
        topics = self._stream_topics + list(self._forward_to)
        consumer.subscribe(
            topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        log.info(
            "consuming topics=%s group=%s guarantee=%s partitioning=%s",
            ",".join(topics),
            self.kafka.group_id,
            self.kafka.processing_guarantee,
            self.kafka.partitioning,
        )
        timeout = (self.kafka.poll_timeout or 20) / 1000
        interval = (self.kafka.commit_interval or 100) / 1000
        state_interval = (self.config.metrics.state_interval or 10_000) / 1000
        self.looping = True
        try:
            while not self.stop.is_set():
                messages = consumer.consume(self.kafka.batch_size, timeout)
                if messages:
                    self._handle(messages)
                now = self.last_progress = time.monotonic()
                if self._uncommitted and (
                    self._uncommitted >= self.kafka.commit_max_events
                    or now - self._last_commit >= interval
                    or (self._commit_on_alert and self.counters.alerts != self._alerts_at_commit)
                ):
                    self._commit()
                self._check_broker()
                if now >= self._next_state_report:
                    self._next_state_report = now + state_interval
                    self.metrics.report_state(task.monitor for task in list(self.tasks.values()))
            self._commit()
        finally:
            self._close()

    def _connect(self) -> None:
        producer_config = producer_settings(self.config, error_cb=self._on_client_error)
        statistics: dict[str, Any] = {}
        if self.config.metrics.statistics_interval:
            # librdkafka computes consumer lag per partition; it reaches us through poll().
            statistics = {
                "statistics.interval.ms": self.config.metrics.statistics_interval,
                "stats_cb": self.metrics.on_statistics,
            }
        consumer_config = consumer_settings(
            self.config, error_cb=self._on_client_error, **statistics
        )
        log.info("producer settings: %s", describe(producer_config))
        log.info("consumer settings: %s", describe(consumer_config))
        self._producer_config = producer_config
        # A dead letter keeps as much of the original as the producer can send (with headroom for
        # key and headers): oversized input must not make producing its dead letter fail too.
        self._message_room = int(producer_config.get("message.max.bytes", 1_000_000)) - 65_536
        self._producer = self._new_producer()
        self._consumer = self._consumer_factory(consumer_config)

    def _new_producer(self) -> Producer:
        producer = self._producer_factory(self._producer_config)
        if self.exactly_once:
            with_retry(
                "initialise transactions",
                lambda: producer.init_transactions(30),
                stop=self.stop,
                give_up_after=give_up_after(
                    self.kafka.on_broker_down, self.kafka.broker_down_timeout
                ),
            )
        return producer

    def _give_up(self, since: float) -> bool:
        limit = give_up_after(self.kafka.on_broker_down, self.kafka.broker_down_timeout)
        return limit is not None and time.monotonic() - since > limit

    def _close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            try:
                consumer.close()  # revokes: the final commit happens in _on_revoke
            except KafkaException as exc:
                log.warning("closing the consumer: %s", exc.args[0].str())
        producer, self._producer = self._producer, None
        if producer is not None:
            if self._in_transaction:
                with contextlib.suppress(KafkaException):
                    producer.abort_transaction(10)
            producer.flush(10)
        self.ready.clear()

    # --- rebalance ---------------------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        numbers = sorted({tp.partition for tp in partitions if tp.topic in self._streams})
        log.info("assigned partitions=%s", numbers)
        self._recover(numbers)
        self.ready.set()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("revoking partitions=%s", sorted({tp.partition for tp in partitions}))
        self._commit()
        self._drop(partitions)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.warning(
            "partitions lost=%s: dropping their uncommitted work",
            sorted({tp.partition for tp in partitions}),
        )
        self._abort()
        self._drop(partitions)

    def _drop(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            if tp.topic in self._streams:
                self.tasks.pop(tp.partition, None)
            self._raw_offsets.pop((tp.topic, tp.partition), None)
        if not self.tasks:
            self.ready.clear()

    def _committed(self, partitions: list[int]) -> dict[int, tuple[int, ...]]:
        assert self._consumer is not None
        wanted = [TopicPartition(topic, p) for p in partitions for topic in self._stream_topics]
        committed = self._consumer.committed(wanted, timeout=30)
        offsets = {(tp.topic, tp.partition): max(tp.offset, 0) for tp in committed}
        return {p: tuple(offsets[(topic, p)] for topic in self._stream_topics) for p in partitions}

    def _start_prefetch(self) -> Prefetch | None:
        """Start restoring every partition's state before the group join (see `Prefetch`)."""
        if not self.kafka.prefetch_state:
            return None
        assert self._consumer is not None
        try:
            metadata = self._consumer.list_topics(self.names.state, timeout=10).topics.get(
                self.names.state
            )
            if metadata is None or metadata.error or not metadata.partitions:
                return None
            limits = self._committed(sorted(metadata.partitions))
        except KafkaException as exc:
            log.info("no state prefetch: %s", exc.args[0].str())
            return None
        settings = reader_settings(self.config, "restore")
        return Prefetch(self.changelog, settings, limits, self._prepare_monitor).start()

    def _prepare_monitor(self, partition: int, items: dict[str, Any]) -> Monitor:
        items.pop(RUNTIME_KEY, None)
        monitor = Monitor(self.config, source=self.kafka.group_id)
        monitor.restore(items.items())
        return monitor

    def _recover(self, partitions: list[int]) -> None:
        """Restore state for these partitions and learn which outputs already exist."""
        if not partitions:
            return
        self.restoring = True
        try:
            self._restore(partitions)
        finally:
            self.restoring = False
            self.last_progress = time.monotonic()
        self.metrics.report_state(task.monitor for task in self.tasks.values())

    def _restore(self, partitions: list[int]) -> None:
        started = time.monotonic()
        committed = self._committed(partitions)
        asked = time.monotonic()
        ahead, self._prefetch = self._prefetch, None  # good for the first assignment only
        restored, unchanged = self.changelog.restore_after(
            ahead, reader_settings(self.config, "restore"), committed
        )
        read = time.monotonic()
        positions: dict[str, int] = {}
        for partition in partitions:
            items = restored.get(partition, {})
            runtime = items.pop(RUNTIME_KEY, None) or {}
            if ahead is not None and partition in unchanged:
                monitor = ahead.prepared[partition]
            else:
                monitor = self._prepare_monitor(partition, items)
            task = PartitionTask(partition, monitor, list(committed[partition]))
            task.origins = dict(runtime.get("origins", {}))
            self.tasks[partition] = task
            for name, offset in runtime.get("positions", {}).items():
                positions[name] = min(offset, positions.get(name, offset))
        built = time.monotonic()
        self._learn_existing_outputs(positions)
        done = time.monotonic()
        seconds = done - started
        self.metrics.restore_seconds.observe(seconds)
        log.info(
            "recovered partitions=%s seconds=%.2f committed=%.2f state=%.2f monitors=%.2f "
            "outputs=%.2f",
            partitions,
            seconds,
            asked - started,
            read - asked,
            built - read,
            done - built,
        )

    def _learn_existing_outputs(self, positions: dict[str, int]) -> None:
        """Read alerts and dead letters from the last checkpoint on: their ids are not re-emitted."""

        # The reader looks the partitions up itself: `list_topics()` on the group consumer, inside
        # its rebalance callback, clears confluent-kafka's callback context for the running
        # `consume()`, whose next callback (statistics, logs, errors) then aborts the process.
        def start(reader: Consumer) -> list[TopicPartition]:
            offsets = []
            for topic in (self.names.alerts, self.names.dead_letters):
                metadata = reader.list_topics(topic, timeout=10).topics.get(topic)
                if metadata is None or metadata.error:
                    continue
                for partition in metadata.partitions:
                    name = f"{topic}/{partition}"
                    offsets.append(
                        TopicPartition(topic, partition, positions.get(name, _OFFSET_BEGINNING))
                    )
            return offsets

        found = 0

        def remember(message: Message) -> None:
            nonlocal found
            if message.topic() == self.names.alerts:
                try:
                    self._suppressed.add(str(orjson.loads(message.value() or b"{}")["id"]))
                    found += 1
                except (orjson.JSONDecodeError, KeyError, TypeError):
                    return
            else:
                identity = deadletters.header_dict(message.headers()).get(
                    deadletters.DEAD_LETTER_ID
                )
                if identity:
                    self._suppressed.add(identity)
                    found += 1
            key = f"{message.topic()}/{message.partition()}"
            self._positions[key] = max(self._positions.get(key, 0), message.offset() + 1)

        read_to_end(reader_settings(self.config, "outputs"), start, remember)
        if found:
            log.info(
                "outputs already visible since the last checkpoint: %d (will not be re-emitted)",
                found,
            )

    # --- processing --------------------------------------------------------------------------
    def _handle(self, messages: list[Message]) -> None:
        started = time.perf_counter()
        groups: dict[int, list[Record]] = {}
        tasks, kinds, streams = self.tasks, self._kinds, self._streams
        repartition = self.repartition
        for message in messages:
            error = message.error()
            if error is not None:
                self._on_consume_error(error)
                continue
            topic = message.topic()
            kind = kinds.get(topic)
            partition = message.partition()
            offset = message.offset()
            if kind is None:
                self._forward(message)
                continue
            task = tasks.get(partition)
            if task is None:
                continue
            task.offsets[streams[topic]] = offset + 1
            if repartition and self._seen_before(task, message):
                continue
            timestamp_type, timestamp = message.timestamp()
            value = message.value()
            group = groups.get(partition)
            if group is None:
                group = groups[partition] = []
            group.append(
                (
                    kind,
                    b"" if value is None else value,
                    timestamp if timestamp_type else None,
                    topic,
                    partition,
                    offset,
                )
            )
        self._uncommitted += len(messages)
        self.counters.consumed += len(messages)
        self._down_since = None
        metrics = self.metrics
        for partition, records in groups.items():
            self.counters.processed += len(records)
            task = tasks[partition]
            output = task.monitor.process(records)
            if output.alerts or output.dead_letters:
                self._emit(output, messages)
            metrics.report_monitor(task.monitor, task.tally)
        metrics.report_batch(Tally(map(Message.topic, messages)), self.counters)
        metrics.batch_seconds.observe(time.perf_counter() - started)

    def _seen_before(self, task: PartitionTask, message: Message) -> bool:
        """Repartitioned records carry their origin; a leaked forward must not count twice."""
        origin = dict(message.headers() or []).get(ORIGIN_HEADER)
        if not origin:
            return False
        source, _, offset_text = origin.decode().rpartition("/")
        offset = int(offset_text)
        if offset <= task.origins.get(source, -1):
            self.counters.duplicates_skipped += 1
            return True
        task.origins[source] = offset
        return False

    def _forward(self, message: Message) -> None:
        """Repartition mode: re-key a raw event by its model onto the internal topic."""
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        self._raw_offsets[(topic, partition)] = offset + 1
        value = message.value() or b""
        timestamp_type, timestamp = message.timestamp()
        try:
            event = parse_json(value, self._max_bytes)
            model = event.get("model")
            if model is None:
                raise MissingField("field 'model' is required", "model", event)
            if type(model) is not str or not model:
                raise WrongType("field 'model' must be a non-empty string", "model", event)
        except EventError as error:
            self.metrics.invalid.labels(error.reason).inc()  # never reaches a Monitor's counters
            kind = PREDICTION if topic == self.names.predictions else LABEL
            record: Record = (
                kind,
                value,
                timestamp if timestamp_type else None,
                topic,
                partition,
                offset,
            )
            self._dead_letter(DeadLetter(record, error), message.key())
            return
        self._ensure_transaction()
        assert self._producer is not None
        self._produce(
            self._forward_to[topic],
            key=model.encode(),
            value=value,
            timestamp=timestamp if timestamp_type else 0,
            headers=[(ORIGIN_HEADER, f"{topic}/{partition}/{offset}".encode())],
        )
        self.counters.forwarded += 1

    def _emit(self, output: Output, messages: list[Message]) -> None:
        self._ensure_transaction()
        suppressed = self._suppressed
        for alert in output.alerts:
            if alert.id in suppressed:
                self.counters.suppressed += 1
                continue
            self._produce(
                self.names.alerts,
                key=alert.key.encode(),
                value=orjson.dumps(alert.event),
                headers=ALERT_HEADERS,
            )
            self.counters.alerts += 1
            self.metrics.count_alert(alert.event)
            _log_alert(alert.event)
        if output.dead_letters:
            keys = {
                (m.topic(), m.partition(), m.offset()): m.key()
                for m in messages
                if m.error() is None
            }
            for dead in output.dead_letters:
                _, _, _, topic, partition, offset = dead.record
                self._dead_letter(dead, keys.get((topic, partition, offset)))
            first = output.dead_letters[0]
            log.info(
                "dead letters=%d first_reason=%s topic=%s partition=%s offset=%s",
                len(output.dead_letters),
                first.error.reason,
                first.record[3],
                first.record[4],
                first.record[5],
            )

    def _dead_letter(self, dead: DeadLetter, key: bytes | None) -> None:
        # Cut to what the producer can send with the headers and key, or produce() would fail.
        room = max(0, min(self._max_bytes, self._message_room - len(key or b"")))
        identity, value, headers = deadletters.record(dead, room)
        if identity in self._suppressed:
            self.counters.suppressed += 1
            return
        self._ensure_transaction()
        self._produce(self.names.dead_letters, key=key, value=value, headers=headers)
        self.counters.dead_letters += 1

    def _produce(self, topic: str, **kwargs: Any) -> None:
        assert self._producer is not None
        while True:
            try:
                self._producer.produce(topic, on_delivery=self._delivered, **kwargs)
                return
            except BufferError:
                self._producer.poll(0.1)  # local queue full: let deliveries drain

    def _delivered(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self._delivery_errors.append(f"{message.topic()}: {error.str()}")
            return
        key = f"{message.topic()}/{message.partition()}"
        offset = message.offset() + 1
        if offset > self._positions.get(key, 0):
            self._positions[key] = offset

    # --- commit ------------------------------------------------------------------------------
    def _ensure_transaction(self) -> None:
        if self.exactly_once and not self._in_transaction:
            assert self._producer is not None
            self._producer.begin_transaction()
            self._in_transaction = True

    def _offsets(self) -> list[TopicPartition]:
        offsets = [
            TopicPartition(topic, task.partition, task.offsets[index])
            for task in self.tasks.values()
            for topic, index in self._streams.items()
            if task.offsets[index] > 0
        ]
        offsets.extend(
            TopicPartition(topic, p, offset) for (topic, p), offset in self._raw_offsets.items()
        )
        return offsets

    def _write_state(self) -> None:
        positions = dict(self._positions)
        for task in self.tasks.values():
            changes = task.monitor.take_changes()
            changes[RUNTIME_KEY] = {"positions": positions, "origins": task.origins}
            for key, value, headers in self.changelog.records(changes, tuple(task.offsets)):
                self._produce(
                    self.names.state,
                    key=key,
                    value=value,
                    partition=task.partition,
                    headers=headers,
                )

    def _commit(self) -> None:
        if self._uncommitted == 0 and not self._in_transaction:
            self._last_commit = time.monotonic()
            return
        if self._producer is None or self._consumer is None:
            return
        started = time.monotonic()
        try:
            self._ensure_transaction()
            self._write_state()
            offsets = self._offsets()
            if self.exactly_once:
                self._producer.send_offsets_to_transaction(
                    offsets, self._consumer.consumer_group_metadata(), 30
                )
                self._producer.commit_transaction(60)
                self._in_transaction = False
            else:
                remaining = self._producer.flush(60)
                if remaining or self._delivery_errors:
                    raise KafkaRuntimeError(
                        f"{remaining} records undelivered, errors: {'; '.join(self._delivery_errors[:3])}"
                    )
                if offsets:
                    self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            self._on_commit_error(exc.args[0])
            return
        except KafkaRuntimeError as exc:
            log.error("commit failed: %s; rewinding to the last commit", exc)
            self._renew_producer("records stayed undelivered")
            self._rewind()
            return
        self.counters.commits += 1
        self._uncommitted = 0
        self._alerts_at_commit = self.counters.alerts
        self._last_commit = time.monotonic()
        self.metrics.commit_seconds.observe(self._last_commit - started)
        log.debug("committed offsets=%d seconds=%.3f", len(offsets), self._last_commit - started)

    def _on_commit_error(self, error: KafkaError) -> None:
        if (
            error.code() == KafkaError._FENCED
            or error.code() == KafkaError.PRODUCER_FENCED
            or (error.fatal() and self.exactly_once)
        ):
            raise FencedError(
                f"this instance was fenced: another process uses transactional.id "
                f"'{self.kafka.group_id}-{instance_id(self.config)}' ({error.str()}). Give every "
                f"instance its own kafka.instance_id; this one stops."
            )
        if error.fatal():
            raise KafkaRuntimeError(f"fatal Kafka error: {error.str()}")
        log.warning("commit failed (%s); aborting and rewinding to the last commit", error.str())
        self._rewind()

    def _renew_producer(self, why: str) -> None:
        """Replace a producer that cannot deliver or abort any more, dropping what it holds.

        A producer whose broker forgot its producer id (a broker restarted without its data)
        retries its records forever, or cannot abort its transaction; a new producer (with the
        same transactional.id, re-initialised) gets a new id and works again. Its dropped records
        were never committed: the rewind that follows processes their input again.
        """
        producer = self._producer
        if producer is None:
            return
        producer.purge()
        producer.flush(0)
        self._producer = self._new_producer()
        log.warning("replaced the producer: %s", why)

    def _abort(self) -> None:
        if self._in_transaction and self._producer is not None:
            try:
                self._producer.abort_transaction(30)
            except KafkaException as exc:
                log.warning("abort failed: %s", exc.args[0].str())
                self._in_transaction = False
                self._renew_producer("its transaction could not be aborted")
        self._in_transaction = False

    def _rewind(self) -> None:
        """Abortable failure: drop uncommitted work, restore state, seek back to committed offsets."""
        self.metrics.commit_failures.inc()
        self._abort()
        self._delivery_errors.clear()
        self._uncommitted = 0
        partitions = sorted(self.tasks)
        self.tasks.clear()
        self._raw_offsets.clear()
        self._recover(partitions)
        assert self._consumer is not None
        committed = self._committed(partitions)
        for partition, offsets in committed.items():
            for topic, offset in zip(self._stream_topics, offsets, strict=True):
                self._seek(
                    TopicPartition(topic, partition, offset if offset > 0 else _OFFSET_BEGINNING)
                )
        if self._forward_to:
            raw = [TopicPartition(t, p) for t in self._forward_to for p in partitions]
            for tp in self._consumer.committed(raw, timeout=30):
                self._seek(
                    TopicPartition(
                        tp.topic, tp.partition, tp.offset if tp.offset >= 0 else _OFFSET_BEGINNING
                    )
                )

    def _seek(self, tp: TopicPartition) -> None:
        assert self._consumer is not None
        try:
            self._consumer.seek(tp)
        except KafkaException as exc:
            log.warning("seek %s/%d failed: %s", tp.topic, tp.partition, exc.args[0].str())

    # --- errors ------------------------------------------------------------------------------
    def _on_consume_error(self, error: KafkaError) -> None:
        if error.fatal():
            raise KafkaRuntimeError(f"fatal consumer error: {error.str()}")
        log.warning("consume error: %s", error.str())

    def _on_client_error(self, error: KafkaError) -> None:
        """librdkafka reconnects by itself; we report it, with a growing interval between lines."""
        if error.code() in (
            KafkaError._ALL_BROKERS_DOWN,
            KafkaError._TRANSPORT,
            KafkaError._RESOLVE,
        ):
            now = time.monotonic()
            if self._down_since is None:
                self._down_since = now
                self._next_down_report = now
            if now >= self._next_down_report:
                down = now - self._down_since
                log.warning(
                    "kafka unreachable bootstrap_servers=%s for %.0fs: %s; retrying",
                    self.kafka.bootstrap_servers,
                    down,
                    error.str(),
                )
                self._next_down_report = now + min(max(down, 1.0), 30.0)
        elif error.fatal():
            log.error("fatal kafka error: %s", error.str())
        else:
            log.warning("kafka error: %s", error.str())

    def _check_broker(self) -> None:
        since = self._down_since
        if since is None:
            return
        now = time.monotonic()
        if now >= self._next_probe:
            self._next_probe = now + 2.0
            try:
                assert self._consumer is not None
                self._consumer.list_topics(timeout=1)
                log.info("kafka reachable again after %.0fs", now - since)
                self._down_since = None
                return
            except KafkaException:
                pass
        if self._give_up(since):
            raise KafkaRuntimeError(
                f"kafka unreachable for more than {(self.kafka.broker_down_timeout or 0) / 1000:.0f}s "
                f"(kafka.on_broker_down=exit)"
            )

    # --- probes ------------------------------------------------------------------------------
    def liveness(self) -> tuple[bool, dict[str, Any]]:
        """Alive while the loop turns; a long restore is work, not a stall."""
        stalled = time.monotonic() - self.last_progress
        limit = (self.config.metrics.stall_timeout or 90_000) / 1000
        alive = not self.looping or self.restoring or stalled <= limit
        return alive, {
            "starting": not self.looping,
            "restoring": self.restoring,
            "seconds_since_progress": round(stalled, 3),
        }

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Ready once assigned partitions are restored and consumed, with the broker reachable."""
        broker_up = self._down_since is None
        ready = self.ready.is_set() and broker_up and not self.restoring
        return ready, {
            "partitions": sorted(self.tasks),
            "restoring": self.restoring,
            "broker_reachable": broker_up,
        }


def _log_alert(event: dict[str, Any]) -> None:
    data = event["data"]
    position = data.get("source_position") or {}
    log.info(
        "alert id=%s model=%s signal=%s/%s detector=%s severity=%s partition=%s offset=%s",
        event["id"],
        data["model"],
        data["signal_kind"],
        data["signal"],
        data["detector"],
        data["severity"],
        position.get("partition"),
        position.get("offset"),
    )
