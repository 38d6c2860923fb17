"""Alert lifecycle: an alerted signal back at its pre-change level is resolved, once, with
deterministic ids, and state holds it across a restore at any point."""

from __future__ import annotations

import jsonschema
import numpy as np
import pytest

from stream_monitor.core.alerts import ALERT_TYPE, RESOLVED_TYPE, describe, resolved_id
from stream_monitor.core.events import LABEL, PREDICTION, Prediction, Record
from stream_monitor.core.monitor import Alert, Monitor
from stream_monitor.scenarios import generate
from tests.helpers import alert_schema, monitor, records, through_changelog

FEATURES = {"prediction": [], "performance": [], "data_quality": []}


def features_only(**data: object) -> Monitor:
    signals = dict(FEATURES)
    signals.update(data.pop("signals", {}))  # type: ignore[call-overload]
    return monitor(signals=signals, **data)


def as_records(values: np.ndarray, start: int = 0) -> list[tuple[Record, Prediction]]:
    return [
        (
            Record(PREDICTION, None, None, "t", 0, index),
            Prediction(f"p{index}", "m", 1, features={"x": value}),
        )
        for index, value in enumerate(values.tolist(), start)
    ]


def run(m: Monitor, events: list[tuple[Record, Prediction]]) -> list[Alert]:
    m.begin()
    for record, event in events:
        m.apply(record, event)
    return m.end().alerts


def outline(alerts: list[Alert]) -> list[tuple[str, str, int]]:
    """(type, rule, index of the triggering value) of each event."""
    return [
        (
            a.event["type"].rsplit("_", 1)[-1],
            a.event["data"]["rule"],
            a.event["data"]["observations"] - 1,
        )
        for a in alerts
    ]


def step_and_back(seed: int = 2, level: float = 1.5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate(
        [rng.normal(0.0, 1.0, 3000), rng.normal(level, 1.0, 3000), rng.normal(0.0, 1.0, 3000)]
    )


def test_a_change_that_reverts_gives_one_detected_and_one_resolved_event() -> None:
    alerts = run(features_only(), as_records(step_and_back()))
    assert outline(alerts) == [("detected", "mean", 3037), ("resolved", "mean", 6015)]
    detected, resolved = (a.event for a in alerts)
    assert detected["data"]["severity"] == "critical"
    assert resolved["type"] == RESOLVED_TYPE
    assert resolved["data"]["resolves"] == detected["id"]
    assert resolved["id"] == resolved_id(detected["id"], 6016)
    assert resolved["data"]["open_for"] == 6016 - 3038
    assert resolved["data"]["source_position"] == {"topic": "t", "partition": 0, "offset": 6015}
    level = resolved["data"]["level"]
    assert level["statistic"] == "mean" and abs(level["before"]) < 0.1
    assert level["alerted"] == detected["data"]["effect"]["after"]
    assert level["now"] < 0.375  # within the margin of the pre-change level
    assert alerts[1].key == "m"  # keyed by monitor key, like the alert: one order per key
    schema = alert_schema()
    for alert in alerts:
        jsonschema.validate(alert.event, schema, format_checker=jsonschema.FormatChecker())
    assert describe(resolved).startswith(
        f"[RESOLVED] m feature/x back at {level['now']:.4g} (before {level['before']:.4g}, "
        f"alerted {level['alerted']:.4g}) closes {detected['id']} (adwin after 6016 obs"
    )


def test_the_same_input_gives_the_same_ids() -> None:
    first = [a.id for a in run(features_only(), as_records(step_and_back()))]
    assert first == [a.id for a in run(features_only(), as_records(step_and_back()))]


def test_half_way_back_stays_alerted_and_noise_never_flaps() -> None:
    """Hysteresis: with margin 0.25 the signal must come three quarters of the way back. One
    that settles half way stays alerted (its detection is no new alert), and 200,000 values of
    it raise nothing more."""
    rng = np.random.default_rng(3)
    values = np.concatenate(
        [rng.normal(0.0, 1.0, 3000), rng.normal(1.5, 1.0, 3000), rng.normal(0.75, 1.0, 200_000)]
    )
    m = features_only()
    assert outline(run(m, as_records(values))) == [("detected", "mean", 3037)]
    incident = m.keys["m"].features["x"].values.tracks[1].incident  # type: ignore[union-attr]
    assert incident is not None and incident.level == pytest.approx(
        0.729, abs=0.001
    )  # settled at its half-way level


def test_a_wider_margin_resolves_the_half_way_return() -> None:
    rng = np.random.default_rng(3)
    values = np.concatenate(
        [rng.normal(0.0, 1.0, 3000), rng.normal(1.5, 1.0, 3000), rng.normal(0.75, 1.0, 6000)]
    )
    m = features_only(alerts={"resolve": {"margin": 0.75}})
    assert outline(run(m, as_records(values))) == [
        ("detected", "mean", 3037),
        ("resolved", "mean", 6039),
    ]


def test_a_rate_and_a_spread_resolve_too() -> None:
    rng = np.random.default_rng(6)
    rate = np.concatenate(
        [rng.random(3000) < 0.1, rng.random(3000) < 0.3, rng.random(6000) < 0.1]
    ).astype(float)
    assert outline(run(features_only(), as_records(rate))) == [
        ("detected", "rate", 3120),
        ("resolved", "rate", 6071),
    ]
    spread = np.concatenate(
        [rng.normal(5.0, 1.0, 3000), rng.normal(5.0, 2.0, 3000), rng.normal(5.0, 1.0, 6000)]
    )
    alerts = run(features_only(), as_records(spread))
    assert outline(alerts) == [("detected", "spread", 3101), ("resolved", "spread", 6203)]
    effect = alerts[0].event["data"]["effect"]
    assert effect["statistic"] == "spread" and effect["ratio"] == pytest.approx(2.0, abs=0.5)


def test_resolve_can_be_switched_off() -> None:
    """Without the lifecycle the return is a change like any other (0.2's behaviour)."""
    m = features_only(alerts={"resolve": {"enabled": False}})
    assert outline(run(m, as_records(step_and_back()))) == [
        ("detected", "mean", 3037),
        ("detected", "mean", 6043),
    ]


def test_a_further_change_is_a_new_alert_and_the_return_closes_both() -> None:
    rng = np.random.default_rng(5)
    values = np.concatenate(
        [
            rng.normal(0.0, 1.0, 3000),
            rng.normal(1.5, 1.0, 3000),
            rng.normal(4.0, 1.0, 3000),
            rng.normal(0.0, 1.0, 3000),
        ]
    )
    alerts = run(features_only(), as_records(values))
    assert [kind for kind, _, _ in outline(alerts)] == [
        "detected",
        "detected",
        "resolved",
        "resolved",
    ]
    first, second, *closing = alerts
    assert {a.event["data"]["resolves"] for a in closing} == {first.id, second.id}
    assert closing[0].event["data"]["observations"] == closing[1].event["data"]["observations"]
    assert len({a.id for a in closing}) == 2


@pytest.mark.parametrize("cut", [*range(3030, 3045), 3100, 3110, 6000, *range(6008, 6018)])
def test_a_restore_at_any_cut_gives_the_same_alerts_and_resolved_events(cut: int) -> None:
    """Cuts before, at and after the detection, during the resolve test's settling (64 values
    after the alert), and around the resolve itself."""
    events = as_records(step_and_back())
    whole = features_only()
    uninterrupted = [a.event for a in run(whole, events)]
    assert [e["type"] for e in uninterrupted] == [ALERT_TYPE, RESOLVED_TYPE]
    first = features_only()
    before = [a.event for a in run(first, events[:cut])]
    second = through_changelog(first)
    after = [a.event for a in run(second, events[cut:])]
    assert before + after == uninterrupted
    assert second.snapshot() == whole.snapshot()


def test_a_reverting_scenario_through_the_changelog_every_2500_records() -> None:
    """The default scenario with its changes undone later: alerts and resolved events of every
    kind of signal (rates from labels, scores, features) survive restores."""
    scenario = generate("default", events=4000, seed=5, label_delay_ms=10_000)
    for event in scenario.predictions[3000:]:  # fraud's amount back to normal
        if event["model"] == "fraud":
            event["features"]["amount"] -= 30.0
    batch = records(PREDICTION, scenario.predictions) + records(
        LABEL, scenario.labels, topic="labels"
    )
    batch.sort(key=lambda r: (r.value["timestamp"], r.kind != PREDICTION))  # type: ignore[index]
    whole = Monitor(monitor().settings)
    uninterrupted = [a.event for a in whole.process(batch).alerts]
    kinds = {(e["type"], e["data"]["signal"]) for e in uninterrupted}
    assert (RESOLVED_TYPE, "amount") in kinds and (ALERT_TYPE, "error") in kinds
    for cut in range(1000, len(batch), 2500):
        first = Monitor(whole.settings)
        before = [a.event for a in first.process(batch[:cut]).alerts]
        second = through_changelog(first)
        assert before + [a.event for a in second.process(batch[cut:]).alerts] == uninterrupted


def test_the_demo_shows_a_resolved_event_on_one_line() -> None:
    from stream_monitor.demo import DemoSummary, alert_text, summary_table

    detected, resolved = (a.event for a in run(features_only(), as_records(step_and_back())))
    line = alert_text(resolved).plain
    assert line.startswith("RESOLVED m  feature/x  back at ")
    assert line.endswith("(mean, 2978 observations after the alert)")
    assert alert_text(detected).plain.startswith("CRITICAL m  feature/x  ")
    summary = DemoSummary(alerts=[detected, resolved], per_model={"m": 9000})
    assert (summary.detected, summary.resolved) == (1, 1)
    from rich.console import Console

    console = Console(width=120, record=True)
    console.print(summary_table(summary))
    assert "feature/x (critical, resolved)" in console.export_text()
