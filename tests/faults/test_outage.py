"""Broker outage mid-run: the monitor retries and says so, then recovers or exits, as configured.

Each test stops its own broker (of the session's kind). Apache Kafka comes back with its data.
The embedded broker keeps everything in memory, so it comes back empty: the test creates the
topics again and publishes the input again, and the monitor must process it as a fresh run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from stream_monitor.brokers import LocalBroker, local_broker
from stream_monitor.scenarios import Scenario, generate
from tests.kafka.support import (
    ServiceProcess,
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

pytestmark = [pytest.mark.kafka, pytest.mark.faults]
EVENTS = 600


@pytest.fixture
def own_broker(broker_kind: str) -> Iterator[LocalBroker]:
    broker = local_broker(broker_kind).start()
    try:
        yield broker
    finally:
        broker.close()


@pytest.mark.slow
@pytest.mark.parametrize("guarantee", ["exactly_once", "at_least_once"])
def test_outage_is_retried_and_logged_then_processing_recovers(
    own_broker: LocalBroker, tmp_path: Path, guarantee: str, figures: Callable[..., None]
) -> None:
    data = config_data(
        own_broker.bootstrap_servers, processing_guarantee=guarantee, commit_interval="500ms"
    )
    # Records stuck in a producer the restarted broker no longer knows fail after 10 s (instead of
    # librdkafka's 5 min), so the monitor replaces that producer and rewinds sooner.
    data["kafka"]["producer"] = {"message.timeout.ms": 10_000}
    config = make_config(data)
    names = create_topics(config)
    scenario = generate("default", events=EVENTS, seed=4)
    half = Scenario(
        scenario.predictions[: len(scenario.predictions) // 2],
        scenario.labels[: len(scenario.labels) // 2],
    )
    rest = Scenario(
        scenario.predictions[len(half.predictions) :], scenario.labels[len(half.labels) :]
    )
    produce_scenario(own_broker.bootstrap_servers, names, half)
    service = ServiceProcess(data, tmp_path).start()
    try:
        wait_until_consumed(config, names, half, 90, "the input before the outage")
        own_broker.stop()
        # Down for longer than the session timeout: the group membership is lost for sure.
        wait_for(lambda: "partitions lost" in service.output(), 60, "the session to expire")
        own_broker.start()
        republished = 0
        if not own_broker.durable:  # it came back empty: the whole input again, a fresh run
            create_topics(config)
            produce_scenario(own_broker.bootstrap_servers, names, half)
            republished = len(half.predictions) + len(half.labels)
        produce_scenario(own_broker.bootstrap_servers, names, rest)
        wait_until_consumed(config, names, scenario, 180, "the input after the outage")
    finally:
        assert service.terminate() == 0, service.output()
    log = service.output()
    unreachable = [
        line
        for line in log.splitlines()
        if f"kafka unreachable bootstrap_servers={own_broker.bootstrap_servers}" in line
    ]
    assert unreachable and all(line.endswith("; retrying") for line in unreachable), log
    assert "kafka reachable again after" in log and "Traceback" not in log

    # What the restarted broker holds was processed exactly as an uninterrupted run would.
    alerts = alert_events(own_broker.bootstrap_servers, names.alerts)
    ids = [alert["id"] for alert in alerts]
    assert len(ids) == len(set(ids))
    assert sorted(ids) == sorted(expected_alerts(config, scenario))
    counts = observation_counts(restored_monitors(config))
    for model in ("credit", "fraud", "eta"):
        assert counts[(model, "data_quality/invalid_rate")] == EVENTS
    figures(
        guarantee=guarantee,
        broker="apache kafka" if own_broker.durable else "tansu (restarted empty)",
        events=len(scenario.predictions) + len(scenario.labels) + republished,
        outage_log_lines=len(unreachable),
        producer_replaced="replaced the producer" in log,
        duplicates=len(ids) - len(set(ids)),
    )


def test_outage_longer_than_the_limit_exits_with_a_clear_error(
    own_broker: LocalBroker, tmp_path: Path
) -> None:
    data = config_data(
        own_broker.bootstrap_servers, on_broker_down="exit", broker_down_timeout="4s"
    )
    config = make_config(data)
    names = create_topics(config)
    scenario = generate("default", events=200, seed=4)
    produce_scenario(own_broker.bootstrap_servers, names, scenario)
    service = ServiceProcess(data, tmp_path).start()
    assert service.process is not None
    wait_until_consumed(config, names, scenario, 90, "the input before the outage")
    own_broker.stop()
    code = service.process.wait(60)
    log = service.output()
    assert code == 1, log
    assert "kafka unreachable bootstrap_servers=" in log and "; retrying" in log
    assert "stopping: kafka unreachable for more than 4s (kafka.on_broker_down=exit)" in log, log
    assert "Traceback" not in log
