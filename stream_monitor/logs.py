"""Log output: readable lines or one JSON object per line, with every known secret scrubbed.

Log calls across the project put context in the message as `key=value` fields (`model=%s
partition=%d offset=%d`). The text format prints them as they are; the JSON format also lifts
them into top-level fields, so a log pipeline can filter on `model` or `partition` without parsing.

Redacting by setting name (see `secrets.redact`) protects what we print on purpose. Scrubbing by
value protects against the rest: a client library echoing its config, an exception that quotes a
connection string. Every handler's formatter replaces each registered secret value with `***`.
"""

from __future__ import annotations

import logging
import math
import re
import sys
import threading
from datetime import datetime, timezone
from typing import Any

import orjson

from stream_monitor.core.events import parse_number
from stream_monitor.secrets import REDACTED

_FIELD = re.compile(r"(?<![\w.])([a-z_][a-z0-9_]*)=(\S+)")
# Secrets shorter than this are not scrubbed: replacing every "ab" in every line would garble logs
# without protecting anything (such a secret is guessable anyway).
MIN_SECRET_LENGTH = 4
# The attributes every LogRecord has; anything else on a record came in through `extra=`.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class Secrets:
    """The secret values of this process (thread-safe: librdkafka logs from its own threads)."""

    def __init__(self) -> None:
        self._values: tuple[str, ...] = ()
        self._lock = threading.Lock()

    def add(self, *values: str | None) -> None:
        with self._lock:
            known = set(self._values)
            known.update(v for v in values if v and len(v) >= MIN_SECRET_LENGTH)
            # Longest first, so a secret that contains another is replaced whole.
            self._values = tuple(sorted(known, key=len, reverse=True))

    def scrub(self, text: str) -> str:
        for value in self._values:
            if value in text:
                text = text.replace(value, REDACTED)
        return text


SECRETS = Secrets()


class TextFormatter(logging.Formatter):
    """`2026-11-25 10:00:00,123 INFO stream_monitor.kafka.service message key=value ...`."""

    def __init__(self, secrets: Secrets = SECRETS) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")
        self.secrets = secrets

    def format(self, record: logging.LogRecord) -> str:
        return self.secrets.scrub(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, the message's key=value fields,
    any `extra=` fields, and `exception` when there is one."""

    def __init__(self, secrets: Secrets = SECRETS) -> None:
        super().__init__()
        self.secrets = secrets

    def format(self, record: logging.LogRecord) -> str:
        scrub = self.secrets.scrub
        message = scrub(record.getMessage())
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": message,
        }
        for key, value in _FIELD.findall(message):
            entry.setdefault(key, _scalar(value))
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry.setdefault(key, _jsonable(value, scrub))
        if record.exc_info:
            entry["exception"] = scrub(self.formatException(record.exc_info))
        return orjson.dumps(entry, default=str).decode()


def _scalar(text: str) -> Any:
    """`partition=3` becomes 3, `ratio=0.5` 0.5; anything else stays the text it was."""
    number = parse_number(text)
    return text if number is None or not math.isfinite(number) else number


def _jsonable(value: Any, scrub: Any) -> Any:
    if isinstance(value, (bool, int, float)) or value is None:
        return value
    return scrub(str(value))


def configure_logging(level: str, log_format: str = "text") -> None:
    """The only place that sets up logging (the CLI calls it once)."""
    numeric = getattr(logging, level.upper(), logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(numeric)
    # librdkafka repeats every connection failure; the service reports them once per attempt.
    quiet = numeric if numeric <= logging.DEBUG else logging.CRITICAL
    logging.getLogger("stream_monitor.librdkafka").setLevel(quiet)
