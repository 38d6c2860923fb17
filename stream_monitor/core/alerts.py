"""Alert events: CloudEvents 1.0 structured JSON with deterministic ids and a short explanation.

An id is a hash of what identifies the detection (monitor key, signal, detector rule, and how many
values that detector had seen), never of wall-clock time or the instance: replaying the same input
in the same order, on any instance or runtime, gives the same ids, so consumers can de-duplicate.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

from stream_monitor.core.events import format_time

ALERT_TYPE = "stream_monitor.drift_detected"

# Severity from the standardised shift |mean_after - mean_before| / std of the detector's window.
WARNING_SHIFT = 0.5
CRITICAL_SHIFT = 1.0


def alert_id(key_id: str, signal_kind: str, signal: str, rule: str, observations: int) -> str:
    digest = hashlib.sha256(
        f"{key_id}\x1f{signal_kind}\x1f{signal}\x1f{rule}\x1f{observations}".encode()
    ).hexdigest()
    return f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"


def severity(stats: dict[str, Any], signal_kind: str) -> str:
    """info / warning / critical from the size of the shift, in standard deviations.

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
) -> dict[str, Any]:
    event_time = format_time(time_ms)
    event: dict[str, Any] = {
        "specversion": "1.0",
        "id": alert_id(key_id, signal_kind, signal, rule, observations),
        "source": f"stream-monitor/{source}",
        "type": ALERT_TYPE,
        "subject": f"{model}/{signal}",
        "datacontenttype": "application/json",
    }
    if event_time is not None:
        event["time"] = event_time
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
        "event_time": event_time,
        "observations": observations,
        "stats": stats,
        "severity": severity(stats, signal_kind),
        "likely_causes": likely_causes,
        "source_position": (
            None
            if position is None
            else {"topic": position[0], "partition": position[1], "offset": position[2]}
        ),
    }
    return event


def describe(alert: dict[str, Any]) -> str:
    """One readable line per alert, for people tailing the output."""
    data = alert["data"]
    stats = data["stats"]

    def fmt(value: float | None) -> str:
        return "?" if value is None else f"{value:.4g}"

    line = (
        f"[{data['severity'].upper()}] {data['monitor_key']} {data['signal_kind']}/{data['signal']} "
        f"{fmt(stats['mean_before'])} -> {fmt(stats['mean_after'])} (recent {fmt(stats.get('mean_recent'))}) "
        f"({data['detector']} after {data['observations']} obs"
        f"{', ' + data['event_time'] if data['event_time'] else ''})"
    )
    causes = data["likely_causes"]
    if causes:
        line += " likely causes: " + ", ".join(
            f"{c['feature']} ({c['shift']:+.2f}σ)" for c in causes
        )
    return line
