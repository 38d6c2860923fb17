"""Outputs that may already be visible, so that processing the same input again never repeats them.

After a crash, a successor processes again what its predecessor processed but did not commit. In
at-least-once mode (and on brokers that expose a dead producer's open transaction), the outputs of
that input can already be on the topics. The runtime reads the alerts and dead letters published
since the last state checkpoint and hands their ids here; an output with one of those ids is not
published again. Ids are deterministic (an alert's hashes its key, signal, rule and observation
index; a dead letter's is its input position), so the regenerated output has the same id.

Each id is kept with the input position that triggered it and forgotten once processing has
passed that position: memory stays bounded by what one restart can process again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import orjson

from stream_monitor.core.monitor import Output
from stream_monitor.processing import deadletters


class OutputGuard:
    """Ids of possibly visible outputs, per input topic-partition of their triggering record."""

    def __init__(self) -> None:
        self._ids: dict[tuple[str, int], dict[str, int]] = {}  # (topic, partition) -> id -> offset
        self._all: dict[str, tuple[str, int]] = {}
        self.suppressed = 0  # outputs not published again

    def __len__(self) -> int:
        return len(self._all)

    def remember(self, output_id: str, topic: str, partition: int, offset: int) -> None:
        self._ids.setdefault((topic, partition), {})[output_id] = offset
        self._all[output_id] = (topic, partition)

    def visible(self, output_id: str) -> bool:
        """Whether this output may already be published (counted as suppressed when it is)."""
        if output_id in self._all:
            self.suppressed += 1
            return True
        return False

    def forget_before(self, positions: Mapping[tuple[str, int], int]) -> None:
        """Drop ids whose triggering record lies before these next-to-process offsets."""
        for where, at in positions.items():
            ids = self._ids.get(where)
            if not ids:
                continue
            done = [output_id for output_id, offset in ids.items() if offset < at]
            for output_id in done:
                del ids[output_id]
                self._all.pop(output_id, None)

    def forget_partition(self, topic: str, partition: int) -> None:
        for output_id in self._ids.pop((topic, partition), {}):
            self._all.pop(output_id, None)


class Publication(NamedTuple):
    """One output record to publish: an alert or a dead letter."""

    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]
    alert: dict[str, Any] | None  # the alert's CloudEvent; None for a dead letter


class OutputCounters:
    """What a runtime published; runtimes diff these into metrics once per batch."""

    __slots__ = ("alerts", "dead_letters", "replayed", "suppressed")

    def __init__(self) -> None:
        self.alerts = 0
        self.dead_letters = 0
        self.suppressed = 0  # outputs a predecessor had already made visible: not published again
        self.replayed = 0  # outputs of input processed again after a restore: left out


ALERT_HEADERS = [("content-type", b"application/cloudevents+json")]


def publications(
    output: Output,
    guard: OutputGuard,
    counters: OutputCounters,
    *,
    alerts_topic: str,
    dead_letters_topic: str,
    room: Callable[[bytes | None], int],
) -> list[Publication]:
    """The records that publish `output`, leaving out what may already be visible.

    A dead letter keeps its input record's key; `room(key)` is how many bytes of its value the
    producer can still send with that key.
    """
    out: list[Publication] = []
    for alert in output.alerts:
        if guard.visible(alert.id):
            counters.suppressed += 1
            continue
        value = orjson.dumps(alert.event)
        out.append(Publication(alerts_topic, alert.key.encode(), value, ALERT_HEADERS, alert.event))
        counters.alerts += 1
    for dead in output.dead_letters:
        key = dead.record.key
        identity, value, headers = deadletters.record(dead, room(key))
        if guard.visible(identity):
            counters.suppressed += 1
            continue
        out.append(Publication(dead_letters_topic, key, value, headers, None))
        counters.dead_letters += 1
    return out
