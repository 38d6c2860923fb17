"""Restart mid-stream — clean, and kill -9 while a transaction is open — in both guarantees.

After the restart, processing continues from committed state; no alert id appears twice; the
detectors' observation counts equal the events produced; the alerts equal an uninterrupted run's.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from stream_monitor.brokers import LocalBroker
from stream_monitor.publish import event_producer, publish
from stream_monitor.scenarios import generate
from tests.kafka.support import (
    ServiceProcess,
    alert_events,
    config_data,
    create_topics,
    expected_alerts,
    make_config,
    observation_counts,
    restored_monitors,
    unique,
    wait_until_consumed,
)

pytestmark = pytest.mark.kafka
EVENTS = 3000


class OutputWatcher:
    """Assigned before the service starts, so it is already fetching when the first record lands."""

    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": unique("watch"),
                "isolation.level": "read_uncommitted",
                "enable.auto.commit": False,
            }
        )
        self.consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        self.consumer.consume(1, 0.5)  # connect and start fetching now

    def wait_for_first(self, timeout: float) -> None:
        """Block until any record (committed or not) appears."""
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if any(m.error() is None for m in self.consumer.consume(10, 0.02)):
                    return
            raise AssertionError(f"no output within {timeout}s")
        finally:
            self.consumer.close()


@pytest.mark.parametrize("guarantee", ["exactly_once", "at_least_once"])
@pytest.mark.parametrize("how", ["kill -9", "SIGTERM"])
def test_restart_mid_stream_loses_nothing_and_duplicates_nothing(
    broker: LocalBroker, tmp_path: Path, guarantee: str, how: str
) -> None:
    data = config_data(
        broker.bootstrap_servers,
        processing_guarantee=guarantee,
        commit_interval="1s",
        batch_size=500,
    )
    config = make_config(data)
    names = create_topics(config)
    scenario = generate("default", events=EVENTS, seed=7)
    # The first instance only ever sees the first 60% (past the change point, so it alerts); the
    # rest is published while it is down, so the restart always has work left to prove itself on.
    cut_predictions, cut_labels = (
        int(len(scenario.predictions) * 0.6),
        int(len(scenario.labels) * 0.6),
    )
    producer = event_producer(broker.bootstrap_servers)
    publish(producer, names.predictions, scenario.predictions[:cut_predictions])
    publish(producer, names.labels, scenario.labels[:cut_labels])

    watcher = OutputWatcher(broker.bootstrap_servers, names.alerts, config.kafka.partitions)
    first = ServiceProcess(data, tmp_path, "first").start()
    try:
        watcher.wait_for_first(timeout=90)
    finally:
        if how == "kill -9":
            first.kill()
        else:
            assert first.terminate() == 0, first.output()
    publish(producer, names.predictions, scenario.predictions[cut_predictions:])
    publish(producer, names.labels, scenario.labels[cut_labels:])

    second = ServiceProcess(data, tmp_path, "second").start()
    try:
        wait_until_consumed(
            config, names, scenario, 120, "the restarted monitor to finish the input"
        )
    finally:
        assert second.terminate() == 0, second.output()
    log = second.output()
    # Restored through the prefetch read during the group join (tests/kafka/test_prefetch.py).
    assert re.search(r"recovered partitions=\[0, 1, 2, 3\] .* prefetched=\[0, 1, 2, 3\]", log), log

    alerts = alert_events(broker.bootstrap_servers, names.alerts)
    ids = [a["id"] for a in alerts]
    assert len(ids) == len(set(ids)), "an alert id appears twice"
    assert sorted(ids) == sorted(expected_alerts(config, scenario))
    counts = observation_counts(restored_monitors(config))
    for model in ("credit", "fraud", "eta"):
        assert counts[(model, "data_quality/invalid_rate")] == EVENTS
        assert (
            counts[(model, "performance/absolute_error" if model == "eta" else "performance/error")]
            == EVENTS
        )
    if how == "kill -9" and not broker.aborts_dead_transactions:
        # The first alert became visible before its commit: the successor must have found it.
        assert "will not be re-emitted" in log, log
