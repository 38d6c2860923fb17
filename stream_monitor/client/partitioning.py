"""The Java client's default partitioning of keyed records, so a model's events share a partition.

The monitor joins a model's predictions and labels inside one partition number of the two topics,
which holds only when every producer maps a key to a partition the same way. Kafka's reference is
the Java client: `toPositive(murmur2(key)) % numPartitions`, murmur2 with seed 0x9747b28c
(librdkafka calls this `murmur2_random`). The SDK computes the partition itself and passes it to
`produce()`, so no `partitioner` setting of a caller's producer can break co-partitioning.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from confluent_kafka import KafkaException, Producer

from stream_monitor.client.errors import UnknownTopic
from stream_monitor.partitioning import murmur2, partition_for

__all__ = ["PartitionMap", "UnknownTopic", "murmur2", "partition_for"]


class PartitionMap:
    """Key -> partition per topic, from partition counts read once from metadata and cached.

    A count is read on first use of a topic, again after `max_age` seconds (a topic that gained
    partitions is noticed like the Java client's `metadata.max.age.ms`, five minutes), and again
    at once after the producer reports that a partition is unknown (`forget`). Hashes of recent
    keys are cached: a service logs for a handful of models, so hashing is paid once per model.
    """

    MAX_CACHED_KEYS = 10_000

    def __init__(
        self,
        producer: Producer,
        *,
        metadata_timeout: float = 10.0,
        max_age: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._producer = producer
        self._timeout = metadata_timeout
        self._max_age = max_age
        self._clock = clock
        self._counts: dict[str, tuple[int, float]] = {}
        self._hashes: dict[bytes, int] = {}
        self._lock = threading.Lock()

    def partition(self, topic: str, key: bytes) -> int:
        entry = self._counts.get(topic)
        fresh = entry is not None and self._clock() < entry[1]
        count = entry[0] if fresh and entry is not None else self._refresh(topic)
        positive = self._hashes.get(key)
        if positive is None:
            if len(self._hashes) >= self.MAX_CACHED_KEYS:
                self._hashes.clear()
            positive = self._hashes[key] = murmur2(key) & 0x7FFFFFFF
        return positive % count

    def forget(self, topic: str) -> None:
        """Read this topic's partition count again before the next record."""
        self._counts.pop(topic, None)

    def _refresh(self, topic: str) -> int:
        with self._lock:
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
            count = len(found.partitions)
            self._counts[topic] = (count, self._clock() + self._max_age)
            return count
