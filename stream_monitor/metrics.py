"""Prometheus metrics of a monitor instance, updated once per batch so the per-event path stays bare.

The core keeps plain cumulative counters (`MonitorCounters`, `JoinCounters`); after each batch the
runtime hands them here and only the difference since the last report reaches Prometheus. Label
sets are bounded: topics, partitions, reasons, signal kinds and detectors come from config or the
code, and model / signal names are capped with an `other` bucket past the cap.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

from stream_monitor import __version__
from stream_monitor.core.alerts import RESOLVED_TYPE
from stream_monitor.core.join import LABEL_DELAY_BUCKETS, JoinCounters
from stream_monitor.core.monitor import Monitor

log = logging.getLogger(__name__)

OTHER = "other"
JOIN_OUTCOMES = {
    "matched": "matched",
    "late_labels": "late",
    "expired_predictions": "expired_prediction",
    "expired_labels": "expired_label",
    "evicted_predictions": "evicted_prediction",
    "evicted_labels": "evicted_label",
    "duplicate_predictions": "duplicate_prediction",
    "duplicate_labels": "duplicate_label",
}
_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_RESTORE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class OutputCounts(Protocol):
    """What a runtime counts itself: records it wrote to the dead-letter topic, outputs skipped."""

    dead_letters: int
    suppressed: int
    replayed: int


class LabelCap:
    """Admits the first `limit` distinct values as label values; every later one becomes `other`."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.admitted: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self.admitted:
            return value
        if len(self.admitted) < self.limit:
            self.admitted.add(value)
            return value
        return OTHER


class MonitorTally:
    """How much of one Monitor's cumulative counters has already been reported."""

    __slots__ = (
        "delay_buckets",
        "delay_count",
        "delay_sum_ms",
        "detector_updates",
        "invalid",
        "join",
        "negligible",
        "overflow",
        "quiet",
        "unscorable",
    )

    def __init__(self) -> None:
        self.invalid: dict[str, int] = {}
        self.overflow: dict[str, int] = {}
        self.unscorable = 0
        self.detector_updates = 0
        self.quiet = 0
        self.negligible = 0
        self.join: dict[str, int] = {}
        self.delay_buckets = [0] * (len(LABEL_DELAY_BUCKETS) + 1)
        self.delay_count = 0
        self.delay_sum_ms = 0


class _LabelDelay(Collector):
    """A histogram filled from the join's own buckets (Histogram.observe per label would be hot)."""

    def __init__(self) -> None:
        self.buckets = [0] * (len(LABEL_DELAY_BUCKETS) + 1)
        self.sum_seconds = 0.0

    def collect(self) -> Iterable[HistogramMetricFamily]:
        family = HistogramMetricFamily(
            "stream_monitor_label_delay_seconds",
            "Event time from a prediction to its joined label.",
        )
        cumulative, rows = 0, []
        bounds = [*(str(bound) for bound in LABEL_DELAY_BUCKETS), "+Inf"]
        for bound, count in zip(bounds, list(self.buckets), strict=True):
            cumulative += count
            rows.append((bound, float(cumulative)))
        family.add_metric([], rows, self.sum_seconds)
        yield family


class Metrics:
    """Every metric of one instance, on its own registry (tests and embedders get a clean one)."""

    def __init__(self, *, max_models: int = 50, max_signals: int = 100) -> None:
        self.registry = CollectorRegistry()
        self.model_label = LabelCap(max_models)
        self._signal_caps: dict[str, LabelCap] = {}
        self._max_signals = max_signals
        r = self.registry
        self.consumed = Counter(
            "stream_monitor_events_consumed",
            "Records read from input topics.",
            ["topic"],
            registry=r,
        )
        self.invalid = Counter(
            "stream_monitor_invalid_events",
            "Events rejected by the event contract, by reason.",
            ["reason"],
            registry=r,
        )
        self.dead_letters = Counter(
            "stream_monitor_dead_letters", "Records written to the dead-letter topic.", registry=r
        )
        self.joins = Counter(
            "stream_monitor_joins",
            "How prediction/label joins ended: matched, late, expired, evicted or duplicate.",
            ["outcome"],
            registry=r,
        )
        self.label_delay = _LabelDelay()
        r.register(self.label_delay)
        self.detector_updates = Counter(
            "stream_monitor_detector_updates", "Values fed to drift detectors.", registry=r
        )
        self.alerts = Counter(
            "stream_monitor_alerts",
            "Alerts published, by model, signal kind and detector.",
            ["model", "signal_kind", "detector"],
            registry=r,
        )
        self.alerts_resolved = Counter(
            "stream_monitor_alerts_resolved",
            "drift_resolved events published (an alerted signal back at its pre-change level), "
            "by model, signal kind and detector.",
            ["model", "signal_kind", "detector"],
            registry=r,
        )
        self.detections_in_cooldown = Counter(
            "stream_monitor_detections_in_cooldown",
            "Detections not alerted because the key's signal was in its cooldown.",
            registry=r,
        )
        self.detections_negligible = Counter(
            "stream_monitor_detections_negligible",
            "Detections not alerted because their effect size was below alerts.min_effect.",
            registry=r,
        )
        self.outputs_suppressed = Counter(
            "stream_monitor_outputs_suppressed",
            "Alerts and dead letters not re-emitted because a predecessor had published them.",
            registry=r,
        )
        self.outputs_replayed = Counter(
            "stream_monitor_outputs_replayed",
            "Outputs of input processed again after a restore (published before): left out.",
            registry=r,
        )
        self.overflow = Counter(
            "stream_monitor_overflow",
            "What a bound (limits.*) turned away: models, keys per model, keys, features, "
            "over-long feature names; features with more categories than known ones, over-long "
            "category values.",
            ["what"],
            registry=r,
        )
        self.unscorable = Counter(
            "stream_monitor_unscorable_pairs",
            "Joined pairs of a regression model whose prediction or label is not a number.",
            registry=r,
        )
        self.state_rejected = Counter(
            "stream_monitor_state_records_rejected",
            "Changelog records that did not verify, left out (state.on_invalid_record: skip).",
            registry=r,
        )
        self.batch_seconds = Histogram(
            "stream_monitor_batch_duration_seconds",
            "Time to process one consumed batch.",
            buckets=_SECONDS_BUCKETS,
            registry=r,
        )
        self.commit_seconds = Histogram(
            "stream_monitor_commit_duration_seconds",
            "Time to checkpoint: state, outputs and offsets (one transaction in exactly-once mode).",
            buckets=_SECONDS_BUCKETS,
            registry=r,
        )
        self.commit_failures = Counter(
            "stream_monitor_commit_failures",
            "Checkpoints that failed and were rewound to the last commit.",
            registry=r,
        )
        self.lag = Gauge(
            "stream_monitor_consumer_lag",
            "Records behind the partition end, from librdkafka statistics.",
            ["topic", "partition"],
            registry=r,
        )
        self.restore_seconds = Histogram(
            "stream_monitor_state_restore_duration_seconds",
            "Time to restore the state of newly assigned partitions.",
            buckets=_RESTORE_BUCKETS,
            registry=r,
        )
        self.restore_retries = Counter(
            "stream_monitor_state_restore_retries",
            "Restores started again because the brokers kept answering 'ask again' (a "
            "coordinator or leader moving).",
            registry=r,
        )
        self.keys = Gauge(
            "stream_monitor_monitored_keys", "Monitor keys held in memory.", registry=r
        )
        self.pending = Gauge(
            "stream_monitor_pending_joins",
            "Predictions waiting for labels, and labels waiting for predictions.",
            ["side"],
            registry=r,
        )
        self.partitions = Gauge(
            "stream_monitor_assigned_partitions", "Input partitions assigned.", registry=r
        )
        self.ready = Gauge(
            "stream_monitor_ready", "1 when assigned partitions are restored.", registry=r
        )
        self.last_progress = Gauge(
            "stream_monitor_last_progress_timestamp_seconds",
            "Unix time of the last consume loop iteration.",
            registry=r,
        )
        labels = ["model", "signal_kind", "signal", "rule"]
        self.adwin_width = Gauge(
            "stream_monitor_adwin_window_width",
            "Largest ADWIN window (values kept since the last change) over the model's keys.",
            labels,
            registry=r,
        )
        self.page_hinkley = Gauge(
            "stream_monitor_page_hinkley_statistic",
            "Page-Hinkley test statistic of the model's key closest to its threshold (fires past it).",
            labels,
            registry=r,
        )
        self.page_hinkley_threshold = Gauge(
            "stream_monitor_page_hinkley_threshold",
            "The Page-Hinkley threshold that statistic is compared with.",
            labels,
            registry=r,
        )
        info = Gauge(
            "stream_monitor_build_info", "Version of the running monitor.", ["version"], registry=r
        )
        info.labels(__version__).set(1)
        self._outputs_seen = [0, 0, 0]  # dead letters, suppressed, replayed
        self._lag_seen: set[tuple[str, str]] = set()
        self._detector_seen: set[tuple[str, str, str, str]] = set()

    def watch(
        self,
        *,
        ready: Callable[[], float],
        partitions: Callable[[], float],
        progress: Callable[[], float] | None = None,
    ) -> None:
        """Gauges read from the runtime at scrape time, so the loop never has to set them."""
        self.ready.set_function(ready)
        self.partitions.set_function(partitions)
        if progress is not None:
            self.last_progress.set_function(progress)

    # --- per batch -------------------------------------------------------------------------
    def report_batch(self, by_topic: Mapping[str, int], outputs: OutputCounts) -> None:
        """Records consumed per topic in one batch, and the runtime's own output counts."""
        for topic, count in by_topic.items():
            self.consumed.labels(topic).inc(count)
        seen = self._outputs_seen
        if outputs.dead_letters > seen[0]:
            self.dead_letters.inc(outputs.dead_letters - seen[0])
            seen[0] = outputs.dead_letters
        if outputs.suppressed > seen[1]:
            self.outputs_suppressed.inc(outputs.suppressed - seen[1])
            seen[1] = outputs.suppressed
        if outputs.replayed > seen[2]:
            self.outputs_replayed.inc(outputs.replayed - seen[2])
            seen[2] = outputs.replayed

    def report_monitor(self, monitor: Monitor, tally: MonitorTally) -> None:
        """Add what `monitor` counted since the last report for it."""
        counters = monitor.counters
        for reason, count in counters.invalid.items():
            before = tally.invalid.get(reason, 0)
            if count > before:
                self.invalid.labels(reason).inc(count - before)
                tally.invalid[reason] = count
        if counters.detector_updates > tally.detector_updates:
            self.detector_updates.inc(counters.detector_updates - tally.detector_updates)
            tally.detector_updates = counters.detector_updates
        if counters.in_cooldown > tally.quiet:
            self.detections_in_cooldown.inc(counters.in_cooldown - tally.quiet)
            tally.quiet = counters.in_cooldown
        if counters.negligible > tally.negligible:
            self.detections_negligible.inc(counters.negligible - tally.negligible)
            tally.negligible = counters.negligible
        for what, count in counters.overflow.items():
            before = tally.overflow.get(what, 0)
            if count > before:
                self.overflow.labels(what).inc(count - before)
                tally.overflow[what] = count
        if counters.unscorable > tally.unscorable:
            self.unscorable.inc(counters.unscorable - tally.unscorable)
            tally.unscorable = counters.unscorable
        self._report_join(monitor.join.counters, tally)

    def _report_join(self, join: JoinCounters, tally: MonitorTally) -> None:
        for name, outcome in JOIN_OUTCOMES.items():
            count = getattr(join, name)
            before = tally.join.get(name, 0)
            if count > before:
                self.joins.labels(outcome).inc(count - before)
                tally.join[name] = count
        if join.delay_count != tally.delay_count:  # new joins since the last report
            buckets = self.label_delay.buckets
            for index, count in enumerate(join.delay_buckets):
                buckets[index] += count - tally.delay_buckets[index]
            tally.delay_buckets = list(join.delay_buckets)
            self.label_delay.sum_seconds += (join.delay_sum_ms - tally.delay_sum_ms) / 1000
            tally.delay_sum_ms = join.delay_sum_ms
            tally.delay_count = join.delay_count

    def count_alert(self, event: dict[str, Any]) -> None:
        """One published event of the alerts topic: a drift alert, or its drift_resolved."""
        data = event["data"]
        counter = self.alerts_resolved if event.get("type") == RESOLVED_TYPE else self.alerts
        counter.labels(
            self.model_label(str(data["model"])), data["signal_kind"], data["detector"]
        ).inc()

    # --- periodic --------------------------------------------------------------------------
    def report_state(self, monitors: Iterable[Monitor]) -> None:
        """Key counts and each signal's detector statistics: a walk over all keys, so not per batch."""
        keys = predictions = labels = 0
        widths: dict[tuple[str, str, str, str], float] = {}
        statistics: dict[tuple[str, str, str, str], float] = {}
        thresholds: dict[tuple[str, str, str, str], float] = {}
        for monitor in monitors:
            keys += len(monitor.keys)
            predictions += len(monitor.join.predictions)
            labels += len(monitor.join.labels)
            for state in list(monitor.keys.values()):
                model = self.model_label(state.model)
                for signal in state.signals():
                    name = self._signal_label(model, signal.name)
                    signal.settle()  # zeros waiting to be fed (`Track._rate`)
                    for track in signal.active:  # a dormant track's detector watches nothing
                        labels_of = (model, signal.kind, name, track.rule.name)
                        detector = track.detector
                        width = getattr(detector, "width", None)
                        if width is not None:
                            widths[labels_of] = max(widths.get(labels_of, 0.0), float(width))
                        statistic = page_hinkley_statistic(detector)
                        if statistic is None:
                            continue
                        # Calibrated rules set thresholds per key: keep the pair of the key
                        # closest to firing, so statistic / threshold stays meaningful.
                        threshold = max(float(detector.threshold), 1e-12)
                        if (
                            labels_of not in statistics
                            or statistic / threshold > statistics[labels_of] / thresholds[labels_of]
                        ):
                            statistics[labels_of] = statistic
                            thresholds[labels_of] = threshold
        self.keys.set(keys)
        self.pending.labels("prediction").set(predictions)
        self.pending.labels("label").set(labels)
        seen = set(widths) | set(statistics)
        for gone in self._detector_seen - seen:
            for gauge in (self.adwin_width, self.page_hinkley, self.page_hinkley_threshold):
                with contextlib.suppress(KeyError):
                    gauge.remove(*gone)
        self._detector_seen = seen
        for labels_of, value in widths.items():
            self.adwin_width.labels(*labels_of).set(value)
        for labels_of, value in statistics.items():
            self.page_hinkley.labels(*labels_of).set(value)
            self.page_hinkley_threshold.labels(*labels_of).set(thresholds[labels_of])

    def _signal_label(self, model: str, signal: str) -> str:
        cap = self._signal_caps.get(model)
        if cap is None:
            cap = self._signal_caps[model] = LabelCap(self._max_signals)
        return cap(signal)

    def on_statistics(self, payload: str) -> None:
        """librdkafka's stats_cb: per-partition consumer lag, on the consumer's own thread.

        librdkafka's own `consumer_lag` counts from the committed offset, which it never learns
        when offsets are committed through a transaction, so the lag is derived here: the end
        a read_committed consumer can reach (`ls_offset`) minus the application's position.
        """
        try:
            stats = orjson.loads(payload)
            seen: set[tuple[str, str]] = set()
            for topic, topic_stats in stats.get("topics", {}).items():
                for partition, partition_stats in topic_stats.get("partitions", {}).items():
                    lag = partition_lag(partition_stats)
                    if partition == "-1" or lag is None:
                        continue
                    self.lag.labels(topic, partition).set(lag)
                    seen.add((topic, partition))
        except (orjson.JSONDecodeError, AttributeError, TypeError) as exc:
            log.debug("unreadable librdkafka statistics: %s", exc)
            return
        for gone in self._lag_seen - seen:
            with contextlib.suppress(KeyError):
                self.lag.remove(*gone)
        self._lag_seen = seen


def partition_lag(stats: dict[str, Any]) -> int | None:
    """Records between a fetched partition's position and its readable end; None if not fetched.

    Offsets below 0 are librdkafka's "unknown" (-1001). Until the application consumes from a
    partition (`app_offset`), its position is where the fetcher stands (`next_offset`) less what
    waits in the local queue: a restored partition is sought to its state's position, which the
    committed offset does not tell (transactions commit offsets without librdkafka learning them).
    With no fetch position either, it is the committed offset, then the start of the log (nothing
    consumed yet: everything is lag).
    """
    if stats.get("fetch_state") != "active":
        return None
    end = stats.get("ls_offset", -1)
    if end < 0:
        end = stats.get("hi_offset", -1)
    if end < 0:
        return None
    position = stats.get("app_offset", -1)
    if position < 0:
        fetching = stats.get("next_offset", -1)
        if fetching >= 0:
            position = fetching - max(stats.get("fetchq_cnt", 0), 0)
        elif stats.get("committed_offset", -1) >= 0:
            position = stats["committed_offset"]
        else:
            position = max(stats.get("lo_offset", 0), 0)
    return max(int(end) - int(position), 0)


def page_hinkley_statistic(detector: Any) -> float | None:
    """River's Page-Hinkley test value (it fires once this exceeds `threshold`); None for others."""
    try:
        increase = detector._sum_increase - detector._min_increase
        decrease = detector._max_decrease - detector._sum_decrease
    except AttributeError:
        return None
    mode = getattr(detector, "mode", "both")
    value = max(
        increase if mode in ("up", "both") else 0.0,
        decrease if mode in ("down", "both") else 0.0,
    )
    return value if 0.0 < value < float("inf") else 0.0
