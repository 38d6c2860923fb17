"""Redaction of secrets (SASL passwords, SSL keys, signing keys) before anything is logged or printed."""

from __future__ import annotations

import re
from typing import Any

SECRET_KEY = re.compile(
    r"(password|secret|token|credential|signing_key|private|\.key$|key\.pem|jaas)", re.I
)
REDACTED = "***"


def is_secret(name: str) -> bool:
    return bool(SECRET_KEY.search(name))


def redact(value: Any, name: str = "") -> Any:
    """A copy of `value` in which every entry whose key looks secret is replaced by '***'."""
    if isinstance(value, dict):
        return {key: redact(item, str(key)) for key, item in value.items()}
    if isinstance(value, list):
        return [redact(item, name) for item in value]
    if name and is_secret(name) and value not in (None, ""):
        return REDACTED
    return value
