"""Reading committed offsets and partition ends through coordinator and leader moves.

Both answers can be "ask again": a coordinator or leader moved or is loading (a broker died, a
topic was just created), or a transaction that commits offsets of these partitions is still open.
"""

from __future__ import annotations

import time

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from stream_monitor.kafka import KafkaRuntimeError, StillUnavailable

# Answers that mean "ask again": the group coordinator moved or is loading (a broker died), or a
# transaction that commits offsets of these partitions is still open (UNSTABLE_OFFSET_COMMIT).
RETRIABLE = frozenset(
    {
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.UNSTABLE_OFFSET_COMMIT,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError._TIMED_OUT,
        KafkaError._TRANSPORT,
        KafkaError._WAIT_COORD,
        # a leader moving or not elected yet (a topic created a moment ago)
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._UNKNOWN_PARTITION,
    }
)


def committed_offsets(
    consumer: Consumer, partitions: list[TopicPartition], timeout: float = 30.0
) -> list[TopicPartition]:
    """`consumer.committed()`, asked again while the answer is retriable, for up to `timeout`."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        left = deadline - time.monotonic()
        try:
            result: list[TopicPartition] = consumer.committed(partitions, timeout=max(left, 0.1))
            failed = [tp.error for tp in result if tp.error is not None]
            if not failed:
                return result
            error = failed[0]
        except KafkaException as exc:
            error = exc.args[0]
        if error.code() not in RETRIABLE:
            raise KafkaRuntimeError(f"cannot read the committed offsets: {error.str()}")
        if time.monotonic() + delay > deadline:
            raise StillUnavailable(f"cannot read the committed offsets: {error.str()}")
        time.sleep(delay)
        delay = min(delay * 2, 1.0)


def end_offset(consumer: Consumer, partition: TopicPartition, timeout: float = 30.0) -> int:
    """The partition's end (high watermark; the last stable offset for a read_committed
    consumer), asked again while the answer is retriable, for up to `timeout`."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        left = deadline - time.monotonic()
        try:
            _, high = consumer.get_watermark_offsets(partition, timeout=max(min(left, 10.0), 0.1))
            return max(int(high), 0)
        except KafkaException as exc:
            error = exc.args[0]
        if error.code() not in RETRIABLE or time.monotonic() + delay > deadline:
            failure = StillUnavailable if error.code() in RETRIABLE else KafkaRuntimeError
            raise failure(
                f"cannot read the end of {partition.topic}/{partition.partition}: {error.str()}"
            )
        time.sleep(delay)
        delay = min(delay * 2, 1.0)
