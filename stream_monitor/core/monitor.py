"""`Monitor.process(records) -> Output`: the whole monitoring logic, pure and deterministic.

Runtimes (Kafka, Faust, replay) hand it records as plain tuples and act on its output. Time comes
in as data (the event's timestamp, else the Kafka timestamp); the same records in the same order
always give the same alerts with the same ids and the same state.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from stream_monitor.config import Config
from stream_monitor.core.alerts import build_alert
from stream_monitor.core.detectors import DetectorRule
from stream_monitor.core.events import (
    LABEL,
    MAX_MAGNITUDE,
    PREDICTION,
    EventError,
    Label,
    Prediction,
    UnknownEventKind,
    WrongType,
    decode_label,
    decode_prediction,
)
from stream_monitor.core.join import JoinKey, LabelJoin, Pending, WaitingLabel
from stream_monitor.core.signals import (
    DATA_QUALITY,
    FEATURE,
    PERFORMANCE,
    RECENT_ALPHA,
    FeatureSlot,
    KeyState,
    ModelPlan,
    Signal,
    Track,
    resolve_plan,
)
from stream_monitor.core.signals import (
    PREDICTION as PREDICTION_SIGNAL,
)
from stream_monitor.errors import StateError

# (kind, value, kafka timestamp ms | None, topic | None, partition, offset)
Record = tuple[str, Any, "int | None", "str | None", int, int]

_EMPTY: dict[str, Any] = {}
META_KEY = "meta"
KEY_PREFIX = "k:"
JOIN_PREFIX = "j:"
_JOIN_SEPARATOR = "\x1f"


class Alert:
    """An alert ready to publish: the CloudEvent and the monitor key to partition it by."""

    __slots__ = ("event", "key")

    def __init__(self, key: str, event: dict[str, Any]) -> None:
        self.key = key
        self.event = event

    @property
    def id(self) -> str:
        return str(self.event["id"])


class DeadLetter:
    """An input record that could not be used, with the error that says why."""

    __slots__ = ("error", "record")

    def __init__(self, record: Record, error: EventError) -> None:
        self.record = record
        self.error = error


class Output:
    __slots__ = ("alerts", "dead_letters")

    def __init__(self) -> None:
        self.alerts: list[Alert] = []
        self.dead_letters: list[DeadLetter] = []


class MonitorCounters:
    """Cumulative counts a runtime turns into metrics (diffed once per batch, not per event)."""

    __slots__ = ("alerts", "detector_updates", "events", "invalid", "suppressed", "unmonitored")

    def __init__(self) -> None:
        self.events = {PREDICTION: 0, LABEL: 0}
        self.invalid: dict[str, int] = {}
        self.detector_updates = 0
        self.alerts: dict[tuple[str, str], int] = {}  # (signal kind, detector) -> count
        self.suppressed = 0  # detections inside a cooldown
        self.unmonitored = 0  # valid events of models no rule matches


def join_state_key(key: JoinKey) -> str:
    return f"{JOIN_PREFIX}{key[0]}{_JOIN_SEPARATOR}{key[1]}"


class Monitor:
    """Signals -> detectors -> alert policy, per monitor key, over decoded or raw events."""

    def __init__(self, config: Config, *, source: str | None = None) -> None:
        self.config = config
        self.source = source or config.alerts.source
        self.rules: dict[str, DetectorRule] = config.detector_rules()
        self.keys: dict[str, KeyState] = {}
        self.join = LabelJoin(
            ttl_ms=config.join.ttl,
            max_pending_predictions=config.join.max_pending_predictions,
            max_pending_labels=config.join.max_pending_labels,
        )
        self.counters = MonitorCounters()
        self.watermark_ms: int | None = None
        self._plans: dict[str, ModelPlan | None] = {}
        self._by_version = config.key_by.model_version
        self._segment_fields = tuple(config.key_by.segment)
        self._max_bytes = config.events.max_bytes
        self._cooldown = config.alerts.cooldown
        self._dirty: set[KeyState] = set()
        self._meta_dirty = False
        # Context of the event being processed, read only when an alert is built.
        self._record: Record | None = None
        self._time_ms: int | None = None
        self._output = Output()

    # --- processing ------------------------------------------------------------------------
    def process(self, records: Iterable[Record]) -> Output:
        output = self._output = Output()
        counters = self.counters
        max_bytes = self._max_bytes
        on_prediction = self._on_prediction
        on_label = self._on_label
        seen_predictions = seen_labels = 0
        for record in records:
            kind = record[0]
            self._record = record
            try:
                if kind == PREDICTION:
                    seen_predictions += 1
                    on_prediction(decode_prediction(record[1], record[2], max_bytes))
                elif kind == LABEL:
                    seen_labels += 1
                    on_label(decode_label(record[1], record[2], max_bytes))
                else:
                    raise UnknownEventKind(f"unknown event kind {kind!r}")
            except EventError as error:
                self._on_invalid(record, error)
        counters.events[PREDICTION] += seen_predictions
        counters.events[LABEL] += seen_labels
        self.join.expire(self.watermark_ms)
        self._record = None
        return output

    def _advance(self, time_ms: int | None) -> None:
        self._time_ms = time_ms
        if time_ms is not None and (self.watermark_ms is None or time_ms > self.watermark_ms):
            self.watermark_ms = time_ms
            self._meta_dirty = True

    def _plan(self, model: str) -> ModelPlan | None:
        try:
            return self._plans[model]
        except KeyError:
            plan = self._plans[model] = resolve_plan(self.config, self.rules, model)
            return plan

    def key_id(self, model: str, version: str | None, segment: dict[str, str] | None) -> str:
        if not self._by_version and not self._segment_fields:
            return model
        parts = [model]
        if self._by_version:
            parts.append(f"@{version or ''}")
        if self._segment_fields:
            segment = segment or _EMPTY
            parts.append(
                "|" + ",".join(f"{name}={segment.get(name, '')}" for name in self._segment_fields)
            )
        return "".join(parts)

    def _key_state(
        self, model: str, version: str | None, segment: dict[str, str] | None
    ) -> KeyState | None:
        key_id = self.key_id(model, version, segment)
        state = self.keys.get(key_id)
        if state is None:
            plan = self._plan(model)
            if plan is None:
                return None
            kept_segment = {
                name: (segment or _EMPTY).get(name, "") for name in self._segment_fields
            }
            state = self.keys[key_id] = KeyState(
                key_id, model, version if self._by_version else None, kept_segment, plan
            )
        self._dirty.add(state)
        return state

    def _on_prediction(self, event: Prediction) -> None:
        self._advance(event.time_ms)
        state = self._key_state(event.model, event.model_version, event.segment)
        if state is None:
            self.counters.unmonitored += 1
            return
        observe = self._observe
        if state.invalid is not None:
            observe(state, state.invalid, 0.0)

        # prediction signal
        score = event.score
        if score is not None:
            name, value = "score", score
        else:
            prediction = event.prediction
            kind = type(prediction)
            if kind is float or kind is int:
                name, value = "prediction", float(prediction)
            else:
                if state.positive_class is None:
                    state.positive_class = True if kind is bool else prediction
                name, value = "positive_rate", 1.0 if prediction == state.positive_class else 0.0
        predictions = state.predictions
        signal = predictions.get(name, _EMPTY)
        if signal is _EMPTY:
            signal = predictions[name] = state.new_signal(PREDICTION_SIGNAL, name)
        if signal is not None:
            observe(state, signal, value)  # type: ignore[arg-type]

        # features and their data quality
        features = event.features or _EMPTY
        present = 0
        for feature_name, slot in state.features.items():
            raw = features.get(feature_name)
            if raw is not None:
                present += 1
            self._feature(state, feature_name, slot, raw)
        if present < len(features):
            for feature_name, raw in features.items():
                if feature_name not in state.features:
                    self._feature(state, feature_name, state.add_feature(feature_name), raw)

        # join with its label
        if state.plan.joins:
            join_key = (event.model, event.prediction_id)
            waiting = self.join.add_prediction(
                join_key, Pending(state.id, event.prediction, event.time_ms)
            )
            if waiting is not None:
                self._performance(state, event.prediction, waiting.label)

    def _feature(self, state: KeyState, name: str, slot: FeatureSlot, raw: Any) -> None:
        kind = type(raw)
        if kind is float or kind is int:
            value = float(raw)
            # inf, NaN or too large for running statistics: a data quality problem, not a value
            if value - value != 0.0 or not -MAX_MAGNITUDE <= value <= MAX_MAGNITUDE:
                if slot.missing is not None:
                    self._observe(state, slot.missing, 1.0)
                return
            values = slot.values
            if values is None and not slot.numeric:
                slot.numeric = True
                values = slot.values = state.new_signal(FEATURE, name)
            if values is not None:
                values.profile(value)
                self._observe(state, values, value)
            if slot.missing is not None:
                self._observe(state, slot.missing, 0.0)
        elif slot.missing is not None:
            self._observe(state, slot.missing, 1.0 if raw is None else 0.0)

    def _on_label(self, event: Label) -> None:
        self._advance(event.time_ms)
        join_key = (event.model, event.prediction_id)
        if event.prediction is not None:
            # A label that carries its prediction needs no join.
            state = self._key_state(event.model, event.model_version, event.segment)
            if state is None:
                self.counters.unmonitored += 1
                return
            self.join.discard_prediction(join_key)
            self._performance(state, event.prediction, event.label)
            return
        if self._plan(event.model) is None:
            self.counters.unmonitored += 1
            return
        pending = self.join.add_label(join_key, WaitingLabel(event.label, event.time_ms))
        if pending is None:
            return
        state = self.keys.get(pending.key_id)
        if state is None:  # its key state was lost; nothing to attribute the error to
            return
        self._dirty.add(state)
        self._performance(state, pending.prediction, event.label)

    def _performance(self, state: KeyState, prediction: Any, label: Any) -> None:
        task = state.task
        if task == "auto":
            numeric = _is_number(prediction) and _is_number(label)
            task = state.task = (
                "regression"
                if numeric and (type(prediction) is float or type(label) is float)
                else "classification"
            )
        if task == "classification":
            name, value = "error", 0.0 if prediction == label else 1.0
        else:
            if not (_is_number(prediction) and _is_number(label)):
                raise WrongType(
                    f"field 'label' must be a number for regression model {state.model!r} "
                    f"(prediction {prediction!r}, label {label!r})",
                    "label",
                )
            name, value = "absolute_error", abs(float(prediction) - float(label))
        signal = state.performance
        if signal is None or signal.name != name:
            signal = state.performance = state.new_signal(PERFORMANCE, name)
            if signal is None:
                return
        self._observe(state, signal, value)

    def _on_invalid(self, record: Record, error: EventError) -> None:
        counters = self.counters
        counters.invalid[error.reason] = counters.invalid.get(error.reason, 0) + 1
        self._output.dead_letters.append(DeadLetter(record, error))
        partial = error.partial
        # invalid_rate follows the predictions stream only: mixing in label events would make its
        # observation counts (and so alert ids) depend on how the two topics interleave.
        if partial is None or record[0] != PREDICTION:
            return
        model = partial.get("model")
        if type(model) is not str or not model:
            return
        version = partial.get("model_version")
        segment = partial.get("segment")
        if type(segment) is not dict or any(type(v) is not str for v in segment.values()):
            segment = None
        state = self._key_state(model, version if type(version) is str else None, segment)
        if state is not None and state.invalid is not None:
            self._time_ms = record[2]
            self._observe(state, state.invalid, 1.0)

    def _observe(self, state: KeyState, signal: Signal, value: float) -> None:
        tracks = signal.tracks
        recent_alpha = RECENT_ALPHA
        for track in tracks:
            track.update(value)
            track.seen += 1
            track.n += 1
            track.total += value
            track.total_sq += value * value
            track.recent += recent_alpha * (value - track.recent)
            if track.detector._drift_detected:
                self._drifted(state, signal, track)
        self.counters.detector_updates += len(tracks)

    def _drifted(self, state: KeyState, signal: Signal, track: Track) -> None:
        if track.seen <= track.quiet_until:
            self.counters.suppressed += 1
            track.reset_window()
            return
        track.quiet_until = track.seen + self._cooldown
        stats = track.window_stats()
        track.reset_window()
        rule = track.rule
        record = self._record
        position = (record[3], record[4], record[5]) if record is not None and record[3] else None
        event = build_alert(
            source=self.source,
            key_id=state.id,
            model=state.model,
            model_version=state.model_version,
            segment=state.segment,
            signal_kind=signal.kind,
            signal=signal.name,
            rule=rule.name,
            detector=rule.type.name,
            detector_params=rule.params,
            observations=track.seen,
            time_ms=self._time_ms,
            stats={key: _round(value) for key, value in stats.items()},
            likely_causes=self._likely_causes(state) if signal.kind == PERFORMANCE else [],
            position=position,
        )
        counters = self.counters.alerts
        counter_key = (signal.kind, rule.type.name)
        counters[counter_key] = counters.get(counter_key, 0) + 1
        self._output.alerts.append(Alert(state.id, event))

    def _likely_causes(self, state: KeyState) -> list[dict[str, Any]]:
        """The features of this key whose recent mean moved furthest from their baseline."""
        minimum = self.config.alerts.likely_cause_min_shift
        moved = []
        for name, slot in state.features.items():
            if slot.values is None:
                continue
            shift = slot.values.shift()
            if shift is not None and abs(shift) >= minimum:
                moved.append((abs(shift), name, shift, slot.values))
        moved.sort(key=lambda item: (-item[0], item[1]))
        return [
            {
                "feature": name,
                "shift": _round(shift),
                "baseline_mean": _round(signal.baseline),
                "recent_mean": _round(signal.recent),
            }
            for _, name, shift, signal in moved[: self.config.alerts.max_likely_causes]
        ]

    # --- state -----------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """The whole state as plain data, one entry per key: monitor keys, join entries, meta."""
        items: dict[str, Any] = {META_KEY: self._dump_meta()}
        for key_id, state in self.keys.items():
            items[KEY_PREFIX + key_id] = state.dump()
        for join_key in (*self.join.predictions, *self.join.labels):
            items[join_state_key(join_key)] = self.join.dump_entry(join_key)
        return items

    def take_changes(self) -> dict[str, Any]:
        """Only what changed since the last call; None values are deletions (tombstones)."""
        items: dict[str, Any] = {}
        if self._meta_dirty:
            items[META_KEY] = self._dump_meta()
            self._meta_dirty = False
        for state in self._dirty:
            items[KEY_PREFIX + state.id] = state.dump()
        self._dirty = set()
        for join_key in self.join.take_changes():
            items[join_state_key(join_key)] = self.join.dump_entry(join_key)
        return items

    def _dump_meta(self) -> dict[str, Any]:
        return {"watermark_ms": self.watermark_ms}

    def restore(self, items: Iterable[tuple[str, Any]]) -> None:
        """Load state written by `snapshot()`/`take_changes()` (latest value per key wins)."""
        join_entries: list[tuple[JoinKey, list[Any]]] = []
        for key, data in items:
            if data is None:
                continue
            try:
                if key == META_KEY:
                    self.watermark_ms = data.get("watermark_ms")
                elif key.startswith(KEY_PREFIX):
                    self._restore_key(key[len(KEY_PREFIX) :], data)
                elif key.startswith(JOIN_PREFIX):
                    model, _, prediction_id = key[len(JOIN_PREFIX) :].partition(_JOIN_SEPARATOR)
                    join_entries.append(((model, prediction_id), data))
                else:
                    raise StateError(f"unknown state key {key!r}")
            except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
                raise StateError(f"state for {key!r} is not understood: {exc!r}") from exc
        # Oldest first, so that eviction and expiry keep working from the front of the queues.
        join_entries.sort(key=lambda item: item[1][-1] if item[1][-1] is not None else -1)
        for join_key, data in join_entries:
            self.join.load_entry(join_key, data)
        self.join.take_changes()
        self._dirty = set()
        self._meta_dirty = False

    def _restore_key(self, key_id: str, data: dict[str, Any]) -> None:
        model = data["model"]
        plan = self._plan(model)
        if plan is None:
            return  # the config no longer monitors this model
        state = KeyState(key_id, model, data["model_version"], data["segment"], plan)
        state.task = data["task"] if plan.task == "auto" else plan.task
        state.positive_class = (
            plan.positive_class if plan.positive_class is not None else data["positive_class"]
        )
        for name in data["features"]:
            state.add_feature(name)
        for name in data["predictions"]:
            state.predictions[name] = state.new_signal(PREDICTION_SIGNAL, name)
        for kind, name, tracks, profile in data["signals"]:
            signal = self._signal_slot(state, kind, name)
            if signal is None:
                continue
            saved = {track[0]: track for track in tracks}
            signal.tracks = [
                Track.load(track.rule, saved[track.rule.name])
                if track.rule.name in saved
                else track
                for track in signal.tracks
            ]
            signal.count, signal.baseline, signal.baseline_var, signal.recent = profile
        self.keys[key_id] = state

    @staticmethod
    def _signal_slot(state: KeyState, kind: str, name: str) -> Signal | None:
        if kind == PERFORMANCE:
            state.performance = state.new_signal(PERFORMANCE, name)
            return state.performance
        if kind == PREDICTION_SIGNAL:
            return state.predictions.get(name)
        if kind == FEATURE:
            slot = state.features.get(name) or state.add_feature(name)
            slot.numeric = True
            slot.values = state.new_signal(FEATURE, name)
            return slot.values
        if kind == DATA_QUALITY:
            if name == "invalid_rate":
                return state.invalid
            feature = name.partition(":")[2]
            slot = state.features.get(feature) or state.add_feature(feature)
            return slot.missing
        return None


def _is_number(value: Any) -> bool:
    kind = type(value)
    return kind is float or kind is int


def _round(value: Any) -> Any:
    return round(value, 6) if type(value) is float else value
