"""Verify the calibration by seeded simulation: false alarms per 1e6 stationary values of one
series, and the delay to a 1 sd mean shift, for Gaussian series at several scales and binary series
at several rates. The per-series budget with the defaults (arl0 1e5, family_size 10) is 1 per 1e6.

    python benchmarks/calibration_check.py [--values 1000000] [--shift-runs 25]
"""

from __future__ import annotations

import argparse
import random
import statistics
from collections.abc import Callable
from multiprocessing import Pool

from river.drift import PageHinkley

from stream_monitor.core.calibration import Calibration
from stream_monitor.core.detectors import DETECTOR_TYPES

CASES = [
    ("gauss", 0.0, 1.0),
    ("gauss", 1000.0, 0.001),
    ("gauss", -5.0, 1000.0),
    ("binary", 0.5, 0.0),
    ("binary", 0.1, 0.0),
    ("binary", 0.03, 0.0),
    ("binary", 0.01, 0.0),
]


def calibrated() -> tuple[PageHinkley, Callable[[float], None]]:
    calibration = Calibration()
    kind = DETECTOR_TYPES["page_hinkley"]
    detector = PageHinkley(**calibration.detector_params("page_hinkley", kind.defaults()))
    return detector, calibration.scaler(detector, kind.prime, True, None).update


def draw(case: tuple[str, float, float], rng: random.Random, shifted: bool) -> float:
    kind, a, b = case
    if kind == "gauss":
        return rng.gauss(a + (b if shifted else 0.0), b)
    rate = a + ((a * (1 - a)) ** 0.5 if shifted else 0.0)
    return 1.0 if rng.random() < rate else 0.0


def check(job: tuple[tuple[str, float, float], int, int]) -> str:
    case, values, runs = job
    rng = random.Random(1)
    detector, update = calibrated()
    alarms = 0
    for _ in range(values):
        update(draw(case, rng, False))
        alarms += detector.drift_detected
    delays = []
    for seed in range(runs):
        rng = random.Random(100 + seed)
        detector, update = calibrated()
        delay = None
        for i in range(12_000):
            update(draw(case, rng, i >= 2000))
            if detector.drift_detected and i >= 2000:
                delay = i - 2000
                break
        delays.append(delay if delay is not None else 10_000)
    label = f"N({case[1]:g}, {case[2]:g}²)" if case[0] == "gauss" else f"Bernoulli({case[1]:g})"
    return (
        f"| {label} | {alarms * 1e6 / values:.1f} | {statistics.median(delays):.0f} "
        f"| {max(delays)} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--values", type=int, default=1_000_000)
    parser.add_argument("--shift-runs", type=int, default=25)
    args = parser.parse_args()
    with Pool(2) as pool:
        rows = pool.map(check, [(case, args.values, args.shift_runs) for case in CASES])
    print("| series | false alarms / 1e6 | median delay, 1 sd shift | max delay |")
    print("|---|---:|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
