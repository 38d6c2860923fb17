"""Simulated producers: a seeded scenario published at a steady pace, labels trailing behind.

Content is deterministic for a given scenario, seed, event count and rate (event timestamps follow
the pace, from a fixed base); only the wall-clock pacing varies between runs. Predictions go to the
predictions topic and labels to the labels topic, both keyed by model as the event contract says.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Producer

from stream_monitor.kafka import KafkaRuntimeError
from stream_monitor.publish import event_producer, publish
from stream_monitor.scenarios import SCENARIOS, Scenario, generate

MODELS = 3  # every scenario interleaves three models


@dataclass
class SimulationPlan:
    scenario: str = "default"
    events: int = 2400  # predictions per model
    rate: float = 120.0  # predictions per second, all models together
    seed: int = 7
    label_delay: float = 5.0  # seconds between a prediction and its label

    def generate(self) -> Scenario:
        step_ms = max(1, round(1000 * MODELS / self.rate))
        return generate(
            self.scenario,
            events=self.events,
            seed=self.seed,
            label_delay_ms=int(self.label_delay * 1000),
            step_ms=step_ms,
        )

    @property
    def duration(self) -> float:
        return self.events * MODELS / self.rate + self.label_delay


@dataclass
class SimulationProgress:
    predictions: int = 0
    labels: int = 0
    per_model: dict[str, int] = field(default_factory=dict)
    done: bool = False


class Simulator:
    """Publishes a plan's events at its rate until done or stopped."""

    def __init__(
        self,
        plan: SimulationPlan,
        bootstrap_servers: str,
        *,
        predictions_topic: str = "predictions",
        labels_topic: str = "labels",
        producer: Producer | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.plan = plan
        self.scenario = plan.generate()
        self.predictions_topic = predictions_topic
        self.labels_topic = labels_topic
        self.producer = producer or event_producer(bootstrap_servers, **{"linger.ms": 5})
        self.stop = stop or threading.Event()
        self.progress = SimulationProgress()

    def run(self) -> SimulationProgress:
        predictions, labels = self.scenario.predictions, self.scenario.labels
        label_times = [self._time_ms(event) for event in labels]
        interval = 1.0 / self.plan.rate
        started = time.monotonic()
        next_label = 0
        base_ms = self._time_ms(predictions[0]) if predictions else 0
        for index, event in enumerate(predictions):
            if self.stop.is_set():
                break
            due = started + index * interval
            delay = due - time.monotonic()
            if delay > 0 and self.stop.wait(delay):
                break
            self._send(self.predictions_topic, [event])
            self.progress.predictions += 1
            model = event["model"]
            self.progress.per_model[model] = self.progress.per_model.get(model, 0) + 1
            # Labels whose event time has come (relative to the predictions' event time).
            now_ms = self._time_ms(event)
            ready = next_label
            while ready < len(labels) and label_times[ready] <= now_ms:
                ready += 1
            if ready > next_label:
                self._send(self.labels_topic, labels[next_label:ready])
                self.progress.labels += ready - next_label
                next_label = ready
            self.producer.poll(0)
        # The remaining labels arrive after the last prediction, at their own pace.
        last_ms = self._time_ms(predictions[-1]) if predictions else base_ms
        tail_started = time.monotonic()
        while next_label < len(labels) and not self.stop.is_set():
            due = tail_started + (label_times[next_label] - last_ms) / 1000
            delay = due - time.monotonic()
            if delay > 0 and self.stop.wait(min(delay, 0.5)):
                break
            if time.monotonic() >= due:
                self._send(self.labels_topic, [labels[next_label]])
                self.progress.labels += 1
                next_label += 1
        remaining = self.producer.flush(30)
        if remaining:
            raise KafkaRuntimeError(f"{remaining} simulated events were not delivered")
        self.progress.done = not self.stop.is_set()
        return self.progress

    def _send(self, topic: str, events: list[dict[str, Any]]) -> None:
        publish(self.producer, topic, events, flush=False)

    @staticmethod
    def _time_ms(event: dict[str, Any]) -> int:
        from stream_monitor.core.events import parse_timestamp

        return parse_timestamp(event["timestamp"])


def scenario_list() -> list[tuple[str, str]]:
    return sorted(SCENARIOS.items())
