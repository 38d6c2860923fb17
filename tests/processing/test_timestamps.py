"""Issue hole 2: one event with a microsecond, nanosecond or year-9999 timestamp poisoned its
partition (a crash on formatting, or a watermark millennia ahead that expired every join).

Out-of-range times are now invalid values (dead-lettered), and the join's clock is the minimum of
each block of events, so even a valid but wild time (2090) cannot move it on its own."""

from __future__ import annotations

from typing import Any

from stream_monitor.core.events import LABEL, PREDICTION, Record
from stream_monitor.core.monitor import Monitor
from stream_monitor.processing.changelog import PartitionWriter
from stream_monitor.processing.merge import LABELS, PREDICTIONS
from stream_monitor.processing.partition import PartitionProcessor
from stream_monitor.scenarios import generate
from tests.helpers import STATE_KEY, config

POISON = [
    1_767_225_600_000_000,  # microseconds
    1_767_225_600_000_000_000,  # nanoseconds
    "9999-12-31T23:59:59Z",
    4_102_444_800_000,  # 2100-01-01: just out of range
]
WILD = 3_786_912_000_000  # 2090-01-01: valid, but decades ahead of the stream


def run(labels: list[dict[str, Any]]) -> tuple[list[str], dict[str, int], list[str]]:
    from stream_monitor.core.state import StateCodec

    settings = config(join={"ttl": "1h"}).monitor_settings()
    scenario = generate("default", events=3000, seed=7)
    processor = PartitionProcessor(0, Monitor(settings), PartitionWriter(StateCodec(STATE_KEY), 0))
    processor.add(
        PREDICTIONS,
        [Record(PREDICTION, e, None, "p", 0, i) for i, e in enumerate(scenario.predictions)],
    )
    processor.add(LABELS, [Record(LABEL, e, None, "l", 0, i) for i, e in enumerate(labels)])
    output = processor.process((True, True))
    joins = processor.monitor.join.counters.as_dict()
    return (
        [a.id for a in output.alerts],
        joins,
        [d.error.reason for d in output.dead_letters],
    )


def test_poisoned_and_wild_timestamps_leave_joins_and_alerts_unchanged() -> None:
    labels = generate("default", events=3000, seed=7).labels
    clean_ids, clean_joins, clean_dead = run(labels)
    assert clean_joins["matched"] == 9000 and len(clean_ids) >= 3 and not clean_dead

    mixed = list(labels)
    stray = {"model": "credit", "label": 1}
    for n, value in enumerate(POISON):  # spread through the first half of the stream
        mixed.insert(500 + 1000 * n, {**stray, "prediction_id": f"poison-{n}", "timestamp": value})
    for n in range(3):  # valid times, decades ahead: labels of predictions that never come
        mixed.insert(700 + 900 * n, {**stray, "prediction_id": f"wild-{n}", "timestamp": WILD})
    ids, joins, dead = run(mixed)

    assert dead == ["invalid_value"] * len(POISON)
    assert ids == clean_ids
    assert joins["matched"] == clean_joins["matched"] == 9000
    assert joins["expired_predictions"] == clean_joins["expired_predictions"] == 0
