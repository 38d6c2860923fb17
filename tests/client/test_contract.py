"""What the SDK accepts, the monitor accepts, and vice versa (hypothesis), with the same reasons.

Two directions:
- from the SDK's side, any Python values (NaN, naive datetimes, huge integers, wrong types):
  an accepted call yields bytes the monitor's decoder accepts and reads back as the same fields;
  a rejected call names the reason and field the monitor names for that event;
- from the monitor's side, any JSON object: passing its fields to the SDK is accepted exactly when
  the monitor accepts the object, and rejected with the monitor's reason and field.
"""

from __future__ import annotations

import enum
import math
import types
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream_monitor.client import InvalidEvent, MonitorProducer
from stream_monitor.core.events import (
    EventError,
    Label,
    Prediction,
    decode_label,
    decode_prediction,
)

NOW_MS = 1_767_225_600_000
PREDICTION_FIELDS = (
    "prediction_id",
    "model",
    "prediction",
    "score",
    "features",
    "model_version",
    "segment",
    "timestamp",
)
LABEL_FIELDS = (
    "prediction_id",
    "model",
    "label",
    "prediction",
    "model_version",
    "segment",
    "timestamp",
)


class _Unused:
    """No producer is touched: these tests only encode."""

    def __len__(self) -> int:
        return 0


def sdk() -> MonitorProducer:
    return MonitorProducer(
        producer=_Unused(),  # type: ignore[arg-type]
        prediction_ids=lambda: "generated-id",
        clock_ms=lambda: NOW_MS,
    )


# --- values: JSON ones, and the Python ones JSON would mangle -------------------------------
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=6,
)
python_scalars = (
    json_scalars
    | st.sampled_from([math.nan, math.inf, -math.inf, 1e101, -1e300, 2**70, -(2**80)])
    | st.text(min_size=1020, max_size=1030)
    | st.datetimes()
    | st.builds(object)
)
timestamps = (
    st.none()
    | st.integers(min_value=0, max_value=2**50)
    | st.datetimes(
        timezones=st.none() | st.just(timezone.utc) | st.just(timezone(timedelta(hours=5)))
    )
    | st.sampled_from(["2026-01-01T00:00:00Z", "2026-01-01T00:00:00", "yesterday", 1.5, True])
)
names = (
    st.text(max_size=8)
    | st.sampled_from(["credit", "x" * 1025])
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.none()
)


def event_objects(fields: tuple[str, ...]) -> st.SearchStrategy[dict[str, Any]]:
    """JSON objects whose known fields are present or not, valid or not."""
    candidates = {
        "prediction_id": names,
        "model": names,
        "prediction": json_values,
        "label": json_values,
        "score": json_values,
        "model_version": names,
        "timestamp": json_scalars | st.sampled_from(["2026-01-01T00:00:00+02:00", "2026-01-01"]),
        "features": st.dictionaries(st.text(max_size=5), json_values, max_size=4) | json_values,
        "segment": st.dictionaries(st.text(max_size=5), json_values, max_size=3) | json_values,
    }
    return st.fixed_dictionaries({}, optional={name: candidates[name] for name in fields}).map(
        lambda obj: orjson.loads(orjson.dumps(obj))
    )


@dataclass(frozen=True)
class Rejected:
    reason: str
    field: str | None


def monitor_verdict(decode: Any, value: bytes | dict[str, Any]) -> Rejected | Any:
    try:
        return decode(value)
    except EventError as exc:
        return Rejected(exc.reason, exc.field)


def sdk_verdict(call: Any, **fields: Any) -> Rejected | Any:
    try:
        return call(**fields)
    except InvalidEvent as exc:
        assert isinstance(exc, ValueError)
        return Rejected(exc.reason, exc.field)


# --- monitor -> SDK ---------------------------------------------------------------------------
@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event_objects(PREDICTION_FIELDS))
def test_a_prediction_the_monitor_accepts_the_sdk_accepts_and_vice_versa(
    obj: dict[str, Any],
) -> None:
    expected = monitor_verdict(decode_prediction, orjson.dumps(obj))
    arguments = {name: obj.get(name) for name in PREDICTION_FIELDS}
    if arguments["prediction_id"] is None:
        arguments.pop("prediction_id")  # the SDK generates one
    got = sdk_verdict(sdk().encode_prediction, **arguments)
    if obj.get("prediction_id") is None:  # the SDK fills in the id: judge the rest
        expected = monitor_verdict(decode_prediction, {**obj, "prediction_id": "generated-id"})
    if isinstance(expected, Rejected):
        assert got == expected
        return
    assert not isinstance(got, Rejected), got
    _, value = got
    assert_same_prediction(decode_prediction(value), expected)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event_objects(LABEL_FIELDS))
def test_a_label_the_monitor_accepts_the_sdk_accepts_and_vice_versa(obj: dict[str, Any]) -> None:
    expected = monitor_verdict(decode_label, orjson.dumps(obj))
    got = sdk_verdict(sdk().encode_label, **{name: obj.get(name) for name in LABEL_FIELDS})
    if isinstance(expected, Rejected):
        assert got == expected
        return
    assert not isinstance(got, Rejected), got
    assert_same_label(decode_label(got), expected)


def assert_same_prediction(sent: Prediction, read: Prediction) -> None:
    for name in (
        "prediction_id",
        "model",
        "prediction",
        "score",
        "features",
        "model_version",
        "segment",
    ):
        assert getattr(sent, name) == getattr(read, name), name
    assert sent.time_ms == (NOW_MS if read.time_ms is None else read.time_ms)


def assert_same_label(sent: Label, read: Label) -> None:
    for name in ("prediction_id", "model", "label", "prediction", "model_version", "segment"):
        assert getattr(sent, name) == getattr(read, name), name
    assert sent.time_ms == (NOW_MS if read.time_ms is None else read.time_ms)


# --- SDK -> monitor -------------------------------------------------------------------------
@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    model=names,
    prediction=python_scalars,
    score=python_scalars,
    features=st.none() | st.dictionaries(st.text(max_size=5), python_scalars, max_size=3),
    segment=st.none() | st.dictionaries(st.text(max_size=5), python_scalars, max_size=2),
    model_version=names,
    timestamp=timestamps,
)
def test_what_the_sdk_sends_the_monitor_reads_unchanged(**fields: Any) -> None:
    got = sdk_verdict(sdk().encode_prediction, **fields)
    event = {"prediction_id": "generated-id", **fields}
    if isinstance(got, Rejected):
        # The monitor's decoder rejects the same event, for the same reason.
        assert got == monitor_verdict(decode_prediction, sdk_event(event))
        return
    prediction_id, value = got
    read = decode_prediction(value)  # the bytes on the wire, as the monitor decodes them
    assert prediction_id == read.prediction_id == "generated-id"
    assert read.model == fields["model"]
    assert read.prediction == fields["prediction"] or (
        isinstance(fields["prediction"], int) and read.prediction == float(fields["prediction"])
    )
    assert read.score == (None if fields["score"] is None else float(fields["score"]))
    assert read.features == (
        None
        if fields["features"] is None
        else {name: as_sent(value) for name, value in fields["features"].items()}
    )
    assert read.segment == fields["segment"] and read.model_version == fields["model_version"]
    stamp = fields["timestamp"]
    if stamp is None:
        assert read.time_ms == NOW_MS
    elif isinstance(stamp, datetime):
        assert read.time_ms == int(stamp.timestamp() * 1000)
    else:
        assert (
            read.time_ms
            == decode_prediction(
                {**event, "prediction": 1, "score": None, "features": None}
            ).time_ms
        )


def as_sent(feature: Any) -> Any:
    """A feature value as JSON carries it. NaN and infinities become null, which the monitor
    counts as missing, as it counts a non-finite value: the same meaning, other bytes."""
    if isinstance(feature, float) and not math.isfinite(feature):
        return None
    if isinstance(feature, int) and not isinstance(feature, bool) and abs(feature) >= 2**63:
        return float(feature)  # beyond 64 bits JSON numbers read back as floats
    return feature


def sdk_event(event: dict[str, Any]) -> dict[str, Any]:
    """The dict the SDK built for these arguments (datetimes become RFC 3339 text)."""
    stamp = event.get("timestamp")
    if stamp is None:
        stamp = NOW_MS
    elif isinstance(stamp, datetime):
        stamp = stamp.isoformat(timespec="microseconds")
    return {key: value for key, value in {**event, "timestamp": stamp}.items() if value is not None}


def test_invalid_calls_name_the_dead_letter_reason_and_field() -> None:
    producer = sdk()
    cases = [
        (dict(model="", prediction=1), "invalid_value", "model"),
        (dict(model="credit", prediction=None), "missing_field", "prediction"),
        (dict(model="credit", prediction=1, score=math.nan), "invalid_value", "score"),
        (dict(model="credit", prediction=1, score="high"), "wrong_type", "score"),
        (dict(model="credit", prediction=1, features={"x": [1]}), "wrong_type", "features.x"),
        (dict(model="credit", prediction=1, segment={"region": 3}), "wrong_type", "segment.region"),
        (
            dict(model="credit", prediction=1, timestamp=datetime(2026, 1, 1)),
            "invalid_value",
            "timestamp",
        ),
        (dict(model="credit", prediction=1, timestamp=1.5), "wrong_type", "timestamp"),
    ]
    for fields, reason, field in cases:
        with pytest.raises(InvalidEvent) as caught:
            producer.encode_prediction(**fields)
        assert (caught.value.reason, caught.value.field) == (reason, field), fields


def test_an_event_over_events_max_bytes_is_oversized() -> None:
    producer = MonitorProducer(producer=_Unused(), max_event_bytes=200)  # type: ignore[arg-type]
    producer.encode_prediction(model="credit", prediction=1, features={"x": "a" * 50})
    with pytest.raises(InvalidEvent) as caught:
        producer.encode_prediction(model="credit", prediction=1, features={"x": "a" * 200})
    assert (caught.value.reason, caught.value.field) == ("oversized", None)


def test_numpy_scalars_are_sent_as_the_json_the_monitor_accepts() -> None:
    # The monitor accepts {"score": 0.5}; score=np.float64(0.5) used to be rejected.
    class Level(enum.IntEnum):
        HIGH = 3

    got = sdk().encode_prediction(
        model=np.str_("credit"),  # type: ignore[arg-type]
        prediction=np.int64(1),  # type: ignore[arg-type]
        score=np.float64(0.5),
        features={"income": np.float32(0.25), "fraud": np.bool_(True), "level": Level.HIGH},
        segment={"region": np.str_("eu")},
        timestamp=np.int64(NOW_MS + 1),  # type: ignore[arg-type]
    )
    read = decode_prediction(got[1])
    assert (read.model, read.prediction, read.score, read.time_ms) == ("credit", 1, 0.5, NOW_MS + 1)
    assert read.features == {"income": 0.25, "fraud": True, "level": 3}
    assert read.segment == {"region": "eu"}
    frozen = sdk().encode_prediction(
        model="credit", prediction=1, features=types.MappingProxyType({"x": np.float64(2.0)})
    )
    assert decode_prediction(frozen[1]).features == {"x": 2.0}  # any mapping is a JSON object
    label = decode_label(
        sdk().encode_label(
            model="credit",
            prediction_id="p1",
            label=np.bool_(False),  # type: ignore[arg-type]
            prediction=np.float64(1.0),
        )
    )
    assert (label.label, label.prediction) == (False, 1.0)
    with pytest.raises(InvalidEvent) as caught:  # still the contract that judges the value
        sdk().encode_prediction(model="credit", prediction=1, score=np.float64("nan"))
    assert (caught.value.reason, caught.value.field) == ("invalid_value", "score")


def test_a_wrong_keyword_is_a_type_error_as_python_would_raise() -> None:
    with pytest.raises(
        TypeError, match="log_prediction\\(\\) got an unexpected keyword argument 'scor'"
    ):
        sdk().encode_prediction(model="credit", prediction=1, scor=0.5)  # type: ignore[call-arg]
    with pytest.raises(
        TypeError, match="log_label\\(\\) missing required keyword argument: 'label'"
    ):
        sdk().encode_label(model="credit", prediction_id="p1")  # type: ignore[call-arg]
