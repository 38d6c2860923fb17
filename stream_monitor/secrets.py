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


def secret_values(value: Any, name: str = "") -> list[str]:
    """Every value in `value` stored under a secret-looking key, as text (for log scrubbing)."""
    if isinstance(value, dict):
        return [found for key, item in value.items() for found in secret_values(item, str(key))]
    if isinstance(value, list):
        return [found for item in value for found in secret_values(item, name)]
    if name and is_secret(name) and value not in (None, ""):
        return [str(value)]
    return []
