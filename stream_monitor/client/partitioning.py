"""The Java client's default partitioning of keyed records, so a model's events share a partition.

The monitor joins a model's predictions and labels inside one partition number of the two topics,
which holds only when every producer maps a key to a partition the same way. Kafka's reference is
the Java client: `toPositive(murmur2(key)) % numPartitions`, murmur2 with seed 0x9747b28c
(librdkafka calls this `murmur2_random`). The SDK computes the partition itself and passes it to
`produce()`, so no `partitioner` setting of a caller's producer can break co-partitioning.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from confluent_kafka import KafkaException, Producer

from stream_monitor.client.errors import UnknownTopic
from stream_monitor.partitioning import murmur2, partition_for

__all__ = ["PartitionMap", "UnknownTopic", "murmur2", "partition_for"]

log = logging.getLogger(__name__)


class PartitionMap:
    """Key -> partition per topic, from partition counts read from the broker's metadata.

    Only the first lookup of a topic waits for the broker (up to `metadata_timeout`): there is
    no count to go on yet. After that the count is read again in the background, every
    `max_age` seconds (a topic that gained partitions is noticed like the Java client's
    `metadata.max.age.ms`, five minutes) and soon after the producer reports a partition
    unknown (`expire`); meanwhile, and when such a read fails (tried again after
    `retry_after`), the count known is used, so a lookup never waits on a broker that is
    slow or down. Hashes of recent keys are cached: a service logs for a handful of models.
    """

    MAX_CACHED_KEYS = 10_000

    def __init__(
        self,
        producer: Producer,
        *,
        metadata_timeout: float = 10.0,
        max_age: float = 300.0,
        retry_after: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._producer = producer
        self._timeout = metadata_timeout
        self._max_age = max_age
        self._retry_after = retry_after
        self._clock = clock
        self._counts: dict[str, tuple[int, float]] = {}  # topic -> (count, when to read again)
        self._hashes: dict[bytes, int] = {}
        self._first_reads = threading.Lock()  # one first read at a time, each topic read once
        self._state = threading.Lock()  # guards _reading (held for microseconds only)
        self._reading: set[str] = set()  # topics with a background read in flight

    def partition(self, topic: str, key: bytes) -> int:
        entry = self._counts.get(topic)
        if entry is None:
            count = self._read_first(topic)
        else:
            count, due = entry
            if self._clock() >= due:
                self._read_in_background(topic)
        positive = self._hashes.get(key)
        if positive is None:
            if len(self._hashes) >= self.MAX_CACHED_KEYS:
                self._hashes.clear()
            positive = self._hashes[key] = murmur2(key) & 0x7FFFFFFF
        return positive % count

    def expire(self, topic: str) -> None:
        """Read this topic's count again soon, in the background (a delivery said a partition
        is unknown); the count known serves until then."""
        entry = self._counts.get(topic)
        if entry is not None:
            self._counts[topic] = (entry[0], 0.0)

    def reread(self, topic: str) -> None:
        """Read the count now, waiting up to `metadata_timeout`: `produce()` refused a partition
        the count known implies, so no event can be sent with it. `UnknownTopic` when the read
        fails (the count known stays)."""
        with self._first_reads:
            self._store(topic, self._read(topic))

    # ---------------------------------------------------------------------------------------
    def _read_first(self, topic: str) -> int:
        with self._first_reads:
            entry = self._counts.get(topic)  # another thread may have read it meanwhile
            if entry is not None:
                return entry[0]
            count = self._read(topic)
            self._store(topic, count)
            return count

    def _read_in_background(self, topic: str) -> None:
        with self._state:
            if topic in self._reading:
                return
            self._reading.add(topic)
        threading.Thread(
            target=self._read_again, args=(topic,), name="monitor-producer-metadata", daemon=True
        ).start()

    def _read_again(self, topic: str) -> None:
        known = self._counts[topic][0]
        try:
            count = self._read(topic)
        except UnknownTopic as exc:
            self._counts[topic] = (known, self._clock() + self._retry_after)
            log.warning("%s; still using its %d partitions", exc, known)
        else:
            if count != known:
                log.info("topic=%s has %d partitions now (was %d)", topic, count, known)
            self._store(topic, count)
        finally:
            with self._state:
                self._reading.discard(topic)

    def _store(self, topic: str, count: int) -> None:
        self._counts[topic] = (count, self._clock() + self._max_age)

    def _read(self, topic: str) -> int:
        try:
            metadata = self._producer.list_topics(topic, timeout=self._timeout)
        except KafkaException as exc:
            raise UnknownTopic(
                f"cannot read the partition count of topic {topic!r}: {exc.args[0].str()}"
            ) from exc
        found = metadata.topics.get(topic)
        if found is None or found.error is not None or not found.partitions:
            reason = found.error.str() if found is not None and found.error else "no partitions"
            raise UnknownTopic(f"topic {topic!r} is not available: {reason}")
        return len(found.partitions)
