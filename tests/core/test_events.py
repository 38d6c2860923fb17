"""Every invalid case of the event contract gives an error naming the field and the problem."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from stream_monitor.core.events import (
    MAX_TIME_MS,
    MIN_TIME_MS,
    PREDICTION,
    EventError,
    Prediction,
    Record,
    decode,
    decode_label,
    decode_prediction,
    parse_timestamp,
)

GOOD = {"prediction_id": "p1", "model": "credit", "prediction": 0.7}


def test_minimal_prediction_decodes() -> None:
    event = decode_prediction(orjson.dumps(GOOD))
    assert (event.prediction_id, event.model, event.prediction) == ("p1", "credit", 0.7)
    assert event.time_ms is None and event.features is None and event.score is None


def test_full_prediction_decodes_and_ignores_unknown_fields() -> None:
    raw = dict(
        GOOD,
        model_version="3",
        timestamp="2026-01-01T00:00:01.5Z",
        score=0.9,
        features={"a": 1, "b": "x", "c": True, "d": None},
        segment={"region": "eu"},
        something_else={"nested": [1, 2]},
    )
    event = decode_prediction(orjson.dumps(raw))
    assert event.time_ms == 1_767_225_601_500
    assert event.model_version == "3" and event.score == 0.9
    assert event.features == {"a": 1, "b": "x", "c": True, "d": None}
    assert event.segment == {"region": "eu"}


T = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def test_kafka_timestamp_is_the_fallback_and_event_time_wins() -> None:
    assert decode_prediction(GOOD, fallback_time_ms=T + 42).time_ms == T + 42
    assert decode_prediction(dict(GOOD, timestamp=T + 7), fallback_time_ms=T + 42).time_ms == T + 7


def test_a_kafka_timestamp_out_of_bounds_is_no_event_time() -> None:
    record = Record(PREDICTION, dict(GOOD), 42, "p", 0, 0)  # a producer that set 42 ms
    event = decode(record)
    assert isinstance(event, Prediction) and event.time_ms is None
    assert decode(record._replace(timestamp_ms=T)).time_ms == T  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("raw", "reason", "field", "message"),
    [
        (b"\xff\xfe{}", "not_utf8", None, "not valid UTF-8"),
        (b"{not json", "malformed_json", None, "not valid JSON"),
        (b'{"a": NaN}', "malformed_json", None, "not valid JSON"),
        (b'{"a": 1e999}', "malformed_json", None, "infinity"),
        (b"[1, 2]", "not_an_object", None, "got array"),
        (b'"text"', "not_an_object", None, "got string"),
        (b"{}", "missing_field", "prediction_id", "field 'prediction_id' is required"),
        ({"model": "m", "prediction": 1}, "missing_field", "prediction_id", "is required"),
        (
            {"prediction_id": "p", "prediction": 1},
            "missing_field",
            "model",
            "field 'model' is required",
        ),
        (
            {"prediction_id": "p", "model": "m"},
            "missing_field",
            "prediction",
            "'prediction' is required",
        ),
        (
            {"prediction_id": 5, "model": "m", "prediction": 1},
            "wrong_type",
            "prediction_id",
            "field 'prediction_id' must be a string, got number",
        ),
        (
            {"prediction_id": "", "model": "m", "prediction": 1},
            "invalid_value",
            "prediction_id",
            "must not be empty",
        ),
        (
            {"prediction_id": "p", "model": "", "prediction": 1},
            "invalid_value",
            "model",
            "must not be empty",
        ),
        (
            {"prediction_id": "p", "model": ["m"], "prediction": 1},
            "wrong_type",
            "model",
            "got array",
        ),
        (
            {"prediction_id": "p", "model": "m", "prediction": {"a": 1}},
            "wrong_type",
            "prediction",
            "must be a number, boolean or string, got object",
        ),
        (
            {"prediction_id": "p", "model": "m", "prediction": float("nan")},
            "invalid_value",
            "prediction",
            "finite",
        ),
        (
            {**GOOD, "model_version": 3},
            "wrong_type",
            "model_version",
            "must be a string, got number",
        ),
        ({**GOOD, "score": "high"}, "wrong_type", "score", "must be a number, got string"),
        ({**GOOD, "score": True}, "wrong_type", "score", "must be a number, got boolean"),
        ({**GOOD, "score": float("inf")}, "invalid_value", "score", "finite"),
        (
            {**GOOD, "timestamp": "yesterday"},
            "invalid_value",
            "timestamp",
            "not an RFC 3339 timestamp",
        ),
        (
            {**GOOD, "timestamp": "2026-01-01T00:00:00"},
            "invalid_value",
            "timestamp",
            "needs a UTC offset",
        ),
        ({**GOOD, "timestamp": 1.5}, "wrong_type", "timestamp", "integer epoch milliseconds"),
        ({**GOOD, "timestamp": True}, "wrong_type", "timestamp", "got boolean"),
        ({**GOOD, "features": [1, 2]}, "wrong_type", "features", "must be an object, got array"),
        (
            {**GOOD, "features": {"x": [1]}},
            "wrong_type",
            "features.x",
            "'features.x' must be a number, string",
        ),
        ({**GOOD, "features": {"x": {"y": 1}}}, "wrong_type", "features.x", "got object"),
        ({**GOOD, "segment": "eu"}, "wrong_type", "segment", "must be an object, got string"),
        (
            {**GOOD, "segment": {"region": 1}},
            "wrong_type",
            "segment.region",
            "must be a string, got number",
        ),
        ({**GOOD, "model": "m" * 2000}, "invalid_value", "model", "longer than 1024"),
        ({**GOOD, "prediction": 1e308}, "invalid_value", "prediction", "beyond ±1e+100"),
        ({**GOOD, "score": -1e101}, "invalid_value", "score", "too large to monitor"),
    ],
)
def test_invalid_predictions(raw: Any, reason: str, field: str | None, message: str) -> None:
    with pytest.raises(EventError) as caught:
        decode_prediction(raw)
    assert caught.value.reason == reason
    assert caught.value.field == field
    assert message in caught.value.message


def test_oversized_event_is_rejected_before_parsing() -> None:
    raw = orjson.dumps(dict(GOOD, padding="x" * 2000))
    with pytest.raises(EventError) as caught:
        decode_prediction(raw, max_bytes=1000)
    assert caught.value.reason == "oversized"
    assert f"event is {len(raw)} bytes, larger than the 1000 byte limit" == caught.value.message


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    raw = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(EventError) as caught:
        decode_prediction(raw, max_bytes=10**7)
    assert caught.value.reason == "malformed_json"


def test_label_contract() -> None:
    label = decode_label(
        {"prediction_id": "p", "model": "m", "label": True, "prediction": False, "x": 1}
    )
    assert (label.label, label.prediction, label.time_ms) == (True, False, None)
    with pytest.raises(EventError) as caught:
        decode_label({"prediction_id": "p", "model": "m"})
    assert (caught.value.reason, caught.value.field) == ("missing_field", "label")
    with pytest.raises(EventError) as caught:
        decode_label({"prediction_id": "p", "model": "m", "label": None})
    assert (caught.value.reason, caught.value.field) == ("missing_field", "label")
    with pytest.raises(EventError) as caught:
        decode_label({"prediction_id": "p", "model": "m", "label": [1]})
    assert (caught.value.reason, caught.value.field) == ("wrong_type", "label")


def test_timestamps() -> None:
    assert parse_timestamp("2026-01-01T00:00:01Z") == T + 1000
    assert parse_timestamp("2026-01-01T01:00:01+01:00") == T + 1000
    assert parse_timestamp(T + 1234) == T + 1234
    assert parse_timestamp("2000-01-01T00:00:00Z") == MIN_TIME_MS
    assert parse_timestamp(MAX_TIME_MS - 1) == MAX_TIME_MS - 1


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            1_767_225_600,
            "field 'timestamp' is 1767225600, outside 2000-01-01 .. 2100-01-01 in epoch "
            "milliseconds (it looks like epoch seconds: send milliseconds)",
        ),
        (
            1_767_225_600_000_000,
            "field 'timestamp' is 1767225600000000, outside 2000-01-01 .. 2100-01-01 in epoch "
            "milliseconds (it looks like epoch microseconds: send milliseconds)",
        ),
        (
            1_767_225_600_000_000_000,
            "field 'timestamp' is 1767225600000000000, outside 2000-01-01 .. 2100-01-01 in epoch "
            "milliseconds (it looks like epoch nanoseconds: send milliseconds)",
        ),
        (-5, "field 'timestamp' is -5, outside 2000-01-01 .. 2100-01-01 in epoch milliseconds"),
        (MAX_TIME_MS, f"field 'timestamp' is {MAX_TIME_MS}, outside 2000-01-01 .. 2100-01-01"),
        (
            "9999-12-31T23:59:59Z",
            "field 'timestamp' is '9999-12-31T23:59:59Z', outside 2000-01-01 .. 2100-01-01",
        ),
        (
            "1999-12-31T23:59:59.999Z",
            "field 'timestamp' is '1999-12-31T23:59:59.999Z', outside 2000-01-01 .. 2100-01-01",
        ),
        (
            "0001-01-01T00:00:00+01:00",
            "field 'timestamp' is '0001-01-01T00:00:00+01:00', outside 2000-01-01 .. 2100-01-01",
        ),
    ],
)
def test_timestamps_out_of_bounds_are_invalid_values_that_say_why(value: Any, message: str) -> None:
    with pytest.raises(EventError) as caught:
        decode_prediction(dict(GOOD, timestamp=value))
    assert (caught.value.reason, caught.value.field) == ("invalid_value", "timestamp")
    assert caught.value.message.startswith(message)
