"""Webhook sink: each alert POSTed as a CloudEvent (HTTP binding), or as Slack-compatible text.

- `structured` (default): the CloudEvent JSON exactly as it is on the alerts topic, with
  `Content-Type: application/cloudevents+json; charset=utf-8`.
- `binary`: the event's `data` as the body (`Content-Type` from `datacontenttype`), and every
  other attribute as a `ce-` header, percent-encoded as the HTTP binding asks.
- `format: slack`: `{"text": ...}`, what Slack, Mattermost and Rocket.Chat incoming webhooks take.

Configured headers (e.g. `Authorization`) are sent with every request and never logged.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import orjson

from stream_monitor.core.alerts import describe
from stream_monitor.forward.alertmanager import render_effect
from stream_monitor.forward.http import HttpEndpoint
from stream_monitor.forward.records import DETECTED, RESOLVED, AlertRecord
from stream_monitor.forward.sinks import BaseSink, SinkError

STRUCTURED = "application/cloudevents+json; charset=utf-8"
# Printable ASCII except space, '"' and '%' passes unencoded (CloudEvents HTTP binding 3.1.3.2).
_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '"%')


def binary(event: dict[str, Any]) -> tuple[dict[str, str], bytes]:
    """Headers and body of the CloudEvent in HTTP binary mode."""
    headers = {
        f"ce-{name}": quote(
            value if isinstance(value, str) else orjson.dumps(value).decode(), safe=_SAFE
        )
        for name, value in event.items()
        if name not in ("data", "data_base64", "datacontenttype") and value is not None
    }
    content_type = event.get("datacontenttype") or "application/json"
    headers["Content-Type"] = str(content_type)
    data = event.get("data")
    body = data.encode() if isinstance(data, str) else orjson.dumps(data)
    return headers, body


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_text(record: AlertRecord) -> str:
    """One message per alert, in Slack's mrkdwn."""
    event = record.event or {}
    data = record.data
    if record.type == DETECTED:
        try:
            line = describe(event)
        except (KeyError, TypeError, ValueError):
            line = str(event.get("subject", ""))
        icon = {"critical": ":rotating_light:", "warning": ":warning:"}.get(
            str(data.get("severity")), ":information_source:"
        )
        effect = data.get("effect")
        tail = f" effect: {_escape(render_effect(effect))}" if effect is not None else ""
        return f"{icon} *Model drift* {_escape(line)}{tail} (alert `{record.id}`)"
    if record.type == RESOLVED:
        return (
            f":white_check_mark: *Resolved* {_escape(str(data.get('monitor_key')))} "
            f"{_escape(str(data.get('signal_kind')))}/{_escape(str(data.get('signal')))} "
            f"(alert `{_escape(str(data.get('resolves')))}`)"
        )
    return f"{_escape(str(record.type))}: {_escape(str(event.get('subject', record.id)))}"


class WebhookSink(BaseSink):
    def __init__(
        self,
        *,
        name: str,
        endpoint: HttpEndpoint,
        headers: dict[str, str] | None = None,
        format: str = "cloudevents",
        mode: str = "structured",
    ) -> None:
        if format not in ("cloudevents", "slack") or mode not in ("structured", "binary"):
            raise ValueError(f"unknown webhook format {format!r} or mode {mode!r}")
        self.name = name
        self._endpoint = endpoint
        self._headers = dict(headers or {})
        self._format = format
        self._mode = mode

    def deliver(self, record: AlertRecord) -> None:
        if record.event is None:  # the service dead-letters these before they reach a sink
            raise SinkError(
                "not_an_alert", f"{record.position} is not a CloudEvent", retryable=False
            )
        if self._format == "slack":
            headers = {"Content-Type": "application/json"}
            body = orjson.dumps({"text": slack_text(record)})
        elif self._mode == "structured":
            headers, body = {"Content-Type": STRUCTURED}, record.value
        else:
            headers, body = binary(record.event)
        self._endpoint.post(body, {**self._headers, **headers})

    def close(self) -> None:
        self._endpoint.close()
