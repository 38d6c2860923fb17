"""Shared test helpers: records, seeded streams, and the schema validator."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

from stream_monitor.config import Config, build_config
from stream_monitor.core.monitor import Monitor, Record

ROOT = Path(__file__).resolve().parent.parent


def golden_stream() -> list[int]:
    """river's docstring stream: ADWIN fires at index 1023, Page-Hinkley at 1006."""
    rng = random.Random(12345)
    return rng.choices([0, 1], k=1000) + rng.choices(range(4, 8), k=1000)


def prediction(i: int, model: str = "m", **fields: Any) -> dict[str, Any]:
    event: dict[str, Any] = {"prediction_id": f"p{i}", "model": model, "prediction": 1}
    event.update(fields)
    return event


def records(kind: str, events: list[Any], topic: str = "t", partition: int = 0) -> list[Record]:
    return [(kind, event, None, topic, partition, offset) for offset, event in enumerate(events)]


def config(**data: Any) -> Config:
    return build_config(data, environ={})


def monitor(**data: Any) -> Monitor:
    return Monitor(config(**data))


def alert_schema() -> dict[str, Any]:
    return json.loads((ROOT / "schemas" / "alert.schema.json").read_text())  # type: ignore[no-any-return]


def run_cli(
    *args: str, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`stream-monitor ARGS` as a real process, from the repository root."""
    return subprocess.run(
        [sys.executable, "-m", "stream_monitor.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )
