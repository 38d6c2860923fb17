"""Seeded hostile input: each message comes with the dead-letter reason the contract promises.

The kinds cover what producers get wrong in practice (bytes that are not UTF-8, text that is not
JSON, NaN/Infinity, numbers beyond a double, deep nesting, wrong types, missing or empty fields,
payloads of many megabytes) plus what they add on top: empty or absent keys and unknown headers.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from stream_monitor.core.events import LABEL, PREDICTION

BIG_PAYLOAD_BYTES = 10 * 1024 * 1024
# Valid events whose numbers are extreme but finite: the monitor must process them, not crash.
EXTREME_MODEL = "extreme"
JSON_MAX_DEPTH = 1024


@dataclass(frozen=True)
class Hostile:
    kind: str  # PREDICTION or LABEL: which input topic it goes to
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]
    reason: str  # expected dead-letter reason; "" for a valid (extreme) event


def _event(rng: random.Random, kind: str) -> dict[str, Any]:
    number = rng.randrange(10**6)
    if kind == PREDICTION:
        return {"prediction_id": f"h{number}", "model": "hostile", "prediction": 1}
    return {"prediction_id": f"h{number}", "model": "hostile", "label": 1}


def _not_utf8(rng: random.Random, kind: str) -> tuple[bytes, str]:
    raw = bytearray(rng.randbytes(rng.randrange(1, 200)))
    raw.insert(rng.randrange(len(raw) + 1), 0xFF)  # never valid anywhere in UTF-8
    return bytes(raw), "not_utf8"


def _not_json(rng: random.Random, kind: str) -> tuple[bytes, str]:
    text = "".join(rng.choice("{}[]:,\"' abcxyz0123456789\\ntrue") for _ in range(50))
    text = "{" + text  # an object that never closes properly
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return text.encode(), "malformed_json"
    return b'{"unterminated": ', "malformed_json"


def _non_finite(rng: random.Random, kind: str) -> tuple[bytes, str]:
    field = "prediction" if kind == PREDICTION else "label"
    literal = rng.choice(["NaN", "Infinity", "-Infinity", "1e400", "-1e999"])
    body = orjson.dumps(_event(rng, kind))[:-1] + f', "{field}": {literal}}}'.encode()
    return body, "malformed_json"


def _deep(rng: random.Random, kind: str) -> tuple[bytes, str]:
    """orjson parses up to 1024 levels; deeper input is malformed JSON, not a stack overflow."""
    if rng.random() < 0.5:
        depth = rng.randrange(JSON_MAX_DEPTH + 1, 100_000)
        return b"[" * depth + b"]" * depth, "malformed_json"
    depth = rng.randrange(2, JSON_MAX_DEPTH)  # the event object itself is one level
    nested = b"[" * depth + b"]" * depth
    if rng.random() < 0.5:
        return nested, "not_an_object"
    event = orjson.dumps(_event(rng, kind))[:-1]
    return event + b', "segment": ' + nested + b"}", "wrong_type"


def _not_object(rng: random.Random, kind: str) -> tuple[bytes, str]:
    return rng.choice([b"null", b"42", b'"text"', b"[1, 2, 3]", b"true"]), "not_an_object"


def _wrong_type(rng: random.Random, kind: str) -> tuple[bytes, str]:
    event = _event(rng, kind)
    field, value = rng.choice(
        [
            ("prediction_id", rng.randrange(100)),
            ("model", ["a", "b"]),
            ("prediction" if kind == PREDICTION else "label", {"nested": True}),
            ("timestamp", True),
            ("segment", {"region": 7}),
            ("model_version", 3.5),
        ]
        + (
            [("score", "high"), ("features", "x"), ("features", {"f": [1]})]
            if kind == PREDICTION
            else []
        )
    )
    event[field] = value
    return orjson.dumps(event), "wrong_type"


def _missing(rng: random.Random, kind: str) -> tuple[bytes, str]:
    event = _event(rng, kind)
    del event[rng.choice(list(event))]
    return orjson.dumps(event), "missing_field"


def _invalid_value(rng: random.Random, kind: str) -> tuple[bytes, str]:
    event = _event(rng, kind)
    field, value = rng.choice(
        [("model", ""), ("prediction_id", "x" * 2000), ("timestamp", "yesterday")]
    )
    event[field] = value
    return orjson.dumps(event), "invalid_value"


def _extreme(rng: random.Random, kind: str) -> tuple[bytes, str]:
    """Huge but finite numbers: valid up to the contract's ±1e100, invalid beyond it.

    (orjson reads integers beyond 64 bits as doubles, so "1" followed by 30 zeros is 1e30.)
    """
    event: dict[str, Any] = {"prediction_id": f"x{rng.randrange(10**9)}", "model": EXTREME_MODEL}
    body = orjson.dumps(event)[:-1]
    number, reason = rng.choice(
        [
            ("1e99", ""),
            ("-1" + "0" * 30, ""),
            ("5e-324", ""),
            ("1e308", "invalid_value"),
            ("-1.7976931348623157e308", "invalid_value"),
        ]
    )
    if kind == PREDICTION:
        field = rng.choice(["prediction", "score", "features"])
        if field == "features":  # a feature too large to monitor counts as missing, not invalid
            return body + f', "prediction": 1, "features": {{"f": {number}}}}}'.encode(), ""
        return body + f', "prediction": 1, "{field}": {number}}}'.encode(), reason
    return body + f', "label": {number}}}'.encode(), reason


KINDS: list[Callable[[random.Random, str], tuple[bytes, str]]] = [
    _not_utf8,
    _not_json,
    _non_finite,
    _deep,
    _not_object,
    _wrong_type,
    _missing,
    _invalid_value,
    _extreme,
]


def _headers(rng: random.Random) -> list[tuple[str, bytes]]:
    """Unknown headers, including names that look like ours and values that are not text."""
    names = ["x-unknown", "stream_monitor-origin", "kafka_dlt-original-topic", "", "\u00e9t\u00e9"]
    return [
        (rng.choice(names), rng.randbytes(rng.randrange(0, 40))) for _ in range(rng.randrange(4))
    ]


def _key(rng: random.Random) -> bytes | None:
    return rng.choice([None, b"", b"hostile", rng.randbytes(8)])


def hostile_messages(seed: int, count: int, big: int) -> list[Hostile]:
    """`count` seeded hostile messages, `big` of them payloads of BIG_PAYLOAD_BYTES."""
    rng = random.Random(seed)
    result = []
    for index in range(count):
        kind = PREDICTION if rng.random() < 0.6 else LABEL
        if index < big:
            pad = "p" * BIG_PAYLOAD_BYTES
            value, reason = orjson.dumps({**_event(rng, kind), "pad": pad}), "oversized"
        else:
            value, reason = rng.choice(KINDS)(rng, kind)
        result.append(Hostile(kind, _key(rng), value, _headers(rng), reason))
    rng.shuffle(result)
    return result
