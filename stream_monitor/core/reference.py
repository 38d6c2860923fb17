"""References: what each model's signals looked like in a known-good sample (its training data).

One concept for every signal: a reference file (JSON, written by `stream-monitor reference` or
`backtest`) holds, per model and per signal, the statistics detection compares production with
from the first event: mean, sd (and for a continuous signal the mean and sd of its pair statistic,
which the spread rule watches; quantiles, for people), a 0/1 series' rate, and a categorical
feature's category shares. A signal the reference has skips the warm-up; one it lacks calibrates
itself on its first values, as without a reference.

    {"format": "stream-monitor/reference/1",
     "models": {"fraud": {
         "events": 5000,
         "features": {"amount": "numeric", "country": "categorical", "new": "boolean"},
         "signals": {
             "feature/amount": {"n": 5000, "mean": 100.2, "sd": 19.9, "binary": false,
                                "pairs": {"mean": 1.13, "sd": 0.85},
                                "quantiles": {"0.05": 67.1, "0.5": 100.3, "0.95": 133.0}},
             "feature/country": {"n": 5000, "categories": {"fr": 0.2, "de": 0.3}, "other": 0.5},
             "data_quality/missing_rate:amount": {"n": 5000, "mean": 0.01, "sd": 0.099,
                                                  "binary": true}}}}}

Signals are named `<kind>/<name>` as alerts name them. The core reads it as plain data (`parse`):
the file itself is read, once, at start-up by the config, and every monitor key records the
digest of its model's reference in its (signed) state, so a changed file is noticed on restore.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import orjson

from stream_monitor.core.categories import BLOCK, CategoryReference

FORMAT = "stream-monitor/reference/1"
SIGNAL_KINDS = ("performance", "prediction", "feature", "data_quality")
FEATURE_TYPES = ("numeric", "boolean", "categorical")
SHARE_TOLERANCE = 1e-3  # category shares and other must sum to 1 within this


class InvalidReference(ValueError):
    """A reference that cannot be used; the message names the model and the signal."""


class Reference(NamedTuple):
    """What a calibrated track needs from a reference: the series' centre and scale, whether it
    is a 0/1 series, how many values they were measured on, and for a continuous series the mean
    and sd of |x[2i+1] - x[2i]| / scale (None: the spread rule learns them on its warm-up)."""

    centre: float
    scale: float
    binary: bool
    n: int
    pairs: tuple[float, float] | None = None


# The distance of a categorical feature's blocks is about N(0, 1) without a change.
def distance_reference(n: float) -> Reference:
    """The reference of a categorical feature's distance, from a reference of `n` values."""
    return Reference(0.0, 1.0, False, int(n // BLOCK))


def rate_reference(events: float, n: float) -> Reference:
    """A 0/1 series that had `events` ones in `n` values, smoothed as a warm-up's rate is."""
    rate = (events + 0.5) / (n + 1.0)
    return Reference(rate, math.sqrt(rate * (1.0 - rate)), True, int(n))


class ModelReference:
    """One model's reference: its signals' references, its features' types and categories."""

    __slots__ = ("categories", "digest", "events", "model", "signals", "types")

    def __init__(
        self,
        model: str,
        events: int,
        types: dict[str, str],
        signals: dict[str, Reference],
        categories: dict[str, CategoryReference],
        digest: str,
    ) -> None:
        self.model = model
        self.events = events
        self.types = types
        self.signals = signals
        self.categories = categories
        self.digest = digest

    def signal(self, kind: str, name: str) -> Reference | None:
        return self.signals.get(f"{kind}/{name}")

    def categorical(self, feature: str) -> bool | None:
        """True: the feature is categorical; False: numeric or boolean; None: not in it."""
        kind = self.types.get(feature)
        return None if kind is None else kind == "categorical"

    def names(self) -> set[str]:
        """Every signal it has, as `<kind>/<name>`."""
        return {*self.signals, *(f"feature/{name}" for name in self.categories)}


class ReferenceSet:
    """A parsed reference file: per model, its reference."""

    __slots__ = ("models",)

    def __init__(self, models: dict[str, ModelReference]) -> None:
        self.models = models


def parse(data: Any) -> ReferenceSet:
    """A reference file's JSON as a `ReferenceSet`; InvalidReference names what is wrong."""
    if not isinstance(data, dict):
        raise InvalidReference("the top level must be an object")
    if "format" not in data and "signals" in data:
        raise InvalidReference(
            "this is the per-signal format of an earlier version; build a new reference with "
            "`stream-monitor reference` (or `backtest`)"
        )
    if data.get("format") != FORMAT:
        raise InvalidReference(f"format must be {FORMAT!r}, got {data.get('format')!r}")
    models = data.get("models")
    if not isinstance(models, dict) or not models:
        raise InvalidReference("'models' must be an object with at least one model")
    return ReferenceSet({str(model): _model(str(model), entry) for model, entry in models.items()})


def _model(model: str, entry: Any) -> ModelReference:
    where = f"model {model!r}"
    if not isinstance(entry, dict):
        raise InvalidReference(f"{where}: must be an object")
    events = entry.get("events", 0)
    if type(events) is not int or events < 0:
        raise InvalidReference(f"{where}: 'events' must be a count")
    types = entry.get("features", {})
    if not isinstance(types, dict) or any(kind not in FEATURE_TYPES for kind in types.values()):
        raise InvalidReference(
            f"{where}: 'features' must map feature names to one of {', '.join(FEATURE_TYPES)}"
        )
    signals_data = entry.get("signals")
    if not isinstance(signals_data, dict):
        raise InvalidReference(f"{where}: 'signals' must be an object")
    signals: dict[str, Reference] = {}
    categories: dict[str, CategoryReference] = {}
    for key, stats in signals_data.items():
        kind, _, name = str(key).partition("/")
        if kind not in SIGNAL_KINDS or not name:
            raise InvalidReference(
                f"{where}: signal {key!r} must be named <kind>/<name>, kind one of "
                f"{', '.join(SIGNAL_KINDS)}"
            )
        if not isinstance(stats, dict):
            raise InvalidReference(f"{where}, signal {key!r}: must be an object")
        try:
            if "categories" in stats:
                if kind != "feature":
                    raise InvalidReference("only a feature can have categories")
                categories[name] = _categories(stats)
                types.setdefault(name, "categorical")
            else:
                signals[key] = _numeric(stats)
                if kind == "feature":
                    types.setdefault(name, "boolean" if stats.get("binary") else "numeric")
        except (InvalidReference, KeyError, TypeError, ValueError) as exc:
            detail = f"field {exc.args[0]!r} is missing" if isinstance(exc, KeyError) else exc
            raise InvalidReference(f"{where}, signal {key!r}: {detail}") from None
    digest = hashlib.sha256(orjson.dumps(entry, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]
    return ModelReference(model, events, dict(types), signals, categories, digest)


def _count(stats: Mapping[str, Any]) -> int:
    n = stats["n"]
    if type(n) is not int or n < 1:
        raise InvalidReference("'n' must be a count of at least 1")
    return n


def _finite(stats: Mapping[str, Any], name: str, minimum: float = -math.inf) -> float:
    value = stats[name]
    if type(value) not in (int, float) or not math.isfinite(value) or value < minimum:
        bound = "" if minimum == -math.inf else f" ≥ {minimum:g}"
        raise InvalidReference(f"{name!r} must be a finite number{bound}")
    return float(value)


def _numeric(stats: Mapping[str, Any]) -> Reference:
    n = _count(stats)
    mean = _finite(stats, "mean")
    sd = _finite(stats, "sd", 0.0)
    binary = stats.get("binary", False)
    if type(binary) is not bool:
        raise InvalidReference("'binary' must be true or false")
    if binary:
        if not 0.0 <= mean <= 1.0:
            raise InvalidReference("the mean of a 0/1 series must be a rate in [0, 1]")
        return rate_reference(mean * n, n)
    pairs = stats.get("pairs")
    pair: tuple[float, float] | None = None
    if pairs is not None:
        if not isinstance(pairs, dict):
            raise InvalidReference("'pairs' must be an object with a mean and an sd")
        pair = (_finite(pairs, "mean", 0.0), _finite(pairs, "sd", 0.0))
    quantiles = stats.get("quantiles", {})
    if not isinstance(quantiles, dict):
        raise InvalidReference("'quantiles' must map probabilities to values")
    return Reference(mean, sd, False, n, pair)


def _categories(stats: Mapping[str, Any]) -> CategoryReference:
    n = _count(stats)
    shares = stats["categories"]
    if not isinstance(shares, dict):
        raise InvalidReference("'categories' must map each category to its share")
    names, values = [], []
    for name, share in shares.items():
        if type(share) not in (int, float) or not 0.0 <= share <= 1.0:
            raise InvalidReference(f"the share of category {name!r} must be in [0, 1]")
        names.append(str(name))
        values.append(float(share))
    other = _finite(stats, "other", 0.0) if "other" in stats else 0.0
    if abs(sum(values) + other - 1.0) > SHARE_TOLERANCE:
        raise InvalidReference(
            f"the shares of the categories and other sum to {sum(values) + other:.4g}, not 1"
        )
    return names, values, other, n
