"""Prediction <-> label join by `prediction_id`, with an event-time TTL and bounded memory.

Both sides wait in insertion-ordered dicts, so the oldest entry is always first: eviction when full
and TTL expiry are O(1) per removed entry. The TTL is exact at match time (a label more than `ttl`
after its prediction is counted late, never joined); memory is reclaimed from the front of each
queue, so an entry that arrived out of event-time order may linger until the entries before it go.

A million predictions may wait, so an entry is kept small: its key is one string (`join_key`),
not a tuple of two, and its event time is a native integer field (`NO_TIME` when it has none).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from typing import Any, Final

JoinKey = str  # `join_key(model, prediction_id)`
JoinEntry = list[Any]  # [model, prediction_id, entry]; entry None: gone (core.state)
NO_TIME: Final = -(1 << 61)  # the time of an entry without one: far outside any valid event time


def join_key(model: str, prediction_id: str) -> JoinKey:
    """The model's length, a colon, the model, the prediction id: unambiguous whatever either
    string holds, and about half the memory of a (model, prediction_id) tuple."""
    return f"{len(model)}:{model}{prediction_id}"


def split_key(key: JoinKey) -> tuple[str, str]:
    """(model, prediction_id) of a `join_key`."""
    colon = key.index(":")
    end = colon + 1 + int(key[:colon])
    return key[colon + 1 : end], key[end:]


class Pending:
    """A prediction waiting for its label: what the performance signal needs, nothing more."""

    __slots__ = ("key_id", "prediction", "time_ms")

    def __init__(self, key_id: str, prediction: Any, time_ms: int | None) -> None:
        self.key_id = key_id
        self.prediction = prediction
        self.time_ms: int = NO_TIME if time_ms is None else time_ms


class WaitingLabel:
    """A label that arrived before its prediction."""

    __slots__ = ("label", "time_ms")

    def __init__(self, label: Any, time_ms: int | None) -> None:
        self.label = label
        self.time_ms: int = NO_TIME if time_ms is None else time_ms


def _time(time_ms: int) -> int | None:
    return None if time_ms == NO_TIME else time_ms


# Upper bounds (seconds) of the label-delay histogram: labels come seconds to weeks after predictions.
LABEL_DELAY_BUCKETS = (
    1.0,
    5.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
    4 * 3600.0,
    86400.0,
    7 * 86400.0,
)
_DELAY_BOUNDS_MS: Final = tuple(int(bound * 1000) for bound in LABEL_DELAY_BUCKETS)


# The counts of `JoinCounters.as_dict` (a compiled class has no `__slots__` to list them from).
JOIN_OUTCOMES: Final = (
    "duplicate_labels",
    "duplicate_predictions",
    "evicted_labels",
    "evicted_predictions",
    "expired_labels",
    "expired_predictions",
    "late_labels",
    "matched",
)


class JoinCounters:
    """Every way a join can end, counted. Cumulative; runtimes diff them per batch for metrics.

    Label delays (label time minus prediction time, at a match) are bucketed here so that a
    runtime can export a histogram without touching every event again.
    """

    __slots__ = ("delay_buckets", "delay_count", "delay_sum_ms", *JOIN_OUTCOMES)

    def __init__(self) -> None:
        self.matched = 0
        self.expired_predictions = 0  # no label within the TTL
        self.expired_labels = 0  # unmatched: their prediction never came within the TTL
        self.evicted_predictions = 0  # pushed out by max_pending_predictions
        self.evicted_labels = 0  # pushed out by max_pending_labels
        self.duplicate_predictions = 0
        self.duplicate_labels = 0
        self.late_labels = 0  # matched a prediction older than the TTL: not joined
        # Non-cumulative counts per LABEL_DELAY_BUCKETS bound, plus one for "above the last".
        self.delay_buckets = [0] * (len(LABEL_DELAY_BUCKETS) + 1)
        self.delay_count = 0
        self.delay_sum_ms = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in JOIN_OUTCOMES}

    def joined(self, prediction_ms: int, label_ms: int) -> None:
        self.matched += 1
        if prediction_ms == NO_TIME or label_ms == NO_TIME:
            return
        delay = label_ms - prediction_ms if label_ms > prediction_ms else 0
        self.delay_buckets[bisect_left(_DELAY_BOUNDS_MS, delay)] += 1
        self.delay_count += 1
        self.delay_sum_ms += delay


class LabelJoin:
    """Holds predictions until their labels arrive (and early labels until their predictions)."""

    def __init__(
        self,
        *,
        ttl_ms: int | None,
        max_pending_predictions: int,
        max_pending_labels: int,
    ) -> None:
        self.ttl_ms = ttl_ms
        self.max_pending_predictions = max_pending_predictions
        self.max_pending_labels = max_pending_labels
        self.predictions: dict[JoinKey, Pending] = {}
        self.labels: dict[JoinKey, WaitingLabel] = {}
        self.counters = JoinCounters()
        # Keys whose entry was added or removed since the last `take_changes()`, for the
        # changelog, in the order of their last change: replaying the changes in that order
        # rebuilds both queues in the same order (which eviction and expiry depend on).
        self.changed: dict[JoinKey, None] = {}

    def _changed(self, key: JoinKey) -> None:
        changed = self.changed
        changed.pop(key, None)
        changed[key] = None

    def _too_old(self, earlier_ms: int, later_ms: int) -> bool:
        ttl = self.ttl_ms
        return (
            ttl is not None
            and earlier_ms != NO_TIME
            and later_ms != NO_TIME
            and later_ms - earlier_ms > ttl
        )

    def add_prediction(
        self, model: str, prediction_id: str, pending: Pending
    ) -> WaitingLabel | None:
        """Store a prediction; return the label that was already waiting for it, if any."""
        key = join_key(model, prediction_id)
        waiting = self.labels.pop(key, None)
        if waiting is not None:
            self._changed(key)
            if self._too_old(pending.time_ms, waiting.time_ms) or self._too_old(
                waiting.time_ms, pending.time_ms
            ):
                self.counters.late_labels += 1
                return None
            self.counters.joined(pending.time_ms, waiting.time_ms)
            return waiting
        if key in self.predictions:
            self.counters.duplicate_predictions += 1
            return None
        predictions = self.predictions
        if len(predictions) >= self.max_pending_predictions:
            self._evict_oldest(predictions)
            self.counters.evicted_predictions += 1
        predictions[key] = pending
        self._changed(key)
        return None

    def add_label(self, model: str, prediction_id: str, label: WaitingLabel) -> Pending | None:
        """Match a label with its prediction; park it if the prediction has not arrived yet."""
        key = join_key(model, prediction_id)
        pending = self.predictions.pop(key, None)
        if pending is not None:
            self._changed(key)
            if self._too_old(pending.time_ms, label.time_ms):
                self.counters.late_labels += 1
                return None
            self.counters.joined(pending.time_ms, label.time_ms)
            return pending
        labels = self.labels
        if key in labels:
            self.counters.duplicate_labels += 1
            return None
        if len(labels) >= self.max_pending_labels:
            self._evict_oldest(labels)
            self.counters.evicted_labels += 1
        labels[key] = label
        self._changed(key)
        return None

    def _evict_oldest(self, queue: dict[JoinKey, Any]) -> None:
        oldest = next(iter(queue))
        del queue[oldest]
        self._changed(oldest)

    def discard_prediction(self, model: str, prediction_id: str) -> None:
        """Forget a pending prediction whose label arrived carrying the prediction itself."""
        key = join_key(model, prediction_id)
        if self.predictions.pop(key, None) is not None:
            self._changed(key)

    def expire(self, watermark_ms: int | None) -> None:
        """Drop entries older than the TTL relative to the newest event time seen."""
        if self.ttl_ms is None or watermark_ms is None:
            return
        horizon = watermark_ms - self.ttl_ms
        counters = self.counters
        changed = self.changed
        for queue, is_prediction in ((self.predictions, True), (self.labels, False)):
            # One pass from the front, deleting afterwards. A dict keeps the slots of deleted
            # entries until it resizes, and every new iterator skips them again: asking for the
            # front entry once per expired entry made expiry quadratic (a third of the service's
            # time with 1M pending joins).
            expired = []
            for key, entry in queue.items():
                entry_time = entry.time_ms
                if entry_time == NO_TIME or entry_time >= horizon:
                    break
                expired.append(key)
            for key in expired:
                del queue[key]
                changed.pop(key, None)
                changed[key] = None
            if is_prediction:
                counters.expired_predictions += len(expired)
            else:
                counters.expired_labels += len(expired)

    # --- state -----------------------------------------------------------------------------
    def pending_predictions(self) -> list[tuple[str, str]]:
        """(model, prediction_id) of each waiting prediction, oldest first."""
        return [split_key(key) for key in self.predictions]

    def waiting_labels(self) -> list[tuple[str, str]]:
        """(model, prediction_id) of each waiting label, oldest first."""
        return [split_key(key) for key in self.labels]

    def dump_entry(self, key: JoinKey) -> list[Any] | None:
        """The current entry for `key` as plain data, or None when it is gone (a tombstone)."""
        entry: list[Any] | None = self.dump_entries((key,))[0][2]
        return entry

    def dump_entries(self, keys: Iterable[JoinKey]) -> list[JoinEntry]:
        """`dump_entry` of each key in one loop: a checkpoint dumps every key that changed."""
        predictions, labels = self.predictions, self.labels
        out: list[JoinEntry] = []
        append = out.append
        for key in keys:
            model, prediction_id = split_key(key)
            pending = predictions.get(key)
            if pending is not None:
                entry = ["p", pending.key_id, pending.prediction, _time(pending.time_ms)]
                append([model, prediction_id, entry])
                continue
            waiting = labels.get(key)
            gone = None if waiting is None else ["l", waiting.label, _time(waiting.time_ms)]
            append([model, prediction_id, gone])
        return out

    def load_entry(self, model: str, prediction_id: str, data: list[Any] | None) -> None:
        """Apply one changelog entry: a prediction or label waiting, or (None) neither."""
        key = join_key(model, prediction_id)
        self.predictions.pop(key, None)
        self.labels.pop(key, None)
        if data is None:
            return
        if data[0] == "p":
            self.predictions[key] = Pending(data[1], data[2], data[3])
        elif data[0] == "l":
            self.labels[key] = WaitingLabel(data[1], data[2])
        else:
            raise ValueError(f"unknown join entry kind {data[0]!r}")

    def take_changes(self) -> list[JoinKey]:
        changed, self.changed = self.changed, {}
        return list(changed)
