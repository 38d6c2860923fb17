"""Determinism as a property: however the two topics interleave, however the input is cut into
batches, wherever the process crashes and restores, the same input gives the same alerts with the
same ids, and the same final state.

A small simulated runtime drives the real `PartitionProcessor` and changelog records with exactly
once semantics: outputs and offsets become visible at a commit, state at a state checkpoint (less
often), and a crash loses everything since the last commit. The topics are fully written before
it reads them (a catch-up): a stream is read to its end only when all of it was delivered.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from stream_monitor.core.alerts import RESOLVED_TYPE
from stream_monitor.core.events import LABEL, PREDICTION, Record
from stream_monitor.core.monitor import Monitor
from stream_monitor.core.reference import FORMAT, parse
from stream_monitor.core.settings import MonitorSettings
from stream_monitor.core.state import StateChanges, StateCodec
from stream_monitor.processing.changelog import (
    OFFSETS_HEADER,
    InvalidRecords,
    PartitionWriter,
    RecordCheck,
    decode_tag,
    restore,
    within,
)
from stream_monitor.processing.merge import LABELS, PREDICTIONS
from stream_monitor.processing.partition import PartitionProcessor
from stream_monitor.scenarios import generate
from tests.helpers import STATE_KEY, T0, config

CODEC = StateCodec(STATE_KEY)
SETTINGS = config(
    detectors={
        "adwin": {"type": "adwin"},
        "ph": {"type": "page_hinkley", "params": {"threshold": 8}},
    },
    signals={
        "performance": ["adwin", "ph"],
        "prediction": ["adwin"],
        "feature": ["adwin"],
        "data_quality": ["adwin"],
    },
    alerts={"cooldown": 100},
).monitor_settings()


def topics(seed: int, chunk: int = 0) -> tuple[list[Record], list[Record]]:
    """The default scenario's three models on one partition, fraud's amount back to normal for
    its last 100 events (so that alerts are resolved too); labels shuffled in chunks when
    `chunk` (a lagging labels topic delivers them out of prediction order)."""
    scenario = generate("default", events=400, seed=seed, label_delay_ms=2_000)
    for event in scenario.predictions[900:]:
        if event["model"] == "fraud":
            event["features"]["amount"] -= 30.0
    labels = list(scenario.labels)
    if chunk:
        rng = random.Random(seed)
        for start in range(0, len(labels), chunk):
            part = labels[start : start + chunk]
            rng.shuffle(part)
            labels[start : start + chunk] = part
    return (
        [Record(PREDICTION, e, None, "p", 0, i) for i, e in enumerate(scenario.predictions)],
        [Record(LABEL, e, None, "l", 0, i) for i, e in enumerate(labels)],
    )


def categorical_topics(seed: int) -> tuple[list[Record], list[Record]]:
    """Two models with what the built-in rules watch beyond numbers: `shop` has a reference
    (its categories are known from its first event) and a country mix that moves and comes
    back, an amount that turns to text, a flag; `web` learns its categories on a warm-up, then
    sees a new device type."""
    rng = random.Random(seed)
    predictions, labels = [], []
    for i in range(4000):
        moved = 700 <= i < 2700
        shop = {
            "country": rng.choices(COUNTRIES, (0.6, 0.15, 0.125, 0.125) if moved else MIX)[0],
            "amount": f"{rng.gauss(100, 20):.1f}"
            if i >= 1000 and i % 9 == 0
            else rng.gauss(100, 20),
            "flag": rng.random() < 0.3,
        }
        device = "foldable" if i >= 900 and rng.random() < 0.15 else rng.choice(("ios", "web"))
        for model, features in (("shop", shop), ("web", {"device": device})):
            event_id = f"{model}-{i}"
            time_ms = T0 + 100 * i
            predictions.append(
                {
                    "prediction_id": event_id,
                    "model": model,
                    "prediction": int(rng.random() < 0.3),
                    "score": rng.random(),
                    "timestamp": time_ms,
                    "features": features,
                }
            )
            labels.append(
                {
                    "prediction_id": event_id,
                    "model": model,
                    "label": int(rng.random() < 0.3),
                    "timestamp": time_ms + 1500,
                }
            )
    labels.sort(key=lambda event: event["timestamp"])
    return (
        [Record(PREDICTION, e, None, "p", 0, i) for i, e in enumerate(predictions)],
        [Record(LABEL, e, None, "l", 0, i) for i, e in enumerate(labels)],
    )


COUNTRIES = ("fr", "de", "es", "it")
MIX = (0.2, 0.3, 0.25, 0.25)
SHOP_REFERENCE = {
    "events": 10_000,
    "signals": {
        "feature/amount": {
            "n": 10_000,
            "mean": 100.0,
            "sd": 20.0,
            "pairs": {"mean": 1.13, "sd": 0.85},
        },
        "feature/country": {
            "n": 10_000,
            "categories": dict(zip(COUNTRIES, MIX, strict=True)),
            "other": 0.0,
        },
        "feature/flag": {"n": 10_000, "mean": 0.3, "sd": 0.458, "binary": True},
    },
}
# The built-in rules, and a reference for `shop`.
CATEGORICAL = replace(
    config().monitor_settings(),
    reference=parse({"format": FORMAT, "models": {"shop": SHOP_REFERENCE}}),
)


def uninterrupted(
    streams: tuple[list[Record], list[Record]], settings: MonitorSettings = SETTINGS
) -> tuple[list[str], StateChanges, int]:
    """Ids of every output, the final state, and how many of the outputs are drift_resolved."""
    processor = PartitionProcessor(0, Monitor(settings), PartitionWriter(CODEC, 0))
    processor.add(PREDICTIONS, streams[0])
    processor.add(LABELS, streams[1])
    alerts = processor.process((True, True)).alerts
    resolved = sum(1 for alert in alerts if alert.event["type"] == RESOLVED_TYPE)
    return [alert.id for alert in alerts], processor.monitor.snapshot(), resolved


@dataclass
class Cluster:
    """What survives a crash: committed outputs, offsets and changelog records."""

    streams: tuple[list[Record], list[Record]]
    published: list[str] = field(default_factory=list)
    committed: tuple[int, int] = (0, 0)
    changelog: list[tuple[bytes, bytes | None, list[tuple[str, bytes]]]] = field(
        default_factory=list
    )


class Instance:
    """One run of the simulated runtime, from the cluster's last commit."""

    def __init__(self, cluster: Cluster, settings: MonitorSettings) -> None:
        self.cluster = cluster
        check = RecordCheck(CODEC, InvalidRecords("stop"))
        latest: dict[bytes, tuple[bytes | None, bytes]] = {}
        tag: tuple[int, ...] | None = None
        for key, value, headers in cluster.changelog:
            found = check.tag_of(0, key, value, headers, "sim")
            if found is not None and within(found, cluster.committed):
                latest[key] = (value, dict(headers)[OFFSETS_HEADER])
                if key == b"processor":
                    tag = decode_tag(dict(headers)[OFFSETS_HEADER])
        monitor = Monitor(settings)
        if tag is None:
            self.processor = PartitionProcessor(
                0, monitor, PartitionWriter(CODEC, 0), positions=cluster.committed
            )
        else:
            state = restore(CODEC, 0, latest)
            for changes in state.changes:
                monitor.restore(changes)
            merge = state.processor["merge"]
            self.processor = PartitionProcessor(
                0,
                monitor,
                state.writer,
                positions=(tag[0], tag[1]),
                merge_times=(merge[0], merge[1]),
                replay_until=cluster.committed,
            )
        self.delivered = list(self.processor.positions)
        self.outputs: list[str] = []
        # As the service does: a partition with no state checkpoints it at its first commit, so
        # that committed offsets never run ahead of a state to replay them from.
        self.fresh = tag is None

    def deliver(self, stream: int, count: int) -> None:
        records = self.cluster.streams[stream][self.delivered[stream] :][:count]
        self.processor.add(stream, records)
        self.delivered[stream] += len(records)

    def process(self) -> None:
        ends = [len(s) for s in self.cluster.streams]
        idle = (self.delivered[0] >= ends[0], self.delivered[1] >= ends[1])
        self.outputs += [alert.id for alert in self.processor.process(idle).alerts]

    def commit(self, state: bool) -> None:
        if state or self.fresh:
            self.fresh = False
            self.cluster.changelog += self.processor.checkpoint()
        self.cluster.published += self.outputs
        self.outputs = []
        until = self.processor.replay_until
        at = self.processor.positions
        self.cluster.committed = (
            (at[0], at[1]) if until is None else (max(at[0], until[0]), max(at[1], until[1]))
        )

    def redeliver(self) -> None:
        """The consumer delivers the partition again from the processed positions (a seek back),
        while what it delivered before is still buffered."""
        self.delivered = list(self.processor.positions)

    def revoke(self) -> None:
        """The partition is revoked (its state checkpointed, as the service does then) and
        comes back to this instance, which goes on with the same processor."""
        self.commit(state=True)
        self.processor.drop_buffered()
        self.redeliver()

    def finish(self) -> None:
        self.deliver(PREDICTIONS, 10**9)
        self.deliver(LABELS, 10**9)
        self.process()
        self.commit(state=True)


# One turn of the runtime: deliver `count` records of `stream`, process what the merge can
# decide, then perhaps commit outputs, checkpoint state too, crash, have the partition revoked
# and given back, or be delivered again what was not processed yet.
Step = tuple[int, int, str]
steps = st.lists(
    st.tuples(
        st.sampled_from([PREDICTIONS, LABELS]),
        st.integers(0, 500),
        st.sampled_from(["none", "none", "commit", "state", "crash", "revoke", "redeliver"]),
    ),
    max_size=25,
)


def simulate(
    streams: tuple[list[Record], list[Record]],
    plan: list[Step],
    settings: MonitorSettings = SETTINGS,
) -> Cluster:
    cluster = Cluster(streams)
    instance = Instance(cluster, settings)
    for stream, count, action in plan:
        instance.deliver(stream, count)
        instance.process()
        if action == "commit":
            instance.commit(state=False)
        elif action == "state":
            instance.commit(state=True)
        elif action == "crash":  # everything since the last commit is gone
            instance = Instance(cluster, settings)
        elif action == "revoke":
            instance.revoke()
        elif action == "redeliver":
            instance.redeliver()
    instance.finish()
    final = Instance(cluster, settings)  # restore the final state as a successor would
    cluster.final_state = final.processor.monitor.snapshot()  # type: ignore[attr-defined]
    return cluster


REFERENCE = {chunk: uninterrupted(topics(3, chunk)) for chunk in (0, 300)}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=steps, chunk=st.sampled_from([0, 300]))
# a crash after outputs were committed beyond the last state checkpoint: a replay
@example(plan=[(0, 1200, "none"), (1, 400, "state"), (1, 500, "commit"), (1, 0, "crash")], chunk=0)
# labels read long before their predictions, with checkpoints and a crash in between
@example(
    plan=[(1, 900, "state"), (0, 700, "commit"), (0, 100, "crash"), (1, 300, "none")], chunk=300
)
# predictions buffered while their labels are not read yet, then delivered again: after a
# revoke that gave the partition back (issue: counted twice, alerts moved 256 values later)
@example(plan=[(0, 1200, "revoke"), (1, 400, "state"), (0, 300, "redeliver")], chunk=0)
def test_any_interleaving_batching_and_crash_gives_the_same_alerts_and_state(
    plan: list[Step], chunk: int
) -> None:
    ids, state, resolved = REFERENCE[chunk]
    assert len(ids) >= 3 and resolved >= 1  # the scenario's changes are found, and resolved
    cluster = simulate(topics(3, chunk), plan)
    assert cluster.published == ids  # same ids, same order, none twice, none lost
    assert cluster.final_state == state  # type: ignore[attr-defined]


def test_labels_shuffled_in_chunks_give_the_same_alerts_whatever_the_arrival_order() -> None:
    """Issue: with labels delivered ahead of their predictions, 4 of 8 seeds used to differ."""
    for seed in range(8):
        streams = topics(seed, chunk=300)
        expected, _, _ = uninterrupted(streams)
        labels_first = simulate(streams, [(LABELS, 10**6, "none"), (PREDICTIONS, 10**6, "none")])
        predictions_first = simulate(
            streams, [(PREDICTIONS, 10**6, "none"), (LABELS, 10**6, "none")]
        )
        assert labels_first.published == predictions_first.published == expected, seed


CATEGORICAL_REFERENCE = uninterrupted(categorical_topics(5), CATEGORICAL)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=steps)
# crashes inside the warm-up's two phases and inside a block of the reference's categories
@example(plan=[(0, 150, "state"), (1, 40, "commit"), (0, 170, "crash"), (0, 777, "state")])
@example(plan=[(0, 1050, "commit"), (0, 33, "state"), (1, 500, "crash"), (0, 1201, "commit")])
def test_categories_references_and_type_changes_survive_any_interleaving_and_crash(
    plan: list[Step],
) -> None:
    """Top-K sketches, block counts, unseen sketches, reference digests and type-change
    signals are in the signed state: the same alerts, with the same ids, and the same state."""
    ids, state, resolved = CATEGORICAL_REFERENCE
    assert len(ids) >= 4 and resolved >= 1
    cluster = simulate(categorical_topics(5), plan, CATEGORICAL)
    assert cluster.published == ids
    assert cluster.final_state == state  # type: ignore[attr-defined]


def test_the_categorical_stream_alerts_what_moved() -> None:
    processor = PartitionProcessor(0, Monitor(CATEGORICAL), PartitionWriter(CODEC, 0))
    streams = categorical_topics(5)
    processor.add(PREDICTIONS, streams[0])
    processor.add(LABELS, streams[1])
    found = {
        (a.event["type"].rpartition(".")[2], a.event["data"]["model"], a.event["data"]["signal"])
        for a in processor.process((True, True)).alerts
    }
    assert {
        ("drift_detected", "shop", "country"),
        ("drift_resolved", "shop", "country"),
        ("drift_detected", "shop", "wrong_type_rate:amount"),
        ("drift_detected", "web", "unseen_rate:device"),
    } <= found
