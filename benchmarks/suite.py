"""The whole benchmark suite in one run, on each broker in turn: every figure next to its baseline.

Rows: L (raw confluent-kafka consume + orjson decode), `run` exactly once and at least once as a
ratio to L (detection settings of the shipped configs/example.yaml), the Faust runtime and our
ratio over it, alert latency at half of the measured maximum throughput, service RSS with many keys
and pending joins (then again after 10x more events with TTL expiry), recovery after kill -9
(classic group protocol, static membership, a short session, and on Apache Kafka the KIP-848
protocol), and the core `Monitor` alone. Apache Kafka and the embedded broker side by side in one
table. Writes `benchmarks/results/latest.json` and `latest.md`, and prints the table.
The Quix Streams peer (benchmarks/quix_peer.py: the same job as a Quix Streams application, in a
virtualenv of its own) runs right after the throughput rows, on their topics: its rate and our
ratio over it.

    python benchmarks/suite.py [--quick] [--no-faust] [--no-quix] [--broker kafka,tansu] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import logging
import os
import platform
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import yaml
from confluent_kafka import (
    TIMESTAMP_CREATE_TIME,
    Consumer,
    KafkaError,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from stream_monitor.brokers import KINDS, LocalBroker, local_broker
from stream_monitor.config import build_config, parse_duration_ms
from stream_monitor.core import PYTHON_SOURCES
from stream_monitor.kafka.topics import ensure_topics
from stream_monitor.publish import event_producer

try:  # imported as part of the package (tests), or run as a script from benchmarks/
    from benchmarks import core_throughput, quix_peer
    from benchmarks.faust_throughput import TOPICS, faust_in_process, publish_and_measure_limit
    from benchmarks.run_throughput import service_run, shipped_detection
except ImportError:
    import core_throughput  # type: ignore[no-redef]
    import quix_peer  # type: ignore[no-redef]
    from faust_throughput import (  # type: ignore[no-redef]
        TOPICS,
        faust_in_process,
        publish_and_measure_limit,
    )
    from run_throughput import service_run, shipped_detection  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parent.parent
GIB = 1 << 30
# Low-latency settings, found by measuring (docs/benchmarks.md): the embedded broker holds a fetch
# for the full fetch.wait.max.ms even when data arrives (the service waits 100 ms by default), and
# an alert becomes visible at the commit after it (every 100 ms by default).
LATENCY_TUNED: dict[str, Any] = {
    "kafka": {
        "consumer": {"fetch.wait.max.ms": 10},
        "commit_interval": "50ms",
    }
}
# The latency reader is the instrument: it must see an alert when it becomes visible, not up to a
# fetch wait later (this broker holds every fetch for the full wait).
READER_FETCH_WAIT_MS = 10
BASE_TIME_MS = 1_767_225_600_000
SIGNING_KEY = "benchmark-signing-key"


@dataclasses.dataclass(frozen=True)
class Sizes:
    predictions: int  # throughput workload (plus labels for 80% of them)
    latency_seconds: float  # paced production time with drifts injected
    latency_keys: int  # one abrupt shift per key, so each alert has one identifiable cause
    memory_keys: int
    memory_pending: int  # pending joins after the first memory phase
    memory_growth: int  # then this many times more events, with TTL expiry
    recovery_keys: int
    core_events: int
    faust: bool = True
    # The Quix Streams peer's runs (benchmarks/quix_peer.py; none: no peer); each one adds
    # ~10-15 s of start-up and group join to the suite.
    quix_runs: tuple[str, ...] = tuple(quix_peer.RUNS)
    session_timeout: str = "6s"  # bounds group joins, and a successor's wait for a dead member
    settle_seconds: float = 2.5  # for the 1 s gauges (and the allocator) to catch up
    # Recovery again with this shorter session timeout: shows what bounds the first figure.
    short_session_timeout: str | None = None
    # Predictions of the latency workload that measure its maximum rate (half of it is the
    # latency phase's rate).
    latency_capacity: int = 200_000


FULL = Sizes(100_000, 30.0, 150, 10_000, 1_000_000, 10, 10_000, 200_000, short_session_timeout="3s")
QUICK = Sizes(
    20_000,
    6.0,
    30,
    2_000,
    30_000,
    10,
    2_000,
    50_000,
    quix_runs=tuple(quix_peer.RUNS)[:2],
    latency_capacity=40_000,
)


# --- the service as a real process: RSS, kill -9 and probes are about that process ---------------
class ServiceProcess:
    """`stream-monitor run [options]` in its own process, found through the address it logs."""

    def __init__(self, config: dict[str, Any], folder: Path, options: Sequence[str] = ()) -> None:
        self.config_path = folder / f"config-{uuid.uuid4().hex[:6]}.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = folder / f"run-{uuid.uuid4().hex[:6]}.log"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "stream_monitor.cli",
                    "run",
                    "--config",
                    str(self.config_path),
                    *options,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        self._url: str | None = None

    def url(self, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while self._url is None:
            found = re.search(
                r"(http://[\d.]+:\d+)/metrics", self.log_path.read_text(errors="replace")
            )
            if found:
                self._url = found.group(1)
            elif self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"service did not start:\n{self.log_path.read_text()[-2000:]}")
            else:
                time.sleep(0.01)
        return self._url

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url()}/readyz", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def metric(self, name: str) -> float:
        """Sum of every sample of `name` (all label values); 0 before the first sample."""
        try:
            with urllib.request.urlopen(f"{self.url()}/metrics", timeout=5) as response:
                text = response.read().decode()
        except (urllib.error.URLError, OSError):
            return 0.0
        pattern = re.compile(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", re.M)
        return sum(float(value) for value in pattern.findall(text))

    def rss_bytes(self) -> int:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
        return int(found.group(1)) * 1024 if found else 0

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()


def wait_until(
    condition: Callable[[], bool], timeout: float, what: str, every: float = 0.01
) -> float:
    """Seconds until `condition` held; raises after `timeout`.

    Polling /metrics costs the service CPU (a scrape every 10 ms took ~10% of it in a profile):
    waits that need no precision poll rarely.
    """
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)
    return time.monotonic() - started


def service_config(bootstrap: str, prefix: str, sizes: Sizes, **sections: Any) -> dict[str, Any]:
    """A `run` config on fresh topics and group named after `prefix`, metrics on a free port."""
    run = f"{prefix}-{uuid.uuid4().hex[:6]}"
    names = ("predictions", "labels", "alerts", "dead_letters")
    kafka = {
        "bootstrap_servers": bootstrap,
        "group_id": run,
        "instance_id": "bench",
        "session_timeout": sizes.session_timeout,
        "topics": {name: f"{run}-{name}" for name in names},
        **sections.pop("kafka", {}),
    }
    detection = shipped_detection()
    # The memory and recovery phases monitor one model per key (10,000); `limits.max_models`
    # (per input partition) ships at 1,000 and would leave most of them unmonitored (overflow).
    limits = detection.get("limits") or {}
    most = max(sizes.memory_keys, sizes.recovery_keys, limits.get("max_models", 0))
    detection["limits"] = {**limits, "max_models": most}
    return {
        **detection,
        "kafka": kafka,
        "state": {"signing_key": SIGNING_KEY},
        # Gauges of keys and pending joins every second, not every 10 s: the phases are short.
        "metrics": {"port": 0, "state_interval": "1s"},
        **sections,
    }


def create_topics(config: dict[str, Any]) -> None:
    built = build_config(config, environ={})
    ensure_topics(AdminClient({"bootstrap.servers": built.kafka.bootstrap_servers}), built)


def produce_all(producer: Producer, topic: str, values: Iterator[tuple[bytes, bytes]]) -> int:
    """Produce pre-encoded (key, value) pairs as fast as the client takes them."""
    count = 0
    for key, value in values:
        while True:
            try:
                producer.produce(topic, key=key, value=value)
                break
            except BufferError:
                producer.poll(0.05)
        count += 1
    producer.flush(120)
    return count


def prediction(index: int, keys: int, features: str) -> tuple[bytes, bytes]:
    """One encoded prediction whose event time advances 1 ms per event (drives TTL expiry)."""
    model = f"model-{index % keys}"
    value = (
        f'{{"prediction_id":"p{index}","model":"{model}","prediction":{index & 1},'
        f'"timestamp":{BASE_TIME_MS + index},"features":{features}}}'
    )
    return model.encode(), value.encode()


def feature_pool(size: int = 997, seed: int = 7) -> list[str]:
    """Stationary feature values, pre-encoded: generating 10M events must not dominate the run."""
    rng = random.Random(seed)
    return [
        orjson.dumps({f"f{k}": rng.gauss(0.0, 1.0) for k in range(4)}).decode() for _ in range(size)
    ]


# --- 1-3: throughput -------------------------------------------------------------------------------
def measure_throughput(bootstrap: str, sizes: Sizes) -> dict[str, Any]:
    events, labels, _, limit = publish_and_measure_limit(bootstrap, sizes.predictions)
    total = len(events) + len(labels)
    return {
        "events": total,
        "predictions": len(events),
        "labels": len(labels),
        "limit": limit,
        "exactly_once": service_run(
            bootstrap, TOPICS, "exactly_once", total, sizes.session_timeout
        ),
        "at_least_once": service_run(
            bootstrap, TOPICS, "at_least_once", total, sizes.session_timeout
        ),
    }


def measure_quix(bootstrap: str, sizes: Sizes, total: int) -> dict[str, Any]:
    """The same job as a Quix Streams application (benchmarks/quix_peer.py) over the throughput
    phase's topics, at `run`'s session timeout and commit cadence (its config defaults)."""
    settings = quix_peer.run_settings(parse_duration_ms(sizes.session_timeout) or 6000)
    return quix_peer.measure_peers(bootstrap, TOPICS, total, settings, sizes.quix_runs)


# --- 4: alert latency ------------------------------------------------------------------------------
def latency_pools(size: int = 997, seed: int = 3) -> tuple[list[str], list[str]]:
    """Pre-encoded `"prediction":…,"features":{…}` tails of the latency workload's events,
    unshifted and shifted (the same draws with f0 + 10 sd): the paced producer shares the two
    cores with the service and must not take the CPU that the measurement is about."""
    rng = random.Random(seed)
    plain, shifted = [], []
    for _ in range(size):
        features = {f"f{k}": rng.gauss(0.0, 1.0) for k in range(4)}
        prediction = "true" if rng.random() < 0.5 else "false"
        plain.append(f'"prediction":{prediction},"features":{orjson.dumps(features).decode()}')
        features["f0"] += 10.0
        shifted.append(f'"prediction":{prediction},"features":{orjson.dumps(features).decode()}')
    return plain, shifted


def latency_event(
    index: int, keys: int, shifted: int, pools: tuple[list[str], list[str]]
) -> tuple[bytes, bytes]:
    """The latency workload's prediction `index`: model `index % keys`, four N(0, 1) features,
    f0 shifted by +10 sd on the first `shifted` keys, no label ever (each one pends)."""
    key = index % keys
    model = f"model-{key}"
    tail = pools[key < shifted][index % len(pools[0])]
    value = (
        f'{{"prediction_id":"p{index}","model":"{model}",'
        f'"timestamp":{BASE_TIME_MS + index},{tail}}}'
    )
    return model.encode(), value.encode()


def measure_latency_capacity(bootstrap: str, sizes: Sizes) -> dict[str, Any]:
    """The latency workload's maximum rate: `run` exactly once over `sizes.latency_capacity` of
    its predictions (no shift), published beforehand. "Half load" is half of this, not of the
    throughput phase's rate: that workload (3 models, 2 features and a score, labels that end
    each join) costs less per event than this one (4 features, every prediction pending)."""
    config = service_config(bootstrap, "capacity", sizes)
    create_topics(config)
    topics = config["kafka"]["topics"]
    pools = latency_pools()
    count = produce_all(
        event_producer(bootstrap),
        topics["predictions"],
        (latency_event(i, sizes.latency_keys, 0, pools) for i in range(sizes.latency_capacity)),
    )
    inputs = {name: topics[name] for name in ("predictions", "labels")}
    rate = service_run(bootstrap, inputs, "exactly_once", count, sizes.session_timeout)
    return {"events": count, "keys": sizes.latency_keys, "exactly_once": rate}


def measure_latency(
    bootstrap: str,
    folder: Path,
    rate: float,
    sizes: Sizes,
    reader_wait_ms: int = READER_FETCH_WAIT_MS,
    **sections: Any,
) -> dict[str, Any]:
    """Paced production at `rate`; one key at a time gets an abrupt shift of its feature f0.

    Every alert names the input position that triggered it (`source_position`); its latency is
    from the moment that event was handed to the producer to the moment a `read_committed`
    consumer received the alert.
    """
    config = service_config(bootstrap, "latency", sizes, **sections)
    create_topics(config)
    topics = config["kafka"]["topics"]
    service = ServiceProcess(config, folder)
    sent: dict[tuple[int, int], float] = {}
    received: list[tuple[float, dict[str, Any]]] = []
    stop = threading.Event()

    def read_alerts() -> None:
        consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"latency-reader-{uuid.uuid4().hex[:6]}",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": reader_wait_ms,
            }
        )
        consumer.assign([TopicPartition(topics["alerts"], p, 0) for p in range(4)])
        while not stop.is_set():
            for message in consumer.consume(100, 0.02):
                if message.error() is None:
                    received.append((time.time(), orjson.loads(message.value() or b"{}")))
        consumer.close()

    def delivered(error: KafkaError | None, message: Message) -> None:
        # Sent at the record's create time, which the client set in produce() (ms): one
        # callback for all, not a closure per event. (A broker's append time would understate
        # every latency: refused.)
        if error is None:
            kind, millis = message.timestamp()
            if kind != TIMESTAMP_CREATE_TIME:
                raise RuntimeError(f"the input's timestamps are not create times ({kind})")
            sent[(message.partition() or 0, message.offset() or 0)] = millis / 1e3

    reader = threading.Thread(target=read_alerts, daemon=True)
    reader.start()
    try:
        wait_until(service.ready, 60, "the latency service to be ready")
        producer = event_producer(bootstrap, **{"linger.ms": 5})
        pools = latency_pools()
        tick = 0.01
        per_tick = max(1, round(rate * tick))
        warmup = min(3.0, sizes.latency_seconds / 3)
        shift_every = (sizes.latency_seconds - warmup) / sizes.latency_keys
        started = time.monotonic()
        index = 0
        while (elapsed := time.monotonic() - started) < sizes.latency_seconds:
            shifted = 0 if elapsed < warmup else 1 + int((elapsed - warmup) / shift_every)
            for _ in range(per_tick):
                key, value = latency_event(index, sizes.latency_keys, shifted, pools)
                while True:
                    try:
                        producer.produce(
                            topics["predictions"], key=key, value=value, on_delivery=delivered
                        )
                        break
                    except BufferError:
                        producer.poll(0.01)
                index += 1
            producer.poll(0)
            pause = started + (index / per_tick) * tick - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        produced_for = time.monotonic() - started
        producer.flush(30)
        time.sleep(sizes.settle_seconds)  # the last alerts: a commit interval, the reader's poll
    finally:
        stop.set()
        reader.join(10)
        service.stop()
    latencies = sorted(
        received_at - sent[(position["partition"], position["offset"])]
        for received_at, alert in received
        if (position := alert["data"]["source_position"]) is not None
        and (position["partition"], position["offset"]) in sent
    )
    return {
        "target_rate": rate,
        "achieved_rate": index / produced_for,
        "alerts": len(received),
        "shifted_keys": sizes.latency_keys,
        "reader_fetch_wait_ms": reader_wait_ms,
        "service_settings": sections,
        "p50_ms": percentile(latencies, 0.50) * 1000 if latencies else None,
        "p99_ms": percentile(latencies, 0.99) * 1000 if latencies else None,
        "max_ms": latencies[-1] * 1000 if latencies else None,
    }


def percentile(ordered: list[float], fraction: float) -> float:
    """Nearest-rank percentile: with few samples, p99 is the worst one, as it should be."""
    rank = max(1, -(-len(ordered) * fraction // 1))
    return ordered[int(rank) - 1]


# Each commit writes every key changed since the last one to the changelog: with 10k keys, the
# default cadence (200 ms / 10k events) re-writes nearly every key per 10k events, which bounds
# the rate at ~5-10k events/s (docs/benchmarks.md). The memory phase is about RSS, so it commits
# less often to get through its events in minutes.
MEMORY_COMMITS: dict[str, Any] = {"commit_interval": "5s", "commit_max_events": 1_000_000}


# --- 5: memory ---------------------------------------------------------------------------------------
def measure_memory(bootstrap: str, folder: Path, sizes: Sizes) -> dict[str, Any]:
    """RSS of the service with many keys and pending joins, then after 10x more events.

    No labels arrive, so every prediction waits in the join; event time advances 1 ms per event and
    the TTL spans `memory_pending` events, so from then on each new prediction expires an old one.
    """
    pending = sizes.memory_pending
    config = service_config(
        bootstrap,
        "memory",
        sizes,
        join={"ttl": pending / 1000, "max_pending_predictions": 2 * pending},
        kafka=MEMORY_COMMITS,
    )
    create_topics(config)
    topic = config["kafka"]["topics"]["predictions"]
    service = ServiceProcess(config, folder)
    pool = feature_pool()
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50, "batch.size": 1 << 20})
    consumed = "stream_monitor_events_consumed_total"
    commit = "stream_monitor_commit_duration_seconds"
    try:

        def events(start: int, stop: int) -> Iterator[tuple[bytes, bytes]]:
            keys = sizes.memory_keys
            return (prediction(i, keys, pool[i % len(pool)]) for i in range(start, stop))

        def settled(count: int) -> dict[str, Any]:
            wait_until(lambda: service.metric(consumed) >= count, 900, f"{count} events", 0.25)
            seconds = time.monotonic() - started
            time.sleep(sizes.settle_seconds)
            return {
                "events": count,
                "seconds": seconds,  # since the first event was produced
                "rss_bytes": service.rss_bytes(),
                "keys": service.metric("stream_monitor_monitored_keys"),
                "pending_joins": service.metric("stream_monitor_pending_joins"),
                "commits": service.metric(f"{commit}_count"),
                "commit_seconds": service.metric(f"{commit}_sum"),
            }

        started = time.monotonic()

        produce_all(producer, topic, events(0, pending))
        steps = [settled(pending)]
        total = pending * (1 + sizes.memory_growth)
        for start in range(pending, total, pending):  # in steps, so the broker is not flooded
            produce_all(producer, topic, events(start, start + pending))
            if sizes.memory_growth <= 4 or (start // pending) % 2 == 0 or start + pending == total:
                steps.append(settled(start + pending))
    finally:
        service.stop()
    return {"keys": sizes.memory_keys, "first": steps[0], "after_growth": steps[-1], "steps": steps}


# --- 6: recovery -------------------------------------------------------------------------------------
def measure_recovery(
    bootstrap: str,
    folder: Path,
    sizes: Sizes,
    session_timeout: str | None = None,
    **kafka: Any,
) -> dict[str, Any]:
    """kill -9 with `recovery_keys` keys in state; a successor starts at once (same instance id).

    Timed from the kill: ready (/readyz 200: partitions restored) and consuming again (the first
    of the events produced while it was down is counted by the successor). `kafka`: settings of
    both instances' `kafka` section (e.g. static_membership=True).
    """
    keys = sizes.recovery_keys
    if session_timeout is not None:
        sizes = dataclasses.replace(sizes, session_timeout=session_timeout)
    config = service_config(bootstrap, "recovery", sizes, kafka=kafka)
    create_topics(config)
    topic = config["kafka"]["topics"]["predictions"]
    pool = feature_pool()
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50})
    consumed = "stream_monitor_events_consumed_total"
    keys_gauge = "stream_monitor_monitored_keys"
    first = ServiceProcess(config, folder)
    total = 5 * keys
    try:
        produce_all(producer, topic, (prediction(i, keys, pool[i % 997]) for i in range(total)))
        wait_until(lambda: first.metric(consumed) >= total, 300, "the state to build up", 0.25)
        wait_until(lambda: first.metric(keys_gauge) >= keys, 30, "the keys gauge", 0.25)
        state_keys = first.metric(keys_gauge)
        time.sleep(sizes.settle_seconds)  # several commit intervals: the state is in the changelog
    finally:
        first.kill()
    killed = time.monotonic()
    successor = ServiceProcess(config, folder)
    try:
        more = (prediction(i, keys, pool[i % 997]) for i in range(total, total + 1000))
        produce_all(producer, topic, more)
        wait_until(successor.ready, 120, "the successor to be ready")
        ready = time.monotonic() - killed
        wait_until(lambda: successor.metric(consumed) > 0, 120, "the successor to consume", 0.02)
        consuming = time.monotonic() - killed
        restore = successor.metric("stream_monitor_state_restore_duration_seconds_sum")
    finally:
        successor.stop()
    return {
        "keys_in_state": state_keys,
        "session_timeout": sizes.session_timeout,
        "settings": ", ".join(f"{name}: {value}" for name, value in kafka.items()) or "defaults",
        "ready_seconds": ready,
        "consuming_seconds": consuming,
        "restore_seconds": restore,
    }


# --- the run, the rows and the table -----------------------------------------------------------------
TARGETS = {
    # Apache Kafka (issue 10); the embedded broker's rows are shown next to them, for comparison.
    "exactly_once_ratio": 0.50,  # issue 19
    "latency_p99_ms": 300.0,
    "recovery_seconds": 5.0,
    "faust_ratio": 10.0,  # issue 19
    "quix_ratio": 2.0,
    "rss_mib": 512.0,  # issue 19: 10k keys + 1M pending joins
}


def start_broker(kind: str) -> LocalBroker:
    """The tests' broker settings (stream_monitor.apache_kafka.local_settings): among them a
    KIP-848 group's session (6 s) and heartbeat (1 s), the broker's to set, which match the
    classic rows' 6 s session, so both protocols are compared at the same timeouts."""
    return local_broker(kind).start()


def run_suite(
    sizes: Sizes,
    folder: Path,
    kinds: Sequence[str] = KINDS,
    bootstrap: str | None = None,
) -> dict[str, Any]:
    """Every measurement on each broker, in an order where each one's baseline comes first.

    Each broker is started here in turn (or `bootstrap` is used: the tests' session broker, whose
    kind is `kinds[0]`). The core phase needs no broker and runs once, at the end.
    """
    logging.getLogger("stream_monitor.librdkafka").setLevel(logging.CRITICAL)
    figures: dict[str, Any] = {"sizes": dataclasses.asdict(sizes), "brokers": {}}
    started = time.monotonic()
    timed = Stopwatch(figures)
    if sizes.quix_runs:  # created from PyPI on first use: fail before the brokers, not after
        timed("quix_environment", quix_peer.quix_python)
    for kind in kinds:
        with contextlib.ExitStack() as stack:
            if bootstrap is None:
                broker = start_broker(kind)
                stack.callback(broker.close)
                address = broker.bootstrap_servers
            else:
                address = bootstrap
            figures["brokers"][kind] = broker_phases(timed, kind, address, folder, sizes)
    figures["core"] = timed("core", core_throughput.measure, sizes.core_events, 10, 3)
    figures["seconds"] = time.monotonic() - started
    figures["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "core": "Python sources" if PYTHON_SOURCES else "compiled (mypyc)",
        "platform": platform.platform(),
    }
    figures["rows"] = rows(figures)
    return figures


def broker_phases(
    timed: Stopwatch, kind: str, bootstrap: str, folder: Path, sizes: Sizes
) -> dict[str, Any]:
    phase = functools.partial(_phase_name, kind)
    result: dict[str, Any] = {}
    result["throughput"] = timed(phase("throughput"), measure_throughput, bootstrap, sizes)
    total = result["throughput"]["events"]
    # Right after the throughput phase, on its topics: the ratio of `run` over the peer compares
    # rates measured minutes apart at most.
    result["quix"] = (
        timed(phase("quix"), measure_quix, bootstrap, sizes, total) if sizes.quix_runs else None
    )
    result["latency_capacity"] = timed(
        phase("latency_capacity"), measure_latency_capacity, bootstrap, sizes
    )
    half = result["latency_capacity"]["exactly_once"] / 2
    result["latency"] = timed(phase("latency"), measure_latency, bootstrap, folder, half, sizes)
    result["latency_tuned"] = timed(
        phase("latency_tuned"),
        functools.partial(measure_latency, **LATENCY_TUNED),
        bootstrap,
        folder,
        half,
        sizes,
    )
    result["memory"] = timed(phase("memory"), measure_memory, bootstrap, folder, sizes)
    result.update(recovery_phases(timed, kind, bootstrap, folder, sizes))
    result["faust"] = (
        timed(phase("faust"), faust_in_process, bootstrap, total, 2000) if sizes.faust else None
    )
    return result


def _phase_name(kind: str, name: str) -> str:
    return f"{kind}/{name}"


RECOVERY_PHASES: dict[str, dict[str, Any]] = {
    "recovery": {},
    "recovery_static": {"static_membership": True},
    # KIP-848 with static membership is left out: after a kill -9 the broker rejects the
    # successor's group.instance.id (UNRELEASED_INSTANCE_ID, fatal) until the dead member's
    # session expires, so it is never faster than without it (docs/benchmarks.md).
    "recovery_kip848": {"group_protocol": "consumer"},
}


def recovery_phases(
    timed: Stopwatch, kind: str, bootstrap: str, folder: Path, sizes: Sizes
) -> dict[str, Any]:
    """Recovery with defaults, with static membership, with a short session timeout, and on
    Apache Kafka with the KIP-848 group protocol (with and without static membership)."""
    result: dict[str, Any] = {}
    for name, kafka in RECOVERY_PHASES.items():
        if "group_protocol" in kafka and kind != "kafka":
            continue  # KIP-848 needs Apache Kafka 4.x; the embedded broker speaks classic only
        measure = functools.partial(measure_recovery, **kafka)
        result[name] = timed(_phase_name(kind, name), measure, bootstrap, folder, sizes)
    if sizes.short_session_timeout:
        result["recovery_short_session"] = timed(
            _phase_name(kind, "recovery_short_session"),
            measure_recovery,
            bootstrap,
            folder,
            sizes,
            sizes.short_session_timeout,
        )
    return result


class Stopwatch:
    """Runs a phase and notes its wall time under figures["phase_seconds"]."""

    def __init__(self, figures: dict[str, Any]) -> None:
        self.seconds: dict[str, float] = figures.setdefault("phase_seconds", {})

    def __call__(self, name: str, phase: Callable[..., Any], *args: Any) -> Any:
        started = time.monotonic()
        try:
            return phase(*args)
        finally:
            self.seconds[name] = round(time.monotonic() - started, 2)


def row(
    figure: str,
    unit: str,
    values: dict[str, float | None],
    ratios: dict[str, float | None] | None = None,
    baseline: str = "",
    target: str = "",
    met: Callable[[float], bool] | None = None,
) -> dict[str, Any]:
    """One figure, with a value (and ratio) per broker; `met` judges the Apache Kafka value."""
    judged = values.get("kafka")
    return {
        "figure": figure,
        "unit": unit,
        "values": values,
        "ratios": ratios or {},
        "baseline": baseline,
        "target": target,
        "met": None if met is None or judged is None else met(judged),
    }


def rows(figures: dict[str, Any]) -> list[dict[str, Any]]:
    brokers: dict[str, dict[str, Any]] = figures["brokers"]

    def each(read: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
        found = {}
        for kind, measured in brokers.items():
            with contextlib.suppress(KeyError, TypeError):
                found[kind] = read(measured)
        return found

    def ratio(values: dict[str, Any], baselines: dict[str, Any]) -> dict[str, float | None]:
        return {
            kind: value / baselines[kind] if value is not None and baselines.get(kind) else None
            for kind, value in values.items()
        }

    limit = each(lambda m: m["throughput"]["limit"])
    exactly = each(lambda m: m["throughput"]["exactly_once"])
    least = each(lambda m: m["throughput"]["at_least_once"])
    result = [
        row("L: raw consume(10000) + orjson.loads", "events/s", limit, ratio(limit, limit), "L"),
        row(
            "run, exactly once (shipped config)",
            "events/s",
            exactly,
            ratio(exactly, limit),
            "L",
            f">= {TARGETS['exactly_once_ratio']:.2f} x L",
            lambda value: value >= TARGETS["exactly_once_ratio"] * limit["kafka"],
        ),
        row("run, at least once (shipped config)", "events/s", least, ratio(least, limit), "L"),
    ]
    faust = {kind: value for kind, value in each(lambda m: m["faust"]).items() if value}
    if faust:
        over = {kind: exactly[kind] / value for kind, value in faust.items()}
        result += [
            row("Faust runtime (batches of 2000)", "events/s", faust, ratio(faust, limit), "L"),
            row(
                "run exactly once over Faust",
                "x",
                over,
                target=f">= {TARGETS['faust_ratio']:.0f}x",
                met=lambda value: value >= TARGETS["faust_ratio"],
            ),
        ]
    result += quix_rows(each, ratio, limit, exactly, least)
    capacity = each(lambda m: m["latency_capacity"]["exactly_once"])
    result.append(
        row(
            "run, exactly once, on the latency workload (4 features, no labels): its max",
            "events/s",
            capacity,
        )
    )
    for name, settings in (("latency", "defaults"), ("latency_tuned", "low-latency settings")):
        rate = each(lambda m, name=name: m[name]["achieved_rate"])
        at = ", ".join(f"{kind} {value:,.0f}/s" for kind, value in rate.items())
        result += [
            row(
                f"alert latency p50, half load ({at}), {settings}",
                "ms",
                each(lambda m, name=name: m[name]["p50_ms"]),
            ),
            row(
                f"alert latency p99, half load, {settings}",
                "ms",
                each(lambda m, name=name: m[name]["p99_ms"]),
                target=f"<= {TARGETS['latency_p99_ms']:.0f} ms",
                met=lambda value: value <= TARGETS["latency_p99_ms"],
            ),
            row(
                f"alerts seen in the latency run, {settings}",
                "",
                each(lambda m, name=name: m[name]["alerts"]),
            ),
        ]
    first = each(lambda m: m["memory"]["first"]["rss_bytes"] / 2**20)
    steady = each(lambda m: _steady(m["memory"])["rss_bytes"] / 2**20)
    last = each(lambda m: m["memory"]["after_growth"]["rss_bytes"] / 2**20)
    sizes = figures["sizes"]
    result += [
        row(
            f"RSS, {sizes['memory_keys']:,} keys + {sizes['memory_pending']:,} pending joins",
            "MiB",
            first,
            target=f"<= {TARGETS['rss_mib']:.0f} MiB",
            met=lambda value: value <= TARGETS["rss_mib"],
        ),
        row("RSS once TTL expiry runs", "MiB", steady, ratio(steady, first), "first RSS"),
        row(
            f"RSS after {sizes['memory_growth']}x more events with TTL expiry",
            "MiB",
            last,
            ratio(last, steady),
            "RSS once expiry runs",
            f"flat (<= 1.10x) and <= {TARGETS['rss_mib']:.0f} MiB",
            lambda value: value <= TARGETS["rss_mib"] and value <= 1.10 * steady["kafka"],
        ),
    ]
    for phase, about in (
        ("recovery", "classic protocol, defaults"),
        ("recovery_static", "classic, static membership"),
        ("recovery_short_session", "classic, session timeout 3 s"),
        ("recovery_kip848", "KIP-848 (group.protocol=consumer)"),
    ):
        consuming = each(lambda m, phase=phase: m[phase]["consuming_seconds"])
        if not consuming:
            continue
        keys = next(iter(each(lambda m, phase=phase: m[phase]["keys_in_state"]).values()))
        result += [
            row(
                f"recovery after kill -9, {keys:,.0f} keys, {about}: consuming again",
                "s",
                consuming,
                target=f"<= {TARGETS['recovery_seconds']:.0f} s",
                met=lambda value: value <= TARGETS["recovery_seconds"],
            ),
            row(
                f"  of which restore after the assignment ({about})",
                "s",
                each(lambda m, phase=phase: m[phase]["restore_seconds"]),
            ),
        ]
    core = figures["core"]
    baseline = core[core_throughput.BASELINE]
    for name, value in core.items():
        result.append(
            row(
                f"core: {name}",
                "events/s",
                {"core": value},
                {"core": value / baseline},
                "bare ADWIN",
            )
        )
    return result


def quix_rows(
    each: Callable[[Callable[[dict[str, Any]], Any]], dict[str, Any]],
    ratio: Callable[[dict[str, Any], dict[str, Any]], dict[str, float | None]],
    limit: dict[str, Any],
    exactly: dict[str, Any],
    least: dict[str, Any],
) -> list[dict[str, Any]]:
    """The Quix Streams peer's rows (benchmarks/quix_peer.py), for the runs that were made."""
    made = {
        name: found
        for name in quix_peer.RUNS
        if (found := each(lambda m, name=name: m["quix"][name]))
    }
    if not made:
        return []
    versions = next(iter(next(iter(made.values())).values()))
    peer = f"Quix Streams {versions['quixstreams']} peer"
    names = {
        "exactly-once/state": f"{peer}, exactly once (join in Quix state)",
        "at-least-once/state": f"{peer}, at least once (join in Quix state)",
        "exactly-once/state/commit-5s": f"{peer}, exactly once (join in Quix state), "
        "Quix's default commit interval (5 s)",
        "exactly-once/memory": f"{peer}, exactly once (join in a dict: not fault tolerant)",
    }
    result = []
    for name, found in made.items():
        rates = {kind: figures["events_per_second"] for kind, figures in found.items()}
        result.append(row(names[name], "events/s", rates, ratio(rates, limit), "L"))
    client = each(lambda m: m["quix"]["limit_peer_client"])
    result.append(
        row(
            f"  L read with the peer's confluent-kafka {versions['confluent_kafka']}",
            "events/s",
            client,
            ratio(client, limit),
            "L",
        )
    )
    for name, ours, figure in (
        ("exactly-once/state", exactly, "run exactly once over Quix exactly once"),
        ("at-least-once/state", least, "run at least once over Quix at least once"),
        (
            "exactly-once/state/commit-5s",
            exactly,
            "run exactly once (commits every 100 ms) over Quix exactly once (every 5 s)",
        ),
    ):
        if name not in made:
            continue
        over = {
            kind: ours[kind] / figures["events_per_second"]
            for kind, figures in made[name].items()
            if kind in ours
        }
        judged = name == "exactly-once/state"  # the like-for-like comparison
        result.append(
            row(
                f"{figure} (join in Quix state)",
                "x",
                over,
                target=f">= {TARGETS['quix_ratio']:.0f}x" if judged else "",
                met=(lambda value: value >= TARGETS["quix_ratio"]) if judged else None,
            )
        )
    return result


def _steady(memory: dict[str, Any]) -> dict[str, Any]:
    """The RSS once TTL expiry runs (the second step): the first step includes the join's dicts
    growing to their working size, so "flat" is judged against this one."""
    steps = memory["steps"]
    return steps[1] if len(steps) > 1 else memory["first"]


def markdown(figures: dict[str, Any]) -> str:
    kinds = [*figures["brokers"], "core"]
    names = {"kafka": "Apache Kafka", "tansu": "Tansu (embedded)", "core": "no broker"}
    shown_kinds = [
        kind for kind in kinds if any(kind in entry["values"] for entry in figures["rows"])
    ]
    header = "| figure | " + " | ".join(names.get(k, k) for k in shown_kinds) + " | target | met |"
    lines = [header, "|---|" + "---:|" * len(shown_kinds) + "---|---|"]
    for entry in figures["rows"]:
        cells = []
        for kind in shown_kinds:
            value = entry["values"].get(kind)
            if value is None:
                cells.append("")
                continue
            unit = entry["unit"]
            shown = f"{value:,.2f} {unit}" if unit in ("s", "x") else f"{value:,.0f} {unit}"
            ratio = entry["ratios"].get(kind)
            if ratio is not None:
                shown += f" ({ratio:.3f} x {entry['baseline']})"
            cells.append(shown.strip())
        met = {True: "met", False: "**not met**", None: ""}[entry["met"]]
        lines.append(
            f"| {entry['figure']} | " + " | ".join(cells) + f" | {entry['target']} | {met} |"
        )
    machine = figures["machine"]
    lines.append("")
    lines.append(
        f"{machine['cpus']} CPUs, Python {machine['python']}, {machine['platform']}, "
        f"core {machine.get('core', 'Python sources')}; "
        f"suite took {figures['seconds']:.0f} s. Targets are judged on Apache Kafka."
    )
    return "\n".join(lines) + "\n"


def memory_steps(memory: dict[str, Any]) -> str:
    """The memory phase step by step: whether RSS levels off, and what the checkpoints cost."""
    lines = [
        "| events consumed | RSS MiB | pending joins | keys | events/s in step | commits in step "
        "| mean commit s |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    previous: dict[str, Any] = {"events": 0, "seconds": 0.0, "commits": 0.0, "commit_seconds": 0.0}
    for step in memory["steps"]:
        commits = step["commits"] - previous["commits"]
        rate = (step["events"] - previous["events"]) / (step["seconds"] - previous["seconds"])
        mean = (step["commit_seconds"] - previous["commit_seconds"]) / commits if commits else 0.0
        lines.append(
            f"| {step['events']:,} | {step['rss_bytes'] / 2**20:.0f} | {step['pending_joins']:,.0f} "
            f"| {step['keys']:,.0f} | {rate:,.0f} | {commits:.0f} | {mean:.2f} |"
        )
        previous = step
    return "\n".join(lines) + "\n"


def only_recovery(sizes: Sizes, times: int, kinds: Sequence[str]) -> None:
    """The recovery phases alone (and without the prefetch), alternated `times` times.

    The group join dominates them and is noisy on a shared machine: compare within one run.
    """
    logging.getLogger("stream_monitor.librdkafka").setLevel(logging.CRITICAL)
    with tempfile.TemporaryDirectory(prefix="stream-monitor-bench-") as folder:
        for kind in kinds:
            broker = start_broker(kind)
            try:
                for _ in range(times):
                    timed = Stopwatch({})
                    address = broker.bootstrap_servers
                    phases = recovery_phases(timed, kind, address, Path(folder), sizes)
                    # The restore after the join, as before the prefetch existed.
                    phases["recovery_no_prefetch"] = timed(
                        "recovery_no_prefetch",
                        functools.partial(measure_recovery, prefetch_state=False),
                        address,
                        Path(folder),
                        sizes,
                    )
                    for name, result in phases.items():
                        print(json.dumps({"broker": kind, "phase": name, **result}), flush=True)
            finally:
                broker.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, under 5 minutes")
    parser.add_argument("--no-faust", action="store_true")
    parser.add_argument(
        "--no-quix", action="store_true", help="without the Quix Streams peer (needs PyPI once)"
    )
    parser.add_argument(
        "--broker",
        default=",".join(KINDS),
        help="brokers to run on, in order: kafka,tansu (default), kafka or tansu",
    )
    parser.add_argument("--memory-growth", type=int, help="overrides the 10x of the memory phase")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument(
        "--only-memory", action="store_true", help="only the memory phase; prints its steps"
    )
    parser.add_argument(
        "--only-recovery",
        type=int,
        metavar="N",
        help="only the recovery rows, N times each (prints one JSON line per measurement)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    kinds = [kind.strip() for kind in args.broker.split(",") if kind.strip()]
    unknown = set(kinds) - set(KINDS)
    if unknown:
        parser.error(f"unknown broker(s) {sorted(unknown)}: choose from {', '.join(KINDS)}")
    sizes = QUICK if args.quick else FULL
    if args.no_faust:
        sizes = dataclasses.replace(sizes, faust=False)
    if args.no_quix:
        sizes = dataclasses.replace(sizes, quix_runs=())
    if args.memory_growth is not None:
        sizes = dataclasses.replace(sizes, memory_growth=args.memory_growth)
    if args.only_memory:
        with tempfile.TemporaryDirectory(prefix="stream-monitor-bench-") as folder:
            for kind in kinds:
                broker = start_broker(kind)
                try:
                    memory = measure_memory(broker.bootstrap_servers, Path(folder), sizes)
                finally:
                    broker.close()
                print(f"{kind}:\n{memory_steps(memory)}")
        return
    if args.only_recovery:
        only_recovery(sizes, args.only_recovery, kinds)
        return
    with tempfile.TemporaryDirectory(prefix="stream-monitor-bench-") as folder:
        figures = run_suite(sizes, Path(folder), kinds)
    figures["mode"] = "quick" if args.quick else "full"
    args.out.mkdir(parents=True, exist_ok=True)
    table = markdown(figures)
    for kind, measured in figures["brokers"].items():
        table += f"\nMemory phase on {kind}, step by step:\n\n" + memory_steps(measured["memory"])
    (args.out / "latest.json").write_text(json.dumps(figures, indent=2) + "\n")
    (args.out / "latest.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
