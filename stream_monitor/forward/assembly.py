"""The sinks the `forward` section describes, built once at start-up."""

from __future__ import annotations

from stream_monitor.config import ForwardConfig
from stream_monitor.forward.alertmanager import AlertmanagerSink
from stream_monitor.forward.http import HttpEndpoint
from stream_monitor.forward.sinks import Sink
from stream_monitor.forward.webhook import WebhookSink


def build_sinks(forward: ForwardConfig) -> list[Sink]:
    """The sinks `forward.alertmanager` and `forward.webhooks[]` describe, in that order."""
    sinks: list[Sink] = []
    names = iter(forward.sink_names())
    manager = forward.alertmanager
    if manager is not None:
        sinks.append(
            AlertmanagerSink(
                name=next(names),
                endpoint=HttpEndpoint(manager.url, timeout=manager.timeout / 1000),
                headers=manager.headers,
                repeat_post=manager.repeat_every_ms / 1000,
                active_for=manager.active_for / 1000,
                max_active=manager.max_active,
            )
        )
    for hook in forward.webhooks:
        sinks.append(
            WebhookSink(
                name=next(names),
                endpoint=HttpEndpoint(hook.url, timeout=hook.timeout / 1000),
                headers=hook.headers,
                format=hook.format,
                mode=hook.mode,
            )
        )
    return sinks


def history_window(forward: ForwardConfig) -> float | None:
    """How far back (seconds) a restart reads to rebuild sink state: Alertmanager's active set."""
    if forward.alertmanager is None:
        return None
    return forward.alertmanager.active_for / 1000
