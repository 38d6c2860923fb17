"""librdkafka settings for every client, built from config: raw passthrough plus what we require."""

from __future__ import annotations

import logging
import socket
from typing import Any

from stream_monitor.config import Config
from stream_monitor.secrets import redact

log = logging.getLogger(__name__)


def instance_id(config: Config) -> str:
    """Stable per instance: it names the transactional.id, which must survive restarts."""
    return config.kafka.instance_id or socket.gethostname()


LIBRDKAFKA_LOGGER = logging.getLogger("stream_monitor.librdkafka")


def common(config: Config) -> dict[str, Any]:
    # librdkafka's own log lines go through Python logging (quiet unless --log-level DEBUG);
    # the service reports connectivity itself, one clear line per attempt.
    settings: dict[str, Any] = {
        "bootstrap.servers": config.kafka.bootstrap_servers,
        "logger": LIBRDKAFKA_LOGGER,
    }
    settings.update(config.kafka.client)
    return settings


def consumer_settings(config: Config, **overrides: Any) -> dict[str, Any]:
    kafka = config.kafka
    settings = common(config)
    settings.update(
        {
            "group.id": kafka.group_id,
            "client.id": f"{kafka.group_id}-{instance_id(config)}",
            "enable.auto.commit": False,
            # Offsets are stored only after a record is fully processed, and committed by us.
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            # range keeps partition p of predictions and of labels on the same member (co-partitioning).
            "partition.assignment.strategy": "range",
            "session.timeout.ms": kafka.session_timeout,
            "heartbeat.interval.ms": max(100, (kafka.session_timeout or 10_000) // 5),
            # A fetch returns once data is there, or after this wait when there is none (librdkafka
            # waits 500 ms). Some brokers hold every fetch for the full wait, which then adds to
            # each alert's latency; 100 ms bounds that for 10 idle fetch requests a second.
            "fetch.wait.max.ms": 100,
        }
    )
    if kafka.group_protocol == "consumer":
        # KIP-848: the broker assigns, incrementally. Its range assignor keeps partition p of
        # every subscribed topic on one member (co-partitioning); session and heartbeat timing
        # are the broker's, and librdkafka rejects the classic settings.
        for classic in (
            "partition.assignment.strategy",
            "session.timeout.ms",
            "heartbeat.interval.ms",
        ):
            del settings[classic]
        settings["group.protocol"] = "consumer"
        settings["group.remote.assignor"] = "range"
    if kafka.static_membership:
        settings["group.instance.id"] = f"{kafka.group_id}-{instance_id(config)}"
    settings.update(kafka.consumer)
    settings.update(overrides)
    return settings


def reader_settings(config: Config, purpose: str, **overrides: Any) -> dict[str, Any]:
    """A group-less consumer (assign only, never commits) for restores and scans."""
    settings = common(config)
    settings.update(
        {
            "group.id": f"{config.kafka.group_id}-{purpose}",
            "client.id": f"{config.kafka.group_id}-{instance_id(config)}-{purpose}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            # Restores read to the end and stop: do not wait for more data that will not come.
            "fetch.wait.max.ms": 10,
        }
    )
    # The group consumer's membership settings mean nothing to a consumer that never joins, and
    # some are checked against each other (max.poll.interval.ms >= session.timeout.ms).
    settings.update(
        (key, value) for key, value in config.kafka.consumer.items() if key not in MEMBERSHIP
    )
    settings.update(overrides)
    return settings


MEMBERSHIP = frozenset(
    {
        "session.timeout.ms",
        "heartbeat.interval.ms",
        "max.poll.interval.ms",
        "group.instance.id",
        "group.protocol",
        "group.remote.assignor",
        "partition.assignment.strategy",
    }
)


def producer_settings(config: Config, **overrides: Any) -> dict[str, Any]:
    kafka = config.kafka
    settings = common(config)
    settings.update(
        {
            "client.id": f"{kafka.group_id}-{instance_id(config)}",
            "enable.idempotence": True,
            # The Java client's partitioner: a model key lands where a Java producer would put it.
            "partitioner": "murmur2_random",
            "linger.ms": 5,
            "compression.type": "lz4",
            # A checkpoint with many keys produces tens of MB of state faster than the broker
            # takes it; librdkafka's default queue (1 GB) would hold it all in this process.
            # When the queue is full, produce waits for deliveries instead.
            "queue.buffering.max.kbytes": 65_536,
        }
    )
    if kafka.processing_guarantee == "exactly_once":
        settings["transactional.id"] = f"{kafka.group_id}-{instance_id(config)}"
        # A dead instance's open transaction blocks read_committed readers of the partitions it
        # wrote to until the broker aborts it, this long after it began (plus up to 10 s: the
        # broker looks for timed-out transactions every 10 s). Kafka Streams uses 10 s too.
        settings.setdefault("transaction.timeout.ms", 10_000)
    settings.update(kafka.producer)
    settings.update(overrides)
    return settings


def admin_settings(config: Config) -> dict[str, Any]:
    return common(config)


def describe(settings: dict[str, Any]) -> str:
    """For logs: every setting, secrets redacted."""
    shown = {key: value for key, value in settings.items() if not callable(value)}
    return " ".join(f"{key}={value}" for key, value in sorted(redact(shown).items()))
