"""Redaction of secrets (SASL passwords, SSL keys, signing keys, HTTP credentials) before anything
is logged or printed."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

SECRET_KEY = re.compile(
    r"(password|secret|token|credential|signing_key|private|\.key$|key\.pem|jaas"
    r"|authorization|api[-_]?key|cookie)",
    re.I,
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
    if name == "url" and isinstance(value, str):
        return display_url(value)
    return value


def display_url(url: str) -> str:
    """Scheme, host and port only: webhook URLs carry tokens in their path, query or user info
    (a Slack incoming-webhook URL is itself the credential)."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    rest = "/..." if (parts.path not in ("", "/") or parts.query or parts.username) else ""
    return f"{parts.scheme}://{host}{port}{rest}"


def url_secrets(url: str) -> list[str]:
    """The parts of a URL that must never reach a log line: the whole URL, its query, password."""
    parts = urlsplit(url)
    found = [url]
    if parts.query:
        found.append(parts.query)
    if parts.password:
        found.append(parts.password)
    if parts.path not in ("", "/") and parts.path.count("/") > 1:
        found.append(parts.path)
    return found


def secret_values(value: Any, name: str = "") -> list[str]:
    """Every value in `value` stored under a secret-looking key, as text (for log scrubbing)."""
    if isinstance(value, dict):
        return [found for key, item in value.items() for found in secret_values(item, str(key))]
    if isinstance(value, list):
        return [found for item in value for found in secret_values(item, name)]
    if name and is_secret(name) and value not in (None, ""):
        return [str(value)]
    return []
