"""Alert contract: CloudEvents fields, schema, deterministic ids, cooldown, causes, severity."""

from __future__ import annotations

import random

import jsonschema
import pytest

from stream_monitor.core.alerts import alert_id, severity
from stream_monitor.core.events import LABEL, PREDICTION, Record
from stream_monitor.core.monitor import Monitor
from stream_monitor.scenarios import generate
from tests.helpers import alert_schema, config, golden_stream, monitor, prediction, records

ONLY_FEATURES = {"feature": ["adwin"], "prediction": [], "performance": [], "data_quality": []}


def golden_alert_event() -> dict:
    m = monitor(signals=ONLY_FEATURES)
    events = [
        prediction(
            i, model="credit", model_version="7", timestamp=1_767_225_600_000 + i, features={"x": v}
        )
        for i, v in enumerate(golden_stream())
    ]
    return m.process(records(PREDICTION, events, topic="predictions", partition=2)).alerts[0].event


def test_alert_has_the_exact_cloudevents_contract() -> None:
    event = golden_alert_event()
    assert event == {
        "specversion": "1.0",
        "id": alert_id("credit", "feature", "x", "adwin", 1024),
        "source": "stream-monitor/stream-monitor",
        "type": "stream_monitor.drift_detected",
        "subject": "credit/x",
        "datacontenttype": "application/json",
        "time": "2026-01-01T00:00:01.023Z",
        "data": {
            "model": "credit",
            "model_version": None,
            "segment": {},
            "monitor_key": "credit",
            "signal_kind": "feature",
            "signal": "x",
            "detector": "adwin",
            "rule": "adwin",
            "detector_params": {
                "delta": 0.002,
                "clock": 32,
                "max_buckets": 5,
                "min_window_length": 5,
                "grace_period": 10,
            },
            "event_time": "2026-01-01T00:00:01.023Z",
            "observations": 1024,
            "stats": event["data"]["stats"],
            "effect": event["data"]["effect"],
            "severity": "critical",
            "likely_causes": [],
            "source_position": {"topic": "predictions", "partition": 2, "offset": 1023},
        },
    }
    stats = event["data"]["stats"]
    # The change point is estimated on the values the detector saw since its reset, on blocks of
    # 8: exactly at index 1000 here, so before and after are the two regimes' own means (ADWIN's
    # cut kept 8 values of 0/1 beside the 24 of 4..7: 992 / 32, after 4.5).
    assert (stats["window_before"], stats["window_after"]) == (1000, 24)
    assert stats["mean_before"] == pytest.approx(0.497)
    assert stats["mean_after"] == pytest.approx(5.708333)
    # The pooled sd of the two segments (0/1 and 4..7), not inflated by the shift itself.
    assert stats["std"] == pytest.approx(0.52431)
    assert event["data"]["effect"] == {
        "statistic": "mean",
        "size": 9.939403,
        "shift": 9.939403,
        "before": 0.497,
        "after": 5.708333,
        "sd": 0.52431,
        "window": 24,
    }


def test_alerts_validate_against_the_schema() -> None:
    schema = alert_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    scenario = generate("default", events=4000, seed=3)
    m = Monitor(config().monitor_settings())
    batch = records(PREDICTION, scenario.predictions) + records(
        LABEL, scenario.labels, topic="labels"
    )
    batch.sort(key=lambda r: (r[1]["timestamp"], r[0] != PREDICTION))
    alerts = m.process(batch).alerts
    assert alerts
    for alert in alerts:
        jsonschema.validate(alert.event, schema, format_checker=jsonschema.FormatChecker())
    jsonschema.validate(golden_alert_event(), schema)


def test_ids_are_deterministic_across_runs_and_differ_per_detection() -> None:
    assert golden_alert_event()["id"] == golden_alert_event()["id"]
    ids = {
        alert_id("credit", "feature", "x", "adwin", 1024),
        alert_id("credit", "feature", "x", "adwin", 1025),
        alert_id("credit", "feature", "y", "adwin", 1024),
        alert_id("fraud", "feature", "x", "adwin", 1024),
    }
    assert len(ids) == 4


def shifting_stream(seed: int = 1) -> list[float]:
    """Three level shifts, 600 values apart: ADWIN detects each within a few dozen values."""
    rng = random.Random(seed)
    return [rng.gauss(level, 1.0) for level in (0, 5, 10, 15) for _ in range(600)]


@pytest.mark.parametrize(("cooldown", "expected"), [(0, 3), (700, 2), (100_000, 1)])
def test_cooldown_turns_one_change_into_one_alert(cooldown: int, expected: int) -> None:
    m = monitor(signals=ONLY_FEATURES, alerts={"cooldown": cooldown})
    events = [prediction(i, features={"x": v}) for i, v in enumerate(shifting_stream())]
    alerts = m.process(records(PREDICTION, events)).alerts
    assert len(alerts) == expected
    assert m.counters.in_cooldown == 3 - expected


def test_performance_alert_names_the_feature_that_moved() -> None:
    rng = random.Random(5)
    m = monitor(
        signals={
            "performance": ["adwin"],
            "prediction": [],
            "feature": ["adwin"],
            "data_quality": [],
        }
    )
    batch = []
    for i in range(4000):
        late = i >= 2000
        features = {"income": rng.gauss(60 if late else 50, 10), "age": rng.gauss(40, 12)}
        correct = rng.random() > (0.4 if late else 0.1)
        batch.append(
            Record(PREDICTION, prediction(i, prediction=1, features=features), None, "p", 0, i)
        )
        batch.append(
            Record(
                LABEL,
                {"prediction_id": f"p{i}", "model": "m", "label": 1 if correct else 0},
                None,
                "l",
                0,
                i,
            )
        )
    alerts = [a.event["data"] for a in m.process(batch).alerts]
    performance = [a for a in alerts if a["signal_kind"] == "performance"]
    assert performance and performance[0]["signal"] == "error"
    causes = performance[0]["likely_causes"]
    assert [c["feature"] for c in causes] == ["income"]
    assert causes[0]["shift"] > 0.5
    assert performance[0]["severity"] == "critical"  # the error rate at least doubled


def test_severity_rules() -> None:
    base = {"mean_before": 0.1, "mean_after": 0.12, "mean_recent": 0.3, "std": 0.3}
    assert severity(base, "performance") == "critical"  # error tripled (recent)
    assert severity({**base, "mean_after": 0.05, "mean_recent": 0.05}, "performance") == "info"
    assert (
        severity({"mean_before": 0.0, "mean_after": 0.2, "mean_recent": 0.2, "std": 1.0}, "feature")
        == "info"
    )
    assert (
        severity({"mean_before": 0.0, "mean_after": 0.7, "mean_recent": 0.2, "std": 1.0}, "feature")
        == "warning"
    )
    assert (
        severity(
            {"mean_before": 0.0, "mean_after": 1.2, "mean_recent": None, "std": 1.0}, "feature"
        )
        == "critical"
    )
