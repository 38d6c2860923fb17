"""The forwarder's Kafka clients: their settings, built from config, and its dead-letter topic."""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from stream_monitor.config import Config
from stream_monitor.forward import ForwardError
from stream_monitor.kafka.settings import common, instance_id


def consumer_settings(config: Config) -> dict[str, Any]:
    """The group consumer of the alerts topic: read_committed, offsets stored and committed by
    the forwarder only (`enable.auto.commit` and `enable.auto.offset.store` off)."""
    kafka, forward = config.kafka, config.forward
    settings = common(config)
    settings.update(
        {
            "group.id": forward.group_id,
            "client.id": f"{forward.group_id}-{instance_id(config)}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": forward.start_at,
            "isolation.level": "read_committed",
            "session.timeout.ms": kafka.session_timeout,
            "heartbeat.interval.ms": max(100, (kafka.session_timeout or 10_000) // 5),
            # An alert is forwarded as soon as it is committed, even from brokers that hold
            # fetches for the whole wait when there is nothing new.
            "fetch.wait.max.ms": 100,
        }
    )
    settings.update(kafka.consumer)
    return settings


def producer_settings(config: Config) -> dict[str, Any]:
    """The dead-letter producer: idempotent, so a retried send never writes a letter twice;
    `kafka.producer` (raw librdkafka settings) on top, as for the monitor's producer."""
    settings = common(config)
    settings.update({"enable.idempotence": True, "linger.ms": 5})
    settings.update(config.kafka.producer)
    return settings


def ensure_dead_letter_topic(admin: AdminClient, config: Config) -> None:
    """Create `forward.dead_letter_topic` when it is missing (idempotent)."""
    topic = config.forward.dead_letter_topic
    wanted = NewTopic(topic, config.kafka.partitions, config.kafka.replication_factor)
    try:
        admin.create_topics([wanted], operation_timeout=15, request_timeout=15)[topic].result()
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise ForwardError(f"cannot create topic {topic}: {exc.args[0].str()}") from exc
