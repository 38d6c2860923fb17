"""Scoring detections against known change points: delay, true and false positives, misses.

Positions are event indices within one stream (for the backtest: a model's predictions, 0-based,
as `stream-monitor sample` reports its change points). A change point at c owns the detections in
[c, c + max_delay), cut short by the next change point of the same stream: the first one is a true
positive with delay d - c, later ones are duplicates (the same change seen again, e.g. on another
signal). A detection no change point owns is a false positive; a change point that owns none is a
miss. Streams without change points are stable: all their detections are false positives.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Detection:
    stream: str
    index: int
    label: str = ""  # what fired (e.g. "feature amount / adwin"), for the report


@dataclass
class ChangeOutcome:
    stream: str
    index: int
    detection: Detection | None = None
    duplicates: int = 0

    @property
    def delay(self) -> int | None:
        return None if self.detection is None else self.detection.index - self.index


@dataclass
class Score:
    changes: list[ChangeOutcome] = field(default_factory=list)
    false_positives: list[Detection] = field(default_factory=list)

    @property
    def true_positives(self) -> int:
        return sum(1 for change in self.changes if change.detection is not None)

    @property
    def misses(self) -> int:
        return sum(1 for change in self.changes if change.detection is None)

    @property
    def duplicates(self) -> int:
        return sum(change.duplicates for change in self.changes)

    @property
    def delays(self) -> list[int]:
        return [change.delay for change in self.changes if change.delay is not None]

    @property
    def mean_delay(self) -> float | None:
        delays = self.delays
        return sum(delays) / len(delays) if delays else None

    def summary(self) -> dict[str, Any]:
        return {
            "true_positives": self.true_positives,
            "false_positives": len(self.false_positives),
            "misses": self.misses,
            "duplicates": self.duplicates,
            "mean_delay": self.mean_delay,
            "changes": [
                {
                    "stream": change.stream,
                    "index": change.index,
                    "detected_at": None if change.detection is None else change.detection.index,
                    "delay": change.delay,
                    "by": None if change.detection is None else change.detection.label,
                    "duplicates": change.duplicates,
                }
                for change in self.changes
            ],
            "false_positive_detections": [
                {"stream": d.stream, "index": d.index, "by": d.label} for d in self.false_positives
            ],
        }


def score(
    change_points: Iterable[tuple[str, int]],
    detections: Iterable[Detection],
    max_delay: int | None = None,
) -> Score:
    """Match detections to change points; see the module docstring for the rules."""
    by_stream: dict[str, list[int]] = {}
    for stream, index in change_points:
        by_stream.setdefault(stream, []).append(index)
    result = Score()
    outcomes: dict[str, list[ChangeOutcome]] = {}
    for stream in sorted(by_stream):
        outcomes[stream] = [
            ChangeOutcome(stream, index) for index in sorted(set(by_stream[stream]))
        ]
        result.changes.extend(outcomes[stream])
    for detection in sorted(detections, key=lambda d: (d.stream, d.index, d.label)):
        owner = _owner(outcomes.get(detection.stream, []), detection.index, max_delay)
        if owner is None:
            result.false_positives.append(detection)
        elif owner.detection is None:
            owner.detection = detection
        else:
            owner.duplicates += 1
    return result


def _owner(changes: list[ChangeOutcome], index: int, max_delay: int | None) -> ChangeOutcome | None:
    for position, change in enumerate(changes):
        end = changes[position + 1].index if position + 1 < len(changes) else None
        if max_delay is not None:
            end = change.index + max_delay if end is None else min(end, change.index + max_delay)
        if change.index <= index and (end is None or index < end):
            return change
    return None
