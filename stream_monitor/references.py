"""Reference files from samples: what each model's signals looked like in, say, its training data.

`stream-monitor reference --config F --predictions TRAIN.jsonl [--labels L] --output REF.json`
replays the sample through the monitor built from the config (`replay`: JSON Lines, CSV or
Parquet), so that a reference has exactly the signals the config watches, under the names alerts
give them, and measures per model × signal (all of a model's monitor keys together):

- every numeric signal (scores, predictions, features, errors, missing rates, ...): its count,
  mean, sd (and for a continuous one the mean and sd of |x[2i+1] - x[2i]| / sd of successive
  pairs, per key, which the spread rule watches, and quantiles from a seeded sample of at most
  `QUANTILE_SAMPLE` values); a 0/1 series is marked `binary`, its mean is its rate;
- every categorical feature: the shares of its `limits.max_categories` most frequent values and
  of the rest (`other`), counted with a Misra–Gries sketch of `CATEGORY_COUNTERS` counters
  (exact below that many distinct values; otherwise each share is low by at most 1 / 10,001);
- each feature's type (numeric, boolean or categorical) and its rate of values of the other type.

`stream-monitor backtest` writes its `reference.json` with the same code.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from stream_monitor.config import Config
from stream_monitor.core.categories import misra_gries
from stream_monitor.core.events import PREDICTION, Decoded, Prediction, Record
from stream_monitor.core.monitor import Monitor
from stream_monitor.core.reference import FORMAT
from stream_monitor.core.settings import MonitorSettings
from stream_monitor.core.signals import (
    CATEGORICAL,
    DATA_QUALITY,
    NUMERIC,
    UNSEEN_RATE,
    WRONG_TYPE_RATE,
    FeatureSlot,
    KeyState,
    Signal,
)
from stream_monitor.replay import partitioned, run

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
QUANTILE_SAMPLE = 10_000
CATEGORY_COUNTERS = 10_000
SAMPLE_SEED = 0


class SignalSample:
    """One model's signal in the sample: running sums, pair gaps per key, a seeded reservoir."""

    __slots__ = ("binary", "gap_m2", "gap_mean", "gaps", "m2", "mean", "n", "previous", "sample")

    def __init__(self) -> None:
        self.n = 0
        self.mean = self.m2 = 0.0
        self.binary = True
        self.previous: dict[str, float] = {}  # a key's first value of its current pair
        self.gaps = 0
        self.gap_mean = self.gap_m2 = 0.0
        self.sample: list[float] = []

    def add(self, key: str, value: float, rng: random.Random) -> None:
        self.n += 1
        delta = value - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (value - self.mean)
        if value != 0.0 and value != 1.0:
            self.binary = False
        first = self.previous.pop(key, None)
        if first is None:
            self.previous[key] = value
        else:
            gap = abs(value - first)
            self.gaps += 1
            step = gap - self.gap_mean
            self.gap_mean += step / self.gaps
            self.gap_m2 += step * (gap - self.gap_mean)
        if len(self.sample) < QUANTILE_SAMPLE:
            self.sample.append(value)
        else:  # reservoir sampling, seeded: the same sample every time
            slot = rng.randrange(self.n)
            if slot < QUANTILE_SAMPLE:
                self.sample[slot] = value

    def summary(self) -> dict[str, Any]:
        sd = math.sqrt(self.m2 / (self.n - 1)) if self.n > 1 else 0.0
        entry: dict[str, Any] = {
            "n": self.n,
            "mean": _round(self.mean),
            "sd": _round(sd),
            "binary": self.binary,
        }
        if self.binary:
            return entry
        if self.gaps >= 2 and sd > 0.0:
            gap_sd = math.sqrt(self.gap_m2 / (self.gaps - 1))
            entry["pairs"] = {"mean": _round(self.gap_mean / sd), "sd": _round(gap_sd / sd)}
        ordered = sorted(self.sample)
        entry["quantiles"] = {
            f"{q:g}": _round(ordered[min(int(q * len(ordered)), len(ordered) - 1)])
            for q in QUANTILES
        }
        return entry


@dataclass
class ModelSample:
    """What one model's events showed."""

    events: int = 0
    signals: dict[tuple[str, str], SignalSample] = field(default_factory=dict)
    categories: dict[str, dict[str, int]] = field(default_factory=dict)  # Misra–Gries sketches
    category_values: dict[str, int] = field(default_factory=dict)
    wrong_types: dict[str, int] = field(default_factory=dict)
    booleans: set[str] = field(default_factory=set)


class ReferenceRecorder(Monitor):
    """The monitor, also measuring what each model's signals see (`summary`)."""

    def __init__(self, settings: MonitorSettings) -> None:
        super().__init__(settings)
        self.samples: dict[str, ModelSample] = {}
        self._rng = random.Random(SAMPLE_SEED)

    def _sample(self, model: str) -> ModelSample:
        sample = self.samples.get(model)
        if sample is None:
            sample = self.samples[model] = ModelSample()
        return sample

    def apply(self, record: Record, event: Decoded) -> None:
        if type(event) is Prediction and self._plan(event.model) is not None:
            sample = self._sample(event.model)
            sample.events += 1
            for name, value in (event.features or {}).items():
                if type(value) is bool:
                    sample.booleans.add(name)
        super().apply(record, event)

    def _observe(self, state: KeyState, signal: Signal, value: float) -> None:
        # A categorical feature's distance, its unseen rate and the type-change rates are
        # measured from counts (`_category`, `_wrong_type`), not from what their tracks see.
        if signal.categories is None and not signal.name.startswith((UNSEEN_RATE, WRONG_TYPE_RATE)):
            signals = self._sample(state.model).signals
            found = signals.get((signal.kind, signal.name))
            if found is None:
                found = signals[(signal.kind, signal.name)] = SignalSample()
            found.add(state.id, value, self._rng)
        super()._observe(state, signal, value)

    def _category(self, state: KeyState, name: str, slot: FeatureSlot, value: str) -> None:
        sample = self._sample(state.model)
        sketch = sample.categories.get(name)
        if sketch is None:
            sketch = sample.categories[name] = {}
        if len(value) <= self.settings.limits.max_feature_name:
            misra_gries(sketch, value, CATEGORY_COUNTERS)
        sample.category_values[name] = sample.category_values.get(name, 0) + 1
        super()._category(state, name, slot, value)

    def _wrong_type(self, state: KeyState, name: str, slot: FeatureSlot) -> float:
        wrong = self._sample(state.model).wrong_types
        wrong[name] = wrong.get(name, 0) + 1
        return super()._wrong_type(state, name, slot)

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per model, its reference entry (the `models` of a reference file)."""
        limit = self.settings.limits.max_categories
        models: dict[str, dict[str, Any]] = {}
        for model, sample in sorted(self.samples.items()):
            types: dict[str, str] = {}
            counts: dict[str, int] = {}
            for state in self.keys.values():
                if state.model != model:
                    continue
                for name, slot in state.features.items():
                    counts[name] = counts.get(name, 0) + slot.count
                    if slot.kind == CATEGORICAL:
                        types[name] = "categorical"
                    elif slot.kind == NUMERIC:
                        types[name] = "boolean" if name in sample.booleans else "numeric"
            signals: dict[str, Any] = {
                f"{kind}/{name}": found.summary()
                for (kind, name), found in sorted(sample.signals.items())
            }
            for name, sketch in sorted(sample.categories.items()):
                if types.get(name) != "categorical":
                    continue
                total = sample.category_values[name]
                ranked = sorted(sketch.items(), key=lambda item: -item[1])[:limit]
                shares = {value: _round(count / total) for value, count in ranked}
                signals[f"feature/{name}"] = {
                    "n": total,
                    "categories": shares,
                    "other": _round(max(1.0 - math.fsum(shares.values()), 0.0)),
                }
            for name in sorted(types):
                wrong = sample.wrong_types.get(name, 0)
                if counts.get(name):
                    rate = wrong / counts[name]
                    signals[f"{DATA_QUALITY}/{WRONG_TYPE_RATE}{name}"] = {
                        "n": counts[name],
                        "mean": _round(rate),
                        "sd": _round(math.sqrt(rate * (1.0 - rate))),
                        "binary": True,
                    }
            models[model] = {
                "events": sample.events,
                "features": dict(sorted(types.items())),
                "signals": signals,
            }
        return models


def reference_file(models: dict[str, dict[str, Any]], source: dict[str, Any]) -> dict[str, Any]:
    """A reference file's content; `source` says what it was measured on (not part of any
    model's digest)."""
    return {"format": FORMAT, "source": source, "models": models}


def build_reference(
    config: Config, predictions: Path, labels: Path | None, model: str | None = None
) -> dict[str, Any]:
    """The reference of a sample, with the signals `config` monitors."""
    streams = partitioned(predictions, labels, config.kafka.partitions, model)
    models: dict[str, dict[str, Any]] = {}
    events = 0
    for processor, _, _ in run(config.monitor_settings(), streams, monitor=ReferenceRecorder):
        recorder = processor.monitor
        assert isinstance(recorder, ReferenceRecorder)
        models.update(recorder.summary())
        events += recorder.counters.events[PREDICTION]
    source = {
        "predictions": predictions.name,
        "labels": None if labels is None else labels.name,
        "predictions_read": events,
    }
    return reference_file(models, source)


def write_reference(data: dict[str, Any], path: Path) -> None:
    path.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n")


def _round(value: float) -> float:
    return round(value, 9)
