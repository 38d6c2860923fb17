"""The correctness holes the partition processor closed, each reproduced through a real broker.

1. An unexpected exception mid-batch committed unprocessed input.
3. Alert ids depended on how the two input topics interleave (labels published first).
4. Unsigned tombstones wiped the state.
5. A key's state was one record, unbounded (hundreds of features).
6. Restores ran inside rebalance callbacks; a first start scanned the output topics from the start.
(2, timestamps, is tested on the pure processor: tests/processing/test_timestamps.py.)
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from confluent_kafka import Producer

from stream_monitor.brokers import LocalBroker
from stream_monitor.cli import main
from stream_monitor.core.monitor import Monitor
from stream_monitor.kafka.restore import PartitionLoader
from stream_monitor.publish import event_producer, publish
from stream_monitor.scenarios import Scenario, generate
from tests.kafka.support import (
    ServiceProcess,
    ServiceThread,
    alert_events,
    committed_total,
    config_data,
    create_topics,
    expected_alerts,
    make_config,
    observation_counts,
    produce_scenario,
    read_topic,
    restored_monitors,
    wait_for,
    wait_until_consumed,
)

pytestmark = pytest.mark.kafka
EVENTS = 2000  # predictions per model, and as many labels


class Boom(RuntimeError):
    """A bug in processing, as opposed to a condition the service handles."""


def test_an_unexpected_error_mid_batch_commits_nothing_it_did_not_process(
    broker: LocalBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue hole 1: the error used to close the consumer, whose revoke callback committed
    the whole batch, including input the monitor never processed."""
    data = config_data(broker.bootstrap_servers, commit_interval="200ms", batch_size=500)
    # A commit every 1,000 records, so that some input is committed before the error whatever the
    # broker's speed (with batches of 500 records from both topics, the merge applies about that
    # many per turn; with batches of thousands, Tansu's fetches can hold back every label until
    # the 7,000th event is reached in the first turn that applies anything).
    data["state"]["checkpoint_max_events"] = 1000
    config = make_config(data)
    names = create_topics(config)
    scenario = generate("default", events=EVENTS, seed=5)
    produce_scenario(broker.bootstrap_servers, names, scenario)
    applied = 0
    original = Monitor.apply

    def apply(self: Monitor, record: Any, event: Any) -> None:
        nonlocal applied
        applied += 1
        if applied == 7000:
            raise Boom("injected on the 7,000th event")
        original(self, record, event)

    monkeypatch.setattr(Monitor, "apply", apply)
    running = ServiceThread(config)
    with pytest.raises(Boom), running:
        wait_for(lambda: running.error is not None, 90, "the injected error")
    committed = committed_total(config, names.predictions) + committed_total(config, names.labels)
    assert 0 < committed < 7000 - 1  # only what was processed (and committed before the error)
    monkeypatch.setattr(Monitor, "apply", original)

    with ServiceThread(config):  # a restart processes the rest, and nothing twice
        wait_until_consumed(config, names, scenario)
    alerts = alert_events(broker.bootstrap_servers, names.alerts)
    ids = [alert["id"] for alert in alerts]
    assert len(ids) == len(set(ids))
    assert sorted(ids) == sorted(expected_alerts(config, scenario))
    counts = observation_counts(restored_monitors(config))
    for model in ("credit", "fraud", "eta"):
        assert counts[(model, "data_quality/invalid_rate")] == EVENTS


def test_an_unexpected_error_stops_run_with_exit_1_and_says_so(
    broker: LocalBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = config_data(broker.bootstrap_servers)
    config = make_config(data)
    names = create_topics(config)
    produce_scenario(broker.bootstrap_servers, names, generate("default", events=50, seed=1))

    def broken(self: Monitor, record: Any, event: Any) -> None:
        raise Boom("a bug in processing")

    monkeypatch.setattr(Monitor, "apply", broken)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(main, ["run", "--config", str(path)])
    assert result.exit_code == 1, result.output
    assert "stopping: unexpected error; nothing after the last commit was committed" in (
        result.output
    )
    assert "Boom: a bug in processing" in result.output  # the traceback is logged
    assert committed_total(config, names.predictions) == 0


def test_labels_published_before_their_predictions_give_the_alerts_of_replay(
    broker: LocalBroker,
) -> None:
    """Issue hole 3: with labels ahead of their predictions, `run` published 3 alerts where
    `replay` of the same events gives 4, with different ids."""
    config = make_config(config_data(broker.bootstrap_servers))
    names = create_topics(config)
    scenario = generate("default", events=EVENTS, seed=7)
    producer = event_producer(broker.bootstrap_servers)
    publish(producer, names.labels, scenario.labels)  # first, in wall-clock time
    publish(producer, names.predictions, scenario.predictions)
    with ServiceThread(config):
        wait_until_consumed(config, names, scenario)
    alerts = {alert["id"]: alert for alert in alert_events(broker.bootstrap_servers, names.alerts)}
    expected = expected_alerts(config, scenario)
    assert sorted(alerts) == sorted(expected)
    assert any(a["data"]["signal_kind"] == "performance" for a in alerts.values())
    for alert_id, alert in alerts.items():
        assert alert == expected[alert_id]  # source positions included


def _halves(scenario: Scenario) -> tuple[Scenario, Scenario]:
    p, q = len(scenario.predictions) // 2, len(scenario.labels) // 2
    return (
        Scenario(scenario.predictions[:p], scenario.labels[:q]),
        Scenario(scenario.predictions[p:], scenario.labels[q:]),
    )


@pytest.mark.parametrize("policy", ["stop", "skip"])
def test_unsigned_tombstones_cannot_wipe_the_state(
    broker: LocalBroker, tmp_path: Path, policy: str
) -> None:
    """Issue hole 4: an unsigned tombstone per changelog key (copying the original headers)
    was accepted; after a restart, an alert an uninterrupted run raises was never raised."""
    data = config_data(broker.bootstrap_servers)
    data["state"]["on_invalid_record"] = policy
    config = make_config(data)
    names = create_topics(config)
    scenario = generate("default", events=EVENTS, seed=7)
    first, second = _halves(scenario)
    produce_scenario(broker.bootstrap_servers, names, first)
    with ServiceThread(config):
        wait_until_consumed(config, names, first)
    producer = Producer({"bootstrap.servers": broker.bootstrap_servers})
    genuine = read_topic(broker.bootstrap_servers, names.state)
    assert genuine
    for message in genuine:  # an attacker's deletion of every key, with the headers copied
        producer.produce(
            names.state,
            key=message.key(),
            value=None,
            partition=message.partition(),
            headers=message.headers(),
        )
    producer.flush(10)
    produce_scenario(broker.bootstrap_servers, names, second)
    service = ServiceProcess(data, tmp_path).start()
    if policy == "stop":
        assert service.process is not None
        assert service.process.wait(90) == 1
        log = service.output()
        assert "stopping: state deletion (tombstone) is not signed" in log, log
        assert f"({names.state}/" in log and "state.on_invalid_record=stop)" in log, log
        return
    try:
        wait_until_consumed(config, names, scenario)
    finally:
        assert service.terminate() == 0, service.output()
    assert "left out a state record that does not verify" in service.output()
    alerts = [alert["id"] for alert in alert_events(broker.bootstrap_servers, names.alerts)]
    assert sorted(alerts) == sorted(expected_alerts(config, scenario))


def test_a_model_with_hundreds_of_features_checkpoints_and_restores(
    broker: LocalBroker, tmp_path: Path
) -> None:
    """Issue hole 5: with ~300 features one key's state passed message.max.bytes; the produce
    error was retried forever while /healthz stayed green."""
    data = config_data(broker.bootstrap_servers, commit_interval="300ms")
    config = make_config(data)
    names = create_topics(config)
    features = [f"feature_{i:03d}" for i in range(500)]  # limits.max_features
    predictions = [
        {
            "prediction_id": f"p{i}",
            "model": "wide",
            "prediction": 0.5,
            "timestamp": 1_767_225_600_000 + i,
            "features": {name: float((i * 7 + k) % 13) for k, name in enumerate(features)},
        }
        for i in range(600)
    ]
    producer = event_producer(broker.bootstrap_servers)
    publish(producer, names.predictions, predictions[:300])
    first = ServiceProcess(data, tmp_path, "first").start()
    try:
        wait_for(lambda: committed_total(config, names.predictions) == 300, 120, "300 events")
    finally:
        assert first.terminate() == 0, first.output()
    state = read_topic(broker.bootstrap_servers, names.state)
    assert max(len(m.value() or b"") for m in state) < 1_000_000
    parts = {m.key() for m in state if (m.key() or b"").startswith(b"k:wide")}
    assert len(parts) >= 2  # one key's state, split across records that each fit
    publish(producer, names.predictions, predictions[300:])
    second = ServiceProcess(data, tmp_path, "second").start()
    try:
        wait_for(lambda: committed_total(config, names.predictions) == 600, 120, "600 events")
    finally:
        assert second.terminate() == 0, second.output()
    counts = observation_counts(restored_monitors(config))
    assert all(counts[("wide", f"feature/{name}")] == 600 for name in features)
    assert "Traceback" not in first.output() + second.output()


def test_a_slow_restore_does_not_block_the_group_and_a_first_start_skips_old_outputs(
    broker: LocalBroker, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue hole 6: restores ran inside the assignment callback (past max.poll.interval.ms they
    cost the membership), and a first start read the output topics from their beginning."""
    data = config_data(broker.bootstrap_servers)
    data["kafka"]["consumer"] = {"max.poll.interval.ms": 6000}
    config = make_config(data)
    names = create_topics(config)
    producer = Producer({"bootstrap.servers": broker.bootstrap_servers})
    for i in range(500):  # someone else's alerts, already on the topic
        producer.produce(names.alerts, value=b'{"id": "old-%d"}' % i)
    producer.flush(10)
    scenario = generate("default", events=500, seed=3)
    produce_scenario(broker.bootstrap_servers, names, scenario)
    original = PartitionLoader.load

    def slow_load(self: PartitionLoader, partitions: list[int], **kwargs: Any) -> Any:
        time.sleep(9)  # longer than max.poll.interval.ms
        return original(self, partitions, **kwargs)

    monkeypatch.setattr(PartitionLoader, "load", slow_load)
    caplog.set_level(logging.INFO, logger="stream_monitor")
    with ServiceThread(config) as running:
        wait_until_consumed(config, names, scenario, timeout=120)
        assert running.service.counters.consumed == len(scenario.predictions) + len(scenario.labels)
    messages = [record.getMessage() for record in caplog.records]
    assert len([m for m in messages if m.startswith("assigned partitions=")]) == 1
    assert not [m for m in messages if m.startswith(("revoking", "partitions lost"))][:-1]
    recovered = [m for m in messages if m.startswith("recovered partitions")]
    assert len(recovered) == 1, recovered
    if broker.kind == "kafka":
        assert "outputs_read=0 " in recovered[0], recovered
    # Tansu 0.6 reports the base offset of a partition's last record batch + 1 as its end, so a
    # first start there reads back up to one batch of old outputs (docs/reliability.md).


def test_recovery_logs_where_outputs_were_read_from(broker: LocalBroker, tmp_path: Path) -> None:
    """A restart reads the alerts published since the last state checkpoint, not all of them."""
    data = config_data(broker.bootstrap_servers)
    config = make_config(data)
    names = create_topics(config)
    scenario = generate("default", events=EVENTS, seed=7)
    produce_scenario(broker.bootstrap_servers, names, scenario)
    first = ServiceProcess(data, tmp_path, "first").start()
    try:
        wait_until_consumed(config, names, scenario)
    finally:
        assert first.terminate() == 0, first.output()
    second = ServiceProcess(data, tmp_path, "second").start()
    try:
        wait_for(lambda: "recovered partitions" in second.output(), 60, "the recovery")
    finally:
        assert second.terminate() == 0, second.output()
    found = re.search(r"recovered partitions=.* outputs_read=(\d+)", second.output())
    assert found and int(found.group(1)) == 0, second.output()  # all before the checkpoint
    assert len(alert_events(broker.bootstrap_servers, names.alerts)) == len(
        expected_alerts(config, scenario)
    )
