"""Process faults: three kill -9 rounds mid-stream, then scaling 1 → 3 → 1 through rebalances.

The input is seeded and each model's predictions carry a per-model sequence number (its
prediction ids). After all faults: detector observation counts per model equal what was produced
(0 lost, 0 counted twice), no alert id appears twice, and the alerts equal the fault-free run's.

Killed instances always come back with the same instance_id: the embedded broker does not abort a
dead producer's open transaction (docs/reliability.md), and only a successor with the same
transactional.id ever closes it. Scaling down is a clean SIGTERM for the same reason. (On Apache
Kafka, test_broker_faults.py also kills an instance that never comes back.)
"""

from __future__ import annotations

import re
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stream_monitor.brokers import LocalBroker
from stream_monitor.publish import event_producer, publish
from stream_monitor.scenarios import generate
from tests.kafka.support import (
    ServiceProcess,
    alert_events,
    committed_total,
    config_data,
    create_topics,
    expected_alerts,
    make_config,
    observation_counts,
    restored_monitors,
    wait_for,
    wait_until_consumed,
)

pytestmark = [pytest.mark.kafka, pytest.mark.faults]
EVENTS = 3000  # predictions per model, and as many labels
PARTS = 6  # input slices: 3 kill rounds, scale up, run at 3, scale down


def _assignments(process: ServiceProcess) -> list[str]:
    return re.findall(r"assigned partitions=\[([^\]]*)\]", process.output())


def _assigned(process: ServiceProcess) -> bool:
    """Its latest assignment is not empty."""
    found = _assignments(process)
    return bool(found and found[-1])


def _slices(items: list[Any]) -> list[list[Any]]:
    size = -(-len(items) // PARTS)
    return [items[i : i + size] for i in range(0, len(items), size)]


@pytest.mark.slow
@pytest.mark.parametrize("guarantee", ["exactly_once", "at_least_once"])
def test_kills_and_rebalances_lose_nothing_and_duplicate_nothing(
    broker: LocalBroker, tmp_path: Path, guarantee: str, figures: Callable[..., None]
) -> None:
    data = config_data(
        broker.bootstrap_servers,
        processing_guarantee=guarantee,
        commit_interval="300ms",
        batch_size=300,
    )
    config = make_config(data)
    names = create_topics(config)
    scenario = generate("default", events=EVENTS, seed=11)
    parts = list(zip(_slices(scenario.predictions), _slices(scenario.labels), strict=True))
    producer = event_producer(broker.bootstrap_servers)
    sent = 0

    def publish_part(index: int) -> None:
        nonlocal sent
        predictions, labels = parts[index]
        publish(producer, names.predictions, predictions)
        publish(producer, names.labels, labels)
        sent += len(predictions) + len(labels)

    def committed() -> int:
        return committed_total(config, names.predictions) + committed_total(config, names.labels)

    chunks = 200  # of a slice, one every 0.1 s: 20 s of input, far more than a kill waits for
    published = 0  # chunks of the current slice published so far

    def publish_chunk(index: int) -> None:
        nonlocal sent, published
        predictions, labels = parts[index]
        i = published
        chunk = (
            slice(i * len(predictions) // chunks, (i + 1) * len(predictions) // chunks),
            slice(i * len(labels) // chunks, (i + 1) * len(labels) // chunks),
        )
        publish(producer, names.predictions, predictions[chunk[0]])
        publish(producer, names.labels, labels[chunk[1]])
        sent += len(predictions[chunk[0]]) + len(labels[chunk[1]])
        published += 1

    def publish_paced(index: int, stop: threading.Event) -> threading.Thread:
        """Publish the slice a chunk at a time until `stop` (at the speed of Apache Kafka, a
        slice published at once is processed and committed in a blink)."""

        def run() -> None:
            while published < chunks and not stop.wait(0.1):
                publish_chunk(index)

        thread = threading.Thread(target=run, name=f"publish-{index}")
        thread.start()
        return thread

    def recovered(process: ServiceProcess) -> bool:
        return "recovered partitions=" in process.output()

    mid_stream_kills = 0
    current = ServiceProcess(data, tmp_path, "a0").start()
    for round_ in range(3):
        wait_for(lambda p=current: recovered(p), 120, "the instance to restore its partitions")  # type: ignore[misc]
        before = committed()
        published = 0
        stop = threading.Event()
        publishing = publish_paced(round_, stop)
        wait_for(
            lambda before=before: committed() > before,  # type: ignore[misc]
            120,
            "progress before the kill",
            watching=current,
        )
        stop.set()
        publishing.join()
        # Mid-stream: a chunk published a moment before the kill cannot be committed yet (a
        # commit every 300 ms, after a fetch, a batch and a transaction).
        assert published < chunks, "the slice ran out before the instance made progress"
        publish_chunk(round_)
        current.kill()
        mid_stream_kills += committed() < sent
        while published < chunks:
            publish_chunk(round_)
        assert "Traceback" not in current.output(), current.output()
        current = ServiceProcess(data, tmp_path, f"a{round_ + 1}").start()

    # Scale 1 -> 3 while input flows, run at 3, then back to 1 while input flows.
    publish_part(3)
    others = [
        ServiceProcess({**data, "kafka": {**data["kafka"], "instance_id": name}}, tmp_path, name)
        for name in ("b", "c")
    ]
    for other in others:
        other.start()
    members = [current, *others]
    # Each one's latest assignment is not empty and they add up to the 4 partitions: the
    # rebalance for three members has completed.
    wait_for(
        lambda: (
            all(_assigned(p) for p in members)
            and sum(len(_assignments(p)[-1].split(",")) for p in members) == 4
        ),
        120,
        "three members assigned",
    )
    publish_part(4)
    wait_for(lambda: committed() == sent, 120, "the input at three instances")
    if broker.kind == "tansu":
        # One at a time: the embedded broker never completes a rebalance that a member leaves in
        # the middle of (docs/reliability.md has the reproduction), so the next one leaves after.
        for other in others:
            seen = len(_assignments(current))
            assert other.terminate() == 0, other.output()
            wait_for(
                lambda seen=seen: len(_assignments(current)) > seen,  # type: ignore[misc]
                60,
                "the rebalance after an instance left",
            )
    else:
        # Apache Kafka: both leave at once, while the first one's rebalance may be under way.
        for other in others:
            assert other.process is not None
            other.process.send_signal(signal.SIGTERM)
        for other in others:
            assert other.process is not None and other.process.wait(60) == 0, other.output()
        wait_for(lambda: _assignments(current)[-1] == "0, 1, 2, 3", 60, "the rebalance back to one")
    publish_part(5)
    try:
        wait_until_consumed(config, names, scenario, 180, "the input back at one instance")
    finally:
        assert current.terminate() == 0, current.output()
    assert _assignments(current)[-1] == "0, 1, 2, 3", "back at one instance, it owns everything"

    alerts = alert_events(broker.bootstrap_servers, names.alerts)
    ids = [alert["id"] for alert in alerts]
    duplicates = len(ids) - len(set(ids))
    expected = expected_alerts(config, scenario)
    counts = observation_counts(restored_monitors(config))
    lost = {
        model: EVENTS - counts[(model, "data_quality/invalid_rate")]
        for model in ("credit", "fraud", "eta")
    }
    figures(
        guarantee=guarantee,
        events=sent,
        kills=3,
        mid_stream_kills=mid_stream_kills,
        instances="1->3->1",
        alerts=len(ids),
        expected_alerts=len(expected),
        duplicates=duplicates,
        lost=sum(lost.values()),
    )
    assert mid_stream_kills == 3, "every kill must land while input is uncommitted"
    assert duplicates == 0, "an alert id appears twice"
    assert sorted(ids) == sorted(expected)
    assert lost == {"credit": 0, "fraud": 0, "eta": 0}
    assert counts[("credit", "performance/error")] == EVENTS
    assert counts[("eta", "performance/absolute_error")] == EVENTS
    assert counts[("fraud", "feature/amount")] == EVENTS
