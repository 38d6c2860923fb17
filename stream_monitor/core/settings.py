"""The plain settings the core is built from: no Kafka, no metrics, no YAML.

`stream_monitor.config` validates the user's file and builds these (`Config.monitor_settings()`);
tests and embedders can build them directly. Frozen, so one instance can be shared by every
partition's `Monitor`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from stream_monitor.core.calibration import Calibration
from stream_monitor.core.detectors import DetectorRule
from stream_monitor.core.reference import ReferenceSet

SIGNAL_KINDS = ("performance", "prediction", "feature", "data_quality")
DEFAULT_MAX_EVENT_BYTES = 1_048_576

# The built-in detector rules, as a config names them (`config.py` validates the same data).
# The defaults per signal kind come from measurements (docs/detection-quality.md):
# - rate: a 0/1 series (error, missing, invalid and positive-class rates, 0/1 features), with
#   Page-Hinkley calibrated for a change of 40% of its rarer outcome's rate (0.5 missed 9 of
#   12 steps of 0.5 -> 0.6, 0.3 was slower on error streams) and the exact
#   threshold of Bernoulli steps;
# - mean: a continuous series' level, with ADWIN on clipped standardised values (robust to heavy
#   tails, no shift size to tune, blind to a pure change of variance);
# - spread: a continuous series' variance, with ADWIN on |x[2i+1] - x[2i]| (blind to its level);
#   on features only: on a score or an error a change of spread came with its change of mean,
#   one more alert for the same change on the same signal.
# - categories: a categorical feature's distance from its reference per block of values
#   (`core.categories`), with a one-sided Page-Hinkley (a CUSUM: only a larger distance is a
#   change) whose threshold is set for the false-alarm budget per value, allowed to fire from
#   the first block (its running mean starts with the reference's weight), values clipped at 8
#   (the distance is about N(0, 1) without a change, with no heavy tail to guard against) and,
#   after an alert, a warm-up of 50 blocks on the new distance. ADWIN on the same distance was
#   2 to 5 times slower (docs/detection-quality.md).
# A rule for one kind of series goes dormant on the other. `adwin` and `page_hinkley` are river's
# raw defaults, kept so that configs naming them go on working (configs/river.yaml).
DEFAULT_DETECTORS: dict[str, dict[str, Any]] = {
    "rate": {"type": "page_hinkley", "calibrate": {"series": "binary", "rate_change": 0.4}},
    "mean": {"type": "adwin", "calibrate": {"series": "continuous"}},
    "spread": {"type": "adwin", "calibrate": {"series": "continuous", "statistic": "spread"}},
    "categories": {
        "type": "page_hinkley",
        "params": {"mode": "up", "min_instances": 1},
        "calibrate": {"series": "categorical", "clip": 8.0, "warmup": 50},
    },
    "adwin": {"type": "adwin"},
    "page_hinkley": {"type": "page_hinkley"},
}
DEFAULT_SIGNALS: dict[str, tuple[str, ...]] = {
    "performance": ("rate", "mean"),
    "prediction": ("rate", "mean"),
    "feature": ("rate", "mean", "spread", "categories"),
    "data_quality": ("rate",),
}
DEFAULT_MIN_EFFECT = 0.2  # Cohen's "small" effect: smaller shifts are not worth an alert
DEFAULT_RESOLVE_MARGIN = 0.25


@dataclass(frozen=True)
class ModelSettings:
    """What to monitor for the models whose name matches `match` (a glob; the first match wins).

    `signals` maps a signal kind to rule names; a kind that is absent inherits the defaults.
    `overrides` maps one signal name ("error", "tenure", "missing_rate:tenure") to its rules.
    """

    match: str = "*"
    task: str = "auto"  # auto | classification | regression
    positive_class: Any = None
    include: tuple[str, ...] = ()  # empty: every feature
    exclude: tuple[str, ...] = ()
    signals: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    overrides: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # This rule's models' references (`models[].reference`); a model it lacks falls back on
    # `MonitorSettings.reference`.
    reference: ReferenceSet | None = None


@dataclass(frozen=True)
class Limits:
    """Bounds on what one partition's monitor holds, whatever arrives.

    Past a bound, events still count (and feed what is already monitored), but nothing new is
    created; each overflow is counted (`MonitorCounters.overflow`) and reported as a metric.
    """

    max_models: int = 1_000  # models per input partition
    max_keys: int = 100_000  # monitor keys per input partition, all models together
    max_keys_per_model: int = 10_000  # monitor keys (versions × segments) per model
    max_features: int = 500  # features monitored per key (a model's keys share its features)
    max_feature_name: int = 256  # characters of a feature name, and of a category value
    max_categories: int = 32  # known categories per categorical feature; the rest is "other"


def _default_rules() -> dict[str, DetectorRule]:
    return {
        name: DetectorRule(
            name,
            spec["type"],
            spec.get("params"),
            Calibration(**spec["calibrate"]) if "calibrate" in spec else None,
        )
        for name, spec in DEFAULT_DETECTORS.items()
    }


def _default_signals() -> dict[str, tuple[str, ...]]:
    return dict(DEFAULT_SIGNALS)


@dataclass(frozen=True)
class MonitorSettings:
    """Everything a `Monitor` needs, and nothing else."""

    rules: Mapping[str, DetectorRule] = field(default_factory=_default_rules)
    signals: Mapping[str, tuple[str, ...]] = field(default_factory=_default_signals)
    models: tuple[ModelSettings, ...] = (ModelSettings(),)
    key_by_version: bool = False
    key_by_segment: tuple[str, ...] = ()
    source: str = "stream-monitor"  # the CloudEvents source is "stream-monitor/<source>"
    cooldown: int = 1000
    # Detections whose effect size is below this are dropped (`MonitorCounters.negligible`).
    min_effect: float = DEFAULT_MIN_EFFECT
    # Publish `drift_resolved` when an alerted signal is back within `resolve_margin` of its
    # pre-change level (`core.lifecycle`).
    resolve: bool = True
    resolve_margin: float = DEFAULT_RESOLVE_MARGIN
    max_likely_causes: int = 5
    likely_cause_min_shift: float = 0.5
    join_ttl_ms: int | None = 7 * 86_400_000
    max_pending_predictions: int = 1_000_000
    max_pending_labels: int = 100_000
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
    limits: Limits = field(default_factory=Limits)
    # The references of models whose rule has none of its own (the top-level `reference`).
    reference: ReferenceSet | None = None
