"""`stream-monitor run`: consume predictions and labels, process each partition, publish alerts.

The confluent-kafka runtime around `processing.PartitionProcessor`: clients, checkpoints,
rebalances and probes. Outputs (alerts, dead letters) become visible at the next commit, at most
`kafka.commit_interval` after them (at once after an alert with `kafka.commit_on_alert`). State
goes to the changelog less often (`state.checkpoint_interval`), in the same commit; a restore
reads it back and re-processes the input between it and the committed offsets, without
publishing again what that input already published. In both guarantees, recovery does not trust
the broker alone: state records carry the input offsets they reflect, and a recovering instance
reads the outputs published since the last state checkpoint and never publishes those ids again.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from stream_monitor.collector import tune_for_streaming
from stream_monitor.config import Config
from stream_monitor.core import PYTHON_SOURCES
from stream_monitor.core.alerts import RESOLVED_TYPE
from stream_monitor.core.events import LABEL, PREDICTION, EventError, Record
from stream_monitor.core.monitor import DeadLetter, Output
from stream_monitor.core.state import StateCodec
from stream_monitor.kafka import FencedError, KafkaRuntimeError, StillUnavailable
from stream_monitor.kafka.changelog import Changelog, Prefetch
from stream_monitor.kafka.checkpoint import AtLeastOnce, Checkpoint, ExactlyOnce
from stream_monitor.kafka.reachability import BrokerReachability
from stream_monitor.kafka.recovery import Recovery
from stream_monitor.kafka.repartition import model_key, origin, seen_before
from stream_monitor.kafka.restore import PartitionLoader, resumes_at
from stream_monitor.kafka.retry import give_up_after, with_retry
from stream_monitor.kafka.settings import (
    consumer_settings,
    describe,
    instance_id,
    producer_settings,
)
from stream_monitor.kafka.topics import TopicNames
from stream_monitor.metrics import Metrics, MonitorTally
from stream_monitor.processing.changelog import (
    DEFAULT_MAX_RECORD_BYTES,
    InvalidRecords,
    RecordCheck,
)
from stream_monitor.processing.merge import LABELS, PREDICTIONS
from stream_monitor.processing.outputs import OutputCounters, OutputGuard, publications
from stream_monitor.processing.partition import PartitionProcessor

log = logging.getLogger(__name__)

_OFFSET_BEGINNING = -2

# A stream's buffer (records read, waiting for the other stream) past which its partition is
# paused until the merge catches up.
MAX_BUFFERED = 50_000
# How long a restored partition's seeks may be refused before its fetch is started anyway.
SEEK_PATIENCE_SECONDS = 1.0
# How often a quiet loop looks for a stream at its end that librdkafka did not report.
END_CHECK_SECONDS = 1.0
# How long records may wait unprocessed (or partitions unrestored) before the loop says why.
STALL_REPORT_SECONDS = 30.0
# How long a resumed stream may deliver nothing at all (neither a record nor its end) before
# its fetch is started again; then twice as long, and so on.
FETCH_PATIENCE_SECONDS = 5.0
# A NamedTuple built without its Python-level __new__: a per-message record at a plain tuple's
# cost (0.08 µs, not 0.19 µs).
_new_record = tuple.__new__


def _from(topic: str, partition: int, at: int) -> TopicPartition:
    """Where a stream is sought to: its next offset, or its beginning before any record."""
    return TopicPartition(topic, partition, at if at > 0 else _OFFSET_BEGINNING)


class ServiceCounters(OutputCounters):
    __slots__ = ("commits", "consumed", "duplicates_skipped", "forwarded", "processed")

    def __init__(self) -> None:
        super().__init__()
        self.consumed = 0
        self.processed = 0  # records applied to a Monitor
        self.duplicates_skipped = 0  # repartitioned records seen twice
        self.forwarded = 0
        self.commits = 0


class MonitorService:
    """The long-running consume/process/commit loop, one `PartitionProcessor` per partition."""

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
        self.settings = config.monitor_settings()
        self.names = TopicNames.from_config(config)
        self.exactly_once = self.kafka.processing_guarantee == "exactly_once"
        self.repartition = self.kafka.partitioning == "repartition"
        self.incremental = self.kafka.group_protocol == "consumer"
        self.stop = stop or threading.Event()
        self.codec = codec
        self.invalid_state = InvalidRecords(config.state.on_invalid_record)
        self.changelog = Changelog(self.names.state, RecordCheck(codec, self.invalid_state))
        self.counters = ServiceCounters()
        self.processors: dict[int, PartitionProcessor] = {}
        self.ready = threading.Event()  # set once assigned partitions are restored
        self.guard = OutputGuard()
        self._consumer_factory = consumer_factory
        self._producer_factory = producer_factory
        self._consumer: Consumer | None = None
        self._checkpoint: Checkpoint | None = None
        if self.repartition:
            self._streams = {
                self.names.repartition_predictions: PREDICTIONS,
                self.names.repartition_labels: LABELS,
            }
            self._forward_to = {
                self.names.predictions: self.names.repartition_predictions,
                self.names.labels: self.names.repartition_labels,
            }
        else:
            self._streams = {self.names.predictions: PREDICTIONS, self.names.labels: LABELS}
            self._forward_to = {}
        self._stream_topics = list(self._streams)
        self._kinds = {topic: (PREDICTION, LABEL)[index] for topic, index in self._streams.items()}
        self._output_topics = (self.names.alerts, self.names.dead_letters)
        self.loader = PartitionLoader(
            config,
            self.settings,
            codec,
            self.changelog,
            stream_topics=self._stream_topics,
            raw_topics=list(self._forward_to),
            output_topics=self._output_topics,
        )
        self._idle: dict[tuple[str, int], bool] = {}  # read to its end, for the merge
        self._paused: set[tuple[str, int]] = set()
        self._next_end_check = 0.0
        self._processed_at = time.monotonic()  # the last batch that processed a record
        self._stall_reported = 0.0
        self._next_stall_check = 0.0
        self._standby: dict[int, PartitionProcessor] = {}  # revoked, kept in case they return
        self._recoveries: list[Recovery] = []
        # restored, waiting for their seeks: partition -> (processor, seeks still to do)
        self._seeking: dict[int, tuple[PartitionProcessor, list[TopicPartition]]] = {}
        self._seek_since: dict[int, float] = {}  # when a partition's seeks were first refused
        # streams resumed after a restore that delivered nothing yet: (topic, partition) ->
        # (when to start their fetch again, the patience after that)
        self._silent: dict[tuple[str, int], tuple[float, float]] = {}
        self._raw_seeks: list[TopicPartition] = []
        self._raw_offsets: dict[tuple[str, int], int] = {}
        self._output_ends: dict[str, int] = {}  # "topic/partition" -> next offset after ours
        self._tallies: dict[int, MonitorTally] = {}
        self._consumed_by_topic: Counter[str] = Counter()
        self._failed: BaseException | None = None
        self._rejected_reported = 0
        self._lost = False
        self._state_due = False
        self._uncommitted = 0  # records processed since the last commit
        self._since_state = 0  # ... since the last state checkpoint
        self._alerts_at_commit = 0
        self._last_commit = self._last_state = time.monotonic()
        self.reachability = BrokerReachability(
            self.kafka.bootstrap_servers,
            give_up_after(self.kafka.on_broker_down, self.kafka.broker_down_timeout),
        )
        self._commit_failing_since: float | None = None
        self._max_bytes = config.events.max_bytes
        self._message_room = 1_000_000 - 65_536
        self.metrics = metrics or Metrics(
            max_models=config.metrics.max_models, max_signals=config.metrics.max_signals
        )
        self.looping = False  # False while starting: waiting for the broker is not a stall
        self.last_progress = time.monotonic()  # the loop's last turn, for /healthz
        self._next_state_report = 0.0
        self.metrics.watch(
            ready=lambda: float(self.readiness()[0]),
            partitions=lambda: float(len(self.processors)),
            progress=lambda: time.time() - (time.monotonic() - self.last_progress),
        )
        self._producer_config: dict[str, Any] = {}
        self._prefetch: Prefetch | None = None

    @property
    def restoring(self) -> bool:
        return bool(self._recoveries or self._seeking)

    # --- lifecycle ---------------------------------------------------------------------------
    def run(self) -> None:
        """Until `stop` is set: consume, process, commit. Then checkpoint and close cleanly.

        An unexpected error stops the loop without committing anything it did not finish: the
        open transaction is aborted (at least once: no offsets are committed), and it is raised.
        """
        tune_for_streaming()  # this loop is the process's work: stream_monitor/collector.py
        self._connect()
        consumer = self._consumer
        assert consumer is not None
        self._prefetch = self.loader.prefetch()
        topics = self._stream_topics + list(self._forward_to)
        consumer.subscribe(
            topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        log.info(
            "consuming topics=%s group=%s guarantee=%s partitioning=%s group_protocol=%s core=%s",
            ",".join(topics),
            self.kafka.group_id,
            self.kafka.processing_guarantee,
            self.kafka.partitioning,
            self.kafka.group_protocol,
            "python" if PYTHON_SOURCES else "compiled",
        )
        self.looping = True
        try:
            while not self.stop.is_set():
                self._turn()
            self._commit(state=True)
        except BaseException as exc:
            self._failed = exc
            raise
        finally:
            self._close()

    def _turn(self) -> None:
        assert self._consumer is not None
        timeout = (self.kafka.poll_timeout or 20) / 1000
        messages = self._consumer.consume(self.kafka.batch_size, timeout)
        started = time.perf_counter()
        touched = self._intake(messages) if messages else set()
        touched |= self._install_recoveries() if self._recoveries else self._finish_seeks()
        if not messages and self.processors and started >= self._next_end_check:
            self._next_end_check = started + END_CHECK_SECONDS
            touched |= self._ends_without_eof()
        if self._lost:
            self._lost = False
            checkpoint = self._require_checkpoint()
            checkpoint.abort()
            # A producer that lived through the outage may hold a stale coordinator (a later
            # send_offsets_to_transaction then never returns: kafka/watchdog.py): start afresh.
            checkpoint.renew("the group membership was lost")
        if touched:
            self._process(touched)
        if messages or touched:
            self.metrics.report_batch(self._consumed_by_topic, self.counters)
            self._consumed_by_topic.clear()
            self.metrics.batch_seconds.observe(time.perf_counter() - started)
        now = self.last_progress = time.monotonic()
        self._maybe_commit(now)
        if self._silent:
            self._restart_silent_fetches(now)
        if now >= self._next_stall_check:  # a walk over the partitions: not every turn
            self._next_stall_check = now + 1.0
            self._report_stall(now)
        self._require_checkpoint().poll()
        self.reachability.check(self._probe)
        if now >= self._next_state_report:
            self._next_state_report = now + (self.config.metrics.state_interval or 10_000) / 1000
            self.metrics.report_state(p.monitor for p in list(self.processors.values()))

    def _connect(self) -> None:
        producer_config = producer_settings(self.config, error_cb=self.reachability.on_client_error)
        statistics: dict[str, Any] = {}
        if self.config.metrics.statistics_interval:
            # librdkafka computes consumer lag per partition; it reaches us through poll().
            statistics = {
                "statistics.interval.ms": self.config.metrics.statistics_interval,
                "stats_cb": self.metrics.on_statistics,
            }
        consumer_config = consumer_settings(
            self.config,
            error_cb=self.reachability.on_client_error,
            **{"enable.partition.eof": True},  # the merge needs to know a stream is read
            **statistics,
        )
        log.info("producer settings: %s", describe(producer_config))
        log.info("consumer settings: %s", describe(consumer_config))
        self._producer_config = producer_config
        # A dead letter keeps as much of the original as the producer can send (with headroom for
        # key and headers): oversized input must not make producing its dead letter fail too.
        max_message = int(producer_config.get("message.max.bytes", 1_000_000))
        self._message_room = max_message - 65_536
        self.loader.max_record_bytes = min(DEFAULT_MAX_RECORD_BYTES, self._message_room)
        kind = ExactlyOnce if self.exactly_once else AtLeastOnce
        self._checkpoint = kind(self._new_producer, on_delivery=self._delivered)
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

    def _require_checkpoint(self) -> Checkpoint:
        assert self._checkpoint is not None
        return self._checkpoint

    def _close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            try:
                consumer.close()  # revokes: a clean stop checkpoints in _on_revoke
            except KafkaException as exc:
                log.warning("closing the consumer: %s", exc.args[0].str())
        if self._checkpoint is not None:
            self._checkpoint.close()  # aborts a transaction still open (after an error)
        self.ready.clear()

    # --- rebalance: never blocks for long ---------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self.incremental:
            consumer.incremental_assign(partitions)
        else:
            consumer.assign(partitions)
        numbers = sorted({tp.partition for tp in partitions if tp.topic in self._streams})
        log.info("assigned partitions=%s", numbers)
        # Not paused here: a partition paused before its fetch started may never start, and
        # then refuses every seek or never delivers (librdkafka #2190; both seen in CI). Each
        # stream is paused at its first delivery while its state is restored (`_intake`).
        if numbers:
            self._recover(numbers)
        elif not self._recoveries:
            self.ready.set()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        numbers = sorted({tp.partition for tp in partitions if tp.topic in self._streams})
        log.info("revoking partitions=%s", numbers)
        if self._failed is None:
            self._commit(state=True)  # bounded by the commit timeout
        for partition in numbers:
            processor = self.processors.pop(partition, None)
            if processor is not None and self._failed is None:
                processor.drop_buffered()  # if it comes back, it is read again from positions
                self._standby[partition] = processor
        self._forget(partitions)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.warning(
            "partitions lost=%s: dropping their uncommitted work",
            sorted({tp.partition for tp in partitions}),
        )
        for tp in partitions:
            if tp.topic in self._streams:
                self.processors.pop(tp.partition, None)
                self._standby.pop(tp.partition, None)
        self._forget(partitions)
        self._lost = True  # the loop aborts the open transaction (not here: it can block)

    def _forget(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            where = (tp.topic, tp.partition)
            self._idle.pop(where, None)
            self._paused.discard(where)
            self._raw_offsets.pop(where, None)
            self._silent.pop(where, None)
            self.guard.forget_partition(tp.topic, tp.partition)
        gone = {tp.partition for tp in partitions if tp.topic in self._streams}
        for recovery in self._recoveries:
            recovery.partitions = [p for p in recovery.partitions if p not in gone]
        for partition in gone:
            self._seeking.pop(partition, None)
            self._seek_since.pop(partition, None)
        self._raw_seeks = [
            tp
            for tp in self._raw_seeks
            if (tp.topic, tp.partition) not in {(t.topic, t.partition) for t in partitions}
        ]
        if not self.processors and not self._recoveries:
            self.ready.clear()

    # --- recovery (on its own thread: kafka/restore.py) -----------------------------------
    def _recover(self, partitions: list[int], *, rewind: bool = False) -> None:
        """Restore these partitions on a recovery thread (the loop installs them when done).

        `rewind`: also seek the raw input of repartition mode back to its committed offsets (at
        an assignment, the consumer starts from them by itself).
        """
        standby = {p: self._standby.pop(p) for p in partitions if p in self._standby}
        ahead, self._prefetch = self._prefetch, None  # good for the first assignment only
        load = functools.partial(self.loader.load, standby=standby, ahead=ahead, rewind=rewind)
        self._recoveries.append(Recovery(partitions, load, rewind=rewind).start())

    def _install_recoveries(self) -> set[int]:
        """Processors of finished recoveries: seek to their state, resume, and go."""
        for recovery in [r for r in self._recoveries if r.done()]:
            self._recoveries.remove(recovery)
            try:
                result = recovery.result()
            except StillUnavailable as exc:
                # A coordinator or leader still moving after the reader's own retries (a broker
                # died): the partitions stay paused and are restored again, from scratch.
                log.warning(
                    "restoring partitions=%s failed (%s): trying again", recovery.partitions, exc
                )
                self.metrics.restore_retries.inc()
                if recovery.partitions:
                    self._recover(recovery.partitions, rewind=recovery.rewind)
                continue
            self.metrics.restore_seconds.observe(result.seconds)
            self._state_due = self._state_due or result.fresh
            rejected = self.invalid_state.rejected
            if rejected > self._rejected_reported:
                self.metrics.state_rejected.inc(rejected - self._rejected_reported)
                self._rejected_reported = rejected
            consumer = self._consumer
            assert consumer is not None
            for name, offset in result.output_ends.items():
                self._output_ends[name] = max(self._output_ends.get(name, 0), offset)
            for seen in result.visible:
                self.guard.remember(seen.output_id, seen.topic, seen.partition, seen.offset)
            for partition in recovery.partitions:  # those still assigned
                processor = result.processors[partition]
                targets = [
                    _from(topic, partition, at)
                    for topic, at in zip(self._stream_topics, processor.positions, strict=True)
                ]
                self._seeking[partition] = (processor, targets)
            for (topic, partition), offset in result.raw_offsets.items():
                if partition in recovery.partitions:
                    self._raw_seeks.append(
                        TopicPartition(topic, partition, offset if offset >= 0 else -2)
                    )
        return self._finish_seeks()

    def _finish_seeks(self) -> set[int]:
        """Seek restored partitions to their state's positions, then hand them their processor.

        librdkafka refuses a seek (_STATE) until a newly assigned partition has started
        fetching; the seeks are tried again next turn. Only a partition whose seeks all took in
        one turn gets its processor and is resumed: reading it from the committed offsets
        instead would skip the input between the state and them.
        """
        touched: set[int] = set()
        self._raw_seeks = [tp for tp in self._raw_seeks if not self._seek(tp)]
        if not self._seeking:
            return touched
        consumer = self._consumer
        assert consumer is not None
        now = time.monotonic()
        for partition, (processor, targets) in list(self._seeking.items()):
            # Every stream, every turn, until all seeks take in the same turn: a stream whose
            # seek took earlier may have delivered since, records dropped for want of a processor.
            remaining = [tp for tp in targets if not self._seek(tp)]
            if remaining:
                self._start_stuck_fetches(partition, remaining, now)
                continue
            del self._seeking[partition]
            self._seek_since.pop(partition, None)
            self.processors[partition] = processor
            self._tallies.setdefault(partition, MonitorTally())
            resume = [TopicPartition(topic, partition) for topic in self._stream_topics]
            for tp in resume:
                self._idle[(tp.topic, partition)] = False
                self._paused.discard((tp.topic, partition))
                self._silent[(tp.topic, partition)] = (
                    now + FETCH_PATIENCE_SECONDS,
                    FETCH_PATIENCE_SECONDS,
                )
            consumer.resume(resume)
            log.debug(
                "resumed partition=%d at positions=%s replay_until=%s",
                partition,
                processor.positions,
                processor.replay_until,
            )
            touched.add(partition)
        if touched and not self._recoveries and not self._seeking:
            self.ready.set()
            self.metrics.report_state(p.monitor for p in self.processors.values())
        return touched

    def _start_stuck_fetches(
        self, partition: int, targets: list[TopicPartition], now: float
    ) -> None:
        """Resume streams whose seek librdkafka keeps refusing as not started.

        A partition paused right after its assignment may never start fetching (librdkafka
        #2190: the pause outdates the assignment's fetch start), and then refuses every seek:
        the partition would stay unprocessed and uncommitted for good (seen in the fault suite
        under load). Resumed, it starts; what it fetches before the seek takes is dropped, since
        the partition has no processor yet (`_intake`), and the seek then discards the rest.
        """
        since = self._seek_since.setdefault(partition, now)
        if now - since < SEEK_PATIENCE_SECONDS:
            return
        stuck = [TopicPartition(tp.topic, tp.partition) for tp in targets]
        stuck = [tp for tp in stuck if (tp.topic, tp.partition) in self._paused]
        if not stuck:
            return
        log.info(
            "partition=%d refused its seek for %.1fs (not started while paused): resuming it "
            "until the seek takes",
            partition,
            now - since,
        )
        assert self._consumer is not None
        self._consumer.resume(stuck)
        self._paused.difference_update((tp.topic, tp.partition) for tp in stuck)

    # --- processing --------------------------------------------------------------------------
    def _intake(self, messages: list[Message]) -> set[int]:
        """Hand records to their processors; note streams read to their end. -> partitions."""
        touched: set[int] = set()
        batches: dict[tuple[int, int], list[Record]] = {}
        processors, kinds, streams, idle = self.processors, self._kinds, self._streams, self._idle
        silent = self._silent
        consumed = 0
        dropped: dict[str, int] = {}
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    where = (message.topic(), message.partition())
                    if where[0] in streams:
                        idle[where] = True
                        touched.add(where[1])
                        if silent:
                            silent.pop(where, None)
                        if where[1] not in processors:
                            self._hold(where)
                else:
                    self._on_consume_error(error)
                continue
            consumed += 1
            topic = message.topic()
            kind = kinds.get(topic)
            if kind is None:
                self._forward(message)
                continue
            partition = message.partition()
            processor = processors.get(partition)
            if processor is None:
                # still restoring: it is read again from the restored position (and counted then)
                self._hold((topic, partition))
                consumed -= 1
                dropped[topic] = dropped.get(topic, 0) + 1
                continue
            if self.repartition and seen_before(
                processor.runtime.setdefault("origins", {}), dict(message.headers() or [])
            ):
                self.counters.duplicates_skipped += 1  # a forward that leaked from a crash
                continue
            idle[(topic, partition)] = False
            if silent:
                silent.pop((topic, partition), None)
            timestamp_type, timestamp = message.timestamp()
            value = message.value()
            record = _new_record(
                Record,
                (
                    kind,
                    b"" if value is None else value,
                    timestamp if timestamp_type else None,
                    topic,
                    partition,
                    message.offset(),
                    message.key(),
                ),
            )
            batch = batches.get((partition, streams[topic]))
            if batch is None:
                batch = batches[(partition, streams[topic])] = []
            batch.append(record)
        for (partition, stream), records in batches.items():
            processors[partition].add(stream, records)
            touched.add(partition)
        self.counters.consumed += consumed
        self.reachability.reached()
        self._consumed_by_topic.update(m.topic() for m in messages if not m.error())
        for topic, count in dropped.items():
            self._consumed_by_topic[topic] -= count
        return touched

    def _hold(self, where: tuple[str, int]) -> None:
        """Pause a stream whose partition is still being restored, now that its fetch started
        (it delivered): what it would fetch meanwhile is dropped and read again anyway."""
        if where in self._paused:
            return
        assert self._consumer is not None
        try:
            self._consumer.pause([TopicPartition(*where)])
        except KafkaException as exc:  # no longer assigned (a revoke under way)
            log.debug("cannot pause %s: %s", where, exc.args[0].str())
            return
        self._paused.add(where)

    def _ends_without_eof(self) -> set[int]:
        """Streams read to their end that no end-of-partition event marked idle: a merge that
        waits on one would hold the other stream's records, unprocessed and uncommitted,
        until new input arrives. Compared with the high watermark of the last fetch, on quiet
        turns only.
        (Seen once in the fault suite under load: every record consumed, ~300 never
        processed, for three minutes.)"""
        consumer = self._consumer
        assert consumer is not None
        idle, touched = self._idle, set()
        for partition, processor in self.processors.items():
            for topic, stream in self._streams.items():
                where = (topic, partition)
                if (
                    idle.get(where, False)
                    or where in self._paused
                    or processor.buffered(stream)
                    or not processor.buffered(1 - stream)
                ):
                    continue
                # librdkafka's value from its last fetch: never a broker request on the loop
                # (one would block it through an outage, when no fetch answers anyway).
                try:
                    _, high = consumer.get_watermark_offsets(
                        TopicPartition(topic, partition), cached=True
                    )
                except KafkaException:
                    continue
                if processor.positions[stream] >= high >= 0:
                    log.warning(
                        "%s/%d is read to its end (offset %d) without an end-of-partition "
                        "event: marked idle so that the other stream's records proceed",
                        topic,
                        partition,
                        high,
                    )
                    idle[where] = True
                    touched.add(partition)
        return touched

    def _process(self, partitions: set[int]) -> None:
        streams, idle, metrics = self._streams, self._idle, self.metrics
        topics = self._stream_topics
        for partition in partitions:
            processor = self.processors.get(partition)
            if processor is None:
                continue
            flags = (
                idle.get((topics[PREDICTIONS], partition), False),
                idle.get((topics[LABELS], partition), False),
            )
            before = processor.applied
            output = processor.process(flags)
            done = processor.applied - before
            if done:
                self._processed_at = time.monotonic()
            self.counters.processed += done
            self._uncommitted += done
            self._since_state += done
            self.counters.replayed += processor.replayed
            processor.replayed = 0
            if output.alerts or output.dead_letters:
                self._emit(output)
            metrics.report_monitor(processor.monitor, self._tallies[partition])
            self._flow_control(partition, processor, streams)

    def _restart_silent_fetches(self, now: float) -> None:
        """Seek again a resumed stream that delivered nothing, not even its end.

        A stream resumed after its restore yields records or an end-of-partition event within
        a fetch or two. One CI run saw a restored instance whose eight resumed streams yielded
        nothing for 90 s (librdkafka's pause right after an assignment, #2190, is the likely
        cause; it did not reproduce on demand). A seek starts the partition's fetch again from
        the processor's position; nothing is lost or read twice either way (`add` skips what
        the processor already holds)."""
        due = [where for where, (at, _) in self._silent.items() if now >= at]
        if not due:
            return
        consumer = self._consumer
        assert consumer is not None
        for topic, partition in due:
            processor = self.processors.get(partition)
            if processor is None or (topic, partition) in self._paused:
                continue  # paused by flow control: a silence that is ours
            _, patience = self._silent[(topic, partition)]
            self._silent[(topic, partition)] = (now + 2 * patience, 2 * patience)
            at = processor.positions[self._streams[topic]]
            log.warning(
                "%s/%d delivered nothing for %.0fs since it was resumed: seeking it again to "
                "offset %d",
                topic,
                partition,
                patience,
                at,
            )
            consumer.resume([TopicPartition(topic, partition)])
            self._seek(_from(topic, partition, at))

    def _report_stall(self, now: float) -> None:
        """Records waiting and none processed for a while: log where each partition stands.

        Every known way for a partition to wait for good has a safeguard that logs when it acts;
        this names the ones nobody foresaw (what is buffered, read to its end, paused, still
        being restored), every STALL_REPORT_SECONDS while it lasts."""
        buffered = {
            partition: (processor.buffered(PREDICTIONS), processor.buffered(LABELS))
            for partition, processor in self.processors.items()
            if processor.buffered(PREDICTIONS) or processor.buffered(LABELS)
        }
        if not (buffered or self._seeking or self._recoveries or self._silent):
            self._processed_at = now  # nothing waits: not a stall
            return
        if min(now - self._processed_at, now - self._stall_reported) < STALL_REPORT_SECONDS:
            return
        self._stall_reported = now
        log.warning(
            "no record processed for %.0fs: buffered=%s idle=%s paused=%s positions=%s "
            "seeking=%s restoring=%s silent=%s commits=%d",
            now - self._processed_at,
            buffered,
            sorted(where for where, idle in self._idle.items() if idle),
            sorted(self._paused),
            {p: list(processor.positions) for p, processor in self.processors.items()},
            sorted(self._seeking),
            [recovery.partitions for recovery in self._recoveries],
            sorted(self._silent),
            self.counters.commits,
        )

    def _flow_control(
        self, partition: int, processor: PartitionProcessor, streams: dict[str, int]
    ) -> None:
        """Pause a stream that is far ahead of the other one; resume it once the merge caught up."""
        consumer = self._consumer
        assert consumer is not None
        for topic, stream in streams.items():
            where = (topic, partition)
            buffered = processor.buffered(stream)
            if buffered > MAX_BUFFERED and where not in self._paused:
                consumer.pause([TopicPartition(topic, partition)])
                self._paused.add(where)
            elif buffered < MAX_BUFFERED // 2 and where in self._paused:
                consumer.resume([TopicPartition(topic, partition)])
                self._paused.discard(where)

    def _emit(self, output: Output) -> None:
        checkpoint = self._require_checkpoint()
        room = self._message_room
        for publication in publications(
            output,
            self.guard,
            self.counters,
            alerts_topic=self.names.alerts,
            dead_letters_topic=self.names.dead_letters,
            room=lambda key: max(0, min(self._max_bytes, room - len(key or b""))),
        ):
            checkpoint.produce(
                publication.topic,
                key=publication.key,
                value=publication.value,
                headers=publication.headers,
            )
            if publication.alert is not None:
                self.metrics.count_alert(publication.alert)
                _log_alert(publication.alert)
        if output.dead_letters:
            first = output.dead_letters[0]
            log.info(
                "dead letters=%d first_reason=%s topic=%s partition=%s offset=%s",
                len(output.dead_letters),
                first.error.reason,
                first.record.topic,
                first.record.partition,
                first.record.offset,
            )

    def _forward(self, message: Message) -> None:
        """Repartition mode: re-key a raw event by its model onto the internal topic."""
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        self._raw_offsets[(topic, partition)] = offset + 1
        self._uncommitted += 1
        value = message.value() or b""
        timestamp_type, timestamp = message.timestamp()
        try:
            key = model_key(value, self._max_bytes)
        except EventError as error:
            self.metrics.invalid.labels(error.reason).inc()  # never reaches a Monitor's counters
            kind = PREDICTION if topic == self.names.predictions else LABEL
            record = Record(
                kind,
                value,
                timestamp if timestamp_type else None,
                topic,
                partition,
                offset,
                message.key(),
            )
            output = Output()
            output.dead_letters.append(DeadLetter(record, error))
            self._emit(output)
            return
        self._require_checkpoint().produce(
            self._forward_to[topic],
            key=key,
            value=value,
            timestamp=timestamp if timestamp_type else 0,
            headers=[origin(topic, partition, offset)],
        )
        self.counters.forwarded += 1

    def _delivered(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            return  # the checkpoint counts it and fails the commit
        topic = message.topic()
        if topic not in self._output_topics:
            return
        name = f"{topic}/{message.partition()}"
        offset = int(message.offset() or 0) + 1
        if offset > self._output_ends.get(name, 0):
            self._output_ends[name] = offset

    # --- commit ------------------------------------------------------------------------------
    def _maybe_commit(self, now: float) -> None:
        checkpoint = self._require_checkpoint()
        state = self.config.state
        interval = (self.kafka.commit_interval or 100) / 1000
        if self.processors and (
            self._state_due
            or now - self._last_state >= (state.checkpoint_interval or 2000) / 1000
            or self._since_state >= state.checkpoint_max_events
        ):
            self._commit(state=True)
        elif checkpoint.pending and (
            now - self._last_commit >= interval
            or self._uncommitted >= self.kafka.commit_max_events
            or (
                self.exactly_once
                and self.kafka.commit_on_alert
                and self.counters.alerts != self._alerts_at_commit
            )
        ):
            self._commit(state=False)

    def _offsets(self) -> list[TopicPartition]:
        offsets = []
        for processor in self.processors.values():
            resume = resumes_at(processor)
            for topic, stream in self._streams.items():
                if resume[stream] > 0:
                    offsets.append(TopicPartition(topic, processor.partition, resume[stream]))
        offsets.extend(
            TopicPartition(topic, p, offset) for (topic, p), offset in self._raw_offsets.items()
        )
        return offsets

    def _commit(self, *, state: bool) -> None:
        """Outputs (and with `state`, every partition's state changes) with the offsets."""
        checkpoint = self._checkpoint
        consumer = self._consumer
        if checkpoint is None or consumer is None:
            return
        if state and not (self._since_state or checkpoint.pending or self._state_due):
            self._last_state = time.monotonic()  # nothing changed since the last one
            state = False
        started = time.monotonic()
        try:
            if state:
                for processor in self.processors.values():
                    processor.runtime["outputs"] = dict(self._output_ends)
                    for key, value, headers in processor.checkpoint():
                        checkpoint.produce(
                            self.names.state,
                            key=key,
                            value=value,
                            partition=processor.partition,
                            headers=headers,
                        )
            offsets = self._offsets()
            if not offsets and not checkpoint.pending:
                return
            checkpoint.commit(offsets, consumer)
        except KafkaException as exc:
            self._on_commit_error(exc.args[0])
            return
        except KafkaRuntimeError as exc:
            log.error("commit failed: %s; rewinding to the last commit", exc)
            checkpoint.renew("records stayed undelivered")
            self._rewind()
            return
        now = time.monotonic()
        self.counters.commits += 1
        self._commit_failing_since = None
        self._uncommitted = 0
        self._alerts_at_commit = self.counters.alerts
        self._last_commit = now
        if state:
            self._last_state = now
            self._since_state = 0
            self._state_due = False
            done = {
                (topic, processor.partition): processor.positions[stream]
                for processor in self.processors.values()
                for topic, stream in self._streams.items()
            }
            self.guard.forget_before({**done, **self._raw_offsets})
        self.metrics.commit_seconds.observe(now - started)
        log.debug("committed offsets=%d state=%s seconds=%.3f", len(offsets), state, now - started)

    def _on_commit_error(self, error: KafkaError) -> None:
        # produce() on a producer in a fatal state raises the generic _FATAL code without the
        # fatal flag; the cause went to error_cb. Either way that producer can do nothing more.
        fatal = error.fatal() or error.code() == KafkaError._FATAL
        if (
            error.code() == KafkaError._FENCED
            or error.code() == KafkaError.PRODUCER_FENCED
            or (fatal and self.exactly_once)
        ):
            raise FencedError(
                f"this instance was fenced: another process uses transactional.id "
                f"'{self.kafka.group_id}-{instance_id(self.config)}' ({error.str()}). Give every "
                f"instance its own kafka.instance_id; this one stops."
            )
        log.warning("commit failed (%s); aborting and rewinding to the last commit", error.str())
        if fatal:  # at least once: an idempotent producer the broker no longer knows
            self._require_checkpoint().renew(f"it failed fatally ({error.str()})")
        self._rewind()

    def _rewind(self) -> None:
        """Abortable failure: drop uncommitted work and restore every partition again.

        The partitions are paused while their state is read (on the recovery thread), then
        sought back to their restored positions.
        """
        self.metrics.commit_failures.inc()
        if self._commit_failing_since is None:
            self._commit_failing_since = time.monotonic()
        self._require_checkpoint().abort()
        self._uncommitted = 0
        partitions = sorted(
            set(self.processors) | {p for r in self._recoveries for p in r.partitions}
        )
        self.processors.clear()
        self._standby.clear()
        self._raw_offsets.clear()
        self._recoveries.clear()
        consumer = self._consumer
        assert consumer is not None
        if not partitions:
            return
        stream_partitions = [TopicPartition(t, p) for t in self._stream_topics for p in partitions]
        consumer.pause(stream_partitions)
        self._paused.update((tp.topic, tp.partition) for tp in stream_partitions)
        self.ready.clear()
        self._recover(partitions, rewind=True)

    def _seek(self, tp: TopicPartition) -> bool:
        """Whether the seek took; False when librdkafka says to try again later."""
        assert self._consumer is not None
        try:
            self._consumer.seek(tp)
            return True
        except KafkaException as exc:
            error = exc.args[0]
            if error.code() == KafkaError._STATE:
                return False  # not started yet (just assigned): the next turn tries again
            log.warning("seek %s/%d failed: %s", tp.topic, tp.partition, error.str())
            return False

    # --- errors ------------------------------------------------------------------------------
    def _on_consume_error(self, error: KafkaError) -> None:
        # A consumer in a fatal state reports the generic _FATAL code, without the fatal flag.
        if error.fatal() or error.code() == KafkaError._FATAL:
            hint = ""
            if "instance ID is still used" in error.str():
                hint = (
                    " (kafka.static_membership with group_protocol consumer: after a crash the "
                    "broker keeps the old member's group.instance.id until its session expires; "
                    "a restart after that succeeds)"
                )
            raise KafkaRuntimeError(f"fatal consumer error: {error.str()}{hint}")
        log.warning("consume error: %s", error.str())

    def _probe(self) -> None:
        """Whether the brokers answer again (raises KafkaException while they do not)."""
        assert self._consumer is not None
        self._consumer.list_topics(timeout=1)

    # --- probes ------------------------------------------------------------------------------
    def liveness(self) -> tuple[bool, dict[str, Any]]:
        """Alive while the loop turns and commits succeed; a long restore is work, not a stall.

        A loop that turns but whose every commit fails (and is rewound) makes no progress: past
        the stall limit it is reported dead too, so an orchestrator restarts it.
        """
        now = time.monotonic()
        stalled = now - self.last_progress
        limit = (self.config.metrics.stall_timeout or 90_000) / 1000
        failing = 0.0 if self._commit_failing_since is None else now - self._commit_failing_since
        alive = not self.looping or (stalled <= limit and failing <= limit)
        return alive, {
            "starting": not self.looping,
            "restoring": self.restoring,
            "seconds_since_progress": round(stalled, 3),
            "seconds_of_failing_commits": round(failing, 3),
        }

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Ready once assigned partitions are restored and consumed, with the broker reachable."""
        broker_up = self.reachability.up
        ready = self.ready.is_set() and broker_up and not self.restoring
        return ready, {
            "partitions": sorted(self.processors),
            "restoring": self.restoring,
            "broker_reachable": broker_up,
        }


def _log_alert(event: dict[str, Any]) -> None:
    data = event["data"]
    position = data.get("source_position") or {}
    if event.get("type") == RESOLVED_TYPE:
        log.info(
            "resolved id=%s resolves=%s model=%s signal=%s/%s detector=%s partition=%s offset=%s",
            event["id"],
            data["resolves"],
            data["model"],
            data["signal_kind"],
            data["signal"],
            data["detector"],
            position.get("partition"),
            position.get("offset"),
        )
        return
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
