"""Broker faults on three Apache Kafka nodes (replication factor 3, min.insync.replicas 2).

kill -9 the leader of an input partition mid-stream, or the coordinator of the monitor's
transactions (exactly once) or of its consumer group (at least once), then restart it. And two
monitor instances with different instance ids, one killed and never restarted (a Deployment whose
pod names change): the survivor takes over. In each case: per-model observation counts equal
what was produced (0 lost, 0 counted twice), no alert id twice, and the alerts of a fault-free run.

Apache Kafka only: the embedded broker is a single in-memory node.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from stream_monitor.apache_kafka import KafkaCluster, transaction_coordinator_partition
from stream_monitor.publish import event_producer, publish
from stream_monitor.scenarios import Scenario, generate
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
    unique,
    wait_for,
    wait_until_consumed,
    wait_until_no_open_transaction,
)

pytestmark = [pytest.mark.kafka, pytest.mark.faults, pytest.mark.slow]
EVENTS = 2000  # predictions per model, and as many labels
MODELS = ("credit", "fraud", "eta")


@pytest.fixture(scope="module")
def cluster(broker_kind: str) -> Iterator[KafkaCluster]:
    if broker_kind != "kafka":
        pytest.skip("broker faults need three Apache Kafka nodes (the embedded broker has one)")
    with KafkaCluster(3) as running:
        yield running


@pytest.fixture(autouse=True)
def whole_cluster(cluster: KafkaCluster) -> Iterator[None]:
    """After each case, the nodes it killed are running again, whether it passed or not: one
    case that fails with a node down must not fail every case after it."""
    yield
    cluster.heal()


def _parts(scenario: Scenario, count: int) -> list[Scenario]:
    def cut(items: list[Any], index: int) -> list[Any]:
        size = -(-len(items) // count)
        return items[index * size : (index + 1) * size]

    return [Scenario(cut(scenario.predictions, i), cut(scenario.labels, i)) for i in range(count)]


def _leader(admin: AdminClient, topic: str, partition: int) -> int:
    metadata = admin.list_topics(topic, timeout=10).topics[topic]
    return int(metadata.partitions[partition].leader)


def _busiest_partition(bootstrap: str, topic: str, partitions: int) -> int:
    """The input partition holding the most events (models hash onto some partitions only)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("probe")})
    try:
        ends = [
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(partitions)
        ]
    finally:
        consumer.close()
    return max(range(partitions), key=lambda p: ends[p])


def _check_outcome(config: Any, names: Any, scenario: Scenario) -> dict[str, Any]:
    bootstrap = config.kafka.bootstrap_servers
    alerts = alert_events(bootstrap, names.alerts)
    ids = [alert["id"] for alert in alerts]
    expected = expected_alerts(config, scenario)
    counts = observation_counts(restored_monitors(config))
    lost = {model: EVENTS - counts.get((model, "data_quality/invalid_rate"), 0) for model in MODELS}
    outcome = {
        "alerts": len(ids),
        "expected_alerts": len(expected),
        "duplicates": len(ids) - len(set(ids)),
        "lost": sum(lost.values()),
    }
    assert outcome["duplicates"] == 0, "an alert id appears twice"
    assert sorted(ids) == sorted(expected)
    assert lost == dict.fromkeys(MODELS, 0)
    assert counts[("credit", "performance/error")] == EVENTS
    assert counts[("eta", "performance/absolute_error")] == EVENTS
    return outcome


@pytest.mark.parametrize(
    ("guarantee", "victim"),
    [
        ("exactly_once", "input partition leader"),
        ("at_least_once", "input partition leader"),
        ("exactly_once", "transaction coordinator"),
        ("exactly_once", "group coordinator"),  # send_offsets_to_transaction goes through it
        ("at_least_once", "group coordinator"),
    ],
)
def test_a_killed_broker_loses_nothing_and_duplicates_nothing(
    cluster: KafkaCluster,
    tmp_path: Path,
    guarantee: str,
    victim: str,
    figures: Callable[..., None],
) -> None:
    bootstrap = cluster.bootstrap_servers
    data = config_data(
        bootstrap,
        processing_guarantee=guarantee,
        commit_interval="300ms",
        batch_size=500,
        replication_factor=3,
    )
    config = make_config(data)
    names = create_topics(config)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    scenario = generate("default", events=EVENTS, seed=13)
    first, second, third = _parts(scenario, 3)
    producer = event_producer(bootstrap)
    publish(producer, names.predictions, first.predictions)
    publish(producer, names.labels, first.labels)
    service = ServiceProcess(data, tmp_path).start()
    try:
        wait_for(lambda: committed_total(config, names.predictions) > 0, 90, "the first commit")
        if victim == "input partition leader":
            partition = _busiest_partition(bootstrap, names.predictions, config.kafka.partitions)
            node = _leader(admin, names.predictions, partition)
        elif victim == "transaction coordinator":
            transactional_id = f"{config.kafka.group_id}-{config.kafka.instance_id}"
            node = _leader(
                admin, "__transaction_state", transaction_coordinator_partition(transactional_id)
            )
        else:
            described = admin.describe_consumer_groups([config.kafka.group_id])
            node = described[config.kafka.group_id].result().coordinator.id
        # Mid-stream: the second part is published while the node is down.
        cluster.kill(node)
        killed = time.monotonic()
        publish(producer, names.predictions, second.predictions)
        publish(producer, names.labels, second.labels)
        done = len(first.predictions) + len(second.predictions)
        wait_for(
            lambda: committed_total(config, names.predictions) == done,
            120,
            "the input published while a broker was down",
        )
        progressed = time.monotonic() - killed
        cluster.restart(node)
        publish(producer, names.predictions, third.predictions)
        publish(producer, names.labels, third.labels)
        wait_until_consumed(config, names, scenario, 180, "the input after the restart")
    finally:
        assert service.terminate() == 0, service.output()
    assert "Traceback" not in service.output(), service.output()
    outcome = _check_outcome(config, names, scenario)
    figures(
        guarantee=guarantee,
        killed=f"{victim} (node {node})",
        events=2 * (len(scenario.predictions)),
        seconds_to_process_the_input_published_while_down=round(progressed, 1),
        **outcome,
    )


def _assignments(process: ServiceProcess) -> list[list[int]]:
    found = re.findall(r"assigned partitions=\[([^\]]*)\]", process.output())
    return [[int(p) for p in entry.split(",") if p.strip()] for entry in found]


def test_a_killed_instance_that_never_returns_is_taken_over(
    cluster: KafkaCluster, tmp_path: Path, figures: Callable[..., None]
) -> None:
    """Two instances with their own transactional ids; one is killed mid-transaction for good.

    Its successor cannot fence it (another transactional.id): the broker aborts its open
    transaction after `transaction.timeout.ms`. Until then the transaction blocks
    read_committed readers of the partitions it wrote to, and its pending offset commit blocks
    the survivor's read of the committed offsets of the partitions it takes over.
    """
    bootstrap = cluster.bootstrap_servers
    timeout_ms = 10_000
    data = config_data(
        bootstrap,
        commit_interval="300ms",
        batch_size=200,
        replication_factor=3,
        producer={"transaction.timeout.ms": timeout_ms},
    )
    config = make_config(data)
    names = create_topics(config)
    scenario = generate("default", events=EVENTS, seed=17)
    first, second = _parts(scenario, 2)
    producer = event_producer(bootstrap)
    publish(producer, names.predictions, first.predictions)
    publish(producer, names.labels, first.labels)
    survivor = ServiceProcess(data, tmp_path, "survivor").start()
    other = {**data, "kafka": {**data["kafka"], "instance_id": "b"}}
    doomed = ServiceProcess(other, tmp_path, "doomed").start()
    try:

        def split_between_both() -> bool:
            latest = [found[-1] for found in map(_assignments, (survivor, doomed)) if found]
            return len(latest) == 2 and all(latest) and sum(map(len, latest)) == 4

        wait_for(split_between_both, 120, "the partitions split between both instances")
        committed = committed_total(config, names.predictions)
        # Keep input flowing, so that the kill lands inside an open transaction.
        publish(producer, names.predictions, second.predictions[: len(second.predictions) // 2])
        publish(producer, names.labels, second.labels[: len(second.labels) // 2])
        wait_for(
            lambda: committed_total(config, names.predictions) > committed,
            60,
            "both instances to make progress",
        )
        doomed.kill()
        killed = time.monotonic()
        wait_for(
            lambda: _assignments(survivor)[-1] == [0, 1, 2, 3],
            60,
            "the survivor to be assigned every partition",
        )
        assigned = time.monotonic() - killed
        publish(producer, names.predictions, second.predictions[len(second.predictions) // 2 :])
        publish(producer, names.labels, second.labels[len(second.labels) // 2 :])
        wait_until_consumed(config, names, scenario, 180, "the survivor to finish the input")
        finished = time.monotonic() - killed
    finally:
        assert survivor.terminate() == 0, survivor.output()
    # The survivor's alerts are committed, but read_committed readers see them only once the
    # broker has aborted the dead instance's transaction that was open before them.
    wait_until_no_open_transaction(bootstrap, names.alerts, timeout_ms / 1000 + 30)
    visible = time.monotonic() - killed
    outcome = _check_outcome(config, names, scenario)
    figures(
        transaction_timeout_ms=timeout_ms,
        seconds_to_reassignment=round(assigned, 1),
        seconds_to_all_input_committed=round(finished, 1),
        seconds_until_alerts_readable=round(visible, 1),
        **outcome,
    )


HOLDER = """
import sys, time
from confluent_kafka import Producer
producer = Producer({"bootstrap.servers": sys.argv[1], "transactional.id": sys.argv[3],
                     "transaction.timeout.ms": int(sys.argv[4])})
producer.init_transactions(30)
producer.begin_transaction()
producer.produce(sys.argv[2], value=b"open, never committed", partition=0)
producer.flush(30)
print("open", flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize("timeout_ms", [10_000, 60_000])
def test_a_dead_producers_open_transaction_blocks_readers_until_its_timeout(
    cluster: KafkaCluster, tmp_path: Path, timeout_ms: int, figures: Callable[..., None]
) -> None:
    """How long read_committed readers wait behind a killed producer's open transaction."""
    import subprocess
    import sys

    bootstrap = cluster.bootstrap_servers
    topic = unique("blocked")
    admin = AdminClient({"bootstrap.servers": bootstrap})
    from confluent_kafka.admin import NewTopic

    admin.create_topics([NewTopic(topic, 1, 3)])[topic].result()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, bootstrap, topic, unique("holder"), str(timeout_ms)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
    finally:
        holder.kill()
        holder.wait(10)
    killed = time.monotonic()
    producer = event_producer(bootstrap)
    producer.produce(topic, value=b"committed after the open transaction", partition=0)
    assert producer.flush(30) == 0
    reader = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": unique("reader"),
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
        }
    )
    reader.assign([TopicPartition(topic, 0, 0)])
    seen: list[bytes] = []
    try:
        deadline = killed + timeout_ms / 1000 + 60
        while not seen and time.monotonic() < deadline:
            seen = [m.value() for m in reader.consume(10, 0.1) if m.error() is None]
    finally:
        reader.close()
    blocked = time.monotonic() - killed
    assert seen == [b"committed after the open transaction"], "the dead transaction leaked"
    # Aborted by the coordinator once the timeout has passed (it checks every 10 s by default).
    assert timeout_ms / 1000 - 2 <= blocked <= timeout_ms / 1000 + 15
    figures(transaction_timeout_ms=timeout_ms, readers_blocked_seconds=round(blocked, 1))
