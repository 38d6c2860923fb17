"""Calibrated detection: the same false-alarm rate and shift sensitivity whatever a signal's units.

River's detectors work in the units of the value they see: Page-Hinkley's threshold is a sum of
deviations, ADWIN's bound assumes values of order 1. So each key×signal is first standardised,
z = (x - centre) / scale, with the centre and scale taken from its first `warmup` values (or from a
reference file), and the detector sees only z. Its parameters then follow from the false-alarm
budget alone, never from the data:

- Page-Hinkley is a two-sided CUSUM on z: delta = shift / 2 (the optimal reference value for a
  mean shift of `shift` standard deviations), alpha = 1 (no fading: river's fading factor made
  false alarms 5-100x more frequent in simulation), and the threshold h solved from Siegmund's
  approximation of the in-control run length, ARL(h) = (e^(2kb) - 2kb - 1) / (2k^2), b = h + 1.166.
- The budget is family-wise: `arl0` events between false alarms per key, shared by `family_size`
  series (Bonferroni), so each series must reach arl0 × family_size; each side of the two-sided
  test gets twice that; and a safety factor covers what Siegmund's formula ignores (the mean is
  estimated online by river's Page-Hinkley, the scale is estimated from a finite warm-up).
- ADWIN's delta is a per-check confidence bound; dividing it by `family_size` is the same
  Bonferroni split, and on z its absolute term is in the units it assumes.

docs/detection-quality.md has the assumptions and the simulation that verifies the figures.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from stream_monitor.errors import StateError

# Siegmund's formula assumes a known in-control mean; river's Page-Hinkley subtracts a running
# mean. Simulated on 1e6 N(0,1) values, the real run length was about half the formula's, and
# the scale estimated from 1,000 warm-up values costs a little more: 4 covers both.
SAFETY_FACTOR = 4.0
MIN_SCALE = 1e-9
# A binary signal (error, missing or positive rate) with no events in its warm-up still gets a
# scale: its rate is estimated as (events + 0.5) / (n + 1), never 0.
BINARY_PRIOR = 0.5
MIN_RATE = 1e-4  # the same floor for a binary reference rate
# Siegmund's correction for a Gaussian CUSUM overshooting its threshold (2 x 0.583).
GAUSSIAN_OVERSHOOT = 1.166


def run_length(threshold: float, exponent: float, drift: float, overshoot: float) -> float:
    """Siegmund's approximation of the mean run length of one side of a CUSUM to a false alarm.

    `drift` is the in-control mean decrement of each step (delta = shift/2 on standardised
    values) and `exponent` the root theta > 0 of E[exp(theta * step)] = 1 (Lundberg's exponent):
    2 * drift for Gaussian steps, smaller for the skewed steps of a rare binary event.
    """
    b = threshold + overshoot
    return (math.exp(exponent * b) - exponent * b - 1.0) / (exponent * drift)


def siegmund_arl(threshold: float, shift: float) -> float:
    """Mean run length to a false alarm of one side of a CUSUM on N(0,1), reference shift/2."""
    k = shift / 2.0
    return run_length(threshold, 2.0 * k, k, GAUSSIAN_OVERSHOOT)


def binary_exponent(rate: float, shift: float) -> float:
    """Lundberg's exponent of the steps z - shift/2 of a standardised Bernoulli(rate) series.

    Of the two sides, the one against the rarer outcome has the long jumps and the smaller
    exponent; by symmetry a rate above 0.5 is its complement seen from the other side.
    """
    rate = min(rate, 1.0 - rate)
    scale = math.sqrt(rate * (1.0 - rate))
    k = shift / 2.0
    up, down = (1.0 - rate) / scale - k, -rate / scale - k

    def excess(theta: float) -> float:
        return rate * math.exp(theta * up) + (1.0 - rate) * math.exp(theta * down) - 1.0

    low, high = 1e-9, 2.0 * k  # the Gaussian exponent bounds it: skew only lowers it
    while excess(high) < 0.0:
        high *= 2.0
    for _ in range(80):
        middle = (low + high) / 2.0
        if excess(middle) < 0.0:
            low = middle
        else:
            high = middle
    return high


def solve_threshold(target: float, exponent: float, drift: float, overshoot: float) -> float:
    low, high = 0.0, 1.0
    while run_length(high, exponent, drift, overshoot) < target:
        high *= 2.0
    for _ in range(60):
        middle = (low + high) / 2.0
        if run_length(middle, exponent, drift, overshoot) < target:
            low = middle
        else:
            high = middle
    return round(high, 6)


def page_hinkley_threshold(series_arl: float, shift: float) -> float:
    """The threshold whose two-sided, safety-adjusted run length reaches `series_arl`."""
    k = shift / 2.0
    return solve_threshold(2.0 * SAFETY_FACTOR * series_arl, 2.0 * k, k, GAUSSIAN_OVERSHOOT)


def binary_threshold(series_arl: float, shift: float, rate: float) -> float:
    """The same for a binary series: the rarer the event, the larger the jump of one event in
    standard deviations, so the higher the threshold. Its upper side is the skewed one and
    dominates; no overshoot credit is taken, as one event can jump far past the threshold."""
    exponent = binary_exponent(rate, shift)
    return solve_threshold(2.0 * SAFETY_FACTOR * series_arl, exponent, shift / 2.0, 0.0)


Reference = tuple[float, float, bool]  # (centre, scale, binary)


class Calibration:
    """One rule's calibration settings, and the detector parameters they imply."""

    __slots__ = ("arl0", "family_size", "reference", "shift", "warmup")

    def __init__(
        self,
        *,
        warmup: int = 1000,
        arl0: float = 100_000.0,
        family_size: int = 10,
        shift: float = 1.0,
        reference: Mapping[str, Reference] | None = None,
    ) -> None:
        if warmup < 2:
            raise ValueError("warmup must be at least 2 observations")
        if arl0 < 1 or family_size < 1 or shift <= 0:
            raise ValueError("arl0 and family_size must be at least 1, shift positive")
        self.warmup = warmup
        self.arl0 = arl0
        self.family_size = family_size
        self.shift = shift
        self.reference = dict(reference or {})

    @property
    def series_arl(self) -> float:
        return self.arl0 * self.family_size

    def detector_params(self, type_name: str, params: dict[str, Any]) -> dict[str, Any]:
        """Parameters for a detector that sees standardised values (Gaussian case)."""
        if type_name == "page_hinkley":
            return {
                **params,
                "delta": self.shift / 2.0,
                "alpha": 1.0,
                "threshold": page_hinkley_threshold(self.series_arl, self.shift),
            }
        if type_name == "adwin":
            return {**params, "delta": params["delta"] / self.family_size}
        raise ValueError(f"no calibration for detector type {type_name!r}")

    def binary_threshold(self, rate: float) -> float:
        return binary_threshold(self.series_arl, self.shift, rate)

    def reference_for(self, key_id: str, signal: str) -> Reference | None:
        """The reference for this key's signal, else for the signal on every key, else None."""
        return self.reference.get(f"{key_id}/{signal}") or self.reference.get(signal)

    def scaler(
        self,
        detector: Any,
        prime: Callable[[Any, int], None],
        tune_threshold: bool,
        reference: Reference | None,
    ) -> Scaler:
        return Scaler(self, detector, prime, tune_threshold, reference)


class Scaler:
    """Standardises one series before its detector sees it; learns its scale during warm-up.

    Warm-up values only feed Welford's running mean and variance: the detector starts at the
    first value after the warm-up, so it never fires before the scale is known. It starts primed
    as if it had seen the standardised warm-up (mean 0, sd 1), so that a change right after the
    warm-up is still a change to it. A series whose warm-up was all 0/1 is binary: its scale is
    that of its (smoothed) rate, and Page-Hinkley's threshold is raised for the skew of its steps.
    After a detection the series warms up again: the new regime is the baseline from then on, so
    a lasting change (of variance, say) is reported once, and a return to normal is a new change.
    """

    __slots__ = (
        "binary",
        "calibration",
        "centre",
        "detector",
        "feed",
        "m2",
        "mean",
        "n",
        "prime",
        "scale",
        "tune_threshold",
    )

    def __init__(
        self,
        calibration: Calibration,
        detector: Any,
        prime: Callable[[Any, int], None],
        tune_threshold: bool,
        reference: Reference | None = None,
    ) -> None:
        self.calibration = calibration
        self.detector = detector
        self.feed = detector.update
        self.prime = prime
        self.tune_threshold = tune_threshold
        self.n = 0
        self.mean = 0.0
        self.m2 = 0.0
        self.binary = True
        self.centre: float | None = None
        self.scale = 1.0
        if reference is not None:
            centre, scale, self.binary = reference
            if self.binary:  # a rate of exactly 0 or 1 would make any other value infinitely far
                centre = min(max(centre, MIN_RATE), 1.0 - MIN_RATE)
                scale = math.sqrt(centre * (1.0 - centre))
            self.centre, self.scale = float(centre), max(float(scale), MIN_SCALE)
            self._tune()
            prime(detector, calibration.warmup)

    def update(self, x: float) -> None:
        centre = self.centre
        if centre is not None:
            if not self.detector._drift_detected:
                self.feed((x - centre) / self.scale)
                return
            self._restart()
        self.n += 1
        delta = x - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (x - self.mean)
        if x != 0.0 and x != 1.0:
            self.binary = False
        if self.n >= self.calibration.warmup:
            self._freeze()
            self._tune()
            self.prime(self.detector, self.n)

    def _restart(self) -> None:
        """After a detection, learn the new regime's scale: it is the baseline from now on."""
        self.detector._reset()
        self.n = 0
        self.mean = self.m2 = 0.0
        self.binary = True
        self.centre = None
        self.scale = 1.0

    def _freeze(self) -> None:
        if self.binary:
            rate = (self.mean * self.n + BINARY_PRIOR) / (self.n + 1.0)
            self.centre, self.scale = rate, math.sqrt(rate * (1.0 - rate))
            return
        sd = math.sqrt(self.m2 / (self.n - 1)) if self.n > 1 else 0.0
        self.centre, self.scale = self.mean, max(sd, MIN_SCALE * max(1.0, abs(self.mean)))

    def _tune(self) -> None:
        if self.binary and self.tune_threshold and self.centre is not None:
            self.detector.threshold = self.calibration.binary_threshold(self.centre)

    def to_raw(self, total: float, count: int) -> float:
        """A sum of `count` standardised values back in the signal's units."""
        return total * self.scale + count * (self.centre or 0.0)

    def dump(self) -> list[Any]:
        return [self.n, self.mean, self.m2, self.binary, self.centre, self.scale]

    def load(self, data: list[Any]) -> None:
        try:
            n, mean, m2, binary, centre, scale = data
            self.n, self.mean, self.m2 = int(n), float(mean), float(m2)
            self.binary = bool(binary)
            self.centre = None if centre is None else float(centre)
            self.scale = float(scale)
        except (TypeError, ValueError) as exc:
            raise StateError(f"calibration state is not understood: {exc}") from exc
        self._tune()  # the threshold is a constructor parameter: not in the detector's state
