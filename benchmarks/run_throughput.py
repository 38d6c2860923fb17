"""`stream-monitor run` throughput against the machine's limit, measured in the same run.

L = raw confluent-kafka `consume(10000)` + `orjson.loads` of the same events on the same broker.
Then the monitor service in exactly-once and at-least-once mode over the same topics (fresh
consumer group each), with the detection settings of the shipped `configs/example.yaml` (every
default signal). Workload: predictions with 4 numeric features each, plus labels for 80% of
them. Throughput is counted from the first to the last processed event (group join excluded).

    python benchmarks/run_throughput.py [--predictions 100000] [--broker kafka|tansu]
"""

from __future__ import annotations

import argparse
import logging
import random
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import yaml
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from stream_monitor.brokers import chosen_kind, local_broker
from stream_monitor.config import build_config
from stream_monitor.core.state import StateCodec
from stream_monitor.kafka.service import MonitorService
from stream_monitor.kafka.topics import ensure_topics
from stream_monitor.publish import event_producer, publish

MODELS = 10
SHIPPED_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "example.yaml"


def shipped_detection(path: Path = SHIPPED_CONFIG) -> dict[str, Any]:
    """What a config (the shipped example by default) says about detection; its kafka section
    is ours to set."""
    data = yaml.safe_load(path.read_text())
    return {key: value for key, value in data.items() if key not in ("kafka", "metrics")}


def workload(predictions: int, seed: int = 1) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rng = random.Random(seed)
    events, labels = [], []
    for i in range(predictions):
        model = f"model-{i % MODELS}"
        events.append(
            {
                "prediction_id": f"p{i}",
                "model": model,
                "prediction": rng.random() < 0.5,
                "timestamp": 1_767_225_600_000 + i,
                "features": {f"f{k}": rng.gauss(0.0, 1.0) for k in range(4)},
            }
        )
        if rng.random() < 0.8:
            labels.append(
                {
                    "prediction_id": f"p{i}",
                    "model": model,
                    "label": rng.random() < 0.5,
                    "timestamp": 1_767_225_660_000 + i,
                }
            )
    return events, labels


def raw_consume(bootstrap: str, topics: list[str], partitions: int, total: int) -> float:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"raw-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.assign([TopicPartition(t, p, 0) for t in topics for p in range(partitions)])
    seen, started = 0, None
    loads = orjson.loads
    while seen < total:
        batch = consumer.consume(10000, 0.2)
        if batch and started is None:
            started = time.perf_counter()
        for message in batch:
            if message.error() is None:
                loads(message.value())
                seen += 1
    elapsed = time.perf_counter() - (started or time.perf_counter())
    consumer.close()
    return total / elapsed


def service_run(
    bootstrap: str,
    topics: dict[str, str],
    guarantee: str,
    total: int,
    session_timeout: str = "6s",
    kafka: dict[str, Any] | None = None,
    detection: dict[str, Any] | None = None,
) -> float:
    run = uuid.uuid4().hex[:6]
    config = build_config(
        {
            **(shipped_detection() if detection is None else detection),
            "kafka": {
                "bootstrap_servers": bootstrap,
                "group_id": f"bench-{run}",
                "instance_id": "bench",
                "session_timeout": session_timeout,
                "processing_guarantee": guarantee,
                "topics": {**topics, "alerts": f"alerts-{run}", "dead_letters": f"dlq-{run}"},
                **(kafka or {}),
            },
        },
        environ={},
    )
    ensure_topics(AdminClient({"bootstrap.servers": bootstrap}), config)
    stop = threading.Event()
    service = MonitorService(config, codec=StateCodec(b"benchmark-signing-key"), stop=stop)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            service.run()
        except BaseException as exc:  # raised below: a dead service must not hang the bench
            failure.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def waiting(done: bool) -> bool:
        if failure:
            raise RuntimeError(f"the service stopped: {failure[0]!r}") from failure[0]
        if not done and time.monotonic() > deadline:
            raise RuntimeError(f"the service processed {service.counters.processed} of {total}")
        return not done

    deadline = time.monotonic() + 600
    # Timed from the first processed batch, so only the events after it count.
    while waiting((already := service.counters.processed) > 0):
        time.sleep(0.001)
    started = time.perf_counter()
    while waiting(service.counters.processed >= total):
        time.sleep(0.005)
    elapsed = time.perf_counter() - started
    stop.set()
    thread.join(60)
    return (total - already) / max(elapsed, 1e-3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--predictions", type=int, default=100_000)
    parser.add_argument("--broker", help="kafka (Apache Kafka, default) or tansu")
    parser.add_argument(
        "--config",
        type=Path,
        default=SHIPPED_CONFIG,
        help="the detection settings of this config (default: configs/example.yaml)",
    )
    args = parser.parse_args()
    detection = shipped_detection(args.config)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("stream_monitor.librdkafka").setLevel(logging.CRITICAL)
    events, labels = workload(args.predictions)
    total = len(events) + len(labels)
    with local_broker(chosen_kind(args.broker)) as broker:
        topics = {"predictions": "bench-predictions", "labels": "bench-labels"}
        seed = build_config(
            {"kafka": {"bootstrap_servers": broker.bootstrap_servers, "topics": topics}}, environ={}
        )
        ensure_topics(AdminClient({"bootstrap.servers": broker.bootstrap_servers}), seed)
        producer = event_producer(broker.bootstrap_servers)
        publish(producer, topics["predictions"], events)
        publish(producer, topics["labels"], labels)
        # Best of two: the first read of a topic can include the broker's warm-up.
        limit = max(
            raw_consume(
                broker.bootstrap_servers, list(topics.values()), seed.kafka.partitions, total
            )
            for _ in range(2)
        )
        rows = [("L: raw consume(10000) + orjson.loads", limit)]
        for guarantee in ("exactly_once", "at_least_once"):
            rows.append(
                (
                    f"stream-monitor run, {guarantee}",
                    service_run(
                        broker.bootstrap_servers, topics, guarantee, total, detection=detection
                    ),
                )
            )
    print(
        f"{len(events)} predictions (4 numeric features) + {len(labels)} labels, {MODELS} models, 4 partitions"
    )
    print(f"{'path':42} {'events/s':>10} {'x L':>7}")
    for name, rate in rows:
        print(f"{name:42} {rate:10,.0f} {rate / limit:7.3f}")


if __name__ == "__main__":
    main()
