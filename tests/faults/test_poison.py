"""Poison input: >10k hostile messages between good events, and a kill -9 in the middle of them.

Every bad message must reach the dead-letter topic once, with the reason the event contract gives;
every good event must reach its detectors once; the monitor must never crash; and the kill proves
offsets were never committed past input that was not yet processed (or it would be missing here).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from stream_monitor.brokers import LocalBroker
from stream_monitor.core.events import PREDICTION, Record
from stream_monitor.core.monitor import Monitor
from stream_monitor.processing import deadletters
from stream_monitor.scenarios import BASE_TIME_MS, generate
from tests.faults.hostile import EXTREME_MODEL, Hostile, hostile_messages
from tests.helpers import config as core_config
from tests.kafka.support import (
    ServiceProcess,
    committed_total,
    config_data,
    create_topics,
    make_config,
    observation_counts,
    read_topic,
    restored_monitors,
    wait_for,
)

pytestmark = [pytest.mark.kafka, pytest.mark.faults]
HOSTILE = 12_000
BIG = 3  # payloads of 10 MB
GOOD = 600  # predictions per model (and as many labels)


def test_every_hostile_message_gets_the_promised_reason_from_the_core() -> None:
    """The generator's expectations hold for the pure core (so the Kafka test checks transport)."""
    messages = hostile_messages(seed=5, count=HOSTILE, big=BIG)
    records = [Record(h.kind, h.value, None, "t", 0, i) for i, h in enumerate(messages)]
    output = Monitor(core_config().monitor_settings()).process(records)
    reasons = {dead.record.offset: dead.error.reason for dead in output.dead_letters}
    assert {i: h.reason for i, h in enumerate(messages) if h.reason} == reasons
    assert sum(1 for h in messages if h.reason) >= 10_000


def _interleave(
    seed: int, good: list[tuple[str, dict[str, Any]]], hostile: list[Hostile]
) -> list[tuple[str, bytes | None, bytes, list[tuple[str, bytes]], str]]:
    """(kind, key, value, headers, reason) in a seeded mixed order; good events keep their order."""
    rng = random.Random(seed)
    slots = [True] * len(good) + [False] * len(hostile)
    rng.shuffle(slots)
    good_iter, hostile_iter = iter(good), iter(hostile)
    mixed = []
    for is_good in slots:
        if is_good:
            kind, event = next(good_iter)
            headers = [("x-unknown", rng.randbytes(8))] if rng.random() < 0.3 else []
            mixed.append((kind, event["model"].encode(), orjson.dumps(event), headers, "good"))
        else:
            h = next(hostile_iter)
            mixed.append((h.kind, h.key, h.value, h.headers, h.reason))
    return mixed


@pytest.mark.parametrize(
    "guarantee", ["exactly_once", pytest.param("at_least_once", marks=pytest.mark.slow)]
)
def test_poison_input_is_dead_lettered_and_good_input_processed_across_a_kill(
    broker: LocalBroker, tmp_path: Path, guarantee: str, figures: Callable[..., None]
) -> None:
    data = config_data(broker.bootstrap_servers, processing_guarantee=guarantee, batch_size=500)
    config = make_config(data)
    # The input topics take 10 MB records, as a cluster that raised its limits would (Apache
    # Kafka's default is 1 MiB); the monitor's own topics keep the broker's defaults.
    big_enough = {"max.message.bytes": str(16 * 1024 * 1024)}
    admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    inputs = [config.kafka.topics.predictions, config.kafka.topics.labels]
    for future in admin.create_topics(
        [NewTopic(topic, config.kafka.partitions, 1, config=big_enough) for topic in inputs]
    ).values():
        future.result()
    names = create_topics(config)
    scenario = generate("stable", events=GOOD, seed=21)
    good = [(PREDICTION, e) for e in scenario.predictions] + [("label", e) for e in scenario.labels]
    mixed = _interleave(3, good, hostile_messages(seed=5, count=HOSTILE, big=BIG))
    topics = {PREDICTION: names.predictions, "label": names.labels}

    # The producer must be allowed to send 10 MB records for the monitor to be tested on them.
    producer = Producer(
        {
            "bootstrap.servers": broker.bootstrap_servers,
            "partitioner": "murmur2_random",
            "message.max.bytes": 16 * 1024 * 1024,
            "linger.ms": 20,
        }
    )
    where: dict[tuple[str, int, int], str] = {}  # (topic, partition, offset) -> reason or "good"
    failures: list[str] = []

    def publish(part: list[tuple[str, bytes | None, bytes, list[tuple[str, bytes]], str]]) -> None:
        for kind, key, value, headers, reason in part:

            def delivered(error: Any, message: Any, reason: str = reason) -> None:
                if error is not None:
                    failures.append(error.str())
                else:
                    where[(message.topic(), message.partition(), message.offset())] = reason

            while True:
                try:
                    # Record time in the scenario's era: events without their own timestamp fall
                    # back to it, and must not expire the scenario's pending joins (7-day TTL).
                    producer.produce(
                        topics[kind],
                        key=key,
                        value=value,
                        headers=headers,
                        timestamp=BASE_TIME_MS,
                        on_delivery=delivered,
                    )
                    break
                except BufferError:
                    producer.poll(0.05)
        assert producer.flush(60) == 0 and not failures, failures

    half = len(mixed) // 2
    publish(mixed[:half])
    first = ServiceProcess(data, tmp_path, "first").start()
    try:
        wait_for(
            lambda: committed_total(config, names.predictions) > 0,
            90,
            "the first commit",
            watching=first,
        )
    finally:
        first.kill()
    at_kill = committed_total(config, names.predictions) + committed_total(config, names.labels)
    publish(mixed[half:])
    second = ServiceProcess(data, tmp_path, "second").start()
    produced = Counter(topic for topic, _, _ in where)
    try:
        wait_for(
            lambda: (
                committed_total(config, names.predictions) == produced[names.predictions]
                and committed_total(config, names.labels) == produced[names.labels]
            ),
            180,
            "every input offset committed",
            watching=second,
        )
    finally:
        assert second.terminate() == 0, second.output()
    for run in (first, second):
        assert "Traceback" not in run.output(), run.output()

    letters = read_topic(broker.bootstrap_servers, names.dead_letters, idle=3)
    found: dict[tuple[str, int, int], str] = {}
    for message in letters:
        headers = deadletters.header_dict(message.headers())
        origin = (
            headers[deadletters.ORIGINAL_TOPIC],
            int(headers[deadletters.ORIGINAL_PARTITION]),
            int(headers[deadletters.ORIGINAL_OFFSET]),
        )
        assert origin not in found, f"dead-lettered twice: {origin}"
        found[origin] = headers[deadletters.REASON]
        assert headers[deadletters.EXCEPTION_MESSAGE]
        if headers[deadletters.REASON] == "oversized":
            assert headers[deadletters.TRUNCATED] == "true"
            assert len(message.value()) < 1_000_000
    expected = {origin: reason for origin, reason in where.items() if reason not in ("good", "")}
    assert found == expected

    counts = observation_counts(restored_monitors(config))
    for model, feature in (("credit", "income"), ("fraud", "amount"), ("eta", "distance")):
        assert counts[(model, f"feature/{feature}")] == GOOD
    assert counts[("credit", "performance/error")] == GOOD
    marker = f'"model":"{EXTREME_MODEL}"'.encode()
    extreme = sum(1 for h in mixed if h[0] == PREDICTION and marker in h[2])
    assert counts[(EXTREME_MODEL, "data_quality/invalid_rate")] == extreme

    reasons = Counter(found.values())
    figures(
        guarantee=guarantee,
        good_events=len(good),
        hostile=HOSTILE,
        bad=len(expected),
        dead_lettered=len(found),
        duplicates=len(letters) - len(found),
        kills=1,
        committed_at_kill=at_kill,
        crashes=0,
        reasons=dict(sorted(reasons.items())),
    )
