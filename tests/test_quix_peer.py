"""The Quix Streams peer's own logic (benchmarks/quix_peer.py), without Kafka or Quix Streams.

The benchmark compares rates, so the peer must do the job it claims: the same signals as `run`
with the shipped config, and the join working whichever of a prediction and its label comes first,
in a dict and in a State alike.
"""

from __future__ import annotations

import random
from typing import Any

from benchmarks.quix_peer import RUNS, PeerMonitor, Run, Settings


class DictState:
    """Quix's State interface (get/set/delete) over a dict, for one message key."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def set(self, key: str, value: Any, ttl: Any = None) -> None:
        self.values[key] = value

    def delete(self, key: str) -> None:
        self.values.pop(key, None)


def events(count: int, seed: int = 5) -> list[dict[str, Any]]:
    """Predictions and their labels (every other one), some labels before their prediction."""
    rng = random.Random(seed)
    stream: list[dict[str, Any]] = []
    for i in range(count):
        model = f"model-{i % 2}"
        prediction = {
            "prediction_id": f"p{i}",
            "model": model,
            "prediction": rng.random() < 0.5,
            "timestamp": i,
            "features": {"f0": rng.gauss(0, 1), "f1": None, "f2": "text"},
        }
        label = {"prediction_id": f"p{i}", "model": model, "label": rng.random() < 0.5}
        if i % 2 == 0:
            stream.append(prediction)  # never labelled
        elif i % 3 == 0:
            stream += [label, prediction]
        else:
            stream += [prediction, label]
    return stream


def observed(join: str, stream: list[dict[str, Any]]) -> list[tuple[str, str, float]]:
    seen: list[tuple[str, str, float]] = []
    monitor = PeerMonitor(len(stream), stop=lambda: None)
    observe = monitor._observe

    def record(detectors: Any, name: str, value: float, event: Any, alerts: Any) -> None:
        seen.append((event["model"], name, value))
        observe(detectors, name, value, event, alerts)

    monitor._observe = record  # type: ignore[method-assign]
    states = {"model-0": DictState(), "model-1": DictState()}  # State is scoped per message key
    for event in stream:
        if join == "state":
            monitor.on_event_in_state(event, states[event["model"]])
        else:
            monitor.on_event(event)
    assert monitor.events == len(stream)
    assert monitor.ended is not None
    # only the predictions that never get a label are left waiting
    if join == "state":
        assert all(key.startswith("p:") for state in states.values() for key in state.values)
    else:
        assert not monitor.waiting
    return seen


def test_the_peer_feeds_the_signals_of_the_shipped_config() -> None:
    seen = observed("memory", events(4))
    first = [name for model, name, _ in seen[:8] if model == "model-0"]
    # invalid rate, the positive-class rate, the numeric feature and every feature's missing rate
    assert first == [
        "invalid_rate",
        "positive_rate",
        "f0",
        "missing_rate:f0",
        "missing_rate:f1",
        "missing_rate:f2",
    ]
    assert ("model-1", "missing_rate:f1", 1.0) in seen  # null is missing, a string is not
    assert ("model-1", "missing_rate:f2", 0.0) in seen


def test_the_join_gives_the_same_errors_in_a_dict_and_in_state_whatever_comes_first() -> None:
    stream = events(300)
    in_memory, in_state = observed("memory", stream), observed("state", stream)
    errors = sorted(entry for entry in in_memory if entry[1] == "error")
    assert len(errors) == 150  # every label found its prediction
    assert errors == sorted(entry for entry in in_state if entry[1] == "error")
    assert sorted(in_memory) == sorted(in_state)


def test_a_shift_raises_an_alert() -> None:
    stream = events(3000)
    for event in stream[len(stream) // 2 :]:
        if "features" in event:
            event["features"]["f0"] += 5.0
    monitor = PeerMonitor(len(stream), stop=lambda: None)
    alerts = [alert for event in stream for alert in monitor.on_event(event)]
    assert {alert["data"]["signal"] for alert in alerts} >= {"f0"}
    assert all(alert["data"]["detector"] == "adwin" for alert in alerts)


def test_runs_and_settings() -> None:
    assert next(iter(RUNS)) == "exactly-once/state"  # the like-for-like peer comes first
    quix = Run("exactly-once", "state", quix_commits=True)
    assert quix.name == "exactly-once/state/commit-5s"
    assert quix.settings(Settings()).commit_interval == 5.0
    assert Settings.from_json(Settings().to_json()) == Settings()
