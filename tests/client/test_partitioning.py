"""The SDK's murmur2 partitioning equals the Java client's (figures printed by kafka-clients)."""

from __future__ import annotations

import pytest

from stream_monitor.partitioning import murmur2, partition_for

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
