"""The state changelog: per input partition, only the keys changed since the last commit.

Every state record carries, in a header, the input offsets it reflects (the offsets committed in
the same transaction or commit). A restore accepts a record only when those offsets are not beyond
the group's committed offsets, so state written by a run that crashed before committing (or leaked
by a broker that failed to abort its transaction) is never counted twice.
"""

from __future__ import annotations

import logging
import threading
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
) -> dict[tuple[str, int], int]:
    """Read each partition from its start offset to its real end, detected by partition EOF.

    `partitions` may be a function of the reader, for callers that must look them up with it.
    (Some Kafka-compatible brokers under-report the high watermark, so it is not asked up front.)
    Returns where each partition ended: a later read can continue from there.
    """
    ends: dict[tuple[str, int], int] = {}
    if not partitions:
        return ends
    consumer = Consumer(settings)
    try:
        if callable(partitions):
            partitions = partitions(consumer)
            if not partitions:
                return ends
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
                    where = (str(message.topic()), int(message.partition() or 0))
                    pending.discard(where)
                    ends[where] = int(message.offset() or 0)
                elif error.fatal() or error.code() in (
                    KafkaError.UNKNOWN_TOPIC_OR_PART,
                    KafkaError._UNKNOWN_PARTITION,
                ):
                    raise KafkaRuntimeError(f"cannot read {message.topic()}: {error.str()}")
                else:
                    log.warning("while reading to the end: %s", error.str())
    finally:
        consumer.close()
    return ends


def within(tag: Tag | None, limit: Tag) -> bool:
    """A state record counts only if the offsets it reflects were all committed."""
    return (
        tag is not None
        and len(tag) == len(limit)
        and all(t <= c for t, c in zip(tag, limit, strict=True))
    )


class StateRead:
    """Per partition, the latest record of each key whose tag is within the limits.

    Records beyond the limits are counted, not kept: `fits` tells whether the read is still
    exactly what reading with other limits would have given, so it can be continued, not redone.
    """

    def __init__(self, limits: dict[int, Tag]) -> None:
        self.limits = dict(limits)
        # partition -> key -> (offset, value), keys in the order a full read first accepts them
        self.latest: dict[int, dict[bytes, tuple[int, bytes | None]]] = {p: {} for p in limits}
        self.beyond: dict[int, list[Tag]] = {p: [] for p in limits}  # tags of records left out
        self.ends: dict[int, int] = {}  # partition -> the offset the read stopped at (EOF)
        self.skipped = 0  # records never acceptable: no tag, or a tag of another shape

    def add(self, topic: str, message: Message) -> None:
        partition = int(message.partition() or 0)
        tag = decode_tag(dict(message.headers() or []).get(OFFSETS_HEADER))
        limit = self.limits[partition]
        if tag is None or len(tag) != len(limit):
            self.skipped += 1  # written by a run that never committed: not part of the state
            return
        if not within(tag, limit):
            self.beyond[partition].append(tag)
            return
        key = message.key()
        offset = int(message.offset() or 0)
        if key is None:
            raise StateError(f"state record without a key at {topic}/{partition}@{offset}")
        self.latest[partition][key] = (offset, message.value())

    def fits(self, partition: int, limit: Tag) -> bool:
        """Whether `limit` accepts exactly the records these limits accepted.

        It does when it is not lower (committed offsets only grow, unless an operator resets them)
        and accepts none of the records left out. Otherwise (another member committed since these
        limits were read), the partition is read again with `limit`.
        """
        return within(self.limits[partition], limit) and not any(
            within(tag, limit) for tag in self.beyond[partition]
        )


class Prefetch:
    """A restore started before the consumer group has assigned partitions.

    A successor's group join waits for the broker to expire its killed predecessor (up to
    `session.timeout.ms`), longer than reading, verifying and rebuilding 10k keys of state. This
    reads every partition of the changelog meanwhile, against the committed offsets known before
    the join, and `prepare`s each partition's decoded state (the service builds its `Monitor`).
    `Changelog.restore_after` then only re-checks against the committed offsets at assignment
    and reads what was written since. Costs memory for partitions that end up elsewhere.
    """

    def __init__(
        self,
        changelog: Changelog,
        settings: dict[str, Any],
        limits: dict[int, Tag],
        prepare: Callable[[int, dict[str, Any]], Any],
        timeout: float = 120.0,
    ) -> None:
        self.changelog = changelog
        self.read = StateRead(limits)
        self.decoded: dict[int, dict[bytes, tuple[int, Any]]] = {}  # key -> (offset, data)
        self.prepared: dict[int, Any] = {}
        self._settings = settings
        self._prepare = prepare
        self._timeout = timeout
        self._failed: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="state-prefetch", daemon=True)

    def start(self) -> Prefetch:
        self._thread.start()
        return self

    def _run(self) -> None:
        started = time.monotonic()
        try:
            self.changelog.read(self._settings, self.read, {}, self._timeout)
            read = time.monotonic()
            decode = self.changelog.codec.decode
            for partition, latest in self.read.latest.items():
                self.decoded[partition] = {
                    key: (offset, None if value is None else decode(value))
                    for key, (offset, value) in latest.items()
                }
            decoded = time.monotonic()
            for partition, entries in self.decoded.items():
                self.prepared[partition] = self._prepare(partition, _items(entries))
            log.info(
                "prefetched state partitions=%d keys=%d seconds=%.2f read=%.2f decode=%.2f "
                "prepare=%.2f",
                len(self.decoded),
                sum(len(entries) for entries in self.decoded.values()),
                time.monotonic() - started,
                read - started,
                decoded - read,
                time.monotonic() - decoded,
            )
        except Exception as exc:  # the restore at assignment reads everything again
            self._failed = exc

    def wait(self) -> bool:
        """Until the prefetch is over; whether it can be used."""
        self._thread.join()
        if self._failed is not None:
            log.warning("state prefetch failed (%s): restoring without it", self._failed)
            return False
        return True


def _items(entries: dict[bytes, tuple[int, Any]]) -> dict[str, Any]:
    return {key.decode(): data for key, (_, data) in entries.items() if data is not None}


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

    def read(
        self,
        settings: dict[str, Any],
        into: StateRead,
        starts: dict[int, int],
        timeout: float = 120.0,
    ) -> None:
        """Read the partitions of `into` from `starts` (default: the beginning) to their end."""
        topic = self.topic
        ends = read_to_end(
            settings,
            [TopicPartition(topic, p, starts.get(p, -2)) for p in into.limits],  # -2: beginning
            lambda message: into.add(topic, message),
            timeout,
        )
        into.ends.update((partition, end) for (_, partition), end in ends.items())

    def restore(
        self,
        settings: dict[str, Any],
        committed: dict[int, Tag],
        timeout: float = 120.0,
    ) -> dict[int, dict[str, Any]]:
        """partition -> key -> data (latest accepted value; deleted keys absent)."""
        restored, _ = self.restore_after(None, settings, committed, timeout)
        return restored

    def restore_after(
        self,
        ahead: Prefetch | None,
        settings: dict[str, Any],
        committed: dict[int, Tag],
        timeout: float = 120.0,
    ) -> tuple[dict[int, dict[str, Any]], set[int]]:
        """As `restore`, continuing a prefetch where it can be used.

        Also returns the partitions whose state is exactly what the prefetch prepared.
        """
        started = time.monotonic()
        usable: set[int] = set()
        state = StateRead(committed)
        starts: dict[int, int] = {}
        if ahead is not None and ahead.wait():
            for partition, limit in committed.items():
                if partition in ahead.decoded and ahead.read.fits(partition, limit):
                    usable.add(partition)
                    state.latest[partition] = ahead.read.latest[partition]
                    state.beyond[partition] = ahead.read.beyond[partition]
                    starts[partition] = ahead.read.ends[partition]
            if usable:
                state.skipped += ahead.read.skipped
        self.read(settings, state, starts, timeout)
        restored: dict[int, dict[str, Any]] = {}
        unchanged: set[int] = set()
        decode = self.codec.decode
        for partition, latest in state.latest.items():
            known = ahead.decoded.get(partition, {}) if ahead and partition in usable else {}
            items: dict[str, Any] = {}
            same = partition in usable and len(latest) == len(known)
            for key, (offset, value) in latest.items():
                found = known.get(key)
                if found is not None and found[0] == offset:
                    data = found[1]
                else:
                    same = False
                    data = None if value is None else decode(value)
                if data is not None:
                    items[key.decode()] = data
            restored[partition] = items
            if same:
                unchanged.add(partition)
        log.info(
            "restored state partitions=%s keys=%d skipped_uncommitted=%d prefetched=%s "
            "seconds=%.2f",
            sorted(committed),
            sum(len(items) for items in restored.values()),
            state.skipped + sum(len(later) for later in state.beyond.values()),
            sorted(usable),
            time.monotonic() - started,
        )
        return restored, unchanged
