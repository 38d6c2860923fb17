"""The processing layer alone: decode, merge, detect and checkpoint, with no broker.

What `stream-monitor run` does per event between `consume()` and `produce()`: one partition
processor over the run_throughput workload (predictions with 4 numeric features, labels for 80%
of them, arriving a batch behind), a changelog checkpoint every 25,000 events (about every 2 s
at the service's rate). Measured with Python's garbage collector at its defaults, as `run` sets it
(stream_monitor/collector.py), and switched off (the bound), best of `--runs`.

    python benchmarks/pipeline_throughput.py [--predictions 100000]
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable

import orjson

try:  # imported as part of the package, or run as a script from benchmarks/
    from benchmarks.run_throughput import shipped_detection, workload
except ImportError:
    from run_throughput import shipped_detection, workload  # type: ignore[no-redef]

from stream_monitor.collector import THRESHOLDS
from stream_monitor.config import build_config
from stream_monitor.core.events import LABEL, PREDICTION, Record
from stream_monitor.core.monitor import Monitor
from stream_monitor.core.state import StateCodec
from stream_monitor.processing.changelog import PartitionWriter
from stream_monitor.processing.partition import PartitionProcessor

BATCH = 2_500
CHECKPOINT_EVERY = 25_000


def batches(predictions: int) -> list[tuple[list[Record], list[Record]]]:
    """Per consumer batch: predictions, and the labels of the batch before (a label follows its
    prediction; the merge waits for neither stream since both are marked idle at the end)."""
    events, labels = workload(predictions)
    by_prediction = {label["prediction_id"]: label for label in labels}
    out = []
    for start in range(0, len(events), BATCH):
        chunk = events[start : start + BATCH]
        out.append(
            (
                [
                    Record(PREDICTION, orjson.dumps(e), None, "p", 0, start + i)
                    for i, e in enumerate(chunk)
                ],
                [
                    Record(LABEL, orjson.dumps(by_prediction[e["prediction_id"]]), None, "l", 0, 0)
                    for e in chunk
                    if e["prediction_id"] in by_prediction
                ],
            )
        )
    label_offset = 0
    for index, (predicted, labelled) in enumerate(out):
        out[index] = (
            predicted,
            [r._replace(offset=label_offset + i) for i, r in enumerate(labelled)],
        )
        label_offset += len(labelled)
    return out


def measure(predictions: int, runs: int) -> dict[str, tuple[float, float]]:
    """events/s and the checkpoints' share of the time, per collector setting."""
    work = batches(predictions)
    total = sum(len(p) + len(lab) for p, lab in work)
    settings = build_config(shipped_detection(), environ={}).monitor_settings()
    codec = StateCodec(b"benchmark-signing-key")

    def once() -> tuple[float, float]:
        processor = PartitionProcessor(0, Monitor(settings), PartitionWriter(codec, 0, 900_000))
        started = time.perf_counter()
        checkpoints = 0.0
        since = 0
        pending: list[Record] = []
        for predicted, labelled in work:
            processor.add(0, predicted)
            processor.add(1, pending)  # the previous batch's labels
            pending = labelled
            processor.process((True, True))
            since += len(predicted)
            if since >= CHECKPOINT_EVERY:
                tick = time.perf_counter()
                for _ in processor.checkpoint():  # made as they are read
                    pass
                checkpoints += time.perf_counter() - tick
                since = 0
        processor.add(1, pending)
        processor.process((True, True))
        for _ in processor.checkpoint():
            pass
        elapsed = time.perf_counter() - started
        assert processor.applied == total
        return total / elapsed, checkpoints / elapsed

    modes: dict[str, Callable[[], None]] = {
        "collector defaults (700, 10, 10)": lambda: gc.set_threshold(700, 10, 10),
        f"as `run` sets it {THRESHOLDS}": lambda: gc.set_threshold(*THRESHOLDS),
        "collector off (the bound)": gc.disable,
    }
    results = {}
    for name, setup in modes.items():
        gc.enable()
        gc.collect()
        setup()
        results[name] = max(once() for _ in range(runs))
    gc.enable()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--predictions", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    results = measure(args.predictions, args.runs)
    print(
        f"{args.predictions} predictions + labels, one partition, shipped config, best of {args.runs}"
    )
    print(f"{'garbage collector':40} {'events/s':>10} {'checkpoints':>12}")
    for name, (rate, share) in results.items():
        print(f"{name:40} {rate:10,.0f} {share:12.1%}")


if __name__ == "__main__":
    main()
