"""Event contract: bytes or dicts in, typed records or an `EventError` naming the field out.

Decoding is the first thing every event meets, so it is written for the hot path: one orjson call,
type checks with `type(x) is`, slotted records, and exceptions only for the (rare) invalid event.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any, ClassVar, Final, NamedTuple

import orjson

from stream_monitor.errors import StreamMonitorError

PREDICTION: Final = "prediction"
LABEL: Final = "label"

DEFAULT_MAX_EVENT_BYTES: Final = 1_048_576
MAX_STRING_FIELD: Final = 1024
# Event times must fall in [2000-01-01, 2100-01-01): an integer outside it is almost always epoch
# seconds, microseconds or nanoseconds sent as milliseconds, and one such event must not move the
# join's clock by millennia (nor crash formatting: datetime stops at year 9999).
MIN_TIME_MS: Final = 946_684_800_000
MAX_TIME_MS: Final = 4_102_444_800_000
# Larger magnitudes are finite but unmonitorable: their squares and sums in the detectors' running
# statistics overflow to infinity, which the (JSON) state changelog cannot hold.
MAX_MAGNITUDE: Final = 1e100


class EventError(StreamMonitorError):
    """An event that cannot be used. `reason` is a stable code; `field` the offending field."""

    # ClassVar: compiled (mypyc), a plain class attribute would be an instance slot.
    reason: ClassVar[str] = "invalid_event"

    def __init__(
        self, message: str, field: str | None = None, partial: dict[str, Any] | None = None
    ):
        super().__init__(message)
        self.message = message
        self.field = field
        # The decoded object when JSON parsed: lets the monitor attribute the error to a model.
        self.partial = partial


class OversizedEvent(EventError):
    reason = "oversized"


class NotUtf8(EventError):
    reason = "not_utf8"


class MalformedJson(EventError):
    reason = "malformed_json"


class NotAnObject(EventError):
    reason = "not_an_object"


class MissingField(EventError):
    reason = "missing_field"


class WrongType(EventError):
    reason = "wrong_type"


class InvalidValue(EventError):
    reason = "invalid_value"


class UnknownEventKind(EventError):
    reason = "unknown_kind"


Scalar = float | int | bool | str


class Record(NamedTuple):
    """One input record as a runtime hands it over: what it is, and where it was read.

    `value` is the raw bytes (or already decoded JSON); `timestamp_ms` the Kafka record's time
    (None when there is none); `topic`, `partition` and `offset` its position (in replay: the file
    name, the partition its model would have on Kafka, and the line number); `key` its Kafka key
    (a dead letter keeps it).
    """

    kind: str
    value: bytes | str | dict[str, Any]
    timestamp_ms: int | None
    topic: str | None
    partition: int
    offset: int
    key: bytes | None = None


class Prediction:
    """A validated prediction event. `time_ms` is event time (or the Kafka timestamp, or None)."""

    __slots__ = (
        "features",
        "model",
        "model_version",
        "prediction",
        "prediction_id",
        "score",
        "segment",
        "time_ms",
    )

    def __init__(
        self,
        prediction_id: str,
        model: str,
        prediction: Scalar,
        *,
        model_version: str | None = None,
        time_ms: int | None = None,
        score: float | None = None,
        features: dict[str, Any] | None = None,
        segment: dict[str, str] | None = None,
    ) -> None:
        self.prediction_id = prediction_id
        self.model = model
        self.prediction = prediction
        self.model_version = model_version
        self.time_ms = time_ms
        self.score = score
        self.features = features
        self.segment = segment


class Label:
    """A validated label (ground truth) event; `prediction` is set when it carries its prediction."""

    __slots__ = (
        "label",
        "model",
        "model_version",
        "prediction",
        "prediction_id",
        "segment",
        "time_ms",
    )

    def __init__(
        self,
        prediction_id: str,
        model: str,
        label: Scalar,
        *,
        time_ms: int | None = None,
        prediction: Scalar | None = None,
        model_version: str | None = None,
        segment: dict[str, str] | None = None,
    ) -> None:
        self.prediction_id = prediction_id
        self.model = model
        self.label = label
        self.time_ms = time_ms
        self.prediction = prediction
        self.model_version = model_version
        self.segment = segment


def parse_json(value: bytes | str | dict[str, Any], max_bytes: int) -> dict[str, Any]:
    """Turn raw bytes into a JSON object, classifying every way that can fail."""
    if isinstance(value, dict):
        return value
    if len(value) > max_bytes:
        raise OversizedEvent(f"event is {len(value)} bytes, larger than the {max_bytes} byte limit")
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        if isinstance(value, (bytes, bytearray, memoryview)):
            try:
                bytes(value).decode("utf-8")
            except UnicodeDecodeError as utf_exc:
                raise NotUtf8(
                    f"event is not valid UTF-8: {utf_exc.reason} at byte {utf_exc.start}"
                ) from exc
        raise MalformedJson(f"event is not valid JSON: {exc}") from exc
    except RecursionError as exc:  # pragma: no cover - orjson limits depth itself
        raise MalformedJson("event is nested too deeply") from exc
    if type(obj) is not dict:
        raise NotAnObject(f"event must be a JSON object, got {_json_type(obj)}")
    return obj


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if type(value) is bool:
        return "boolean"
    if type(value) in (int, float):
        return "number"
    if type(value) is str:
        return "string"
    if type(value) is list:
        return "array"
    if type(value) is dict:
        return "object"
    return type(value).__name__


def _required_string(obj: dict[str, Any], field: str) -> str:
    value = obj.get(field)
    if value is None:
        raise MissingField(f"field '{field}' is required", field, obj)
    if type(value) is not str:
        raise WrongType(f"field '{field}' must be a string, got {_json_type(value)}", field, obj)
    if not value:
        raise InvalidValue(f"field '{field}' must not be empty", field, obj)
    if len(value) > MAX_STRING_FIELD:
        raise InvalidValue(
            f"field '{field}' is longer than {MAX_STRING_FIELD} characters", field, obj
        )
    return value


def _optional_string(obj: dict[str, Any], field: str) -> str | None:
    value = obj.get(field)
    if value is None:
        return None
    if type(value) is not str:
        raise WrongType(f"field '{field}' must be a string, got {_json_type(value)}", field, obj)
    if len(value) > MAX_STRING_FIELD:
        raise InvalidValue(
            f"field '{field}' is longer than {MAX_STRING_FIELD} characters", field, obj
        )
    return value


def _scalar(obj: dict[str, Any], field: str, *, required: bool) -> Scalar | None:
    value = obj.get(field)
    if value is None:
        if required:
            raise MissingField(f"field '{field}' is required", field, obj)
        return None
    kind = type(value)
    if kind is float:
        if not math.isfinite(value):
            raise InvalidValue(f"field '{field}' must be finite", field, obj)
        if not -MAX_MAGNITUDE <= value <= MAX_MAGNITUDE:
            raise _too_large(field, obj)
        return value  # type: ignore[no-any-return]
    if kind is int:
        if not -MAX_MAGNITUDE <= value <= MAX_MAGNITUDE:
            raise _too_large(field, obj)
        return value  # type: ignore[no-any-return]
    if kind is bool or kind is str:
        return value  # type: ignore[no-any-return]
    raise WrongType(
        f"field '{field}' must be a number, boolean or string, got {_json_type(value)}", field, obj
    )


def _optional_number(obj: dict[str, Any], field: str) -> float | None:
    value = obj.get(field)
    if value is None:
        return None
    kind = type(value)
    if kind is not float and kind is not int:
        raise WrongType(f"field '{field}' must be a number, got {_json_type(value)}", field, obj)
    if not math.isfinite(value):
        raise InvalidValue(f"field '{field}' must be finite", field, obj)
    if not -MAX_MAGNITUDE <= value <= MAX_MAGNITUDE:
        raise _too_large(field, obj)
    return float(value)


def _too_large(field: str, obj: dict[str, Any]) -> InvalidValue:
    return InvalidValue(
        f"field '{field}' is beyond ±{MAX_MAGNITUDE:g}: too large to monitor", field, obj
    )


def parse_timestamp(
    value: object, field: str = "timestamp", obj: dict[str, Any] | None = None
) -> int:
    """RFC 3339 string or integer epoch milliseconds -> epoch milliseconds, within the bounds."""
    kind = type(value)
    if kind is int:
        millis: int = value  # type: ignore[assignment]
        if MIN_TIME_MS <= millis < MAX_TIME_MS:
            return millis
        raise InvalidValue(_out_of_range(field, millis), field, obj)
    if kind is str:
        text: str = value  # type: ignore[assignment]
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise InvalidValue(
                f"field '{field}' is not an RFC 3339 timestamp: {value!r}", field, obj
            ) from None
        if parsed.tzinfo is None:
            raise InvalidValue(
                f"field '{field}' needs a UTC offset (RFC 3339), got {value!r}", field, obj
            )
        try:
            millis = int(parsed.timestamp() * 1000)
        except (OverflowError, ValueError):
            millis = -1
        if MIN_TIME_MS <= millis < MAX_TIME_MS:
            return millis
        raise InvalidValue(
            f"field '{field}' is {value!r}, outside 2000-01-01 .. 2100-01-01", field, obj
        )
    raise WrongType(
        f"field '{field}' must be an RFC 3339 string or integer epoch milliseconds, "
        f"got {_json_type(value)}",
        field,
        obj,
    )


# What an out-of-range integer most likely is, by its magnitude: (low, high, unit).
_LIKELY_UNITS: Final = (
    (MIN_TIME_MS // 1000, MAX_TIME_MS // 1000, "seconds"),
    (MIN_TIME_MS * 1000, MAX_TIME_MS * 1000, "microseconds"),
    (MIN_TIME_MS * 1_000_000, MAX_TIME_MS * 1_000_000, "nanoseconds"),
)


def _out_of_range(field: str, millis: int) -> str:
    message = f"field '{field}' is {millis}, outside 2000-01-01 .. 2100-01-01 in epoch milliseconds"
    for low, high, unit in _LIKELY_UNITS:
        if low <= millis < high:
            return f"{message} (it looks like epoch {unit}: send milliseconds)"
    return message


def parse_number(text: str) -> int | float | None:
    """A number written as text (`3`, `0.5`, `1e3`, `nan`): an int when it is one, else a float
    (maybe not finite: the caller decides); None when the text is not a number."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return None


def record_time(timestamp_ms: int | None) -> int | None:
    """A Kafka record's timestamp as a fallback event time: None when absent or out of bounds."""
    if timestamp_ms is not None and MIN_TIME_MS <= timestamp_ms < MAX_TIME_MS:
        return timestamp_ms
    return None


def format_time(time_ms: int | None) -> str | None:
    """Epoch milliseconds as RFC 3339 UTC with milliseconds (`2026-01-01T00:00:00.000Z`)."""
    if time_ms is None:
        return None
    moment = datetime.fromtimestamp(time_ms / 1000, tz=timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _time(obj: dict[str, Any], fallback_ms: int | None) -> int | None:
    value = obj.get("timestamp")
    if value is None:
        return fallback_ms
    return parse_timestamp(value, "timestamp", obj)


def _features(obj: dict[str, Any]) -> dict[str, Any] | None:
    value = obj.get("features")
    if value is None:
        return None
    if type(value) is not dict:
        raise WrongType(
            f"field 'features' must be an object, got {_json_type(value)}", "features", obj
        )
    for name, item in value.items():
        kind = type(item)
        if kind is float or kind is int or kind is str or kind is bool or item is None:
            continue
        raise WrongType(
            f"field 'features.{name}' must be a number, string, boolean or null, got {_json_type(item)}",
            f"features.{name}",
            obj,
        )
    return value


def _segment(obj: dict[str, Any]) -> dict[str, str] | None:
    value = obj.get("segment")
    if value is None:
        return None
    if type(value) is not dict:
        raise WrongType(
            f"field 'segment' must be an object, got {_json_type(value)}", "segment", obj
        )
    for name, item in value.items():
        if type(item) is not str:
            raise WrongType(
                f"field 'segment.{name}' must be a string, got {_json_type(item)}",
                f"segment.{name}",
                obj,
            )
    return value


def decode_prediction(
    value: bytes | str | dict[str, Any],
    fallback_time_ms: int | None = None,
    max_bytes: int = DEFAULT_MAX_EVENT_BYTES,
) -> Prediction:
    """A validated prediction; `fallback_time_ms` is its time when it carries none."""
    obj = parse_json(value, max_bytes)
    return Prediction(
        _required_string(obj, "prediction_id"),
        _required_string(obj, "model"),
        _scalar(obj, "prediction", required=True),  # type: ignore[arg-type]
        model_version=_optional_string(obj, "model_version"),
        time_ms=_time(obj, fallback_time_ms),
        score=_optional_number(obj, "score"),
        features=_features(obj),
        segment=_segment(obj),
    )


def decode_label(
    value: bytes | str | dict[str, Any],
    fallback_time_ms: int | None = None,
    max_bytes: int = DEFAULT_MAX_EVENT_BYTES,
) -> Label:
    """A validated label; `fallback_time_ms` is its time when it carries none."""
    obj = parse_json(value, max_bytes)
    return Label(
        _required_string(obj, "prediction_id"),
        _required_string(obj, "model"),
        _scalar(obj, "label", required=True),  # type: ignore[arg-type]
        time_ms=_time(obj, fallback_time_ms),
        prediction=_scalar(obj, "prediction", required=False),
        model_version=_optional_string(obj, "model_version"),
        segment=_segment(obj),
    )


Decoded = Prediction | Label | EventError


def decode(record: Record, max_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> Decoded:
    """A record's event, or the error that says why it cannot be used (never raises it)."""
    fallback = record_time(record.timestamp_ms)
    try:
        if record.kind == PREDICTION:
            return decode_prediction(record.value, fallback, max_bytes)
        if record.kind == LABEL:
            return decode_label(record.value, fallback, max_bytes)
        raise UnknownEventKind(f"unknown event kind {record.kind!r}")
    except EventError as error:
        return error
