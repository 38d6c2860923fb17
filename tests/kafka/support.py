"""Helpers for tests against the embedded broker: unique names, bounded waits, readers, runners."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import yaml
from confluent_kafka import Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient

from stream_monitor.config import Config, build_config
from stream_monitor.core.events import LABEL, PREDICTION, Record
from stream_monitor.core.monitor import Monitor
from stream_monitor.core.state import StateCodec
from stream_monitor.kafka.changelog import Changelog, StateRead
from stream_monitor.kafka.offsets import committed_offsets
from stream_monitor.kafka.service import MonitorService
from stream_monitor.kafka.settings import reader_settings
from stream_monitor.kafka.topics import TopicNames, ensure_topics
from stream_monitor.partitioning import partition_for
from stream_monitor.processing.changelog import InvalidRecords, RecordCheck
from stream_monitor.processing.partition import PartitionProcessor
from stream_monitor.publish import event_producer, publish
from stream_monitor.replay import run
from stream_monitor.scenarios import Scenario

ROOT = Path(__file__).resolve().parents[2]
KEY = "integration-test-signing-key"


def wait_for(
    condition: Callable[[], bool],
    timeout: float,
    what: str,
    interval: float = 0.1,
    *,
    watching: ServiceProcess | None = None,
) -> None:
    """Until `condition` holds; on a timeout, what `watching` was doing goes in the error."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            where = "" if watching is None else "\n" + watching.diagnose()
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{where}")
        time.sleep(interval)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def config_data(bootstrap: str, **kafka: Any) -> dict[str, Any]:
    """A config with its own uuid topic and group names, and short timeouts for tests."""
    run = uuid.uuid4().hex[:8]
    settings: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "group_id": f"group-{run}",
        "instance_id": "a",
        "session_timeout": "6s",
        "topics": {
            "predictions": f"predictions-{run}",
            "labels": f"labels-{run}",
            "alerts": f"alerts-{run}",
            "dead_letters": f"dead-letters-{run}",
        },
    }
    settings.update(kafka)
    # Any free port for /metrics: several instances share this machine in tests.
    return {"kafka": settings, "state": {"signing_key": KEY}, "metrics": {"port": 0}}


def make_config(data: dict[str, Any]) -> Config:
    return build_config(data, environ={})


def create_topics(config: Config) -> TopicNames:
    ensure_topics(AdminClient({"bootstrap.servers": config.kafka.bootstrap_servers}), config)
    return TopicNames.from_config(config)


def produce_scenario(
    bootstrap: str, names: TopicNames, scenario: Scenario, keyed: bool = True
) -> None:
    producer = event_producer(bootstrap)
    publish(producer, names.predictions, scenario.predictions, keyed=keyed)
    publish(producer, names.labels, scenario.labels, keyed=keyed)


def wait_until_consumed(
    config: Config,
    names: TopicNames,
    scenario: Scenario,
    timeout: float = 90,
    what: str = "every input offset committed",
) -> None:
    """Until the group has committed every produced input offset (inputs have no commit markers)."""
    wait_for(
        lambda: (
            committed_total(config, names.predictions) == len(scenario.predictions)
            and committed_total(config, names.labels) == len(scenario.labels)
        ),
        timeout,
        what,
    )


def read_topic(
    bootstrap: str, topic: str, *, committed: bool = True, idle: float = 1.5, timeout: float = 30
) -> list[Any]:
    """Every message of a topic, from the beginning until `idle` seconds pass with nothing new."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": unique("reader"),
            "enable.auto.commit": False,
            "isolation.level": "read_committed" if committed else "read_uncommitted",
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        consumer.assign([TopicPartition(topic, p, 0) for p in metadata.partitions])
        messages: list[Any] = []
        deadline = time.monotonic() + timeout
        last = time.monotonic()
        while time.monotonic() - last < idle and time.monotonic() < deadline:
            for message in consumer.consume(500, 0.1):
                if message.error() is None:
                    messages.append(message)
                    last = time.monotonic()
        return messages
    finally:
        consumer.close()


def wait_until_no_open_transaction(bootstrap: str, topic: str, timeout: float = 60) -> float:
    """Until no open transaction holds back read_committed readers of `topic`; the seconds waited.

    A killed producer's open transaction is aborted by the broker only after its
    `transaction.timeout.ms` (plus up to the broker's 10 s abort check): until then read_committed
    readers stop at it and miss what others committed after it. For a read_committed consumer,
    ListOffsets answers the last stable offset, for a read_uncommitted one the high watermark.
    """

    def ends(isolation: str) -> list[int]:
        consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": unique("ends"),
                "isolation.level": isolation,
            }
        )
        try:
            partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
            return [
                consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in sorted(partitions)
            ]
        finally:
            consumer.close()

    started = time.monotonic()
    wait_for(
        lambda: ends("read_committed") == ends("read_uncommitted"),
        timeout,
        f"the open transactions on {topic} to end",
    )
    return time.monotonic() - started


def alert_events(bootstrap: str, topic: str, **kwargs: Any) -> list[dict[str, Any]]:
    return [orjson.loads(m.value()) for m in read_topic(bootstrap, topic, **kwargs)]


def expected_alerts(config: Config, scenario: Scenario) -> dict[str, dict[str, Any]]:
    """The alerts of replaying the scenario offline, as `run` must publish them.

    Each event goes to the partition its model key lands on (murmur2), in produced order, so the
    records, and so the ids and even the source positions, are those of the Kafka topics.
    """
    names = TopicNames.from_config(config)
    streams: dict[int, tuple[list[Record], list[Record]]] = {
        p: ([], []) for p in range(config.kafka.partitions)
    }
    for kind, topic, events, stream in (
        (PREDICTION, names.predictions, scenario.predictions, 0),
        (LABEL, names.labels, scenario.labels, 1),
    ):
        for event in events:
            partition = partition_for(event["model"].encode(), config.kafka.partitions)
            records = streams[partition][stream]
            records.append(Record(kind, event, None, topic, partition, len(records)))
    found = run(config.monitor_settings(), streams, source=config.kafka.group_id)
    return {alert.id: alert.event for _, alerts, _ in found for alert in alerts}


def without_position(event: dict[str, Any]) -> dict[str, Any]:
    data = {k: v for k, v in event["data"].items() if k != "source_position"}
    return {**event, "data": data}


def committed_total(config: Config, topic: str) -> int:
    consumer = Consumer(
        {"bootstrap.servers": config.kafka.bootstrap_servers, "group.id": config.kafka.group_id}
    )
    try:
        partitions = [TopicPartition(topic, p) for p in range(config.kafka.partitions)]
        return sum(max(tp.offset, 0) for tp in committed_offsets(consumer, partitions))
    finally:
        consumer.close()


def restored_monitors(config: Config) -> dict[int, Monitor]:
    """The state a new instance would restore, per partition, as Monitors to inspect.

    Like a real restore, the input between the state's checkpoint and the committed offsets is
    read and processed again (state is written less often than offsets are committed).
    """
    names = TopicNames.from_config(config)
    streams = (names.predictions, names.labels)
    if config.kafka.partitioning == "repartition":
        streams = (names.repartition_predictions, names.repartition_labels)
    consumer = Consumer(
        {"bootstrap.servers": config.kafka.bootstrap_servers, "group.id": config.kafka.group_id}
    )
    try:
        committed: dict[int, tuple[int, ...]] = {}
        for p in range(config.kafka.partitions):
            found = committed_offsets(consumer, [TopicPartition(topic, p) for topic in streams])
            committed[p] = tuple(max(tp.offset, 0) for tp in found)
    finally:
        consumer.close()
    check = RecordCheck(StateCodec(KEY.encode()), InvalidRecords("stop"))
    state = Changelog(names.state, check).read(
        reader_settings(config, "test"), StateRead(committed, check)
    )
    monitors = {}
    for partition in range(config.kafka.partitions):
        monitor = Monitor(config.monitor_settings(), source=config.kafka.group_id)
        tag = state.state_tag(partition) or (0, 0)
        restored = state.restored(partition)
        for changes in restored.changes:
            monitor.restore(changes)
        if tag != committed[partition]:
            merge = restored.processor.get("merge") or (0, 0)
            processor = PartitionProcessor(
                partition,
                monitor,
                restored.writer,
                positions=(tag[0], tag[1]),
                merge_times=(merge[0], merge[1]),
            )
            for stream, topic in enumerate(streams):
                kind = (PREDICTION, LABEL)[stream]
                processor.add(
                    stream,
                    input_range(
                        config, topic, kind, partition, tag[stream], committed[partition][stream]
                    ),
                )
            processor.process((True, True))
        monitors[partition] = monitor
    return monitors


def input_range(
    config: Config, topic: str, kind: str, partition: int, start: int, end: int
) -> list[Record]:
    """The records of one input partition in [start, end), as the service reads them."""
    if start >= end:
        return []
    consumer = Consumer(
        {
            "bootstrap.servers": config.kafka.bootstrap_servers,
            "group.id": unique("range"),
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    try:
        consumer.assign([TopicPartition(topic, partition, start)])
        found: list[Record] = []
        deadline = time.monotonic() + 30
        while (not found or found[-1].offset < end - 1) and time.monotonic() < deadline:
            for message in consumer.consume(500, 0.2):
                if message.error() is None and message.offset() < end:
                    kind_of, stamp = message.timestamp()
                    found.append(
                        Record(
                            kind,
                            message.value() or b"",
                            stamp if kind_of else None,
                            topic,
                            partition,
                            message.offset(),
                            message.key(),
                        )
                    )
        return found
    finally:
        consumer.close()


def observation_counts(monitors: dict[int, Monitor]) -> dict[tuple[str, str], int]:
    """(monitor key, 'kind/name') -> values the signal has received, over all partitions.

    Each detector counts what it has seen; a rule for another kind of series (a 0/1 rule on a
    continuous feature) goes dormant after the warm-up, so the most any of them saw is the count.
    """
    counts: dict[tuple[str, str], int] = {}
    for monitor in monitors.values():
        for key, state in monitor.keys.items():
            for signal_ in state.signals():
                name = (key, f"{signal_.kind}/{signal_.name}")
                # A key spread over partitions (unkeyed input) has a state in each: add them up.
                seen = max(track.observed for track in signal_.tracks)  # zeros waiting too
                counts[name] = counts.get(name, 0) + seen
    return counts


class ServiceThread:
    """Runs a MonitorService (or the `service` given) in a thread of the test process."""

    def __init__(self, config: Config | None = None, *, service: Any = None) -> None:
        if service is None:
            assert config is not None
            service = MonitorService(config, codec=StateCodec(KEY.encode()))
        self.service = service
        self.stop: threading.Event = service.stop
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.service.run()
        except BaseException as exc:  # surfaced by join()
            self.error = exc

    def __enter__(self) -> ServiceThread:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.join()

    def join(self, timeout: float = 60) -> None:
        self.stop.set()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "service did not stop"
        if self.error is not None:
            raise self.error


class ServiceProcess:
    """Runs `stream-monitor run` as a real process, so it can be killed with SIGKILL."""

    def __init__(
        self,
        data: dict[str, Any],
        folder: Path,
        name: str = "a",
        engine: str = "confluent-kafka",
        options: tuple[str, ...] = (),
    ) -> None:
        self.engine = engine
        self.options = options  # options of the `stream-monitor` group, e.g. --log-level DEBUG
        self.path = folder / f"config-{name}-{uuid.uuid4().hex[:6]}.yaml"
        self.path.write_text(yaml.safe_dump(data))
        self.log = folder / f"run-{name}-{uuid.uuid4().hex[:6]}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        """`engine` "faust -A" runs Faust's own worker command on `stream_monitor.faust_app`."""
        if self.engine == "faust -A":  # the config file comes from STREAM_MONITOR_CONFIG
            return [sys.executable, "-m", "faust", "-A", "stream_monitor.faust_app", "worker"]
        command = [sys.executable, "-m", "stream_monitor.cli", *self.options, "run"]
        return [*command, "--engine", self.engine, "--config", str(self.path)]

    def start(self) -> ServiceProcess:
        handle = self.log.open("wb")
        self.process = subprocess.Popen(
            self.command(),
            stdout=handle,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "STREAM_MONITOR_CONFIG": str(self.path)},
        )
        return self

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def terminate(self, timeout: float = 60) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def diagnose(self) -> str:
        """Where a process that seems stuck is: its threads' stacks (py-spy) and its last log
        lines, so that a stall seen once in CI says where it was."""
        assert self.process is not None
        if self.process.poll() is not None:
            stacks = f"(exited with {self.process.returncode})"
        else:
            spy = Path(sys.executable).with_name("py-spy")
            try:
                stacks = subprocess.run(
                    [str(spy), "dump", "--pid", str(self.process.pid)],
                    capture_output=True,
                    text=True,
                    timeout=30,
                ).stdout
            except (OSError, subprocess.TimeoutExpired) as exc:
                stacks = f"(no stacks: {exc})"
        tail = "\n".join(self.output().splitlines()[-20:])
        return f"--- {self.log.name}: stacks ---\n{stacks}\n--- last log lines ---\n{tail}"

    def metrics_url(self, timeout: float = 30) -> str:
        """Where this instance serves /metrics (tests run it on any free port), from its log."""
        found: list[str] = []

        def logged() -> bool:
            found[:] = re.findall(r"(http://[\d.]+:\d+)/metrics", self.output())
            return bool(found)

        wait_for(logged, timeout, "the metrics server's address in the log")
        return found[0]


def is_eof(error: KafkaError | None) -> bool:
    return error is not None and error.code() == KafkaError._PARTITION_EOF
