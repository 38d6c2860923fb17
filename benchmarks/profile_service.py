"""Where `stream-monitor run` spends its time: py-spy samples the service process under load.

The throughput workload is published first, then a service process (exactly once by default)
consumes it while py-spy records it; the table lists frames by share of samples, inclusive (the
frame or anything it called) and self (the frame itself). The /metrics endpoint is polled only
every 0.5 s, so the profiler sees the service, not the benchmark.

    python benchmarks/profile_service.py [--predictions 200000] [--guarantee at_least_once]
    python benchmarks/profile_service.py --engine faust   # the Faust runtime, for --seconds
"""

from __future__ import annotations

import argparse
import logging
import shutil
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

try:  # imported as part of the package, or run as a script from benchmarks/
    from benchmarks.run_throughput import workload
    from benchmarks.suite import QUICK, ServiceProcess, create_topics, service_config, wait_until
except ImportError:
    from run_throughput import workload  # type: ignore[no-redef]
    from suite import (  # type: ignore[no-redef]
        QUICK,
        ServiceProcess,
        create_topics,
        service_config,
        wait_until,
    )

from stream_monitor.embedded import EmbeddedBroker
from stream_monitor.publish import event_producer, publish


def shares(raw: Path) -> tuple[int, Counter[str], Counter[str]]:
    """Samples, inclusive and self counts per frame, from py-spy's collapsed-stack output."""
    inclusive: Counter[str] = Counter()
    itself: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        total += int(count)
        itself[frames[-1]] += int(count)
        for frame in set(frames):
            inclusive[frame] += int(count)
    return total, inclusive, itself


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--predictions", type=int, default=200_000)
    parser.add_argument("--guarantee", default="exactly_once")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--engine", choices=["confluent-kafka", "faust"], default="confluent-kafka")
    parser.add_argument(
        "--seconds", type=int, default=25, help="Faust serves no metrics: record this long"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    events, labels = workload(args.predictions)
    total = len(events) + len(labels)
    with tempfile.TemporaryDirectory() as folder, EmbeddedBroker() as broker:
        config = service_config(
            broker.bootstrap_servers,
            "profile",
            QUICK,
            kafka={"processing_guarantee": args.guarantee},
        )
        create_topics(config)
        producer = event_producer(broker.bootstrap_servers)
        publish(producer, config["kafka"]["topics"]["predictions"], events)
        publish(producer, config["kafka"]["topics"]["labels"], labels)
        faust = args.engine == "faust"
        service = ServiceProcess(config, Path(folder), ["--engine", args.engine])
        raw = Path(folder) / "profile.txt"
        try:
            options = ["--format", "raw", "--rate", "200", "--nonblocking", "--output", str(raw)]
            if faust:  # the worker's start-up is a small part of the samples
                options += ["--duration", str(args.seconds)]
            else:
                service.url()
            recorder = subprocess.Popen(
                [spy, "record", "--pid", str(service.process.pid), *options],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if faust:
                recorder.wait(args.seconds + 60)
            else:
                consumed = "stream_monitor_events_consumed_total"
                wait_until(lambda: service.metric(consumed) >= total, 600, "every event", 0.5)
                recorder.send_signal(signal.SIGINT)
                recorder.wait(60)
        finally:
            service.stop()
        samples, inclusive, itself = shares(raw)
    guarantee = "at_least_once (Faust)" if faust else args.guarantee
    print(f"{total} events, {args.engine}, {guarantee}, {samples} samples (all threads)")
    print(f"{'inclusive':>9} {'self':>6}  frame")
    for frame, count in inclusive.most_common(args.top):
        print(f"{count / samples:9.1%} {itself[frame] / samples:6.1%}  {frame}")
    print("\nmost self time:")
    for frame, count in itself.most_common(args.top // 2):
        print(f"{count / samples:9.1%}  {frame}")


if __name__ == "__main__":
    main()
