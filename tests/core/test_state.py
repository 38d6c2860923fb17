"""State: identical detections after a restore at any point; signed, data-only records.

Restores go through the real changelog records (`tests.helpers.through_changelog`); the codec's
own checks are tested here, the changelog's layout in tests/processing/test_changelog.py.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

import orjson
import pytest

from stream_monitor.core.alerts import RESOLVED_TYPE
from stream_monitor.core.events import LABEL, PREDICTION, Record
from stream_monitor.core.monitor import Monitor
from stream_monitor.core.state import StateChanges, StateCodec
from stream_monitor.errors import StateError
from stream_monitor.scenarios import generate
from tests.helpers import (
    STATE_KEY,
    T0,
    config,
    golden_stream,
    prediction,
    records,
    through_changelog,
)

KEY = STATE_KEY
BOTH = {"adwin": {"type": "adwin"}, "ph": {"type": "page_hinkley", "params": {"threshold": 20}}}


def scenario_records() -> list[Record]:
    scenario = generate("default", events=3000, seed=11)
    batch = records(PREDICTION, scenario.predictions) + records(
        LABEL, scenario.labels, topic="labels"
    )
    batch.sort(key=lambda r: (r.value["timestamp"], r.kind != PREDICTION))  # type: ignore[index]
    return batch


def alert_ids(m: Monitor, batch: list[Record]) -> list[str]:
    return [a.id for a in m.process(batch).alerts]


@pytest.mark.parametrize("cut", [1000, 7777, 12345])
def test_restore_mid_stream_gives_identical_alerts_and_state(cut: int) -> None:
    settings = config(
        detectors=BOTH,
        signals={
            k: ["adwin", "ph"] for k in ("performance", "prediction", "feature", "data_quality")
        },
    ).monitor_settings()
    batch = scenario_records()
    outputs = Monitor(settings).process(batch).alerts
    uninterrupted = [a.id for a in outputs]
    assert len(uninterrupted) >= 3
    # drift_resolved events too: the open alerts' state crosses the cut
    assert any(a.event["type"] == RESOLVED_TYPE for a in outputs)

    first = Monitor(settings)
    before = alert_ids(first, batch[:cut])
    second = through_changelog(first)
    after = alert_ids(second, batch[cut:])
    assert before + after == uninterrupted
    whole = Monitor(settings)
    whole.process(batch)
    assert second.snapshot() == whole.snapshot()


def test_golden_indices_survive_a_restore_at_every_point_near_the_change() -> None:
    defaults = {"adwin": {"type": "adwin"}, "ph": {"type": "page_hinkley"}}
    settings = config(
        detectors=defaults,
        signals={
            "feature": ["adwin", "ph"],
            "prediction": [],
            "performance": [],
            "data_quality": [],
        },
    ).monitor_settings()
    events = records(
        PREDICTION, [prediction(i, features={"x": v}) for i, v in enumerate(golden_stream())]
    )
    for cut in (500, 1000, 1005, 1010, 1020):
        first = Monitor(settings)
        alerts = first.process(events[:cut]).alerts
        alerts += through_changelog(first).process(events[cut:]).alerts
        offsets = [
            (a.event["data"]["rule"], a.event["data"]["source_position"]["offset"]) for a in alerts
        ]
        assert offsets[:2] == [("ph", 1006), ("adwin", 1023)], cut


def test_changes_hold_only_what_changed_in_order_with_deletions() -> None:
    m = Monitor(config().monitor_settings())
    m.process(
        records(PREDICTION, [prediction(0, model="a", timestamp=T0 + 5), prediction(1, model="b")])
    )
    first = m.take_changes()
    assert sorted(first.keys) == ["a", "b"]
    assert [(model, pid) for model, pid, _ in first.join] == [("a", "p0"), ("b", "p1")]
    assert first.meta == {"watermark_ms": None, "block": [T0 + 5, 1, 0]}
    m.process(records(LABEL, [{"prediction_id": "p0", "model": "a", "label": 1}]))
    second = m.take_changes()
    assert list(second.keys) == ["a"]
    assert second.join == [["a", "p0", None]]
    assert second.meta is None  # a label without a time leaves the clock alone
    assert not m.take_changes()


def test_restoring_changes_in_order_rebuilds_the_state() -> None:
    m = Monitor(config().monitor_settings())
    m.process(records(PREDICTION, [prediction(0), prediction(1)]))
    log = [m.take_changes()]
    m.process(records(LABEL, [{"prediction_id": "p0", "model": "m", "label": 1}]))
    log.append(m.take_changes())
    restored = Monitor(config().monitor_settings())
    for changes in log:
        restored.restore(changes)
    assert restored.join.pending_predictions() == [("m", "p1")]
    assert restored.keys["m"].performance.tracks[0].seen == 1  # type: ignore[union-attr]
    assert restored.snapshot() == m.snapshot()


def test_the_signature_covers_key_value_and_context() -> None:
    codec = StateCodec(KEY)
    blob = codec.encode(b"k:m", {"a": 1}, b"0|5,3")
    assert codec.decode(b"k:m", blob, b"0|5,3") == {"a": 1}
    for key, value, context in (
        (b"k:other", blob, b"0|5,3"),  # moved to another key
        (b"k:m", blob, b"1|5,3"),  # to another partition
        (b"k:m", blob, b"0|9,9"),  # relabelled with other offsets
        (b"k:m", blob[:-2] + b"9}", b"0|5,3"),  # tampered
    ):
        with pytest.raises(StateError, match="signature does not match"):
            codec.decode(key, value, context)
    with pytest.raises(StateError, match="signature does not match"):
        StateCodec(b"another-key-of-16-bytes").decode(b"k:m", blob, b"0|5,3")
    with pytest.raises(StateError, match="unknown format"):
        codec.decode(b"k:m", b"\x80\x04pickle", b"0|5,3")
    with pytest.raises(StateError, match="at least 16 bytes"):
        StateCodec(b"short")


def test_deletions_are_signed_for_their_key_and_context() -> None:
    codec = StateCodec(KEY)
    signature = codec.tombstone_signature(b"k:m", b"0|5,3")
    codec.check_tombstone(b"k:m", signature, b"0|5,3")
    with pytest.raises(StateError, match="not signed"):
        codec.check_tombstone(b"k:m", None, b"0|5,3")
    for key, context in ((b"k:n", b"0|5,3"), (b"k:m", b"0|6,3")):
        with pytest.raises(StateError, match=r"tombstone.*does not match"):
            codec.check_tombstone(key, signature, context)


def test_records_of_earlier_formats_are_rejected() -> None:
    """SM1/SM2 signed the value alone: a key or offsets header could be swapped under them."""
    codec = StateCodec(KEY)
    payload = orjson.dumps({"a": 1})
    for magic in (b"SM1", b"SM2"):
        old = magic + hmac.digest(KEY, payload, hashlib.sha256) + payload
        with pytest.raises(StateError, match=f"{magic.decode()} format of an earlier version"):
            codec.decode(b"k:m", old, b"0|0,0")


def test_corrupt_but_signed_detector_state_is_a_state_error_not_a_crash() -> None:
    m = Monitor(config().monitor_settings())
    m.process(records(PREDICTION, [prediction(i, features={"x": float(i)}) for i in range(50)]))
    state = m.snapshot()
    key = state.keys["m"]
    assert key is not None
    windows = [
        track[2]
        for signal in key["signals"]
        for track in signal[2]
        if isinstance(track[2], dict) and "helper" in track[2]  # [rule, format, detector, ...]
    ]
    assert windows
    windows[0]["helper"] = "AAAA"  # truncated Rust window
    with pytest.raises(StateError, match="corrupt"):
        Monitor(config().monitor_settings()).restore(state)
    with pytest.raises(StateError, match="not understood"):
        Monitor(config().monitor_settings()).restore(StateChanges(keys={"m": {"model": "m"}}))


def test_detector_windows_travel_as_raw_bytes() -> None:
    m = Monitor(config().monitor_settings())
    m.process(
        records(PREDICTION, [prediction(i, features={"x": float(i % 7)}) for i in range(500)])
    )
    state = m.snapshot().keys["m"]
    codec = StateCodec(KEY)
    blob = codec.encode(b"k:m", state, b"0|0,0")
    assert blob[:3] == b"SM3"
    assert codec.decode(b"k:m", blob, b"0|0,0") == state
    as_text = orjson.dumps(state, default=lambda b: base64.b64encode(b).decode())
    assert len(blob) < 0.9 * len(as_text)
    tampered = blob[:-1] + bytes((blob[-1] ^ 1,))
    with pytest.raises(StateError, match="signature does not match"):
        codec.decode(b"k:m", tampered, b"0|0,0")


def test_tracks_written_by_0_2_are_restored() -> None:
    """0.2 dumped a track as [rule, detector, seen, n, total, total_sq, recent, quiet_until,
    (scaler)]: an uncalibrated rule keeps its detector and counts (river's golden index still
    comes at 1023), a calibrated one keeps its counts and warms up again."""
    from stream_monitor.core.detectors import DetectorRule

    settings = config(
        detectors={"adwin": {"type": "adwin"}},
        signals={
            "feature": ["adwin", "mean"],
            "prediction": [],
            "performance": [],
            "data_quality": [],
        },
    ).monitor_settings()
    events = records(
        PREDICTION, [prediction(i, features={"x": v}) for i, v in enumerate(golden_stream())]
    )
    first = Monitor(settings)
    first.process(events[:1000])
    state = first.snapshot()
    key = state.keys["m"]
    assert key is not None
    for signal in key["signals"]:
        if signal[1] != "x":
            continue
        old = []
        for track in signal[2]:
            rule = settings.rules[track[0]]
            assert isinstance(rule, DetectorRule)
            name, _, detector, seen, n, total, total_sq, quiet = track[:8]
            scaler = [0, 0.0, 0.0, True, None, 1.0] if rule.calibration is not None else None
            old.append(
                [
                    name,
                    detector,
                    seen,
                    n,
                    total,
                    total_sq,
                    0.0,
                    quiet,
                    *([scaler] if scaler else []),
                ]
            )
        signal[2] = old
    restored = Monitor(settings)
    restored.restore(state)
    alerts = restored.process(events[1000:]).alerts
    adwin = [a for a in alerts if a.event["data"]["rule"] == "adwin"]
    assert adwin[0].event["data"]["observations"] == 1024
    tracks = restored.keys["m"].features["x"].values.tracks  # type: ignore[union-attr]
    mean = tracks[1]
    assert mean.rule.name == "mean" and mean.seen >= 1000 and mean.scaler is not None


def test_state_written_before_features_had_a_kind_is_restored() -> None:
    """Keys written by 0.2 list their features by name and record no reference digest: their
    numeric features are restored from their signals, and detection goes on the same."""
    settings = config().monitor_settings()
    events = records(
        PREDICTION,
        [prediction(i, features={"x": v, "y": None}) for i, v in enumerate(golden_stream())],
    )
    whole = [a.id for a in Monitor(settings).process(events).alerts]
    assert whole
    first = Monitor(settings)
    before = [a.id for a in first.process(events[:800]).alerts]
    state = first.snapshot()
    key = state.keys["m"]
    assert key is not None
    key["features"] = [name for name, _, _ in key["features"]]
    del key["reference"]
    restored = Monitor(settings)
    restored.restore(state)
    assert [a.id for a in restored.process(events[800:]).alerts] == whole[len(before) :]
    assert restored.keys["m"].features["y"].kind == 0  # never a value: its kind is not known
