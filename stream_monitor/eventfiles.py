"""Files of events as input records: JSON Lines, CSV and Parquet.

JSON Lines hold one event per line as the event contract has it, or `kcat -J` envelopes (the
event in `payload`). CSV and Parquet hold one row per prediction, for samples such as training
data: columns `prediction_id`, `model`, `model_version`, `timestamp`, `prediction`, `score`,
`label`, `segment.<name>` and `features.<name>` (in Parquet also `segment` and `features`
structs); any other column is a feature. A row with a label gives a prediction and a label that
carries it (nothing to join). A CSV cell is a number when it reads as one, a boolean when it is
`true` or `false`, absent when empty, else text; Parquet keeps its column types. Rows without a
model take `model` (when given), rows without an id their file's name and row number.

Parquet needs pyarrow (`pip install 'stream-monitor[parquet]'`).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

from stream_monitor.core.events import LABEL, PREDICTION, Record, parse_number
from stream_monitor.errors import StreamMonitorError

TEXT_FIELDS = ("prediction_id", "model", "model_version")
EVENT_FIELDS = (*TEXT_FIELDS, "timestamp", "prediction", "score")
FEATURES, SEGMENT = "features", "segment"
CSV_SUFFIXES = (".csv",)
PARQUET_SUFFIXES = (".parquet", ".pq")


class EventFileError(StreamMonitorError):
    pass


def read_events(path: Path, kind: str, model: str | None = None) -> Iterator[tuple[Any, Record]]:
    """(model or None, record) per event of the file, in its order. A JSON line that does not
    parse becomes a record the core rejects (and reports); a row of a table gives a prediction
    (and a label, when it has one) or, in a labels file, a label."""
    suffix = path.suffix.lower()
    if suffix in CSV_SUFFIXES:
        return _rows(path, kind, model, _csv_rows(path))
    if suffix in PARQUET_SUFFIXES:
        return _rows(path, kind, model, _parquet_rows(path))
    return _json_lines(path, kind)


def _json_lines(path: Path, kind: str) -> Iterator[tuple[Any, Record]]:
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
            model = value.get("model") if isinstance(value, dict) else None
            yield model, Record(kind, value, None, name, 0, number)


def _unwrap(line: bytes) -> Any:
    """The event of one line: the line itself, or the `payload` of a kcat -J envelope."""
    obj = orjson.loads(line)
    if isinstance(obj, dict) and "payload" in obj and ("topic" in obj or "offset" in obj):
        payload = obj["payload"]
        if isinstance(payload, str):
            return payload.encode("utf-8")  # decoded (and validated) by the core
        return payload
    return obj


def _rows(
    path: Path, kind: str, model: str | None, rows: Iterable[dict[str, Any]]
) -> Iterator[tuple[Any, Record]]:
    name = path.name
    for number, row in enumerate(rows, start=1):
        event, label = _event(row, model, f"{path.stem}-{number}")
        if kind == LABEL:
            if label is not None:
                event["label"] = label
            event.pop(FEATURES, None)
            event.pop("score", None)
            yield event.get("model"), Record(LABEL, event, None, name, 0, number)
            continue
        yield event.get("model"), Record(PREDICTION, event, None, name, 0, number)
        if label is not None:
            carried = {key: event[key] for key in (*EVENT_FIELDS, SEGMENT) if key in event}
            carried["label"] = label
            yield event.get("model"), Record(LABEL, carried, None, name, 0, number)


def _event(row: dict[str, Any], model: str | None, default_id: str) -> tuple[dict[str, Any], Any]:
    """A row as an event, and its label (None: it has none)."""
    event: dict[str, Any] = {}
    features: dict[str, Any] = {}
    segment: dict[str, Any] = {}
    label = None
    for column, value in row.items():
        if column in EVENT_FIELDS:
            if value is not None:
                event[column] = str(value) if column in TEXT_FIELDS else value
        elif column == "label":
            label = value
        elif column == FEATURES and isinstance(value, dict):
            features.update(value)
        elif column == SEGMENT and isinstance(value, dict):
            segment.update({key: str(item) for key, item in value.items() if item is not None})
        elif column.startswith("segment."):
            if value is not None:
                segment[column[len("segment.") :]] = str(value)
        else:
            features[column.removeprefix("features.")] = value
    event.setdefault("prediction_id", default_id)
    if model is not None:
        event.setdefault("model", model)
    if features:
        event[FEATURES] = features
    if segment:
        event[SEGMENT] = segment
    return event, label


def _csv_rows(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            yield {
                column: (text or None) if column in TEXT_FIELDS else _cell(text)
                for column, text in row.items()
                if column is not None
            }


def _cell(text: str | None) -> Any:
    """A CSV cell: absent when empty (or `nan`), a boolean, an integer, a finite number, else
    text."""
    if not text:
        return None
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    number = parse_number(text)
    if number is None:
        return text
    return number if math.isfinite(number) else None  # `nan`, `inf`: missing


def _parquet_rows(path: Path) -> Iterator[dict[str, Any]]:
    try:
        import pyarrow.parquet as parquet
    except ImportError as exc:
        raise EventFileError(
            f"{path}: reading Parquet needs pyarrow: pip install 'stream-monitor[parquet]'"
        ) from exc
    try:
        table = parquet.ParquetFile(path)
        for batch in table.iter_batches(batch_size=10_000):
            yield from batch.to_pylist()
    except (OSError, ValueError) as exc:
        raise EventFileError(f"{path}: not a readable Parquet file: {exc}") from exc
