"""How much earlier `estimated_error` alerts than the error from labels, when labels are late.

Scenario (stream_monitor.scenarios.covariate_shift): a classifier with calibrated scores whose
input moves towards its decision boundary half-way (covariate shift: its error rate doubles,
0.08 -> 0.17), labels `--label-delay` predictions late. Both streams are merged by event time, as
`replay` and `run` do; an alert's position is the number of predictions published when it was
raised, minus the change point: how long people wait for it. Also the same with concept drift
(the labels change, the inputs and scores do not), where scores cannot help.

    python benchmarks/estimated_error.py [--events 80000] [--label-delay 20000] [--seeds 5]
"""

from __future__ import annotations

import argparse
import statistics
from multiprocessing import Pool
from typing import Any

from stream_monitor.config import build_config
from stream_monitor.core.events import LABEL, PREDICTION, Record
from stream_monitor.core.monitor import Monitor
from stream_monitor.replay import run
from stream_monitor.scenarios import covariate_shift

KINDS = ("performance", "prediction", "feature", "data_quality")
CONFIGS: dict[str, dict[str, Any]] = {
    "default": {},
    "river-adwin": {
        "signals": {key: ["adwin"] for key in KINDS},
        "alerts": {"min_effect": 0, "resolve": {"enabled": False}},
    },
}


class PositionMonitor(Monitor):
    """Counts the predictions applied, so an alert's position is known whatever raised it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.predictions = 0
        self.at: dict[str, int] = {}

    def apply(self, record: Any, event: Any) -> None:
        self.predictions += record.kind == PREDICTION
        before = len(self._output.alerts)
        super().apply(record, event)
        for alert in self._output.alerts[before:]:
            self.at[alert.id] = self.predictions - 1


def first_alerts(job: tuple[str, int, int, int, bool]) -> tuple[str, bool, dict[str, int]]:
    """Per signal, the position of its first alert after the change (or none)."""
    config, seed, events, delay, concept = job
    scenario = covariate_shift(events=events, seed=seed, label_delay=delay, concept=concept)
    change = scenario.change_points["churn"]
    assert change is not None
    streams: dict[int, tuple[list[Any], list[Any]]] = {0: ([], [])}
    streams[0][0].extend(
        Record(PREDICTION, e, None, "predictions", 0, i) for i, e in enumerate(scenario.predictions)
    )
    streams[0][1].extend(
        Record(LABEL, e, None, "labels", 0, i) for i, e in enumerate(scenario.labels)
    )
    settings = build_config(CONFIGS[config], environ={}).monitor_settings()
    monitors: list[PositionMonitor] = []

    def make(s: Any) -> Monitor:
        monitors.append(PositionMonitor(s))
        return monitors[-1]

    ((_, alerts, _),) = run(settings, streams, monitor=make)
    firsts: dict[str, int] = {}
    for alert in alerts:
        data = alert.event["data"]
        if alert.event["type"] != "stream_monitor.drift_detected":
            continue
        position = monitors[0].at[alert.id] - change
        if position >= 0 and data["signal"] not in firsts:
            firsts[data["signal"]] = position
    return config, concept, firsts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=80_000)
    parser.add_argument("--label-delay", type=int, default=20_000)
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    jobs = [
        (config, seed, args.events, args.label_delay, concept)
        for config in CONFIGS
        for concept in (False, True)
        for seed in range(1, args.seeds + 1)
    ]
    with Pool(2) as pool:
        results = pool.map(first_alerts, jobs, chunksize=1)
    print(
        f"{args.seeds} seeds, {args.events:,} predictions, change half-way, labels "
        f"{args.label_delay:,} predictions late. Predictions published after the change before "
        "the first alert of each signal (median, min-max; – none):\n"
    )
    print("| drift | detection | estimated_error | error (labels) | lead of the estimate | score |")
    print("|---|---|---:|---:|---:|---:|")
    for concept in (False, True):
        for config in CONFIGS:
            found = [f for c, k, f in results if c == config and k == concept]

            def cell(signal: str, found: list[dict[str, int]] = found) -> str:
                values = [f[signal] for f in found if signal in f]
                if not values:
                    return "–"
                return f"{statistics.median(values):,.0f} ({min(values):,}–{max(values):,})"

            leads = [
                f["error"] - f["estimated_error"]
                for f in found
                if "error" in f and "estimated_error" in f
            ]
            lead = f"{statistics.median(leads):,.0f}" if leads else "–"
            drift = "concept" if concept else "covariate"
            print(
                f"| {drift} | {config} | {cell('estimated_error')} | {cell('error')} | {lead} "
                f"| {cell('score')} |"
            )


if __name__ == "__main__":
    main()
