"""Abortable transaction errors rewind to the last commit; fencing stops the instance."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer

from stream_monitor.brokers import LocalBroker
from stream_monitor.core.state import StateCodec
from stream_monitor.kafka import FencedError
from stream_monitor.kafka.service import MonitorService
from stream_monitor.scenarios import generate
from tests.kafka.support import (
    KEY,
    ServiceThread,
    alert_events,
    config_data,
    create_topics,
    expected_alerts,
    make_config,
    observation_counts,
    produce_scenario,
    restored_monitors,
    wait_until_consumed,
)

pytestmark = pytest.mark.kafka
EVENTS = 3000


class FlakyProducer(Producer):  # type: ignore[misc]
    """A real producer whose every third commit fails with an abortable error."""

    commits = 0
    failures = 0

    def commit_transaction(self, *args: Any) -> None:
        type(self).commits += 1
        if type(self).commits % 3 == 0:
            type(self).failures += 1
            raise KafkaException(
                KafkaError(KafkaError._STATE, "injected abortable failure", txn_requires_abort=True)
            )
        super().commit_transaction(*args)


def test_abortable_commit_failures_rewind_and_lose_or_duplicate_nothing(
    broker: LocalBroker,
) -> None:
    data = config_data(
        broker.bootstrap_servers, commit_interval="300ms", commit_max_events=1000, batch_size=400
    )
    # A state checkpoint (a commit) every 1,000 records whatever the broker's speed: 18,000
    # records make at least 18 commits, so at least 6 injected failures.
    data["state"]["checkpoint_max_events"] = 1000
    config = make_config(data)
    names = create_topics(config)
    scenario = generate("default", events=EVENTS, seed=9)
    produce_scenario(broker.bootstrap_servers, names, scenario)

    running = ServiceThread(config)
    running.service = MonitorService(
        config, codec=StateCodec(KEY.encode()), stop=running.stop, producer_factory=FlakyProducer
    )
    with running:
        wait_until_consumed(
            config, names, scenario, 120, "all input committed despite failing commits"
        )
    assert FlakyProducer.failures >= 3
    alerts = alert_events(broker.bootstrap_servers, names.alerts)
    ids = [a["id"] for a in alerts]
    assert len(ids) == len(set(ids))
    assert sorted(ids) == sorted(expected_alerts(config, scenario))
    counts = observation_counts(restored_monitors(config))
    assert counts[("credit", "performance/error")] == EVENTS
    assert counts[("fraud", "feature/amount")] == EVENTS


def test_fencing_is_fatal_with_a_clear_message() -> None:
    config = make_config(config_data("127.0.0.1:1", group_id="g", instance_id="node-7"))
    service = MonitorService(config, codec=StateCodec(KEY.encode()))
    with pytest.raises(FencedError) as caught:
        service._on_commit_error(KafkaError(KafkaError._FENCED, "fenced by a newer producer"))
    message = str(caught.value)
    assert "another process uses transactional.id 'g-node-7'" in message
    assert "Give every instance its own kafka.instance_id" in message
