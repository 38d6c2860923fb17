"""Registry of river drift detectors: one configured prototype per rule, a fresh copy per key.

Detector state is dumped as plain data (numbers, and for ADWIN the opaque bytes of river's Rust
window, which are decoded by Rust, not by pickle), so state read back from Kafka never runs code.
"""

from __future__ import annotations

import base64
import inspect
from collections.abc import Callable
from typing import Any

from river.drift import ADWIN, PageHinkley

from stream_monitor.core.calibration import Calibration
from stream_monitor.errors import ConfigError, StateError

DetectorState = dict[str, Any]


def _dump_adwin(detector: ADWIN) -> DetectorState:
    reduced: Any = detector._helper.__reduce_ex__(2)
    args, payload = reduced[1], reduced[2]
    return {
        "detected": detector._drift_detected,
        "helper_args": list(args[1:]),
        "helper": bytes(payload),
    }


def _load_adwin(detector: ADWIN, state: DetectorState) -> None:
    helper_cls = type(detector._helper)
    helper = helper_cls.__new__(helper_cls, *state["helper_args"])
    window = state["helper"]
    # bytes in SM2 records; base64 text in SM1 records (written before SM2 existed)
    helper.__setstate__(window if type(window) is bytes else base64.b64decode(window))
    detector._helper = helper
    detector._drift_detected = bool(state["detected"])


def _dump_page_hinkley(detector: PageHinkley) -> DetectorState:
    return {
        "detected": detector._drift_detected,
        "n": detector._x_mean.n,
        "mean": detector._x_mean._mean,
        "sum_increase": detector._sum_increase,
        "sum_decrease": detector._sum_decrease,
        # river starts min_increase at +inf, which JSON cannot carry.
        "min_increase": None if detector._min_increase == float("inf") else detector._min_increase,
        "max_decrease": detector._max_decrease,
    }


def _load_page_hinkley(detector: PageHinkley, state: DetectorState) -> None:
    detector._x_mean.n = float(state["n"])
    detector._x_mean._mean = float(state["mean"])
    detector._sum_increase = float(state["sum_increase"])
    detector._sum_decrease = float(state["sum_decrease"])
    minimum = state["min_increase"]
    detector._min_increase = float("inf") if minimum is None else float(minimum)
    detector._max_decrease = float(state["max_decrease"])
    detector._drift_detected = bool(state["detected"])


# At most this many values stand for a reference in a primed ADWIN window: with 1,000 of them a
# +1 sd stream is found in 64 values, a +0.2 sd one in about 1,200, and a reference estimated on
# fewer values is trusted no further than its own size.
ADWIN_PRIME = 1000
_PRIMED_CACHE = 256
_primed: dict[tuple[Any, ...], DetectorState] = {}


def _prime_adwin(detector: ADWIN, n: int, mean: float, sd: float) -> None:
    """A window that holds a reference of `n` values of mean `mean` and sd `sd` (alternating
    mean ± sd, at most ADWIN_PRIME of them): without it ADWIN, which compares the parts of its
    own window, could not see a stream that differs from its reference from the first value.
    A calibrated ADWIN that learns its reference on a warm-up is not primed: its window holds
    the warm-up's values already. The window is built once per shape and copied."""
    count = min(n, ADWIN_PRIME)
    if count <= 0:
        return
    params = (detector.delta, detector.clock, detector.max_buckets, detector.min_window_length)
    key = (*params, detector.grace_period, count, mean, sd)
    state = _primed.get(key)
    if state is None:
        for index in range(count):
            detector.update(mean + sd if index % 2 == 0 else mean - sd)
        state = _dump_adwin(detector)
        if len(_primed) >= _PRIMED_CACHE:
            _primed.pop(next(iter(_primed)))
        _primed[key] = state
    _load_adwin(detector, state)
    detector._drift_detected = False


def _prime_page_hinkley(detector: PageHinkley, n: int, mean: float, sd: float) -> None:
    # Page-Hinkley compares each value with the running mean of its window: it starts as if it
    # had seen the `n` values of the warm-up or the reference, at their mean.
    detector._x_mean.n = float(n)
    detector._x_mean._mean = mean


class DetectorType:
    """How to build, dump, load and (for calibration) prime one kind of river detector."""

    __slots__ = ("cls", "dump", "load", "name", "prime")

    def __init__(
        self,
        name: str,
        cls: type,
        dump: Callable[[Any], DetectorState],
        load: Callable[[Any, DetectorState], None],
        prime: Callable[[Any, int, float, float], None],
    ) -> None:
        self.name = name
        self.cls = cls
        self.dump = dump
        self.load = load
        self.prime = prime

    def defaults(self) -> dict[str, Any]:
        """River's own defaults, read from the constructor so they never drift from river's."""
        signature = inspect.signature(self.cls)
        return {
            name: param.default
            for name, param in signature.parameters.items()
            if name != "self" and param.default is not inspect.Parameter.empty
        }


DETECTOR_TYPES: dict[str, DetectorType] = {
    "adwin": DetectorType("adwin", ADWIN, _dump_adwin, _load_adwin, _prime_adwin),
    "page_hinkley": DetectorType(
        "page_hinkley", PageHinkley, _dump_page_hinkley, _load_page_hinkley, _prime_page_hinkley
    ),
}


# Parameters a calibrated rule derives itself; setting them as well would be ambiguous.
CALIBRATED_PARAMS = {"page_hinkley": ("delta", "threshold", "alpha"), "adwin": ()}


class DetectorRule:
    """A named, configured detector: the prototype that every monitored key gets a copy of.

    A calibrated rule's detectors see standardised values, so its parameters come from the
    false-alarm budget (see `core.calibration`) instead of from the signal's units.
    """

    __slots__ = ("calibration", "idle", "name", "params", "type")

    def __init__(
        self,
        name: str,
        type_name: str,
        params: dict[str, Any] | None = None,
        calibration: Calibration | None = None,
    ) -> None:
        if type_name not in DETECTOR_TYPES:
            known = ", ".join(sorted(DETECTOR_TYPES))
            raise ConfigError(
                f"detectors.{name}.type: unknown detector {type_name!r} (known: {known})"
            )
        self.name = name
        self.type = DETECTOR_TYPES[type_name]
        merged = self.type.defaults()
        for key, value in (params or {}).items():
            if key not in merged:
                raise ConfigError(
                    f"detectors.{name}.params.{key}: not a parameter of {type_name} "
                    f"(parameters: {', '.join(sorted(merged))})"
                )
            if calibration is not None and key in CALIBRATED_PARAMS[type_name]:
                raise ConfigError(
                    f"detectors.{name}.params.{key}: set by calibrate; remove it from params"
                )
            merged[key] = value
        self.calibration = calibration
        try:
            self.params = (
                merged if calibration is None else calibration.detector_params(type_name, merged)
            )
        except ValueError as exc:
            raise ConfigError(f"detectors.{name}.calibrate: {exc}") from exc
        try:
            # The detector of every dormant track of this rule: never updated (`Track._idle`).
            self.idle = self.create()
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"detectors.{name}.params: {exc}") from exc

    def create(self) -> Any:
        """A fresh detector: the same as river's `clone()` of the prototype, without the copying."""
        return self.type.cls(**self.params)

    def dump(self, detector: Any) -> DetectorState:
        return self.type.dump(detector)

    def load(self, state: DetectorState) -> Any:
        detector = self.create()
        try:
            self.type.load(detector, state)
        except (KeyError, TypeError, ValueError) as exc:
            raise StateError(
                f"detector state for rule {self.name!r} is not understood: {exc}"
            ) from exc
        except BaseException as exc:  # river's Rust code panics on bad bytes
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            raise StateError(f"detector state for rule {self.name!r} is corrupt: {exc}") from exc
        return detector
