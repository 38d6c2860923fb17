"""Shared test helpers: records, seeded streams, and the schema validator."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from stream_monitor.config import Config, build_config
from stream_monitor.core.events import Record
from stream_monitor.core.monitor import Monitor

ROOT = Path(__file__).resolve().parent.parent

# Set by `make test` and `make test-faults` once tools/install-test-tools.sh has run: a missing
# receiver or tool then fails its tests, so CI proves them against the real programs.
REQUIRE_TOOLS = "STREAM_MONITOR_REQUIRE_TOOLS"


def required_tool(*names: str, hint: str) -> str:
    """The path of the first of `names` on PATH. When none is installed the test skips, saying
    so and how to get it (`hint`), or fails when STREAM_MONITOR_REQUIRE_TOOLS=1."""
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    message = f"{' / '.join(names)} is not installed ({hint})"
    if os.environ.get(REQUIRE_TOOLS) == "1":
        pytest.fail(f"{message}; {REQUIRE_TOOLS}=1 requires it", pytrace=False)
    pytest.skip(message)


def golden_stream() -> list[int]:
    """river's docstring stream: ADWIN fires at index 1023, Page-Hinkley at 1006."""
    rng = random.Random(12345)
    return rng.choices([0, 1], k=1000) + rng.choices(range(4, 8), k=1000)


def prediction(i: int, model: str = "m", **fields: Any) -> dict[str, Any]:
    event: dict[str, Any] = {"prediction_id": f"p{i}", "model": model, "prediction": 1}
    event.update(fields)
    return event


# Event times in the valid range (2000..2100): 2026-01-01T00:00:00Z, plus an index.
T0 = 1_767_225_600_000


def records(kind: str, events: list[Any], topic: str = "t", partition: int = 0) -> list[Record]:
    return [
        Record(kind, event, None, topic, partition, offset) for offset, event in enumerate(events)
    ]


def config(**data: Any) -> Config:
    return build_config(data, environ={})


def monitor(**data: Any) -> Monitor:
    return Monitor(config(**data).monitor_settings())


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


STATE_KEY = b"0123456789abcdef-test-key"


def through_changelog(monitor: Monitor, partition: int = 0) -> Monitor:
    """A new Monitor restored from `monitor`'s whole state, sent through signed changelog
    records and back (the bytes path a restart takes), verifying every record."""
    from stream_monitor.core.state import StateCodec
    from stream_monitor.processing.changelog import (
        InvalidRecords,
        PartitionWriter,
        RecordCheck,
        encode_tag,
        restore,
    )

    codec = StateCodec(STATE_KEY)
    writer = PartitionWriter(codec, partition)
    join = monitor.join
    live = join.dump_entries((*join.predictions, *join.labels))
    check = RecordCheck(codec, InvalidRecords("stop"))
    latest: dict[bytes, tuple[bytes | None, bytes]] = {}
    for key, value, headers in writer.records(
        monitor.snapshot(), {}, (0, 0), lambda: live, len(live)
    ):
        assert check.tag_of(partition, key, value, headers, "test") == (0, 0)
        latest[key] = (value, encode_tag((0, 0)))
    restored = Monitor(monitor.settings, source=monitor.source)
    for changes in restore(codec, partition, latest).changes:
        restored.restore(changes)
    return restored
