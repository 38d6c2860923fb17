"""Events as the monitor reads them, checked by the monitor's own contract code before sending.

Nothing here restates a rule: the event dict goes through `decode_prediction` / `decode_label`
(so values JSON would silently change, such as a NaN score turning into null, are rejected),
and the encoded bytes through `parse_json` with `events.max_bytes`, the monitor's size check.
Encoding validated values with orjson is exact (strings, finite floats, 64-bit integers), so
the monitor decodes the bytes to the same event: tests/client/test_contract.py checks that
property both ways. A rule added to the contract (timestamp bounds, say) reaches every model
service with the next release.

The fields of the two events are declared once, as `PredictionFields` and `LabelFields`: the
keyword arguments of `log_*` and `encode_*`, sync and asyncio alike. A numpy scalar
(`score=np.float64(0.5)`) or a subclass of int, float or str is sent as its plain value, which
is what the monitor reads from the same JSON.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, TypedDict

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


Scalar = bool | int | float | str


class _PredictionRequired(TypedDict):
    model: str
    prediction: Scalar


class PredictionFields(_PredictionRequired, total=False):
    """The keyword arguments of `log_prediction` (and `encode_prediction`), in one place."""

    score: float | None
    features: Mapping[str, Any] | None
    model_version: str | None
    segment: Mapping[str, str] | None
    timestamp: datetime | int | None
    prediction_id: str | None  # default: a new UUIDv7


class _LabelRequired(TypedDict):
    model: str
    prediction_id: str
    label: Scalar


class LabelFields(_LabelRequired, total=False):
    """The keyword arguments of `log_label` (and `encode_label`), in one place."""

    timestamp: datetime | int | None
    prediction: Scalar | None
    model_version: str | None
    segment: Mapping[str, str] | None


def event_time(timestamp: object, clock_ms: Callable[[], int] = now_ms) -> object:
    """The `timestamp` field: epoch ms as given, a datetime in RFC 3339 (the contract rejects a
    naive one, as it rejects an offset-less string), or now."""
    if timestamp is None:
        return clock_ms()
    if isinstance(timestamp, datetime):
        return timestamp.isoformat(timespec="microseconds")
    return timestamp


def prediction_event(
    fields: Mapping[str, object], *, prediction_id: str, timestamp: object
) -> dict[str, Any]:
    """The event dict of `log_prediction`'s keyword arguments (`PredictionFields`)."""
    if not (fields.keys() <= _PREDICTION_KEYS and fields.keys() >= _PREDICTION_REQUIRED):
        _wrong_keywords("log_prediction", fields, PredictionFields)
    event: dict[str, Any] = {
        "prediction_id": prediction_id,
        "model": fields["model"],
        "timestamp": timestamp,
        "prediction": fields["prediction"],
    }
    for name in _PREDICTION_OPTIONAL:
        if fields.get(name) is not None:
            event[name] = fields[name]
    return event


def label_event(fields: Mapping[str, object], *, timestamp: object) -> dict[str, Any]:
    """The event dict of `log_label`'s keyword arguments (`LabelFields`)."""
    if not (fields.keys() <= _LABEL_KEYS and fields.keys() >= _LABEL_REQUIRED):
        _wrong_keywords("log_label", fields, LabelFields)
    event: dict[str, Any] = {
        "prediction_id": fields["prediction_id"],
        "model": fields["model"],
        "timestamp": timestamp,
        "label": fields["label"],
    }
    for name in _LABEL_OPTIONAL:
        if fields.get(name) is not None:
            event[name] = fields[name]
    return event


# In the order the event's JSON lists them.
_PREDICTION_OPTIONAL = ("model_version", "score", "features", "segment")
_LABEL_OPTIONAL = ("prediction", "model_version", "segment")
_PREDICTION_KEYS = frozenset(PredictionFields.__annotations__)
_PREDICTION_REQUIRED = PredictionFields.__required_keys__
_LABEL_KEYS = frozenset(LabelFields.__annotations__)
_LABEL_REQUIRED = LabelFields.__required_keys__


def _wrong_keywords(call: str, fields: Mapping[str, object], kind: Any) -> None:
    """The TypeError Python raises for a wrong keyword: the fields come in as **kwargs."""
    unknown = sorted(fields.keys() - kind.__annotations__.keys())
    if unknown:
        raise TypeError(f"{call}() got an unexpected keyword argument {unknown[0]!r}")
    missing = sorted(kind.__required_keys__ - fields.keys())
    raise TypeError(f"{call}() missing required keyword argument: {missing[0]!r}")


_PLAIN = frozenset({str, int, float, bool, type(None)})


def plain(value: object) -> object:
    """`value` as JSON types: a numpy scalar (`np.float64(0.5)`) or a subclass of int, float or
    str (an IntEnum) as the plain value the monitor reads from the same JSON; a dict of such
    values as a dict of plain ones. Anything else as given, for the contract to judge."""
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is dict:
        items: dict[Any, Any] = value  # type: ignore[assignment]
        if _PLAIN.issuperset(map(type, items.values())):
            return value
        return {name: plain(item) for name, item in items.items()}
    if isinstance(value, Mapping):  # what JSON encodes is a dict
        return {name: plain(item) for name, item in value.items()}
    numpy = sys.modules.get("numpy")  # a numpy scalar means numpy is loaded: never import it
    if numpy is not None and isinstance(value, numpy.generic):
        return value.item()
    if isinstance(value, int):  # bool cannot be subclassed
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    return value


def checked_bytes(
    decode: Decoder, event: dict[str, Any], max_bytes: int = DEFAULT_MAX_EVENT_BYTES
) -> bytes:
    """The event's JSON bytes, once the monitor's decoder accepts the event and its size.

    Decoding the bytes a second time would double the SDK's cost for no verdict the dict's
    decoding has not already given (benchmarks/client_forward.py); `parse_json` is the
    contract's own size check.
    """
    try:
        try:
            decode(event, max_bytes=max_bytes)
        except EventError as exc:
            # A numpy scalar or an int/float/str subclass is a wrong type to the decoder, yet
            # its plain value is what the monitor reads from the same JSON: unwrap, try again
            # (only then, so plain events pay nothing for it).
            if exc.reason != "wrong_type" or not _unwrap(event):
                raise
            decode(event, max_bytes=max_bytes)
        encoded = _encode(event)
        parse_json(encoded, max_bytes)
    except EventError as exc:
        raise InvalidEvent(exc.message, reason=exc.reason, field=exc.field) from exc
    return encoded


def _unwrap(event: dict[str, Any]) -> bool:
    """Make the event's values plain (`plain`), in place; False when all already were."""
    changed = False
    for name, value in event.items():
        if type(value) not in _PLAIN:
            event[name] = unwrapped = plain(value)
            changed = changed or unwrapped is not value
    return changed


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
