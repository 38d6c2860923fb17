"""Golden detection indices on river's docstring stream, through the whole Monitor."""

from __future__ import annotations

import random

import pytest
from river.drift import ADWIN

from stream_monitor.core.detectors import DetectorRule
from stream_monitor.core.events import PREDICTION
from stream_monitor.core.signals import DRIFT, Track
from stream_monitor.errors import ConfigError
from tests.helpers import golden_stream, monitor, prediction, records


@pytest.mark.parametrize(("detector", "index"), [("adwin", 1023), ("page_hinkley", 1006)])
def test_golden_index_as_a_feature_signal(detector: str, index: int) -> None:
    m = monitor(
        detectors={"d": {"type": detector}},
        signals={"feature": ["d"], "prediction": [], "performance": [], "data_quality": []},
    )
    events = [prediction(i, features={"x": v}) for i, v in enumerate(golden_stream())]
    alerts = m.process(records(PREDICTION, events)).alerts
    first = alerts[0].event["data"]
    assert first["source_position"] == {"topic": "t", "partition": 0, "offset": index}
    assert first["observations"] == index + 1
    assert (first["signal_kind"], first["signal"], first["detector"]) == ("feature", "x", detector)


@pytest.mark.parametrize(("detector", "index"), [("adwin", 1023), ("page_hinkley", 1006)])
def test_golden_index_as_a_prediction_signal(detector: str, index: int) -> None:
    m = monitor(
        detectors={"d": {"type": detector}},
        signals={"feature": [], "prediction": ["d"], "performance": [], "data_quality": []},
    )
    events = [prediction(i, prediction=v) for i, v in enumerate(golden_stream())]
    alerts = m.process(records(PREDICTION, events)).alerts
    assert alerts[0].event["data"]["source_position"]["offset"] == index
    assert alerts[0].event["data"]["signal"] == "prediction"


def test_rules_get_rivers_defaults_and_reject_unknown_params() -> None:
    rule = DetectorRule("a", "adwin")
    assert rule.params == {
        "delta": 0.002,
        "clock": 32,
        "max_buckets": 5,
        "min_window_length": 5,
        "grace_period": 10,
    }
    ph = DetectorRule("p", "page_hinkley", {"threshold": 10})
    assert ph.params["threshold"] == 10 and ph.params["min_instances"] == 30
    with pytest.raises(
        ConfigError, match=r"detectors\.a\.params\.deltaa: not a parameter of adwin"
    ):
        DetectorRule("a", "adwin", {"deltaa": 1})
    with pytest.raises(ConfigError, match=r"detectors\.p\.params: Invalid 'mode'"):
        DetectorRule("p", "page_hinkley", {"mode": "sideways"})


def test_each_key_gets_its_own_detector() -> None:
    m = monitor(
        signals={"feature": ["adwin"], "prediction": [], "performance": [], "data_quality": []}
    )
    stream = golden_stream()
    events = []
    for i, v in enumerate(stream):
        events.append(prediction(i, model="a", features={"x": v}))
        events.append(prediction(i, model="b", features={"x": 0}))
    alerts = m.process(records(PREDICTION, events)).alerts
    assert {a.key for a in alerts} == {"a"}
    assert alerts[0].event["data"]["observations"] == 1024


def test_an_adwin_track_detects_where_rivers_own_update_does() -> None:
    """An ADWIN track updates river's Rust window itself (`Track._feed`): the same detections,
    the reset after each one included, and the same window bytes as river's `ADWIN.update`."""
    rng = random.Random(3)
    values = [rng.gauss(float(i // 700 % 3), 1.0) for i in range(5000)]
    rule = DetectorRule("a", "adwin")
    track = Track(rule)
    river = ADWIN()
    ours, theirs = [], []
    for i, x in enumerate(values):
        if track.update(x) & DRIFT:
            ours.append(i)
        river.update(x)
        if river.drift_detected:
            theirs.append(i)
    assert len(theirs) >= 5
    assert ours == theirs
    assert rule.dump(track.detector) == rule.dump(river)
