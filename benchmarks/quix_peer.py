"""A peer for `stream-monitor run`: the same monitoring job as a Quix Streams 3.x application.

Built the way Quix Streams' documentation shows it, as a user of that library would write it:
an `Application` with `processing_guarantee="exactly-once"` (or `"at-least-once"`), one
`StreamingDataFrame` over the predictions and labels topics (`sdf.concat`: both streams of a
model meet in one function, in the timestamp order Quix aligns them to), a function applied to
every event, and `to_topic` for the alerts. Per model, a river `ADWIN()` with river's defaults on
each signal `run` feeds with the shipped `configs/example.yaml`: the prediction (positive-class
rate for a boolean prediction, else the score or numeric prediction), each numeric feature, each
feature's missing rate, the invalid rate (0 for every event that reaches it), and the error of
each prediction joined with its label by `prediction_id` within the model: 10 detector updates
per prediction and one per joined label, as `run`. A detector that fires produces a JSON alert
(CloudEvents-shaped, random id) to an alerts topic.

Where the join lives:

- `join="state"`, the peer to compare with: pending predictions (and labels that arrive first)
  live in Quix's own State (`apply(..., stateful=True)`, `state.get/set/delete`: RocksDB backed
  by a changelog topic, entries written with a 7-day event-time TTL like our `join.ttl: 7d`, so
  that the 20% of predictions never labelled do not stay forever). The join then survives a
  restart and follows its partition across a rebalance, as ours does, and under exactly-once its
  changelog is written in the transaction that commits the input offsets, as ours is.
- `join="memory"`: the join in a Python dict (lost on restart, unbounded): what a prototype
  does. A reference for what Quix's State costs, not a like-for-like peer.

In both, the detectors are plain objects in a dict keyed by model and signal: Quix's State holds
JSON by default, and river's detectors would need a serializer of one's own. They are lost on
restart (ours are restored from the signed changelog). What else `run` does and this peer does not
(validation and dead letters, deterministic alert ids and merge order, cooldown and effect sizes,
resolved events, bounds) is listed in docs/benchmarks.md.

The peer works at `run`'s cadence (`Settings`, taken from `run`'s configuration): a checkpoint
every 100 ms or 10,000 events, so that under exactly-once an alert becomes visible as soon and a
crash re-processes as little; the same session, heartbeat, fetch wait and poll timeout. Quix's own
defaults are a checkpoint every 5 s (one of the suite's runs keeps it: `Run.quix_commits`) and a
1 s poll timeout, which its time-aligned reading of two topics waits in full for each partial
batch of 10,000 messages (2 of the 2.5 s of a 36k-event run went there). Its rate counts from the
first processed event to the last one, like `run`'s (start-up, group join and the final
checkpoint are outside it).

Quix Streams 3.28.1 requires confluent-kafka < 2.13 and pydantic < 2.14, older than ours, so it
runs in a virtualenv of its own, created from PyPI on first use under the cache directory
(`~/.cache/stream-monitor/quix-venv/`) with the river version of ours; the suite runs the peer
there as a subprocess, and measures L again with the peer's confluent-kafka.

    python benchmarks/quix_peer.py [--predictions 20000] [--broker kafka|tansu]   # L, run, peers
    python benchmarks/quix_peer.py --guarantee exactly-once --join state [--quix-commits]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from importlib import metadata
from pathlib import Path
from typing import Any

QUIXSTREAMS = "quixstreams==3.28.1"
GUARANTEES = ("exactly-once", "at-least-once")
JOINS = ("state", "memory")
JOIN_TTL = timedelta(days=7)  # configs/example.yaml: join.ttl
TOPIC_NAMES = ("predictions", "labels")
DEFAULT_RETENTION_MS = str(7 * 24 * 3600 * 1000)  # Kafka's log.retention.hours=168
# A run that has not seen its first event this long after start, or stalls this long, failed.
FIRST_EVENT_TIMEOUT = 120.0
STALL_TIMEOUT = 60.0
# Quix's own default cadence: a checkpoint every 5 s, whatever the number of messages.
QUIX_COMMITS = {"commit_interval": 5.0, "commit_every": 0}


class PeerUnavailable(RuntimeError):
    """The Quix Streams environment cannot be created or the peer failed."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """What the peer takes from `run`'s configuration, so that both work at the same cadence.

    The defaults are `run`'s (stream_monitor/config.py, stream_monitor/kafka/settings.py); the
    suite passes the values of the config it measures `run` with.
    """

    session_timeout_ms: int = 6000  # the suite's; heartbeats every fifth of it, as `run`
    commit_interval: float = 0.1  # kafka.commit_interval; Quix's default is 5 s
    commit_every: int = 10_000  # kafka.commit_max_events; Quix's default is none
    # kafka.poll_timeout. Quix's default is 1 s, and its time-aligned reading of two topics asks
    # for 10,000 messages at a time: each partial batch waits the whole timeout (at the end of a
    # 36k-event input: 2 of the 2.5 s of a run).
    poll_timeout: float = 0.02
    fetch_wait_ms: int = 100  # `run`'s consumer; librdkafka's default is 500 ms

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Settings:
        return cls(**json.loads(text))


@dataclasses.dataclass(frozen=True)
class Run:
    """One way of running the peer: a guarantee, where the join lives, and whose commit cadence."""

    guarantee: str  # "exactly-once" or "at-least-once"
    join: str  # "state" (Quix State) or "memory" (a dict)
    quix_commits: bool = False  # Quix's default cadence (QUIX_COMMITS) instead of `run`'s

    @property
    def name(self) -> str:
        return f"{self.guarantee}/{self.join}" + ("/commit-5s" if self.quix_commits else "")

    def settings(self, base: Settings) -> Settings:
        return dataclasses.replace(base, **QUIX_COMMITS) if self.quix_commits else base


# The suite's runs, most telling first: the fault-tolerant peer under both guarantees, the same
# at Quix's default commit cadence, and the join in a dict for reference.
RUNS = {
    run.name: run
    for run in (
        Run("exactly-once", "state"),
        Run("at-least-once", "state"),
        Run("exactly-once", "state", quix_commits=True),
        Run("exactly-once", "memory"),
    )
}


# --- the parent's side: a virtualenv of its own, and the peer as a subprocess -------------------
def requirements() -> list[str]:
    """Quix Streams, and the river version this interpreter has (the detectors must match)."""
    try:
        river = f"river=={metadata.version('river')}"
    except metadata.PackageNotFoundError:
        river = "river"
    return [QUIXSTREAMS, river]


def venv_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "stream-monitor" / "quix-venv"


def quix_python() -> Path:
    """The interpreter of the Quix Streams virtualenv, created from PyPI on first use.

    $STREAM_MONITOR_QUIX_PYTHON names one to use instead. Keyed by the requirements, so a new
    river or Quix version gets a fresh environment; a lock keeps two runs from building one at once.
    """
    override = os.environ.get("STREAM_MONITOR_QUIX_PYTHON")
    if override:
        return Path(override)
    wanted = "\n".join(requirements()) + "\n"
    home = venv_root() / hashlib.sha256(wanted.encode()).hexdigest()[:12]
    python, done = home / "venv" / "bin" / "python", home / "requirements.txt"
    if done.exists():
        return python
    home.mkdir(parents=True, exist_ok=True)
    with (home / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.exists():
            return python
        shutil.rmtree(home / "venv", ignore_errors=True)
        steps = [
            [sys.executable, "-m", "venv", str(home / "venv")],
            [str(python), "-m", "pip", "install", "--quiet", "--upgrade", "pip"],
            [str(python), "-m", "pip", "install", "--quiet", *requirements()],
            [str(python), "-m", "pip", "check"],
        ]
        for step in steps:
            result = subprocess.run(step, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                shutil.rmtree(home / "venv", ignore_errors=True)
                raise PeerUnavailable(
                    f"creating the Quix Streams environment failed at {' '.join(step[-3:])} "
                    "(benchmarks/suite.py --no-quix leaves the peer out): "
                    f"{(result.stdout + result.stderr).strip()[-2000:]}"
                )
        done.write_text(wanted)
    return python


def peer_in_process(
    bootstrap: str,
    topics: dict[str, str],
    total: int,
    guarantee: str,
    join: str,
    settings: Settings = Settings(),
) -> dict[str, Any]:
    """One peer run in the Quix Streams environment; its figures (events_per_second, ...)."""
    command = [*_peer_command(bootstrap, topics, total), "--guarantee", guarantee]
    return _figures([*command, "--join", join, "--settings", settings.to_json()])


def limit_in_process(bootstrap: str, topics: dict[str, str], total: int) -> float:
    """L measured again with the peer's confluent-kafka, which is older than ours."""
    figures = _figures([*_peer_command(bootstrap, topics, total), "--only-limit"])
    return float(figures["events_per_second"])


def _peer_command(bootstrap: str, topics: dict[str, str], total: int) -> list[str]:
    command = [str(quix_python()), __file__, "--only-peer", "--bootstrap", bootstrap]
    command += ["--predictions-topic", topics["predictions"], "--labels-topic", topics["labels"]]
    return [*command, "--total", str(total)]


def _figures(command: list[str]) -> dict[str, Any]:
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    if result.returncode != 0:
        raise PeerUnavailable(f"the Quix Streams peer failed: {result.stderr[-2000:]}")
    figures: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return figures


def measure_peers(
    bootstrap: str,
    topics: dict[str, str],
    total: int,
    settings: Settings = Settings(),
    runs: tuple[str, ...] = tuple(RUNS),
) -> dict[str, Any]:
    """The suite's peer figures on one broker: L with the peer's client, then each run named
    (keys of RUNS), under its name."""
    figures: dict[str, Any] = {"limit_peer_client": limit_in_process(bootstrap, topics, total)}
    for name in runs:
        run = RUNS[name]
        figures[name] = peer_in_process(
            bootstrap, topics, total, run.guarantee, run.join, run.settings(settings)
        )
    return figures


# --- the peer itself (runs in the Quix Streams environment) -------------------------------------
def signal_of_error(prediction: Any, label: Any) -> tuple[str, float]:
    """`error` (0/1) for classes, `absolute_error` when either side is a float (as `run`)."""
    if type(prediction) is float or type(label) is float:
        return "absolute_error", abs(float(prediction) - float(label))
    return "error", 0.0 if prediction == label else 1.0


class PeerMonitor:
    """Per model: a river ADWIN per signal, created on first use; alerts as JSON dicts.

    `on_event` (join in a dict) and `on_event_in_state` (join in Quix State) are the functions
    the dataframe applies; each returns the alerts the event raised (usually none).
    """

    def __init__(self, total: int, stop: Callable[[], None]) -> None:
        from river.drift import ADWIN

        self._adwin = ADWIN
        self.detectors: dict[str, dict[str, Any]] = {}
        self.pending: dict[tuple[str, str], Any] = {}  # join="memory": predictions by id
        self.waiting: dict[tuple[str, str], Any] = {}  # join="memory": labels that came first
        self.total = total
        self.stop = stop
        self.events = 0
        self.alerts = 0
        self.started: float | None = None
        self.ended: float | None = None

    # what the dataframe applies
    def on_event(self, value: dict[str, Any]) -> list[dict[str, Any]]:
        self._begin()
        alerts: list[dict[str, Any]] = []
        model = value["model"]
        key = (model, value["prediction_id"])
        if "label" in value:
            prediction = self.pending.pop(key, None)
            if prediction is None:
                self.waiting[key] = value["label"]
            else:
                self._joined(model, prediction, value["label"], value, alerts)
        else:
            self._prediction(model, value, alerts)
            label = self.waiting.pop(key, None)
            if label is None:
                self.pending[key] = value["prediction"]
            else:
                self._joined(model, value["prediction"], label, value, alerts)
        return self._end(alerts)

    def on_event_in_state(self, value: dict[str, Any], state: Any) -> list[dict[str, Any]]:
        """The join in Quix State, which is scoped to the message key (the model)."""
        self._begin()
        alerts: list[dict[str, Any]] = []
        model = value["model"]
        prediction_id = value["prediction_id"]
        if "label" in value:
            prediction = state.get(f"p:{prediction_id}")
            if prediction is None:
                state.set(f"l:{prediction_id}", value["label"], ttl=JOIN_TTL)
            else:
                state.delete(f"p:{prediction_id}")
                self._joined(model, prediction, value["label"], value, alerts)
        else:
            self._prediction(model, value, alerts)
            label = state.get(f"l:{prediction_id}")
            if label is None:
                state.set(f"p:{prediction_id}", value["prediction"], ttl=JOIN_TTL)
            else:
                state.delete(f"l:{prediction_id}")
                self._joined(model, value["prediction"], label, value, alerts)
        return self._end(alerts)

    # counting and stopping
    def _begin(self) -> None:
        if self.started is None:
            self.started = time.perf_counter()

    def _end(self, alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
        self.events += 1
        self.alerts += len(alerts)
        if self.events == self.total:
            self.ended = time.perf_counter()
            self.stop()  # the app finishes this event, commits its checkpoint and returns
        return alerts

    # signals
    def _prediction(self, model: str, event: dict[str, Any], alerts: list[dict[str, Any]]) -> None:
        detectors = self.detectors.get(model)
        if detectors is None:
            detectors = self.detectors[model] = {}
        observe = self._observe
        observe(detectors, "invalid_rate", 0.0, event, alerts)
        score, prediction = event.get("score"), event["prediction"]
        if score is not None:
            observe(detectors, "score", float(score), event, alerts)
        elif type(prediction) is bool:
            observe(detectors, "positive_rate", 1.0 if prediction else 0.0, event, alerts)
        elif type(prediction) in (int, float):
            observe(detectors, "prediction", float(prediction), event, alerts)
        for name, raw in (event.get("features") or {}).items():
            if type(raw) in (int, float) and raw - raw == 0.0:  # a finite number
                observe(detectors, name, float(raw), event, alerts)
                observe(detectors, f"missing_rate:{name}", 0.0, event, alerts)
            else:
                observe(
                    detectors, f"missing_rate:{name}", 1.0 if raw is None else 0.0, event, alerts
                )

    def _joined(
        self,
        model: str,
        prediction: Any,
        label: Any,
        event: dict[str, Any],
        alerts: list[dict[str, Any]],
    ) -> None:
        detectors = self.detectors.get(model)
        if detectors is None:
            detectors = self.detectors[model] = {}
        name, value = signal_of_error(prediction, label)
        self._observe(detectors, name, value, event, alerts)

    def _observe(
        self,
        detectors: dict[str, Any],
        name: str,
        value: float,
        event: dict[str, Any],
        alerts: list[dict[str, Any]],
    ) -> None:
        detector = detectors.get(name)
        if detector is None:
            detector = detectors[name] = self._adwin()
        detector.update(value)
        if detector.drift_detected:
            alerts.append(
                {
                    "specversion": "1.0",
                    "id": str(uuid.uuid4()),
                    "source": "quix-peer",
                    "type": "drift.detected",
                    "data": {
                        "model": event["model"],
                        "signal": name,
                        "detector": "adwin",
                        "prediction_id": event["prediction_id"],
                        "event_time": event.get("timestamp"),
                        "estimation": detector.estimation,
                    },
                }
            )


def peer_run(
    bootstrap: str,
    topics: dict[str, str],
    total: int,
    guarantee: str,
    join: str,
    settings: Settings = Settings(),
) -> dict[str, Any]:
    """Run the Quix Streams application until it has processed `total` events; its figures."""
    import confluent_kafka
    from quixstreams import Application
    from quixstreams.models import TopicConfig

    run = uuid.uuid4().hex[:6]
    failure: list[str] = []
    with tempfile.TemporaryDirectory(prefix="quix-peer-state-") as state_dir:
        app = Application(
            broker_address=bootstrap,
            consumer_group=f"quix-peer-{run}",
            auto_offset_reset="earliest",
            processing_guarantee=guarantee,
            commit_interval=settings.commit_interval,
            commit_every=settings.commit_every,
            consumer_poll_timeout=settings.poll_timeout,
            state_dir=state_dir,
            loglevel="WARNING",
            consumer_extra_config={
                "session.timeout.ms": settings.session_timeout_ms,
                "heartbeat.interval.ms": max(100, settings.session_timeout_ms // 5),
                "fetch.wait.max.ms": settings.fetch_wait_ms,
            },
        )
        monitor = PeerMonitor(total, app.stop)
        inputs = [app.topic(topics[name], value_deserializer="json") for name in TOPIC_NAMES]
        for topic in inputs:
            # Quix derives its changelog topics' settings from the inputs' retention.ms, which
            # Tansu 0.6 does not report (it answers DescribeConfigs with no configs): give it
            # Kafka's default. Apache Kafka reports it, and then this changes nothing.
            topic.broker_config.extra_config.setdefault("retention.ms", DEFAULT_RETENTION_MS)
        predictions, labels = (app.dataframe(topic) for topic in inputs)
        alerts_topic = app.topic(
            f"quix-peer-alerts-{run}",
            value_serializer="json",
            config=TopicConfig(num_partitions=4, replication_factor=1),
        )
        sdf = predictions.concat(labels)
        if join == "state":
            sdf = sdf.apply(monitor.on_event_in_state, stateful=True, expand=True)
        else:
            sdf = sdf.apply(monitor.on_event, expand=True)
        sdf.to_topic(alerts_topic)

        def watchdog() -> None:
            """Stops the app if it never starts or stalls (a failed run, reported as such)."""
            started, seen, since = time.monotonic(), -1, time.monotonic()
            while monitor.ended is None:
                time.sleep(0.5)
                now = time.monotonic()
                if monitor.events != seen:
                    seen, since = monitor.events, now
                limit = FIRST_EVENT_TIMEOUT if seen == 0 else STALL_TIMEOUT
                if now - (started if seen == 0 else since) > limit:
                    failure.append(f"no progress for {limit:.0f} s at {seen} of {total} events")
                    app.stop()
                    return

        threading.Thread(target=watchdog, daemon=True).start()
        running = time.perf_counter()
        app.run()
        stopped = time.perf_counter()
    if failure or monitor.started is None or monitor.ended is None:
        raise PeerUnavailable(failure[0] if failure else "the app stopped before the last event")
    seconds = monitor.ended - monitor.started
    return {
        "events_per_second": total / seconds,
        "events": monitor.events,
        "seconds": seconds,
        # outside the timed span: set-up to the first event (topics, group join), and the
        # last event to the end of `run()` (final checkpoint, leaving the group)
        "until_first_event_seconds": monitor.started - running,
        "after_last_event_seconds": stopped - monitor.ended,
        "alerts": monitor.alerts,
        "models": len(monitor.detectors),
        "detectors": sum(len(signals) for signals in monitor.detectors.values()),
        "guarantee": guarantee,
        "join": join,
        "settings": dataclasses.asdict(settings),
        "quixstreams": metadata.version("quixstreams"),
        "confluent_kafka": metadata.version("confluent-kafka"),
        "librdkafka": confluent_kafka.libversion()[0],
        "river": metadata.version("river"),
    }


def raw_limit(bootstrap: str, topics: dict[str, str], total: int) -> float:
    """L as `run_throughput.raw_consume` measures it (best of two), with this environment's
    confluent-kafka: whether the peer's older client reads the topics any slower."""
    import orjson
    from confluent_kafka import Consumer, TopicPartition

    def once() -> float:
        consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"raw-{uuid.uuid4().hex[:6]}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
            }
        )
        partitions = [TopicPartition(topics[name], p, 0) for name in TOPIC_NAMES for p in range(4)]
        consumer.assign(partitions)
        seen, started = 0, None
        while seen < total:
            batch = consumer.consume(10000, 0.2)
            if batch and started is None:
                started = time.perf_counter()
            for message in batch:
                if message.error() is None:
                    orjson.loads(message.value())
                    seen += 1
        elapsed = time.perf_counter() - (started or time.perf_counter())
        consumer.close()
        return total / elapsed

    return max(once() for _ in range(2))


# --- a run of its own: L, `run` and the peer on one broker ---------------------------------------
def run_settings(session_timeout_ms: int = 6000, **overrides: Any) -> Settings:
    """The peer's settings from `run`'s configuration defaults (the parent's side only)."""
    from stream_monitor.config import build_config

    kafka = build_config({}, environ={}).kafka
    taken: dict[str, Any] = {
        "session_timeout_ms": session_timeout_ms,
        "commit_interval": (kafka.commit_interval or 0) / 1000,
        "commit_every": kafka.commit_max_events,
        "poll_timeout": (kafka.poll_timeout or 0) / 1000,
    }
    return Settings(**{**taken, **overrides})


def measure(predictions: int, kind: str, runs: list[Run], settings: Settings) -> dict[str, Any]:
    """L, `run` exactly once and at least once, then each peer run, on the same topics."""
    import logging

    from stream_monitor.brokers import local_broker

    try:
        from benchmarks.faust_throughput import TOPICS, publish_and_measure_limit
        from benchmarks.run_throughput import service_run
    except ImportError:
        from faust_throughput import TOPICS, publish_and_measure_limit  # type: ignore[no-redef]
        from run_throughput import service_run  # type: ignore[no-redef]

    logging.getLogger("stream_monitor.librdkafka").setLevel(logging.CRITICAL)
    quix_python()  # before the broker starts: creating the environment takes a while
    broker = local_broker(kind).start()
    try:
        bootstrap = broker.bootstrap_servers
        events, labels, _, limit = publish_and_measure_limit(bootstrap, predictions)
        total = len(events) + len(labels)
        rates: dict[str, float] = {"L: raw consume(10000) + orjson.loads": limit}
        rates["L with the peer's confluent-kafka"] = limit_in_process(bootstrap, TOPICS, total)
        session = f"{settings.session_timeout_ms}ms"
        for guarantee in ("exactly_once", "at_least_once"):
            rates[f"run, {guarantee}"] = service_run(bootstrap, TOPICS, guarantee, total, session)
        peers = {}
        for run in runs:
            figures = peer_in_process(
                bootstrap, TOPICS, total, run.guarantee, run.join, run.settings(settings)
            )
            peers[run.name] = figures
            rates[f"Quix peer, {run.name}"] = figures["events_per_second"]
    finally:
        broker.close()
    return {"broker": kind, "events": total, "rates": rates, "peers": peers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--predictions", type=int, default=20_000)
    parser.add_argument("--broker", help="kafka (Apache Kafka, default) or tansu")
    parser.add_argument("--guarantee", choices=GUARANTEES, help="one peer run (default: all)")
    parser.add_argument("--join", choices=JOINS, default="state", help="with --guarantee")
    parser.add_argument("--quix-commits", action="store_true", help="with --guarantee: every 5 s")
    parser.add_argument("--poll-timeout", type=float, help="seconds (default: run's, 0.02)")
    parser.add_argument("--only-peer", action="store_true", help="the peer alone, prints JSON")
    parser.add_argument("--only-limit", action="store_true", help="with --only-peer: L instead")
    parser.add_argument("--bootstrap", help="with --only-peer: the broker holding the topics")
    parser.add_argument("--predictions-topic", default="bench-predictions")
    parser.add_argument("--labels-topic", default="bench-labels")
    parser.add_argument("--total", type=int, help="with --only-peer: events in both topics")
    parser.add_argument("--settings", help="with --only-peer: Settings as JSON")
    args = parser.parse_args()
    if args.only_peer:
        topics = {"predictions": args.predictions_topic, "labels": args.labels_topic}
        if args.only_limit:
            rate = raw_limit(args.bootstrap, topics, args.total)
            print(json.dumps({"events_per_second": rate}), flush=True)
            return
        settings = Settings.from_json(args.settings) if args.settings else Settings()
        guarantee = args.guarantee or "exactly-once"
        figures = peer_run(args.bootstrap, topics, args.total, guarantee, args.join, settings)
        print(json.dumps(figures), flush=True)
        return
    from stream_monitor.brokers import chosen_kind

    overrides = {} if args.poll_timeout is None else {"poll_timeout": args.poll_timeout}
    runs = list(RUNS.values())
    if args.guarantee:
        runs = [Run(args.guarantee, args.join, args.quix_commits)]
    figures = measure(args.predictions, chosen_kind(args.broker), runs, run_settings(**overrides))
    print(f"{figures['events']} events on {figures['broker']}, 10 models, 4 partitions")
    limit = figures["rates"]["L: raw consume(10000) + orjson.loads"]
    print(f"{'path':48} {'events/s':>10} {'x L':>7}")
    for name, rate in figures["rates"].items():
        print(f"{name:48} {rate:10,.0f} {rate / limit:7.3f}")
    with contextlib.suppress(KeyError, StopIteration):
        peer = next(iter(figures["peers"].values()))
        print(
            f"Quix Streams {peer['quixstreams']}, confluent-kafka {peer['confluent_kafka']}, ",
            end="",
        )
        print(f"settings {peer['settings']}")


if __name__ == "__main__":
    main()
