"""Topic names and idempotent creation: inputs, alerts, dead letters, and internal topics."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from stream_monitor.config import Config
from stream_monitor.kafka import KafkaRuntimeError
from stream_monitor.kafka.retry import give_up_after, with_retry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopicNames:
    predictions: str
    labels: str
    alerts: str
    dead_letters: str
    state: str
    repartition_predictions: str
    repartition_labels: str

    @classmethod
    def from_config(cls, config: Config) -> TopicNames:
        topics, group = config.kafka.topics, config.kafka.group_id
        return cls(
            predictions=topics.predictions,
            labels=topics.labels,
            alerts=topics.alerts,
            dead_letters=topics.dead_letters,
            state=f"{group}-state-changelog",
            repartition_predictions=f"{group}-repartition-predictions",
            repartition_labels=f"{group}-repartition-labels",
        )


class TopicMismatch(KafkaRuntimeError):
    """An existing topic has a partition count the monitor cannot work with."""


def wanted_topics(config: Config) -> list[NewTopic]:
    names = TopicNames.from_config(config)
    kafka = config.kafka
    count, replicas = kafka.partitions, kafka.replication_factor
    topics = [
        NewTopic(names.predictions, count, replicas),
        NewTopic(names.labels, count, replicas),
        NewTopic(names.alerts, count, replicas),
        NewTopic(names.dead_letters, count, replicas),
        # Compacted: only the newest state per key matters. The lag keeps a superseded record for
        # an hour, so a restore can fall back to it when a newer one lies beyond committed input.
        NewTopic(
            names.state,
            count,
            replicas,
            config={"cleanup.policy": "compact", "min.compaction.lag.ms": "3600000"},
        ),
    ]
    if kafka.partitioning == "repartition":
        topics.append(NewTopic(names.repartition_predictions, count, replicas))
        topics.append(NewTopic(names.repartition_labels, count, replicas))
    return topics


def wait_for_broker(
    admin: AdminClient, config: Config, stop: threading.Event | None = None
) -> None:
    """The first contact: retried with backoff while the broker is unreachable."""
    kafka = config.kafka
    with_retry(
        f"reach kafka at {kafka.bootstrap_servers}",
        lambda: admin.list_topics(timeout=5),
        stop=stop or threading.Event(),
        give_up_after=give_up_after(kafka.on_broker_down, kafka.broker_down_timeout),
    )


def partition_counts(admin: AdminClient, timeout: float = 10.0) -> dict[str, int]:
    metadata = admin.list_topics(timeout=timeout)
    return {
        name: len(topic.partitions) for name, topic in metadata.topics.items() if not topic.error
    }


def ensure_topics(admin: AdminClient, config: Config, timeout: float = 15.0) -> dict[str, str]:
    """Create what is missing; report existing topics with the wrong partition count.

    Returns topic -> "created" | "exists". Raises TopicMismatch naming every offending topic.
    """
    wanted = wanted_topics(config)
    outcome: dict[str, str] = {}
    futures = admin.create_topics(wanted, operation_timeout=timeout, request_timeout=timeout)
    for name, future in futures.items():
        try:
            future.result()
            outcome[name] = "created"
        except KafkaException as exc:
            error = exc.args[0]
            if error.code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise KafkaRuntimeError(f"cannot create topic {name}: {error.str()}") from exc
            outcome[name] = "exists"
    # A created topic reaches every broker's metadata cache a moment later (Apache Kafka answers
    # CreateTopics before that): wait for it rather than report it missing.
    created = {name for name, result in outcome.items() if result == "created"}
    deadline = time.monotonic() + timeout
    counts = partition_counts(admin)
    while not created <= counts.keys() and time.monotonic() < deadline:
        time.sleep(0.05)
        counts = partition_counts(admin)
    check_partitions(admin, config, wanted, counts)
    return outcome


def check_partitions(
    admin: AdminClient,
    config: Config,
    wanted: list[NewTopic] | None = None,
    counts: dict[str, int] | None = None,
) -> None:
    """Co-partitioning is what keeps a model's join and detectors on one instance: verify it."""
    counts = partition_counts(admin) if counts is None else counts
    names = TopicNames.from_config(config)
    # Alerts and dead letters may have any partition count; the rest must line up.
    free = {names.alerts, names.dead_letters}
    problems = []
    for topic in wanted or wanted_topics(config):
        actual = counts.get(topic.topic)
        if actual is None:
            problems.append(f"{topic.topic}: missing (run 'stream-monitor topics create')")
        elif actual != topic.num_partitions and topic.topic not in free:
            problems.append(
                f"{topic.topic}: has {actual} partitions, config expects {topic.num_partitions}"
            )
    if problems:
        raise TopicMismatch(
            "topic layout does not match kafka.partitions: "
            + "; ".join(problems)
            + ". Input, state and repartition topics must all have the same partition count."
        )
