"""The Faust runtime against the confluent-kafka runtime: same input, same alerts, same dead letters.

Both read the same seeded input topics (each with its own group, alert and dead-letter topics).
Alert ids and contents must agree; only `source` (it names the group) and `source_position` (which
of the two records completed a join depends on how the topics interleave) may differ.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from stream_monitor.brokers import LocalBroker
from stream_monitor.processing import deadletters
from stream_monitor.publish import event_producer, publish
from stream_monitor.scenarios import generate
from tests.kafka.support import (
    ServiceProcess,
    ServiceThread,
    alert_events,
    config_data,
    create_topics,
    expected_alerts,
    make_config,
    observation_counts,
    produce_scenario,
    read_topic,
    restored_monitors,
    unique,
    wait_until_consumed,
    without_position,
)
from tests.kafka.test_recovery import OutputWatcher

pytestmark = pytest.mark.kafka
EVENTS = 3000  # per model; drift injected at 1500
BAD_PREDICTIONS = [
    (b"model-x", b"{not json"),
    (b"credit", orjson.dumps({"prediction_id": "b1", "model": "credit", "score": "high"})),
    (b"fraud", orjson.dumps({"model": "fraud", "prediction": 1})),
]


def comparable(alert: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in without_position(alert).items() if k != "source"}


def dead_letters(
    bootstrap: str, topic: str
) -> dict[str, tuple[bytes | None, bytes, dict[str, str]]]:
    found = {}
    for message in read_topic(bootstrap, topic):
        headers = deadletters.header_dict(message.headers())
        found[headers[deadletters.DEAD_LETTER_ID]] = (message.key(), message.value(), headers)
    return found


def test_faust_and_confluent_runtimes_give_the_same_alerts_and_dead_letters(
    broker: LocalBroker, tmp_path: Path
) -> None:
    kafka_data = config_data(broker.bootstrap_servers)
    faust_data = config_data(broker.bootstrap_servers, processing_guarantee="at_least_once")
    faust_data["kafka"]["topics"].update(
        predictions=kafka_data["kafka"]["topics"]["predictions"],
        labels=kafka_data["kafka"]["topics"]["labels"],
    )
    kafka_config, faust_config = make_config(kafka_data), make_config(faust_data)
    names = create_topics(kafka_config)
    faust_names = create_topics(faust_config)
    scenario = generate("default", events=EVENTS, seed=7)
    produce_scenario(broker.bootstrap_servers, names, scenario)
    producer = Producer(
        {"bootstrap.servers": broker.bootstrap_servers, "partitioner": "murmur2_random"}
    )
    for key, value in BAD_PREDICTIONS:
        producer.produce(names.predictions, key=key, value=value)
    producer.flush(10)
    scenario.predictions.extend({} for _ in BAD_PREDICTIONS)  # counted as produced, below

    faust = ServiceProcess(faust_data, tmp_path, "faust", engine="faust").start()
    try:
        with ServiceThread(kafka_config):
            wait_until_consumed(kafka_config, names, scenario)
            wait_until_consumed(faust_config, names, scenario, what="the Faust runtime to finish")
    finally:
        assert faust.terminate() == 0, faust.output()
    assert "stopped cleanly" in faust.output()

    by_kafka = {a["id"]: a for a in alert_events(broker.bootstrap_servers, names.alerts)}
    by_faust = alert_events(broker.bootstrap_servers, faust_names.alerts)
    assert sorted(a["id"] for a in by_faust) == sorted(by_kafka)
    assert len(by_kafka) >= 3
    for alert in by_faust:
        assert comparable(alert) == comparable(by_kafka[alert["id"]])
        assert alert["source"] == f"stream-monitor/{faust_config.kafka.group_id}"

    kafka_letters = dead_letters(broker.bootstrap_servers, names.dead_letters)
    faust_letters = dead_letters(broker.bootstrap_servers, faust_names.dead_letters)
    assert len(faust_letters) == len(BAD_PREDICTIONS)
    assert faust_letters == kafka_letters


def test_faust_restart_after_kill_restores_state_and_loses_no_alert(
    broker: LocalBroker, tmp_path: Path
) -> None:
    data = config_data(
        broker.bootstrap_servers, processing_guarantee="at_least_once", commit_interval="1s"
    )
    config = make_config(data)
    names = create_topics(config)
    scenario = generate("default", events=EVENTS, seed=11)
    # The first worker sees 60% (past the change point, so it alerts) and is killed; the rest is
    # published while it is down, so the second worker must carry on from the restored state.
    cut_predictions = int(len(scenario.predictions) * 0.6)
    cut_labels = int(len(scenario.labels) * 0.6)
    producer = event_producer(broker.bootstrap_servers)
    publish(producer, names.predictions, scenario.predictions[:cut_predictions])
    publish(producer, names.labels, scenario.labels[:cut_labels])

    watcher = OutputWatcher(broker.bootstrap_servers, names.alerts, config.kafka.partitions)
    # The first worker is Faust's own command on the importable app, the second `run --engine`.
    first = ServiceProcess(data, tmp_path, unique("first"), engine="faust -A").start()
    try:
        watcher.wait_for_first(timeout=60)
    finally:
        first.kill()
    publish(producer, names.predictions, scenario.predictions[cut_predictions:])
    publish(producer, names.labels, scenario.labels[cut_labels:])

    second = ServiceProcess(data, tmp_path, unique("second"), engine="faust").start()
    try:
        wait_until_consumed(config, names, scenario, 60, "the restarted worker to finish")
    finally:
        assert second.terminate() == 0, second.output()
    log = second.output()
    assert re.search(r"recovered partitions=\[[0-9, ]+\] keys=[1-9]", log), log

    # At least once: a batch the first worker published but had not committed comes again, with
    # the same ids. Every expected alert is there, and nothing else.
    ids = {a["id"] for a in alert_events(broker.bootstrap_servers, names.alerts)}
    assert ids == set(expected_alerts(config, scenario))
    # Observation counts equal the events produced: state was restored, nothing counted twice.
    counts = observation_counts(restored_monitors(config))
    for model in ("credit", "fraud", "eta"):
        assert counts[(model, "data_quality/invalid_rate")] == EVENTS
        performance = "performance/absolute_error" if model == "eta" else "performance/error"
        assert counts[(model, performance)] == EVENTS
