"""Scaling: what one event costs as monitor keys and features grow, and 1 vs 2 `run` instances.

(a) The processing layer alone, as `stream-monitor run` runs it between consume and produce
(benchmarks/pipeline_throughput.py: decode, merge, `Monitor`, changelog checkpoints; no broker),
with the shipped detection config and the garbage collector set as `run` sets it. Predictions
carry a score and N gaussian numeric features and are spread round-robin over K monitor keys
(`model-{i % K}`): K = 1, 100, 10,000 with one feature, and N = 1, 10, 100 with one key. Every
key gets at least 220 events, so its continuous detectors (feature mean and spread, score,
estimated error: a 200-value warm-up) are past their warm-up; the time of the first 200 events
per key is reported apart. The 0/1 rates that stay 0 here (missing, invalid) warm up for 2,000
values, which only the 1-key cells reach (the last column says how many are still warming up).
State is checkpointed as `run` does (`state.checkpoint_interval` or `state.checkpoint_max_events`,
whichever comes first). Per-event cost is reported next to `orjson.loads` of the same events and
to the 1-key, 1-feature case, both measured in the same run; cells that take under 10 s are run
up to 3 times, best kept. A control: the 10,000 keys again with each key's events one after the
other ("blocked"), the same work with one key's state at a time in the CPU's caches.

(b) `stream-monitor run` as processes (not threads: the GIL), 1 and then 2 instances in one
consumer group (different instance ids) on topics of 4 partitions, fresh topics and group each
time, exactly once by default, with the run_throughput workload (4 features, labels for 80%):
over its 10 models, and again spread over 100 (events are keyed by model, and 10 models do not
split evenly over 4 partitions). The events are produced in one transaction that commits once
every instance holds its partitions, so the instances start together and the producer is idle
while they run. Rate: from the first consumed event to the last (metrics polled every 50 ms),
next to L = raw confluent-kafka consume + `orjson.loads` of the same topics
(run_throughput.raw_consume), with the CPU time of each instance, the broker, this script and
everything else on the machine (/proc) over that span.

    python benchmarks/scaling.py [--broker kafka|tansu] [--skip-instances] [--skip-cells]
    python benchmarks/scaling.py --skip-cells --models 10 --rounds 3 --guarantee at_least_once
    python benchmarks/scaling.py --skip-instances --cells 10000x1 --profile   # py-spy per cell
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import logging
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

try:  # imported as part of the package, or run as a script from benchmarks/
    from benchmarks.pipeline_throughput import BATCH
    from benchmarks.profile_service import shares
    from benchmarks.run_throughput import raw_consume, shipped_detection, workload
    from benchmarks.suite import (
        BASE_TIME_MS,
        FULL,
        SIGNING_KEY,
        ServiceProcess,
        create_topics,
        service_config,
        wait_until,
    )
except ImportError:
    from pipeline_throughput import BATCH  # type: ignore[no-redef]
    from profile_service import shares  # type: ignore[no-redef]
    from run_throughput import raw_consume, shipped_detection, workload  # type: ignore[no-redef]
    from suite import (  # type: ignore[no-redef]
        BASE_TIME_MS,
        FULL,
        SIGNING_KEY,
        ServiceProcess,
        create_topics,
        service_config,
        wait_until,
    )

from stream_monitor.brokers import LocalBroker, chosen_kind, local_broker
from stream_monitor.collector import tune_for_streaming
from stream_monitor.config import build_config
from stream_monitor.core.calibration import DEFAULT_WARMUP
from stream_monitor.core.events import PREDICTION, Record
from stream_monitor.core.monitor import Monitor
from stream_monitor.core.state import StateCodec
from stream_monitor.processing.changelog import KEY_PREFIX, PartitionWriter
from stream_monitor.processing.partition import PartitionProcessor
from stream_monitor.publish import event_producer, publish

# --- (a) per-event cost ----------------------------------------------------------------------------
EVENTS_PER_KEY = 220  # past the continuous detectors' warm-up (DEFAULT_WARMUP values)
MIN_EVENTS = 50_000
POOL = 4_999  # distinct pre-encoded bodies, a prime: every key sees them all, in varying order
# Every cell has the same pending join: predictions never get a label here, and event time
# advances 1 ms per event, so a 1 s TTL holds ~1,000 of them (each prediction expires one).
JOIN_TTL = "1s"
KEY_RECORD = KEY_PREFIX.encode()
REPEATS, REPEAT_SECONDS = 3, 10.0  # best of up to 3 runs, while a cell has taken under 10 s


@dataclasses.dataclass(frozen=True)
class Cell:
    keys: int
    features: int
    # Each key's events one after the other instead of round-robin: the same work, with the
    # state of one key at a time in the CPU's caches (a control for the round-robin cells).
    blocked: bool = False

    @property
    def events(self) -> int:
        return max(MIN_EVENTS, EVENTS_PER_KEY * self.keys)

    @property
    def name(self) -> str:
        return f"{self.keys:,} keys x {self.features} features{', blocked' * self.blocked}"

    def key(self, index: int) -> int:
        return index // (self.events // self.keys) if self.blocked else index % self.keys


# keys x numeric features; the blocked one is the round-robin 10,000 keys' control
CELLS = (
    Cell(1, 1),
    Cell(100, 1),
    Cell(10_000, 1),
    Cell(10_000, 1, True),
    Cell(1, 10),
    Cell(1, 100),
)


@dataclasses.dataclass
class CellResult:
    cell: Cell
    steady_us: float  # per event, after every key's warm-up, checkpoints included
    warmup_us: float  # per event, the first DEFAULT_WARMUP events of each key
    processing_us: float  # per event, every event, checkpoints left out
    checkpoint_us: float  # checkpoints' time over every event
    loads_us: float  # orjson.loads of the same events, per event
    checkpoint_share: float  # of the steady time
    checkpoints: int
    state_bytes_per_key: float  # the latest changelog record of each key (key + value)
    changelog_bytes_per_event: float  # every record written, over every event
    updates_per_event: float  # detector updates after the warm-up
    learning_share: float  # of the active detectors, still in warm-up at the end
    rss_growth: int  # bytes, from before the cell's processor was built to its end


def bodies(features: int, seed: int = 7) -> list[str]:
    """Pre-encoded prediction, score and features: generating millions of events must not
    dominate the run (nor be timed)."""
    rng = random.Random(seed)
    out = []
    for _ in range(POOL):
        score = rng.random()
        values = {f"f{k}": rng.gauss(0.0, 1.0) for k in range(features)}
        out.append(
            f'"prediction":{"true" if score >= 0.5 else "false"},"score":{score!r},'
            f'"features":{orjson.dumps(values).decode()}'
        )
    return out


def encoded(pool: list[str], cell: Cell, start: int, stop: int) -> list[bytes]:
    key = cell.key
    return [
        f'{{"prediction_id":"p{i}","model":"model-{key(i)}","timestamp":{BASE_TIME_MS + i},'
        f"{pool[i % POOL]}}}".encode()
        for i in range(start, stop)
    ]


def rss() -> int:
    found = re.search(r"^VmRSS:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    return int(found.group(1)) * 1024 if found else 0


def cell_detection(keys: int) -> dict[str, Any]:
    """The shipped detection settings, with room for every key (max_models is per partition)
    and the short join TTL above."""
    detection = shipped_detection()
    limits = detection.get("limits", {})
    detection["limits"] = {**limits, "max_models": max(keys, limits.get("max_models", 0))}
    detection["join"] = {**detection.get("join", {}), "ttl": JOIN_TTL}
    return detection


def loads_cost(raw: list[bytes], runs: int = 3) -> float:
    """Seconds per event of orjson.loads alone, best of `runs`."""
    loads, best = orjson.loads, float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        for value in raw:
            loads(value)
        best = min(best, time.perf_counter() - started)
    return best / len(raw)


def spans(events: int, warm_end: int) -> Iterator[tuple[int, int]]:
    """Batches of BATCH events, one of them cut where the warm-up ends."""
    start = 0
    while start < events:
        stop = min(start + BATCH, events)
        if start < warm_end < stop:
            stop = warm_end
        yield start, stop
        start = stop


def learning_share(monitor: Monitor) -> float:
    """Of the detectors that watch their series, the share still in warm-up."""
    active = learning = 0
    for state in monitor.keys.values():
        for signal_ in state.signals():
            for track in signal_.tracks:
                if not track.dormant:
                    active += 1
                    learning += track.learning
    return learning / max(active, 1)


def measure_cell(cell: Cell) -> CellResult:
    """One cell; a blocked cell's time is all counted as warm-up (its keys warm up in turn)."""
    gc.collect()
    config = build_config(cell_detection(cell.keys), environ={})
    interval = (config.state.checkpoint_interval or 2_000) / 1000
    max_events = config.state.checkpoint_max_events
    processor = PartitionProcessor(
        0, Monitor(config.monitor_settings()), PartitionWriter(StateCodec(SIGNING_KEY.encode()), 0)
    )
    pool = bodies(cell.features)
    events = cell.events
    warm_end = events if cell.blocked else min(DEFAULT_WARMUP * cell.keys, events)
    loads = loads_cost(encoded(pool, cell, 0, min(events, 100_000)))
    gc.collect()
    rss_before = rss()
    seconds = [0.0, 0.0]  # warm-up, steady
    checkpoint_seconds = [0.0, 0.0]
    checkpoints = since = 0
    clock = last_checkpoint = 0.0  # processing time only: generating events is not timed
    latest: dict[bytes, int] = {}  # changelog key -> size of its latest record
    written = 0
    updates_at_warm_end = 0
    for start, stop in spans(events, warm_end):
        steady = start >= warm_end
        if start == warm_end:
            updates_at_warm_end = processor.monitor.counters.detector_updates
        batch = [
            Record(PREDICTION, value, None, "predictions", 0, start + i)
            for i, value in enumerate(encoded(pool, cell, start, stop))
        ]
        started = time.perf_counter()
        processor.add(0, batch)
        processor.process((True, True))
        since += stop - start
        tick = time.perf_counter()
        due = since >= max_events or clock + tick - started - last_checkpoint >= interval
        if due or stop == events:
            for key, value, headers in processor.checkpoint():
                size = len(key) + len(value or b"") + sum(len(v) for _, v in headers)
                written += size
                if value is None:
                    latest.pop(key, None)
                else:
                    latest[key] = size
            checkpoints += 1
            since = 0
            checkpoint_seconds[steady] += time.perf_counter() - tick
        elapsed = time.perf_counter() - started
        clock += elapsed
        seconds[steady] += elapsed
        if since == 0:
            last_checkpoint = clock
    assert processor.applied == events, (processor.applied, events)
    steady_events = events - warm_end
    state_bytes = sum(size for key, size in latest.items() if key.startswith(KEY_RECORD))
    return CellResult(
        cell=cell,
        steady_us=seconds[1] / max(steady_events, 1) * 1e6,
        warmup_us=seconds[0] / max(warm_end, 1) * 1e6,
        processing_us=(sum(seconds) - sum(checkpoint_seconds)) / events * 1e6,
        checkpoint_us=sum(checkpoint_seconds) / events * 1e6,
        loads_us=loads * 1e6,
        checkpoint_share=checkpoint_seconds[1] / max(seconds[1], 1e-9),
        checkpoints=checkpoints,
        state_bytes_per_key=state_bytes / cell.keys,
        changelog_bytes_per_event=written / events,
        updates_per_event=(processor.monitor.counters.detector_updates - updates_at_warm_end)
        / max(steady_events, 1),
        learning_share=learning_share(processor.monitor),
        rss_growth=rss() - rss_before,
    )


def best_of(cell: Cell, runs: int) -> CellResult:
    """The least disturbed of up to `runs` runs (these machines are shared), repeated only
    while the cell has taken under REPEAT_SECONDS."""
    started = time.monotonic()
    best = measure_cell(cell)
    for _ in range(runs - 1):
        if time.monotonic() - started > REPEAT_SECONDS:
            break
        gc.collect()
        result = measure_cell(cell)
        if result.processing_us + result.checkpoint_us < best.processing_us + best.checkpoint_us:
            best = result
    return best


class Profiler:
    """py-spy sampling this process (`--profile`): the frames under `measure_cell`'s timed
    calls, by share of their samples."""

    def __init__(self, folder: Path) -> None:
        self.spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        self.folder = folder
        self.recorder: subprocess.Popen[bytes] | None = None
        self.raw = folder / "profile.txt"

    def start(self) -> None:
        options = ["--format", "raw", "--rate", "200", "--nonblocking", "--output", str(self.raw)]
        self.recorder = subprocess.Popen(
            [self.spy, "record", "--pid", str(os.getpid()), *options],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.5)  # py-spy attaches

    def stop(self, top: int = 24) -> str:
        assert self.recorder is not None
        self.recorder.send_signal(signal.SIGINT)
        self.recorder.wait(60)
        timed = [
            line
            for line in self.raw.read_text().splitlines()
            if "PartitionProcessor." in line  # add, process, checkpoint: the timed work
        ]
        filtered = self.folder / "timed.txt"
        filtered.write_text("\n".join(timed))
        samples, inclusive, itself = shares(filtered)
        ours = [(f, c) for f, c in inclusive.most_common() if "scaling.py" not in f][:top]
        lines = [f"  {samples} samples in the timed work; inclusive, self, frame"]
        lines += [f"  {c / samples:6.1%} {itself[f] / samples:6.1%}  {f}" for f, c in ours]
        lines.append("  most self time:")
        lines += [f"  {c / samples:6.1%}  {f}" for f, c in itself.most_common(top // 2)]
        return "\n".join(lines)


def cells_table(results: Sequence[CellResult]) -> str:
    base = next((r for r in results if (r.cell.keys, r.cell.features) == (1, 1)), None)
    lines = [
        "| keys | features | events (per key) | µs/event after warm-up | x orjson.loads"
        " | x 1 key, 1 feature | µs/event in warm-up | µs/event, all events: processing"
        " + checkpoints | checkpoints' share after warm-up (count) | state B/key"
        " | changelog B/event | RSS growth MiB | detector updates/event after warm-up"
        " | detectors in warm-up at end |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        cell, steady = r.cell, not r.cell.blocked
        relative = f"{r.steady_us / base.steady_us:.2f}" if base and steady else "-"
        lines.append(
            f"| {cell.keys:,}{' blocked' if cell.blocked else ''} | {cell.features} "
            f"| {cell.events:,} ({cell.events // cell.keys:,}) "
            f"| {f'{r.steady_us:.1f}' if steady else '-'} "
            f"| {f'{r.steady_us / r.loads_us:.1f}' if steady else '-'} | {relative} "
            f"| {r.warmup_us:.1f} | {r.processing_us:.1f} + {r.checkpoint_us:.1f} "
            f"| {f'{r.checkpoint_share:.0%}' if steady else '-'} ({r.checkpoints}) "
            f"| {r.state_bytes_per_key:,.0f} | {r.changelog_bytes_per_event:,.0f} "
            f"| {r.rss_growth / 2**20:,.0f} "
            f"| {f'{r.updates_per_event:.1f}' if steady else '-'} | {r.learning_share:.0%} |"
        )
    return "\n".join(lines)


# --- (b) 1 vs 2 instances ---------------------------------------------------------------------------
POLL_SECONDS = 0.05
TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process and its threads so far; 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def machine_busy() -> float:
    """CPU seconds all cores spent busy so far (everything but idle and iowait)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / TICKS


def broker_pids(broker: LocalBroker) -> list[int]:
    """The broker's processes: an Apache Kafka cluster's nodes, or the embedded broker."""
    processes = [getattr(node, "process", None) for node in getattr(broker, "nodes", [])]
    processes.append(getattr(broker, "process", None))
    return [process.pid for process in processes if process is not None]


def spread_over(
    models: int, events: list[dict[str, Any]], labels: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The workload with prediction i (and its label) under `model-{i % models}`."""

    def moved(event: dict[str, Any]) -> dict[str, Any]:
        return {**event, "model": f"model-{int(event['prediction_id'][1:]) % models}"}

    return [moved(e) for e in events], [moved(label) for label in labels]


def instances_run(
    bootstrap: str,
    count: int,
    events: list[dict[str, Any]],
    labels: list[dict[str, Any]],
    folder: Path,
    broker: list[int],
    guarantee: str,
) -> dict[str, Any]:
    """`count` service processes in one group on fresh topics; the events become visible (their
    transaction commits) once every instance holds its share of the partitions."""
    config = service_config(
        bootstrap, f"scaling{count}", FULL, kafka={"processing_guarantee": guarantee}
    )
    create_topics(config)
    kafka, topics = config["kafka"], config["kafka"]["topics"]
    partitions = build_config(config, environ={}).kafka.partitions
    producer = event_producer(
        bootstrap,
        **{
            "transactional.id": f"scaling-{uuid.uuid4().hex[:6]}",
            "transaction.timeout.ms": 300_000,
        },
    )
    producer.init_transactions(30)
    producer.begin_transaction()
    publish(producer, topics["predictions"], events)
    publish(producer, topics["labels"], labels)
    total = len(events) + len(labels)
    services = [
        ServiceProcess({**config, "kafka": {**kafka, "instance_id": f"scaling-{n}"}}, folder)
        for n in range(count)
    ]
    consumed = "stream_monitor_events_consumed_total"
    try:

        def balanced() -> bool:
            held = [s.metric("stream_monitor_assigned_partitions") for s in services]
            return all(h == partitions // count for h in held) and all(s.ready() for s in services)

        wait_until(balanced, 120, "every instance to hold its partitions", 0.25)
        time.sleep(0.5)
        wait_until(balanced, 30, "a stable assignment", 0.25)  # not mid-rebalance
        producer.commit_transaction(60)
        while not sum(first := [s.metric(consumed) for s in services]):
            time.sleep(POLL_SECONDS)
        started = time.perf_counter()
        pids = [s.process.pid for s in services]
        cpu = [process_cpu(pid) for pid in [*pids, *broker, os.getpid()]]
        busy = machine_busy()
        history: list[tuple[float, list[float]]] = [(0.0, first)]
        deadline = time.monotonic() + 600
        while sum(done := history[-1][1]) < total:
            if time.monotonic() > deadline or any(s.process.poll() is not None for s in services):
                raise RuntimeError(f"{count} instances consumed {sum(done)} of {total}")
            time.sleep(POLL_SECONDS)
            history.append((time.perf_counter() - started, [s.metric(consumed) for s in services]))
        elapsed = history[-1][0]
        cpu = [
            process_cpu(pid) - before
            for pid, before in zip([*pids, *broker, os.getpid()], cpu, strict=True)
        ]
        busy = machine_busy() - busy
    finally:
        for service in services:
            service.stop()
    # Each instance's own rate: from its first poll with events to the one with all of its
    # events (the instance with fewer events finishes first).
    own = []
    for n in range(count):
        begun = next(((at, c[n]) for at, c in history if c[n] > 0), (0.0, 0.0))
        ended = next(at for at, c in history if c[n] >= done[n])
        own.append((done[n] - begun[1]) / max(ended - begun[0], POLL_SECONDS))
    services_cpu = cpu[:count]
    broker_cpu = sum(cpu[count:-1])
    return {
        "instances": count,
        "rate": (total - sum(first)) / elapsed,
        "seconds": elapsed,
        "split": [d / total for d in done],
        "own_rates": own,
        "cores_services": [c / elapsed for c in services_cpu],
        "cores_broker": broker_cpu / elapsed,
        "cores_bench": cpu[-1] / elapsed,
        "cores_others": (busy - sum(cpu)) / elapsed,
        "topics": [topics["predictions"], topics["labels"]],
        "partitions": partitions,
        "total": total,
    }


def measure_instances(
    kind: str, predictions: int, models: Sequence[int], rounds: int, guarantee: str
) -> tuple[float, list[dict[str, Any]]]:
    """L, then for each number of models, 1 and 2 instances in turn, `rounds` times."""
    workload_events, workload_labels = workload(predictions)
    runs: list[dict[str, Any]] = []
    limit = 0.0
    with tempfile.TemporaryDirectory() as folder, local_broker(kind) as broker:
        pids = broker_pids(broker)
        for spread in models:
            events, labels = spread_over(spread, workload_events, workload_labels)
            for round_ in range(1, rounds + 1):
                for count in (1, 2):
                    run = instances_run(
                        broker.bootstrap_servers,
                        count,
                        events,
                        labels,
                        Path(folder),
                        pids,
                        guarantee,
                    )
                    runs.append({**run, "models": spread, "round": round_})
                    if not limit:  # on the first run's topics, now committed; best of two
                        topics, partitions, total = run["topics"], run["partitions"], run["total"]
                        limit = max(
                            raw_consume(broker.bootstrap_servers, topics, partitions, total)
                            for _ in range(2)
                        )
    return limit, runs


def instances_table(limit: float, runs: Sequence[dict[str, Any]], guarantee: str) -> str:
    lines = [
        "| run | events/s | x L | x 1 instance | events per instance | each instance's events/s"
        " | CPU cores: instances / broker / this script / others |",
        "|---|---:|---:|---:|---|---|---|",
        f"| L: raw consume(10000) + orjson.loads, 1 process | {limit:,.0f} | 1.00 | | | | |",
    ]
    single = 0.0
    for run in runs:
        if run["instances"] == 1:
            single = run["rate"]
        name = (
            f"`run` {guarantee}, {run['models']} models, {run['instances']} instance"
            f"{'s' if run['instances'] > 1 else ''}, round {run['round']}"
        )
        split = " / ".join(f"{share:.0%}" for share in run["split"])
        own = " / ".join(f"{rate:,.0f}" for rate in run["own_rates"])
        cores = " + ".join(f"{c:.2f}" for c in run["cores_services"])
        lines.append(
            f"| {name} | {run['rate']:,.0f} | {run['rate'] / limit:.2f} "
            f"| {run['rate'] / single:.2f} | {split} | {own} "
            f"| {cores} / {run['cores_broker']:.2f} / {run['cores_bench']:.2f}"
            f" / {run['cores_others']:.2f} |"
        )
    return "\n".join(lines)


def parse_cells(text: str) -> list[Cell]:
    """ "10000x1,1x100,10000x1b" -> cells (keys x features; b: blocked)."""
    cells = []
    for item in text.split(","):
        keys, _, features = item.strip().partition("x")
        blocked = features.endswith("b")
        cells.append(Cell(int(keys), int(features.rstrip("b")), blocked))
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", help="kafka (Apache Kafka, default) or tansu")
    parser.add_argument("--skip-instances", action="store_true", help="only (a), no broker")
    parser.add_argument("--skip-cells", action="store_true", help="only (b)")
    default_cells = ",".join(f"{c.keys}x{c.features}{'b' if c.blocked else ''}" for c in CELLS)
    parser.add_argument("--cells", default=default_cells, help="keys x features, comma-separated")
    parser.add_argument("--profile", action="store_true", help="py-spy each cell (slows it)")
    parser.add_argument("--predictions", type=int, default=150_000, help="(b)'s workload")
    parser.add_argument("--rounds", type=int, default=2, help="(b): 1 then 2 instances, N times")
    parser.add_argument(
        "--models", default="10,100", help="(b): the workload over this many models, in turn"
    )
    parser.add_argument("--guarantee", default="exactly_once", help="(b): or at_least_once")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("stream_monitor.librdkafka").setLevel(logging.CRITICAL)
    load = os.getloadavg()
    print(
        f"{datetime.date.today()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"load average at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    if not args.skip_cells:
        tune_for_streaming()  # as `run` sets it
        results = []
        with tempfile.TemporaryDirectory() as folder:
            for cell in parse_cells(args.cells):
                profiler = Profiler(Path(folder)) if args.profile else None
                if profiler:
                    profiler.start()
                started = time.monotonic()
                results.append(best_of(cell, 1 if profiler else REPEATS))
                print(
                    f"cell {cell.name}: {time.monotonic() - started:.0f} s",
                    file=sys.stderr,
                )
                if profiler:
                    print(f"profile, {cell.name}:")
                    print(profiler.stop())
                gc.collect()
        state = build_config({}, environ={}).state
        print(
            "\n(a) processing layer, one partition, shipped detection config, a checkpoint every"
            f" {(state.checkpoint_interval or 2_000) / 1000:g} s or {state.checkpoint_max_events:,} events"
            f" as `run`, join TTL {JOIN_TTL}:\n"
        )
        print(cells_table(results))
    if not args.skip_instances:
        kind = chosen_kind(args.broker)
        models = [int(m) for m in args.models.split(",")]
        limit, runs = measure_instances(kind, args.predictions, models, args.rounds, args.guarantee)
        total = runs[0]["total"]
        print(
            f"\n(b) {kind}, {args.predictions:,} predictions + labels = {total:,} events,"
            f" {runs[0]['partitions']} partitions, keyed by model:\n"
        )
        print(instances_table(limit, runs, args.guarantee))


if __name__ == "__main__":
    main()
