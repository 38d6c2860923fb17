"""Memory of the core alone: many monitor keys and pending joins, as the suite's memory phase.

Feeds `Monitor.process` the memory phase's events (benchmarks/suite.py: model-{i % keys}, four
gaussian features, a 0/1 prediction, event time 1 ms apart, no labels, so every prediction waits
in the join) with the shipped config, taking a checkpoint's changes every 200k events, then
reports the process's RSS (VmRSS, after a full collection) against its RSS before the monitor
was built. No broker: what the service adds on top (librdkafka's buffers, the changelog writer)
is the memory phase's business. `--per-key` reports tracemalloc's allocation sites per key
instead (slow; use few keys).

    python benchmarks/core_memory.py [--events 1000000] [--keys 10000] [--no-join]
    python benchmarks/core_memory.py --per-key --keys 200 --events 80000
"""

from __future__ import annotations

import argparse
import gc
import random
import time
import tracemalloc
from typing import Any

import orjson

from stream_monitor.collector import tune_for_streaming
from stream_monitor.config import build_config
from stream_monitor.core.events import Record
from stream_monitor.core.monitor import Monitor

BASE_TIME_MS = 1_767_225_600_000
BATCH = 10_000
CHECKPOINT_EVERY = 200_000


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def batches(events: int, keys: int) -> Any:
    """The memory phase's events, pre-encoded, a batch at a time."""
    rng = random.Random(7)
    pool = [
        orjson.dumps({f"f{k}": rng.gauss(0.0, 1.0) for k in range(4)}).decode() for _ in range(997)
    ]
    for start in range(0, events, BATCH):
        yield [
            Record(
                "prediction",
                (
                    f'{{"prediction_id":"p{i}","model":"model-{i % keys}","prediction":{i & 1},'
                    f'"timestamp":{BASE_TIME_MS + i},"features":{pool[i % len(pool)]}}}'
                ).encode(),
                None,
                "predictions",
                0,
                i,
            )
            for i in range(start, min(events, start + BATCH))
        ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--no-join", action="store_true", help="no performance signal: no join")
    parser.add_argument("--per-key", action="store_true", help="tracemalloc sites per key")
    args = parser.parse_args()
    config: dict[str, Any] = {
        "limits": {"max_models": max(1000, args.keys), "max_keys": max(100_000, args.keys)},
        "join": {"ttl": args.events / 1000, "max_pending_predictions": 2 * args.events},
    }
    if args.no_join:
        config["signals"] = {"performance": []}
    settings = build_config(config, environ={}).monitor_settings()
    tune_for_streaming()
    before = rss_mib()
    if args.per_key:
        tracemalloc.start(1)
    start_snapshot = tracemalloc.take_snapshot() if args.per_key else None
    monitor = Monitor(settings)
    started = time.perf_counter()
    done = 0
    for batch in batches(args.events, args.keys):
        monitor.process(batch)
        done += len(batch)
        if done % CHECKPOINT_EVERY == 0:
            monitor.take_changes()
    seconds = time.perf_counter() - started
    gc.collect()
    print(
        f"{done:,} events over {len(monitor.keys):,} keys in {seconds:.1f} s; "
        f"{len(monitor.join.predictions):,} pending joins; "
        f"RSS {rss_mib():,.0f} MiB (before the monitor: {before:,.0f} MiB)"
    )
    if start_snapshot is not None:
        stats = tracemalloc.take_snapshot().compare_to(start_snapshot, "lineno")
        total = sum(stat.size_diff for stat in stats)
        keys = max(1, len(monitor.keys))
        print(f"allocated per key: {total / keys / 1024:.1f} KiB (pending joins included)")
        for stat in stats[:20]:
            print(f"{stat.size_diff / keys:8.0f} B/key  {stat.traceback}")


if __name__ == "__main__":
    main()
