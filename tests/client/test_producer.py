"""The SDK through a real broker: librdkafka's own murmur2_random agrees with its partitions,
whatever the caller's producer settings a model's predictions and labels meet in one partition
and are joined by the monitor, invalid calls send nothing, and delivery errors surface."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from stream_monitor.brokers import LocalBroker
from stream_monitor.client import (
    AsyncMonitorProducer,
    DeliveryError,
    InvalidEvent,
    MonitorProducer,
    UndeliveredEvent,
    partition_for,
)
from tests.kafka.support import (
    ServiceThread,
    committed_total,
    config_data,
    create_topics,
    make_config,
    read_topic,
    unique,
    wait_for,
)

pytestmark = pytest.mark.kafka


def new_topic(broker: LocalBroker, partitions: int, **config: str) -> str:
    name = unique("sdk")
    admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    admin.create_topics([NewTopic(name, partitions, 1, config=config)])[name].result(30)
    wait_for(lambda: name in admin.list_topics(timeout=5).topics, 10, "topic metadata")
    return name


def random_keys(count: int) -> list[str]:
    rng = random.Random(18)
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789-_.éü模型🙂"
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40))) for _ in range(count)]


def test_the_sdk_partitions_every_key_where_librdkafkas_murmur2_random_does(
    broker: LocalBroker,
) -> None:
    topic = new_topic(broker, 7)
    keys = random_keys(2000)
    chosen: dict[str, int] = {}

    def delivered(error: Any, message: Any) -> None:
        assert error is None, error
        chosen[message.key().decode()] = message.partition()

    librdkafka = Producer(
        {"bootstrap.servers": broker.bootstrap_servers, "partitioner": "murmur2_random"}
    )
    for key in keys:
        librdkafka.produce(topic, b"{}", key.encode(), on_delivery=delivered)
        librdkafka.poll(0)
    assert librdkafka.flush(30) == 0
    assert len(chosen) == len(set(keys))
    assert {key: partition_for(key.encode(), 7) for key in keys} == chosen
    assert len(set(chosen.values())) == 7


def test_predictions_and_labels_share_a_partition_and_join_whatever_the_partitioner(
    broker: LocalBroker,
) -> None:
    config = make_config(config_data(broker.bootstrap_servers))
    names = create_topics(config)
    # crc32-based: left to itself, this producer would scatter a model's keys differently.
    theirs = Producer(
        {"bootstrap.servers": broker.bootstrap_servers, "partitioner": "consistent_random"}
    )
    models = ["credit", "fraud", "eta", "churn", "ltv"]
    with MonitorProducer(
        producer=theirs, predictions_topic=names.predictions, labels_topic=names.labels
    ) as sdk:
        for i in range(400):
            model = models[i % len(models)]
            prediction_id = sdk.log_prediction(
                model=model,
                prediction=i % 2,
                score=0.5,
                features={"x": float(i)},
                timestamp=1_767_225_600_000 + i,
            )
            sdk.log_label(
                model=model,
                prediction_id=prediction_id,
                label=i % 3 == 0,
                timestamp=1_767_225_600_500 + i,
            )
    for topic in (names.predictions, names.labels):
        by_model: dict[str, set[int]] = {}
        for message in read_topic(broker.bootstrap_servers, topic):
            by_model.setdefault(message.key().decode(), set()).add(message.partition())
        assert by_model == {
            model: {partition_for(model.encode(), config.kafka.partitions)} for model in models
        }
    with ServiceThread(config) as running:
        wait_for(lambda: committed_total(config, names.labels) == 400, 60, "labels consumed")
        matched = sum(
            processor.monitor.join.counters.matched
            for processor in running.service.processors.values()
        )
    assert matched == 400


def test_an_invalid_call_raises_and_sends_nothing(broker: LocalBroker) -> None:
    topic = new_topic(broker, 2)
    with MonitorProducer(
        bootstrap_servers=broker.bootstrap_servers, predictions_topic=topic, labels_topic=topic
    ) as sdk:
        with pytest.raises(InvalidEvent) as caught:
            sdk.log_prediction(model="credit", prediction=1, score=float("nan"))
        assert (caught.value.reason, caught.value.field) == ("invalid_value", "score")
        with pytest.raises(ValueError):
            sdk.log_label(model="credit", prediction_id="", label=1)
        good = sdk.log_prediction(model="credit", prediction=1)
    values = [orjson.loads(m.value()) for m in read_topic(broker.bootstrap_servers, topic)]
    assert [value["prediction_id"] for value in values] == [good]


def test_delivery_errors_reach_the_callback_and_flush(
    broker: LocalBroker, broker_kind: str
) -> None:
    if broker_kind == "tansu":
        pytest.skip("Tansu 0.6 does not enforce a topic's max.message.bytes: no delivery error")
    topic = new_topic(broker, 1, **{"max.message.bytes": "2000"})
    seen: list[UndeliveredEvent] = []
    sdk = MonitorProducer(
        bootstrap_servers=broker.bootstrap_servers,
        predictions_topic=topic,
        labels_topic=topic,
        on_delivery_error=seen.append,
        # One message per request, uncompressed: the broker judges this record alone.
        settings={"linger.ms": 0, "compression.type": "none"},
    )
    big = sdk.log_prediction(model="credit", prediction=1, features={"text": "x" * 5000})
    with pytest.raises(DeliveryError) as caught:
        sdk.flush(30)
    assert caught.value.failed == 1 and caught.value.undelivered == 0
    assert [(f.topic, f.model, f.prediction_id, f.code) for f in seen] == [
        (topic, "credit", big, "MSG_SIZE_TOO_LARGE")
    ]
    assert caught.value.failures == seen
    sdk.log_prediction(model="credit", prediction=1)
    sdk.flush(30)  # failures are reported once: the next flush is clean


def test_topics_and_limits_come_from_the_monitors_config_file(
    broker: LocalBroker, tmp_path: Path
) -> None:
    data = config_data(broker.bootstrap_servers)
    data["events"] = {"max_bytes": 300}
    path = tmp_path / "monitor.yaml"
    path.write_text(yaml.safe_dump(data))
    names = create_topics(make_config(data))
    with MonitorProducer(config=path) as sdk:
        assert (sdk.predictions_topic, sdk.labels_topic) == (names.predictions, names.labels)
        with pytest.raises(InvalidEvent, match="300 byte limit"):
            sdk.log_prediction(model="credit", prediction=1, features={"x": "y" * 300})
        prediction_id = sdk.log_prediction(model="credit", prediction=1)
        sdk.log_label(model="credit", prediction_id=prediction_id, label=1)
    assert len(read_topic(broker.bootstrap_servers, names.predictions)) == 1
    assert len(read_topic(broker.bootstrap_servers, names.labels)) == 1


def test_the_asyncio_variant_awaits_each_delivery(broker: LocalBroker) -> None:
    topic = new_topic(broker, 3)

    async def main() -> list[str]:
        async with AsyncMonitorProducer(
            bootstrap_servers=broker.bootstrap_servers, predictions_topic=topic, labels_topic=topic
        ) as sdk:
            ids = await asyncio.gather(
                *(sdk.log_prediction(model=f"m{i % 4}", prediction=i) for i in range(200))
            )
            with pytest.raises(InvalidEvent):
                await sdk.log_label(model="m0", prediction_id=ids[0], label=None)
            return list(ids)

    ids = asyncio.run(main())
    messages = read_topic(broker.bootstrap_servers, topic)
    assert sorted(orjson.loads(m.value())["prediction_id"] for m in messages) == sorted(ids)
    assert all(m.partition() == partition_for(m.key(), 3) for m in messages)
