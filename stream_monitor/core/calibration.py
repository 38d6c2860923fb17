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


def siegmund_arl(threshold: float, shift: float) -> float:
    """Mean run length to a false alarm of one side of a CUSUM on N(0,1), reference shift/2."""
    k = shift / 2.0
    b = threshold + 1.166
    return (math.exp(2.0 * k * b) - 2.0 * k * b - 1.0) / (2.0 * k * k)


def page_hinkley_threshold(series_arl: float, shift: float) -> float:
    """The threshold whose two-sided, safety-adjusted run length reaches `series_arl`."""
    target = 2.0 * SAFETY_FACTOR * series_arl
    low, high = 0.0, 1.0
    while siegmund_arl(high, shift) < target:
        high *= 2.0
    for _ in range(60):
        middle = (low + high) / 2.0
        if siegmund_arl(middle, shift) < target:
            low = middle
        else:
            high = middle
    return round(high, 6)


Reference = tuple[float, float]  # (centre, scale)


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
        """Parameters for a detector that sees standardised values."""
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

    def reference_for(self, key_id: str, signal: str) -> Reference | None:
        """The reference for this key's signal, else for the signal on every key, else None."""
        return self.reference.get(f"{key_id}/{signal}") or self.reference.get(signal)

    def scaler(
        self, detector: Any, prime: Callable[[Any, int], None], reference: Reference | None
    ) -> Scaler:
        return Scaler(detector, prime, self.warmup, reference)


class Scaler:
    """Standardises one series before its detector sees it; learns its scale during warm-up.

    Warm-up values only feed Welford's running mean and variance: the detector starts at the
    first value after the warm-up, so it never fires before the scale is known. It starts primed
    as if it had seen the standardised warm-up (mean 0, sd 1), so that a change right after the
    warm-up is still a change to it.
    """

    __slots__ = (
        "binary",
        "centre",
        "detector",
        "feed",
        "m2",
        "mean",
        "n",
        "prime",
        "scale",
        "warmup",
    )

    def __init__(
        self,
        detector: Any,
        prime: Callable[[Any, int], None],
        warmup: int,
        reference: Reference | None = None,
    ) -> None:
        self.detector = detector
        self.feed = detector.update
        self.prime = prime
        self.warmup = warmup
        self.n = 0
        self.mean = 0.0
        self.m2 = 0.0
        self.binary = True
        self.centre: float | None = None
        self.scale = 1.0
        if reference is not None:
            self.centre, self.scale = float(reference[0]), max(float(reference[1]), MIN_SCALE)
            prime(detector, warmup)

    def update(self, x: float) -> None:
        centre = self.centre
        if centre is not None:
            self.feed((x - centre) / self.scale)
            return
        self.n += 1
        delta = x - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (x - self.mean)
        if x != 0.0 and x != 1.0:
            self.binary = False
        if self.n >= self.warmup:
            self.scale = self._estimated_scale()
            self.centre = self.mean
            self.prime(self.detector, self.n)

    def _estimated_scale(self) -> float:
        if self.binary:
            rate = (self.mean * self.n + BINARY_PRIOR) / (self.n + 1.0)
            return math.sqrt(rate * (1.0 - rate))
        sd = math.sqrt(self.m2 / (self.n - 1)) if self.n > 1 else 0.0
        return max(sd, MIN_SCALE * max(1.0, abs(self.mean)))

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
