"""Both ends of the pipe, measured on one broker in one run.

1. SDK publish throughput: `MonitorProducer.log_prediction` (validated once, by the monitor's
   own decoder; UUIDv7 id; murmur2 partition) against a bare confluent-kafka producer that only
   builds the same dict and `orjson.dumps` it (what hand-written glue does), same settings, same
   topic layout. Client side: from the first call to the end of `flush()`. Reported as events/s
   and their ratio.
2. Forwarder delivery latency: alerts committed one per transaction at a steady rate (as the
   monitor's `commit_on_alert` does); latency is from `commit_transaction()` returning to the
   alert's arrival at a local webhook server, and to Alertmanager answering 200 to its POST
   (a real `prometheus-alertmanager`). p50 / p99 / max.

    python benchmarks/client_forward.py [--broker kafka|tansu] [--events 200000] [--alerts 500]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stream_monitor.brokers import local_broker  # noqa: E402
from stream_monitor.client import MonitorProducer  # noqa: E402
from stream_monitor.config import build_config  # noqa: E402
from stream_monitor.forward.metrics import ForwardMetrics  # noqa: E402
from stream_monitor.forward.records import AlertRecord  # noqa: E402
from stream_monitor.forward.service import ForwardService  # noqa: E402
from tests.forward.support import Alertmanager, WebhookServer, drift_alert  # noqa: E402

SETTINGS = {"enable.idempotence": True, "linger.ms": 5, "queue.buffering.max.messages": 100_000}
MODELS = [f"model-{i}" for i in range(10)]
CONSUMER: dict[str, Any] = {}  # --fetch-wait sets fetch.wait.max.ms for the forwarder


def create(bootstrap: str, *topics: str, partitions: int = 4) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(t, partitions, 1) for t in topics]).values():
        future.result(30)
    deadline = time.monotonic() + 15
    while not set(topics) <= set(admin.list_topics(timeout=5).topics):
        if time.monotonic() > deadline:
            raise RuntimeError("topics did not appear")
        time.sleep(0.05)


def bare(bootstrap: str, topic: str, events: int) -> float:
    producer = Producer(
        {"bootstrap.servers": bootstrap, "partitioner": "murmur2_random", **SETTINGS}
    )
    producer.list_topics(topic, timeout=10)
    started = time.perf_counter()
    for i in range(events):
        model = MODELS[i % 10]
        value = orjson.dumps(
            {
                "prediction_id": f"p-{i}",
                "model": model,
                "timestamp": 1_767_225_600_000 + i,
                "prediction": i & 1,
                "score": 0.5,
                "features": {"x": float(i), "y": 1.0},
            }
        )
        while True:
            try:
                producer.produce(topic, value, model.encode())
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    assert producer.flush(60) == 0
    return events / (time.perf_counter() - started)


def sdk(bootstrap: str, topic: str, events: int) -> float:
    monitor = MonitorProducer(
        bootstrap_servers=bootstrap, predictions_topic=topic, labels_topic=topic, settings=SETTINGS
    )
    monitor.log_prediction(model=MODELS[0], prediction=0)  # metadata read outside the timing
    monitor.flush(30)
    started = time.perf_counter()
    for i in range(events):
        monitor.log_prediction(
            model=MODELS[i % 10],
            prediction=i & 1,
            score=0.5,
            features={"x": float(i), "y": 1.0},
            timestamp=1_767_225_600_000 + i,
        )
    monitor.flush(60)
    return events / (time.perf_counter() - started)


def throughput(bootstrap: str, events: int, rounds: int) -> dict[str, Any]:
    rows: dict[str, list[float]] = {"bare": [], "sdk": []}
    for _ in range(rounds):  # alternated, so a slow moment of the shared machine hits both
        for name, run in (("bare", bare), ("sdk", sdk)):
            topic = f"bench-{name}-{uuid.uuid4().hex[:6]}"
            create(bootstrap, topic)
            rows[name].append(run(bootstrap, topic, events))
    best = {name: max(values) for name, values in rows.items()}
    return {"runs": rows, "best": best, "ratio": best["sdk"] / best["bare"]}


class Timed(ForwardMetrics):
    """Records when each sink took each alert (Alertmanager answered 200, the webhook too)."""

    def __init__(self) -> None:
        super().__init__()
        self.taken: dict[tuple[str, str], float] = {}

    def accepted(self, sink: str, record: AlertRecord) -> None:
        self.taken.setdefault((sink, record.id), time.time())
        super().accepted(sink, record)


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    pick = lambda q: ordered[min(int(q * len(ordered)), len(ordered) - 1)] * 1000  # noqa: E731
    return {
        "p50_ms": round(pick(0.50), 1),
        "p99_ms": round(pick(0.99), 1),
        "max_ms": round(ordered[-1] * 1000, 1),
        "mean_ms": round(statistics.fmean(ordered) * 1000, 1),
        "n": len(ordered),
    }


def latency(bootstrap: str, alerts: int, rate: float, folder: Path) -> dict[str, Any]:
    run = uuid.uuid4().hex[:6]
    topic = f"alerts-{run}"
    create(bootstrap, topic)
    manager = Alertmanager(folder).start() if shutil.which("prometheus-alertmanager") else None
    with WebhookServer() as hook:
        sinks: dict[str, Any] = {"webhooks": [{"url": hook.url, "name": "webhook"}]}
        if manager is not None:
            sinks["alertmanager"] = {"url": manager.url}
        config = build_config(
            {
                "kafka": {
                    "bootstrap_servers": bootstrap,
                    "topics": {"alerts": topic},
                    "consumer": dict(CONSUMER),
                },
                "forward": {
                    "group_id": f"forward-{run}",
                    "dead_letter_topic": f"dl-{run}",
                    **sinks,
                },
            },
            environ={},
        )
        metrics = Timed()
        stop = threading.Event()
        service = ForwardService(config, stop=stop, metrics=metrics)
        thread = threading.Thread(target=service.run, daemon=True)
        thread.start()
        producer = Producer(
            {"bootstrap.servers": bootstrap, "transactional.id": f"bench-{run}", "linger.ms": 0}
        )
        producer.init_transactions(30)
        deadline = time.monotonic() + 60
        while not service.joined and time.monotonic() < deadline:  # group joined: start the clock
            time.sleep(0.05)
        committed: dict[str, float] = {}
        for i in range(alerts):
            event = drift_alert(i, model=MODELS[i % 10])
            producer.begin_transaction()
            producer.produce(topic, orjson.dumps(event), event["data"]["monitor_key"].encode())
            producer.commit_transaction(30)
            committed[event["id"]] = time.time()
            time.sleep(max(0.0, 1 / rate - 0.001))
        deadline = time.monotonic() + 60
        sinks_named = ["webhook"] + (["alertmanager"] if manager is not None else [])
        while time.monotonic() < deadline and any(
            (sink, alert_id) not in metrics.taken for sink in sinks_named for alert_id in committed
        ):
            time.sleep(0.1)
        arrivals = {item.json()["id"]: item.at for item in hook.received}
        stop.set()
        thread.join(30)
    if manager is not None:
        manager.close()
    result = {
        "webhook (arrival at the server)": percentiles(
            [arrivals[i] - t for i, t in committed.items() if i in arrivals]
        )
    }
    if manager is not None:
        result["alertmanager (POST answered 200)"] = percentiles(
            [
                metrics.taken[("alertmanager", i)] - t
                for i, t in committed.items()
                if ("alertmanager", i) in metrics.taken
            ]
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--broker", default="kafka", choices=["kafka", "tansu"])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--alerts", type=int, default=500)
    parser.add_argument("--rate", type=float, default=20.0, help="alerts per second")
    parser.add_argument("--fetch-wait", type=int, help="forwarder fetch.wait.max.ms (default 100)")
    parser.add_argument("--skip-throughput", action="store_true")
    args = parser.parse_args()
    if args.fetch_wait is not None:
        CONSUMER["fetch.wait.max.ms"] = args.fetch_wait
    broker = local_broker(args.broker).start()
    try:
        with tempfile.TemporaryDirectory() as folder:
            report = {
                "broker": args.broker,
                "sdk_throughput": None
                if args.skip_throughput
                else throughput(broker.bootstrap_servers, args.events, args.rounds),
                "forward_latency": latency(
                    broker.bootstrap_servers, args.alerts, args.rate, Path(folder)
                ),
            }
    finally:
        broker.close()
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    if report["sdk_throughput"] is not None:
        best = report["sdk_throughput"]["best"]
        print(
            f"\nSDK {best['sdk']:,.0f} events/s vs bare confluent-kafka {best['bare']:,.0f} "
            f"events/s (ratio {report['sdk_throughput']['ratio']:.2f}) on {args.broker}"
        )
    for sink, figures in report["forward_latency"].items():
        print(
            f"forward latency {sink}: p50 {figures['p50_ms']} ms, p99 {figures['p99_ms']} ms, max {figures['max_ms']} ms (n={figures['n']})"
        )


if __name__ == "__main__":
    main()
