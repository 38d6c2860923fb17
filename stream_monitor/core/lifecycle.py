"""Alert lifecycle: an alert stays open until its signal is back at its pre-change level.

When a track alerts, it opens an `Incident`: the pre-change level (`baseline`, with its standard
deviation) and the level the change reached, in those standard deviations (`level`). From then on
every value (for a spread, every pair's |x[2i+1] - x[2i]|) feeds a one-sided CUSUM that gathers
evidence of being back:

    v = sign · (x - baseline) / sd          (0 at the baseline, `level` at the alerted level)
    S = max(0, S + margin · level - v)      resolved when S > threshold

so values nearer the baseline than `margin` of the shift push it up, values beyond push it down.
That is the hysteresis: a signal that came only half-way back (with margin 0.25) never resolves,
and the threshold is set so that a signal still at its alerted level resolves falsely about once
in `RESOLVE_ARL` values (Siegmund's approximation again; the exact two-point steps for a 0/1
series). A continuous signal's spread often changes with its level (a score pushed towards 0.5
spreads out): its first `SETTLE` values after the alert only measure that spread, in baseline
sd, and the threshold is set for it (steps of sd r need r² times the evidence). The level is
capped at `LEVEL_CAP` standard deviations and continuous values are clipped, so that a huge
shift does not resolve on one lucky value of a heavy-tailed series.

A detection while an incident is open is a return when its post-change level is within the
margin of the baseline (then it resolves instead of alerting); part of the way back when it lies
between that and the alerted level (no alert: the incident aims at the new level); otherwise a
further change, published as a new alert that the same incident closes (every open alert gets
its own `drift_resolved` event, `data.resolves` naming it).
"""

from __future__ import annotations

import math
from typing import Any

from stream_monitor.core.calibration import (
    GAUSSIAN_OVERSHOOT,
    MIN_SCALE,
    clamp_rate,
    solve_threshold,
    step_exponent,
)
from stream_monitor.errors import StateError

RESOLVE_ARL = 1_000_000.0  # values between false resolves of a signal still at its alerted level
LEVEL_CAP = 4.0  # standard deviations
CLIP = 4.0  # continuous values beyond this many sd (past either end) count as this many
MAX_OPEN = 16  # open alerts per incident; a 17th further change drops the oldest from it
MIN_DRIFT = 1e-6
SETTLE = 64  # values after an alert (pairs for a spread) that measure the alerted regime's sd


def resolve_threshold(
    level: float, margin: float, rate: float | None, sign: float, spread: float = 1.0
) -> float:
    """The CUSUM threshold for a (capped) `level` in sd: Gaussian steps of sd `spread`, or for a
    0/1 series at reference `rate` the two-point steps of its rate at the alerted level."""
    reference = margin * level
    drift = level - reference
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
    if mean <= MIN_DRIFT:  # the alerted rate is (nearly) the reference: nothing to tell apart
        return math.inf
    exponent = step_exponent(steps, 2.0 * drift)
    return solve_threshold(RESOLVE_ARL, exponent, mean, 0.0)


class Incident:
    """The open alerts of one track, and the evidence that its signal is back."""

    __slots__ = (
        "alerts",
        "back",
        "baseline",
        "cusum",
        "high",
        "inverse",
        "level",
        "low",
        "margin",
        "rate",
        "reference",
        "report",
        "saved",
        "settled",
        "sign",
        "threshold",
    )

    def __init__(
        self,
        alert: tuple[str, int],
        baseline: float,
        sd: float,
        level: float,
        margin: float,
        rate: float | None,
        saved: list[Any] | None,
        report: float = 1.0,
    ) -> None:
        self.alerts = [alert]  # (id, observations) of each open alert, oldest first
        self.baseline = baseline
        self.inverse = 1.0 / max(sd, MIN_SCALE)
        self.margin = margin
        # the reference rate of a 0/1 series (no clipping, exact steps)
        self.rate = None if rate is None else clamp_rate(rate)
        self.saved = saved  # the calibration to go back to once resolved (calibrated tracks)
        self.report = report  # what the watched levels are multiplied by in resolved events
        self.cusum = 0.0
        self.back = [0.0, 0.0]  # count and sum of the values since the CUSUM last left zero
        self._aim(level)

    def _aim(self, level: float) -> None:
        self.sign = 1.0 if level >= 0.0 else -1.0
        self.level = abs(level)
        self._limits()
        # [count, sum, sum of squares] of the clipped values seen since the alert, until SETTLE
        self.settled: list[float] | None = None if self.rate is not None else [0.0, 0.0, 0.0]
        self.threshold = (
            math.inf
            if self.rate is None
            else resolve_threshold(min(self.level, LEVEL_CAP), self.margin, self.rate, self.sign)
        )

    def _limits(self) -> None:
        capped = min(self.level, LEVEL_CAP)
        self.reference = self.margin * capped
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
            if settled[0] >= SETTLE:
                self._settle()
            return False
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

    def now(self) -> float | None:
        """The level of the values that brought the signal back (since the CUSUM left zero)."""
        count, total = self.back
        return total / count if count else None

    def _settle(self) -> None:
        """The alerted regime's sd is measured: set the threshold for it."""
        assert self.settled is not None
        count, total, squares = self.settled
        variance = max(squares / count - (total / count) ** 2, 0.0) * count / (count - 1.0)
        spread = max(math.sqrt(variance), 1.0)
        self.settled = None
        self.threshold = resolve_threshold(
            min(self.level, LEVEL_CAP), self.margin, None, self.sign, spread
        )

    def standardised(self, value: float) -> float:
        """`value` in sd from the baseline, signed so that the alerted level is positive."""
        return (value - self.baseline) * self.inverse * self.sign

    def returned(self, value: float) -> bool:
        """A level (say, after a detection's change point) within the margin of the baseline."""
        return self.standardised(value) <= self.margin * min(self.level, LEVEL_CAP)

    def toward(self, value: float) -> bool:
        """A level between the margin and the alerted level: part of the way back."""
        return self.standardised(value) < self.level

    def retarget(self, value: float) -> None:
        """Aim at `value`, a level part of the way back, without another alert."""
        self.cusum = 0.0
        self.back = [0.0, 0.0]
        self._aim((value - self.baseline) * self.inverse)

    def escalate(self, alert: tuple[str, int], value: float) -> None:
        """A further change, to `value`: one more open alert, and aim at its level."""
        self.alerts.append(alert)
        del self.alerts[:-MAX_OPEN]
        self.cusum = 0.0
        self.back = [0.0, 0.0]
        self._aim((value - self.baseline) * self.inverse)

    def alerted(self) -> float:
        """The level the signal was alerted at (the latest alert's), in the watched units."""
        return self.baseline + self.sign * self.level / self.inverse

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
            self.settled,
            self.back,
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
                settled,
                back,
            ) = data
            incident = cls.__new__(cls)
            incident.alerts = [(str(alert), int(opened)) for alert, opened in alerts]
            incident.report = float(report)
            incident.baseline, incident.inverse = float(baseline), float(inverse)
            incident.margin = float(margin)
            incident.rate = None if rate is None else float(rate)
            incident.saved = saved
            level = float(level)
            incident.sign = 1.0 if level >= 0.0 else -1.0
            incident.level = abs(level)
            incident._limits()
            # Stored, not solved again: a restore of many keys should not bisect for each.
            incident.threshold = math.inf if threshold is None else float(threshold)
            incident.settled = None if settled is None else [float(v) for v in settled]
            incident.back = [float(back[0]), float(back[1])]
            incident.cusum = float(cusum)
        except (TypeError, ValueError) as exc:
            raise StateError(f"open alert state is not understood: {exc}") from exc
        return incident
