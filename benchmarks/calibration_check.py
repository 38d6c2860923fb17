"""False alarms per 1e6 stationary events per monitor key, at every scale from sd 1e-3 to 1e6.

One key with what a real one has: a numeric prediction N(1000·sd, sd²), three features in the
same units (normal N(-5·sd, sd²), lognormal sd·LN(0, 1), counts sd·Poisson(3)), a 0/1 flag at
rate 0.2, and their missing rates and the invalid rate (always 0): 13 watched series with the
default rules. Every event is stationary, so every alert is a false alarm. Through the real
`Monitor`, for the new defaults (configs/example.yaml), river's raw ADWIN on every signal
(configs/river.yaml with min_effect 0: 0.2's example config) and Page-Hinkley calibrated as
0.2's configs/calibrated.yaml (warm-up 1000, no clipping). The defaults' budget is arl0 = 1e5
events per key: at most 10 false alarms per 1e6.

Also: 25 seeded runs of a 1 sd mean shift of the normal feature after 3,000 events, the median
delay of its first alert.

    python benchmarks/calibration_check.py [--events 1000000] [--scales 1e-3,...,1e6]
"""

from __future__ import annotations

import argparse
import statistics
from multiprocessing import Pool
from typing import Any

import numpy as np

from stream_monitor.config import build_config
from stream_monitor.core.alerts import ALERT_TYPE
from stream_monitor.core.events import PREDICTION, Prediction, Record
from stream_monitor.core.monitor import Monitor

SCALES = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 1e2, 1e3, 1e4, 1e5, 1e6)
KINDS = ("performance", "prediction", "feature", "data_quality")
CONFIGS: dict[str, dict[str, Any]] = {
    "default": {},
    "river-adwin": {
        "signals": {key: ["adwin"] for key in KINDS},
        "alerts": {"min_effect": 0, "resolve": {"enabled": False}},
    },
    "calibrated-0.2": {
        "detectors": {
            "calibrated_ph": {
                "type": "page_hinkley",
                "calibrate": {"warmup": 1000, "shift": 1.0, "clip": None},
            }
        },
        "signals": {key: ["calibrated_ph"] for key in KINDS},
        "alerts": {"min_effect": 0, "resolve": {"enabled": False}},
    },
}
CHUNK = 50_000


def chunks(scale: float, events: int, seed: int, shift_at: int | None = None) -> Any:
    rng = np.random.default_rng(seed)
    for start in range(0, events, CHUNK):
        size = min(CHUNK, events - start)
        normal = rng.normal(-5.0 * scale, scale, size)
        if shift_at is not None:
            normal[max(shift_at - start, 0) :] += scale
        yield (
            start,
            rng.normal(1000.0 * scale, scale, size).tolist(),
            normal.tolist(),
            (scale * rng.lognormal(0.0, 1.0, size)).tolist(),
            (scale * rng.poisson(3.0, size)).tolist(),
            (rng.random(size) < 0.2).astype(float).tolist(),
        )


def alerts(config: str, scale: float, events: int, seed: int, shift_at: int | None) -> list[Any]:
    monitor = Monitor(build_config(CONFIGS[config], environ={}).monitor_settings())
    found = []
    for start, predictions, normal, lognormal, counts, flags in chunks(
        scale, events, seed, shift_at
    ):
        monitor.begin()
        for offset, prediction in enumerate(predictions):
            index = start + offset
            monitor.apply(
                Record(PREDICTION, None, None, "p", 0, index),
                Prediction(
                    "p",
                    "m",
                    prediction,
                    features={
                        "normal": normal[offset],
                        "lognormal": lognormal[offset],
                        "counts": counts[offset],
                        "flag": flags[offset],
                    },
                ),
            )
        found += [a.event for a in monitor.end().alerts if a.event["type"] == ALERT_TYPE]
    return found


def false_alarms(job: tuple[str, float, int]) -> tuple[str, float, int, list[str]]:
    config, scale, events = job
    found = alerts(config, scale, events, seed=1, shift_at=None)
    return config, scale, len(found), [e["data"]["signal"] for e in found]


def delay(job: tuple[str, float, int]) -> tuple[str, float, float]:
    config, scale, runs = job
    delays = []
    for seed in range(runs):
        found = [
            e["data"]["observations"] - 1 - 3000
            for e in alerts(config, scale, 8000, seed=100 + seed, shift_at=3000)
            if e["data"]["signal"] == "normal"
        ]
        after = [d for d in found if d >= 0]
        delays.append(after[0] if after else 5000)
    return config, scale, statistics.median(delays)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--scales", default=",".join(f"{s:g}" for s in SCALES))
    parser.add_argument("--shift-runs", type=int, default=25)
    args = parser.parse_args()
    scales = [float(s) for s in args.scales.split(",")]
    with Pool(2) as pool:
        counts = pool.map(
            false_alarms, [(c, s, args.events) for c in CONFIGS for s in scales], chunksize=1
        )
        delays = pool.map(
            delay, [(c, s, args.shift_runs) for c in CONFIGS for s in scales], chunksize=1
        )
    found = {(config, scale): (count, signals) for config, scale, count, signals in counts}
    median = {(config, scale): value for config, scale, value in delays}
    per = 1e6 / args.events
    print(
        f"False alarms per 1e6 stationary events of one key (13 series), {args.events:,} events "
        f"per scale; median delay of a 1 sd shift of one feature ({args.shift_runs} runs).\n"
    )
    print(
        "| sd | "
        + " | ".join(f"{c}: false alarms / 1e6" for c in CONFIGS)
        + " | "
        + " | ".join(f"{c}: median delay" for c in CONFIGS)
        + " |"
    )
    print("|---:|" + "---:|" * (2 * len(CONFIGS)))
    for scale in scales:
        cells = [f"{found[(c, scale)][0] * per:g}" for c in CONFIGS]
        cells += [f"{median[(c, scale)]:g}" for c in CONFIGS]
        print(f"| {scale:g} | " + " | ".join(cells) + " |")
    print()
    for config in CONFIGS:
        signals: dict[str, int] = {}
        for scale in scales:
            for signal in found[(config, scale)][1]:
                signals[signal] = signals.get(signal, 0) + 1
        print(f"{config}: false alarms by signal, all scales: {signals or 'none'}")


if __name__ == "__main__":
    main()
