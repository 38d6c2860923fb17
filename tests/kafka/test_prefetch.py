"""A restore prefetched before the group assignment gives exactly the state a full restore gives.

The prefetch reads against the committed offsets known before the join; the restore at assignment
uses the committed offsets known then. Whatever happened in between (state written after the
prefetch, committed or not; another member's commits; offsets reset lower), the result must be the
full restore's, and a partition is reported unchanged only when nothing changed.
"""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import Producer

from stream_monitor.brokers import LocalBroker
from stream_monitor.core.state import StateCodec
from stream_monitor.kafka.changelog import Changelog, Prefetch, StateRead
from stream_monitor.kafka.settings import reader_settings
from stream_monitor.processing.changelog import (
    OFFSETS_HEADER,
    SIGNATURE_HEADER,
    InvalidRecords,
    RecordCheck,
    Tag,
    encode_tag,
    signing_context,
)
from tests.kafka.support import KEY, config_data, create_topics, make_config

pytestmark = pytest.mark.kafka
CODEC = StateCodec(KEY.encode())


def contents(read: StateRead, partition: int) -> dict[str, Any]:
    """key -> data of the records a read accepted (deleted keys left out), in read order."""
    return {
        key.decode(): CODEC.parse(value)
        for key, (_, value, _) in read.latest[partition].items()
        if value is not None
    }


class StateTopic:
    def __init__(self, bootstrap: str) -> None:
        self.config = make_config(config_data(bootstrap, partitions=2))
        check = RecordCheck(CODEC, InvalidRecords("stop"))
        self.changelog = Changelog(create_topics(self.config).state, check)
        self.producer = Producer({"bootstrap.servers": bootstrap})
        self.settings = reader_settings(self.config, "test")

    def write(self, partition: int, changes: dict[str, Any], tag: Tag) -> None:
        raw = encode_tag(tag)
        context = signing_context(partition, raw)
        for name, data in changes.items():
            key = name.encode()
            headers = [(OFFSETS_HEADER, raw)]
            if data is None:
                headers.append((SIGNATURE_HEADER, CODEC.tombstone_signature(key, context)))
                value = None
            else:
                value = CODEC.encode(key, data, context)
            self.producer.produce(
                self.changelog.topic, key=key, value=value, partition=partition, headers=headers
            )
        self.producer.flush(10)

    def prefetch(self, limits: dict[int, Tag]) -> Prefetch:
        ahead = Prefetch(self.changelog, self.settings, limits, lambda p, read: contents(read, p))
        assert ahead.start().wait()
        return ahead

    def restore(
        self, ahead: Prefetch, committed: dict[int, Tag]
    ) -> tuple[dict[int, dict[str, Any]], set[int]]:
        read, unchanged = self.changelog.read_after(ahead, self.settings, committed)
        full = self.changelog.read(self.settings, StateRead(committed, self.changelog.check))
        restored = {p: contents(read, p) for p in committed}
        assert restored == {p: contents(full, p) for p in committed}
        return restored, unchanged


def test_state_written_after_the_prefetch_is_read_and_uncommitted_state_is_not(
    broker: LocalBroker,
) -> None:
    topic = StateTopic(broker.bootstrap_servers)
    topic.write(0, {"a": {"v": 1}, "b": {"v": 1}}, (10, 5))
    topic.write(0, {"a": {"v": 2}}, (20, 5))
    topic.write(0, {"a": {"v": 99}}, (30, 5))  # a crashed run's leak: beyond the commit
    topic.write(1, {"c": {"v": 1}, "d": {"v": 1}}, (7, 0))
    ahead = topic.prefetch({0: (20, 5), 1: (7, 0)})
    assert ahead.prepared == {0: {"a": {"v": 2}, "b": {"v": 1}}, 1: {"c": {"v": 1}, "d": {"v": 1}}}

    # After the prefetch, before the assignment: the last owner commits once more on partition 0
    # (a later key, a deletion) and leaves one uncommitted write behind.
    topic.write(0, {"b": None, "e": {"v": 1}}, (25, 6))
    topic.write(0, {"e": {"v": 42}}, (40, 9))
    restored, unchanged = topic.restore(ahead, {0: (25, 6), 1: (7, 0)})

    assert restored == {0: {"a": {"v": 2}, "e": {"v": 1}}, 1: {"c": {"v": 1}, "d": {"v": 1}}}
    assert unchanged == {1}


def test_a_commit_that_accepts_state_the_prefetch_left_out_reads_again(
    broker: LocalBroker,
) -> None:
    topic = StateTopic(broker.bootstrap_servers)
    topic.write(0, {"a": {"v": 1}}, (10, 0))
    topic.write(0, {"b": {"v": 1}, "a": {"v": 2}}, (15, 0))  # committed only after the prefetch
    topic.write(1, {"c": {"v": 1}}, (3, 3))
    ahead = topic.prefetch({0: (10, 0), 1: (3, 3)})

    restored, unchanged = topic.restore(ahead, {0: (15, 0), 1: (3, 3)})

    assert restored == {0: {"a": {"v": 2}, "b": {"v": 1}}, 1: {"c": {"v": 1}}}
    assert list(restored[0]) == ["a", "b"]  # the order a full read gives
    assert unchanged == {1}


def test_offsets_reset_lower_than_the_prefetch_saw_exclude_the_later_state(
    broker: LocalBroker,
) -> None:
    topic = StateTopic(broker.bootstrap_servers)
    topic.write(0, {"a": {"v": 1}}, (10, 0))
    topic.write(0, {"a": {"v": 2}, "b": {"v": 2}}, (20, 0))
    ahead = topic.prefetch({0: (20, 0), 1: (0, 0)})
    assert ahead.prepared[0] == {"a": {"v": 2}, "b": {"v": 2}}

    restored, unchanged = topic.restore(ahead, {0: (10, 0), 1: (0, 0)})  # reset by an operator

    assert restored == {0: {"a": {"v": 1}}, 1: {}}
    assert unchanged == {1}
