"""Log lines: key=value context lifted into JSON fields, and known secrets scrubbed in both formats."""

from __future__ import annotations

import logging

import orjson

from stream_monitor.logs import JsonFormatter, Secrets, TextFormatter
from stream_monitor.secrets import secret_values


def record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    entry = logging.LogRecord("stream_monitor.x", logging.INFO, __file__, 1, message, args, None)
    entry.__dict__.update(extra)
    return entry


def test_json_lines_carry_the_key_value_fields_with_their_types() -> None:
    line = JsonFormatter(Secrets()).format(
        record(
            "alert id=%s model=%s partition=%d offset=%d ratio=%s",
            "abc",
            "credit",
            3,
            1200,
            "0.5",
            request="r-1",
        )
    )
    entry = orjson.loads(line)
    assert "\n" not in line
    assert entry["level"] == "INFO" and entry["logger"] == "stream_monitor.x"
    assert entry["message"] == "alert id=abc model=credit partition=3 offset=1200 ratio=0.5"
    assert (entry["id"], entry["model"], entry["partition"], entry["offset"]) == (
        "abc",
        "credit",
        3,
        1200,
    )
    assert entry["ratio"] == 0.5 and entry["request"] == "r-1"
    assert entry["ts"].endswith("+00:00")


def test_json_lines_include_the_exception() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        entry = record("failed")
        entry.exc_info = sys.exc_info()
    assert "ValueError: boom" in orjson.loads(JsonFormatter(Secrets()).format(entry))["exception"]


def test_registered_secrets_never_appear_in_either_format() -> None:
    secrets = Secrets()
    config = {
        "client": {"sasl.username": "monitor", "sasl.password": "hunter2-very-secret"},
        "producer": {"ssl.key.password": "pem-pass", "linger.ms": 5},
        "consumer": {"sasl.oauthbearer.client.secret": "tok"},  # too short to scrub safely
    }
    secrets.add(*secret_values(config))
    assert secret_values(config) == ["hunter2-very-secret", "pem-pass", "tok"]
    leaked = record("connect failed: sasl.password=%s (%s)", "hunter2-very-secret", "pem-pass")
    text = TextFormatter(secrets).format(leaked)
    assert "hunter2" not in text and "pem-pass" not in text
    assert text.endswith("connect failed: sasl.password=*** (***)")
    entry = orjson.loads(
        JsonFormatter(secrets).format(record("x", detail="hunter2-very-secret and more"))
    )
    assert entry["detail"] == "*** and more"
    assert "hunter2" not in orjson.dumps(entry).decode()
