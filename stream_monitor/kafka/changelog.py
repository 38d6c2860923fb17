"""The state changelog: per input partition, only the keys changed since the last commit.

Every state record carries, in a header, the input offsets it reflects (the offsets committed in
the same transaction or commit). A restore accepts a record only when those offsets are not beyond
the group's committed offsets, so state written by a run that crashed before committing (or leaked
by a broker that failed to abort its transaction) is never counted twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from stream_monitor.core.state import StateCodec
from stream_monitor.errors import StateError
from stream_monitor.kafka import KafkaRuntimeError

log = logging.getLogger(__name__)

OFFSETS_HEADER = "stream_monitor-offsets"
RUNTIME_KEY = "runtime"

Tag = tuple[int, ...]


def encode_tag(tag: Tag) -> bytes:
    return ",".join(str(value) for value in tag).encode()


def decode_tag(raw: bytes | None) -> Tag | None:
    if not raw:
        return None
    try:
        return tuple(int(part) for part in raw.decode().split(","))
    except ValueError:
        return None


def read_to_end(
    settings: dict[str, Any],
    partitions: list[TopicPartition] | Callable[[Consumer], list[TopicPartition]],
    on_message: Callable[[Message], None],
    timeout: float = 120.0,
) -> None:
    """Read each partition from its start offset to its real end, detected by partition EOF.

    `partitions` may be a function of the reader, for callers that must look them up with it.
    (Some Kafka-compatible brokers under-report the high watermark, so it is not asked up front.)
    """
    if not partitions:
        return
    consumer = Consumer(settings)
    try:
        if callable(partitions):
            partitions = partitions(consumer)
            if not partitions:
                return
        consumer.assign(partitions)
        pending = {(tp.topic, tp.partition) for tp in partitions}
        deadline = time.monotonic() + timeout
        while pending:
            if time.monotonic() > deadline:
                raise KafkaRuntimeError(
                    f"reading {sorted(pending)} to the end did not finish within {timeout:.0f}s"
                )
            for message in consumer.consume(1000, 0.05):
                error = message.error()
                if error is None:
                    on_message(message)
                elif error.code() == KafkaError._PARTITION_EOF:
                    pending.discard((message.topic(), message.partition()))
                elif error.fatal() or error.code() in (
                    KafkaError.UNKNOWN_TOPIC_OR_PART,
                    KafkaError._UNKNOWN_PARTITION,
                ):
                    raise KafkaRuntimeError(f"cannot read {message.topic()}: {error.str()}")
                else:
                    log.warning("while reading to the end: %s", error.str())
    finally:
        consumer.close()


class Changelog:
    """Writes and restores the monitor state of input partitions through a compacted topic."""

    def __init__(self, topic: str, codec: StateCodec) -> None:
        self.topic = topic
        self.codec = codec

    def records(
        self, changes: dict[str, Any], tag: Tag
    ) -> Iterable[tuple[bytes, bytes | None, list[tuple[str, bytes]]]]:
        header = [(OFFSETS_HEADER, encode_tag(tag))]
        encode = self.codec.encode
        for key, data in changes.items():
            yield key.encode(), (None if data is None else encode(data)), header

    def restore(
        self,
        settings: dict[str, Any],
        committed: dict[int, Tag],
        timeout: float = 120.0,
    ) -> dict[int, dict[str, Any]]:
        """partition -> key -> data (latest accepted value; deleted keys absent)."""
        latest: dict[int, dict[str, bytes | None]] = {p: {} for p in committed}
        skipped = 0

        def on_message(message: Message) -> None:
            nonlocal skipped
            partition = message.partition()
            tag = decode_tag(dict(message.headers() or []).get(OFFSETS_HEADER))
            limit = committed[partition]
            if (
                tag is None
                or len(tag) != len(limit)
                or any(t > c for t, c in zip(tag, limit, strict=True))
            ):
                skipped += 1  # written by a run that never committed: not part of the state
                return
            key = message.key()
            if key is None:
                raise StateError(
                    f"state record without a key at {self.topic}/{partition}@{message.offset()}"
                )
            latest[partition][key.decode()] = message.value()

        started = time.monotonic()
        read_to_end(
            settings,
            [TopicPartition(self.topic, partition, -2) for partition in committed],  # -2: beginning
            on_message,
            timeout,
        )
        restored: dict[int, dict[str, Any]] = {}
        for partition, items in latest.items():
            restored[partition] = {
                key: self.codec.decode(value) for key, value in items.items() if value is not None
            }
        log.info(
            "restored state partitions=%s keys=%d skipped_uncommitted=%d seconds=%.2f",
            sorted(committed),
            sum(len(items) for items in restored.values()),
            skipped,
            time.monotonic() - started,
        )
        return restored
