"""Categorical and boolean features, type changes and bounded cardinality, through the Monitor."""

from __future__ import annotations

import random
import statistics
from typing import Any

import jsonschema
import pytest

from stream_monitor.config import load_config
from stream_monitor.core.alerts import ALERT_TYPE, RESOLVED_TYPE, describe
from stream_monitor.core.categories import (
    BLOCK,
    COUNT_VALUES,
    READY,
    SKETCH_VALUES,
    Categories,
    distance,
    misra_gries,
)
from stream_monitor.core.events import PREDICTION, Record
from stream_monitor.core.monitor import Monitor
from stream_monitor.core.state import StateCodec
from tests.helpers import ROOT, STATE_KEY, T0, alert_schema, config, monitor, through_changelog

COUNTRIES = ["fr", "de", "es", "it"]
MIX = [0.2, 0.3, 0.25, 0.25]
MIX_AFTER = [0.6, 0.15, 0.125, 0.125]
WARMUP = SKETCH_VALUES + COUNT_VALUES


def events(count: int, seed: int, features: Any, model: str = "m", start: int = 0) -> list[Record]:
    """Prediction records whose features are `features(rng, index)`."""
    rng = random.Random(seed)
    return [
        Record(
            PREDICTION,
            {
                "prediction_id": f"p{i}",
                "model": model,
                "prediction": 1,
                "timestamp": T0 + 100 * i,
                "features": features(rng, i),
            },
            None,
            "p",
            0,
            i,
        )
        for i in range(start, start + count)
    ]


def country(change_at: int | None = None, after: list[float] = MIX_AFTER) -> Any:
    def features(rng: random.Random, i: int) -> dict[str, Any]:
        mix = after if change_at is not None and i >= change_at else MIX
        return {"country": rng.choices(COUNTRIES, mix)[0]}

    return features


def alerts(m: Monitor, batch: list[Record]) -> list[dict[str, Any]]:
    return [a.event for a in m.process(batch).alerts if a.event["type"] == ALERT_TYPE]


def test_misra_gries_keeps_frequent_values_and_chooses_nothing() -> None:
    sketch: dict[str, int] = {}
    stream = ["a", "b", "a", "c", "d", "a", "e", "a", "f", "b"]
    evicted = [misra_gries(sketch, value, 3) for value in stream]
    # d, then the last b, find three counters taken: every counter goes down by one, and they
    # are not added
    assert evicted == [False, False, False, False, True, False, False, False, False, True]
    assert sketch == {"a": 2}  # "a" (4 of 10 > 10/4) is kept, counted low
    assert len(sketch) <= 3


def test_the_warm_up_chooses_the_categories_then_counts_them() -> None:
    categories = Categories(capacity=3, max_chars=8)
    rng = random.Random(5)
    values = [rng.choices(["x", "y", "z", "w"], [0.5, 0.3, 0.15, 0.05])[0] for _ in range(WARMUP)]
    values[7] = "far-too-long-for-a-category"
    ended = [categories.learn(value) for value in values]
    assert ended.index(True) == WARMUP - 1 and categories.phase == READY
    assert categories.names == ["x", "y", "z"]  # the three most frequent, most frequent first
    assert categories.truncated  # "w" was seen too: it is "other" now
    assert categories.reference == [207.0, 122.0, 49.0, 22.0]  # the last 400 values, counted
    assert categories.reference_n == COUNT_VALUES
    # each expects at least 5 values per block of 100 (other: 5.5), so each is a cell
    assert categories.cell_of == [0, 1, 2, 3] and categories.cells == 4
    rare = Categories(3, 8, (["x", "y"], [0.7, 0.28], 0.02, 1000))  # other: 2 per block
    assert rare.cell_of == [0, 1, 1] and rare.cells == 2  # pooled with the smallest cell


def test_the_distance_is_about_standard_normal_without_a_change() -> None:
    rng = random.Random(11)
    reference = [200.0, 300.0, 250.0, 250.0]
    found = []
    for _ in range(3000):
        block = [0.0] * 4
        for value in rng.choices(range(4), MIX, k=BLOCK):
            block[value] += 1
        found.append(distance(block, BLOCK, reference, 1000.0))
    assert statistics.fmean(found) == pytest.approx(0.0, abs=0.1)
    assert statistics.stdev(found) == pytest.approx(1.0, abs=0.1)


def test_a_country_mix_change_is_one_alert_that_says_which_categories_moved() -> None:
    """The issue's case: fr from 20% to 60% half-way through 40,000 events."""
    batch = events(40_000, 1, country(20_000))
    found = alerts(monitor(), batch)
    assert [(a["data"]["signal"], a["data"]["source_position"]["offset"]) for a in found] == [
        ("country", 20_199)
    ]
    data = found[0]["data"]
    effect = data["effect"]
    assert effect["statistic"] == "categories" and data["severity"] == "critical"
    assert effect["categories"][0] == {"category": "fr", "before": 0.2025, "after": 0.6}
    assert effect["window"] == 200 and effect["size"] == pytest.approx(2 * effect["distance"])
    assert data["observations"] == 20_200 - WARMUP  # the values of the blocks it compared
    assert "feature/country fr 0.20 → 0.60, " in describe(found[0])
    # river's raw ADWIN (configs/river.yaml) watches the same distance, more slowly
    river = Monitor(load_config(ROOT / "configs" / "river.yaml", environ={}).monitor_settings())
    assert [a["data"]["signal"] for a in alerts(river, batch)] == ["country"]


def test_a_mix_that_comes_back_is_resolved_and_both_events_follow_the_schema() -> None:
    batch = events(9000, 10, country(2000))
    back = events(3000, 10, country(), start=9000)  # the reference's mix again from 9,000
    found = [a.event for a in monitor().process(batch + back).alerts]
    assert [(e["type"], e["data"]["source_position"]["offset"]) for e in found] == [
        (ALERT_TYPE, 2199),
        (RESOLVED_TYPE, 9199),  # 200 values after the mix came back
    ]
    resolved = found[1]["data"]
    assert resolved["resolves"] == found[0]["id"] and resolved["level"]["statistic"] == "categories"
    assert resolved["open_for"] == resolved["observations"] - found[0]["data"]["observations"]
    assert " back at distance " in describe(found[1])
    schema = alert_schema()
    for event in found:
        jsonschema.validate(event, schema, format_checker=jsonschema.FormatChecker())


def test_stationary_categories_raise_nothing_whatever_their_number() -> None:
    zipf = [1.0 / (rank + 1) for rank in range(200)]

    def features(rng: random.Random, i: int) -> dict[str, Any]:
        return {
            "country": rng.choices(COUNTRIES, MIX)[0],
            "device": rng.choices(["ios", "android", "web", "tv", "car"], [4, 4, 2, 0.5, 0.1])[0],
            "shop": f"s{rng.choices(range(200), zipf)[0]}",
            "flag": rng.random() < 0.05,
        }

    m = monitor()
    assert alerts(m, events(150_000, 2, features)) == []
    state = m.keys["m"].features
    known = [len(state[name].categories.names) for name in ("country", "device", "shop")]  # type: ignore[union-attr]
    assert known == [4, 5, 26]  # shop: the values of its warm-up's first 100 seen again after


def test_a_new_value_is_alerted_on_the_unseen_rate_and_named() -> None:
    def features(rng: random.Random, i: int) -> dict[str, Any]:
        if i >= 5000 and rng.random() < 0.1:
            return {"device": "foldable"}
        return {"device": rng.choices(["ios", "android", "web"], [5, 4, 1])[0]}

    found = alerts(monitor(), events(8000, 3, features))
    unseen = [a["data"] for a in found if a["data"]["signal"] == "unseen_rate:device"]
    assert [(a["signal_kind"], a["source_position"]["offset"]) for a in unseen] == [
        ("data_quality", 5110)
    ]
    effect = unseen[0]["effect"]
    assert effect["statistic"] == "rate" and effect["new"][0]["category"] == "foldable"
    assert "new: foldable" in describe(next(a for a in found if a["data"] is unseen[0]))


def test_booleans_are_rates() -> None:
    def features(rng: random.Random, i: int) -> dict[str, Any]:
        return {"flag": rng.random() < (0.4 if i >= 5000 else 0.2)}

    found = alerts(monitor(), events(8000, 4, features))
    assert [(a["data"]["signal"], a["data"]["rule"]) for a in found] == [("flag", "rate")]
    effect = found[0]["data"]["effect"]
    assert effect["statistic"] == "rate" and effect["before"] == pytest.approx(0.2, abs=0.03)


def test_a_type_change_is_a_data_quality_signal_not_a_present_value() -> None:
    def features(rng: random.Random, i: int) -> dict[str, Any]:
        amount = rng.gauss(100.0, 20.0)
        kind = rng.choice(COUNTRIES)
        if i >= 4000:  # an upstream job starts sending both the other way round
            return {"amount": f"{amount:.2f}", "kind": 7}
        return {"amount": amount, "kind": kind}

    m = monitor()
    batch = events(6000, 5, features)
    assert alerts(m, batch[:4000]) == []
    assert m.keys["m"].features["amount"].wrong is None  # no such signal before the first one
    found = alerts(m, batch[4000:])
    assert sorted(a["data"]["signal"] for a in found) == [
        "wrong_type_rate:amount",
        "wrong_type_rate:kind",
    ]
    assert all(a["data"]["source_position"]["offset"] < 4020 for a in found)
    slot = m.keys["m"].features["amount"]
    assert slot.missing is not None and slot.missing.tracks[0].total == 0.0  # present, not missing
    assert slot.values is not None and slot.values.tracks[1].seen == 4000  # no string reached it


def test_cardinality_is_bounded_however_many_values_arrive() -> None:
    """The replay benchmark's 50,000-value feature, smaller: state and sketches stay bounded,
    and such a feature raises nothing."""

    def features(rng: random.Random, i: int) -> dict[str, Any]:
        return {"user": f"user-{rng.randrange(50_000)}", "country": rng.choices(COUNTRIES, MIX)[0]}

    m = monitor()
    assert alerts(m, events(30_000, 6, features)) == []
    slot = m.keys["m"].features["user"]
    categories = slot.categories
    assert categories is not None and categories.ready and not categories.sketch
    assert len(categories.names) <= 3  # the few warm-up values seen twice, by chance
    assert len(categories.unseen) <= 8 and len(categories.unseen_before) <= 8
    assert len(categories.ring) == 4 and all(
        len(b) == len(categories.names) + 1 for b in categories.ring
    )
    assert m.counters.overflow == {"categories": 1}  # its warm-up had more values than counters
    size = len(StateCodec(STATE_KEY).encode(b"k:m", m.snapshot().keys["m"], b""))
    assert size < 40_000


def test_max_categories_bounds_the_known_categories() -> None:
    def features(rng: random.Random, i: int) -> dict[str, Any]:
        return {"shop": f"s{rng.randrange(40)}"}

    m = monitor(limits={"max_categories": 10})
    alerts(m, events(3000, 7, features))
    categories = m.keys["m"].features["shop"].categories
    assert categories is not None and len(categories.names) == 10 and categories.truncated
    assert m.counters.overflow == {"categories": 1}


def test_long_values_are_never_stored() -> None:
    def features(rng: random.Random, i: int) -> dict[str, Any]:
        return {"note": "x" * 300 if i % 10 == 0 else rng.choice("abc")}

    m = monitor()
    alerts(m, events(2000, 8, features))
    categories = m.keys["m"].features["note"].categories
    assert categories is not None and categories.names == ["a", "b", "c"]
    assert not any(len(value) > 256 for value in categories.unseen)
    assert m.counters.overflow == {"category_values": 150}  # after the warm-up's 500


def test_models_and_keys_per_model_are_bounded() -> None:
    m = monitor(
        key_by={"segment": ["shop"]},
        limits={"max_models": 2, "max_keys_per_model": 3},
    )
    batch = [
        Record(
            PREDICTION,
            {
                "prediction_id": f"p{i}",
                "model": f"m{i % 3}",
                "prediction": 1,
                "segment": {"shop": f"s{i % 5}"},
            },
            None,
            "p",
            0,
            i,
        )
        for i in range(30)
    ]
    m.process(batch)
    assert sorted(m.keys) == [
        "m0|shop=s0",
        "m0|shop=s1",
        "m0|shop=s3",
        "m1|shop=s1",
        "m1|shop=s2",
        "m1|shop=s4",
    ]
    assert m.counters.overflow == {"keys_per_model": 8, "models": 10}
    assert through_changelog(m)._model_keys == {"m0": 3, "m1": 3}


@pytest.mark.parametrize("cut", [50, 99, 100, 101, 499, 500, 501, 2050, 2567, 3333])
def test_a_restore_at_any_cut_gives_the_same_alerts_and_state(cut: int) -> None:
    """Cuts in the warm-up's two phases, at their ends, inside a block and after the change."""

    def features(rng: random.Random, i: int) -> dict[str, Any]:
        drifted = i >= 2500
        value: dict[str, Any] = {
            "country": rng.choices(COUNTRIES, MIX_AFTER if drifted else MIX)[0]
        }
        value["device"] = "foldable" if drifted and rng.random() < 0.2 else rng.choice("abc")
        if i % 7 == 0:
            value["amount"] = "12.5" if drifted else 12.5
        return value

    settings = config().monitor_settings()
    batch = events(4000, 9, features)
    whole = Monitor(settings)
    expected = [a.id for a in whole.process(batch).alerts]
    assert len(expected) >= 3
    first = Monitor(settings)
    ids = [a.id for a in first.process(batch[:cut]).alerts]
    second = through_changelog(first)
    ids += [a.id for a in second.process(batch[cut:]).alerts]
    assert ids == expected
    assert second.snapshot() == whole.snapshot()
