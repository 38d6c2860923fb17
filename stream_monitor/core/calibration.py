"""Calibrated detection: the same false-alarm rate and shift sensitivity whatever a signal's units.

River's detectors work in the units of the value they see: Page-Hinkley's threshold is a sum of
deviations, ADWIN's bound assumes values of order 1. So each key×signal is standardised first,
z = (x - centre) / scale, and the detector sees z (clipped to ±`clip` for continuous series, so
that one wild value of a heavy-tailed feature cannot make a change on its own). Its parameters then
follow from the false-alarm budget alone, never from the data:

- Page-Hinkley is a two-sided CUSUM on z: delta = shift / 2 (the optimal reference value for a
  mean shift of `shift` standard deviations), alpha = 1 (no fading: river's fading factor made
  false alarms 5-100x more frequent in simulation), and the threshold h solved from Siegmund's
  approximation of the in-control run length, ARL(h) = (e^(2kb) - 2kb - 1) / (2k^2), b = h + 1.166.
  On a 0/1 series the shift can be given as a relative change of its rarer outcome
  (`rate_change`), and the threshold comes from the exact (skewed) steps of a Bernoulli series.
- The budget is family-wise: `arl0` events between false alarms per key, shared by `family_size`
  series (Bonferroni), so each series must reach arl0 × family_size; each side of the two-sided
  test gets twice that; and a safety factor covers what Siegmund's formula ignores (the mean is
  estimated online by river's Page-Hinkley, the scale is estimated from a finite warm-up).
- ADWIN's delta is a per-check confidence bound; dividing it by `family_size` is the same
  Bonferroni split. ADWIN's test adapts to the variance of its window, so it needs values of order
  one, not an exact scale: it is fed from the `PROVISIONAL`-th value on, through the fixed affine
  map of the first values' mean and sd (fixed, so that its window stays consistent), while the
  warm-up goes on estimating the reference that effects are measured against.
- `statistic: spread` (ADWIN) watches |x[2i+1] - x[2i]| / scale instead of x: the spread of the
  series whatever its level (a mean shift moves both values of a pair), on independent pairs.

The warm-up (`warmup` values per key×signal, longer for a 0/1 series until it has seen
`BINARY_MIN_EVENTS` of its rarer outcome) sets the reference; no alert fires before it ends, and a
detection during it restarts it (the warm-up was not stationary). After a detection the series
warms up again on its new regime.

docs/detection-quality.md has the assumptions and the simulations that verify the figures.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Final

from stream_monitor.core.categories import BLOCK as CATEGORY_BLOCK
from stream_monitor.core.reference import Reference
from stream_monitor.errors import StateError

# Siegmund's formula assumes a known in-control mean; river's Page-Hinkley subtracts a running
# mean. Simulated on 1e6 N(0,1) values, the real run length was about half the formula's, and
# the scale estimated from a finite warm-up costs a little more: 4 covers both.
SAFETY_FACTOR: Final = 4.0
MIN_SCALE: Final = 1e-9
# A binary signal (error, missing or positive rate) with no events in its warm-up still gets a
# scale: its rate is estimated as (events + 0.5) / (n + 1), never 0.
BINARY_PRIOR: Final = 0.5
MIN_RATE: Final = 1e-4  # the same floor for a binary reference rate
# Siegmund's correction for a Gaussian CUSUM overshooting its threshold (2 x 0.583).
GAUSSIAN_OVERSHOOT: Final = 1.166
# ADWIN is fed from this many values on, through the affine map of their mean and sd.
PROVISIONAL: Final = 30
# A 0/1 series warms up until it has seen this many of each outcome, or BINARY_WARMUP_FACTOR ×
# warmup values (a rate that stays 0, such as an invalid rate, still gets monitored).
BINARY_MIN_EVENTS: Final = 10
BINARY_WARMUP_FACTOR: Final = 10
DEFAULT_WARMUP: Final = 200
DEFAULT_CLIP: Final = 4.0

# `categorical`: a categorical feature's distance from its reference, one value per block
# (`core.categories`); only rules of this series watch categorical features.
SERIES: Final = ("any", "continuous", "binary", "categorical")
STATISTICS: Final = ("mean", "spread")

# Scaler phases.
LEARNING: Final = 0  # warm-up; the detector sees nothing yet
FEEDING: Final = 1  # warm-up goes on, ADWIN already sees values through the provisional map
READY: Final = 2  # reference known: detections alert
DORMANT: Final = (
    3  # this rule does not watch this kind of series (e.g. a mean rule on a 0/1 series)
)


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


def step_exponent(steps: Sequence[tuple[float, float]], bound: float) -> float:
    """Lundberg's exponent of a CUSUM whose steps take values `(probability, step)`: the root
    theta > 0 of E[exp(theta * step)] = 1, for steps of negative mean. `bound` is a theta known
    to be at least the root (the Gaussian exponent bounds it: skew only lowers it)."""

    def excess(theta: float) -> float:
        try:
            return sum(p * math.exp(theta * step) for p, step in steps) - 1.0
        except OverflowError:
            return math.inf

    low, high = 1e-9, max(bound, 1e-6)
    while excess(high) < 0.0 and high < 1e9:  # some step is positive: excess grows without end
        high *= 2.0
    for _ in range(80):
        middle = (low + high) / 2.0
        if excess(middle) < 0.0:
            low = middle
        else:
            high = middle
    return high


def binary_exponent(rate: float, shift: float) -> float:
    """Lundberg's exponent of the steps z - shift/2 of a standardised Bernoulli(rate) series.

    Of the two sides, the one against the rarer outcome has the long jumps and the smaller
    exponent; by symmetry a rate above 0.5 is its complement seen from the other side.
    """
    rate = min(rate, 1.0 - rate)
    scale = math.sqrt(rate * (1.0 - rate))
    k = shift / 2.0
    up, down = (1.0 - rate) / scale - k, -rate / scale - k
    return step_exponent(((rate, up), (1.0 - rate, down)), 2.0 * k)


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


def clamp_rate(rate: float) -> float:
    return min(max(rate, MIN_RATE), 1.0 - MIN_RATE)


class Calibration:
    """One rule's calibration settings, and the detector parameters they imply."""

    __slots__ = (
        "arl0",
        "clip",
        "family_size",
        "rate_change",
        "series",
        "shift",
        "statistic",
        "warmup",
    )

    def __init__(
        self,
        *,
        warmup: int = DEFAULT_WARMUP,
        arl0: float = 100_000.0,
        family_size: int = 10,
        shift: float = 1.0,
        rate_change: float | None = None,
        series: str = "any",
        statistic: str = "mean",
        clip: float | None = DEFAULT_CLIP,
    ) -> None:
        if warmup < 2:
            raise ValueError("warmup must be at least 2 observations")
        if arl0 < 1 or family_size < 1 or shift <= 0:
            raise ValueError("arl0 and family_size must be at least 1, shift positive")
        if rate_change is not None and rate_change <= 0:
            raise ValueError("rate_change must be positive")
        if clip is not None and clip <= 0:
            raise ValueError("clip must be positive (or null: no clipping)")
        if series not in SERIES:
            raise ValueError(f"series must be one of {', '.join(SERIES)}")
        if statistic not in STATISTICS:
            raise ValueError(f"statistic must be one of {', '.join(STATISTICS)}")
        self.warmup = warmup
        self.arl0 = arl0
        self.family_size = family_size
        self.shift = shift
        self.rate_change = rate_change
        self.series = series
        self.statistic = statistic
        self.clip = clip

    @property
    def series_arl(self) -> float:
        """Values between false alarms, per series: a categorical feature's distance is one
        value per block of values, so its budget in values is a block's share of it."""
        per_series = self.arl0 * self.family_size
        return per_series / CATEGORY_BLOCK if self.series == "categorical" else per_series

    def detector_params(self, type_name: str, params: dict[str, Any]) -> dict[str, Any]:
        """Parameters for a detector that sees standardised values (Gaussian case)."""
        if type_name == "page_hinkley":
            if self.statistic != "mean":
                raise ValueError("statistic 'spread' needs an adwin detector")
            return {
                **params,
                "delta": self.shift / 2.0,
                "alpha": 1.0,
                "threshold": page_hinkley_threshold(self.series_arl, self.shift),
            }
        if type_name == "adwin":
            return {**params, "delta": params["delta"] / self.family_size}
        raise ValueError(f"no calibration for detector type {type_name!r}")

    def binary_shift(self, rate: float) -> float:
        """The shift, in standard deviations of a 0/1 series at `rate`, to detect fastest:
        `rate_change` of its rarer outcome's rate when set (0.4: that rate × 1.4 or × 0.6),
        else `shift` as for any series."""
        if self.rate_change is None:
            return self.shift
        rarer = min(rate, 1.0 - rate)
        return self.rate_change * rarer / math.sqrt(rate * (1.0 - rate))

    def binary_params(self, rate: float) -> tuple[float, float]:
        """Page-Hinkley's (delta, threshold) for a 0/1 series at `rate`."""
        shift = self.binary_shift(rate)
        return shift / 2.0, binary_threshold(self.series_arl, shift, rate)


class Scaler:
    """What one calibrated track knows about its series: the warm-up statistics, the reference
    they set (centre and scale; for `spread`, the mean and sd of the pair statistic), and the
    affine map (`offset`, `unit`) its detector is fed through. Plain data: `dump` / `load`.

    The per-value work (standardising, feeding the detector) is the track's (`core.signals`);
    this class holds the state and decides the phase changes of the warm-up.
    """

    __slots__ = (
        "adwin",
        "binary",
        "calibration",
        "centre",
        "delta",
        "fixed",
        "m2",
        "mean",
        "n",
        "offset",
        "pair_m2",
        "pair_mean",
        "pairs",
        "phase",
        "raw_map",
        "scale",
        "threshold",
        "unit",
    )

    def __init__(
        self, calibration: Calibration, adwin: bool, reference: Reference | None = None
    ) -> None:
        self.calibration = calibration
        self.adwin = adwin  # ADWIN is fed during the warm-up; Page-Hinkley after it
        self.centre: float | None = None
        self.delta: float | None = None
        self.threshold: float | None = None
        self.restart()
        if reference is not None:
            centre, scale, binary, n, pairs = reference
            if binary:  # a rate of exactly 0 or 1 would make any other value infinitely far
                centre = clamp_rate(centre)
                scale = math.sqrt(centre * (1.0 - centre))
            self.binary = bool(binary)
            self.centre = float(centre)
            self.scale = max(float(scale), MIN_SCALE * max(1.0, abs(centre)))
            self.fixed = True
            self._set_map(self.binary)
            if calibration.statistic == "spread" and not self.binary and pairs is None:
                self.phase = FEEDING  # the pair statistic's reference is learnt on the warm-up
                return
            self.n = n  # what the reference was measured on: Page-Hinkley is primed with it
            if pairs is not None:
                self.pairs = max(n // 2, 2)
                self.pair_mean = pairs[0]
                self.pair_m2 = pairs[1] * pairs[1] * (self.pairs - 1)
            self._ready()

    def restart(self) -> None:
        """Forget the reference: warm up again (on the series' new regime after a detection)."""
        self.n = 0
        self.mean = self.m2 = 0.0
        self.binary = True
        self.centre = None
        self.scale = 1.0
        self.offset = 0.0
        self.unit = 1.0
        self.raw_map = True
        self.pairs = 0
        self.pair_mean = self.pair_m2 = 0.0
        self.phase = LEARNING
        self.fixed = False
        self.delta = None
        self.threshold = None

    # --- warm-up -----------------------------------------------------------------------------
    def learn(self, x: float) -> bool:
        """One warm-up value; True when the phase changed (the track reconfigures itself)."""
        n = self.n = self.n + 1
        delta = x - self.mean
        self.mean += delta / n
        self.m2 += delta * (x - self.mean)
        if x != 0.0 and x != 1.0:
            self.binary = False
        if self.phase == LEARNING and self.adwin and n >= min(PROVISIONAL, self.calibration.warmup):
            self._set_map(self.binary, provisional=True)
            self.phase = FEEDING
            if n < self.calibration.warmup:
                return True
        if n >= self.calibration.warmup and self._warm():
            self._finish()
            return True
        return False

    def learn_pair(self, value: float) -> None:
        """One value of the spread statistic during the warm-up (its reference mean and sd)."""
        pairs = self.pairs = self.pairs + 1
        delta = value - self.pair_mean
        self.pair_mean += delta / pairs
        self.pair_m2 += delta * (value - self.pair_mean)

    def _warm(self) -> bool:
        if self.fixed or not self.binary:
            return True
        events = round(self.mean * self.n)
        return (
            min(events, self.n - events) >= BINARY_MIN_EVENTS
            or self.n >= BINARY_WARMUP_FACTOR * self.calibration.warmup
        )

    def _finish(self) -> None:
        if not self.fixed:
            if self.binary:
                rate = (self.mean * self.n + BINARY_PRIOR) / (self.n + 1.0)
                self.centre, self.scale = rate, math.sqrt(rate * (1.0 - rate))
            else:
                sd = math.sqrt(self.m2 / (self.n - 1)) if self.n > 1 else 0.0
                self.centre = self.mean
                self.scale = max(sd, MIN_SCALE * max(1.0, abs(self.mean)))
        if not self.adwin or self.phase == LEARNING or self.raw_map != self.binary:
            # ADWIN keeps the provisional map its window was fed through, unless it was chosen
            # for a 0/1 series that turned out not to be one (or the reverse): the track resets
            # the detector when the map changes.
            self._set_map(self.binary)
        self._ready()

    def _ready(self) -> None:
        calibration = self.calibration
        if (
            (self.binary and calibration.series in ("continuous", "categorical"))
            or (not self.binary and calibration.series == "binary")
            or (self.binary and calibration.statistic == "spread")
        ):
            self.phase = DORMANT
            return
        self.phase = READY
        if not self.adwin and self.binary and self.centre is not None:
            self.delta, self.threshold = calibration.binary_params(self.centre)

    def _set_map(self, binary: bool, provisional: bool = False) -> None:
        """The affine map the detector sees values through: for ADWIN a 0/1 series as it is
        (order one already; standardised, one rare event would be a jump of many units), any
        other standardised by the warm-up's mean and sd."""
        self.raw_map = binary and self.adwin
        if self.raw_map:
            self.offset, self.unit = 0.0, 1.0
        elif provisional:
            sd = math.sqrt(self.m2 / (self.n - 1)) if self.n > 1 else 0.0
            self.offset, self.unit = self.mean, max(sd, MIN_SCALE * max(1.0, abs(self.mean)))
        else:
            assert self.centre is not None
            self.offset, self.unit = self.centre, self.scale

    @property
    def clip(self) -> float:
        clip = self.calibration.clip
        return math.inf if clip is None or self.binary else clip

    def pair_reference(self) -> tuple[float, float]:
        """Mean and sd of the spread statistic in the warm-up (a Gaussian series' when it had
        too few pairs to tell)."""
        if self.pairs < 2:
            return 2.0 / math.sqrt(math.pi), math.sqrt(2.0 - 4.0 / math.pi)
        return self.pair_mean, max(math.sqrt(self.pair_m2 / (self.pairs - 1)), MIN_SCALE)

    # --- state -------------------------------------------------------------------------------
    def dump(self) -> list[Any]:
        return [
            self.phase,
            self.n,
            self.mean,
            self.m2,
            self.binary,
            self.centre,
            self.scale,
            self.offset,
            self.unit,
            self.raw_map,
            self.pairs,
            self.pair_mean,
            self.pair_m2,
            self.fixed,
            self.delta,
            self.threshold,
        ]

    def load(self, data: list[Any]) -> None:
        try:
            (
                phase,
                n,
                mean,
                m2,
                binary,
                centre,
                scale,
                offset,
                unit,
                raw_map,
                pairs,
                pair_mean,
                pair_m2,
                fixed,
                delta,
                threshold,
            ) = data
            self.phase = int(phase)
            self.n, self.mean, self.m2 = int(n), float(mean), float(m2)
            self.binary = bool(binary)
            self.centre = None if centre is None else float(centre)
            self.scale, self.offset, self.unit = float(scale), float(offset), float(unit)
            self.raw_map = bool(raw_map)
            self.pairs, self.pair_mean, self.pair_m2 = int(pairs), float(pair_mean), float(pair_m2)
            self.fixed = bool(fixed)
            self.delta = None if delta is None else float(delta)
            self.threshold = None if threshold is None else float(threshold)
        except (TypeError, ValueError) as exc:
            raise StateError(f"calibration state is not understood: {exc}") from exc
        if self.phase not in (LEARNING, FEEDING, READY, DORMANT):
            raise StateError(f"calibration state has an unknown phase {phase!r}")
