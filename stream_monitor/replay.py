"""Offline replay: files of events through the same processor as Kafka, without Kafka.

Files hold one event per line, or `kcat -J` envelopes (the event in `payload`), or rows of CSV or
Parquet (`stream_monitor.eventfiles`). Each event goes to
the partition its model would have on Kafka (the Java client's murmur2 of the model name, over
`kafka.partitions`), and each partition's predictions and labels are merged exactly as the Kafka
runtime merges them (`processing.merge`): by event time, predictions first on ties, each file's
order kept. So replay gives the alerts, with the same ids, that `run` gives on the same events.
In alerts, `source_position` names the file (as topic), that partition, and the 1-based line.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import orjson

from stream_monitor.config import Config
from stream_monitor.core.alerts import RESOLVED_TYPE
from stream_monitor.core.events import LABEL, PREDICTION, Record
from stream_monitor.core.monitor import Alert, DeadLetter, Monitor
from stream_monitor.core.settings import MonitorSettings
from stream_monitor.core.state import StateCodec
from stream_monitor.eventfiles import read_events
from stream_monitor.partitioning import partition_for
from stream_monitor.processing.changelog import PartitionWriter
from stream_monitor.processing.merge import LABELS, PREDICTIONS
from stream_monitor.processing.partition import PartitionProcessor

# Replay writes no state: its writer only needs a codec to exist.
_NO_STATE = StateCodec(b"replay-writes-no-state-records")


@dataclass
class ReplaySummary:
    events: dict[str, int] = field(default_factory=lambda: {PREDICTION: 0, LABEL: 0})
    bad_lines: int = 0
    alerts: int = 0  # drift_detected events
    resolved: int = 0  # drift_resolved events
    alerts_by_model: dict[str, int] = field(default_factory=dict)
    joins: dict[str, int] = field(default_factory=dict)


Streams = dict[int, tuple[list[Record], list[Record]]]


def partitioned(
    predictions: Path, labels: Path | None, partitions: int, model: str | None = None
) -> Streams:
    """Per partition, its predictions and its labels, each in file order.

    An event goes where Kafka would put it when keyed by its model; one whose model cannot be
    read goes to partition 0 (it only yields a dead letter). Files are JSON Lines, CSV or
    Parquet (`eventfiles`); `model` names the model of table rows that have none.
    """
    streams: Streams = {p: ([], []) for p in range(partitions)}
    sources = [(predictions, PREDICTION)]
    if labels is not None:
        sources.append((labels, LABEL))
    for path, kind in sources:
        for name, record in read_events(path, kind, model):
            partition = (
                partition_for(name.encode(), partitions) if type(name) is str and name else 0
            )
            stream = PREDICTIONS if record.kind == PREDICTION else LABELS
            streams[partition][stream].append(record._replace(partition=partition))
    return streams


def run(
    settings: MonitorSettings,
    streams: Streams,
    *,
    source: str | None = None,
    monitor: Callable[[MonitorSettings], Monitor] = Monitor,
) -> list[tuple[PartitionProcessor, list[Alert], list[DeadLetter]]]:
    """Every partition through its processor: (processor, alerts, dead letters) per partition."""
    results = []
    for partition, (predictions, labels) in sorted(streams.items()):
        made = monitor(settings)
        if source is not None:
            made.source = source
        processor = PartitionProcessor(partition, made, PartitionWriter(_NO_STATE, partition))
        processor.add(PREDICTIONS, predictions)
        processor.add(LABELS, labels)
        output = processor.process((True, True))  # both files are read to their end
        results.append((processor, output.alerts, output.dead_letters))
    return results


def replay(
    config: Config,
    predictions: Path,
    labels: Path | None,
    output: IO[bytes],
    errors: IO[str] = sys.stderr,
    partitions: int | None = None,
    model: str | None = None,
) -> ReplaySummary:
    """Replay files and write each alert (CloudEvents JSON) as a line, in event-time order (a
    key's drift_resolved events after the alerts they close)."""
    streams = partitioned(predictions, labels, partitions or config.kafka.partitions, model)
    summary = ReplaySummary()
    alerts: list[tuple[str, int, int, Alert]] = []
    joins: dict[str, int] = {}
    for processor, found, dead_letters in run(config.monitor_settings(), streams):
        counters = processor.monitor.counters
        for kind, count in counters.events.items():
            summary.events[kind] += count
        for name, count in processor.monitor.join.counters.as_dict().items():
            joins[name] = joins.get(name, 0) + count
        for index, alert in enumerate(found):
            alerts.append((alert.event.get("time") or "", processor.partition, index, alert))
        _report_bad(dead_letters, errors, summary)
    alerts.sort(key=lambda item: item[:3])
    _write_alerts([alert for *_, alert in alerts], output, summary)
    summary.joins = joins
    return summary


def _write_alerts(alerts: list[Alert], output: IO[bytes], summary: ReplaySummary) -> None:
    for alert in alerts:
        output.write(orjson.dumps(alert.event) + b"\n")
        if alert.event["type"] == RESOLVED_TYPE:
            summary.resolved += 1
            continue
        summary.alerts += 1
        model = alert.event["data"]["model"]
        summary.alerts_by_model[model] = summary.alerts_by_model.get(model, 0) + 1


def _report_bad(dead_letters: list[DeadLetter], errors: IO[str], summary: ReplaySummary) -> None:
    for dead in sorted(dead_letters, key=lambda d: (d.record.topic or "", d.record.offset)):
        summary.bad_lines += 1
        record = dead.record
        errors.write(
            f"{record.topic}:{record.offset}: skipped ({dead.error.reason}): {dead.error.message}\n"
        )
