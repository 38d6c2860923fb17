"""Which values each event feeds, and the per-key objects that hold a signal's detectors.

Signal kinds and names:
- performance: `error` (classification, 0/1) or `absolute_error` (regression), per joined pair;
- prediction: `score` when present, else `prediction` (numeric), else `positive_rate` (class);
- feature: each numeric feature, by its name;
- data_quality: `missing_rate:<feature>` (absent, null or non-finite) and `invalid_rate` (the
  share of invalid events on the predictions stream).
"""

from __future__ import annotations

import fnmatch
import math
from array import array
from typing import Any, Final

from river.drift import ADWIN

from stream_monitor.core.calibration import DORMANT as DORMANT_PHASE
from stream_monitor.core.calibration import LEARNING, READY, Scaler, clamp_rate
from stream_monitor.core.categories import COUNT_VALUES, Categories
from stream_monitor.core.detectors import DetectorRule
from stream_monitor.core.effects import (
    BLOCK,
    MEAN,
    RATE,
    RING,
    RING_MASK,
    SPREAD,
    Ring,
    empty_ring,
    measure,
    rate_block_size,
    split,
)
from stream_monitor.core.lifecycle import Incident
from stream_monitor.core.reference import (
    ModelReference,
    Reference,
    distance_reference,
    rate_reference,
)
from stream_monitor.core.settings import ModelSettings, MonitorSettings
from stream_monitor.errors import StateError

TRACK_FORMAT: Final = (
    2  # the second item of a dumped track (0.2's tracks had a detector state there)
)

PERFORMANCE: Final = "performance"
ESTIMATED_ERROR: Final = "estimated_error"
PREDICTION: Final = "prediction"
FEATURE: Final = "feature"
DATA_QUALITY: Final = "data_quality"

# Exponential weights of the short "recent" mean (alert stats for Page-Hinkley and feature profiles)
# and of the long feature baseline used to rank likely causes.
RECENT_SPAN: Final = 100
RECENT_ALPHA: Final = 2.0 / (RECENT_SPAN + 1)
BASELINE_SPAN: Final = 2000
BASELINE_ALPHA: Final = 2.0 / (BASELINE_SPAN + 1)
PROFILE_MIN_COUNT: Final = 30


class ModelPlan:
    """The resolved settings for one model name: computed once, then looked up per event."""

    __slots__ = (
        "_cache",
        "exclude",
        "include",
        "joins",
        "kinds",
        "max_categories",
        "max_chars",
        "overrides",
        "positive_class",
        "reference",
        "task",
    )

    def __init__(
        self,
        model: ModelSettings,
        settings: MonitorSettings,
        reference: ModelReference | None = None,
    ) -> None:
        rules = settings.rules
        self.task = model.task
        self.positive_class = model.positive_class
        self.include = frozenset(model.include) or None
        self.exclude = frozenset(model.exclude)
        self.reference = reference
        self.max_categories = settings.limits.max_categories
        self.max_chars = settings.limits.max_feature_name
        self.kinds: dict[str, tuple[DetectorRule, ...]] = {}
        for kind in (PERFORMANCE, PREDICTION, FEATURE, DATA_QUALITY):
            names = model.signals.get(kind)
            if names is None:
                names = settings.signals.get(kind, ())
            self.kinds[kind] = tuple(rules[name] for name in names)
        self.overrides = {
            signal: tuple(rules[name] for name in names)
            for signal, names in model.overrides.items()
        }
        self._cache: dict[tuple[str, str, bool], tuple[DetectorRule, ...]] = {}
        # Only hold predictions for a label when some performance signal will use the pair.
        self.joins = bool(
            self.rules_for(PERFORMANCE, "error") or self.rules_for(PERFORMANCE, "absolute_error")
        )

    @property
    def reference_digest(self) -> str | None:
        return None if self.reference is None else self.reference.digest

    def rules_for(
        self, kind: str, name: str, categorical: bool = False
    ) -> tuple[DetectorRule, ...]:
        """The rules that watch this signal: a categorical feature's distance is watched by the
        rules for categorical series (and uncalibrated ones), every other signal by the rest."""
        cached = self._cache.get((kind, name, categorical))
        if cached is None:
            rules = self.overrides.get(name, self.kinds[kind])
            if kind == FEATURE and not self.wants_feature(name):
                rules = ()
            cached = tuple(rule for rule in rules if _watches(rule, categorical))
            self._cache[(kind, name, categorical)] = cached
        return cached

    def wants_feature(self, name: str) -> bool:
        return (self.include is None or name in self.include) and name not in self.exclude


def _watches(rule: DetectorRule, categorical: bool) -> bool:
    calibration = rule.calibration
    return calibration is None or (calibration.series == "categorical") == categorical


def resolve_plan(settings: MonitorSettings, model: str) -> ModelPlan | None:
    """The first model rule whose glob matches; None when no rule monitors this model. Its
    reference: the rule's own reference file's entry for the model, else the top-level one's."""
    for rule in settings.models:
        if fnmatch.fnmatchcase(model, rule.match):
            reference = None
            for found in (rule.reference, settings.reference):
                if reference is None and found is not None:
                    reference = found.models.get(model)
            return ModelPlan(rule, settings, reference)
    return None


# What a track's `update` reports, as bit flags (0: nothing to do).
DRIFT: Final = 1  # its detector fired
RESOLVED: Final = 2  # its open alert's signal is back at its pre-change level
DORMANT: Final = 4  # it stopped watching this series (a rule for another kind of series)

# 0/1 signals by construction: an uncalibrated track measures their effect as a rate.
RATE_SIGNALS: Final = ("error", "positive_rate", "invalid_rate")
MISSING_RATE: Final = "missing_rate:"  # absent, null or not finite
UNSEEN_RATE: Final = "unseen_rate:"  # a categorical feature's values outside its known categories
WRONG_TYPE_RATE: Final = "wrong_type_rate:"  # a number for a categorical feature, or the reverse
FEATURE_RATES: Final = (MISSING_RATE, UNSEEN_RATE, WRONG_TYPE_RATE)
MAX_ROOM = 1 << 20  # zeros that may wait to be fed, at most

IDLE_RING: Final = empty_ring()  # the ring of every dormant track: never written (`Track._idle`)

# What `Track.update` runs per value, by phase (`Track._configure`).
RAW: Final = 0
MEAN_MODE: Final = 1
SPREAD_MODE: Final = 2
RATE_MODE: Final = 3
LEARNING_MODE: Final = 4
DORMANT_MODE: Final = 5


def is_rate_signal(name: str) -> bool:
    return name in RATE_SIGNALS or name.startswith(FEATURE_RATES)


class Track:
    """One detector on one signal of one key: the per-value work, and what explains its alerts.

    Per value (`update`, one of the `_...` methods below, chosen by the phase): the running sums
    since the detector's last reset (`total`; `total_sq` for an uncalibrated rule, whose effect
    needs a pooled sd; `n` is `seen - start`), in the signal's units, the
    detector (fed the standardised, clipped value once calibrated), a ring of recent block sums
    that effect sizes are measured on (`core.effects`), and the open alert's resolve test
    (`core.lifecycle`). It returns bit flags: DRIFT, RESOLVED, DORMANT. With a calibrated rule
    the warm-up and the reference live in `scaler` (`core.calibration`); a `spread` rule pairs
    values and watches |x[2i+1] - x[2i]|.
    """

    __slots__ = (
        "block",
        "block_size",
        "blocks",
        "clip",
        "detector",
        "feeding",
        "fill",
        "gap_total",
        "gaps",
        "incident",
        "inverse",
        "learning",
        "mode",
        "offset",
        "prev",
        "quiet_until",
        "rate",
        "ring",
        "room",
        "rule",
        "scaler",
        "seen",
        "slot",
        "spread",
        "start",
        "total",
        "total_sq",
        "window",
        "zeros",
    )

    def __init__(
        self,
        rule: DetectorRule,
        detector: Any = None,
        reference: Reference | None = None,
        *,
        rate: bool = False,
    ) -> None:
        self.rule = rule
        self.detector = rule.create() if detector is None else detector
        # river's ADWIN.update is a Python method around its Rust window (`_helper`): an ADWIN
        # track updates the window itself (`_feed`), a third of the cost of a value.
        self.window = type(self.detector) is ADWIN
        self.mode = RAW  # which per-value method `update` runs: set by `_configure`
        self.rate = rate  # an uncalibrated track on a 0/1 signal (error, missing rate, ...)
        calibration = rule.calibration
        self.scaler: Scaler | None = None
        self.spread = False
        if calibration is not None:
            self.scaler = Scaler(calibration, rule.type.name == "adwin", reference)
            self.spread = calibration.statistic == "spread"
        self.seen = 0  # values this detector has seen for this key, ever
        self.start = 0  # `seen` at the detector's last reset: `n` values since then
        self.total = 0.0
        self.total_sq = 0.0
        self.quiet_until = -1  # cooldown: detections up to this `seen` count are suppressed
        self.ring = empty_ring()
        self.slot = self.blocks = self.fill = 0
        self.block = 0.0
        self.block_size = BLOCK
        self.prev: float | None = None  # a spread's first value of a pair
        self.gaps = 0  # a spread's pairs since the detector's last reset, and their gaps' sum
        self.gap_total = 0.0
        self.incident: Incident | None = None
        self.offset = 0.0
        self.inverse = 1.0
        self.clip = math.inf
        self.learning = self.feeding = False
        # Zeros of a 0/1 series not fed yet, and how many more may wait (see `_rate`).
        self.zeros = self.room = 0
        self._configure(fresh=True)

    # --- per value ---------------------------------------------------------------------------
    def update(self, x: float) -> int:
        """One value; DRIFT / RESOLVED / DORMANT flags. The phase's method, chosen by a number
        rather than kept as a bound method per track: a direct call in the compiled core, and
        two objects less per track."""
        mode = self.mode
        if mode == MEAN_MODE:
            return self._mean(x)
        if mode == SPREAD_MODE:
            return self._spread(x)
        if mode == RATE_MODE:
            return self._rate(x)
        if mode == LEARNING_MODE:
            return self._learning(x)
        if mode == RAW:
            return self._raw(x)
        return 0  # dormant

    def _raw(self, x: float) -> int:
        """An uncalibrated rule: the detector sees the value as it is."""
        self.seen += 1
        self.total += x
        self.total_sq += x * x  # for the pooled sd of an uncalibrated track's effect
        detected = self._feed(x)
        fill = self.fill + 1
        if fill == self.block_size:
            slot = self.slot
            self.ring[slot] = self.block + x
            self.slot = (slot + 1) & RING_MASK
            if self.blocks < RING:
                self.blocks += 1
            self.block = 0.0
            self.fill = 0
        else:
            self.block += x
            self.fill = fill
        incident = self.incident
        flags = RESOLVED if incident is not None and incident.step(x) else 0
        if detected:
            flags |= DRIFT
        return flags

    def _mean(self, x: float) -> int:
        """A calibrated mean or rate: the detector sees (x - offset) / unit, clipped."""
        self.seen += 1
        self.total += x
        z = (x - self.offset) * self.inverse
        clip = self.clip
        if z > clip:
            z = clip
        elif z < -clip:
            z = -clip
        detected = self._feed(z)
        fill = self.fill + 1
        if fill == self.block_size:
            slot = self.slot
            self.ring[slot] = self.block + x
            self.slot = (slot + 1) & RING_MASK
            if self.blocks < RING:
                self.blocks += 1
            self.block = 0.0
            self.fill = 0
        else:
            self.block += x
            self.fill = fill
        incident = self.incident
        flags = RESOLVED if incident is not None and incident.step(x) else 0
        if self.learning:
            return flags | self._learn(x)
        if detected:
            flags |= DRIFT
        return flags

    def _spread(self, x: float) -> int:
        """A calibrated spread: the detector sees |x[2i+1] - x[2i]| / unit, clipped, per pair."""
        self.seen += 1
        self.total += x
        prev = self.prev
        if prev is None:
            self.prev = x
            return self._learn(x) if self.learning else 0
        self.prev = None
        gap = abs(x - prev)
        self.gaps += 1
        self.gap_total += gap
        flags = 0
        if self.feeding:
            a = gap * self.inverse
            self._feed(a if a < self.clip else self.clip)
            if self.learning:
                self.scaler.learn_pair(a)  # type: ignore[union-attr]
        fill = self.fill + 1
        if fill == self.block_size:
            slot = self.slot
            self.ring[slot] = self.block + gap
            self.slot = (slot + 1) & RING_MASK
            if self.blocks < RING:
                self.blocks += 1
            self.block = 0.0
            self.fill = 0
        else:
            self.block += gap
            self.fill = fill
        incident = self.incident
        if incident is not None and incident.step(gap):
            flags = RESOLVED
        if self.learning:
            return flags | self._learn(x)
        if self.detector._drift_detected:
            flags |= DRIFT
        return flags

    def _feed(self, z: float) -> bool:
        """The detector's update; True when it detected a change. For ADWIN, river's `update`
        without its Python frames: reset after a detection, then the Rust window's update."""
        detector = self.detector
        if not self.window:
            detector.update(z)
            return bool(detector._drift_detected)
        if detector._drift_detected:
            detector._reset()
        detected: bool = detector._helper.update(z)
        if detected:  # river's flag is False here (it was, or `_reset` cleared it)
            detector._drift_detected = True
        return detected

    def _learning(self, x: float) -> int:
        """A calibrated mean or rate in its warm-up, before its detector sees anything."""
        self.seen += 1
        self.total += x
        self._keep(x)
        incident = self.incident
        flags = RESOLVED if incident is not None and incident.step(x) else 0
        return flags | self._learn(x)

    # --- zeros of a 0/1 series, fed later and in one loop -------------------------------------
    # A calibrated Page-Hinkley on a rate (missing, invalid, error rates) is fed a 0 on nearly
    # every event. While `room` is positive the monitor only counts such zeros (`zeros`); they
    # are fed before the next other value, before anything reads the track (`settle`), or when
    # `room` runs out. `_room` proves that no detection can happen within `room` zeros, so no
    # alert moves to another event, and `_feed_zeros` does river's arithmetic in river's order,
    # so the state is bit for bit the one of feeding each zero as it came.
    def _rate(self, x: float) -> int:
        """`_mean` for a track whose zeros may wait."""
        if self.zeros:
            self._feed_zeros()
        flags = self._mean(x)
        # After a 1 the next zero is fed at once, and sets the room: a series of 1s (a
        # positive rate near 1) never pays for `_room`.
        self.room = 0 if flags or x != 0.0 or self.incident is not None else self._room()
        return flags

    def settle(self) -> None:
        """Feed the zeros that are waiting: the track's state is then exact."""
        if self.zeros:
            self._feed_zeros()
            self.room = 0 if self.incident is not None else self._room()

    def _zero(self) -> float:
        """What the detector is fed for a 0, exactly as `_mean` computes it."""
        z = (0.0 - self.offset) * self.inverse
        clip = self.clip
        return clip if z > clip else -clip if z < -clip else z

    def _room(self) -> int:
        """How many zeros in a row cannot make the detector fire (0: feed each one now).

        With alpha 1 and delta > 0, each zero lowers the increase sum by at least delta (the
        running mean never falls below the zero's value c), so the increase test cannot pass.
        The decrease statistic grows by at most mean - c - delta per zero, since the running
        mean only falls towards c: half of the distance to the threshold at that pace is safe.
        """
        detector = self.detector
        stats = detector._x_mean
        if (
            detector._drift_detected
            or stats.n < detector.min_instances
            or detector.alpha != 1.0
            or not detector.delta > 0.0
        ):
            return 0
        c = self._zero()
        if stats._mean < c:
            return 0
        if detector.mode == "up":
            return MAX_ROOM
        pace = stats._mean - c - detector.delta
        if pace <= 0.0:
            return MAX_ROOM
        # (river starts the maximum at -1, below the sum: count the gap from 0.)
        gap = max(detector._max_decrease - detector._sum_decrease, 0.0)
        room = 0.5 * (detector.threshold - gap) / pace
        return int(room) if room < MAX_ROOM else MAX_ROOM

    def _feed_zeros(self) -> None:
        """The waiting zeros: river's Page-Hinkley `update` (alpha 1) and `_mean`'s bookkeeping,
        each zero in turn, with the state in local variables."""
        count, self.zeros = self.zeros, 0
        detector = self.detector
        stats = detector._x_mean
        # Typed as floats, so that the compiled loop runs on doubles, not on Python objects.
        c: float = self._zero()
        delta = float(detector.delta)
        n = float(stats.n)
        mean = float(stats._mean)
        up = float(detector._sum_increase)
        down = float(detector._sum_decrease)
        lowest = float(detector._min_increase)
        highest = float(detector._max_decrease)
        for _ in range(count):
            n += 1.0
            mean += (1.0 / n) * (c - mean)
            dev = c - mean
            up = up + dev - delta
            down = down + dev + delta
            if up < lowest:
                lowest = up
            if down > highest:
                highest = down
        stats.n, stats._mean = n, mean
        detector._sum_increase, detector._sum_decrease = up, down
        detector._min_increase, detector._max_decrease = lowest, highest
        self.seen += count
        # The ring: each zero adds 0.0 to its block (`total` is unchanged too).
        fill = self.fill + count
        size = self.block_size
        if fill >= size:
            done = fill // size
            slot = self.slot
            ring = self.ring
            ring[slot] = self.block if done <= RING else 0.0  # else written over since
            for step in range(1, min(done, RING)):
                ring[(slot + step) & RING_MASK] = 0.0
            self.slot = (slot + done) & RING_MASK
            self.blocks = min(RING, self.blocks + done)
            self.block = 0.0
            fill -= done * size
        self.fill = fill

    def _keep(self, value: float) -> None:
        fill = self.fill + 1
        if fill == self.block_size:
            self.ring[self.slot] = self.block + value
            self.slot = (self.slot + 1) & RING_MASK
            if self.blocks < RING:
                self.blocks += 1
            self.block = 0.0
            self.fill = 0
        else:
            self.block += value
            self.fill = fill

    def _learn(self, x: float) -> int:
        """One warm-up value for the scaler; a detection during the warm-up restarts it."""
        scaler = self.scaler
        assert scaler is not None
        if self.feeding and self.detector._drift_detected:
            self._restart_calibration()  # the warm-up was not stationary
            return 0
        if scaler.learn(x):
            return self._configure(fresh=True)
        return 0

    # --- phases ------------------------------------------------------------------------------
    def _configure(self, fresh: bool) -> int:
        """Choose the per-value path for the scaler's phase. `fresh`: the phase just changed
        (the detector may need priming or a reset); not on a restore, whose detector state is
        already right. Returns DORMANT when the track stops watching this series."""
        if self.zeros:
            self._feed_zeros()  # in the map they came under
        self.room = 0
        scaler = self.scaler
        if scaler is None:
            self.mode = RAW
            return 0
        phase = scaler.phase
        if phase == DORMANT_PHASE:
            self.mode = DORMANT_MODE
            self.learning = self.feeding = False
            self._idle()
            return DORMANT
        self._own()
        self.learning = phase != READY
        self.feeding = phase != LEARNING
        if not self.feeding:
            self.mode = SPREAD_MODE if self.spread else LEARNING_MODE
            return 0
        inverse = 1.0 / scaler.unit
        if fresh and (self.offset, self.inverse) != (scaler.offset, inverse):
            self.detector._reset()  # its window was fed through another map
        self.offset, self.inverse, self.clip = scaler.offset, inverse, scaler.clip
        if phase == READY:
            if scaler.threshold is not None:  # Page-Hinkley tuned for this 0/1 series
                self.detector.delta = scaler.delta
                self.detector.threshold = scaler.threshold
            if fresh:
                if not scaler.adwin:  # Page-Hinkley starts now, as if it had seen the warm-up
                    n = scaler.n or scaler.calibration.warmup
                    self.rule.type.prime(self.detector, n, 0.0, 1.0)
                elif scaler.fixed:  # ADWIN's window starts with the reference in it
                    self.detector._reset()
                    mean, sd = self._reference_shape()
                    self.rule.type.prime(self.detector, scaler.n, mean, sd)
                size = rate_block_size(scaler.centre or 0.0) if scaler.binary else BLOCK
                if size != self.block_size:
                    self._clear_ring(size)
        if self.spread:
            self.mode = SPREAD_MODE
        elif self.may_wait:
            self.mode = RATE_MODE
            self.room = 0 if self.incident is not None else self._room()
        else:
            self.mode = MEAN_MODE
        return 0

    def _reference_shape(self) -> tuple[float, float]:
        """Mean and sd of what the detector is fed, for the reference: standardised values,
        a 0/1 series as it is, or a spread's pair statistic."""
        scaler = self.scaler
        assert scaler is not None and scaler.centre is not None
        if self.spread:
            return scaler.pair_reference()
        if scaler.raw_map:
            return scaler.centre, scaler.scale
        return 0.0, 1.0

    def _restart_calibration(self) -> None:
        assert self.scaler is not None
        self._own()
        self.detector._reset()
        self.scaler.restart()
        self._configure(fresh=True)

    def _idle(self) -> None:
        """A dormant track never feeds its detector or its ring again, and nothing reads them:
        it shares its rule's idle detector and one ring of zeros instead of keeping its own
        (about 1 KB per dormant track: a continuous feature's rate rule is dormant on every
        key). Its dump is then the same whether it went dormant here or was restored."""
        self.detector = self.rule.idle
        self._clear_ring(self.block_size, IDLE_RING)

    def _own(self) -> None:
        """A detector and ring of its own again, before anything writes to them: a dormant
        track can leave dormancy when an open alert resolves on the value that ended its
        warm-up (`back_to_baseline` loads the pre-change, ready calibration)."""
        if self.detector is self.rule.idle:
            self.detector = self.rule.create()
        if self.ring is IDLE_RING:
            self.ring = empty_ring()

    def _clear_ring(self, block_size: int, ring: array[float] | None = None) -> None:
        self.ring = empty_ring() if ring is None else ring
        self.slot = self.blocks = self.fill = 0
        self.block = 0.0
        self.block_size = block_size

    @property
    def may_wait(self) -> bool:
        """Whether zeros can ever wait for this track: a calibrated Page-Hinkley on values."""
        return self.scaler is not None and not self.spread and self.rule.type.name == "page_hinkley"

    @property
    def dormant(self) -> bool:
        return self.scaler is not None and self.scaler.phase == DORMANT_PHASE

    def after_detection(self) -> None:
        """The detector fired and the detection was handled: start afresh from here (river
        resets a detector on its next update anyway; a calibrated series warms up again on its
        new regime)."""
        self.reset_window()
        if self.scaler is None:
            self.detector._reset()
        else:
            self._restart_calibration()

    def spread_changed(self) -> None:
        """Another rule found this series' spread changed (or back): a calibrated mean rule's
        reference sd and detector window span two variances, so it warms up again. (ADWIN's
        test takes its window's variance for both sides of a cut: after a variance doubling
        the mean rule alerted on noise in a quarter of the runs.) A mean rule with an open
        alert keeps it: its resolve test has its own baseline."""
        scaler = self.scaler
        if (
            scaler is None
            or self.spread
            or self.incident is not None
            or scaler.phase in (LEARNING, DORMANT_PHASE)
        ):
            return
        self.reset_window()
        self._restart_calibration()

    def back_to_baseline(self, saved: list[Any] | None) -> None:
        """The open alert resolved: the pre-change regime is the reference again."""
        self.reset_window()
        if self.scaler is not None and saved is not None:
            self._own()  # (a dormant track watches again)
        if self.detector is not self.rule.idle:
            self.detector._reset()
        if self.scaler is not None and saved is not None:
            self.scaler.load(saved)
            self.offset, self.inverse = 0.0, 0.0  # force the map to be set again
            self._configure(fresh=True)

    @property
    def observed(self) -> int:
        """Values given to this track, those still waiting included: safe to read from
        another thread, unlike `settle`."""
        return self.seen + self.zeros

    @property
    def n(self) -> int:
        """Values since the detector's last reset (`total` and `total_sq` sum them)."""
        return self.seen - self.start

    def carry(self, old: Track, incident: bool = True) -> Track:
        """This (fresh) track goes on from `old`, which was calibrated against another
        reference: it keeps its count (alert ids stay unique), its cooldown and, when it
        watches the same kind of series, its open alert, which resolves to this calibration."""
        old.settle()
        self.seen = self.start = old.seen
        self.quiet_until = old.quiet_until
        if incident and old.incident is not None:
            self.incident = old.incident
            self.incident.saved = None if self.scaler is None else self.scaler.dump()
            self.room = 0  # its resolve test sees every value
        return self

    def reset_window(self) -> None:
        self.settle()
        self.start = self.seen
        self.total = 0.0
        self.total_sq = 0.0
        self.gaps = 0
        self.gap_total = 0.0

    # --- what a detection measured ---------------------------------------------------------
    def ring_view(self) -> Ring:
        self.settle()
        return Ring(self.ring, self.slot, self.blocks, self.block, self.fill, self.block_size)

    def measure(self) -> Measured:
        """The change this detection found: its effect and the alert's `stats`."""
        ring = self.ring_view()  # feeds waiting zeros first
        scaler = self.scaler
        n, total = self.n, self.total
        mean_all = total / n if n else 0.0
        variance_all = max(self.total_sq / n - mean_all * mean_all, 0.0) if n else 0.0
        if self.spread:
            assert scaler is not None
            pair_mean, pair_sd = scaler.pair_reference()
            sd = pair_sd * scaler.unit
            count, after_total, found = split(ring, sd)
            baseline, baseline_n = _pre_change(
                self.gap_total,
                self.gaps,
                after_total,
                count,
                found,
                pair_mean * scaler.unit,
                scaler.pairs,
                sd,
            )
            after = after_total / count if count else baseline
            effect = measure(SPREAD, baseline, scaler.scale, after, count)
            stats = {
                "mean_before": scaler.centre,
                "mean_after": mean_all if n else None,
                "window_before": max(n - 2 * count, 0),
                "window_after": min(2 * count, n),
                "mean_recent": mean_all if n else None,
                "std": scaler.scale,
            }
            # resolved events report a spread's levels as standard deviations
            report = scaler.scale / baseline if baseline > 0 else 1.0
            return Measured(effect, stats, baseline, sd, after, None, report, baseline_n)
        statistic = RATE if (scaler.binary if scaler is not None else self.rate) else MEAN
        if scaler is not None:
            assert scaler.centre is not None
            sd = scaler.scale
        else:
            sd = math.sqrt(variance_all)
        count, after_total, found = split(ring, sd)
        before_n = n - count
        if scaler is not None and scaler.centre is not None:
            baseline, baseline_n = _pre_change(
                total, n, after_total, count, found, scaler.centre, scaler.n, sd
            )
        elif before_n > 0:
            baseline, baseline_n = (total - after_total) / before_n, before_n
        else:
            baseline, baseline_n = mean_all, n
        if statistic == RATE:
            baseline = clamp_rate(baseline)
            sd = math.sqrt(baseline * (1.0 - baseline))
        elif scaler is None:
            after_mean = after_total / count if count else mean_all
            # the pooled within-segment sd: the shift itself does not inflate it
            within = self.total_sq - before_n * baseline * baseline - count * after_mean**2
            sd = math.sqrt(max(within, 0.0) / max(n - 2, 1))
        after = after_total / count if count else baseline
        if statistic == RATE and not 0.0 <= after <= 1.0:
            # a series that was 0/1 in its warm-up and is no longer: its change is a mean's
            statistic = MEAN
            sd = scaler.scale if scaler is not None else sd
        recent_n, recent_total = ring.recent()
        effect = measure(statistic, baseline, sd, after, count)
        stats = {
            "mean_before": baseline,
            "mean_after": after if count else None,
            "window_before": max(n - count, 0),
            "window_after": min(count, n),
            "mean_recent": recent_total / recent_n if recent_n else None,
            "std": sd,
        }
        rate = baseline if statistic == RATE else None
        return Measured(effect, stats, baseline, sd, after, rate, 1.0, baseline_n)

    # --- state -------------------------------------------------------------------------------
    def dump(self) -> list[Any]:
        self.settle()
        return [
            self.rule.name,
            TRACK_FORMAT,
            self.rule.dump(self.detector),
            self.seen,
            self.n,
            self.total,
            self.total_sq,
            self.quiet_until,
            [self.block_size, self.slot, self.blocks, self.block, self.fill, list(self.ring)],
            [self.prev, self.gaps, self.gap_total],
            None if self.scaler is None else self.scaler.dump(),
            None if self.incident is None else self.incident.dump(),
        ]

    @classmethod
    def load(cls, rule: DetectorRule, data: list[Any], *, rate: bool = False) -> Track:
        if len(data) < 2 or data[1] != TRACK_FORMAT:
            return cls._load_earlier(rule, data, rate)
        try:
            (_, _, detector, seen, n, total, total_sq, quiet, ring, prev, scaler, incident) = data
            track = cls(rule, rule.load(detector), rate=rate)
            track.seen, track.quiet_until = int(seen), int(quiet)
            track.start = track.seen - int(n)
            track.total, track.total_sq = float(total), float(total_sq)
            block_size, slot, blocks, block, fill, sums = ring
            if len(sums) != RING:
                raise ValueError(f"a ring of {len(sums)} blocks")
            track.block_size, track.slot, track.blocks = int(block_size), int(slot), int(blocks)
            track.block, track.fill = float(block), int(fill)
            track.ring = array("d", [float(value) for value in sums])
            pair, gaps, gap_total = prev
            track.prev = None if pair is None else float(pair)
            track.gaps, track.gap_total = int(gaps), float(gap_total)
            # State written before the rule was calibrated has no scaler: it starts a warm-up.
            if track.scaler is not None and scaler is not None:
                track.scaler.load(scaler)
            track.incident = None if incident is None else Incident.load(incident)
        except (TypeError, ValueError) as exc:
            raise StateError(
                f"track state for rule {rule.name!r} is not understood: {exc}"
            ) from exc
        track._configure(fresh=False)
        return track

    @classmethod
    def _load_earlier(cls, rule: DetectorRule, data: list[Any], rate: bool) -> Track:
        """A track written by 0.2 ([rule, detector, seen, n, total, total_sq, recent, quiet,
        (scaler)]): an uncalibrated rule keeps its detector and counts; a calibrated one keeps
        its counts and warms up again (its calibration state had another shape)."""
        try:
            detector, seen, n, total, total_sq, _, quiet = data[1:8]
            track = cls(rule, rule.load(detector) if rule.calibration is None else None, rate=rate)
            track.seen, track.quiet_until = int(seen), int(quiet)
            track.start = track.seen
            if rule.calibration is None:
                track.start = track.seen - int(n)
                track.total, track.total_sq = float(total), float(total_sq)
        except (TypeError, ValueError) as exc:
            raise StateError(
                f"track state for rule {rule.name!r} is not understood: {exc}"
            ) from exc
        return track


def _pre_change(
    total: float,
    count: int,
    after_total: float,
    after_count: int,
    found: bool,
    reference: float,
    reference_n: int,
    sd: float,
) -> tuple[float, int]:
    """The pre-change level of a calibrated track, and how many values it is estimated on.

    With the change point inside the ring, everything the detector saw since its last reset
    before it is pre-change: more values than the warm-up's, so a better estimate. With the
    change older than the ring, the values before the ring are pre-change but for the
    detection's delay beyond it: they are the baseline when they agree with the warm-up's
    reference (within 3 of its standard errors); else the reference is.
    """
    before = count - after_count
    if before <= 0 or (before <= reference_n and not found):
        return reference, reference_n
    older = (total - after_total) / before
    if found or abs(older - reference) <= 3.0 * sd / math.sqrt(max(reference_n, 1)):
        return older, before
    return reference, reference_n


class Measured:
    """What a detection measured: the effect, the alert's stats, and for the lifecycle the
    pre-change level and sd of what the track watches (values, or pair gaps for a spread), the
    level after the change point, a 0/1 series' reference rate, and the factor that turns the
    watched levels into reported ones (a spread's pair gaps into standard deviations)."""

    __slots__ = ("after", "baseline", "baseline_n", "effect", "rate", "report", "sd", "stats")

    def __init__(
        self,
        effect: dict[str, Any],
        stats: dict[str, Any],
        baseline: float,
        sd: float,
        after: float,
        rate: float | None,
        report: float = 1.0,
        baseline_n: int = 0,
    ) -> None:
        self.effect = effect
        self.stats = stats
        self.baseline = baseline
        self.baseline_n = baseline_n  # values the baseline was estimated on
        self.sd = sd
        self.after = after
        self.rate = rate
        self.report = report


class Signal:
    """A monitored signal of one key: its detectors, and for features a baseline/recent profile.

    `tracks` holds every rule's track (for state and metrics); `active` those that still watch
    this series (a rule for 0/1 series goes dormant on a continuous one, and the reverse).
    """

    __slots__ = (
        "active",
        "baseline",
        "baseline_var",
        "categories",
        "count",
        "kind",
        "lazy",
        "name",
        "recent",
        "tracks",
    )

    def __init__(self, kind: str, name: str, tracks: list[Track]) -> None:
        self.kind = kind
        self.name = name
        self.tracks = tracks
        self.active: list[Track] = []
        self.lazy: Track | None = None
        self.refresh()
        # A categorical feature's distance: the categories its values are measured on.
        self.categories: Categories | None = None
        self.count = 0
        self.baseline = 0.0
        self.baseline_var = 0.0
        self.recent = 0.0

    def profile(self, x: float) -> None:
        """Track a slow baseline and a fast recent mean, to rank likely causes of an alert."""
        if self.count == 0:
            self.baseline = self.recent = x
        else:
            delta = x - self.baseline
            self.baseline += BASELINE_ALPHA * delta
            self.baseline_var = (1.0 - BASELINE_ALPHA) * (
                self.baseline_var + BASELINE_ALPHA * delta * delta
            )
            self.recent += RECENT_ALPHA * (x - self.recent)
        self.count += 1

    def shift(self) -> float | None:
        """How far the recent mean sits from the baseline, in baseline standard deviations."""
        if self.count < PROFILE_MIN_COUNT or self.baseline_var <= 0.0:
            return None
        return float((self.recent - self.baseline) / self.baseline_var**0.5)

    def refresh(self) -> None:
        active = self.active = [track for track in self.tracks if not track.dormant]
        # The one track of a 0/1 signal whose zeros may wait (`Track._rate`): the monitor
        # counts a zero there while the track has room.
        self.lazy = active[0] if len(active) == 1 and active[0].may_wait else None

    def settle(self) -> None:
        for track in self.tracks:
            track.settle()

    def dump(self) -> list[Any]:
        return [
            self.kind,
            self.name,
            [track.dump() for track in self.tracks],
            [self.count, self.baseline, self.baseline_var, self.recent],
        ]


# A feature's kind: by its reference, else values.
UNDECIDED: Final = 0
NUMERIC: Final = 1
CATEGORICAL: Final = 2
CATEGORIES_ENTRY: Final = (
    "categories"  # a categorical feature's categories among a key's dumped signals
)
KIND_NAMES = {NUMERIC: "numeric", CATEGORICAL: "categorical"}
# A type-change signal starts at a feature's first value of the other type, as if it had seen
# the values before it (as zeros), at most as many as a 0/1 warm-up with no event needs.
WRONG_TYPE_PRIMING: Final = 2_000


class FeatureSlot:
    """Per feature of a key: what it is, its signals, and for a categorical one its categories.

    A feature is numeric (numbers and booleans: a boolean is a 0/1 rate) or categorical
    (strings): as its model's reference says, else as its first value says. Its value signal
    watches the numbers, or the categories' distance from their reference; a value of the other
    type feeds `wrong_type_rate:<name>` instead, created at the first one.
    """

    __slots__ = ("categories", "count", "kind", "missing", "unseen", "values", "wrong")

    def __init__(self, missing: Signal | None) -> None:
        self.kind = UNDECIDED
        self.values: Signal | None = None
        self.categories: Categories | None = None
        self.unseen: Signal | None = None  # unseen_rate:<name>, once its categories are known
        self.wrong: Signal | None = None  # wrong_type_rate:<name>, from the first wrong type
        self.missing = missing
        self.count = 0  # values (or absences) since the feature appeared

    def signals(self) -> list[Signal | None]:
        return [self.values, self.missing, self.unseen, self.wrong]


class KeyState:
    """Everything monitored for one monitor key (model [+ version] [+ segment])."""

    __slots__ = (
        "estimated",
        "estimating",
        "features",
        "id",
        "invalid",
        "model",
        "model_version",
        "performance",
        "plan",
        "positive_class",
        "predictions",
        "segment",
        "task",
    )

    def __init__(
        self,
        key_id: str,
        model: str,
        model_version: str | None,
        segment: dict[str, str],
        plan: ModelPlan,
    ) -> None:
        self.id = key_id
        self.model = model
        self.model_version = model_version
        self.segment = segment
        self.plan = plan
        self.task = plan.task  # "auto" until the first joined pair decides
        self.positive_class: Any = plan.positive_class
        self.features: dict[str, FeatureSlot] = {}
        self.predictions: dict[str, Signal | None] = {}
        self.performance: Signal | None = None
        # `estimated_error`, from a classifier's scores: created at the first score
        self.estimated: Signal | None = None
        self.estimating = False
        self.invalid = self.new_signal(DATA_QUALITY, "invalid_rate")

    def new_signal(
        self,
        kind: str,
        name: str,
        *,
        categorical: bool = False,
        reference: Reference | None = None,
    ) -> Signal | None:
        """The signal with the plan's rules for it, calibrated against `reference`, else the
        model's reference for it when it has one."""
        plan = self.plan
        rules = plan.rules_for(kind, name, categorical)
        if not rules:
            return None
        if reference is None and plan.reference is not None and not categorical:
            reference = plan.reference.signal(kind, name)
        return Signal(
            kind,
            name,
            [
                Track(rule, reference=reference)
                if rule.calibration is not None
                else Track(rule, rate=is_rate_signal(name))
                for rule in rules
            ],
        )

    def add_feature(self, name: str) -> FeatureSlot:
        slot = FeatureSlot(self.new_signal(DATA_QUALITY, f"{MISSING_RATE}{name}"))
        self.features[name] = slot
        reference = self.plan.reference
        categorical = None if reference is None else reference.categorical(name)
        if categorical is not None:
            self.decide(name, slot, CATEGORICAL if categorical else NUMERIC)
        return slot

    def decide(self, name: str, slot: FeatureSlot, kind: int) -> None:
        """Fix a feature's kind and create its value signal (and a categorical one's
        categories, when a rule will use them)."""
        slot.kind = kind
        if kind == NUMERIC:
            slot.values = self.new_signal(FEATURE, name)
            return
        plan = self.plan
        if not (
            plan.rules_for(FEATURE, name, True)
            or plan.rules_for(DATA_QUALITY, f"{UNSEEN_RATE}{name}")
        ):
            return
        reference = None if plan.reference is None else plan.reference.categories.get(name)
        categories = slot.categories = Categories(plan.max_categories, plan.max_chars, reference)
        slot.values = self.new_signal(
            FEATURE,
            name,
            categorical=True,
            reference=distance_reference(categories.reference_n or COUNT_VALUES),
        )
        if slot.values is not None:
            slot.values.categories = categories
        if categories.ready:
            self.watch_unseen(name, slot)

    def watch_unseen(self, name: str, slot: FeatureSlot) -> None:
        """The categories are known: their unseen rate is watched from now on (against the
        reference's share of other values, when they came from one). A restore may have
        created it before: it keeps that one."""
        categories = slot.categories
        if slot.unseen is not None or categories is None:
            return
        reference = None
        if (
            categories.ready
            and self.plan.reference is not None
            and name in self.plan.reference.categories
        ):
            n = categories.reference_n
            reference = rate_reference(categories.reference[categories.other], n)
        slot.unseen = self.new_signal(DATA_QUALITY, f"{UNSEEN_RATE}{name}", reference=reference)

    def signals(self) -> list[Signal]:
        found = [self.performance, self.estimated, self.invalid, *self.predictions.values()]
        for slot in self.features.values():
            found.extend(slot.signals())
        return [signal for signal in found if signal is not None]

    def dump(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "model_version": self.model_version,
            "segment": self.segment,
            "task": self.task,
            "positive_class": self.positive_class,
            "reference": self.plan.reference_digest,
            "features": [[name, slot.kind, slot.count] for name, slot in self.features.items()],
            "predictions": sorted(self.predictions),
            # A categorical feature's categories travel with the signals, as an entry of their
            # own: the changelog splits a key too large for one record between its signals.
            "signals": [signal.dump() for signal in self.signals()]
            + [
                [CATEGORIES_ENTRY, name, slot.categories.dump()]
                for name, slot in self.features.items()
                if slot.categories is not None
            ],
        }
