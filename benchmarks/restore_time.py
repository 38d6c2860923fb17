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

from stream_monitor.brokers import chosen_kind, local_broker
from stream_monitor.config import build_config
from stream_monitor.core.events import Record
from stream_monitor.core.monitor import Monitor
from stream_monitor.core.state import StateCodec
from stream_monitor.kafka.changelog import Changelog, StateRead
from stream_monitor.kafka.settings import reader_settings
from stream_monitor.kafka.topics import TopicNames, ensure_topics
from stream_monitor.processing.changelog import InvalidRecords, PartitionWriter, RecordCheck
from stream_monitor.processing.partition import PartitionProcessor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--events-per-key", type=int, default=50)
    parser.add_argument("--broker", help="kafka (Apache Kafka, default) or tansu")
    args = parser.parse_args()
    logging.getLogger("stream_monitor.librdkafka").setLevel(logging.CRITICAL)
    rng = random.Random(1)
    with local_broker(chosen_kind(args.broker)) as broker:
        config = build_config(
            {"kafka": {"bootstrap_servers": broker.bootstrap_servers, "partitions": 1}}, environ={}
        )
        ensure_topics(AdminClient({"bootstrap.servers": broker.bootstrap_servers}), config)
        settings = config.monitor_settings()
        codec = StateCodec(b"benchmark-signing-key")
        processor = PartitionProcessor(0, Monitor(settings), PartitionWriter(codec, 0))
        records = [
            Record(
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
                i * args.keys + k,
            )
            for i in range(args.events_per_key)
            for k in range(args.keys)
        ]
        processor.add(0, records)
        processor.process((True, True))
        topic = TopicNames.from_config(config).state
        producer = Producer({"bootstrap.servers": broker.bootstrap_servers, "linger.ms": 20})
        size = 0
        written = list(processor.checkpoint())
        for key, value, headers in written:
            size += len(value or b"")
            while True:
                try:
                    producer.produce(topic, key=key, value=value, partition=0, headers=headers)
                    break
                except BufferError:
                    producer.poll(0.05)
        producer.flush(60)
        keys = sum(1 for key, _, _ in written if key.startswith(b"k:"))
        changelog = Changelog(topic, RecordCheck(codec, InvalidRecords("stop")))
        committed = {0: tuple(processor.positions)}
        started = time.perf_counter()
        read = changelog.read(
            reader_settings(config, "bench"), StateRead(committed, changelog.check)
        )
        verified = time.perf_counter() - started
        fresh = Monitor(settings)
        for changes in read.restored(0).changes:
            fresh.restore(changes)
        total = time.perf_counter() - started
    print(f"{keys} monitor keys, {size / 1e6:.1f} MB of state ({size / keys / 1e3:.1f} KB per key)")
    print(f"read + verify to EOF: {verified:.2f} s; + rebuild detectors: {total:.2f} s")


if __name__ == "__main__":
    main()
