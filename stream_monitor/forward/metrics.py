"""Prometheus metrics of the forwarder, on its own registry. Labels are bounded: sink names come
from config, reasons from a short list of codes (`http_<status>` included), types from two."""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from stream_monitor import __version__
from stream_monitor.forward.records import DETECTED, RESOLVED, AlertRecord

_LATENCY_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
)
_TYPES = {DETECTED: "drift_detected", RESOLVED: "drift_resolved"}


class ForwardMetrics:
    def __init__(self, clock_ms: Callable[[], float] = lambda: time.time() * 1000) -> None:
        self.registry = CollectorRegistry()
        self._clock_ms = clock_ms
        r = self.registry
        self.read = Counter(
            "stream_monitor_forward_alerts_read",
            "Records read from the alerts topic, by CloudEvent type.",
            ["type"],
            registry=r,
        )
        self.deliveries = Counter(
            "stream_monitor_forward_deliveries",
            "Alerts a sink took (accepted) or gave up on (dead_lettered).",
            ["sink", "outcome"],
            registry=r,
        )
        self.failures = Counter(
            "stream_monitor_forward_delivery_failures",
            "Failed delivery attempts, by sink and reason (retried unless dead-lettered).",
            ["sink", "reason"],
            registry=r,
        )
        self.latency = Histogram(
            "stream_monitor_forward_delivery_latency_seconds",
            "From an alert's publication (its Kafka timestamp) to a sink taking it.",
            ["sink"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.pending = Gauge(
            "stream_monitor_forward_pending_alerts",
            "Alerts read and not yet taken by the sink.",
            ["sink"],
            registry=r,
        )
        self.active = Gauge(
            "stream_monitor_forward_active_alerts",
            "Alerts the Alertmanager sink keeps firing (re-posts).",
            registry=r,
        )
        self.commits = Counter(
            "stream_monitor_forward_commits", "Offset commits of the forwarder's group.", registry=r
        )
        self.commit_failures = Counter(
            "stream_monitor_forward_commit_failures",
            "Offset commits that failed (tried again at the next interval).",
            registry=r,
        )
        self.partitions = Gauge(
            "stream_monitor_forward_assigned_partitions",
            "Alerts-topic partitions assigned to this forwarder.",
            registry=r,
        )
        self.paused = Gauge(
            "stream_monitor_forward_reading_paused",
            "1 while reading is paused because a sink holds forward.max_pending alerts.",
            registry=r,
        )
        self.last_progress = Gauge(
            "stream_monitor_forward_last_progress_timestamp_seconds",
            "Unix time of the consume loop's last turn.",
            registry=r,
        )
        info = Gauge(
            "stream_monitor_build_info",
            "Version of the running forwarder.",
            ["version"],
            registry=r,
        )
        info.labels(__version__).set(1)

    def add_sink(self, sink: str) -> None:
        """Create the sink's delivery series at 0: a counter that first appears at 1 has no
        increase() in Prometheus, so the first dead letters would raise no alert."""
        for outcome in ("accepted", "dead_lettered"):
            self.deliveries.labels(sink, outcome)

    def count_read(self, record: AlertRecord) -> None:
        self.read.labels(_TYPES.get(record.type or "", "other")).inc()

    # --- sink outcomes (called from the sinks' worker threads) ------------------------------
    def accepted(self, sink: str, record: AlertRecord) -> None:
        self.deliveries.labels(sink, "accepted").inc()
        if record.timestamp_ms is not None:
            self.latency.labels(sink).observe(max(self._clock_ms() - record.timestamp_ms, 0) / 1000)

    def failed(self, sink: str, reason: str) -> None:
        self.failures.labels(sink, reason).inc()

    def dead_lettered(self, sink: str, reason: str) -> None:
        self.deliveries.labels(sink, "dead_lettered").inc()
