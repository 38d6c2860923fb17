"""The Faust runtime's throughput next to the confluent-kafka runtime and the machine's limit.

One run, one broker, the same events (`run_throughput.workload`): L = raw confluent-kafka
`consume(10000)` + `orjson.loads`; `stream-monitor run` (confluent-kafka) at least once and
exactly once; then the Faust runtime (`run --engine faust`) in this process. Rates count from the
first to the last processed event, so group joins and worker start-up are excluded.

    python benchmarks/faust_throughput.py [--predictions 100000] [--broker kafka|tansu]
    python benchmarks/faust_throughput.py --only-faust --bootstrap B --total N   # prints JSON

`--only-faust` runs the Faust row alone over topics already published by `publish_and_measure_limit`
(the suite runs it that way, in a process of its own: the worker takes over signal handlers).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from typing import Any

from confluent_kafka.admin import AdminClient

from stream_monitor.brokers import chosen_kind, local_broker
from stream_monitor.config import build_config
from stream_monitor.core.state import StateCodec
from stream_monitor.faust_runtime import create_app, install, work
from stream_monitor.kafka.topics import ensure_topics
from stream_monitor.publish import event_producer, publish

try:  # imported as part of a benchmark suite, or run as a script from benchmarks/
    from benchmarks.run_throughput import (
        MODELS,
        raw_consume,
        service_run,
        shipped_detection,
        workload,
    )
except ImportError:
    from run_throughput import (  # type: ignore[no-redef]
        MODELS,
        raw_consume,
        service_run,
        shipped_detection,
        workload,
    )

TOPICS = {"predictions": "bench-predictions", "labels": "bench-labels"}


def faust_run(bootstrap: str, total: int, batch_size: int) -> float:
    """Events/s of the Faust runtime. Runs a worker in this (main) thread; SIGTERM stops it."""
    run = uuid.uuid4().hex[:6]
    config = build_config(
        {
            **shipped_detection(),
            "kafka": {
                "bootstrap_servers": bootstrap,
                "group_id": f"bench-faust-{run}",
                "session_timeout": "6s",
                "processing_guarantee": "at_least_once",
                "topics": {**TOPICS, "alerts": f"alerts-{run}", "dead_letters": f"dlq-{run}"},
            },
        },
        environ={},
    )
    ensure_topics(AdminClient({"bootstrap.servers": bootstrap}), config)
    app = create_app(config)
    monitor = install(
        app,
        config,
        codec=StateCodec(b"benchmark-signing-key"),
        create_topics=False,
        batch_size=batch_size,
    )
    timing: dict[str, float] = {}

    def watch() -> None:
        while monitor.counters.processed < total:
            if "started" not in timing and monitor.counters.processed > 0:
                timing["started"] = time.perf_counter()
            time.sleep(0.005)
        timing["ended"] = time.perf_counter()
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, daemon=True).start()
    work(app, loglevel="WARNING")
    return total / (timing["ended"] - timing["started"])


def publish_and_measure_limit(
    bootstrap: str, predictions: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int, int | float]:
    """Publish the workload to TOPICS; (predictions, labels, partitions, L in events/s)."""
    events, labels = workload(predictions)
    seed = build_config({"kafka": {"bootstrap_servers": bootstrap, "topics": TOPICS}}, environ={})
    ensure_topics(AdminClient({"bootstrap.servers": bootstrap}), seed)
    producer = event_producer(bootstrap)
    publish(producer, TOPICS["predictions"], events)
    publish(producer, TOPICS["labels"], labels)
    total = len(events) + len(labels)
    # Best of two: the first read of a topic can include the broker's warm-up.
    limit = max(
        raw_consume(bootstrap, list(TOPICS.values()), seed.kafka.partitions, total)
        for _ in range(2)
    )
    return events, labels, seed.kafka.partitions, limit


def faust_in_process(bootstrap: str, total: int, batch_size: int) -> float:
    """`faust_run` in a process of its own (its worker owns that process's signal handlers)."""
    command = [sys.executable, __file__, "--only-faust", "--bootstrap", bootstrap]
    command += ["--total", str(total), "--faust-batch-size", str(batch_size)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"the Faust run failed: {result.stderr[-2000:]}")
    return float(json.loads(result.stdout.strip().splitlines()[-1])["events_per_second"])


def measure(
    predictions: int = 100_000, faust_batch_size: int = 2000, kind: str = "kafka"
) -> dict[str, Any]:
    """Every figure of one run, as plain data: events/s per path and its ratio to L."""
    with local_broker(kind) as broker:
        bootstrap = broker.bootstrap_servers
        events, labels, partitions, limit = publish_and_measure_limit(bootstrap, predictions)
        total = len(events) + len(labels)
        rates = {"raw consume(10000) + orjson.loads (L)": limit}
        for guarantee in ("exactly_once", "at_least_once"):
            rates[f"run, confluent-kafka, {guarantee}"] = service_run(
                bootstrap, TOPICS, guarantee, total
            )
        rates[f"run --engine faust, batches of {faust_batch_size}"] = faust_run(
            bootstrap, total, faust_batch_size
        )
    return {
        "predictions": len(events),
        "labels": len(labels),
        "models": MODELS,
        "partitions": partitions,
        "events_per_second": rates,
        "ratio_to_limit": {name: rate / limit for name, rate in rates.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--predictions", type=int, default=100_000)
    parser.add_argument("--faust-batch-size", type=int, default=2000)
    parser.add_argument("--broker", help="kafka (Apache Kafka, default) or tansu")
    parser.add_argument("--only-faust", action="store_true")
    parser.add_argument("--bootstrap", help="with --only-faust: the broker holding the topics")
    parser.add_argument("--total", type=int, help="with --only-faust: events in the topics")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("stream_monitor.librdkafka").setLevel(logging.CRITICAL)
    if args.only_faust:
        rate = faust_run(args.bootstrap, args.total, args.faust_batch_size)
        print(json.dumps({"events_per_second": rate}), flush=True)
        return
    figures = measure(args.predictions, args.faust_batch_size, chosen_kind(args.broker))
    print(
        f"{figures['predictions']} predictions (4 numeric features) + {figures['labels']} labels, "
        f"{figures['models']} models, {figures['partitions']} partitions"
    )
    print(f"{'path':48} {'events/s':>10} {'x L':>7}")
    for name, rate in figures["events_per_second"].items():
        print(f"{name:48} {rate:10,.0f} {figures['ratio_to_limit'][name]:7.3f}")


if __name__ == "__main__":
    main()
