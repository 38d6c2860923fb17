"""Alert lifecycle: an alert stays open until its signal is back at its pre-change level.

When a track alerts, it opens an `Incident`: the pre-change level (`baseline`, with its standard
deviation) and the level the change reached, in those standard deviations (`level`). From then on
every value (for a spread, every pair's |x[2i+1] - x[2i]|) feeds a one-sided CUSUM that gathers
evidence of being back:

    v = sign · (x - baseline) / sd          (0 at the baseline, `level` at the alerted level)
    S = max(0, S + margin · level - v)      resolved when S > threshold

so values nearer the baseline than `margin` of the shift push it up, values beyond push it down.
That is the hysteresis: a signal that came only half-way back (with margin 0.25) never resolves.
"Back" is never narrower than `BASELINE_Z` standard errors of the baseline's own estimate.

The level and the spread the test works with are measured after the alert, not taken from it:
its first values (at least `SETTLE`, enough to know the level to 1/`SETTLE_PRECISION` of the
alert's estimate; for a 0/1 series enough to see `SETTLE_EVENTS` of its rarer outcome) only
measure them. The alert's own estimate is biased upwards (a detector fires on the most extreme
stretch: an error rate of 0.30 read as 0.58 on 26 values, and a test set for it resolved the
signal while still at 0.30), and a continuous signal's spread often changes with its level (a
score pushed towards 0.5 spreads out; steps of sd r need r² times the evidence). The threshold is
then set, from Siegmund's approximation (the exact two-point steps for a 0/1 series), so that a
signal still at the measured level less `LEVEL_Z` standard errors resolves falsely about once in
`RESOLVE_ARL` values. A signal already back, or not distinguishable from the baseline, when the
settling ends resolves then. The level is capped at `LEVEL_CAP` standard deviations and
continuous values are clipped, so that a huge shift does not resolve on one lucky value.

A detection while an incident is open is a return when its post-change level is within the
margin of the baseline, give or take one standard error (then it resolves instead of alerting);
part of the way back when it lies between that and the alerted level (no alert: the incident
aims at the new level); otherwise a further change, published as a new alert that the same
incident closes (every open alert gets its own `drift_resolved` event, `data.resolves` naming
it).
"""

from __future__ import annotations

import math
from typing import Any, Final

from stream_monitor.core.calibration import (
    GAUSSIAN_OVERSHOOT,
    MIN_SCALE,
    clamp_rate,
    solve_threshold,
    step_exponent,
)
from stream_monitor.errors import StateError

RESOLVE_ARL: Final = (
    1_000_000.0  # values between false resolves of a signal still at its alerted level
)
LEVEL_CAP: Final = 4.0  # standard deviations
CLIP: Final = 4.0  # continuous values beyond this many sd (past either end) count as this many
MAX_OPEN: Final = 16  # open alerts per incident; a 17th further change drops the oldest from it
MIN_DRIFT: Final = 1e-6
# Values after an alert (pairs for a spread) that measure the level and spread the signal is at;
# a 0/1 series', enough to see SETTLE_EVENTS of its rarer outcome at its alerted rate.
SETTLE: Final = 64
SETTLE_EVENTS: Final = 16
MAX_SETTLE: Final = 4096
SETTLE_PRECISION: Final = 8.0
LEVEL_Z: Final = 2.0  # standard errors below the settled level that the test is set for
BASELINE_Z: Final = 2.5  # standard errors of the baseline that "back" is at least wide


def resolve_threshold(
    level: float, reference: float, rate: float | None, sign: float, spread: float = 1.0
) -> float:
    """The CUSUM threshold for steps `reference - v` at a (capped) `level` in sd: Gaussian
    steps of sd `spread`, or for a 0/1 series at reference `rate` the two-point steps of its
    rate at that level."""
    drift = level - reference
    if drift <= MIN_DRIFT:  # the level is (nearly) within the band: nothing to tell apart
        return 0.0
    if rate is None:
        exponent = 2.0 * drift / (spread * spread)
        return solve_threshold(RESOLVE_ARL, exponent, drift, GAUSSIAN_OVERSHOOT * spread)
    sd = math.sqrt(rate * (1.0 - rate))
    alerted = min(max(rate + sign * level * sd, 1e-9), 1.0 - 1e-9)
    steps = (
        (alerted, reference - sign * (1.0 - rate) / sd),
        (1.0 - alerted, reference + sign * rate / sd),
    )
    mean = -sum(p * step for p, step in steps)
    if mean <= MIN_DRIFT:
        return 0.0
    exponent = step_exponent(steps, 2.0 * drift)
    return solve_threshold(RESOLVE_ARL, exponent, mean, 0.0)


class Incident:
    """The open alerts of one track, and the evidence that its signal is back."""

    __slots__ = (
        "alerts",
        "back",
        "band",
        "baseline",
        "cusum",
        "high",
        "inverse",
        "level",
        "low",
        "margin",
        "minimum",
        "rate",
        "reference",
        "report",
        "reported",
        "saved",
        "settle_for",
        "settled",
        "sign",
        "threshold",
    )

    def __init__(
        self,
        alert: tuple[str, int],
        baseline: float,
        sd: float,
        after: float,
        margin: float,
        rate: float | None,
        saved: list[Any] | None,
        report: float = 1.0,
        baseline_n: int = 0,
        settle: int = SETTLE,
    ) -> None:
        self.alerts = [alert]  # (id, observations) of each open alert, oldest first
        # values that settle the level at least (a categorical feature's distances stand for
        # blocks of values: fewer of them)
        self.minimum = settle
        self.baseline = baseline
        # "Back" is never narrower than the baseline's own uncertainty (in sd, from the
        # `baseline_n` values it was estimated on): a 0.5 sd shift's margin of a quarter is
        # 0.12 sd, and a 200-value warm-up's mean is off by 0.07 sd (1 sd of its error).
        self.band = BASELINE_Z / math.sqrt(max(baseline_n, 1))
        self.inverse = 1.0 / max(sd, MIN_SCALE)
        self.margin = margin
        # the reference rate of a 0/1 series (no clipping, exact steps)
        self.rate = None if rate is None else clamp_rate(rate)
        self.saved = saved  # the calibration to go back to once resolved (calibrated tracks)
        self.report = report  # what the watched levels are multiplied by in resolved events
        self.reported = after  # the level the (latest) alert reported, in the watched units
        self._aim((after - baseline) * self.inverse)

    def _aim(self, level: float) -> None:
        """Aim at `level` (sd from the baseline, signed) and settle: the first values after it
        measure the level and spread the signal really has there (`_settle`)."""
        self.sign = 1.0 if level >= 0.0 else -1.0
        self.level = abs(level)
        self._limits()
        self.cusum = 0.0
        self.back = [0.0, 0.0]  # count and sum of the values since the CUSUM last left zero
        self.settled: list[float] | None = [0.0, 0.0, 0.0]  # count, sum, sum of squares of v
        # Enough values to measure the level to an eighth of the alert's estimate of it (which
        # may be twice too high), at the values' spread r in baseline sd (1 until measured);
        # for a 0/1 series also enough to see SETTLE_EVENTS of its rarer outcome.
        spread, needed = 1.0, float(self.minimum)
        if self.rate is not None:
            sd = math.sqrt(self.rate * (1.0 - self.rate))
            alerted = min(max(self.rate + self.sign * self.level * sd, 1e-9), 1.0 - 1e-9)
            spread = math.sqrt(alerted * (1.0 - alerted)) / sd
            needed = max(needed, SETTLE_EVENTS / min(alerted, 1.0 - alerted))
        needed = max(needed, (SETTLE_PRECISION * spread / max(self.level, 1e-9)) ** 2)
        self.settle_for = int(min(math.ceil(needed), MAX_SETTLE))
        self.threshold = math.inf

    def _limits(self) -> None:
        capped = min(self.level, LEVEL_CAP)
        self.reference = min(max(self.margin * capped, self.band), capped / 2.0)
        if self.rate is None:
            self.low, self.high = -CLIP, capped + CLIP
        else:
            self.low, self.high = -math.inf, math.inf

    def step(self, value: float) -> bool:
        """One more value of the signal (its pair statistic for a spread); True once back."""
        v = (value - self.baseline) * self.inverse * self.sign
        if v > self.high:
            v = self.high
        elif v < self.low:
            v = self.low
        settled = self.settled
        if settled is not None:
            settled[0] += 1.0
            settled[1] += v
            settled[2] += v * v
            return settled[0] >= self.settle_for and self._settle()
        cusum = self.cusum + self.reference - v
        back = self.back
        if cusum <= 0.0:
            self.cusum = 0.0
            back[0] = back[1] = 0.0
            return False
        self.cusum = cusum
        back[0] += 1.0
        back[1] += value
        return cusum > self.threshold

    def _settle(self) -> bool:
        """The values since the alert measured the level the signal is at (the alert's own
        estimate is biased: a detector fires on its most extreme stretch) and, for a continuous
        signal, its spread r in baseline sd: aim the test at them. True when that level is
        already within the margin (a change that went back within the settling)."""
        assert self.settled is not None
        count, total, squares = self.settled
        self.settled = None
        measured = total / count
        if measured <= self.reference:
            self.back = [count, self.baseline * count + total / (self.inverse * self.sign)]
            return True
        if self.rate is None:
            variance = max(squares / count - measured * measured, 0.0) * count / (count - 1.0)
            spread = math.sqrt(variance)
        else:
            sd = math.sqrt(self.rate * (1.0 - self.rate))
            alerted = min(max(self.rate + self.sign * measured * sd, 1e-9), 1.0 - 1e-9)
            spread = math.sqrt(alerted * (1.0 - alerted)) / sd
        # The test is set for a lower confidence bound of the level: set for a level that is
        # too high, its steps drift down less than it assumes and it resolves too easily. A
        # level whose bound is within the baseline's own uncertainty cannot be told from it.
        low = measured - LEVEL_Z * spread / math.sqrt(count)
        if low <= self.band:
            self.back = [count, self.baseline * count + total / (self.inverse * self.sign)]
            return True
        # "Back" is measured from the level itself; the evidence needed, from its lower bound.
        self.level = measured
        self._limits()
        bound = min(max(low, measured / 2.0), LEVEL_CAP)
        self.reference = min(self.reference, bound / 2.0)  # the bound must still drift down
        if self.rate is None:
            self.threshold = resolve_threshold(
                bound, self.reference, None, self.sign, max(spread, 1.0)
            )
        else:
            self.threshold = resolve_threshold(bound, self.reference, self.rate, self.sign)
        return False

    def now(self) -> float | None:
        """The level of the values that brought the signal back (since the CUSUM left zero)."""
        count, total = self.back
        return total / count if count else None

    def standardised(self, value: float) -> float:
        """`value` in sd from the baseline, signed so that the alerted level is positive."""
        return (value - self.baseline) * self.inverse * self.sign

    def returned(self, value: float, count: int) -> bool:
        """A level measured on `count` values (after a detection's change point) within the
        margin of the baseline, give or take one standard error of it."""
        return self.standardised(value) - 1.0 / math.sqrt(max(count, 1)) <= self.reference

    def toward(self, value: float) -> bool:
        """A level between the margin and the alerted level: part of the way back."""
        return self.standardised(value) < self.level

    def retarget(self, value: float) -> None:
        """Aim at `value`, a level part of the way back, without another alert."""
        self._aim((value - self.baseline) * self.inverse)

    def escalate(self, alert: tuple[str, int], value: float) -> None:
        """A further change, to `value`: one more open alert, and aim at its level."""
        self.alerts.append(alert)
        del self.alerts[:-MAX_OPEN]
        self.reported = value
        self._aim((value - self.baseline) * self.inverse)

    def dump(self) -> list[Any]:
        return [
            [list(alert) for alert in self.alerts],
            self.baseline,
            self.inverse,
            self.sign * self.level,
            self.margin,
            self.rate,
            self.cusum,
            None if math.isinf(self.threshold) else self.threshold,
            self.saved,
            self.report,
            self.reported,
            self.settled,
            self.settle_for,
            self.back,
            self.band,
            self.reference,
            self.minimum,
        ]

    @classmethod
    def load(cls, data: list[Any]) -> Incident:
        try:
            (
                alerts,
                baseline,
                inverse,
                level,
                margin,
                rate,
                cusum,
                threshold,
                saved,
                report,
                reported,
                settled,
                settle_for,
                back,
                band,
                reference,
                *minimum,  # (written before it was a setting: the default)
            ) = data
            # Every field is set below (`cls.__new__(cls)` stops the mypyc build).
            incident = cls(("", 0), 0.0, 1.0, 0.0, 0.0, None, None)
            incident.minimum = int(minimum[0]) if minimum else SETTLE
            incident.alerts = [(str(alert), int(opened)) for alert, opened in alerts]
            incident.baseline, incident.inverse = float(baseline), float(inverse)
            incident.margin = float(margin)
            incident.band = float(band)
            incident.rate = None if rate is None else float(rate)
            incident.saved = saved
            incident.report, incident.reported = float(report), float(reported)
            level = float(level)
            incident.sign = 1.0 if level >= 0.0 else -1.0
            incident.level = abs(level)
            incident._limits()
            incident.reference = float(reference)  # narrowed by `_settle` for its bound
            # Stored, not solved again: a restore of many keys should not bisect for each.
            incident.threshold = math.inf if threshold is None else float(threshold)
            incident.cusum = float(cusum)
            incident.settled = None if settled is None else [float(v) for v in settled]
            incident.settle_for = int(settle_for)
            incident.back = [float(back[0]), float(back[1])]
        except (TypeError, ValueError) as exc:
            raise StateError(f"open alert state is not understood: {exc}") from exc
        return incident
