"""The alert lifecycle: false resolves of signals that stay shifted, and how fast a return resolves.

Each stream is one feature of one key through the real `Monitor` with the default rules: 2,000
stable values, then a lasting change for `--values` more (every drift_resolved there is a false
resolve, the budget is about one per 1e6 values), or a change that goes back after 5,000 values
(the delay from the return to its drift_resolved event).

    python benchmarks/lifecycle_check.py [--values 200000] [--seeds 8]
"""

from __future__ import annotations

import argparse
import statistics
from multiprocessing import Pool

import numpy as np

from stream_monitor.config import build_config
from stream_monitor.core.alerts import RESOLVED_TYPE
from stream_monitor.core.events import PREDICTION, Prediction, Record
from stream_monitor.core.monitor import Monitor

ONE_FEATURE = {"signals": {"prediction": [], "performance": [], "data_quality": []}}
# (name, kind, before, after): a normal's mean and sd, or a 0/1 rate
CHANGES = (
    ("mean +0.5 sd", "normal", (0.0, 1.0), (0.5, 1.0)),
    ("mean +1 sd", "normal", (0.0, 1.0), (1.0, 1.0)),
    ("mean +2 sd", "normal", (0.0, 1.0), (2.0, 1.0)),
    ("mean +1 sd, sd x2", "normal", (0.0, 1.0), (1.0, 2.0)),
    ("rate 0.1 -> 0.2", "rate", 0.1, 0.2),
    ("rate 0.1 -> 0.3", "rate", 0.1, 0.3),
    ("rate 0.02 -> 0.05", "rate", 0.02, 0.05),
)
RETURN_AFTER = 5000


def stream(
    change: tuple[str, str, object, object], seed: int, values: int, back: bool
) -> list[float]:
    _, kind, before, after = change
    rng = np.random.default_rng(1000 + seed)

    def part(level: object, count: int) -> np.ndarray:
        if kind == "normal":
            mean, sd = level  # type: ignore[misc]
            return rng.normal(mean, sd, count)
        return (rng.random(count) < level).astype(float)  # type: ignore[operator]

    if back:
        return np.concatenate(
            [part(before, 2000), part(after, RETURN_AFTER), part(before, values)]
        ).tolist()
    return np.concatenate([part(before, 2000), part(after, values)]).tolist()


def events(values: list[float]) -> list[tuple[str, int]]:
    monitor = Monitor(build_config(ONE_FEATURE, environ={}).monitor_settings())
    monitor.begin()
    for index, value in enumerate(values):
        monitor.apply(
            Record(PREDICTION, None, None, "s", 0, index),
            Prediction("p", "m", 1, features={"x": value}),
        )
    return [
        (alert.event["type"], alert.event["data"]["observations"] - 1)
        for alert in monitor.end().alerts
    ]


def run(job: tuple[int, int, int, bool]) -> tuple[int, bool, list[tuple[str, int]]]:
    change, seed, values, back = job
    return change, back, events(stream(CHANGES[change], seed, values, back))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--values", type=int, default=200_000)
    parser.add_argument("--seeds", type=int, default=8)
    args = parser.parse_args()
    jobs = [
        (change, seed, args.values if not back else 20_000, back)
        for change in range(len(CHANGES))
        for seed in range(args.seeds)
        for back in (False, True)
    ]
    with Pool(2) as pool:
        results = pool.map(run, jobs, chunksize=1)
    print(
        f"{args.seeds} seeds. Lasting: {args.values:,} values after the change; back: the change "
        f"goes back after {RETURN_AFTER:,} values.\n"
    )
    print(
        "| change | false resolves per 1e6 values (lasting) | alerts (lasting) | resolve delay after the return: median (max) | returns resolved |"
    )
    print("|---|---:|---:|---:|---:|")
    for index, (name, *_) in enumerate(CHANGES):
        lasting = [found for change, back, found in results if change == index and not back]
        false = sum(kind == RESOLVED_TYPE for found in lasting for kind, _ in found)
        alerts = sum(kind != RESOLVED_TYPE for found in lasting for kind, _ in found)
        returns = [found for change, back, found in results if change == index and back]
        back_at = 2000 + RETURN_AFTER
        delays = [
            min(at - back_at for kind, at in found if kind == RESOLVED_TYPE and at >= back_at)
            for found in returns
            if any(kind == RESOLVED_TYPE and at >= back_at for kind, at in found)
        ]
        delay = f"{statistics.median(delays):,.0f} ({max(delays):,})" if delays else "–"
        print(
            f"| {name} | {false * 1e6 / (len(lasting) * args.values):.2f} | {alerts} "
            f"| {delay} | {len(delays)}/{len(returns)} |"
        )


if __name__ == "__main__":
    main()
