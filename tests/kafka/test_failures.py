"""Abortable transaction errors rewind to the last commit; fencing stops the instance."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition

from stream_monitor.brokers import LocalBroker
from stream_monitor.core.events import PREDICTION
from stream_monitor.core.monitor import Monitor
from stream_monitor.core.state import StateCodec
from stream_monitor.kafka import FencedError, StillUnavailable, offsets, restore
from stream_monitor.kafka.service import MonitorService
from stream_monitor.processing.changelog import PartitionWriter
from stream_monitor.processing.partition import PartitionProcessor
from stream_monitor.scenarios import Scenario, generate
from tests.helpers import prediction, records
from tests.kafka.support import (
    KEY,
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
    restored_monitors,
    wait_for,
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


def test_records_waiting_unprocessed_are_reported_with_where_each_partition_stands(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A stall nobody foresaw says what waits: buffered records, idle and paused streams."""
    config = make_config(config_data("127.0.0.1:1", group_id="g"))
    service = MonitorService(config, codec=StateCodec(KEY.encode()))
    processor = PartitionProcessor(
        2,
        Monitor(config.monitor_settings()),
        PartitionWriter(StateCodec(KEY.encode()), 2),
        positions=(7, 3),
    )
    processor.add(0, [r._replace(offset=7) for r in records(PREDICTION, [prediction(7)])])
    service.processors[2] = processor
    predictions = config.kafka.topics.predictions
    service._paused.add((predictions, 2))
    service._idle[(predictions, 2)] = True
    now = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="stream_monitor.kafka.service"):
        service._processed_at = now - 10
        service._report_stall(now)  # waiting, but not for long yet
        assert not caplog.records
        service._processed_at = now - 31
        service._report_stall(now)
        service._report_stall(now + 1)  # once per STALL_REPORT_SECONDS
    assert [r.getMessage() for r in caplog.records] == [
        f"no record processed for 31s: buffered={{2: (1, 0)}} idle=[('{predictions}', 2)] "
        f"paused=[('{predictions}', 2)] positions={{2: [7, 3]}} seeking=[] restoring=[] "
        "silent=[] commits=0"
    ]


class RecordingConsumer:
    """Records what the loop asks of its consumer (the decision is what is tested here)."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.calls.append(("resume", [(tp.topic, tp.partition) for tp in partitions]))

    def seek(self, partition: TopicPartition) -> None:
        self.calls.append(("seek", partition.topic, partition.partition, partition.offset))


def test_a_resumed_stream_that_delivers_nothing_is_sought_again_with_growing_patience(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = make_config(config_data("127.0.0.1:1", group_id="g"))
    service = MonitorService(config, codec=StateCodec(KEY.encode()))
    consumer = RecordingConsumer()
    service._consumer = consumer
    service.processors[2] = PartitionProcessor(
        2,
        Monitor(config.monitor_settings()),
        PartitionWriter(StateCodec(KEY.encode()), 2),
        positions=(7, 0),
    )
    predictions, labels = config.kafka.topics.predictions, config.kafka.topics.labels
    now = time.monotonic()
    service._silent[(predictions, 2)] = (now - 1, 5.0)  # its patience ran out
    service._silent[(labels, 2)] = (now + 3, 5.0)  # not yet
    with caplog.at_level(logging.WARNING, logger="stream_monitor.kafka.service"):
        service._restart_silent_fetches(now)
        service._restart_silent_fetches(now + 4)  # labels' turn; predictions wait 10 s now
    assert consumer.calls == [
        ("resume", [(predictions, 2)]),
        ("seek", predictions, 2, 7),
        ("resume", [(labels, 2)]),
        ("seek", labels, 2, -2),  # nothing processed yet: from the beginning
    ]
    assert service._silent[(predictions, 2)] == (now + 10.0, 10.0)
    assert [r.getMessage() for r in caplog.records] == [
        f"{predictions}/2 delivered nothing for 5s since it was resumed: seeking it again to "
        "offset 7",
        f"{labels}/2 delivered nothing for 5s since it was resumed: seeking it again to offset 0",
    ]


def test_a_zombie_with_the_same_instance_id_is_fenced_and_nothing_is_lost(
    broker: LocalBroker, tmp_path: Path
) -> None:
    """Two processes started with the same instance_id (a copy-pasted config, a pod that was
    thought dead): the second one's init_transactions fences the first, which stops with exit
    code 3 and says why; the second processes everything, and the alerts are the offline run's.

    Apache Kafka only: Tansu 0.6 answers the zombie's commit with a timeout instead of a fencing
    error, and exposes its open records (docs/reliability.md)."""
    if broker.kind != "kafka":
        pytest.skip("zombie fencing needs Apache Kafka (Tansu does not fence)")
    data = config_data(broker.bootstrap_servers, commit_interval="200ms")
    config = make_config(data)
    names = create_topics(config)
    scenario = generate("default", events=EVENTS, seed=13)
    half = len(scenario.predictions) // 2
    first = Scenario(scenario.predictions[:half], scenario.labels[:half])
    produce_scenario(broker.bootstrap_servers, names, first)
    zombie = ServiceProcess(data, tmp_path, "zombie").start()
    try:
        wait_for(lambda: committed_total(config, names.predictions) > 0, 60, "the first to commit")
        successor = ServiceProcess(data, tmp_path, "successor").start()
        try:
            assert zombie.process is not None
            assert zombie.process.wait(90) == 3, zombie.output()
            produce_scenario(
                broker.bootstrap_servers,
                names,
                Scenario(scenario.predictions[half:], scenario.labels[half:]),
            )
            wait_until_consumed(config, names, scenario, 120, "the successor to finish")
        finally:
            assert successor.terminate() == 0, successor.output()
    finally:
        if zombie.process is not None and zombie.process.poll() is None:
            zombie.kill()
    assert "this instance was fenced: another process uses transactional.id" in zombie.output()
    alerts = alert_events(broker.bootstrap_servers, names.alerts)
    ids = [a["id"] for a in alerts]
    assert len(ids) == len(set(ids))
    assert sorted(ids) == sorted(expected_alerts(config, scenario))
    counts = observation_counts(restored_monitors(config))
    for model in ("credit", "fraud", "eta"):
        assert counts[(model, "data_quality/invalid_rate")] == EVENTS


def test_a_restore_that_finds_a_coordinator_still_moving_starts_again(
    broker: LocalBroker, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The committed offsets still unreadable after the reader's own retries (a killed group
    coordinator taking long to move): the restore starts again instead of stopping the service,
    and the alerts are the offline run's."""
    config = make_config(config_data(broker.bootstrap_servers, commit_interval="300ms"))
    names = create_topics(config)
    scenario = generate("default", events=EVENTS, seed=21)
    produce_scenario(broker.bootstrap_servers, names, scenario)
    refused: list[int] = []
    read = offsets.committed_offsets

    def coordinator_moving(consumer: Any, partitions: Any, timeout: float = 30.0) -> Any:
        if threading.current_thread().name.startswith("recovery") and not refused:
            refused.append(len(partitions))
            raise StillUnavailable(
                "cannot read the committed offsets: Broker: Coordinator not available"
            )
        return read(consumer, partitions, timeout)

    monkeypatch.setattr(restore, "committed_offsets", coordinator_moving)
    running = ServiceThread(config)
    with caplog.at_level(logging.WARNING, logger="stream_monitor.kafka.service"), running:
        wait_until_consumed(config, names, scenario, 120, "all input after a restore retried")
    assert refused == [8]  # both input topics of the four partitions
    retries = running.service.metrics.registry.get_sample_value(
        "stream_monitor_state_restore_retries_total"
    )
    assert retries == 1.0
    assert (
        "restoring partitions=[0, 1, 2, 3] failed (cannot read the committed offsets: Broker: "
        "Coordinator not available): trying again" in caplog.text
    )
    alerts = alert_events(broker.bootstrap_servers, names.alerts)
    assert sorted(a["id"] for a in alerts) == sorted(expected_alerts(config, scenario))
