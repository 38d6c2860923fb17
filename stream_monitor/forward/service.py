"""`stream-monitor forward`: the consume loop that hands each alert to every sink, at least once.

Offsets (`enable.auto.commit` and `enable.auto.offset.store` off): every `commit_interval`, per
partition, the group commits the lowest offset some sink has not taken yet (accepted, or given
up on and dead-lettered). So a crash re-delivers, and never loses, what was read after the last
commit. Each sink's own position goes into the commit's metadata (`offsets.py`): after a restart
a sink skips what it had already taken, and a healthy sink is not re-sent everything a failing
sink still owed (it is only told about those alerts, through `remember`, to rebuild its state).
Dead letters are flushed before the commit that covers them; one that cannot be written stops
the forwarder (exit 1) rather than commit past an alert nobody has.

Isolation, bounded: each sink has its own queue and thread (`SinkWorker`), so a failing sink
delays only its own deliveries, until it holds `max_pending` alerts. Then reading pauses, for
every sink (they share the consumer; memory stays bounded), until it has drained half of them,
which it does once its alerts pass `give_up_after` and go to the dead-letter topic
(docs/forwarding.md, "Failure isolation", has the numbers).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from stream_monitor.config import Config
from stream_monitor.core.events import format_time
from stream_monitor.forward import ForwardError
from stream_monitor.forward.alertmanager import AlertmanagerSink
from stream_monitor.forward.assembly import build_sinks, history_window
from stream_monitor.forward.clients import consumer_settings, producer_settings
from stream_monitor.forward.deadletters import ALL_SINKS, DeadLetters
from stream_monitor.forward.history import read_history
from stream_monitor.forward.metrics import ForwardMetrics
from stream_monitor.forward.offsets import GroupOffsets
from stream_monitor.forward.records import AlertRecord, from_message
from stream_monitor.forward.sinks import Sink, SinkError, SinkWorker
from stream_monitor.kafka.offsets import committed_offsets
from stream_monitor.kafka.settings import reader_settings
from stream_monitor.secrets import display_url

log = logging.getLogger(__name__)


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
                give_up_after=self.forward.give_up_after / 1000,
                backoff=self.forward.retry_backoff / 1000,
                backoff_max=self.forward.retry_backoff_max / 1000,
            )
            for sink in self.sinks
        ]
        for worker in self.workers:
            self.metrics.add_sink(worker.name)
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
        self._dead_letters: DeadLetters | None = None
        self._offsets = GroupOffsets(self.topic)
        self._assigned: set[int] = set()
        self._to_rebuild: set[int] = set()
        # Partitions the group reads for the first time -> only alerts published after this
        # time (ms) are delivered (forward.first_start_max_age); older ones are only remembered.
        self._first_start: dict[int, int] = {}
        self._paused = False
        self._handled = True  # every record consume() returned is with the sinks
        self.joined = False
        self.looping = False
        self.last_progress = time.monotonic()
        self.metrics.partitions.set_function(lambda: float(len(self._assigned)))
        self.metrics.paused.set_function(lambda: float(self._paused))
        self.metrics.last_progress.set_function(
            lambda: time.time() - (time.monotonic() - self.last_progress)
        )

    # --- lifecycle -------------------------------------------------------------------------
    def run(self) -> None:
        """Until `stop` is set; then finish in-flight attempts, commit and close."""
        self._consumer = consumer = self._consumer_factory(consumer_settings(self.config))
        producer = self._producer_factory(producer_settings(self.config))
        self._dead_letters = DeadLetters(producer, self.forward.dead_letter_topic)
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
        interval = self.forward.commit_interval / 1000
        # consume() returns early only with a full batch: its timeout is what a lone alert waits
        # (100 ms gave a 60 ms median latency), so use the short kafka.poll_timeout (20 ms).
        timeout = (self.config.kafka.poll_timeout or 20) / 1000
        next_commit = time.monotonic() + interval
        self.looping = True
        failed = True
        try:
            while not self.stop.is_set():
                self._check_workers()
                self._backpressure()
                self._handled = False  # until every record consume() returns is with the sinks
                messages = consumer.consume(500, timeout)
                if self._to_rebuild:
                    self._rebuild()
                for message in messages:
                    self._handle(message)
                self._handled = True
                producer.poll(0)
                now = self.last_progress = time.monotonic()
                if now >= next_commit:
                    next_commit = now + interval
                    self._commit()
            failed = False
        finally:
            self._close(consumer, producer, failed)

    def _close(self, consumer: Consumer, producer: Producer, failed: bool) -> None:
        """Finish the sinks' attempts, commit what they took, close the clients."""
        self.looping = False
        for worker in self.workers:
            worker.stop()
        try:
            self._commit()
        except ForwardError as exc:
            if not failed:
                raise
            log.error("last commit skipped: %s", exc)  # the error that stopped the loop follows
        finally:
            consumer.close()  # its revoke commits nothing either when dead letters failed
            producer.flush(10)

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        """The loop turned within `metrics.stall_timeout` and every sink's worker runs."""
        stalled = time.monotonic() - self.last_progress
        limit = (self.config.metrics.stall_timeout or 90_000) / 1000
        dead = [worker.name for worker in self.workers if not worker.alive]
        ok = not self.looping or (stalled < limit and not dead)
        return ok, {"loop_seconds_since_progress": round(stalled, 3), "dead_sinks": dead}

    def _check_workers(self) -> None:
        for worker in self.workers:
            if worker.failure is not None:
                raise ForwardError(f"sink={worker.name}: its worker stopped: {worker.failure}")

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
            since = self._first_start.get(record.partition)
            old = since is not None and (record.timestamp_ms or since) < since
            for worker in self.workers:
                taken = old or self._offsets.taken_before_restart(
                    worker.name, record.partition, record.offset
                )
                worker.offer(record, deliver=not taken)
        self._offsets.read(record.partition, record.offset)

    def _backpressure(self) -> None:
        """Pause reading (for every sink: they share the consumer) while one sink holds
        `max_pending` alerts, until it holds half as many."""
        assert self._consumer is not None
        fullest = max(self.workers, key=lambda worker: worker.backlog)
        held = fullest.backlog
        if not self._paused and held >= self.forward.max_pending:
            self._consumer.pause(self._consumer.assignment())
            self._paused = True
            log.warning(
                "sink=%s holds %d alerts (forward.max_pending): reading paused for every sink",
                fullest.name,
                held,
            )
        elif self._paused and held <= self.forward.max_pending // 2:
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
        self._offsets.forget(partitions)
        for partition in partitions:
            self._first_start.pop(partition, None)

    def _rebuild(self) -> None:
        """Per newly assigned partition: each sink's committed position (commit metadata), and
        the sink state the alerts before it imply (Alertmanager's active set)."""
        assert self._consumer is not None
        partitions = sorted(self._to_rebuild)
        self._to_rebuild.clear()
        committed = committed_offsets(
            self._consumer, [TopicPartition(self.topic, p) for p in partitions]
        )
        upto = self._offsets.restore(committed)
        max_age = self.forward.first_start_max_age
        fresh = [p for p in partitions if p not in upto]
        if fresh and max_age is not None:
            since = self._wall_ms() - max_age
            self._first_start.update(dict.fromkeys(fresh, since))
            log.info(
                "first read of partitions=%s: alerts published before %s are not sent "
                "(forward.first_start_max_age)",
                ",".join(map(str, fresh)),
                format_time(since),
            )
        if self._window is None or not upto:
            return
        since = self._wall_ms() - int(self._window * 1000)
        reader = self._consumer_factory(
            reader_settings(
                self.config, "forward-rebuild", **{"group.id": f"{self.forward.group_id}-rebuild"}
            )
        )
        try:
            history = read_history(reader, self.topic, upto, since, self.stop)
        finally:
            reader.close()
        for record in history:
            for worker in self.workers:
                worker.offer(record, deliver=False)
        log.info(
            "rebuilt sink state from alerts=%d partitions=%s",
            len(history),
            ",".join(map(str, upto)),
        )

    # --- committing and dead letters -------------------------------------------------------
    def _commit(self, only: set[int] | None = None) -> None:
        """Commit, per partition, what every sink has taken. Also called from the revoke
        callback, inside consume(): then only what was handed to the sinks counts, never the
        consumer's position (it may already be past records of the batch being read)."""
        consumer, dead_letters = self._consumer, self._dead_letters
        if consumer is None or dead_letters is None:
            return
        dead_letters.check()  # a dead letter was lost: no commit, ever (the process stops)
        if self._handled:
            self._advance_past_markers(consumer)
        chosen = self._assigned if only is None else only & self._assigned
        offsets = self._offsets.to_commit(chosen, self.workers)
        if not offsets:
            return
        dead_letters.settle()  # what these offsets cover must be on the topic first
        try:
            consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            self.metrics.commit_failures.inc()
            log.warning("commit failed: %s; trying again in the next interval", exc.args[0].str())
            return
        self.metrics.commits.inc()
        self._offsets.committed(offsets)

    def _advance_past_markers(self, consumer: Consumer) -> None:
        """Called once every record consume() returned is with the sinks: the consumer's
        position may then be committed; on a transactional alerts topic it also steps over the
        commit markers after the last alert, which would otherwise show as lag forever."""
        partitions = [TopicPartition(self.topic, p) for p in self._offsets.read_upto]
        if not partitions:
            return
        try:
            positions = consumer.position(partitions)
        except KafkaException:
            return
        self._offsets.advance(positions)

    def _dead_letter(self, record: AlertRecord, sink: str, error: SinkError) -> None:
        """Called from sink workers (and the loop, for records that are not alerts)."""
        assert self._dead_letters is not None
        self._dead_letters.write(record, sink, error)

    def _describe_sinks(self) -> list[str]:
        shown = []
        forward = self.forward
        if forward.alertmanager is not None:
            shown.append(f"alertmanager({display_url(forward.alertmanager.url)})")
        for name, hook in zip(forward.sink_names()[len(shown) :], forward.webhooks, strict=False):
            shown.append(f"{name}({display_url(hook.url)} {hook.format}/{hook.mode})")
        return shown or [sink.name for sink in self.sinks]
