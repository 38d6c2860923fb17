"""Reading the state changelog back from Kafka: to its real end, verified, within committed offsets.

Each record is verified as it is read (`processing.changelog.RecordCheck`), so a forged record can
never replace a genuine one, and kept only when its tag (the input offsets it reflects) is not
beyond the group's committed offsets: state written by a run that crashed before committing (or
leaked by a broker that failed to abort its transaction) is never counted. The record layout and
how a partition's state is rebuilt from the accepted records live in `processing.changelog`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from stream_monitor.kafka import KafkaRuntimeError, StillUnavailable
from stream_monitor.processing.changelog import (
    PROCESSOR_KEY,
    RecordCheck,
    Restored,
    Tag,
    decode_tag,
    restore,
    within,
)

log = logging.getLogger(__name__)
_BEGINNING = -2


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
                raise StillUnavailable(
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


class StateRead:
    """Per partition, the latest verified record of each key whose tag is within the limits.

    Records beyond the limits are counted, not kept: `fits` tells whether the read is still
    exactly what reading with other limits would have given, so it can be continued, not redone.
    """

    def __init__(self, limits: dict[int, Tag], check: RecordCheck) -> None:
        self.limits = dict(limits)
        self.check = check
        # partition -> key -> (offset, value, raw tag), in the order a full read accepts them
        self.latest: dict[int, dict[bytes, tuple[int, bytes | None, bytes]]] = {
            p: {} for p in limits
        }
        self.beyond: dict[int, list[Tag]] = {p: [] for p in limits}  # tags of records left out
        self.ends: dict[int, int] = {}  # partition -> the offset the read stopped at (EOF)
        self.rejected = 0  # records that do not verify (left out under on_invalid_record=skip)

    def add(self, topic: str, message: Message) -> None:
        partition = int(message.partition() or 0)
        offset = int(message.offset() or 0)
        key, value, headers = message.key(), message.value(), message.headers()
        tag = self.check.tag_of(partition, key, value, headers, f"{topic}/{partition}@{offset}")
        if tag is None or key is None:
            self.rejected += 1
            return
        if not within(tag, self.limits[partition]):
            self.beyond[partition].append(tag)
            return
        raw_tag = dict(headers or []).get("stream_monitor-offsets", b"")
        self.latest[partition][key] = (offset, value, raw_tag)

    def fits(self, partition: int, limit: Tag) -> bool:
        """Whether `limit` accepts exactly the records these limits accepted.

        It does when it is not lower (committed offsets only grow, unless an operator resets them)
        and accepts none of the records left out. Otherwise (another member committed since these
        limits were read), the partition is read again with `limit`.
        """
        return within(self.limits[partition], limit) and not any(
            within(tag, limit) for tag in self.beyond[partition]
        )

    def state_tag(self, partition: int) -> Tag | None:
        """The offsets the partition's latest accepted checkpoint reflects (None: no state)."""
        found = self.latest[partition].get(PROCESSOR_KEY)
        return None if found is None else decode_tag(found[2])

    def restored(self, partition: int) -> Restored:
        latest = {key: (value, tag) for key, (_, value, tag) in self.latest[partition].items()}
        return restore(self.check.codec, partition, latest)


class Changelog:
    """Reads partitions of the state changelog, verifying every record."""

    def __init__(self, topic: str, check: RecordCheck) -> None:
        self.topic = topic
        self.check = check

    def read(
        self,
        settings: dict[str, Any],
        into: StateRead,
        starts: dict[int, int] | None = None,
        timeout: float = 120.0,
    ) -> StateRead:
        """Read the partitions of `into` from `starts` (default: the beginning) to their end."""
        topic = self.topic
        starts = starts or {}
        ends = read_to_end(
            settings,
            [TopicPartition(topic, p, starts.get(p, _BEGINNING)) for p in into.limits],
            lambda message: into.add(topic, message),
            timeout,
        )
        into.ends.update((partition, end) for (_, partition), end in ends.items())
        return into

    def read_after(
        self,
        ahead: Prefetch | None,
        settings: dict[str, Any],
        committed: dict[int, Tag],
        timeout: float = 120.0,
    ) -> tuple[StateRead, set[int]]:
        """The state within `committed`, continuing a prefetch where it fits.

        Also returns the partitions whose accepted records are exactly the prefetch's (its
        prepared monitors can be used as they are).
        """
        state = StateRead(committed, self.check)
        starts: dict[int, int] = {}
        usable: set[int] = set()
        if ahead is not None and ahead.wait():
            for partition, limit in committed.items():
                if partition in ahead.read.ends and ahead.read.fits(partition, limit):
                    usable.add(partition)
                    state.latest[partition] = dict(ahead.read.latest[partition])
                    state.beyond[partition] = list(ahead.read.beyond[partition])
                    starts[partition] = ahead.read.ends[partition]
        before = {partition: len(state.latest[partition]) for partition in usable}
        offsets = {
            partition: max(
                (offset for offset, _, _ in state.latest[partition].values()), default=-1
            )
            for partition in usable
        }
        self.read(settings, state, starts, timeout)
        unchanged = {
            partition
            for partition in usable
            if len(state.latest[partition]) == before[partition]
            and max((offset for offset, _, _ in state.latest[partition].values()), default=-1)
            == offsets[partition]
        }
        return state, unchanged


class Prefetch:
    """A restore started before the consumer group has assigned partitions.

    A successor's group join waits for the broker to expire its killed predecessor (up to the
    session timeout), longer than reading, verifying and rebuilding thousands of keys. This
    reads every partition of the changelog meanwhile, against the committed offsets known before
    the join, and `prepare`s each partition (the service rebuilds its monitor). At assignment
    `Changelog.read_after` re-checks against the committed offsets then and reads what was
    written since. Costs memory for partitions that end up elsewhere (dropped at assignment).
    """

    def __init__(
        self,
        changelog: Changelog,
        settings: dict[str, Any],
        limits: dict[int, Tag],
        prepare: Callable[[int, StateRead], Any],
        timeout: float = 120.0,
    ) -> None:
        self.changelog = changelog
        self.read = StateRead(limits, changelog.check)
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
            for partition in self.read.limits:
                self.prepared[partition] = self._prepare(partition, self.read)
            log.info(
                "prefetched state partitions=%d keys=%d seconds=%.2f read=%.2f prepare=%.2f",
                len(self.read.limits),
                sum(len(entries) for entries in self.read.latest.values()),
                time.monotonic() - started,
                read - started,
                time.monotonic() - read,
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
