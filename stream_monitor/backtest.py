"""Backtest: replay JSON Lines files through the core and write a report of what it detected.

The report directory holds:
- `index.html`: per model, its signals (plot, alert count) and, with a truth file, the scores;
- `<n>.png` per key×signal: its values against their observation number, alerts marked;
- `alerts.jsonl`: the alerts and their drift_resolved events, exactly as `replay` prints them;
- `scores.json` (with a truth file): delay, true/false positives, misses (`stream_monitor.scoring`);
- `reference.json`: the reference of the replayed period (`stream_monitor.references`, the code
  of `stream-monitor reference`), for the config's `reference` when the period is known to be
  healthy.

A truth file is JSON Lines of change points, `{"model": "credit", "index": 3000}`: the 0-based
index, within that model's predictions, of the first changed event (as `stream-monitor sample`
prints them; `"index": null` marks a model known to be stable). An alert's position is the number
of that model's predictions replayed when it fired, minus one, whatever signal fired it.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from stream_monitor.config import Config
from stream_monitor.core.alerts import ALERT_TYPE
from stream_monitor.core.events import PREDICTION, Decoded, Record
from stream_monitor.core.settings import MonitorSettings
from stream_monitor.core.signals import KeyState, Signal
from stream_monitor.errors import StreamMonitorError
from stream_monitor.references import ReferenceRecorder, reference_file, write_reference
from stream_monitor.replay import partitioned, run
from stream_monitor.scoring import Detection, Score, score

SeriesKey = tuple[str, str, str]  # (monitor key, signal kind, signal name)
PLOT_POINTS = 4000  # longer series are plotted as means of equal chunks


class BacktestError(StreamMonitorError):
    pass


class RecordingMonitor(ReferenceRecorder):
    """The monitor, also keeping every value each signal saw (for the plots), per input record
    how many predictions of its model came before it (for the truth scores), and what a
    reference of the period needs."""

    def __init__(self, settings: MonitorSettings) -> None:
        super().__init__(settings)
        self.series: dict[SeriesKey, list[float]] = {}
        self.positions: dict[tuple[str, int], int] = {}  # (file, line) -> prediction index
        self._predictions: dict[str, int] = {}

    def apply(self, record: Record, event: Decoded) -> None:
        model = getattr(event, "model", None)
        if model is None and isinstance(record.value, dict):
            model = record.value.get("model")
        if isinstance(model, str):
            seen = self._predictions.get(model, 0) + (record.kind == PREDICTION)
            self._predictions[model] = seen
            self.positions[(str(record.topic), record.offset)] = seen - 1
        super().apply(record, event)

    def _observe(self, state: KeyState, signal: Signal, value: float) -> None:
        key = (state.id, signal.kind, signal.name)
        values = self.series.get(key)
        if values is None:
            values = self.series[key] = []
        values.append(value)
        super()._observe(state, signal, value)


@dataclass
class BacktestResult:
    # drift_detected and drift_resolved events, in order (`detected` counts the former)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)  # per alert: its model's prediction index
    series: dict[SeriesKey, list[float]] = field(default_factory=dict)
    score: Score | None = None
    reference: dict[str, Any] = field(default_factory=dict)  # a reference file of the period

    @property
    def detected(self) -> int:
        return sum(1 for event in self.alerts if event["type"] == ALERT_TYPE)

    @property
    def resolved(self) -> int:
        return len(self.alerts) - self.detected


def read_truth(path: Path) -> list[tuple[str, int | None]]:
    """Change points of a truth file: (model, index), index None for a stable model."""
    points: list[tuple[str, int | None]] = []
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise BacktestError(f"cannot read truth file {path}: {exc.strerror}") from exc
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entry = orjson.loads(line)
            model, index = entry["model"], entry.get("index")
            if not isinstance(model, str) or not (index is None or type(index) is int):
                raise TypeError("model must be a string, index an integer or null")
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise BacktestError(
                f'{path}:{number}: expected {{"model": "<name>", "index": <int>}}: {exc}'
            ) from exc
        points.append((model, index))
    return points


def run_backtest(
    config: Config,
    predictions: Path,
    labels: Path | None,
    truth: Path | None = None,
    max_delay: int | None = None,
    model: str | None = None,
) -> BacktestResult:
    truth_points = read_truth(truth) if truth is not None else None
    streams = partitioned(predictions, labels, config.kafka.partitions, model)
    result = BacktestResult()
    found: list[tuple[str, int, dict[str, Any]]] = []
    models: dict[str, dict[str, Any]] = {}
    for processor, alerts, _ in run(config.monitor_settings(), streams, monitor=RecordingMonitor):
        monitor = processor.monitor
        assert isinstance(monitor, RecordingMonitor)
        result.series.update(monitor.series)
        models.update(monitor.summary())
        for alert in alerts:
            where = alert.event["data"]["source_position"]
            position = monitor.positions.get((where["topic"], where["offset"]), -1)
            found.append((alert.event.get("time") or "", position, alert.event))
    found.sort(key=lambda item: item[:2])
    source = {"predictions": predictions.name, "labels": None if labels is None else labels.name}
    result.reference = reference_file(models, source)
    result.alerts = [event for _, _, event in found]
    result.positions = [position for _, position, _ in found]
    if truth_points is not None:
        detections = [
            Detection(event["data"]["model"], index, _label(event))
            for event, index in zip(result.alerts, result.positions, strict=True)
            if event["type"] == ALERT_TYPE  # a drift_resolved event detects nothing
        ]
        changes = [(model, index) for model, index in truth_points if index is not None]
        result.score = score(changes, detections, max_delay)
    return result


def _label(event: dict[str, Any]) -> str:
    data = event["data"]
    return f"{data['monitor_key']} {data['signal_kind']} {data['signal']} / {data['rule']}"


def write_report(result: BacktestResult, report_dir: Path) -> list[Path]:
    """Write the report files; returns them, index.html first."""
    report_dir.mkdir(parents=True, exist_ok=True)
    written = [
        report_dir / "index.html",
        report_dir / "alerts.jsonl",
        report_dir / "reference.json",
    ]
    with written[1].open("wb") as handle:
        for event in result.alerts:
            handle.write(orjson.dumps(event) + b"\n")
    write_reference(result.reference, written[2])
    if result.score is not None:
        path = report_dir / "scores.json"
        path.write_bytes(orjson.dumps(result.score.summary(), option=orjson.OPT_INDENT_2))
        written.append(path)
    by_series: dict[SeriesKey, list[tuple[int, dict[str, Any]]]] = {}
    for event in result.alerts:
        data = event["data"]
        key = (data["monitor_key"], data["signal_kind"], data["signal"])
        by_series.setdefault(key, []).append((data["observations"], event))
    rows = []
    for number, key in enumerate(sorted(result.series), start=1):
        plot = report_dir / f"{number}.png"
        alerts = by_series.get(key, [])
        _plot(
            key,
            result.series[key],
            [seen for seen, event in alerts if event["type"] == ALERT_TYPE],
            [seen for seen, event in alerts if event["type"] != ALERT_TYPE],
            plot,
        )
        written.append(plot)
        rows.append((key, plot.name, alerts))
    written[0].write_text(_html(rows, result), encoding="utf-8")
    return written


def _plot(
    key: SeriesKey, values: list[float], alerts: list[int], resolved: list[int], path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    chunk = max(1, math.ceil(len(values) / PLOT_POINTS))
    xs = [min(start + chunk, len(values)) for start in range(0, len(values), chunk)]
    ys = [
        math.fsum(values[start : start + chunk]) / len(values[start : start + chunk])
        for start in range(0, len(values), chunk)
    ]
    figure, axes = plt.subplots(figsize=(9, 2.8))
    axes.plot(xs, ys, linewidth=0.7, color="#1f77b4")
    for observation in alerts:
        axes.axvline(observation, color="#d62728", linewidth=1.2)
    for observation in resolved:
        axes.axvline(observation, color="#2ca02c", linewidth=1.2, linestyle="--")
    title = f"{key[0]} · {key[1]} · {key[2]}: {len(alerts)} alerts"
    if resolved:
        title += f", {len(resolved)} resolved"
    if chunk > 1:
        title += f" (means of {chunk} values)"
    axes.set_title(title, fontsize=9)
    axes.set_xlabel("observation")
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)


def _html(
    rows: list[tuple[SeriesKey, str, list[tuple[int, dict[str, Any]]]]], result: BacktestResult
) -> str:
    escape = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>stream-monitor backtest</title>",
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:2px 8px;text-align:left}"
        "img{max-width:100%}</style></head><body><h1>stream-monitor backtest</h1>",
        f"<p>{result.detected} alerts ({result.resolved} resolved) over {len(rows)} signals; "
        "on the plots, alerts are red lines, resolved events green dashes.</p>",
    ]
    if result.score is not None:
        summary = result.score.summary()
        parts.append("<h2>Against the truth file</h2><table>")
        for name in ("true_positives", "false_positives", "misses", "duplicates", "mean_delay"):
            parts.append(f"<tr><th>{name}</th><td>{summary[name]}</td></tr>")
        parts.append("</table><table><tr><th>model</th><th>change at</th><th>detected at</th>")
        parts.append("<th>delay</th><th>by</th></tr>")
        for change in summary["changes"]:
            parts.append(
                f"<tr><td>{escape(change['stream'])}</td><td>{change['index']}</td>"
                f"<td>{change['detected_at']}</td><td>{change['delay']}</td>"
                f"<td>{escape(str(change['by']))}</td></tr>"
            )
        parts.append("</table>")
    for (key_id, kind, name), image, alerts in rows:
        parts.append(f"<h2>{escape(key_id)} · {escape(kind)} · {escape(name)}</h2>")
        parts.append(f"<img src='{image}' alt='{escape(name)}'>")
        if alerts:
            parts.append("<table><tr><th>observation</th><th>rule</th><th>severity</th>")
            parts.append("<th>event time</th><th>id</th></tr>")
            for observations, event in alerts:
                data = event["data"]
                what = (
                    data["severity"]
                    if event["type"] == ALERT_TYPE
                    else f"resolved (closes {data['resolves']})"
                )
                parts.append(
                    f"<tr><td>{observations}</td><td>{escape(data['rule'])}</td>"
                    f"<td>{escape(what)}</td><td>{escape(str(data['event_time']))}</td>"
                    f"<td>{escape(event['id'])}</td></tr>"
                )
            parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)
