"""Alert events: CloudEvents 1.0 structured JSON with deterministic ids and a short explanation.

Two types share the alerts topic, keyed by monitor key (so a key's events keep their order):
`stream_monitor.drift_detected` when a detector finds a change worth an alert, and
`stream_monitor.drift_resolved` when that signal is back at its pre-change level, whose
`data.resolves` is the id of the alert it closes.

An id is a hash of what identifies the detection (monitor key, signal, detector rule, and how many
values that detector had seen), never of wall-clock time or the instance: replaying the same input
in the same order, on any instance or runtime, gives the same ids, so consumers can de-duplicate.
A resolved event's id is a hash of the alert id it closes and the observation it was decided at.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

from stream_monitor.core.effects import severity as effect_severity
from stream_monitor.core.events import format_time

ALERT_TYPE = "stream_monitor.drift_detected"
RESOLVED_TYPE = "stream_monitor.drift_resolved"

# Severity from the standardised shift |mean_after - mean_before| / std of the detector's window.
WARNING_SHIFT = 0.5
CRITICAL_SHIFT = 1.0


def alert_id(key_id: str, signal_kind: str, signal: str, rule: str, observations: int) -> str:
    return _uuid_like(f"{key_id}\x1f{signal_kind}\x1f{signal}\x1f{rule}\x1f{observations}")


def resolved_id(resolves: str, observations: int) -> str:
    """The id of the `drift_resolved` event closing alert `resolves` at `observations`."""
    return _uuid_like(f"resolved\x1f{resolves}\x1f{observations}")


def _uuid_like(text: str) -> str:
    digest = hashlib.sha256(text.encode()).hexdigest()
    return f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"


def severity(stats: dict[str, Any], signal_kind: str) -> str:
    """Severity of an alert without an effect (an event built by an earlier version or by hand):
    info / warning / critical from the size of the shift, in standard deviations.

    The shift is the larger of after-vs-before and recent-vs-before: ADWIN's "after" window can
    still hold values from before the change. A performance signal that improved (error went
    down) is info: worth knowing, not worth waking anyone. An error that at least doubled is
    critical whatever its spread.
    """
    before, std = stats["mean_before"], stats["std"]
    afters = [
        value for value in (stats["mean_after"], stats.get("mean_recent")) if value is not None
    ]
    if before is None or not afters:
        return "warning"
    after = max(afters, key=lambda value: abs(value - before))
    if signal_kind == "performance":
        if after <= before:
            return "info"
        if before > 0 and after >= 2 * before:
            return "critical"
    shift = abs(after - before) / std if std and std > 0 else math.inf
    if shift >= CRITICAL_SHIFT:
        return "critical"
    if shift >= WARNING_SHIFT:
        return "warning"
    return "info"


def build_alert(
    *,
    source: str,
    key_id: str,
    model: str,
    model_version: str | None,
    segment: dict[str, str],
    signal_kind: str,
    signal: str,
    rule: str,
    detector: str,
    detector_params: dict[str, Any],
    observations: int,
    time_ms: int | None,
    stats: dict[str, Any],
    likely_causes: list[dict[str, Any]],
    position: tuple[str, int, int] | None,
    effect: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A `drift_detected` CloudEvent. `effect` (`core.effects.measure`) sets the severity; an
    event without one falls back on the stats (`severity`)."""
    event = _envelope(
        alert_id(key_id, signal_kind, signal, rule, observations),
        ALERT_TYPE,
        source,
        model,
        signal,
        time_ms,
    )
    event["data"] = {
        "model": model,
        "model_version": model_version,
        "segment": segment,
        "monitor_key": key_id,
        "signal_kind": signal_kind,
        "signal": signal,
        "detector": detector,
        "rule": rule,
        "detector_params": detector_params,
        "event_time": event.get("time"),
        "observations": observations,
        "stats": stats,
        "effect": effect,
        "severity": (
            severity(stats, signal_kind) if effect is None else effect_severity(effect, signal_kind)
        ),
        "likely_causes": likely_causes,
        "source_position": _position(position),
    }
    return event


def build_resolved(
    *,
    source: str,
    resolves: str,
    key_id: str,
    model: str,
    model_version: str | None,
    segment: dict[str, str],
    signal_kind: str,
    signal: str,
    rule: str,
    detector: str,
    observations: int,
    opened_at: int,
    time_ms: int | None,
    level: dict[str, Any],
    position: tuple[str, int, int] | None,
) -> dict[str, Any]:
    """A `drift_resolved` CloudEvent closing alert `resolves`: the signal is back at its
    pre-change level. `opened_at` is the alert's `observations`; `level` holds the pre-change
    level (`before`), the alerted one (`alerted`) and where the signal is now (`now`), in the
    units of what the rule watches (a spread's are standard deviations)."""
    event = _envelope(
        resolved_id(resolves, observations), RESOLVED_TYPE, source, model, signal, time_ms
    )
    event["data"] = {
        "model": model,
        "model_version": model_version,
        "segment": segment,
        "monitor_key": key_id,
        "signal_kind": signal_kind,
        "signal": signal,
        "detector": detector,
        "rule": rule,
        "resolves": resolves,
        "event_time": event.get("time"),
        "observations": observations,
        "open_for": observations - opened_at,
        "level": level,
        "source_position": _position(position),
    }
    return event


def _envelope(
    event_id: str, event_type: str, source: str, model: str, signal: str, time_ms: int | None
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "specversion": "1.0",
        "id": event_id,
        "source": f"stream-monitor/{source}",
        "type": event_type,
        "subject": f"{model}/{signal}",
        "datacontenttype": "application/json",
    }
    event_time = format_time(time_ms)
    if event_time is not None:
        event["time"] = event_time
    return event


def _position(position: tuple[str, int, int] | None) -> dict[str, Any] | None:
    if position is None:
        return None
    return {"topic": position[0], "partition": position[1], "offset": position[2]}


def describe(alert: dict[str, Any]) -> str:
    """One readable line per alert or resolved event, for people tailing the output."""
    data = alert["data"]
    if alert.get("type") == RESOLVED_TYPE:
        return _describe_resolved(data)
    stats = data["stats"]
    line = f"[{data['severity'].upper()}] {data['monitor_key']} {data['signal_kind']}/{data['signal']} "
    effect = data.get("effect")
    if isinstance(effect, dict) and "statistic" in effect:
        line += f"{describe_effect(effect)} "
    else:
        line += (
            f"{_fmt(stats['mean_before'])} -> {_fmt(stats['mean_after'])} "
            f"(recent {_fmt(stats.get('mean_recent'))}) "
        )
    line += (
        f"({data['detector']} after {data['observations']} obs"
        f"{', ' + data['event_time'] if data['event_time'] else ''})"
    )
    causes = data["likely_causes"]
    if causes:
        line += " likely causes: " + ", ".join(describe_cause(cause) for cause in causes)
    return line


def describe_effect(effect: dict[str, Any]) -> str:
    """`100 -> 130 (+1.5 sd)`, `0.1 -> 0.3 (x3, +0.2)`, `sd 20 -> 40 (x2)`, and for a
    categorical feature `fr 0.20 → 0.58, de 0.30 → 0.16 (w 0.95)`; values that appeared
    follow as `new: foldable 0.31`."""
    statistic = effect["statistic"]
    if statistic == "categories":
        text = f"{describe_categories(effect['categories'])} (w {effect['distance']:.2f})"
    elif statistic == "spread":
        text = f"sd {_fmt(effect['before'])} -> {_fmt(effect['after'])} (x{effect['ratio']:.3g})"
    else:
        change = f"{_fmt(effect['before'])} -> {_fmt(effect['after'])}"
        if statistic == "rate":
            relative = effect.get("relative")
            ratio = f"x{1 + relative:.3g}, " if relative is not None else ""
            text = f"{change} ({ratio}{effect['absolute']:+.3g})"
        else:
            text = f"{change} ({effect['shift']:+.2f} sd)"
    new = effect.get("new")
    if new:
        text += f" {describe_new(new)}"
    return text


def describe_new(new: list[dict[str, Any]], limit: int = 3) -> str:
    """`new: foldable 0.31`: values outside the known categories that arrived most."""
    return "new: " + ", ".join(
        f"{category_name(item['category'])} {item['after']:.2f}" for item in new[:limit]
    )


def describe_categories(moved: list[dict[str, Any]], limit: int = 3) -> str:
    """`fr 0.20 → 0.58, de 0.30 → 0.16`: the categories whose share moved most."""
    return ", ".join(
        f"{category_name(item['category'])} {item['before']:.2f} → {item['after']:.2f}"
        for item in moved[:limit]
    )


def category_name(category: str | None) -> str:
    """A category as a person reads it; None is every value outside the known categories."""
    return "(other)" if category is None else category


def describe_cause(cause: dict[str, Any]) -> str:
    """A likely cause: `amount (+1.40σ)`, or a categorical feature's moves."""
    if cause.get("statistic") == "categories":
        return f"{cause['feature']} ({describe_categories(cause.get('categories', []), 2)})"
    return f"{cause['feature']} ({cause['shift']:+.2f}σ)"


def level_unit(level: dict[str, Any]) -> str:
    """What a resolved event's levels are: a spread's standard deviations, a categorical
    feature's distance from its reference, else the signal's own values."""
    return {"spread": "sd ", "categories": "distance "}.get(str(level.get("statistic")), "")


def _describe_resolved(data: dict[str, Any]) -> str:
    level = data.get("level") or {}
    unit = level_unit(level)
    return (
        f"[RESOLVED] {data['monitor_key']} {data['signal_kind']}/{data['signal']} back at "
        f"{unit}{_fmt(level.get('now'))} (before {_fmt(level.get('before'))}, alerted "
        f"{_fmt(level.get('alerted'))}) closes {data['resolves']} "
        f"({data['detector']} after {data['observations']} obs"
        f"{', ' + data['event_time'] if data.get('event_time') else ''})"
    )


def _fmt(value: Any) -> str:
    return (
        f"{value:.4g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "?"
    )
