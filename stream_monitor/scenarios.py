"""Seeded, reproducible event streams with drift injected at known points.

Used by the sample data for `replay`, by the simulator, the demo, the tests and the benchmarks, so
every one of them exercises the same, documented behaviour.

Scenario `default` (three models, interleaved, one prediction every `step_ms` per model):
- `credit` (classifier): after the change point its labels disagree with its predictions three
  times as often (error rate 0.10 -> 0.30), while its inputs stay the same: only delayed labels
  reveal it.
- `fraud` (classifier): after the change point its `amount` feature shifts up by 1.5 standard
  deviations and its score follows, and its `country` mix changes (`fr` 20% -> 60% of its
  predictions); its accuracy stays the same. Its `merchant` (a, b, c or d) and its `new_customer`
  flag (a boolean, 30%) do not change.
- `eta` (regression): healthy throughout.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

from stream_monitor.core.events import format_time

BASE_TIME_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


@dataclass
class Scenario:
    predictions: list[dict[str, Any]]
    labels: list[dict[str, Any]]
    # model -> index (within that model's predictions) of the first drifted event, or None.
    change_points: dict[str, int | None] = field(default_factory=dict)
    description: dict[str, str] = field(default_factory=dict)


COUNTRIES = ("fr", "de", "es", "it")
COUNTRY_MIX = (0.2, 0.3, 0.25, 0.25)
COUNTRY_MIX_AFTER = (0.6, 0.15, 0.125, 0.125)  # fr tripled, the others halved

SCENARIOS = {
    "default": "credit: accuracy drops (seen through delayed labels); fraud: input, country mix "
    "and score shift; eta: healthy regression",
    "stable": "the same three models, no drift at all (for false-alarm checks)",
}


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def generate(
    scenario: str = "default",
    *,
    events: int = 6000,
    seed: int = 7,
    change_at: float = 0.5,
    label_delay_ms: int = 60_000,
    step_ms: int = 100,
) -> Scenario:
    """`events` predictions per model; labels for all of them, `label_delay_ms` later."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r} (known: {', '.join(SCENARIOS)})")
    drift = scenario == "default"
    rng = random.Random(seed)
    # fraud's country and new-customer flag: drawn apart, so that the other values (and what
    # they gave before these features existed) stay the same
    mix = random.Random(f"{seed}-country")
    change = int(events * change_at)
    predictions: list[dict[str, Any]] = []
    labels: list[dict[str, Any]] = []
    for i in range(events):
        time_ms = BASE_TIME_MS + i * step_ms
        drifted = drift and i >= change

        # credit: same inputs, labels drift away from the predictions.
        income = rng.gauss(50.0, 10.0)
        age = rng.gauss(40.0, 12.0)
        tenure = max(0.0, rng.gauss(5.0, 2.0))
        score = _sigmoid(0.08 * (income - 50.0) + 0.05 * (age - 40.0) + rng.gauss(0.0, 0.5))
        predicted = score >= 0.5
        wrong = rng.random() < (0.30 if drifted else 0.10)
        _emit(
            predictions,
            labels,
            "credit",
            i,
            time_ms,
            label_delay_ms,
            prediction=predicted,
            label=(not predicted) if wrong else predicted,
            score=score,
            features={"income": round(income, 3), "age": round(age, 3), "tenure": round(tenure, 3)},
            segment={"region": rng.choice(("eu", "us"))},
        )

        # fraud: amount shifts by 1.5 sigma, its score follows; labels keep the same accuracy.
        amount = rng.gauss(100.0 + (30.0 if drifted else 0.0), 20.0)
        hour = rng.randrange(24)
        fraud_score = _sigmoid(0.05 * (amount - 100.0) - 2.0 + rng.gauss(0.0, 0.3))
        fraud_predicted = fraud_score >= 0.5
        fraud_wrong = rng.random() < 0.05
        country = mix.choices(COUNTRIES, COUNTRY_MIX_AFTER if drifted else COUNTRY_MIX)[0]
        new_customer = mix.random() < 0.3
        _emit(
            predictions,
            labels,
            "fraud",
            i,
            time_ms + 1,
            label_delay_ms,
            prediction=fraud_predicted,
            label=(not fraud_predicted) if fraud_wrong else fraud_predicted,
            score=fraud_score,
            features={
                "amount": round(amount, 3),
                "hour": hour,
                "merchant": rng.choice("abcd"),
                "country": country,
                "new_customer": new_customer,
            },
            segment={"region": rng.choice(("eu", "us"))},
        )

        # eta: healthy regression.
        distance = max(0.1, rng.gauss(10.0, 3.0))
        eta = 2.0 * distance + 5.0 + rng.gauss(0.0, 1.0)
        _emit(
            predictions,
            labels,
            "eta",
            i,
            time_ms + 2,
            label_delay_ms,
            prediction=round(eta, 3),
            label=round(eta + rng.gauss(0.0, 2.0), 3),
            score=None,
            features={"distance": round(distance, 3), "traffic": round(rng.uniform(0.0, 1.0), 3)},
            segment={"region": rng.choice(("eu", "us"))},
        )
    labels.sort(key=lambda event: event["timestamp"])
    return Scenario(
        predictions,
        labels,
        change_points={
            "credit": change if drift else None,
            "fraud": change if drift else None,
            "eta": None,
        },
        description={"scenario": SCENARIOS[scenario]},
    )


def covariate_shift(
    *,
    events: int = 80_000,
    seed: int = 3,
    change_at: float = 0.5,
    label_delay: int = 20_000,
    step_ms: int = 100,
    concept: bool = False,
) -> Scenario:
    """One classifier, `churn`, whose scores are calibrated probabilities: its labels are drawn
    from them (P(label) = score), so its expected error 1 - max(p, 1 - p) is its error rate.

    At the change point its input `usage` moves from N(1.5, 1) to N(0.3, 1), towards the decision
    boundary (covariate shift): predictions become less certain and the model's error rate doubles
    (0.08 to 0.17), which its scores show at once and its labels `label_delay` predictions later.
    With `concept=True` its inputs and scores stay the same and 16% of its labels flip instead
    (concept drift: error 0.08 to 0.22), which its scores cannot show.
    """
    rng = random.Random(seed)
    change = int(events * change_at)
    predictions: list[dict[str, Any]] = []
    labels: list[dict[str, Any]] = []
    for i in range(events):
        drifted = i >= change
        usage = rng.gauss(0.3 if drifted and not concept else 1.5, 1.0)
        tenure = rng.gauss(0.0, 1.0)
        score = _sigmoid(2.5 * usage + 0.5 * tenure)
        label = rng.random() < score
        if concept and drifted and rng.random() < 0.16:
            label = not label
        _emit(
            predictions,
            labels,
            "churn",
            i,
            BASE_TIME_MS + i * step_ms,
            label_delay * step_ms,
            prediction=score >= 0.5,
            label=label,
            score=score,
            features={"usage": round(usage, 4), "tenure": round(tenure, 4)},
            segment={},
        )
    labels.sort(key=lambda event: event["timestamp"])
    return Scenario(
        predictions,
        labels,
        change_points={"churn": change},
        description={"scenario": "covariate shift of a calibrated classifier"},
    )


def _emit(
    predictions: list[dict[str, Any]],
    labels: list[dict[str, Any]],
    model: str,
    index: int,
    time_ms: int,
    label_delay_ms: int,
    *,
    prediction: Any,
    label: Any,
    score: float | None,
    features: dict[str, Any],
    segment: dict[str, str],
) -> None:
    prediction_id = f"{model}-{index:07d}"
    event: dict[str, Any] = {
        "prediction_id": prediction_id,
        "model": model,
        "model_version": "1",
        "timestamp": format_time(time_ms),
        "prediction": prediction,
        "features": features,
        "segment": segment,
    }
    if score is not None:
        event["score"] = round(score, 6)
    predictions.append(event)
    labels.append(
        {
            "prediction_id": prediction_id,
            "model": model,
            "label": label,
            "timestamp": format_time(time_ms + label_delay_ms),
        }
    )
