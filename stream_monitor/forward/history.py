"""The alerts a restart reads again, to rebuild what sinks keep in memory (Alertmanager's active set)."""

from __future__ import annotations

import threading
import time

from confluent_kafka import Consumer, KafkaError, TopicPartition

from stream_monitor.forward.records import AlertRecord, from_message


def read_history(
    reader: Consumer,
    topic: str,
    upto: dict[int, int],
    since_ms: int,
    stop: threading.Event,
    timeout: float = 60.0,
) -> list[AlertRecord]:
    """Alerts of `topic` published since `since_ms` and before `upto[partition]`, read with a
    group-less `reader` (assign only: it never commits). The caller closes the reader."""
    starts = reader.offsets_for_times(
        [TopicPartition(topic, p, since_ms) for p in upto], timeout=10
    )
    todo = {tp.partition: tp.offset for tp in starts if 0 <= tp.offset < upto[tp.partition]}
    if not todo:
        return []
    reader.assign([TopicPartition(topic, p, offset) for p, offset in todo.items()])
    records: list[AlertRecord] = []
    deadline = time.monotonic() + timeout
    while todo and time.monotonic() < deadline and not stop.is_set():
        for message in reader.consume(500, 0.2):
            partition = message.partition()
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    todo.pop(partition, None)
                continue
            if partition in todo and message.offset() < upto[partition]:
                record = from_message(message)
                if record.event is not None:
                    records.append(record)
            if message.offset() >= upto[partition] - 1:
                todo.pop(partition, None)
    return records
