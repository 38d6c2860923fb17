"""Signed, data-only state records: safe to read back from a topic that others can write to.

Two formats, both read back:
- b"SM1" + HMAC-SHA256(key, payload) + payload, where payload is orjson. Written for records that
  hold no bytes (join entries, metadata): the cheapest for small records.
- b"SM2" + HMAC-SHA256(key, body) + body, for records holding bytes values (river's ADWIN windows):
  body = JSON length (4 bytes, big-endian) + JSON + the bytes values, one after another, each
  referred to in the JSON as {"$bytes": [start, length]}. Raw bytes instead of base64 text: a key's
  state is a fifth smaller and cheaper to write, and with many keys every checkpoint writes
  thousands of them. (zlib on top made records 3x smaller but encoding 3x slower, and the producer
  compresses batches with lz4 in its own thread anyway.)

The signature is checked before anything is parsed, and parsing never constructs
arbitrary objects, so a tampered or forged record is rejected with a clear error instead of being
executed.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from typing import Any

import orjson

from stream_monitor.errors import StateError

MAGIC = b"SM1"
MAGIC_FRAMED = b"SM2"
_DIGEST = hashlib.sha256
_SIGNATURE_BYTES = 32
_PREFIX = len(MAGIC) + _SIGNATURE_BYTES
_LENGTH = struct.Struct(">I")  # of the JSON in an SM2 body
BYTES_MARKER = "$bytes"


class StateCodec:
    """Encodes and verifies state records with one shared key."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise StateError("the state signing key must be at least 16 bytes")
        self._key = key

    def encode(self, data: Any) -> bytes:
        blobs: list[bytes] = []
        size = 0

        def out_of_band(value: Any) -> Any:
            nonlocal size
            if type(value) is not bytes:
                raise TypeError(f"state cannot hold {type(value).__name__}")
            blobs.append(value)
            ref = {BYTES_MARKER: [size, len(value)]}
            size += len(value)
            return ref

        payload = orjson.dumps(data, default=out_of_band)
        if not blobs:
            return MAGIC + hmac.digest(self._key, payload, _DIGEST) + payload
        body = _LENGTH.pack(len(payload)) + payload + b"".join(blobs)
        return MAGIC_FRAMED + hmac.digest(self._key, body, _DIGEST) + body

    def decode(self, blob: bytes) -> Any:
        magic = blob[: len(MAGIC)]
        if magic != MAGIC and magic != MAGIC_FRAMED:
            raise StateError("state record has an unknown format (missing SM1/SM2 header)")
        signature = blob[len(MAGIC) : _PREFIX]
        body = blob[_PREFIX:]
        expected = hmac.digest(self._key, body, _DIGEST)
        if not hmac.compare_digest(signature, expected):
            raise StateError(
                "state record signature does not match: the record was tampered with "
                "or signed with another key (check state.signing_key)"
            )
        try:
            if magic == MAGIC:
                return orjson.loads(body)
            return _unframe(body)
        except orjson.JSONDecodeError as exc:
            raise StateError(f"state record payload is not valid JSON: {exc}") from exc
        except (struct.error, TypeError, ValueError) as exc:
            raise StateError(f"state record body is not understood: {exc}") from exc


def _unframe(body: bytes) -> Any:
    (length,) = _LENGTH.unpack_from(body)
    start = _LENGTH.size + length
    data = orjson.loads(body[_LENGTH.size : start])
    return _resolve(data, memoryview(body)[start:])


def _resolve(value: Any, blobs: memoryview) -> Any:
    """Puts the bytes values back where the JSON refers to them."""
    if type(value) is list:
        for index, item in enumerate(value):
            if type(item) is list or type(item) is dict:
                value[index] = _resolve(item, blobs)
        return value
    if type(value) is dict:
        ref = value.get(BYTES_MARKER)
        if ref is not None and len(value) == 1:
            offset, length = ref
            if offset + length > len(blobs):
                raise ValueError("a bytes value lies beyond the end of the record")
            return bytes(blobs[offset : offset + length])
        for key, item in value.items():
            if type(item) is list or type(item) is dict:
                value[key] = _resolve(item, blobs)
        return value
    return value
