"""The asyncio variant reports a failed delivery once: by the await of that event, and to
`on_delivery_error` on the event loop; close() does not raise it again."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from confluent_kafka import KafkaError

from stream_monitor.client import AsyncMonitorProducer, DeliveryError, UndeliveredEvent
from tests.client.fakes import Metadata


class Message:
    def __init__(self, topic: str, value: bytes, key: bytes) -> None:
        self._topic, self._value, self._key = topic, value, key

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return 0

    def key(self) -> bytes:
        return self._key

    def value(self) -> bytes:
        return self._value


class TimingOut:
    """A caller's producer whose every delivery times out (served by poll, on any thread)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.queued: list[tuple[Any, Message]] = []

    def list_topics(self, topic: str, timeout: float) -> Metadata:
        return Metadata(1)

    def produce(self, topic: str, value: bytes, key: bytes, **extra: Any) -> None:
        with self.lock:
            self.queued.append((extra["on_delivery"], Message(topic, value, key)))

    def poll(self, timeout: float = 0.0) -> int:
        with self.lock:
            served, self.queued = self.queued, []
        for callback, message in served:
            callback(KafkaError(KafkaError._MSG_TIMED_OUT), message)
        if not served:
            time.sleep(min(timeout, 0.01))
        return len(served)

    def flush(self, timeout: float = 0.0) -> int:
        self.poll()
        return 0

    def __len__(self) -> int:
        return len(self.queued)


def test_a_failed_delivery_is_reported_once_and_its_callback_runs_on_the_loop() -> None:
    seen: list[tuple[UndeliveredEvent, bool]] = []

    async def main() -> str:
        loop_thread = threading.current_thread()

        def on_error(failure: UndeliveredEvent) -> None:
            seen.append((failure, threading.current_thread() is loop_thread))

        async with AsyncMonitorProducer(producer=TimingOut(), on_delivery_error=on_error) as sdk:
            with pytest.raises(DeliveryError) as caught:
                await sdk.log_prediction(model="credit", prediction=1, prediction_id="p-1")
            assert [f.prediction_id for f in caught.value.failures] == ["p-1"]
        return "closed without raising it again"

    assert asyncio.run(main()) == "closed without raising it again"
    assert [(f.prediction_id, f.code, on_loop) for f, on_loop in seen] == [
        ("p-1", "_MSG_TIMED_OUT", True)
    ]
