"""Zeros of 0/1 signals that wait and are fed in one loop give exactly the alerts and state of
feeding every zero as it comes (`Track._rate`): the same ids, the same event for each alert, the
same bits in every checkpoint, wherever the checkpoints fall."""

from __future__ import annotations

import random
from typing import Any
from unittest import mock

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream_monitor.core import signals
from stream_monitor.core.effects import RING
from stream_monitor.core.events import LABEL, PREDICTION, Record
from stream_monitor.core.monitor import Monitor
from stream_monitor.core.signals import Track
from tests.helpers import T0, config

SETTINGS = config().monitor_settings()


def stream(seed: int, before: float, after: float, length: int) -> list[Record]:
    """One model whose feature `a` goes missing at rate `before`, then `after` from the middle,
    then never; its errors and invalid events change rate at the same points."""
    rng = random.Random(seed)
    out: list[Record] = []
    for i in range(length):
        rate = before if i < length // 2 else after if i < 3 * length // 4 else 0.0
        if rng.random() < rate / 4:  # an invalid prediction of model m: invalid_rate
            out.append(Record(PREDICTION, {"model": "m", "timestamp": T0 + i}, None, "p", 0, i))
            continue
        features: dict[str, Any] = {"b": rng.gauss(0.0, 1.0)}
        if rng.random() >= rate:
            features["a"] = rng.gauss(5.0, 2.0)
        prediction = rng.randint(0, 1)
        event = {
            "prediction_id": f"p{i}",
            "model": "m",
            "prediction": prediction,
            "timestamp": T0 + i,
            "features": features,
        }
        out.append(Record(PREDICTION, event, None, "p", 0, i))
        if i % 3 == 0:  # a label that carries its prediction: the error rate
            wrong = rng.random() < rate
            label = {
                "prediction_id": f"p{i}",
                "model": "m",
                "prediction": prediction,
                "label": 1 - prediction if wrong else prediction,
                "timestamp": T0 + i,
            }
            out.append(Record(LABEL, label, None, "l", 0, i))
    return out


def run(records: list[Record], cuts: list[int]) -> tuple[list[Any], list[Any], int]:
    """Alerts, every checkpoint taken at `cuts`, and the most zeros that waited at a cut."""
    monitor = Monitor(SETTINGS)
    alerts: list[Any] = []
    checkpoints: list[Any] = []
    waited = 0
    start = 0
    for cut in [*sorted(cuts), len(records)]:
        alerts.extend(alert.event for alert in monitor.process(records[start:cut]).alerts)
        for state in monitor.keys.values():
            for signal in state.signals():
                waited = max([waited, *(track.zeros for track in signal.tracks)])
        checkpoints.append(monitor.take_changes())
        start = cut
    checkpoints.append(monitor.snapshot())
    return alerts, checkpoints, waited


def each_zero_fed_at_once() -> Any:
    # No room for any zero to wait (a module setting: the compiled core ignores patched methods).
    return mock.patch.object(signals, "MAX_ROOM", 0)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    before=st.sampled_from([0.0, 0.01, 0.05, 0.3]),
    after=st.sampled_from([0.0, 0.02, 0.2, 0.6]),
    cuts=st.lists(st.integers(0, 6000), max_size=6),
)
def test_waiting_zeros_give_the_alerts_and_checkpoints_of_feeding_each_zero(
    seed: int, before: float, after: float, cuts: list[int]
) -> None:
    records = stream(seed, before, after, 6000)
    alerts, checkpoints, _ = run(records, cuts)
    with each_zero_fed_at_once():
        expected_alerts, expected_checkpoints, none = run(records, cuts)
    assert none == 0
    assert alerts == expected_alerts
    assert checkpoints == expected_checkpoints


def test_a_rate_that_falls_to_zero_alerts_on_the_same_event_either_way() -> None:
    """The alert that matters most here: the missing rate drops to 0, so the detection happens
    on a zero, the kind of value that waits."""
    records = stream(3, 0.2, 0.2, 8000)
    alerts, _, waited = run(records, [])
    with each_zero_fed_at_once():
        expected, _, _ = run(records, [])
    fell = [
        alert
        for alert in alerts
        if alert["data"]["signal"] == "missing_rate:a" and alert["type"].endswith("detected")
    ]
    assert fell, "the fall of the missing rate was not detected"
    assert alerts == expected
    assert waited > 100  # zeros did wait between the cuts


def feed(track: Track, values: list[float], wait: bool) -> list[int]:
    """Each value as the monitor gives it: a zero waits while the track has room."""
    fired = []
    for index, value in enumerate(values):
        if wait and value == 0.0 and track.room:
            track.room -= 1
            track.zeros += 1
        elif track.update(value):
            fired.append(index)
    return fired


def test_zeros_that_wait_longer_than_the_ring_leave_the_ring_of_each_zero_fed() -> None:
    """More zeros wait than the ring has blocks, after a block that holds a 1: the ring, the
    counts and the detector come out as if each zero had been fed."""
    rule = SETTINGS.rules["rate"]
    rng = random.Random(5)
    warmup = [1.0 if rng.random() < 0.05 else 0.0 for _ in range(400)]
    # A long run of zeros brings the running mean to the zeros' own value: then a lone 1 leaves
    # room for every zero after it.
    values = [*warmup, *([0.0] * 20_000), 1.0, 0.0, 0.0, 1.0, 0.0]  # the zero after a 1 is fed
    waiting, fed = Track(rule), Track(rule)
    assert feed(waiting, values, wait=True) == feed(fed, values, wait=False)
    assert waiting.fill and waiting.block  # a block with 1s in it, not full yet
    assert waiting.room > 2 * RING * waiting.block_size
    zeros = [0.0] * ((RING + 1) * waiting.block_size + 7)  # round the ring, and more
    assert feed(waiting, zeros, wait=True) == feed(fed, zeros, wait=False) == []
    assert waiting.zeros == len(zeros)
    assert waiting.dump() == fed.dump()
    assert waiting.zeros == 0
