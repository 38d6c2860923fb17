"""What a recovery reads back for a set of partitions: committed offsets, state, visible outputs.

`PartitionLoader.load` runs on a recovery thread (`kafka.recovery.Recovery`), never inside a
rebalance callback. For each partition it builds a `PartitionProcessor` from the last state
checkpoint within the group's committed offsets (or reuses the one this instance had, when nobody
processed the partition meanwhile), and reads the alerts and dead letters published since that
checkpoint, so that processing the input between the checkpoint and the committed offsets again
publishes none of them twice.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from stream_monitor.config import Config
from stream_monitor.core.monitor import Monitor
from stream_monitor.core.settings import MonitorSettings
from stream_monitor.core.state import StateCodec
from stream_monitor.kafka import KafkaRuntimeError
from stream_monitor.kafka.changelog import Changelog, Prefetch, StateRead, read_to_end
from stream_monitor.kafka.offsets import committed_offsets, end_offset
from stream_monitor.kafka.recovery import Recovered, Visible, paused_gc
from stream_monitor.kafka.settings import reader_settings
from stream_monitor.processing import deadletters
from stream_monitor.processing.changelog import DEFAULT_MAX_RECORD_BYTES, PartitionWriter, Tag
from stream_monitor.processing.partition import PartitionProcessor

log = logging.getLogger(__name__)


class PartitionLoader:
    """Builds the processors of newly assigned partitions, off the consume loop.

    `stream_topics` are the two input topics the processors read (predictions first), `raw_topics`
    the topics repartition mode forwards from (their dead letters count as outputs too), and
    `output_topics` the alerts and dead-letter topics (alerts first).
    """

    def __init__(
        self,
        config: Config,
        settings: MonitorSettings,
        codec: StateCodec,
        changelog: Changelog,
        *,
        stream_topics: list[str],
        raw_topics: list[str],
        output_topics: tuple[str, str],
    ) -> None:
        self.config = config
        self.settings = settings
        self.codec = codec
        self.changelog = changelog
        self.stream_topics = stream_topics
        self.raw_topics = raw_topics
        self.output_topics = output_topics
        # What one state record may hold: set from the producer's message.max.bytes at connect.
        self.max_record_bytes = DEFAULT_MAX_RECORD_BYTES

    def new_monitor(self) -> Monitor:
        return Monitor(self.settings, source=self.config.kafka.group_id)

    def offsets_reader(self) -> Consumer:
        """A consumer of the group that never joins it: reads committed offsets off the loop."""
        return Consumer(
            reader_settings(self.config, "offsets", **{"group.id": self.config.kafka.group_id})
        )

    def committed(self, reader: Consumer, partitions: list[int]) -> dict[int, Tag]:
        """Per partition, the group's committed offsets of both input topics."""
        topics = self.stream_topics
        wanted = [TopicPartition(topic, p) for p in partitions for topic in topics]
        offsets = {
            (tp.topic, tp.partition): max(tp.offset, 0) for tp in committed_offsets(reader, wanted)
        }
        return {p: tuple(offsets[(topic, p)] for topic in topics) for p in partitions}

    # --- before the group join ---------------------------------------------------------------
    def prefetch(self) -> Prefetch | None:
        """Start restoring every partition's state before the group join (see `Prefetch`)."""
        if not self.config.kafka.prefetch_state:
            return None
        state_topic = self.changelog.topic
        reader = self.offsets_reader()
        try:
            metadata = reader.list_topics(state_topic, timeout=10).topics.get(state_topic)
            if metadata is None or metadata.error or not metadata.partitions:
                return None
            limits = self.committed(reader, sorted(metadata.partitions))
        except (KafkaException, KafkaRuntimeError) as exc:
            log.info("no state prefetch: %s", exc)
            return None
        finally:
            reader.close()
        settings = reader_settings(self.config, "restore")
        return Prefetch(self.changelog, settings, limits, self._prepare_monitor).start()

    def _prepare_monitor(self, partition: int, state: StateRead) -> Monitor:
        monitor = self.new_monitor()
        with paused_gc():
            for changes in state.restored(partition).changes:
                monitor.restore(changes)
        return monitor

    # --- at assignment -----------------------------------------------------------------------
    def load(
        self,
        partitions: list[int],
        *,
        standby: dict[int, PartitionProcessor],
        ahead: Prefetch | None,
        rewind: bool = False,
    ) -> Recovered:
        """Committed offsets, state, processors and visible outputs of these partitions.

        `standby`: processors this instance had for some of them (revoked, kept in case they
        came back). `ahead`: a prefetch to continue. `rewind`: also read the committed offsets
        of repartition mode's raw input, to seek back to them (at an assignment, the consumer
        starts from them by itself).
        """
        started = time.monotonic()
        reader = self.offsets_reader()
        try:
            committed = self.committed(reader, partitions)
            raw = self._raw_committed(reader, partitions) if rewind else {}
            ends = self._output_watermarks(reader)
        finally:
            reader.close()
        asked = time.monotonic()
        processors: dict[int, PartitionProcessor] = {}
        for partition, kept in standby.items():
            if resumes_at(kept) == committed[partition]:
                processors[partition] = kept  # nobody processed it while it was away
        missing = [p for p in partitions if p not in processors]
        prefetched: set[int] = set()
        fresh = False
        if missing:
            state, unchanged = self.changelog.read_after(
                ahead, reader_settings(self.config, "restore"), {p: committed[p] for p in missing}
            )
            for partition in missing:
                prepared = None
                if ahead is not None and partition in unchanged:
                    prepared = ahead.prepared.get(partition)
                    prefetched.add(partition)
                processor = self._build(partition, state, committed[partition], ends, prepared)
                fresh = fresh or state.state_tag(partition) is None
                processors[partition] = processor
        read = time.monotonic()
        starts = _scan_starts(processors)
        visible, found_ends = self._visible_outputs(processors, starts)
        log.info(
            "recovered partitions=%s seconds=%.2f committed=%.2f state=%.2f outputs=%.2f "
            "outputs_read=%d prefetched=%s reused=%s replay=%s",
            partitions,
            time.monotonic() - started,
            asked - started,
            read - asked,
            time.monotonic() - read,
            sum(found_ends.get(name, start) - start for name, start in starts.items()),
            sorted(prefetched),
            sorted(set(partitions) - set(missing)),
            {p: tuple(proc.replay_until) for p, proc in processors.items() if proc.replay_until},
        )
        return Recovered(processors, visible, {**ends, **found_ends}, raw, fresh=fresh)

    def _build(
        self,
        partition: int,
        state: StateRead,
        limit: Tag,
        ends: dict[str, int],
        prepared: Monitor | None,
    ) -> PartitionProcessor:
        tag = state.state_tag(partition)
        if tag is None:  # no state yet: start from the committed offsets, checkpoint at once
            return PartitionProcessor(
                partition,
                self.new_monitor(),
                PartitionWriter(self.codec, partition, self.max_record_bytes),
                positions=(limit[0], limit[1]),
                runtime={"outputs": dict(ends), "origins": {}},
            )
        restored = state.restored(partition)
        restored.writer.max_record_bytes = self.max_record_bytes
        monitor = prepared
        if monitor is None:
            monitor = self.new_monitor()
        else:
            restored.changes = []  # the prefetch applied them already
        with paused_gc():
            return PartitionProcessor.restored(
                partition, monitor, restored, (tag[0], tag[1]), replay_until=(limit[0], limit[1])
            )

    def _raw_committed(self, reader: Consumer, partitions: list[int]) -> dict[tuple[str, int], int]:
        if not self.raw_topics:
            return {}
        raw = [TopicPartition(t, p) for t in self.raw_topics for p in partitions]
        return {(tp.topic, tp.partition): tp.offset for tp in committed_offsets(reader, raw)}

    def _output_watermarks(self, reader: Consumer) -> dict[str, int]:
        """Where each output partition ends now: a partition that has no state yet records
        these, so that a later recovery reads the outputs from here, not from the beginning.
        (A broker that under-reports watermarks only makes that read longer.)"""
        ends: dict[str, int] = {}
        for topic in self.output_topics:
            metadata = reader.list_topics(topic, timeout=10).topics.get(topic)
            if metadata is None or metadata.error:
                continue
            for partition in metadata.partitions:
                ends[f"{topic}/{partition}"] = end_offset(reader, TopicPartition(topic, partition))
        return ends

    def _visible_outputs(
        self, processors: dict[int, PartitionProcessor], starts: dict[str, int]
    ) -> tuple[list[Visible], dict[str, int]]:
        """Alerts and dead letters published since these partitions' last state checkpoints."""
        wanted = set(processors)
        inputs = set(self.stream_topics) | set(self.raw_topics)  # dead letters of forwards too
        alerts_topic = self.output_topics[0]
        visible: list[Visible] = []
        ends: dict[str, int] = {}

        def start(reader: Consumer) -> list[TopicPartition]:
            return [
                TopicPartition(topic, int(partition), offset)
                for name, offset in starts.items()
                for topic, _, partition in [name.rpartition("/")]
                if topic in self.output_topics
            ]

        def remember(message: Message) -> None:
            name = f"{message.topic()}/{message.partition()}"
            ends[name] = max(ends.get(name, 0), int(message.offset() or 0) + 1)
            found = trigger(message, alerts_topic)
            if found is None:
                return
            output_id, topic, partition, offset = found
            if topic in inputs and partition in wanted:
                visible.append(Visible(output_id, topic, partition, offset))

        if starts:
            read_to_end(reader_settings(self.config, "outputs"), start, remember)
        if visible:
            log.info(
                "outputs already visible since the last checkpoint: %d (will not be re-emitted)",
                len(visible),
            )
        return visible, ends


def _scan_starts(processors: dict[int, PartitionProcessor]) -> dict[str, int]:
    """Per output partition, the earliest position these partitions' checkpoints recorded."""
    starts: dict[str, int] = {}
    for processor in processors.values():
        for name, offset in processor.runtime.get("outputs", {}).items():
            starts[name] = min(offset, starts.get(name, offset))
    return starts


def resumes_at(processor: PartitionProcessor) -> tuple[int, int]:
    """The offsets a successor starts from: past what is re-processed for a replay."""
    until = processor.replay_until
    at = processor.positions
    if until is None:
        return (at[0], at[1])
    return (max(at[0], until[0]), max(at[1], until[1]))


def trigger(message: Message, alerts_topic: str) -> tuple[str, str, int, int] | None:
    """(output id, input topic, partition, offset) of the record behind an alert or dead letter."""
    if message.topic() == alerts_topic:
        try:
            event: Any = orjson.loads(message.value() or b"{}")
            position = event["data"]["source_position"]
            return (
                str(event["id"]),
                position["topic"],
                int(position["partition"]),
                int(position["offset"]),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None
    identity = deadletters.header_dict(message.headers()).get(deadletters.DEAD_LETTER_ID)
    if not identity:
        return None
    topic, _, rest = identity.rpartition("/")
    topic, _, partition = topic.rpartition("/")
    try:
        return identity, topic, int(partition), int(rest)
    except ValueError:
        return None
