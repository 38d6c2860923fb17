"""Signed, data-only state records: safe to read back from a topic that others can write to.

Format: b"SM1" + HMAC-SHA256(key, payload) + payload, where payload is orjson. The signature is
checked before anything is parsed, and parsing never constructs arbitrary objects, so a tampered or
forged record is rejected with a clear error instead of being executed.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import orjson

from stream_monitor.errors import StateError

MAGIC = b"SM1"
_DIGEST = hashlib.sha256
_SIGNATURE_BYTES = 32


class StateCodec:
    """Encodes and verifies state records with one shared key."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise StateError("the state signing key must be at least 16 bytes")
        self._key = key

    def encode(self, data: Any) -> bytes:
        payload = orjson.dumps(data)
        return MAGIC + hmac.digest(self._key, payload, _DIGEST) + payload

    def decode(self, blob: bytes) -> Any:
        if not blob.startswith(MAGIC):
            raise StateError("state record has an unknown format (missing SM1 header)")
        signature = blob[len(MAGIC) : len(MAGIC) + _SIGNATURE_BYTES]
        payload = blob[len(MAGIC) + _SIGNATURE_BYTES :]
        expected = hmac.digest(self._key, payload, _DIGEST)
        if not hmac.compare_digest(signature, expected):
            raise StateError(
                "state record signature does not match: the record was tampered with "
                "or signed with another key (check state.signing_key)"
            )
        try:
            return orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise StateError(f"state record payload is not valid JSON: {exc}") from exc
