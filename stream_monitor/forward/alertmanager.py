"""Alertmanager sink: drift alerts as Alertmanager alerts (API v2), kept firing while active.

Mapping (docs/forwarding.md): labels `alertname=ModelDrift`, `model`, `signal_kind`, `signal`,
`severity`, `monitor_key` and `alert_id` (category values never become labels: they are
unbounded). Alertmanager identifies an alert by its label set, so
without `alert_id` two detections on the same key and signal would merge into one; with it,
each detection is one Alertmanager alert, and a re-delivered alert (at least once) lands on the
same one: Alertmanager itself de-duplicates on the id. Annotations carry the change
(before → after), the effect (`data.effect`, else the standardised shift its stats imply), the
likely causes and a one-line summary.
`startsAt` is the alert's event time (else when it was published).

Alertmanager resolves an alert that was not posted again within its `resolve_timeout`, so
active alerts are re-posted every `repeat_post` (default half that timeout) until a
`drift_resolved` event closes one (posted with `endsAt`) or `active_for` passes since it was
published. The active set is bounded (`max_active`, oldest dropped first) and lives in memory:
after a restart the forwarder rebuilds it by reading the alerts published in the last
`active_for` up to its committed offsets (`remember`), and posts each of them once when the
rebuild is done.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeGuard

import orjson

from stream_monitor.core.alerts import describe, describe_categories, describe_cause, describe_new
from stream_monitor.core.events import format_time
from stream_monitor.forward.http import HttpEndpoint
from stream_monitor.forward.records import DETECTED, RESOLVED, AlertRecord
from stream_monitor.forward.sinks import BaseSink

log = logging.getLogger(__name__)

ALERTNAME = "ModelDrift"
API_PATH = "/api/v2/alerts"
POST_BATCH = 500


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _number(value: object) -> str:
    return f"{value:.4g}" if _is_number(value) else "?"


def render_effect(effect: object) -> str:
    """`data.effect`, whatever its shape: a number is a standardised shift (in standard
    deviations); a mapping is read for a shift, a before → after change and a ratio, and
    otherwise shown as its named figures; text as it is."""
    if isinstance(effect, dict):
        return _render_effect_mapping(effect)
    if isinstance(effect, str):
        return effect
    return f"{effect:+.2f} sd" if _is_number(effect) else "?"


def _render_effect_mapping(effect: dict[str, Any]) -> str:
    text = _render_change(effect)
    new = effect.get("new")
    if isinstance(new, list) and new:
        with contextlib.suppress(KeyError, TypeError, ValueError):
            text += f" {describe_new(new)}"
    return text


def _render_change(effect: dict[str, Any]) -> str:
    moved = _moved_categories(effect)
    if moved is not None:
        distance = effect.get("distance")
        return moved + (f" (w {distance:.2f})" if _is_number(distance) else "")
    before, after, shift = effect.get("before"), effect.get("after"), effect.get("shift")
    change = (
        f"{_number(before)} → {_number(after)}" if _is_number(before) and _is_number(after) else ""
    )
    if change and _is_number(shift):
        return f"{change} ({shift:+.2f} sd)"
    if _is_number(shift):
        return f"{shift:+.2f} sd"
    ratio = effect.get("ratio")
    if change and effect.get("statistic") == "spread" and _is_number(ratio):
        return f"sd {change} (x{ratio:.3g})"
    if change and _is_number(effect.get("absolute")):
        return f"{change} ({effect['absolute']:+.3g})"
    return ", ".join(
        f"{name}={value if isinstance(value, str) else _number(value)}"
        for name, value in effect.items()
    )


def _moved_categories(effect: object) -> str | None:
    """A categorical feature's effect: `fr 0.20 → 0.58, de 0.30 → 0.16`; None for others."""
    if not isinstance(effect, dict) or effect.get("statistic") != "categories":
        return None
    moved = effect.get("categories")
    if not isinstance(moved, list):
        return None
    try:
        return describe_categories(moved) or "no category moved"
    except (KeyError, TypeError, ValueError):
        return None


def effect_text(data: dict[str, Any]) -> str | None:
    """How large the change is: `data.effect` when the alert has one, else the standardised
    shift |mean_after - mean_before| / std derived from `data.stats`; None when neither is known."""
    if data.get("effect") is not None:
        return render_effect(data["effect"])
    stats = data.get("stats")
    if not isinstance(stats, dict):
        return None
    before, after, std = stats.get("mean_before"), stats.get("mean_after"), stats.get("std")
    if not (_is_number(before) and _is_number(after) and _is_number(std)) or std <= 0:
        return None
    shift = abs(after - before) / std
    return f"{shift:.2f} sd (|{_number(after)} − {_number(before)}| / std {_number(std)})"


def render_causes(causes: object) -> str | None:
    if not isinstance(causes, list) or not causes:
        return None
    parts = []
    for cause in causes:
        if not isinstance(cause, dict):
            continue
        if cause.get("statistic") == "categories":
            with contextlib.suppress(KeyError, TypeError, ValueError):
                parts.append(describe_cause(cause))
            continue
        text = f"{cause.get('feature')} ({cause.get('shift', 0):+.2f}σ"
        if "baseline_mean" in cause and "recent_mean" in cause:
            text += f", {_number(cause['baseline_mean'])} → {_number(cause['recent_mean'])}"
        parts.append(text + ")")
    return ", ".join(parts) or None


def labels_of(event: dict[str, Any]) -> dict[str, str]:
    data = event.get("data") or {}
    return {
        "alertname": ALERTNAME,
        "model": str(data.get("model", "")),
        "signal_kind": str(data.get("signal_kind", "")),
        "signal": str(data.get("signal", "")),
        "severity": str(data.get("severity", "warning")),
        "monitor_key": str(data.get("monitor_key", "")),
        "alert_id": str(event["id"]),
    }


def annotations_of(event: dict[str, Any]) -> dict[str, str]:
    data = event.get("data") or {}
    stats = data.get("stats") or {}
    # a categorical feature's stats are its distance per block: its categories say what changed
    change = _moved_categories(data.get("effect"))
    if change is None:
        change = f"{_number(stats.get('mean_before'))} → {_number(stats.get('mean_after'))}"
        if stats.get("mean_recent") is not None:
            change += f" (recent {_number(stats['mean_recent'])})"
    result = {
        "summary": f"{data.get('monitor_key')} {data.get('signal_kind')}/{data.get('signal')}: {change}",
        "change": change,
        "detector": f"{data.get('detector')} (rule {data.get('rule')}), "
        f"{data.get('observations')} observations",
        "source": str(event.get("source", "")),
    }
    with contextlib.suppress(KeyError, TypeError, ValueError):  # a partial event: no line
        result["description"] = describe(event)
    effect = effect_text(data)
    if effect is not None:
        result["effect"] = effect
    causes = render_causes(data.get("likely_causes"))
    if causes:
        result["likely_causes"] = causes
    return result


def starts_at(record: AlertRecord) -> str:
    stamp = record.event.get("time") if record.event else None
    if isinstance(stamp, str) and stamp:
        return stamp
    return format_time(record.timestamp_ms or int(time.time() * 1000)) or ""


class _Active:
    __slots__ = ("alert", "partition", "published_ms")

    def __init__(self, alert: dict[str, Any], partition: int, published_ms: int) -> None:
        self.alert = alert
        self.partition = partition  # of the alerts topic: revoked, it is another instance's
        self.published_ms = published_ms


class AlertmanagerSink(BaseSink):
    """Posts to `<url>/api/v2/alerts`; re-posts active alerts every `repeat_post` seconds."""

    def __init__(
        self,
        *,
        endpoint: HttpEndpoint,
        headers: dict[str, str] | None = None,
        repeat_post: float,
        active_for: float,
        max_active: int = 10_000,
        name: str = "alertmanager",
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self.name = name
        self._endpoint = endpoint
        self._headers = {**(headers or {}), "Content-Type": "application/json"}
        self._repeat = repeat_post
        self._active_for_ms = int(active_for * 1000)
        self._max_active = max_active
        self._clock = clock
        self._wall_ms = wall_ms
        self._active: OrderedDict[str, _Active] = OrderedDict()
        self._due: float | None = None  # of the next re-post of every active alert
        self._rebuilt: dict[str, None] = {}  # ids `remember` added, not posted by this process

    @property
    def active(self) -> int:
        return len(self._active)

    def deliver(self, record: AlertRecord) -> None:
        if record.type == DETECTED and record.event is not None:
            if self._expired(record):
                log.info("sink=%s alert=%s older than active_for: not posted", self.name, record.id)
                return
            alert = self._alert(record)
            self._post([alert])
            self._keep(record, alert)
        elif record.type == RESOLVED:
            closing = self._closing(record)
            if closing is not None:
                self._post([closing])
                self._active.pop(str(record.data.get("resolves")), None)

    def remember(self, record: AlertRecord) -> None:
        if record.type == DETECTED and record.event is not None and not self._expired(record):
            self._keep(record, self._alert(record))
            self._rebuilt[record.id] = None  # posted as soon as the rebuild is done
        elif record.type == RESOLVED:
            self._active.pop(str(record.data.get("resolves")), None)

    def next_due(self) -> float | None:
        if self._rebuilt:
            return self._clock()
        return self._due if self._active else None

    def run_due(self, now: float) -> None:
        """Re-post every active alert (in batches), so Alertmanager keeps it firing; or, before
        that is due, post what a rebuild added (each once, however many rebuilds run)."""
        # Not retried at once when the post fails: the regular re-post covers them, in time.
        rebuilt, self._rebuilt = self._rebuilt, {}
        if self._due is not None and now < self._due:
            self._post_all([self._active[i].alert for i in rebuilt if i in self._active])
            return
        self._due = now + self._repeat
        wall = self._wall_ms()
        for alert_id in [i for i, a in self._active.items() if self._too_old(a.published_ms, wall)]:
            del self._active[alert_id]
        self._post_all([entry.alert for entry in self._active.values()])

    def forget(self, partitions: set[int]) -> None:
        """Stop re-posting the alerts of revoked partitions: their new owner rebuilds them, and
        a stale re-post (no endsAt) would re-open one it has resolved since."""
        for alert_id in [i for i, a in self._active.items() if a.partition in partitions]:
            del self._active[alert_id]

    def close(self) -> None:
        self._endpoint.close()

    # ---------------------------------------------------------------------------------------
    def _alert(self, record: AlertRecord) -> dict[str, Any]:
        assert record.event is not None
        return {
            "labels": labels_of(record.event),
            "annotations": annotations_of(record.event),
            "startsAt": starts_at(record),
        }

    def _closing(self, record: AlertRecord) -> dict[str, Any] | None:
        """The alert `record` resolves, with `endsAt`; None when it is not active here (older than
        `active_for` or dropped from a full set: Alertmanager has resolved it on its own)."""
        resolves = record.data.get("resolves")
        entry = self._active.get(str(resolves))
        if entry is None:
            log.info(
                "sink=%s resolved alert=%s is not active: nothing to close", self.name, resolves
            )
            return None
        ends = starts_at(record)
        return {**entry.alert, "endsAt": max(ends, entry.alert["startsAt"])}

    def _keep(self, record: AlertRecord, alert: dict[str, Any]) -> None:
        self._active[record.id] = _Active(
            alert, record.partition, record.timestamp_ms or self._wall_ms()
        )
        self._active.move_to_end(record.id)
        while len(self._active) > self._max_active:
            dropped, _ = self._active.popitem(last=False)
            log.warning(
                "sink=%s active set full (max_active): stops re-posting alert=%s",
                self.name,
                dropped,
            )
        if self._due is None:
            self._due = self._clock() + self._repeat

    def _expired(self, record: AlertRecord) -> bool:
        return record.timestamp_ms is not None and self._too_old(
            record.timestamp_ms, self._wall_ms()
        )

    def _too_old(self, published_ms: int, wall_ms: int) -> bool:
        return published_ms + self._active_for_ms < wall_ms

    def _post_all(self, alerts: list[dict[str, Any]]) -> None:
        for start in range(0, len(alerts), POST_BATCH):
            self._post(alerts[start : start + POST_BATCH])

    def _post(self, alerts: list[dict[str, Any]]) -> None:
        self._endpoint.post(orjson.dumps(alerts), self._headers, path=self._path())

    def _path(self) -> str:
        base = self._endpoint.path.rstrip("/")
        return base + API_PATH
