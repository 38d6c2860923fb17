"""Which values each event feeds: signals per monitor key, tasks, data quality, dead letters."""

from __future__ import annotations

from typing import Any

from stream_monitor.core.events import LABEL, PREDICTION, Record
from stream_monitor.core.monitor import Monitor
from tests.helpers import monitor, prediction, records


def observed(m: Monitor) -> dict[str, dict[str, int]]:
    """monitor key -> 'kind/name' -> values seen by its first detector."""
    return {
        key: {f"{s.kind}/{s.name}": s.tracks[0].seen for s in state.signals()}
        for key, state in m.keys.items()
    }


def test_prediction_feeds_every_default_signal() -> None:
    m = monitor()
    m.process(
        records(
            PREDICTION,
            [
                prediction(0, score=0.9, features={"a": 1.5, "b": "cat", "c": None, "d": True}),
                prediction(1, score=0.8, features={"a": 2, "b": "dog", "d": False}),
            ],
        )
    )
    assert observed(m) == {
        "m": {
            "performance/estimated_error": 2,  # from the scores, long before any label
            "data_quality/invalid_rate": 2,
            "prediction/score": 2,
            "feature/a": 2,
            "data_quality/missing_rate:a": 2,
            "feature/b": 0,  # a categorical feature: its distance, once per block of values
            "data_quality/missing_rate:b": 2,
            "data_quality/missing_rate:c": 2,
            "feature/d": 2,  # a boolean: a 0/1 rate
            "data_quality/missing_rate:d": 2,
        }
    }
    c = m.keys["m"].features["c"].missing.tracks[0]  # type: ignore[union-attr]
    assert (c.n, c.total) == (2, 2.0)  # null, then absent: both missing


def test_prediction_signal_falls_back_from_score_to_value_to_class_rate() -> None:
    m = monitor(
        signals={"prediction": ["adwin"], "feature": [], "performance": [], "data_quality": []}
    )
    m.process(
        records(
            PREDICTION,
            [
                prediction(0, model="num", prediction=3.5),
                prediction(1, model="cls", prediction="cat"),
                prediction(2, model="cls", prediction="dog"),
                prediction(3, model="cls", prediction="cat"),
                prediction(4, model="flag", prediction=False),
            ],
        )
    )
    assert observed(m) == {
        "num": {"prediction/prediction": 1},
        "cls": {"prediction/positive_rate": 3},
        "flag": {"prediction/positive_rate": 1},
    }
    rate = m.keys["cls"].predictions["positive_rate"].tracks[0]  # type: ignore[union-attr]
    assert rate.total == 2.0  # the first class seen ("cat") is the positive one
    assert m.keys["flag"].predictions["positive_rate"].tracks[0].total == 0.0  # type: ignore[union-attr]


def test_non_finite_feature_counts_as_missing() -> None:
    m = monitor()
    m.process(
        records(
            PREDICTION,
            [
                prediction(0, features={"a": float("inf")}),
                prediction(1, features={"a": 1.0}),
                prediction(2, features={"a": -1e300}),  # its square would overflow the statistics
            ],
        )
    )
    missing = m.keys["m"].features["a"].missing.tracks[0]  # type: ignore[union-attr]
    assert (missing.n, missing.total) == (3, 2.0)
    assert m.keys["m"].features["a"].values.tracks[0].seen == 1  # type: ignore[union-attr]


def label(i: int, value: Any, model: str = "m", **fields: Any) -> dict[str, Any]:
    return {"prediction_id": f"p{i}", "model": model, "label": value, **fields}


def performance(m: Monitor, key: str = "m") -> tuple[str, int, float]:
    signal = m.keys[key].performance
    assert signal is not None
    return signal.name, signal.tracks[0].seen, signal.tracks[0].total


def test_classification_error_through_the_join() -> None:
    m = monitor()
    batch = records(PREDICTION, [prediction(0, prediction="a"), prediction(1, prediction="b")])
    batch += records(LABEL, [label(0, "a"), label(1, "a"), label(9, "a")])
    m.process(batch)
    assert performance(m) == ("error", 2, 1.0)
    assert m.join.counters.matched == 2 and len(m.join.labels) == 1


def test_auto_task_integers_are_classes_floats_are_regression() -> None:
    m = monitor()
    m.process(
        records(
            PREDICTION,
            [prediction(0, model="c", prediction=1), prediction(0, model="r", prediction=2.5)],
        )
        + records(LABEL, [label(0, 0, model="c"), label(0, 4.0, model="r")])
    )
    assert performance(m, "c") == ("error", 1, 1.0)
    assert performance(m, "r") == ("absolute_error", 1, 1.5)


def test_declared_regression_rejects_a_class_label() -> None:
    m = monitor(models=[{"match": "*", "task": "regression"}])
    out = m.process(
        records(PREDICTION, [prediction(0, prediction=1)]) + records(LABEL, [label(0, "yes")])
    )
    assert [d.error.reason for d in out.dead_letters] == ["wrong_type"]
    assert "must be a number for regression model 'm'" in out.dead_letters[0].error.message


def test_label_carrying_its_prediction_needs_no_join() -> None:
    m = monitor()
    m.process(records(LABEL, [label(0, 1, prediction=0)]))
    assert performance(m) == ("error", 1, 1.0)
    assert not m.join.labels


def test_invalid_events_become_dead_letters_and_feed_invalid_rate() -> None:
    m = monitor()
    out = m.process(
        records(
            PREDICTION,
            [
                prediction(0),
                {"model": "m", "prediction": 1},
                b"{broken",
                prediction(1, score="high"),
            ],
        )
    )
    assert [(d.record[5], d.error.reason, d.error.field) for d in out.dead_letters] == [
        (1, "missing_field", "prediction_id"),
        (2, "malformed_json", None),
        (3, "wrong_type", "score"),
    ]
    invalid = m.keys["m"].invalid.tracks[0]  # type: ignore[union-attr]
    assert (invalid.seen, invalid.total) == (3, 2.0)  # the broken bytes name no model
    assert m.counters.invalid == {"missing_field": 1, "malformed_json": 1, "wrong_type": 1}
    assert m.counters.events == {"prediction": 4, "label": 0}


def test_unknown_kind_is_a_dead_letter() -> None:
    out = monitor().process([Record("mystery", b"{}", None, "x", 0, 0)])
    assert out.dead_letters[0].error.reason == "unknown_kind"


def test_models_without_a_matching_rule_are_ignored() -> None:
    m = monitor(models=[{"match": "credit-*"}])
    m.process(records(PREDICTION, [prediction(0, model="credit-eu"), prediction(1, model="fraud")]))
    assert list(m.keys) == ["credit-eu"]
    assert m.counters.unmonitored == 1


def test_key_by_version_and_segment() -> None:
    m = monitor(key_by={"model_version": True, "segment": ["region"]})
    m.process(
        records(
            PREDICTION,
            [
                prediction(0, model_version="1", segment={"region": "eu", "tier": "x"}),
                prediction(1, model_version="2", segment={"region": "eu"}),
                prediction(2, model_version="1", segment={"region": "us"}),
                prediction(3),
            ],
        )
    )
    assert sorted(m.keys) == ["m@1|region=eu", "m@1|region=us", "m@2|region=eu", "m@|region="]
    assert m.keys["m@1|region=eu"].segment == {"region": "eu"}


def test_overrides_and_feature_selection() -> None:
    m = monitor(
        detectors={"adwin": {"type": "adwin"}, "ph": {"type": "page_hinkley"}},
        models=[
            {
                "match": "*",
                "features": {"exclude": ["id"]},
                "overrides": {"a": ["ph", "adwin"], "missing_rate:a": []},
            }
        ],
    )
    m.process(records(PREDICTION, [prediction(0, features={"a": 1.0, "id": 7})]))
    slots = m.keys["m"].features
    assert [t.rule.name for t in slots["a"].values.tracks] == ["ph", "adwin"]  # type: ignore[union-attr]
    assert slots["a"].missing is None
    assert slots["id"].values is None and slots["id"].missing is not None


def test_feature_and_key_bounds_stop_growth_and_count_the_overflow() -> None:
    m = monitor(limits={"max_keys": 2, "max_features": 3, "max_feature_name": 10})
    features = {f"f{i}": float(i) for i in range(5)} | {"x" * 11: 1.0}
    m.process(
        records(
            PREDICTION,
            [prediction(i, model=f"m{i % 3}", features=features) for i in range(30)],
        )
    )
    assert sorted(m.keys) == ["m0", "m1"]  # m2 would be a third key
    assert all(sorted(state.features) == ["f0", "f1", "f2"] for state in m.keys.values())
    assert m.counters.overflow == {"keys": 10, "features": 40, "feature_names": 20}
    assert m.counters.events == {"prediction": 30, "label": 0}


def test_random_feature_names_cost_no_more_than_the_bound() -> None:
    """Random names used to grow one key's features without end (4,002 of them, 3.4 ms/event)."""
    m = monitor()
    m.process(
        records(
            PREDICTION,
            [
                prediction(i, features={f"random-{i}-{j}": 1.0 for j in range(4)})
                for i in range(400)
            ],
        )
    )
    assert len(m.keys["m"].features) == 500
    assert m.counters.overflow == {"features": 1100}
