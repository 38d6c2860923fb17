"""How long a restore of the state changelog takes with many monitor keys (issue: seconds at 10k).

Builds a Monitor with `--keys` monitor keys (each with 4 numeric features: 10 detectors per key),
writes its full state to the changelog topic on the embedded broker, then times a restore that reads
the partition to EOF, verifies every signature, and rebuilds the Monitor.

    python benchmarks/restore_time.py [--keys 10000]
"""

from __future__ import annotations

import argparse
import logging
import random
import time

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from stream_monitor.config import build_config
from stream_monitor.core.monitor import Monitor
from stream_monitor.core.state import StateCodec
from stream_monitor.embedded import EmbeddedBroker
from stream_monitor.kafka.changelog import Changelog
from stream_monitor.kafka.settings import reader_settings
from stream_monitor.kafka.topics import TopicNames, ensure_topics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--events-per-key", type=int, default=50)
    args = parser.parse_args()
    logging.getLogger("stream_monitor.librdkafka").setLevel(logging.CRITICAL)
    rng = random.Random(1)
    with EmbeddedBroker() as broker:
        config = build_config(
            {"kafka": {"bootstrap_servers": broker.bootstrap_servers, "partitions": 1}}, environ={}
        )
        ensure_topics(AdminClient({"bootstrap.servers": broker.bootstrap_servers}), config)
        monitor = Monitor(config)
        records = [
            (
                "prediction",
                {
                    "prediction_id": f"{k}-{i}",
                    "model": f"model-{k}",
                    "prediction": rng.random(),
                    "features": {f"f{j}": rng.gauss(0, 1) for j in range(4)},
                },
                None,
                "p",
                0,
                i,
            )
            for i in range(args.events_per_key)
            for k in range(args.keys)
        ]
        monitor.process(records)
        codec = StateCodec(b"benchmark-signing-key")
        changelog = Changelog(TopicNames.from_config(config).state, codec)
        items = {key: value for key, value in monitor.snapshot().items() if key.startswith("k:")}
        producer = Producer({"bootstrap.servers": broker.bootstrap_servers, "linger.ms": 20})
        size = 0
        for key, value, headers in changelog.records(items, (len(records), 0)):
            size += len(value or b"")
            while True:
                try:
                    producer.produce(
                        changelog.topic, key=key, value=value, partition=0, headers=headers
                    )
                    break
                except BufferError:
                    producer.poll(0.05)
        producer.flush(60)
        started = time.perf_counter()
        restored = changelog.restore(reader_settings(config, "bench"), {0: (len(records), 0)})
        read = time.perf_counter() - started
        fresh = Monitor(config)
        fresh.restore(restored[0].items())
        total = time.perf_counter() - started
    print(
        f"{len(items)} monitor keys, {size / 1e6:.1f} MB of state ({size / len(items) / 1e3:.1f} KB per key)"
    )
    print(f"read + verify to EOF: {read:.2f} s; + rebuild detectors: {total:.2f} s")


if __name__ == "__main__":
    main()
