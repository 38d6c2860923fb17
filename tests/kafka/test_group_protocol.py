"""KIP-848 consumer groups (`kafka.group_protocol: consumer`): the broker assigns, incrementally.

The monitor merges partition p of predictions with partition p of labels, so both must land on
the same instance. With the classic protocol the client's `range` assignor guarantees it; with
KIP-848 the broker's `range` assignor does, for topics with the same partition count. This test
shows it on Apache Kafka while a second instance joins and leaves, and that nothing is lost or
published twice. (Tansu 0.6 does not implement the KIP-848 protocol.)
"""

from __future__ import annotations

import pytest

from stream_monitor.brokers import LocalBroker
from stream_monitor.scenarios import generate
from tests.kafka.support import (
    ServiceThread,
    alert_events,
    config_data,
    create_topics,
    expected_alerts,
    make_config,
    observation_counts,
    produce_scenario,
    restored_monitors,
    wait_for,
    wait_until_consumed,
)

pytestmark = pytest.mark.kafka
EVENTS = 1500


def owned(running: ServiceThread) -> dict[str, set[int]]:
    """Topic -> partitions this instance's consumer holds now."""
    consumer = running.service._consumer
    found: dict[str, set[int]] = {}
    if consumer is None:
        return found
    for tp in consumer.assignment():
        found.setdefault(tp.topic, set()).add(tp.partition)
    return found


def test_the_brokers_assignor_keeps_both_streams_of_a_partition_together(
    broker: LocalBroker,
) -> None:
    if broker.kind != "kafka":
        pytest.skip("the KIP-848 group protocol needs Apache Kafka")
    data = config_data(broker.bootstrap_servers, group_protocol="consumer")
    config = make_config(data)
    names = create_topics(config)
    streams = (names.predictions, names.labels)
    scenario = generate("default", events=EVENTS, seed=21)
    half = len(scenario.predictions) // 2
    first = type(scenario)(scenario.predictions[:half], scenario.labels[:half])
    produce_scenario(broker.bootstrap_servers, names, first)

    def together(*members: ServiceThread) -> bool:
        """Each member holds the same partitions of both topics; together, all of them."""
        held = [owned(member) for member in members]
        every = set(range(config.kafka.partitions))
        return (
            all(h.get(streams[0], set()) == h.get(streams[1], set()) for h in held)
            and all(h.get(streams[0]) for h in held)
            and set().union(*(h[streams[0]] for h in held)) == every
            and sum(len(h[streams[0]]) for h in held) == len(every)
        )

    with ServiceThread(config) as first_member:
        wait_for(lambda: together(first_member), 60, "the first instance to hold everything")
        second_config = make_config({**data, "kafka": {**data["kafka"], "instance_id": "b"}})
        with ServiceThread(second_config) as second_member:
            wait_for(
                lambda: together(first_member, second_member),
                60,
                "the partitions to split between both instances, both streams together",
            )
            split = (owned(first_member), owned(second_member))
            produce_scenario(
                broker.bootstrap_servers,
                names,
                type(scenario)(scenario.predictions[half:], scenario.labels[half:]),
            )
            wait_until_consumed(config, names, scenario, 90)
        wait_for(lambda: together(first_member), 60, "the first instance to take everything back")

    assert all(part[streams[0]] == part[streams[1]] for part in split)
    alerts = alert_events(broker.bootstrap_servers, names.alerts)
    ids = [alert["id"] for alert in alerts]
    assert len(ids) == len(set(ids))
    assert sorted(ids) == sorted(expected_alerts(config, scenario))
    counts = observation_counts(restored_monitors(config))
    for model in ("credit", "fraud", "eta"):
        assert counts[(model, "data_quality/invalid_rate")] == EVENTS
