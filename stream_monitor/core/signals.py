"""Which values each event feeds, and the per-key objects that hold a signal's detectors.

Signal kinds and names:
- performance: `error` (classification, 0/1) or `absolute_error` (regression), per joined pair;
- prediction: `score` when present, else `prediction` (numeric), else `positive_rate` (class);
- feature: each numeric feature, by its name;
- data_quality: `missing_rate:<feature>` (absent, null or non-finite) and `invalid_rate` (the
  share of invalid events on the predictions stream).
"""

from __future__ import annotations

import fnmatch
from typing import Any

from stream_monitor.core.calibration import Reference, Scaler
from stream_monitor.core.detectors import DetectorRule
from stream_monitor.core.settings import ModelSettings, MonitorSettings

PERFORMANCE = "performance"
PREDICTION = "prediction"
FEATURE = "feature"
DATA_QUALITY = "data_quality"

# Exponential weights of the short "recent" mean (alert stats for Page-Hinkley and feature profiles)
# and of the long feature baseline used to rank likely causes.
RECENT_SPAN = 100
RECENT_ALPHA = 2.0 / (RECENT_SPAN + 1)
BASELINE_SPAN = 2000
BASELINE_ALPHA = 2.0 / (BASELINE_SPAN + 1)
PROFILE_MIN_COUNT = 30


class ModelPlan:
    """The resolved settings for one model name: computed once, then looked up per event."""

    __slots__ = (
        "_cache",
        "exclude",
        "include",
        "joins",
        "kinds",
        "overrides",
        "positive_class",
        "task",
    )

    def __init__(self, model: ModelSettings, settings: MonitorSettings) -> None:
        rules = settings.rules
        self.task = model.task
        self.positive_class = model.positive_class
        self.include = frozenset(model.include) or None
        self.exclude = frozenset(model.exclude)
        self.kinds: dict[str, tuple[DetectorRule, ...]] = {}
        for kind in (PERFORMANCE, PREDICTION, FEATURE, DATA_QUALITY):
            names = model.signals.get(kind)
            if names is None:
                names = settings.signals.get(kind, ())
            self.kinds[kind] = tuple(rules[name] for name in names)
        self.overrides = {
            signal: tuple(rules[name] for name in names)
            for signal, names in model.overrides.items()
        }
        self._cache: dict[tuple[str, str], tuple[DetectorRule, ...]] = {}
        # Only hold predictions for a label when some performance signal will use the pair.
        self.joins = bool(
            self.rules_for(PERFORMANCE, "error") or self.rules_for(PERFORMANCE, "absolute_error")
        )

    def rules_for(self, kind: str, name: str) -> tuple[DetectorRule, ...]:
        cached = self._cache.get((kind, name))
        if cached is None:
            cached = self.overrides.get(name, self.kinds[kind])
            if kind == FEATURE and not self.wants_feature(name):
                cached = ()
            self._cache[(kind, name)] = cached
        return cached

    def wants_feature(self, name: str) -> bool:
        return (self.include is None or name in self.include) and name not in self.exclude


def resolve_plan(settings: MonitorSettings, model: str) -> ModelPlan | None:
    """The first model rule whose glob matches; None when no rule monitors this model."""
    for rule in settings.models:
        if fnmatch.fnmatchcase(model, rule.match):
            return ModelPlan(rule, settings)
    return None


class Track:
    """One detector on one signal of one key, plus the running sums that explain its alerts.

    `n`, `total` and `total_sq` cover the values since the detector last reset (river resets a
    detector on the update after it fires), so at a detection they describe its whole window.
    They stay in the signal's units; with a calibrated rule only the detector sees standardised
    values, through `scaler`.
    """

    __slots__ = (
        "detector",
        "n",
        "quiet_until",
        "recent",
        "rule",
        "scaler",
        "seen",
        "total",
        "total_sq",
        "update",
    )

    def __init__(
        self, rule: DetectorRule, detector: Any = None, reference: Reference | None = None
    ) -> None:
        self.rule = rule
        self.detector = rule.create() if detector is None else detector
        calibration = rule.calibration
        self.scaler: Scaler | None = None
        if calibration is None:
            self.update = self.detector.update
        else:
            self.scaler = calibration.scaler(
                self.detector, rule.type.prime, rule.type.name == "page_hinkley", reference
            )
            self.update = self.scaler.update
        self.seen = 0  # values this detector has seen for this key, ever
        self.n = 0
        self.total = 0.0
        self.total_sq = 0.0
        self.recent = 0.0
        self.quiet_until = -1  # cooldown: detections up to this `seen` count are suppressed

    def reset_window(self) -> None:
        self.n = 0
        self.total = 0.0
        self.total_sq = 0.0
        self.recent = 0.0

    def dump(self) -> list[Any]:
        data = [
            self.rule.name,
            self.rule.dump(self.detector),
            self.seen,
            self.n,
            self.total,
            self.total_sq,
            self.recent,
            self.quiet_until,
        ]
        if self.scaler is not None:
            data.append(self.scaler.dump())
        return data

    @classmethod
    def load(cls, rule: DetectorRule, data: list[Any]) -> Track:
        track = cls(rule, rule.load(data[1]))
        track.seen, track.n, track.total, track.total_sq, track.recent, track.quiet_until = data[
            2:8
        ]
        # State written before the rule was calibrated has no scaler: it starts a fresh warm-up.
        if track.scaler is not None and len(data) > 8:
            track.scaler.load(data[8])
        return track

    def window_stats(self) -> dict[str, Any]:
        """Before/after means at a detection. Exact for ADWIN: at the moment it fires, its window
        holds only the values after the cut (which may still include values from before the change).
        Page-Hinkley does not localise the change, so its "after" is the recent mean.
        `mean_recent` is an exponentially weighted mean over about the last RECENT_SPAN values."""
        n, total = self.n, self.total
        if self.rule.type.name == "adwin":
            helper = self.detector._helper
            after_n = int(helper.get_width())
            after_total = float(helper.get_total())
            if self.scaler is not None:
                after_total = self.scaler.to_raw(after_total, after_n)
        else:
            after_n = min(n, RECENT_SPAN)
            after_total = self.recent * after_n
        before_n = n - after_n
        mean = total / n if n else 0.0
        variance = max(self.total_sq / n - mean * mean, 0.0) if n else 0.0
        return {
            "mean_before": (total - after_total) / before_n if before_n > 0 else None,
            "mean_after": after_total / after_n if after_n > 0 else None,
            "window_before": before_n,
            "window_after": after_n,
            "mean_recent": self.recent if n >= RECENT_SPAN else (total / n if n else None),
            "std": variance**0.5,
        }


class Signal:
    """A monitored signal of one key: its detectors, and for features a baseline/recent profile."""

    __slots__ = ("baseline", "baseline_var", "count", "kind", "name", "recent", "tracks")

    def __init__(self, kind: str, name: str, tracks: list[Track]) -> None:
        self.kind = kind
        self.name = name
        self.tracks = tracks
        self.count = 0
        self.baseline = 0.0
        self.baseline_var = 0.0
        self.recent = 0.0

    def profile(self, x: float) -> None:
        """Track a slow baseline and a fast recent mean, to rank likely causes of an alert."""
        if self.count == 0:
            self.baseline = self.recent = x
        else:
            delta = x - self.baseline
            self.baseline += BASELINE_ALPHA * delta
            self.baseline_var = (1.0 - BASELINE_ALPHA) * (
                self.baseline_var + BASELINE_ALPHA * delta * delta
            )
            self.recent += RECENT_ALPHA * (x - self.recent)
        self.count += 1

    def shift(self) -> float | None:
        """How far the recent mean sits from the baseline, in baseline standard deviations."""
        if self.count < PROFILE_MIN_COUNT or self.baseline_var <= 0.0:
            return None
        return float((self.recent - self.baseline) / self.baseline_var**0.5)

    def dump(self) -> list[Any]:
        return [
            self.kind,
            self.name,
            [track.dump() for track in self.tracks],
            [self.count, self.baseline, self.baseline_var, self.recent],
        ]


class FeatureSlot:
    """Per feature of a key: its value signal and its missing-rate signal.

    The value signal is created on the first numeric value, so categorical features get none.
    """

    __slots__ = ("missing", "numeric", "values")

    def __init__(self, missing: Signal | None) -> None:
        self.values: Signal | None = None
        self.numeric = False
        self.missing = missing


class KeyState:
    """Everything monitored for one monitor key (model [+ version] [+ segment])."""

    __slots__ = (
        "feature_names",
        "features",
        "id",
        "invalid",
        "model",
        "model_version",
        "performance",
        "plan",
        "positive_class",
        "predictions",
        "segment",
        "task",
    )

    def __init__(
        self,
        key_id: str,
        model: str,
        model_version: str | None,
        segment: dict[str, str],
        plan: ModelPlan,
    ) -> None:
        self.id = key_id
        self.model = model
        self.model_version = model_version
        self.segment = segment
        self.plan = plan
        self.task = plan.task  # "auto" until the first joined pair decides
        self.positive_class: Any = plan.positive_class
        self.features: dict[str, FeatureSlot] = {}
        self.feature_names: list[str] = []
        self.predictions: dict[str, Signal | None] = {}
        self.performance: Signal | None = None
        self.invalid = self.new_signal(DATA_QUALITY, "invalid_rate")

    def new_signal(self, kind: str, name: str) -> Signal | None:
        rules = self.plan.rules_for(kind, name)
        if not rules:
            return None
        return Signal(
            kind,
            name,
            [
                Track(rule, reference=rule.calibration.reference_for(self.id, name))
                if rule.calibration is not None
                else Track(rule)
                for rule in rules
            ],
        )

    def add_feature(self, name: str) -> FeatureSlot:
        slot = FeatureSlot(self.new_signal(DATA_QUALITY, f"missing_rate:{name}"))
        self.features[name] = slot
        self.feature_names.append(name)
        return slot

    def signals(self) -> list[Signal]:
        found = [self.performance, self.invalid, *self.predictions.values()]
        for slot in self.features.values():
            found.append(slot.values)
            found.append(slot.missing)
        return [signal for signal in found if signal is not None]

    def dump(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "model_version": self.model_version,
            "segment": self.segment,
            "task": self.task,
            "positive_class": self.positive_class,
            "features": self.feature_names,
            "predictions": sorted(self.predictions),
            "signals": [signal.dump() for signal in self.signals()],
        }
