"""Offline replay: JSON Lines files through the same core, no Kafka.

Files hold one event per line, or `kcat -J` envelopes (the event in `payload`). The two files are
merged by event timestamp, predictions before labels on ties; a line without a timestamp keeps its
place after the previous line of its file. In alerts, `source_position` names the file (as topic)
and the 1-based line number (as offset).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from stream_monitor.config import Config
from stream_monitor.core.events import LABEL, PREDICTION, EventError, parse_timestamp
from stream_monitor.core.monitor import Alert, DeadLetter, Monitor, Record

_KIND_ORDER = {PREDICTION: 0, LABEL: 1}


@dataclass
class ReplaySummary:
    events: dict[str, int] = field(default_factory=lambda: {PREDICTION: 0, LABEL: 0})
    bad_lines: int = 0
    alerts: int = 0
    alerts_by_model: dict[str, int] = field(default_factory=dict)
    joins: dict[str, int] = field(default_factory=dict)


def _unwrap(line: bytes) -> Any:
    """The event of one line: the line itself, or the `payload` of a kcat -J envelope."""
    obj = orjson.loads(line)
    if isinstance(obj, dict) and "payload" in obj and ("topic" in obj or "offset" in obj):
        payload = obj["payload"]
        if isinstance(payload, str):
            return payload.encode("utf-8")  # decoded (and validated) by the core
        return payload
    return obj


def read_events(path: Path, kind: str) -> Iterator[tuple[tuple[int, int, int], Record]]:
    """(sort key, record) per line. Lines that are not JSON become records the core rejects."""
    last_time = -(2**62)
    name = path.name
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            line = line.strip()
            if not line:
                continue
            try:
                value: Any = _unwrap(line)
            except orjson.JSONDecodeError:
                value = line  # the core classifies it (malformed JSON, not UTF-8, ...)
            if isinstance(value, dict) and value.get("timestamp") is not None:
                with contextlib.suppress(EventError):  # the core reports it
                    last_time = parse_timestamp(value["timestamp"])
            yield (last_time, _KIND_ORDER[kind], number), (kind, value, None, name, 0, number)


def merged(predictions: Path, labels: Path | None) -> list[Record]:
    keyed = list(read_events(predictions, PREDICTION))
    if labels is not None:
        keyed.extend(read_events(labels, LABEL))
    keyed.sort(key=lambda item: item[0])
    return [record for _, record in keyed]


def replay(
    config: Config,
    predictions: Path,
    labels: Path | None,
    output: IO[bytes],
    errors: IO[str] = sys.stderr,
    batch_size: int = 5000,
) -> ReplaySummary:
    monitor = Monitor(config)
    summary = ReplaySummary()
    records = merged(predictions, labels)
    for start in range(0, len(records), batch_size):
        result = monitor.process(records[start : start + batch_size])
        _write_alerts(result.alerts, output, summary)
        _report_bad(result.dead_letters, errors, summary)
    summary.events = dict(monitor.counters.events)
    summary.joins = monitor.join.counters.as_dict()
    return summary


def _write_alerts(alerts: list[Alert], output: IO[bytes], summary: ReplaySummary) -> None:
    for alert in alerts:
        output.write(orjson.dumps(alert.event) + b"\n")
        summary.alerts += 1
        model = alert.event["data"]["model"]
        summary.alerts_by_model[model] = summary.alerts_by_model.get(model, 0) + 1


def _report_bad(dead_letters: list[DeadLetter], errors: IO[str], summary: ReplaySummary) -> None:
    for dead in dead_letters:
        summary.bad_lines += 1
        _, _, _, name, _, line = dead.record
        errors.write(f"{name}:{line}: skipped ({dead.error.reason}): {dead.error.message}\n")
