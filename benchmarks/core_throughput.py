"""Monitor events/s on pre-decoded prediction events, against baselines measured in the same run.

Baselines: orjson.loads of the same events (decoding only), and bare river ADWIN updates (the
detector work alone, per event: one update per signal). Ratios matter, absolute figures do not:
these machines are shared and noisy.

    python benchmarks/core_throughput.py [--events 200000] [--keys 10]
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable

import orjson
from river.drift import ADWIN

from stream_monitor.config import build_config
from stream_monitor.core.events import Record
from stream_monitor.core.monitor import Monitor

FEATURES = ("f0", "f1", "f2", "f3")
BASELINE = "4 bare ADWIN updates/event"


def make_events(
    count: int, keys: int, seed: int = 1, categorical: bool = False
) -> list[dict[str, object]]:
    """Events with four numeric features; `categorical`: and two categorical ones (4 and 5
    categories), which versions before 0.3 only counted as present."""
    rng = random.Random(seed)
    events: list[dict[str, object]] = []
    for i in range(count):
        features: dict[str, object] = {name: rng.gauss(0.0, 1.0) for name in FEATURES}
        if categorical:
            features["country"] = rng.choices(("fr", "de", "es", "it"), (2, 3, 2.5, 2.5))[0]
            features["device"] = rng.choices(
                ("ios", "android", "web", "tv", "car"), (4, 4, 2, 1, 1)
            )[0]
        events.append(
            {
                "prediction_id": f"p{i}",
                "model": f"model-{i % keys}",
                "prediction": 1,
                "timestamp": 1_767_225_600_000 + i,
                "features": features,
            }
        )
    return events


def best_of(runs: int, work: Callable[[], int]) -> float:
    """Best events/s of `runs` runs: the least disturbed by the other tenants of the machine."""
    rates = []
    for _ in range(runs):
        start = time.perf_counter()
        done = work()
        rates.append(done / (time.perf_counter() - start))
    return max(rates)


def measure(count: int = 200_000, keys: int = 10, runs: int = 3) -> dict[str, float]:
    """Best-of-`runs` events/s of each path, on the same pre-built events."""
    events = make_events(count, keys)
    encoded = [orjson.dumps(event) for event in events]
    records: list[Record] = [
        Record("prediction", event, None, "predictions", 0, i) for i, event in enumerate(events)
    ]
    with_categories: list[Record] = [
        Record("prediction", event, None, "predictions", 0, i)
        for i, event in enumerate(make_events(count, keys, categorical=True))
    ]
    raw_records: list[Record] = [
        Record("prediction", raw, None, "predictions", 0, i) for i, raw in enumerate(encoded)
    ]

    def decode() -> int:
        for raw in encoded:
            orjson.loads(raw)
        return len(encoded)

    def adwin_only() -> int:
        detectors = [ADWIN() for _ in FEATURES]
        updates = [d.update for d in detectors]
        for event in events:
            features = event["features"]
            for name, update in zip(FEATURES, updates, strict=True):
                update(features[name])  # type: ignore[index]
        return len(events)

    four_signals = build_config(
        {
            "signals": {
                "feature": ["adwin"],
                "prediction": [],
                "performance": [],
                "data_quality": [],
            }
        },
        environ={},
    )
    defaults = build_config({}, environ={})
    # What the 0/1 data-quality rates (invalid_rate, missing_rate per feature) cost on top.
    no_data_quality = build_config({"signals": {"data_quality": []}}, environ={})

    def monitor(config: object, batch: list[Record]) -> Callable[[], int]:
        def work() -> int:
            m = Monitor(config.monitor_settings())  # type: ignore[arg-type]
            for start in range(0, len(batch), 5000):
                m.process(batch[start : start + 5000])
            return len(batch)

        return work

    return {
        "orjson.loads only": best_of(runs, decode),
        BASELINE: best_of(runs, adwin_only),
        "Monitor, 4 feature signals, pre-decoded": best_of(runs, monitor(four_signals, records)),
        "Monitor, 4 feature signals, from bytes": best_of(runs, monitor(four_signals, raw_records)),
        "Monitor, default config (10 detectors/event), pre-decoded": best_of(
            runs, monitor(defaults, records)
        ),
        "Monitor, default config without data-quality rates, pre-decoded": best_of(
            runs, monitor(no_data_quality, records)
        ),
        "Monitor, default config, + 2 categorical features, pre-decoded": best_of(
            runs, monitor(defaults, with_categories)
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--keys", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    results = measure(args.events, args.keys, args.runs)
    baseline = results[BASELINE]
    print(f"{args.events} events, {args.keys} monitor keys, best of {args.runs} runs")
    print(f"{'path':64} {'events/s':>12} {'vs bare ADWIN':>14}")
    for name, rate in results.items():
        print(f"{name:64} {rate:12,.0f} {rate / baseline:14.2f}")


if __name__ == "__main__":
    main()
