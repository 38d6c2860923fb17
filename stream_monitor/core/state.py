"""State as plain data, and the signed, data-only bytes it travels in.

`StateChanges` is what a `Monitor` hands out (`snapshot()`, `take_changes()`) and takes back
(`restore()`): metadata, monitor keys, and join entries in the order they changed.

`StateCodec` turns one piece of it into the value of a changelog record:
b"SM3" + HMAC-SHA256(key, what is signed) + body, where the body is a JSON length (4 bytes,
big-endian), the JSON, then the bytes values it refers to as {"$bytes": [start, length]} (river's
ADWIN windows, carried raw instead of as base64 text). What is signed is the body together with
the record's key and a context the reader knows independently (the processing layer passes the
partition and the input offsets the record reflects): a valid value moved to another key, another
partition or another point of the input does not verify. A deletion (a tombstone: no value) is
signed too, in a header (`tombstone_signature`).

The signature is checked before anything is parsed, and parsing never constructs arbitrary
objects: a tampered, forged or unsigned record is rejected with a clear error instead of being
executed. Records of earlier formats (SM1, SM2: the value alone was signed) are rejected the same
way.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from stream_monitor.errors import StateError

MAGIC = b"SM3"
_TOMBSTONE = b"SM3-deleted"
_OLD_FORMATS = (b"SM1", b"SM2")
_DIGEST = hashlib.sha256
SIGNATURE_BYTES = 32
_PREFIX = len(MAGIC) + SIGNATURE_BYTES
_LENGTH = struct.Struct(">I")
BYTES_MARKER = "$bytes"

# A pending join entry as it is written: [model, prediction_id, entry], where entry is
# ["p", key id, prediction, time] or ["l", label, time], or None (gone). The row a changelog
# record holds, so that writing and reading it builds no other shape.
JoinEntry = list[Any]


KeyDump = dict[str, Any] | None


class KeyDumps(Mapping[str, KeyDump]):
    """Monitor keys' state, each dumped when it is read (`Monitor.take_changes(lazy=True)`).

    A checkpoint of 10,000 changed keys held every dump at once, about 50 KB of Python objects
    per key, before its first record was written: 500 MB that the process kept. Read lazily,
    one dump lives at a time. Read it before the monitor processes anything more: a dump is
    of the state when it is read.
    """

    def __init__(self, states: Mapping[str, Any]) -> None:
        self._states = states  # key id -> its state, which has `dump()`

    def __getitem__(self, key_id: str) -> KeyDump:
        dumped: KeyDump = self._states[key_id].dump()
        return dumped

    def __iter__(self) -> Iterator[str]:
        return iter(self._states)

    def __len__(self) -> int:
        return len(self._states)


@dataclass
class StateChanges:
    """State (or a change of it) as plain data. `None` values are deletions."""

    meta: dict[str, Any] | None = None
    keys: Mapping[str, KeyDump] = field(default_factory=dict)
    join: list[JoinEntry] = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.meta is not None or bool(self.keys) or bool(self.join)


class StateCodec:
    """Encodes and verifies state records with one shared key."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise StateError("the state signing key must be at least 16 bytes")
        self._key = key

    def _mac(self, kind: bytes, key: bytes, context: bytes, body: bytes) -> bytes:
        signed = b"".join(
            (kind, _LENGTH.pack(len(key)), key, _LENGTH.pack(len(context)), context, body)
        )
        return hmac.digest(self._key, signed, _DIGEST)

    def encode(self, key: bytes, data: Any, context: bytes) -> bytes:
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
        body = b"".join((_LENGTH.pack(len(payload)), payload, *blobs))
        return MAGIC + self._mac(MAGIC, key, context, body) + body

    def encode_json(self, key: bytes, payload: bytes, context: bytes) -> bytes:
        """`encode` for a payload that is already JSON (and holds no bytes values)."""
        body = _LENGTH.pack(len(payload)) + payload
        return MAGIC + self._mac(MAGIC, key, context, body) + body

    def decode(self, key: bytes, blob: bytes, context: bytes) -> Any:
        """Verify, then parse (raises StateError on either)."""
        self.verify(key, blob, context)
        return self.parse(blob)

    def verify(self, key: bytes, blob: bytes, context: bytes) -> None:
        magic = bytes(blob[: len(MAGIC)])
        if magic in _OLD_FORMATS:
            raise StateError(
                f"state record is in the {magic.decode()} format of an earlier version, whose "
                "signature does not cover its key and position"
            )
        if magic != MAGIC:
            raise StateError("state record has an unknown format (no SM3 header)")
        signature = blob[len(MAGIC) : _PREFIX]
        body = blob[_PREFIX:]
        if not hmac.compare_digest(signature, self._mac(MAGIC, key, context, body)):
            raise StateError(
                "state record signature does not match: the record was tampered with, moved, "
                "or signed with another key (check state.signing_key)"
            )

    @staticmethod
    def parse(blob: bytes) -> Any:
        """The data of a record `verify` accepted (never call it on an unverified one)."""
        try:
            return _unframe(blob[_PREFIX:])
        except orjson.JSONDecodeError as exc:
            raise StateError(f"state record payload is not valid JSON: {exc}") from exc
        except (struct.error, TypeError, ValueError) as exc:
            raise StateError(f"state record body is not understood: {exc}") from exc

    def tombstone_signature(self, key: bytes, context: bytes) -> bytes:
        """What a deletion of `key` carries in its header, to be accepted."""
        return self._mac(_TOMBSTONE, key, context, b"")

    def check_tombstone(self, key: bytes, signature: bytes | None, context: bytes) -> None:
        if signature is None:
            raise StateError("state deletion (tombstone) is not signed")
        if not hmac.compare_digest(signature, self.tombstone_signature(key, context)):
            raise StateError(
                "state deletion (tombstone) signature does not match: it was forged, moved, "
                "or signed with another key (check state.signing_key)"
            )


def _unframe(body: bytes) -> Any:
    (length,) = _LENGTH.unpack_from(body)
    start = _LENGTH.size + length
    if start > len(body):
        raise ValueError("the JSON length runs past the end of the record")
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
            if offset < 0 or length < 0 or offset + length > len(blobs):
                raise ValueError("a bytes value lies beyond the end of the record")
            return bytes(blobs[offset : offset + length])
        for key, item in value.items():
            if type(item) is list or type(item) is dict:
                value[key] = _resolve(item, blobs)
        return value
    return value
