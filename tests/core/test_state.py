"""Snapshot/restore: identical detections after a mid-stream restore; tampering is rejected."""

from __future__ import annotations

import base64
import hashlib
import hmac

import orjson
import pytest

from stream_monitor.core.events import LABEL, PREDICTION
from stream_monitor.core.monitor import Monitor, Record
from stream_monitor.core.state import StateCodec
from stream_monitor.errors import StateError
from stream_monitor.scenarios import generate
from tests.helpers import config, golden_stream, prediction, records

KEY = b"0123456789abcdef-test-key"
BOTH = {"adwin": {"type": "adwin"}, "ph": {"type": "page_hinkley", "params": {"threshold": 20}}}


def scenario_records() -> list[Record]:
    scenario = generate("default", events=3000, seed=11)
    batch = records(PREDICTION, scenario.predictions) + records(
        LABEL, scenario.labels, topic="labels"
    )
    batch.sort(key=lambda r: (r[1]["timestamp"], r[0] != PREDICTION))
    return batch


def alert_ids(m: Monitor, batch: list[Record]) -> list[str]:
    return [a.id for a in m.process(batch).alerts]


def through_bytes(items: dict, codec: StateCodec) -> list[tuple[str, object]]:
    return [(key, codec.decode(codec.encode(value))) for key, value in items.items()]


@pytest.mark.parametrize("cut", [1000, 7777, 12345])
def test_restore_mid_stream_gives_identical_alerts(cut: int) -> None:
    cfg = config(
        detectors=BOTH,
        signals={
            k: ["adwin", "ph"] for k in ("performance", "prediction", "feature", "data_quality")
        },
    )
    batch = scenario_records()
    uninterrupted = alert_ids(Monitor(cfg), batch)
    assert len(uninterrupted) >= 3

    first = Monitor(cfg)
    before = alert_ids(first, batch[:cut])
    codec = StateCodec(KEY)
    second = Monitor(cfg)
    second.restore(through_bytes(first.snapshot(), codec))
    after = alert_ids(second, batch[cut:])
    assert before + after == uninterrupted
    whole = Monitor(cfg)
    whole.process(batch)
    assert second.snapshot() == whole.snapshot()


def test_golden_indices_survive_a_restore_at_every_point_near_the_change() -> None:
    defaults = {"adwin": {"type": "adwin"}, "ph": {"type": "page_hinkley"}}
    cfg = config(
        detectors=defaults,
        signals={
            "feature": ["adwin", "ph"],
            "prediction": [],
            "performance": [],
            "data_quality": [],
        },
    )
    events = records(
        PREDICTION, [prediction(i, features={"x": v}) for i, v in enumerate(golden_stream())]
    )
    codec = StateCodec(KEY)
    for cut in (500, 1000, 1005, 1010, 1020):
        first = Monitor(cfg)
        alerts = first.process(events[:cut]).alerts
        second = Monitor(cfg)
        second.restore(through_bytes(first.snapshot(), codec))
        alerts += second.process(events[cut:]).alerts
        offsets = [
            (a.event["data"]["rule"], a.event["data"]["source_position"]["offset"]) for a in alerts
        ]
        assert offsets[:2] == [("ph", 1006), ("adwin", 1023)], cut


def test_changes_hold_only_what_changed_and_tombstones() -> None:
    m = Monitor(config())
    m.process(
        records(PREDICTION, [prediction(0, model="a", timestamp=5), prediction(1, model="b")])
    )
    first = m.take_changes()
    assert sorted(first) == ["j:a\x1fp0", "j:b\x1fp1", "k:a", "k:b", "meta"]
    assert first["meta"] == {"watermark_ms": 5}
    m.process(records(LABEL, [{"prediction_id": "p0", "model": "a", "label": 1}]))
    second = m.take_changes()
    assert sorted(second) == ["j:a\x1fp0", "k:a"]
    assert second["j:a\x1fp0"] is None
    assert m.take_changes() == {}


def test_restore_applies_tombstones_and_latest_values() -> None:
    m = Monitor(config())
    m.process(records(PREDICTION, [prediction(0), prediction(1)]))
    log = list(m.take_changes().items())
    m.process(records(LABEL, [{"prediction_id": "p0", "model": "m", "label": 1}]))
    log += list(m.take_changes().items())
    latest = dict(log)
    restored = Monitor(config())
    restored.restore(latest.items())
    assert list(restored.join.predictions) == [("m", "p1")]
    assert restored.keys["m"].performance.tracks[0].seen == 1  # type: ignore[union-attr]


def test_tampered_state_is_rejected_before_it_is_parsed() -> None:
    codec = StateCodec(KEY)
    blob = codec.encode({"a": 1})
    tampered = blob[:-2] + b"9}"
    with pytest.raises(StateError, match="signature does not match"):
        codec.decode(tampered)
    with pytest.raises(StateError, match="signature does not match"):
        StateCodec(b"another-key-of-16-bytes").decode(blob)
    with pytest.raises(StateError, match="unknown format"):
        codec.decode(b"\x80\x04pickle")
    with pytest.raises(StateError, match="at least 16 bytes"):
        StateCodec(b"short")


def test_corrupt_but_signed_detector_state_is_a_state_error_not_a_crash() -> None:
    m = Monitor(config())
    m.process(records(PREDICTION, [prediction(i, features={"x": float(i)}) for i in range(50)]))
    items = m.snapshot()
    items["k:m"]["signals"][1][2][0][1]["helper"] = "AAAA"  # truncated Rust window
    with pytest.raises(StateError, match="corrupt"):
        Monitor(config()).restore(items.items())
    with pytest.raises(StateError, match="not understood"):
        Monitor(config()).restore([("k:m", {"model": "m"})])


def adwin_state() -> dict:
    m = Monitor(config())
    m.process(
        records(PREDICTION, [prediction(i, features={"x": float(i % 7)}) for i in range(500)])
    )
    return m.snapshot()["k:m"]


def test_state_with_detector_windows_is_framed_and_round_trips() -> None:
    codec = StateCodec(KEY)
    state = adwin_state()
    blob = codec.encode(state)
    assert blob[:3] == b"SM2"
    assert codec.decode(blob) == state
    as_text = orjson.dumps(state, default=lambda b: base64.b64encode(b).decode())
    assert len(blob) < 0.9 * len(as_text)
    # small records without bytes keep the plain format
    assert codec.encode(["p", 1, 0.5, 7])[:3] == b"SM1"
    tampered = blob[:-1] + bytes((blob[-1] ^ 1,))
    with pytest.raises(StateError, match="signature does not match"):
        codec.decode(tampered)


def test_state_written_in_the_sm1_format_still_restores() -> None:
    """SM1 records (ADWIN windows as base64 text) were written before SM2 existed."""
    codec = StateCodec(KEY)
    state = adwin_state()

    def as_base64(value: object) -> object:
        if isinstance(value, bytes):
            return base64.b64encode(value).decode("ascii")
        if isinstance(value, list):
            return [as_base64(item) for item in value]
        if isinstance(value, dict):
            return {k: as_base64(v) for k, v in value.items()}
        return value

    payload = orjson.dumps(as_base64(state))
    old = b"SM1" + hmac.digest(KEY, payload, hashlib.sha256) + payload
    restored = Monitor(config())
    restored.restore([("k:m", codec.decode(old))])
    assert restored.snapshot()["k:m"] == state
