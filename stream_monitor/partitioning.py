"""Kafka's default partitioner: which partition a key lands on, as the Java client computes it.

Predictions and labels keyed by model must share a partition number, whoever produces them; the
Java client (and librdkafka's `murmur2_random`) put key k on `toPositive(murmur2(k)) % n`. Replay
uses it to give each model the partition it would have on Kafka, so that offline and Kafka runs
merge the same events together.
"""

from __future__ import annotations

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's `Utils.murmur2`: 32-bit MurmurHash2 with its seed, as a signed 32-bit int."""
    length = len(data)
    h = (_SEED ^ length) & _MASK
    whole = length & ~3
    for index in range(0, whole, 4):
        k = int.from_bytes(data[index : index + 4], "little")
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    rest = length & 3
    if rest:
        if rest == 3:
            h ^= data[whole + 2] << 16
        if rest >= 2:
            h ^= data[whole + 1] << 8
        h ^= data[whole]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - (1 << 32) if h >= 1 << 31 else h


def partition_for(key: bytes, partitions: int) -> int:
    """The partition the Java client (and `murmur2_random`) chooses for a non-empty key."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions
