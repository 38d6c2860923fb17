"""`estimated_error`: a classifier's expected error from its scores, monitored before any label."""

from __future__ import annotations

from typing import Any

import pytest

from stream_monitor.core.events import LABEL, PREDICTION
from stream_monitor.core.monitor import Monitor
from stream_monitor.scenarios import Scenario, covariate_shift
from tests.helpers import monitor, prediction, records


def merged(scenario: Scenario) -> list[Any]:
    """Predictions and labels in event-time order, predictions first on ties (as replay does)."""
    batch = records(PREDICTION, scenario.predictions, topic="predictions") + records(
        LABEL, scenario.labels, topic="labels"
    )
    batch.sort(key=lambda r: (r.value["timestamp"], r.kind != PREDICTION))
    return batch


def published(m: Monitor, scenario: Scenario) -> list[tuple[str, str, int]]:
    """(signal, topic, offset of the record that raised it) of each drift alert."""
    found = []
    for alert in m.process(merged(scenario)).alerts:
        data = alert.event["data"]
        where = data["source_position"]
        found.append((data["signal"], where["topic"], where["offset"]))
    return found


def test_the_scores_show_a_covariate_shift_long_before_the_labels() -> None:
    """Labels 2,000 predictions late: the estimated error alerts 61 predictions after the change,
    the error from labels once label 4,340 has arrived, with prediction 6,340 (2,279 later)."""
    scenario = covariate_shift(events=8000, label_delay=2000)
    m = monitor()
    assert published(m, scenario) == [
        ("score", "predictions", 4029),
        ("usage", "predictions", 4029),
        ("estimated_error", "predictions", 4061),
        ("error", "labels", 4340),
    ]
    estimated = m.keys["churn"].estimated
    assert estimated is not None and estimated.kind == "performance"


def test_the_estimated_alert_is_a_performance_alert_with_an_effect_and_likely_causes() -> None:
    scenario = covariate_shift(events=8000, label_delay=2000)
    alerts = [a.event["data"] for a in monitor().process(merged(scenario)).alerts]
    (estimated,) = [a for a in alerts if a["signal"] == "estimated_error"]
    assert estimated["signal_kind"] == "performance"
    assert estimated["effect"]["before"] == pytest.approx(0.084, abs=0.005)  # the error rate
    assert estimated["effect"]["after"] == pytest.approx(0.22755)  # on its first 38 values
    assert [cause["feature"] for cause in estimated["likely_causes"]] == ["usage"]


def test_concept_drift_with_unchanged_scores_is_seen_by_labels_only() -> None:
    scenario = covariate_shift(events=8000, label_delay=2000, concept=True)
    assert published(monitor(), scenario) == [("error", "labels", 4227)]


def test_only_classifiers_with_probability_scores_get_it() -> None:
    m = monitor()
    m.process(
        records(
            PREDICTION,
            [
                prediction(0, model="clf", prediction=True, score=0.9),
                prediction(1, model="clf", prediction="cat", score=0.2),
                prediction(2, model="logit", prediction=1, score=3.5),  # not a probability
                prediction(3, model="reg", prediction=2.5, score=0.4),  # a number: regression
                prediction(4, model="plain", prediction=True),
            ],
        )
    )
    expected = m.keys["clf"].estimated
    assert expected is not None and expected.tracks[0].seen == 2
    assert expected.tracks[0].total == pytest.approx(0.1 + 0.2)  # 1 - max(p, 1 - p)
    assert m.keys["logit"].estimated is None
    assert m.keys["reg"].estimated is None and m.keys["plain"].estimated is None


def test_it_can_be_switched_off_like_any_signal() -> None:
    m = monitor(models=[{"match": "*", "overrides": {"estimated_error": []}}])
    m.process(records(PREDICTION, [prediction(0, prediction=True, score=0.9)]))
    assert m.keys["m"].estimated is None and m.keys["m"].estimating
