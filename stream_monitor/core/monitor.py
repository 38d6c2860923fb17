"""`Monitor`: signals -> detectors -> alert policy for the events of one input partition.

Pure and deterministic: the same events in the same order give the same alerts with the same ids
and the same state. Time comes in as data (the event's timestamp, else the record's). The order
of the two input streams is decided before events reach the monitor (`processing.merge`), and
everything here that depends on time depends on the events applied so far, never on how they
were cut into batches: the join's clock advances in fixed blocks of events and expires entries
at fixed points of the sequence.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from mypy_extensions import mypyc_attr

from stream_monitor.core.alerts import build_alert, build_resolved
from stream_monitor.core.categories import BLOCK as CATEGORY_BLOCK
from stream_monitor.core.categories import SETTLE_BLOCKS, Categories
from stream_monitor.core.effects import CATEGORIES, MEAN, RATE, SPREAD
from stream_monitor.core.events import (
    LABEL,
    MAX_MAGNITUDE,
    PREDICTION,
    Decoded,
    EventError,
    Label,
    Prediction,
    Record,
    WrongType,
    decode,
    record_time,
)
from stream_monitor.core.join import JoinKey, LabelJoin, Pending, WaitingLabel
from stream_monitor.core.lifecycle import SETTLE, Incident
from stream_monitor.core.settings import MonitorSettings
from stream_monitor.core.signals import (
    CATEGORICAL,
    CATEGORIES_ENTRY,
    DATA_QUALITY,
    DORMANT,
    DRIFT,
    ESTIMATED_ERROR,
    FEATURE,
    MISSING_RATE,
    NUMERIC,
    PERFORMANCE,
    RESOLVED,
    UNDECIDED,
    UNSEEN_RATE,
    WRONG_TYPE_PRIMING,
    WRONG_TYPE_RATE,
    FeatureSlot,
    KeyState,
    ModelPlan,
    Signal,
    Track,
    is_rate_signal,
    resolve_plan,
)
from stream_monitor.core.signals import PREDICTION as PREDICTION_SIGNAL
from stream_monitor.core.state import KeyDumps, StateChanges
from stream_monitor.errors import StateError

_EMPTY: Final[dict[str, Any]] = {}
# The join's clock (its watermark) is the smallest event time of each block of this many timed
# events, so that one event with a wild (but valid) timestamp cannot move it; it never goes back.
WATERMARK_BLOCK: Final = 64
# Expired join entries are dropped every this many blocks: finding them costs a pass from the
# front of the queues, which is cheap only when it is rare (see `LabelJoin.expire`).
EXPIRY_EVERY_BLOCKS: Final = 64


class Alert:
    """An alert ready to publish: the CloudEvent, the monitor key to partition it by, and the
    input record that triggered it."""

    __slots__ = ("event", "key", "record")

    def __init__(self, key: str, event: dict[str, Any], record: Record | None = None) -> None:
        self.key = key
        self.event = event
        self.record = record

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

    __slots__ = (
        "alerts",
        "detector_updates",
        "events",
        "in_cooldown",
        "invalid",
        "negligible",
        "overflow",
        "resolved",
        "unmonitored",
        "unscorable",
    )

    def __init__(self) -> None:
        self.events = {PREDICTION: 0, LABEL: 0}
        self.invalid: dict[str, int] = {}
        self.detector_updates = 0
        self.alerts: dict[tuple[str, str], int] = {}  # (signal kind, detector) -> count
        self.resolved: dict[tuple[str, str], int] = {}  # drift_resolved events, the same way
        self.in_cooldown = 0  # detections inside a cooldown, not alerted
        self.negligible = 0  # detections whose effect is below alerts.min_effect, not alerted
        self.unmonitored = 0  # valid events of models no rule matches
        # what a bound of `Limits` turned away: "models", "keys_per_model", "keys", "features",
        # "feature_names"; "categories": features with more distinct values than known
        # categories (the rest counts as other), once each; "category_values": values longer
        # than a category may be (counted as unseen)
        self.overflow: dict[str, int] = {}
        # joined pairs of a regression model whose prediction or label is not a number, found
        # when the prediction arrived after its label (the label itself was valid on its own)
        self.unscorable = 0


# Subclassed by Python code (references, backtests), also when compiled (tools/build_native.py).
@mypyc_attr(allow_interpreted_subclasses=True)
class Monitor:
    """Signals -> detectors -> alert policy, per monitor key, over the events of one partition."""

    def __init__(self, settings: MonitorSettings, *, source: str | None = None) -> None:
        self.settings = settings
        self.source = source or settings.source
        self.keys: dict[str, KeyState] = {}
        self.join = LabelJoin(
            ttl_ms=settings.join_ttl_ms,
            max_pending_predictions=settings.max_pending_predictions,
            max_pending_labels=settings.max_pending_labels,
        )
        self.counters = MonitorCounters()
        self.watermark_ms: int | None = None
        self._block_min: int | None = None  # smallest time of the current watermark block
        self._block_size = 0
        self._blocks = 0  # completed blocks, for the expiry cadence
        self._plans: dict[str, ModelPlan | None] = {}
        self._by_version = settings.key_by_version
        self._segment_fields = settings.key_by_segment
        self._max_bytes = settings.max_event_bytes
        self._cooldown = settings.cooldown
        self._limits = settings.limits
        self._model_keys: dict[str, int] = {}  # monitor keys per model, for the limits
        self._dirty: dict[str, KeyState] = {}
        self._meta_dirty = False
        # Context of the event being applied, read only when an alert is built.
        self._record: Record | None = None
        self._time_ms: int | None = None
        self._output = Output()

    # --- processing ------------------------------------------------------------------------
    def process(self, records: Iterable[Record]) -> Output:
        """Decode and apply records in the order given (runtimes merge their streams first)."""
        self.begin()
        max_bytes = self._max_bytes
        for record in records:
            self.apply(record, decode(record, max_bytes))
        return self.end()

    def begin(self) -> None:
        """Start collecting the output of the events applied next."""
        self._output = Output()

    def end(self) -> Output:
        """The alerts and dead letters of the events applied since `begin`."""
        self._record = None
        output, self._output = self._output, Output()
        return output

    def apply(self, record: Record, event: Decoded) -> None:
        """One event (already decoded: `core.events.decode`), or the error that rejected it."""
        self._record = record
        try:
            if type(event) is Prediction:
                self.counters.events[PREDICTION] += 1
                self._on_prediction(event)
            elif type(event) is Label:
                self.counters.events[LABEL] += 1
                self._on_label(event)
            else:
                assert isinstance(event, EventError)
                if record.kind in (PREDICTION, LABEL):
                    self.counters.events[record.kind] += 1
                self._on_invalid(record, event)
        except EventError as error:  # found while scoring a joined pair (regression labels)
            self._on_invalid(record, error)

    def _advance(self, time_ms: int | None) -> None:
        self._time_ms = time_ms
        if time_ms is None:
            return
        self._meta_dirty = True
        block_min = self._block_min
        if block_min is None or time_ms < block_min:
            self._block_min = block_min = time_ms
        self._block_size += 1
        if self._block_size < WATERMARK_BLOCK:
            return
        self._block_size = 0
        self._block_min = None
        self._blocks += 1
        if self.watermark_ms is None or block_min > self.watermark_ms:
            self.watermark_ms = block_min
        if self._blocks % EXPIRY_EVERY_BLOCKS == 0:
            self.join.expire(self.watermark_ms)

    def _plan(self, model: str) -> ModelPlan | None:
        try:
            return self._plans[model]
        except KeyError:
            plan = self._plans[model] = resolve_plan(self.settings, model)
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
                self.counters.unmonitored += 1
                return None
            limits, per_model = self._limits, self._model_keys
            keys_of_model = per_model.get(model, 0)
            if not keys_of_model and len(per_model) >= limits.max_models:
                self._overflow("models")
                return None
            if keys_of_model >= limits.max_keys_per_model:
                self._overflow("keys_per_model")
                return None
            if len(self.keys) >= limits.max_keys:
                self._overflow("keys")
                return None
            kept_segment = {
                name: (segment or _EMPTY).get(name, "") for name in self._segment_fields
            }
            state = self.keys[key_id] = KeyState(
                key_id, model, version if self._by_version else None, kept_segment, plan
            )
            per_model[model] = keys_of_model + 1
        self._dirty[key_id] = state
        return state

    def _overflow(self, what: str) -> None:
        overflow = self.counters.overflow
        overflow[what] = overflow.get(what, 0) + 1

    def _on_prediction(self, event: Prediction) -> None:
        self._advance(event.time_ms)
        state = self._key_state(event.model, event.model_version, event.segment)
        if state is None:
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
        if score is not None and 0.0 <= score <= 1.0 and state.task != "regression":
            self._estimate(state, event.prediction, score)

        # features and their data quality
        features = event.features or _EMPTY
        known = state.features
        present = 0
        for feature_name, slot in known.items():
            raw = features.get(feature_name)
            if raw is not None:
                present += 1
            self._feature(state, feature_name, slot, raw)
        if present < len(features):
            for feature_name, raw in features.items():
                if feature_name not in known:
                    added = self._new_feature(state, feature_name)
                    if added is not None:
                        self._feature(state, feature_name, added, raw)

        # join with its label
        if state.plan.joins:
            waiting = self.join.add_prediction(
                state.model,
                event.prediction_id,
                Pending(state.id, event.prediction, event.time_ms),
            )
            if waiting is not None:
                try:
                    self._performance(state, event.prediction, waiting.label)
                except WrongType:  # the label's fault, and the label is long gone
                    self.counters.unscorable += 1

    def _estimate(self, state: KeyState, prediction: Any, score: float) -> None:
        """`estimated_error` of a classifier from its score, before any label: the expected error
        1 - max(p, 1 - p) of a calibrated probability p decided at 0.5 (the same whether `score`
        is the positive class's probability or the predicted class's)."""
        if type(prediction) is float:
            return  # a number with a score: not a classifier's class
        estimated = state.estimated
        if not state.estimating:
            estimated = state.estimated = state.new_signal(PERFORMANCE, ESTIMATED_ERROR)
            state.estimating = True
        if estimated is not None:
            self._observe(state, estimated, score if score < 0.5 else 1.0 - score)

    def _new_feature(self, state: KeyState, name: str) -> FeatureSlot | None:
        limits = self._limits
        if len(name) > limits.max_feature_name:
            self._overflow("feature_names")
            return None
        if len(state.features) >= limits.max_features:
            self._overflow("features")
            return None
        slot = state.add_feature(name)
        if slot.categories is not None and slot.categories.truncated:  # from its reference
            self._overflow("categories")
        return slot

    def _feature(self, state: KeyState, name: str, slot: FeatureSlot, raw: Any) -> None:
        """One event's value of a feature (None: absent): its value signal, then its missing
        rate, then (once it had a value of the other type) its type-change rate."""
        slot.count += 1
        kind = type(raw)
        missing = wrong = 0.0
        if kind is float or kind is int or kind is bool:  # a boolean is a 0/1 rate
            if slot.kind == CATEGORICAL:
                wrong = self._wrong_type(state, name, slot)
            else:
                value = float(raw)
                # inf, NaN or too large for running statistics: a data quality problem
                if value - value != 0.0 or not -MAX_MAGNITUDE <= value <= MAX_MAGNITUDE:
                    missing = 1.0
                else:
                    if slot.kind == UNDECIDED:
                        state.decide(name, slot, NUMERIC)
                    values = slot.values
                    if values is not None:
                        values.profile(value)
                        self._observe(state, values, value)
        elif kind is str:
            if slot.kind == NUMERIC:
                wrong = self._wrong_type(state, name, slot)
            else:
                if slot.kind == UNDECIDED:
                    state.decide(name, slot, CATEGORICAL)
                if slot.categories is not None:
                    self._category(state, name, slot, raw)
        elif raw is None:
            missing = 1.0
        if slot.missing is not None:
            self._observe(state, slot.missing, missing)
        if slot.wrong is not None:
            self._observe(state, slot.wrong, wrong)

    def _category(self, state: KeyState, name: str, slot: FeatureSlot, value: str) -> None:
        """A categorical value: O(1) (its count in the block); the distance once per block."""
        categories = slot.categories
        assert categories is not None
        if not categories.ready:
            if categories.learn(value):
                if categories.truncated:
                    self._overflow("categories")
                state.watch_unseen(name, slot)
            return
        flags = categories.add(value)
        if flags & 4:
            self._overflow("category_values")
        if slot.unseen is not None:
            self._observe(state, slot.unseen, float(flags & 1))
        if flags & 2:
            distance = categories.statistic()
            if distance is not None and slot.values is not None:
                self._observe(state, slot.values, distance)

    def _wrong_type(self, state: KeyState, name: str, slot: FeatureSlot) -> float:
        """A value of the other type (a number for a categorical feature, a string for a
        numeric one): 1 for its type-change rate, which starts here, as if it had seen the
        feature's values so far (as zeros) unless the model's reference gives its rate."""
        if slot.wrong is None:
            signal = slot.wrong = state.new_signal(DATA_QUALITY, f"{WRONG_TYPE_RATE}{name}")
            plan = state.plan
            if signal is not None and (
                plan.reference is None or plan.reference.signal(DATA_QUALITY, signal.name) is None
            ):
                for _ in range(min(slot.count - 1, WRONG_TYPE_PRIMING)):
                    self._observe(state, signal, 0.0)
        return 1.0

    def _on_label(self, event: Label) -> None:
        self._advance(event.time_ms)
        if event.prediction is not None:
            # A label that carries its prediction needs no join.
            state = self._key_state(event.model, event.model_version, event.segment)
            if state is None:
                return
            self.join.discard_prediction(event.model, event.prediction_id)
            self._performance(state, event.prediction, event.label)
            return
        if self._plan(event.model) is None:
            self.counters.unmonitored += 1
            return
        pending = self.join.add_label(
            event.model, event.prediction_id, WaitingLabel(event.label, event.time_ms)
        )
        if pending is None:
            return
        state = self.keys.get(pending.key_id)
        if state is None:  # its key state was lost; nothing to attribute the error to
            return
        self._dirty[state.id] = state
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
        # observation counts depend on how the two streams were merged.
        if partial is None or record.kind != PREDICTION:
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
            self._time_ms = record_time(record.timestamp_ms)
            self._observe(state, state.invalid, 1.0)

    def _observe(self, state: KeyState, signal: Signal, value: float) -> None:
        lazy = signal.lazy
        if lazy is not None and value == 0.0 and lazy.room:  # a zero that may wait (`Track._rate`)
            lazy.room -= 1
            lazy.zeros += 1
            self.counters.detector_updates += 1
            return
        tracks = signal.active
        for track in tracks:
            flags = track.update(value)
            if flags:
                self._attend(state, signal, track, flags)
        self.counters.detector_updates += len(tracks)

    def _attend(self, state: KeyState, signal: Signal, track: Track, flags: int) -> None:
        if flags & DORMANT:
            signal.refresh()
        if flags & RESOLVED and track.incident is not None:
            # Back at the baseline: the detector restarts there, so a detection on the same
            # value (relative to the regime that just ended) is moot.
            self._resolve(state, signal, track)
        elif flags & DRIFT:
            self._drifted(state, signal, track)

    def _drifted(self, state: KeyState, signal: Signal, track: Track) -> None:
        measured = track.measure()
        categories = signal.categories
        if categories is not None:  # the level after the change, from the blocks after it
            measured.after, count = categories.level()
            measured.effect = {**measured.effect, "window": count}
        incident = track.incident
        if incident is not None:
            if incident.returned(measured.after, measured.effect["window"]):
                # the change this detection found is the return
                self._resolve(state, signal, track, measured.after)
                return
            if incident.toward(measured.after):
                # part of the way back: the alert stays open, now aimed at this level
                incident.retarget(measured.after)
                track.after_detection()
                return
        counters = self.counters
        if track.seen <= track.quiet_until:
            counters.in_cooldown += 1
            track.after_detection()
            return
        effect = self._effect(state, signal, measured.effect)
        if effect["size"] < self.settings.min_effect:
            counters.negligible += 1
            track.after_detection()
            return
        # the cooldown counts observations: a categorical feature's distance stands for a block
        cooldown = self._cooldown
        if signal.categories is not None:
            cooldown = -(-cooldown // CATEGORY_BLOCK)
        track.quiet_until = track.seen + cooldown
        rule = track.rule
        record = self._record
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
            detector_params=_detector_params(track),
            observations=_observations(signal, track),
            time_ms=self._time_ms,
            stats={key: _round(value) for key, value in measured.stats.items()},
            likely_causes=self._likely_causes(state) if signal.kind == PERFORMANCE else [],
            position=_position(record),
            effect=effect,
        )
        if self.settings.resolve:
            if incident is None:
                scaler = track.scaler
                track.incident = Incident(
                    (event["id"], _observations(signal, track)),
                    measured.baseline,
                    measured.sd,
                    measured.after,
                    self.settings.resolve_margin,
                    measured.rate,
                    None if scaler is None else scaler.dump(),
                    measured.report,
                    measured.baseline_n,
                    SETTLE_BLOCKS if signal.categories is not None else SETTLE,
                )
            else:
                incident.escalate((event["id"], _observations(signal, track)), measured.after)
        track.after_detection()
        if track.spread:
            self._spread_changed(signal, track)
        alerts = counters.alerts
        counter_key = (signal.kind, rule.type.name)
        alerts[counter_key] = alerts.get(counter_key, 0) + 1
        self._output.alerts.append(Alert(state.id, event, record))

    @staticmethod
    def _effect(state: KeyState, signal: Signal, measured: dict[str, Any]) -> dict[str, Any]:
        """The effect an alert carries: a categorical feature's is the change of its category
        shares (`Categories.measure`), and an unseen rate's names the values that appeared."""
        categories = signal.categories
        if categories is not None:
            return categories.measure()
        if signal.name.startswith(UNSEEN_RATE):
            slot = state.features.get(signal.name[len(UNSEEN_RATE) :])
            if slot is not None and slot.categories is not None:
                return {**measured, "new": slot.categories.new_values()}
        return measured

    def _resolve(
        self, state: KeyState, signal: Signal, track: Track, now: float | None = None
    ) -> None:
        """Publish one `drift_resolved` per open alert of `track`; its baseline applies again.
        `now`: the level the signal is back at (else that of the values that brought it back)."""
        incident = track.incident
        assert incident is not None
        track.incident = None
        rule = track.rule
        record = self._record
        factor = incident.report
        if now is None:
            now = incident.now()
        if now is None:
            now = incident.baseline
        statistic = SPREAD if track.spread else RATE if incident.rate is not None else MEAN
        if signal.categories is not None:
            statistic = CATEGORIES  # levels: the distance, in its no-change sd
        level = {
            "statistic": statistic,
            "before": _round(incident.baseline * factor),
            "alerted": _round(incident.reported * factor),
            "now": _round(now * factor),
        }
        for alert, opened_at in incident.alerts:
            event = build_resolved(
                source=self.source,
                resolves=alert,
                key_id=state.id,
                model=state.model,
                model_version=state.model_version,
                segment=state.segment,
                signal_kind=signal.kind,
                signal=signal.name,
                rule=rule.name,
                detector=rule.type.name,
                observations=_observations(signal, track),
                opened_at=opened_at,
                time_ms=self._time_ms,
                level=level,
                position=_position(record),
            )
            self._output.alerts.append(Alert(state.id, event, record))
        track.back_to_baseline(incident.saved)
        if track.spread:
            self._spread_changed(signal, track)
        resolved = self.counters.resolved
        counter_key = (signal.kind, rule.type.name)
        resolved[counter_key] = resolved.get(counter_key, 0) + len(incident.alerts)

    @staticmethod
    def _spread_changed(signal: Signal, spread: Track) -> None:
        for track in signal.tracks:
            if track is not spread:
                track.spread_changed()

    def _likely_causes(self, state: KeyState) -> list[dict[str, Any]]:
        """The features of this key that moved furthest: a numeric one's recent mean from its
        baseline, in sd; a categorical one's last blocks from its reference (2 × Cohen's w,
        the effect size scale), with the categories that moved."""
        minimum = self.settings.likely_cause_min_shift
        moved: list[tuple[float, str, dict[str, Any]]] = []
        for name, slot in state.features.items():
            categories = slot.categories
            if categories is not None and categories.ready:
                effect = categories.recent_effect()
                if effect is not None and effect["size"] >= minimum:
                    cause = {
                        "feature": name,
                        "shift": effect["size"],
                        "statistic": CATEGORIES,
                        "categories": effect["categories"][:3],
                    }
                    moved.append((effect["size"], name, cause))
                continue
            if slot.values is None:
                continue
            signal = slot.values
            shift = signal.shift()
            if shift is not None and abs(shift) >= minimum:
                cause = {
                    "feature": name,
                    "shift": _round(shift),
                    "baseline_mean": _round(signal.baseline),
                    "recent_mean": _round(signal.recent),
                }
                moved.append((abs(shift), name, cause))
        moved.sort(key=lambda item: (-item[0], item[1]))
        return [cause for _, _, cause in moved[: self.settings.max_likely_causes]]

    # --- state -----------------------------------------------------------------------------
    def snapshot(self) -> StateChanges:
        """The whole state as plain data: metadata, every key, every pending join entry."""
        join = self.join
        keys: dict[str, dict[str, Any] | None] = {
            key_id: state.dump() for key_id, state in self.keys.items()
        }
        return StateChanges(
            meta=self._dump_meta(),
            keys=keys,
            join=join.dump_entries((*join.predictions, *join.labels)),
        )

    def take_changes(self, lazy: bool = False) -> StateChanges:
        """Only what changed since the last call, in the order it changed (None: deleted).

        `lazy`: each key is dumped when it is read (`KeyDumps`), so that a checkpoint holds
        one key's dump at a time; read the changes before processing anything more."""
        meta = self._dump_meta() if self._meta_dirty else None
        self._meta_dirty = False
        keys: Mapping[str, dict[str, Any] | None]
        if lazy:
            keys = KeyDumps(self._dirty)
        else:
            keys = {key_id: state.dump() for key_id, state in self._dirty.items()}
        self._dirty = {}
        join = self.join
        entries = join.dump_entries(join.take_changes())
        return StateChanges(meta=meta, keys=keys, join=entries)

    def _dump_meta(self) -> dict[str, Any]:
        return {
            "watermark_ms": self.watermark_ms,
            "block": [self._block_min, self._block_size, self._blocks],
        }

    def restore(self, changes: StateChanges) -> None:
        """Apply state written by `snapshot()` / `take_changes()`; in order, they rebuild it."""
        try:
            if changes.meta is not None:
                self.watermark_ms = changes.meta["watermark_ms"]
                self._block_min, self._block_size, self._blocks = changes.meta["block"]
            for key_id, data in changes.keys.items():
                if data is None:
                    self.keys.pop(key_id, None)
                else:
                    self._restore_key(key_id, data)
            join = self.join
            for model, prediction_id, entry in changes.join:
                join.load_entry(model, prediction_id, entry)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise StateError(f"state is not understood: {exc!r}") from exc
        model_keys: dict[str, int] = {}
        for state in self.keys.values():
            model_keys[state.model] = model_keys.get(state.model, 0) + 1
        self._model_keys = model_keys
        self.join.take_changes()
        self._dirty = {}
        self._meta_dirty = False

    def _restore_key(self, key_id: str, data: dict[str, Any]) -> None:
        """One key's state. A key calibrated against another reference than its model's now
        (changed, added or removed) is recalibrated: its tracks start again from the current
        reference (or a warm-up), keeping their counts, cooldowns and open alerts."""
        model = data["model"]
        plan = self._plan(model)
        if plan is None:
            return  # the config no longer monitors this model
        state = KeyState(key_id, model, data["model_version"], data["segment"], plan)
        state.task = data["task"] if plan.task == "auto" else plan.task
        state.positive_class = (
            plan.positive_class if plan.positive_class is not None else data["positive_class"]
        )
        recalibrate = data.get("reference") != plan.reference_digest
        retyped = {
            name
            for entry in data["features"]
            if (name := self._restore_feature(state, entry)) is not None
        }
        for name in data["predictions"]:
            state.predictions[name] = state.new_signal(PREDICTION_SIGNAL, name)
        for entry in data["signals"]:
            if entry[0] == CATEGORIES_ENTRY:
                if not recalibrate and entry[1] not in retyped:
                    self._restore_categories(state, entry[1], entry[2])
                continue
            kind, name, tracks, profile = entry
            signal = self._signal_slot(state, kind, name)
            if signal is None:
                continue
            saved = {track[0]: track for track in tracks}
            rate = is_rate_signal(name)
            restored = []
            for track in signal.tracks:
                found = saved.get(track.rule.name)
                if found is None:
                    restored.append(track)
                elif recalibrate:
                    old = Track.load(track.rule, found, rate=rate)
                    restored.append(track.carry(old, not (kind == FEATURE and name in retyped)))
                else:
                    restored.append(Track.load(track.rule, found, rate=rate))
            signal.tracks = restored
            signal.refresh()
            signal.count, signal.baseline, signal.baseline_var, signal.recent = profile
        self.keys[key_id] = state

    @staticmethod
    def _restore_feature(state: KeyState, entry: Any) -> str | None:
        """A feature's kind and count; its name when the model's reference now gives it
        another kind than it had."""
        if type(entry) is str:  # written before features had a kind: decided by its signals
            state.add_feature(entry)
            return None
        name, kind, count = entry
        slot = state.add_feature(name)  # of the kind the reference says, if it has the feature
        slot.count = int(count)
        if slot.kind == UNDECIDED and kind != UNDECIDED:
            state.decide(name, slot, int(kind))
        return str(name) if slot.kind != kind else None

    @staticmethod
    def _restore_categories(state: KeyState, name: str, data: list[Any]) -> None:
        slot = state.features.get(name)
        if slot is None or slot.categories is None:
            return  # the config no longer watches them
        plan = state.plan
        loaded = Categories.load(plan.max_categories, plan.max_chars, data)
        slot.categories = loaded
        if slot.values is not None:
            slot.values.categories = loaded

    @staticmethod
    def _signal_slot(state: KeyState, kind: str, name: str) -> Signal | None:
        if kind == PERFORMANCE and name == ESTIMATED_ERROR:
            state.estimated = state.new_signal(PERFORMANCE, name)
            state.estimating = True
            return state.estimated
        if kind == PERFORMANCE:
            state.performance = state.new_signal(PERFORMANCE, name)
            return state.performance
        if kind == PREDICTION_SIGNAL:
            return state.predictions.get(name)
        if kind == FEATURE:
            slot = state.features.get(name) or state.add_feature(name)
            if slot.kind == UNDECIDED:  # state of a version before features had a kind
                state.decide(name, slot, NUMERIC)
            return slot.values
        if kind == DATA_QUALITY:
            if name == "invalid_rate":
                return state.invalid
            feature = name.partition(":")[2]
            slot = state.features.get(feature) or state.add_feature(feature)
            if name.startswith(MISSING_RATE):
                return slot.missing
            if name.startswith(UNSEEN_RATE):
                if slot.unseen is None:
                    state.watch_unseen(feature, slot)
                return slot.unseen
            if name.startswith(WRONG_TYPE_RATE):
                slot.wrong = state.new_signal(DATA_QUALITY, name)
                return slot.wrong
        return None


def _position(record: Record | None) -> tuple[str, int, int] | None:
    return (record.topic, record.partition, record.offset) if record and record.topic else None


def _observations(signal: Signal, track: Track) -> int:
    """What an alert counts as its track's observations: the values it saw, for a categorical
    feature the values of the blocks whose distances it saw."""
    return track.seen * CATEGORY_BLOCK if signal.categories is not None else track.seen


def _detector_params(track: Track) -> dict[str, Any]:
    """The rule's parameters, with what calibration tuned for this key×signal (a 0/1 series'
    Page-Hinkley delta and threshold)."""
    params = track.rule.params
    scaler = track.scaler
    if scaler is None or scaler.threshold is None:
        return params
    return {**params, "delta": _round(scaler.delta), "threshold": scaler.threshold}


def _is_number(value: Any) -> bool:
    kind = type(value)
    return kind is float or kind is int


def _round(value: Any) -> Any:
    return round(value, 6) if type(value) is float else value


__all__ = ["Alert", "DeadLetter", "JoinKey", "Monitor", "MonitorCounters", "Output", "Record"]
