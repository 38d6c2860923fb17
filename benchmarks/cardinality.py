"""Memory and alerts of a replay whose events carry a categorical feature of 50,000 values.

Writes `--events` predictions (three models interleaved, each with a `user` that takes one of
`--values` values, uniformly, an `amount` and, for `shop`, a `country`, all stationary), replays
them with `stream-monitor replay` in a process of its own, and reports that process's peak RSS
(getrusage of the child), its time, and the alerts: none is expected, on `user` or anything else.
The state the feature leaves is measured too: its known categories and the bytes of its key's
signed state record.

    python benchmarks/cardinality.py [--events 150000] [--values 50000]
"""

from __future__ import annotations

import argparse
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

from stream_monitor.config import build_config
from stream_monitor.core.events import PREDICTION, Record
from stream_monitor.core.monitor import Monitor
from stream_monitor.core.state import StateCodec

T0 = 1_767_225_600_000
MODELS = ("shop", "credit", "eta")


def events(count: int, values: int, seed: int = 1) -> list[dict[str, object]]:
    rng = random.Random(seed)
    found: list[dict[str, object]] = []
    for i in range(count):
        model = MODELS[i % len(MODELS)]
        features: dict[str, object] = {
            "amount": round(rng.gauss(100.0, 20.0), 2),
            "user": f"user-{rng.randrange(values)}",
        }
        if model == "shop":
            features["country"] = rng.choices(("fr", "de", "es", "it"), (2, 3, 2.5, 2.5))[0]
        found.append(
            {
                "prediction_id": f"p{i}",
                "model": model,
                "prediction": int(rng.random() < 0.3),
                "score": round(rng.random(), 4),
                "timestamp": T0 + 10 * i,
                "features": features,
            }
        )
    return found


def state_of(rows: list[dict[str, object]]) -> tuple[int, int, dict[str, int]]:
    """Known categories of `user`, bytes of `shop`'s signed state record, overflow counts."""
    monitor = Monitor(build_config({}, environ={}).monitor_settings())
    monitor.process(Record(PREDICTION, row, None, "p", 0, i) for i, row in enumerate(rows))
    categories = monitor.keys["shop"].features["user"].categories
    assert categories is not None
    record = StateCodec(b"x" * 32).encode(b"k:shop", monitor.snapshot().keys["shop"], b"0|0,0")
    return len(categories.names), len(record), dict(monitor.counters.overflow)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=150_000)
    parser.add_argument("--values", type=int, default=50_000)
    args = parser.parse_args()
    rows = events(args.events, args.values)
    distinct = len({row["features"]["user"] for row in rows})  # type: ignore[index]
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "predictions.jsonl"
        path.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in rows))
        started = time.perf_counter()
        replay = subprocess.run(
            [sys.executable, "-m", "stream_monitor.cli", "replay", "--predictions", str(path)],
            capture_output=True,
            check=True,
        )
        seconds = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # kilobytes on Linux
    alerts = [orjson.loads(line)["data"] for line in replay.stdout.splitlines()]
    on_user = [alert for alert in alerts if alert["signal"].endswith("user")]
    known, record_bytes, overflow = state_of(rows)
    print(
        f"{args.events:,} events, `user` with {distinct:,} distinct values "
        f"(of {args.values:,}): replay peak RSS {peak_kib / 1024:,.0f} MiB, {seconds:.1f} s; "
        f"{len(alerts)} alerts ({len(on_user)} on user); `user` keeps {known} known categories, "
        f"shop's state record is {record_bytes:,} bytes; overflow {overflow}"
    )
    print(replay.stderr.decode().strip())


if __name__ == "__main__":
    main()
