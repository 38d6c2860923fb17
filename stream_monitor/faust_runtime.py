"""The Faust runtime: the same `Monitor` core as `stream-monitor run`, as an agent of a Faust app.

One agent reads predictions and labels (co-partitioned: Faust's assignor gives partition p of both
topics to the same worker) in batches from `Stream.noack_take` and hands them to the same
`processing.PartitionProcessor` as the confluent-kafka runtime, which merges the two streams in
the same deterministic order. It publishes alerts, dead letters and the changed state through the
app's producer. Only once every one of those records is acknowledged by the broker are the
events that were applied acked (events still waiting in the merge are not), so Faust's periodic
offset commit never runs ahead of the state and the outputs: at least once.

State goes to the project's own changelog (not a Faust table: tables cannot be written from a
batch), in the same signed, data-only format as the confluent-kafka runtime, each record tagged
with the input offsets it reflects. A partition's state is restored on its first batch after
assignment, accepting only records whose tag is not beyond the group's committed offsets.
See docs/faust.md for the guarantees and the weak spots.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from collections import deque
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import Any

import faust
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from faust.types import TP

from stream_monitor.config import Config, load_config
from stream_monitor.core.events import LABEL, PREDICTION
from stream_monitor.core.monitor import Monitor, Output, Record
from stream_monitor.core.state import StateCodec
from stream_monitor.errors import ConfigError
from stream_monitor.kafka.changelog import Changelog, StateRead
from stream_monitor.kafka.offsets import committed_offsets
from stream_monitor.kafka.service import ServiceCounters
from stream_monitor.kafka.settings import admin_settings, reader_settings
from stream_monitor.kafka.topics import TopicNames, ensure_topics
from stream_monitor.processing.changelog import InvalidRecords, PartitionWriter, RecordCheck, Tag
from stream_monitor.processing.merge import LABELS, PREDICTIONS
from stream_monitor.processing.outputs import OutputGuard, publications
from stream_monitor.processing.partition import PartitionProcessor
from stream_monitor.statekey import resolve_signing_key

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 2000
DEFAULT_BATCH_WITHIN = 0.2  # seconds: how long a partial batch waits for more events
CONFIG_VARIABLE = "STREAM_MONITOR_CONFIG"


def create_app(config: Config, **settings: Any) -> faust.App:
    """A Faust app configured from the monitor's config; `settings` override any Faust setting.

    Its id (and so its consumer group) is `kafka.group_id`, the group the confluent-kafka runtime
    uses too. The web server is off: health and metrics come from the monitor, not from Faust.
    """
    kafka = config.kafka
    if kafka.client:
        log.warning(
            "kafka.client holds librdkafka settings, which Faust (aiokafka) does not read; "
            "configure security through Faust settings (broker_credentials) instead"
        )
    session = (kafka.session_timeout or 10_000) / 1000
    options: dict[str, Any] = {
        "broker": [f"kafka://{server.strip()}" for server in kafka.bootstrap_servers.split(",")],
        "web_enabled": False,
        "datadir": str(Path(tempfile.gettempdir()) / f"stream-monitor-faust-{kafka.group_id}"),
        "processing_guarantee": "at_least_once",
        "consumer_auto_offset_reset": "earliest",
        "topic_partitions": kafka.partitions,
        "broker_session_timeout": session,
        "broker_heartbeat_interval": max(0.1, session / 5),
        "broker_commit_interval": (kafka.commit_interval or 100) / 1000,
        # On stop, commit what is acked rather than wait for events held in a batch: they are
        # not acked until their output is durable, and a restart replays them anyway.
        "stream_wait_empty": False,
        "stream_buffer_maxsize": max(4096, 2 * DEFAULT_BATCH_SIZE),
    }
    options.update(settings)
    return faust.App(kafka.group_id, **options)


class FaustMonitor:
    """The monitor's agent and its per-partition processors inside one Faust app.

    Build it with `install()`. Its counters (`counters`) are the confluent-kafka runtime's.
    """

    def __init__(
        self,
        app: faust.App,
        config: Config,
        *,
        codec: StateCodec,
        batch_size: int = DEFAULT_BATCH_SIZE,
        batch_within: float = DEFAULT_BATCH_WITHIN,
    ) -> None:
        if config.kafka.partitioning != "by_model":
            raise ConfigError(
                "kafka.partitioning=repartition is not supported by the Faust runtime: key the "
                "input by model, or use the confluent-kafka runtime"
            )
        if config.kafka.processing_guarantee == "exactly_once":
            log.warning(
                "kafka.processing_guarantee=exactly_once is not available with Faust: running "
                "at least once (alert ids are deterministic, consumers can drop duplicates)"
            )
        self.app = app
        self.config = config
        self.settings = config.monitor_settings()
        self.names = TopicNames.from_config(config)
        self.codec = codec
        self.changelog = Changelog(
            self.names.state, RecordCheck(codec, InvalidRecords(config.state.on_invalid_record))
        )
        self.counters = ServiceCounters()
        self.guard = OutputGuard()  # at least once, every batch checkpoints: nothing to guard
        self.processors: dict[int, PartitionProcessor] = {}
        # (topic, partition) -> events read but not yet applied (not acked: Faust does not commit
        # past them), in offset order
        self._held: dict[tuple[str, int], deque[faust.EventT[bytes]]] = {}
        self.batch_size = batch_size
        self.batch_within = batch_within
        self._streams = {self.names.predictions: PREDICTIONS, self.names.labels: LABELS}
        self._kinds = {self.names.predictions: PREDICTION, self.names.labels: LABEL}
        self._max_bytes = config.events.max_bytes
        # aiokafka's default max_request_size, less room for the key and headers
        self._message_room = int(getattr(app.conf, "producer_max_request_size", 1_048_576)) - 65_536
        self.inputs = app.topic(
            self.names.predictions,
            self.names.labels,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
        )
        self.agent = app.agent(self.inputs, name=f"{config.kafka.group_id}-stream-monitor")(
            self._consume
        )
        app.on_partitions_revoked.connect(self._on_revoked, weak=False)

    async def _consume(self, stream: faust.StreamT[bytes]) -> None:
        async for events in stream.noack_take(self.batch_size, within=self.batch_within):
            try:
                done = await self.process(events)
            except Exception as exc:
                # Never ack this batch. A restarted agent would go on past it while Faust's commits
                # stay stuck below it: stop the worker instead, so a restart replays from the
                # last commit (Faust exits 1).
                log.error("batch failed, stopping the worker: %r", exc)
                await self.app.crash(exc)
                return
            for event in done:
                await stream.ack(event)

    # --- processing --------------------------------------------------------------------------
    async def process(self, events: Sequence[faust.EventT[bytes]]) -> list[faust.EventT[bytes]]:
        """Run one batch through the processors; return the events applied, once their outputs
        and state are on the broker (ack exactly those)."""
        assignment = self.app.consumer.assignment()
        missing = sorted(
            {
                e.message.partition
                for e in events
                if e.message.tp in assignment and e.message.partition not in self.processors
            }
        )
        if missing:
            await self._restore(missing)
        batches: dict[tuple[int, int], list[Record]] = {}
        already: list[faust.EventT[bytes]] = []  # re-delivered, already in the state: ack them
        for event in events:
            message = event.message
            processor = self.processors.get(message.partition)
            if processor is None or message.tp not in assignment:
                continue  # revoked while it waited in the buffer: its new owner processes it
            topic, offset = message.topic, message.offset
            stream = self._streams[topic]
            if offset < processor.positions[stream]:
                already.append(event)  # re-delivered after a rebalance: already in this state
                continue
            timestamp = message.timestamp
            record = Record(
                self._kinds[topic],
                message.value or b"",
                round(timestamp * 1000) if timestamp and timestamp > 0 else None,
                topic,
                message.partition,
                offset,
                message.key,
            )
            batches.setdefault((message.partition, stream), []).append(record)
            self._held.setdefault((topic, message.partition), deque()).append(event)
        self.counters.consumed += len(events)
        for (partition, stream), records in batches.items():
            self.processors[partition].add(stream, records)
        pending: list[Awaitable[Any]] = []
        touched = {partition for partition, _ in batches}
        for partition in sorted(touched):
            processor = self.processors[partition]
            before = processor.applied
            output = processor.process(self._idle(partition, processor))
            self.counters.processed += processor.applied - before
            if output.alerts or output.dead_letters:
                pending.extend(await self._emit(output))
            pending.extend(await self._write_state(processor))
        if pending:
            await asyncio.gather(*pending)  # raises if the broker refused any record
        self.counters.commits += 1
        return already + self._applied(touched)

    def _idle(self, partition: int, processor: PartitionProcessor) -> tuple[bool, bool]:
        """Whether each stream is read to its end: nothing held back, and at the high watermark."""
        idle = [False, False]
        consumer = self.app.consumer
        for topic, stream in self._streams.items():
            tp = TP(topic, partition)
            held = self._held.get((topic, partition))
            last = held[-1].message.offset if held else processor.positions[stream] - 1
            try:
                highwater = consumer.highwater(tp)
            except (KeyError, AssertionError, AttributeError):
                highwater = None
            idle[stream] = highwater is not None and last + 1 >= highwater
        return idle[0], idle[1]

    def _applied(self, partitions: set[int]) -> list[faust.EventT[bytes]]:
        """Events of these partitions now applied: released from `_held` for acking."""
        done = []
        for partition in partitions:
            processor = self.processors.get(partition)
            if processor is None:
                continue
            for topic, stream in self._streams.items():
                held = self._held.get((topic, partition))
                while held and held[0].message.offset < processor.positions[stream]:
                    done.append(held.popleft())
        return done

    async def _emit(self, output: Output) -> list[Awaitable[Any]]:
        send = self.app.producer.send
        pending = []
        room = self._message_room
        for publication in publications(
            output,
            self.guard,
            self.counters,
            alerts_topic=self.names.alerts,
            dead_letters_topic=self.names.dead_letters,
            room=lambda key: max(0, min(self._max_bytes, room - len(key or b""))),
        ):
            pending.append(
                await send(
                    publication.topic,
                    publication.key,
                    publication.value,
                    None,
                    None,
                    publication.headers,
                )
            )
        return pending

    async def _write_state(self, processor: PartitionProcessor) -> list[Awaitable[Any]]:
        send = self.app.producer.send
        return [
            await send(self.names.state, key, value, processor.partition, None, headers)
            for key, value, headers in processor.checkpoint()
        ]

    # --- state -------------------------------------------------------------------------------
    async def _restore(self, partitions: list[int]) -> None:
        loop = asyncio.get_running_loop()
        committed, state = await loop.run_in_executor(None, self._read_state, partitions)
        for partition in partitions:
            self.processors[partition] = self._build(partition, state, committed[partition])
        keys = sum(len(self.processors[p].monitor.keys) for p in partitions)
        log.info("recovered partitions=%s keys=%d", partitions, keys)

    def _build(self, partition: int, state: StateRead, committed: Tag) -> PartitionProcessor:
        """Every batch checkpoints, and events are acked only after: the state accepted is
        the one of the committed offsets, so processing goes on from there."""
        tag = state.state_tag(partition)
        monitor = Monitor(self.settings, source=self.config.kafka.group_id)
        if tag is None:
            writer = PartitionWriter(self.codec, partition)
            return PartitionProcessor(
                partition, monitor, writer, positions=(committed[0], committed[1])
            )
        if tag != committed:
            log.warning(
                "partition %d: state reflects offsets %s, the group committed %s",
                partition,
                tag,
                committed,
            )
        return PartitionProcessor.restored(
            partition, monitor, state.restored(partition), (committed[0], committed[1])
        )

    def _read_state(self, partitions: list[int]) -> tuple[dict[int, Tag], StateRead]:
        """Blocking (run in an executor): the group's committed offsets, then the state they fix."""
        consumer = Consumer(
            reader_settings(self.config, "offsets", **{"group.id": self.app.conf.id})
        )
        try:
            wanted = [TopicPartition(t, p) for p in partitions for t in self._streams]
            offsets = {
                (tp.topic, tp.partition): max(tp.offset, 0)
                for tp in committed_offsets(consumer, wanted)
            }
        finally:
            consumer.close()
        committed = {p: tuple(offsets[(t, p)] for t in self._streams) for p in partitions}
        state = self.changelog.read(
            reader_settings(self.config, "restore"), StateRead(committed, self.changelog.check)
        )
        return committed, state

    async def _on_revoked(self, app: faust.App, revoked: set[Any], **kwargs: Any) -> None:
        """Forget revoked partitions: whoever gets them next restores them from the changelog."""
        for tp in revoked:
            if tp.topic in self._streams:
                self.processors.pop(tp.partition, None)
                self._held.pop((tp.topic, tp.partition), None)


def install(
    app: faust.App,
    config: Config,
    *,
    codec: StateCodec,
    create_topics: bool = True,
    batch_size: int = DEFAULT_BATCH_SIZE,
    batch_within: float = DEFAULT_BATCH_WITHIN,
) -> FaustMonitor:
    """Add the monitor's agent to an existing Faust app (call before the worker starts).

    The agent joins the app's consumer group (`app.conf.id`); the monitor's topic names, state
    changelog and alert `source` come from `config`. With `create_topics`, missing topics are
    created (with the changelog compacted) when the worker starts. See docs/faust.md.
    """
    monitor = FaustMonitor(
        app, config, codec=codec, batch_size=batch_size, batch_within=batch_within
    )
    if create_topics:

        def on_worker_init(sender: faust.App, **kwargs: Any) -> None:
            ensure_topics(AdminClient(admin_settings(config)), config)

        app.on_worker_init.connect(on_worker_init, weak=False)
    return monitor


def run_worker(config: Config, *, codec: StateCodec, loglevel: str = "INFO") -> FaustMonitor:
    """Run a Faust worker with the monitor's agent until SIGTERM/SIGINT (Faust handles both).

    Topics must exist already (the CLI creates them). Logging stays as the caller configured it.
    """
    app = create_app(config)
    monitor = install(app, config, codec=codec, create_topics=False)
    work(app, loglevel=loglevel)
    return monitor


def work(app: faust.App, *, loglevel: str = "INFO") -> None:
    """Run a worker for `app` in this (main) thread until SIGTERM/SIGINT; a clean stop returns."""
    worker = faust.Worker(
        app, loglevel=loglevel, override_logging=False, redirect_stdouts=False, quiet=True
    )
    worker.spinner = None  # a terminal spinner would write control codes into the logs
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        if exc.code not in (None, 0):
            raise


def app_from_environment() -> faust.App:
    """The standalone app behind `faust -A stream_monitor.faust_app worker`.

    Config comes from the YAML file named by STREAM_MONITOR_CONFIG (defaults when unset), with
    the usual STREAM_MONITOR__* environment overrides.
    """
    config = load_config(os.environ.get(CONFIG_VARIABLE))
    app = create_app(config)
    install(app, config, codec=StateCodec(resolve_signing_key(config)))
    return app
