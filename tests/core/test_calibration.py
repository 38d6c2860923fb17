"""Calibrated detection: the false-alarm budget holds and shifts are found, at every scale."""

from __future__ import annotations

import json
import math
import random
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stream_monitor.config import load_config
from stream_monitor.core.alerts import ALERT_TYPE, RESOLVED_TYPE
from stream_monitor.core.calibration import (
    READY,
    binary_threshold,
    page_hinkley_threshold,
    siegmund_arl,
)
from stream_monitor.core.events import PREDICTION
from stream_monitor.core.monitor import Monitor
from stream_monitor.core.signals import IDLE_RING
from stream_monitor.errors import ConfigError
from tests.helpers import ROOT, config, monitor, prediction, records, through_changelog

SCALES = [(0.0, 1.0), (1000.0, 0.001), (-5.0, 1000.0)]


def calibrated(detector: str = "page_hinkley", **calibrate: Any) -> Monitor:
    return monitor(
        detectors={"c": {"type": detector, "calibrate": calibrate}},
        signals={"feature": ["c"], "prediction": [], "performance": [], "data_quality": []},
    )


def alert_indices(m: Monitor, values: list[float]) -> list[int]:
    """Indices of the values that raised a drift alert (drift_resolved events left out)."""
    events = [prediction(i, features={"x": v}) for i, v in enumerate(values)]
    return [
        a.event["data"]["observations"] - 1
        for a in m.process(records(PREDICTION, events)).alerts
        if a.event["type"] == ALERT_TYPE
    ]


def gaussian(seed: int, n: int, mean: float, sd: float, shift_at: int | None = None) -> list[float]:
    rng = random.Random(seed)
    return [
        rng.gauss(mean, sd) + (sd if shift_at is not None and i >= shift_at else 0.0)
        for i in range(n)
    ]


def test_threshold_meets_the_two_sided_safety_adjusted_budget() -> None:
    threshold = page_hinkley_threshold(1e6, 1.0)
    assert threshold == pytest.approx(14.0358, abs=1e-3)
    assert siegmund_arl(threshold, 1.0) == pytest.approx(8e6, rel=1e-6)
    rule = calibrated().settings.rules["c"]
    assert rule.params["delta"] == 0.5 and rule.params["alpha"] == 1.0
    assert rule.params["threshold"] == threshold
    assert calibrated("adwin", family_size=4).settings.rules["c"].params["delta"] == 0.002 / 4


@pytest.mark.parametrize(
    ("detector", "mean", "sd"),
    [*(("page_hinkley", mean, sd) for mean, sd in SCALES), ("adwin", 1000.0, 0.001)],
)
def test_no_false_alarm_in_1e5_stationary_events(detector: str, mean: float, sd: float) -> None:
    assert alert_indices(calibrated(detector), gaussian(1, 100_000, mean, sd)) == []


def test_family_budget_over_ten_signals_of_one_key() -> None:
    """Ten features of one key at ten scales: the key as a whole stays within 1 per 1e5 events."""
    m = calibrated()
    rng = random.Random(5)
    events = [
        prediction(i, features={f"f{j}": rng.gauss(j * 100.0, 10.0**-j) for j in range(10)})
        for i in range(30_000)
    ]
    assert m.process(records(PREDICTION, events)).alerts == []


@pytest.mark.parametrize(("mean", "sd"), SCALES)
def test_one_sigma_shift_found_within_a_median_of_100_events(mean: float, sd: float) -> None:
    delays = []
    for seed in range(15):
        found = [i for i in alert_indices(calibrated(), gaussian(seed, 3000, mean, sd, 2000))]
        assert found and found[0] >= 2000  # nothing before the shift
        delays.append(found[0] - 2000)
    assert statistics.median(delays) <= 100


def test_the_same_alerts_whatever_the_units() -> None:
    values = gaussian(7, 4000, 0.0, 1.0, shift_at=2500)
    expected = alert_indices(calibrated(), values)
    assert expected == [2538]
    for mean, sd in SCALES[1:]:
        assert alert_indices(calibrated(), [mean + sd * v for v in values]) == expected


def test_silent_during_warmup_then_detects() -> None:
    """The detector starts after the warm-up, primed with it: the step is caught on its second
    value (river's Page-Hinkley sets its minimum on the first update, so cannot fire on it)."""
    values = [0.0, 1.0] * 250 + [50.0] * 100
    assert alert_indices(calibrated(warmup=600), values) == []
    assert alert_indices(calibrated(warmup=500), values) == [501]


def test_binary_signal_without_events_in_warmup_still_gets_a_scale() -> None:
    """A 0/1 series warms up until it saw 10 of each value, or 10 × warmup values: a rate that
    stays 0 (an invalid rate) is monitored from 2,000 values on, at (0 + 0.5) / 2001."""
    values = [0.0] * 2000 + [1.0] * 40
    # one event is ~63 sd, the threshold for so rare an event ~66: the fourth one fires (river's
    # Page-Hinkley sets its minimum on the first update after a start).
    m = calibrated()
    assert alert_indices(m, values) == [2003]
    threshold = m.keys["m"].features["x"].values.tracks[0].detector.threshold  # type: ignore[union-attr]
    assert threshold == pytest.approx(binary_threshold(1e6, 1.0, 0.5 / 2001), abs=1e-6)
    # With ten events the warm-up ends at once, at their rate.
    m = calibrated()
    early = [1.0 if i % 50 == 0 else 0.0 for i in range(1000)]
    assert alert_indices(m, early) == []
    scaler = m.keys["m"].features["x"].values.tracks[0].scaler  # type: ignore[union-attr]
    assert scaler is not None and scaler.n == 451 and scaler.centre == pytest.approx(10.5 / 452)


@pytest.mark.parametrize("rate", [0.3, 0.05])
def test_binary_series_keep_the_budget_and_find_a_one_sigma_step(rate: float) -> None:
    rng = random.Random(2)
    stationary = [1.0 if rng.random() < rate else 0.0 for _ in range(50_000)]
    assert alert_indices(calibrated(), stationary) == []
    step = rate + math.sqrt(rate * (1 - rate))
    delays = []
    for seed in range(9):
        rng = random.Random(seed)
        values = [1.0 if rng.random() < (step if i >= 2000 else rate) else 0.0 for i in range(3000)]
        found = alert_indices(calibrated(), values)
        assert found and found[0] >= 2000
        delays.append(found[0] - 2000)
    assert statistics.median(delays) <= 100


def reference_file(path: Path, mean: float, sd: float, model: str = "m") -> str:
    signals = {"feature/x": {"n": 10_000, "mean": mean, "sd": sd, "binary": False}}
    models = {model: {"features": {"x": "numeric"}, "signals": signals}}
    path.write_text(json.dumps({"format": "stream-monitor/reference/1", "models": models}))
    return str(path)


def test_reference_file_replaces_the_warmup(tmp_path: Path) -> None:
    values = gaussian(3, 400, 10.0, 2.0, shift_at=200)
    assert alert_indices(calibrated(warmup=1000), values) == []
    reference = reference_file(tmp_path / "reference.json", 10.0, 2.0)
    with_reference = monitor(
        reference=reference,
        detectors={"c": {"type": "page_hinkley", "calibrate": {"warmup": 1000}}},
        signals={"feature": ["c"], "prediction": [], "performance": [], "data_quality": []},
    )
    found = alert_indices(with_reference, values)
    assert found and 200 <= found[0] < 300
    # A rule's own reference wins over the top-level one for the models it has.
    wrong = reference_file(tmp_path / "wrong.json", 0.0, 1.0)
    both = monitor(
        reference=wrong,
        detectors={"c": {"type": "page_hinkley", "calibrate": {"warmup": 1000}}},
        signals={"feature": ["c"], "prediction": [], "performance": [], "data_quality": []},
        models=[{"match": "m", "reference": reference}],
    )
    assert alert_indices(both, values) == found


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"detectors\.c\.params\.threshold: set by calibrate"):
        config(
            detectors={"c": {"type": "page_hinkley", "params": {"threshold": 3}, "calibrate": {}}}
        )
    # a per-rule reference of 0.2 (one signal's mean and sd) is now a per-model file
    with pytest.raises(ConfigError, match=r"detectors\.c\.calibrate: reference: references are"):
        config(detectors={"c": {"type": "adwin", "calibrate": {"reference": "r.json"}}})
    with pytest.raises(ConfigError, match=r"^reference: cannot read /nonexistent"):
        config(reference="/nonexistent")
    old = tmp_path / "old.json"
    old.write_text('{"signals": {"x": {"mean": 1, "sd": 1}}}')
    with pytest.raises(ConfigError, match="per-signal format of an earlier version"):
        config(reference=str(old))


@pytest.mark.parametrize("cut", [300, 1500, 2600])
def test_restore_mid_warmup_or_after_gives_identical_alerts(cut: int) -> None:
    events = [
        prediction(i, features={"x": v}) for i, v in enumerate(gaussian(9, 4000, 3.0, 0.2, 2500))
    ]
    batch = records(PREDICTION, events)
    uninterrupted = [a.id for a in calibrated(warmup=1000).process(batch).alerts]
    assert uninterrupted
    first = calibrated(warmup=1000)
    before = [a.id for a in first.process(batch[:cut]).alerts]
    second = through_changelog(first)
    after = [a.id for a in second.process(batch[cut:]).alerts]
    assert before + after == uninterrupted


def test_example_config_and_the_built_in_defaults_calibrate_every_signal() -> None:
    shipped = load_config(ROOT / "configs" / "example.yaml", environ={})
    for cfg in (shipped, config()):
        rules = cfg.detector_rules()
        for kind in ("performance", "prediction", "feature", "data_quality"):
            names = getattr(cfg.signals, kind)
            assert names and all(rules[name].calibration is not None for name in names)
    assert shipped.monitor_settings().signals == config().monitor_settings().signals


def test_frequent_binary_events_mirror_rare_ones() -> None:
    assert binary_threshold(1e6, 1.0, 0.9) == binary_threshold(1e6, 1.0, 0.1)
    rng = random.Random(4)
    assert alert_indices(calibrated(), [float(rng.random() < 0.95) for _ in range(20_000)]) == []


def test_a_lasting_change_is_reported_once_then_becomes_the_baseline() -> None:
    """After a detection the series warms up again, so a tripled sd does not alert for ever.

    Page-Hinkley on the mean sees the tripled sd as a mean shift on 8 values of -2.9 sd; the
    signal's mean has not moved, so that alert resolves once the new regime's spread is measured
    (64 values) and the evidence is in. A spread rule is the right tool for this change (below).
    """
    rng = random.Random(6)
    values = [rng.gauss(0.0, 1.0) for _ in range(3000)] + [
        rng.gauss(0.0, 3.0) for _ in range(20_000)
    ]
    m = calibrated()
    events = [prediction(i, features={"x": v}) for i, v in enumerate(values)]
    out = [
        (a.event["type"], a.event["data"]["observations"] - 1)
        for a in m.process(records(PREDICTION, events)).alerts
    ]
    assert out == [(ALERT_TYPE, 3023), (RESOLVED_TYPE, 3087)]
    assert alert_indices(calibrated("adwin", statistic="spread"), values) == [3101]


# --- the built-in defaults: rate, mean and spread rules per series (configs/example.yaml) ---
def default_indices(values: np.ndarray) -> list[tuple[str, int]]:
    """(rule, index) of each drift alert of the default rules on one feature."""
    from tests.core.test_effects import detected, features_only, feed

    return [(a["rule"], a["observations"] - 1) for a in detected(feed(features_only(), values))]  # type: ignore[operator]


@pytest.mark.parametrize(
    ("before", "after", "change", "expected"),
    [(0.5, 0.75, 20_000, 20_102), (0.1, 0.2, 20_000, 20_238), (0.01, 0.02, 30_000, 33_348)],
)
def test_the_rate_rule_finds_bernoulli_steps(
    before: float, after: float, change: int, expected: int
) -> None:
    """Calibrated Page-Hinkley with `shift: 1` missed 10 of 12 steps of 0.1 -> 0.2 (a third of
    an sd); the rate rule is tuned for a change of half the rarer outcome's rate."""
    rng = np.random.default_rng({0.5: 1, 0.1: 2, 0.01: 3}[before])
    values = np.concatenate([rng.random(change) < before, rng.random(30_000) < after])
    assert default_indices(values.astype(float)) == [("rate", expected)]


def test_the_spread_rule_finds_a_variance_change_the_mean_rule_does_not() -> None:
    rng = np.random.default_rng(4)
    values = np.concatenate([rng.normal(0.0, 1.0, 5000), rng.normal(0.0, 2.0, 5000)])
    assert default_indices(values) == [("spread", 5149)]


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e6])
def test_the_defaults_raise_nothing_on_1e5_stationary_values_at_any_scale(scale: float) -> None:
    rng = np.random.default_rng(5)
    assert default_indices(1000 * scale + scale * rng.normal(0.0, 1.0, 100_000)) == []
    assert default_indices(scale * rng.lognormal(0.0, 1.0, 100_000)) == []  # heavy-tailed


def test_clipping_keeps_a_heavy_tail_from_making_changes_of_its_own() -> None:
    """On 1e5 lognormal values Page-Hinkley calibrated as in 0.2 (no clip) fired 20 times; with
    standardised values clipped to ±4 sd, 3 times. The default mean rule (ADWIN, whose test
    adapts to its window's variance) on clipped values: never (above)."""
    rng = np.random.default_rng(5)
    rng.normal(size=100_000)
    values = rng.lognormal(0.0, 1.0, 100_000).tolist()
    assert len(alert_indices(calibrated(warmup=1000, clip=None), values)) == 20
    assert len(alert_indices(calibrated(warmup=1000), values)) == 3


def _rate_tracks(m: Monitor, feature: str) -> list[Any]:
    return [
        track
        for state in m.keys.values()
        for track in state.features[feature].values.tracks  # type: ignore[union-attr]
        if track.rule.name == "rate"
    ]


def _untouched(rule: Any) -> bool:
    fresh = rule.create()
    return (
        rule.dump(rule.idle) == rule.dump(fresh)
        and (rule.idle.delta, rule.idle.threshold) == (fresh.delta, fresh.threshold)
        and not any(IDLE_RING)
    )


def test_dormant_tracks_share_their_rules_idle_detector_and_read_back_the_same() -> None:
    """A continuous feature's 0/1 rate rule goes dormant after its warm-up: it keeps no
    detector or ring of its own, the shared ones stay untouched, and its state reads back."""
    m = Monitor(config().monitor_settings())
    rng = random.Random(4)
    events = [
        prediction(i, model=f"m{i % 2}", features={"x": rng.gauss(3.0, 1.0)}) for i in range(1200)
    ]
    m.process(records(PREDICTION, events))
    dormant = _rate_tracks(m, "x")
    assert len(dormant) == 2 and all(track.dormant for track in dormant)
    rule = dormant[0].rule
    assert all(track.detector is rule.idle and track.ring is IDLE_RING for track in dormant)
    restored = Monitor(config().monitor_settings())  # other rule objects, another idle detector
    restored.restore(m.snapshot())
    assert restored.snapshot() == m.snapshot()
    more = [prediction(i, model="m0", features={"x": 9.0}) for i in range(1200, 1400)]
    alerts = [a.id for a in m.process(records(PREDICTION, more)).alerts]
    assert alerts and [a.id for a in restored.process(records(PREDICTION, more)).alerts] == alerts
    assert _untouched(rule)


def test_a_dormant_track_that_watches_again_gets_its_own_detector_and_ring() -> None:
    """An alert that resolves on the value that ends a warm-up can make a dormant track
    ready again (`back_to_baseline`), as can a restarted calibration: from then on it writes
    to a detector and ring of its own, never to the shared ones."""
    m = Monitor(config().monitor_settings())
    rng = random.Random(5)
    events = [
        prediction(i, features={"x": rng.gauss(3.0, 1.0), "b": int(rng.random() < 0.3)})
        for i in range(2600)
    ]
    m.process(records(PREDICTION, events))
    (dormant,) = _rate_tracks(m, "x")
    (ready,) = _rate_tracks(m, "b")
    assert dormant.dormant and not ready.dormant and ready.scaler.phase == READY
    rule = dormant.rule
    dormant.back_to_baseline(ready.scaler.dump())
    assert not dormant.dormant
    assert dormant.detector is not rule.idle and dormant.ring is not IDLE_RING
    for i in range(300):
        dormant.update(float(i % 3 == 0))
    assert dormant.seen > 0 and any(dormant.ring)
    assert _untouched(rule)
