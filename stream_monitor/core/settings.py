"""The plain settings the core is built from: no Kafka, no metrics, no YAML.

`stream_monitor.config` validates the user's file and builds these (`Config.monitor_settings()`);
tests and embedders can build them directly. Frozen, so one instance can be shared by every
partition's `Monitor`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from stream_monitor.core.detectors import DetectorRule

SIGNAL_KINDS = ("performance", "prediction", "feature", "data_quality")
DEFAULT_MAX_EVENT_BYTES = 1_048_576


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


@dataclass(frozen=True)
class Limits:
    """Bounds on what one partition's monitor holds, whatever arrives.

    Past a bound, events still count (and feed what is already monitored), but nothing new is
    created; each overflow is counted (`MonitorCounters.overflow`) and reported as a metric.
    """

    max_keys: int = 100_000  # monitor keys per input partition
    max_features: int = 500  # features monitored per key
    max_feature_name: int = 256  # characters; a longer feature name is not monitored


def _default_rules() -> dict[str, DetectorRule]:
    return {"adwin": DetectorRule("adwin", "adwin")}


def _default_signals() -> dict[str, tuple[str, ...]]:
    return dict.fromkeys(SIGNAL_KINDS, ("adwin",))


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
    max_likely_causes: int = 5
    likely_cause_min_shift: float = 0.5
    join_ttl_ms: int | None = 7 * 86_400_000
    max_pending_predictions: int = 1_000_000
    max_pending_labels: int = 100_000
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
    limits: Limits = field(default_factory=Limits)
