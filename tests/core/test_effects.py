"""Effect size: measured after the change point, it sets severity and drops negligible changes."""

from __future__ import annotations

import numpy as np
import pytest

from stream_monitor.core.alerts import ALERT_TYPE, describe
from stream_monitor.core.effects import RING, Ring, measure, severity, split
from stream_monitor.core.events import PREDICTION, Prediction, Record
from stream_monitor.core.monitor import Alert, Monitor
from tests.helpers import monitor

ONLY_FEATURES = {"feature": None, "prediction": [], "performance": [], "data_quality": []}


def features_only(**data: object) -> Monitor:
    signals = {k: v for k, v in ONLY_FEATURES.items() if v is not None}
    signals.update(data.pop("signals", {}))  # type: ignore[call-overload]
    return monitor(signals=signals, **data)


def feed(m: Monitor, values: np.ndarray, name: str = "x") -> list[Alert]:
    """One prediction per value, pre-decoded (1e6 of them in about a second)."""
    m.begin()
    for index, value in enumerate(values.tolist()):
        record = Record(PREDICTION, None, None, "t", 0, index)
        m.apply(record, Prediction(f"p{index}", "m", 1, features={name: value}))
    return m.end().alerts


def detected(alerts: list[Alert]) -> list[dict[str, object]]:
    return [a.event["data"] for a in alerts if a.event["type"] == ALERT_TYPE]


def test_a_0_03_sd_shift_over_1e6_events_gives_no_alert() -> None:
    rng = np.random.default_rng(1)
    values = rng.normal(0.0, 1.0, 1_000_000)
    values[500_000:] += 0.03
    m = features_only()
    assert feed(m, values) == []
    # river's raw ADWIN does detect it (on long streams it sees tiny shifts), but the effect
    # measured after the change point is negligible: dropped, and counted.
    raw = features_only(signals={"feature": ["adwin"]})
    alerts = detected(feed(raw, values))
    assert [a["observations"] for a in alerts] == [124_672]  # a 40-value excursion of noise
    assert raw.counters.negligible == 1  # at 528,080: 0.10 sd, measured on the last 256 values


def test_min_effect_zero_alerts_on_any_detection() -> None:
    rng = np.random.default_rng(4)
    values = np.concatenate([rng.normal(0.0, 1.0, 20_000), rng.normal(0.15, 1.0, 40_000)])
    assert detected(feed(features_only(signals={"feature": ["adwin"]}), values)) == []
    m = features_only(signals={"feature": ["adwin"]}, alerts={"min_effect": 0})
    (alert,) = detected(feed(m, values))
    assert alert["severity"] == "info" and alert["effect"]["size"] < 0.2  # type: ignore[index]


def test_a_1_5_sd_shift_is_critical_and_measured_after_its_change_point() -> None:
    rng = np.random.default_rng(2)
    values = np.concatenate([rng.normal(100.0, 20.0, 3000), rng.normal(130.0, 20.0, 3000)])
    (alert,) = detected(feed(features_only(), values))
    assert (alert["rule"], alert["observations"], alert["severity"]) == ("mean", 3038, "critical")
    assert alert["effect"] == {
        "statistic": "mean",
        "size": pytest.approx(1.601038),
        "shift": pytest.approx(1.601038),
        "before": pytest.approx(99.44748),
        "after": pytest.approx(130.34344),
        "sd": pytest.approx(19.29746),
        "window": 38,  # the 37 values since the change, and one before it
    }
    # The old severity read a 100-value moving average that still held pre-change values.
    assert alert["stats"]["window_after"] == 38


@pytest.mark.parametrize(
    ("after", "expected"), [(0.12, "info"), (0.45, "info"), (0.6, "warning"), (1.3, "critical")]
)
def test_severity_follows_the_effect_size(after: float, expected: str) -> None:
    effect = measure("mean", 0.0, 1.0, after, 100)
    assert severity(effect, "feature") == expected
    assert severity(measure("mean", 0.0, 1.0, -after, 100), "performance") == "info"  # improved


def test_rates_report_absolute_and_relative_change_and_a_ratio_of_the_rarer_outcome() -> None:
    effect = measure("rate", 0.1, 0.3, 0.3, 1000)
    assert effect == {
        "statistic": "rate",
        "size": pytest.approx(1.585, abs=1e-3),  # log2(3): the error rate tripled
        "absolute": pytest.approx(0.2),
        "relative": pytest.approx(2.0),
        "shift": pytest.approx(0.666667),
        "before": 0.1,
        "after": 0.3,
        "sd": 0.3,
        "window": 1000,
    }
    # An accuracy-like rate: 0.9 -> 0.8 is the rarer outcome doubling (0.1 -> 0.2).
    assert measure("rate", 0.9, 0.3, 0.8, 1000)["size"] == pytest.approx(1.0, abs=3e-3)
    assert severity(measure("rate", 0.9, 0.3, 0.8, 1000), "prediction") == "critical"
    # A rare rate doubling is critical although it is a tenth of an sd.
    rare = measure("rate", 0.001, 0.0316, 0.002, 100_000)
    assert rare["shift"] == pytest.approx(0.0316, abs=1e-3) and severity(rare, "data_quality") == (
        "critical"
    )


def test_a_spread_reports_its_sd_ratio() -> None:
    effect = measure("spread", 1.128, 20.0, 2.256, 64)
    assert effect == {
        "statistic": "spread",
        "size": pytest.approx(1.0),
        "ratio": pytest.approx(2.0),
        "before": 20.0,
        "after": pytest.approx(40.0),
        "window": 64,
    }
    assert measure("spread", 1.0, 1.0, 0.0, 64)["size"] == pytest.approx(39.863137)  # plain JSON


def ring_of(values: list[float], block: int = 8) -> Ring:
    sums = [0.0] * RING
    full = len(values) // block
    for index in range(full):
        sums[index % RING] = sum(values[index * block : (index + 1) * block])
    rest = values[full * block :]
    return Ring(sums, full % RING, min(full, RING), sum(rest), len(rest), block)


def test_the_change_point_is_found_in_the_ring_only_on_strong_evidence() -> None:
    rng = np.random.default_rng(3)
    noise = rng.normal(0.0, 1.0, 256).tolist()
    count, total, found = split(ring_of(noise), 1.0)
    assert (count, found) == (256, False)  # noise: the whole ring, not its most extreme stretch
    step = noise[:216] + [value + 1.5 for value in noise[216:]]
    count, total, found = split(ring_of(step), 1.0)
    assert (count, found) == (40, True) and total / count == pytest.approx(1.5, abs=0.3)


def test_the_effect_is_on_the_alert_and_in_its_readable_line() -> None:
    rng = np.random.default_rng(2)
    values = np.concatenate([rng.normal(100.0, 20.0, 3000), rng.normal(130.0, 20.0, 3000)])
    (alert,) = feed(features_only(), values)
    assert describe(alert.event).startswith("[CRITICAL] m feature/x 99.45 -> 130.3 (+1.60 sd) (")
