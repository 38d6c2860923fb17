"""Events as the monitor reads them, checked by the monitor's own contract code before sending.

Nothing here restates a rule: the event dict goes through `decode_prediction` / `decode_label`
(so values JSON would silently change, such as a NaN score turning into null, are rejected),
and the encoded bytes through `parse_json` with `events.max_bytes`, the monitor's size check.
Encoding validated values with orjson is exact (strings, finite floats, 64-bit integers), so
the monitor decodes the bytes to the same event: tests/client/test_contract.py checks that
property both ways. A rule added to the contract (timestamp bounds, say) reaches every model
service with the next release.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import orjson

from stream_monitor.client.errors import InvalidEvent
from stream_monitor.core.events import (
    DEFAULT_MAX_EVENT_BYTES,
    EventError,
    decode_label,
    decode_prediction,
    parse_json,
)

Decoder = Callable[..., object]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def event_time(timestamp: datetime | int | None, clock_ms: Callable[[], int] = now_ms) -> object:
    """The `timestamp` field: epoch ms as given, a datetime in RFC 3339 (the contract rejects a
    naive one, as it rejects an offset-less string), or now."""
    if timestamp is None:
        return clock_ms()
    if isinstance(timestamp, datetime):
        return timestamp.isoformat(timespec="microseconds")
    return timestamp


def prediction_event(
    *,
    prediction_id: str,
    model: str,
    prediction: object,
    timestamp: object,
    score: object = None,
    features: Mapping[str, object] | None = None,
    model_version: object = None,
    segment: Mapping[str, object] | None = None,
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "prediction_id": prediction_id,
        "model": model,
        "timestamp": timestamp,
        "prediction": prediction,
    }
    if model_version is not None:
        event["model_version"] = model_version
    if score is not None:
        event["score"] = score
    if features is not None:
        event["features"] = _plain(features)
    if segment is not None:
        event["segment"] = _plain(segment)
    return event


def _plain(value: object) -> object:
    """A mapping as a dict (what JSON encodes); anything else as given, for the contract to judge."""
    if type(value) is not dict and isinstance(value, Mapping):
        return dict(value)
    return value


def label_event(
    *,
    prediction_id: object,
    model: str,
    label: object,
    timestamp: object,
    prediction: object = None,
    model_version: object = None,
    segment: Mapping[str, object] | None = None,
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "prediction_id": prediction_id,
        "model": model,
        "timestamp": timestamp,
        "label": label,
    }
    if prediction is not None:
        event["prediction"] = prediction
    if model_version is not None:
        event["model_version"] = model_version
    if segment is not None:
        event["segment"] = _plain(segment)
    return event


def checked_bytes(
    decode: Decoder, event: dict[str, Any], max_bytes: int = DEFAULT_MAX_EVENT_BYTES
) -> bytes:
    """The event's JSON bytes, once the monitor's decoder accepts the event and its size.

    Decoding the bytes a second time would double the SDK's cost for no verdict the dict's
    decoding has not already given (benchmarks/client_forward.py); `parse_json` is the
    contract's own size check.
    """
    try:
        decode(event, max_bytes=max_bytes)
        encoded = _encode(event)
        parse_json(encoded, max_bytes)
    except EventError as exc:
        raise InvalidEvent(exc.message, reason=exc.reason, field=exc.field) from exc
    return encoded


def check_prediction(event: dict[str, Any], max_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> bytes:
    return checked_bytes(decode_prediction, event, max_bytes)


def check_label(event: dict[str, Any], max_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> bytes:
    return checked_bytes(decode_label, event, max_bytes)


def _encode(event: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(event)
    except orjson.JSONEncodeError as exc:
        if "64-bit" not in str(exc):
            raise InvalidEvent(
                f"event cannot be encoded as JSON: {exc}", reason="wrong_type"
            ) from exc
    # orjson stops at 64-bit integers; JSON itself does not (the monitor reads them as floats).
    # Like orjson, write a non-finite feature as null (the contract has accepted the event, so
    # only features can hold one; the monitor counts either as missing).
    features = event.get("features")
    if type(features) is dict:
        event = {**event, "features": {k: _finite_or_none(v) for k, v in features.items()}}
    try:
        return json.dumps(event, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise InvalidEvent(f"event cannot be encoded as JSON: {exc}", reason="wrong_type") from exc


def _finite_or_none(value: object) -> object:
    return None if type(value) is float and not math.isfinite(value) else value
