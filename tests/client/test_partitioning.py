"""The SDK's murmur2 partitioning equals the Java client's (figures printed by kafka-clients), and
its partition counts never make a lookup wait on the broker after the first one."""

from __future__ import annotations

import threading
import time

import pytest
from confluent_kafka import KafkaError, KafkaException

from stream_monitor.client import UnknownTopic
from stream_monitor.client.partitioning import PartitionMap
from stream_monitor.partitioning import murmur2, partition_for
from tests.client.fakes import Metadata
from tests.kafka.support import wait_for

# `Utils.murmur2(key.getBytes(UTF_8))` and `Utils.toPositive(...) % 7`, printed by
# org.apache.kafka.common.utils.Utils of kafka-clients 4.3.1 on this machine.
JAVA = [
    ("", 275646681, 2),
    ("a", -1563381124, 5),
    ("ab", 316155434, 0),
    ("abc", 479470107, 4),
    ("21", -973932308, 3),
    ("foobar", -790332482, 0),
    ("credit", 1434670714, 1),
    ("fraud", 1657619722, 3),
    ("eta", 242580414, 6),
    ("a-little-bit-long-string", -985981536, 1),
    ("a-little-bit-longer-string", -1486304829, 0),
    ("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971, 3),
    ("modèle-é", -1702280025, 4),
    ("模型", -1108724300, 4),
    ("\u00ff\u00fe", -1869419400, 0),
]


@pytest.mark.parametrize(("key", "java_hash", "java_partition"), JAVA)
def test_murmur2_and_partition_equal_the_java_client(
    key: str, java_hash: int, java_partition: int
) -> None:
    assert murmur2(key.encode()) == java_hash
    assert partition_for(key.encode(), 7) == java_partition


def test_every_tail_length_is_covered() -> None:
    assert {len(key.encode()) % 4 for key, _, _ in JAVA} == {0, 1, 2, 3}


class Broker:
    """A producer's metadata calls: `down` makes each take 0.2 s and fail, as in an outage."""

    def __init__(self, partitions: int) -> None:
        self.partitions = partitions
        self.down = False
        self.calls = 0
        self.lock = threading.Lock()

    def list_topics(self, topic: str, timeout: float) -> Metadata:
        with self.lock:
            self.calls += 1
        time.sleep(0.2)
        if self.down:
            raise KafkaException(KafkaError(KafkaError._TRANSPORT))
        return Metadata(self.partitions)


def test_a_broker_outage_never_blocks_a_lookup_after_the_first_one() -> None:
    # /tmp/review/stale.py: past max_age every lookup read metadata synchronously (up to 10 s
    # each), dropped the count when the read failed and raised UnknownTopic.
    now = [0.0]
    broker = Broker(2)
    partitions = PartitionMap(broker, max_age=300, retry_after=10, clock=lambda: now[0])  # type: ignore[arg-type]
    assert partitions.partition("predictions", b"credit") == partition_for(b"credit", 2)
    broker.down, now[0] = True, 301.0
    for _ in range(50):
        started = time.monotonic()
        assert partitions.partition("predictions", b"credit") == partition_for(b"credit", 2)
        assert time.monotonic() - started < 0.05
    wait_for(lambda: broker.calls == 2, 5, "one background read, not one per lookup")
    time.sleep(0.3)
    assert broker.calls == 2  # it failed: the next one waits retry_after
    broker.down, broker.partitions, now[0] = False, 8, 312.0
    partitions.partition("predictions", b"credit")
    wait_for(
        lambda: partitions.partition("predictions", b"credit") == partition_for(b"credit", 8),
        5,
        "the topic's new partition count",
    )
    assert broker.calls == 3


def test_only_the_first_lookup_waits_and_concurrent_ones_read_once() -> None:
    broker = Broker(4)
    partitions = PartitionMap(broker)  # type: ignore[arg-type]
    found: list[int] = []
    threads = [
        threading.Thread(target=lambda: found.append(partitions.partition("predictions", b"m")))
        for _ in range(5)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert found == [partition_for(b"m", 4)] * 5 and broker.calls == 1
    broker.down = True
    with pytest.raises(UnknownTopic, match="cannot read the partition count of topic 'other'"):
        PartitionMap(broker, metadata_timeout=0.2).partition("other", b"m")  # type: ignore[arg-type]


def test_an_expired_count_is_read_again_in_the_background() -> None:
    broker = Broker(2)
    partitions = PartitionMap(broker)  # type: ignore[arg-type]
    partitions.partition("predictions", b"m")
    broker.partitions = 3
    partitions.expire("predictions")  # a delivery said a partition is unknown
    started = time.monotonic()
    assert partitions.partition("predictions", b"m") == partition_for(b"m", 2)  # the known one
    assert time.monotonic() - started < 0.05
    wait_for(
        lambda: partitions.partition("predictions", b"m") == partition_for(b"m", 3), 5, "re-read"
    )
