"""What the forwarder's group may commit: per partition, the lowest offset some sink has not taken.

Each commit's metadata carries every sink's own position (`{"alertmanager": 1412, "webhook-0":
1377}`): after a restart a sink skips what it had already taken, so a healthy sink is not re-sent
everything a failing sink still owed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import orjson
from confluent_kafka import TopicPartition

from stream_monitor.forward.sinks import SinkWorker


class GroupOffsets:
    """Per assigned partition: the offset after the last record read, the last commit, and each
    sink's committed position. Used by the consume loop's thread only."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.read_upto: dict[int, int] = {}  # partition -> offset after the last record read
        self._committed: dict[int, tuple[int, str]] = {}
        self._skip: dict[tuple[str, int], int] = {}  # (sink, partition) -> its committed position

    def read(self, partition: int, offset: int) -> None:
        self.read_upto[partition] = offset + 1

    def advance(self, positions: Iterable[TopicPartition]) -> None:
        """The consumer's positions, once every record before them was handled: on a
        transactional topic they step over the commit markers after the last alert."""
        for tp in positions:
            if tp.offset >= 0 and tp.partition in self.read_upto:
                self.read_upto[tp.partition] = max(self.read_upto[tp.partition], tp.offset)

    def taken_before_restart(self, sink: str, partition: int, offset: int) -> bool:
        """The sink had taken this alert at the last commit (its position is past it)."""
        skip = self._skip.get((sink, partition))
        return skip is not None and offset < skip

    def restore(self, committed: Iterable[TopicPartition]) -> dict[int, int]:
        """Take the group's committed offsets and their metadata; returns partition -> offset
        for the partitions that had one."""
        upto: dict[int, int] = {}
        for tp in committed:
            if tp.offset < 0:
                continue
            upto[tp.partition] = tp.offset
            self.read_upto[tp.partition] = tp.offset
            self._committed[tp.partition] = (tp.offset, tp.metadata or "")
            for name, offset in positions(tp.metadata).items():
                if offset > tp.offset:
                    self._skip[(name, tp.partition)] = offset
        return upto

    def to_commit(
        self, partitions: Iterable[int], workers: Sequence[SinkWorker]
    ) -> list[TopicPartition]:
        """What changed since the last commit, for these partitions."""
        offsets = []
        for partition in sorted(partitions):
            read = self.read_upto.get(partition)
            if read is None:
                continue
            taken = {}
            for worker in workers:
                pending = worker.first_pending(partition)
                taken[worker.name] = read if pending is None else pending
            low = min(taken.values())
            metadata = orjson.dumps(taken).decode()
            if self._committed.get(partition) == (low, metadata):
                continue
            offsets.append(TopicPartition(self.topic, partition, low, metadata=metadata))
        return offsets

    def committed(self, offsets: Iterable[TopicPartition]) -> None:
        for tp in offsets:
            self._committed[tp.partition] = (tp.offset, tp.metadata)

    def forget(self, partitions: set[int]) -> None:
        for partition in partitions:
            self.read_upto.pop(partition, None)
            self._committed.pop(partition, None)
        self._skip = {key: value for key, value in self._skip.items() if key[1] not in partitions}


def positions(metadata: str | None) -> dict[str, int]:
    """Each sink's position from a commit's metadata (written by `to_commit`); {} when foreign."""
    try:
        found = orjson.loads(metadata or "{}")
    except orjson.JSONDecodeError:
        return {}
    if not isinstance(found, dict):
        return {}
    return {str(k): v for k, v in found.items() if isinstance(v, int) and not isinstance(v, bool)}
