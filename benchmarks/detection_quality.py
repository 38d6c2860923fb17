"""Detection quality on standard drift streams: delay, false positives and misses per 1e5 events.

Streams (each `--events` long, an abrupt change every `--every` events, `--seeds` seeds each):
- sine1, mixed, stagger (river.datasets.synth) with 10% of labels flipped; the concept switches
  (sine1/mixed between their two functions, stagger through its three) and a Hoeffding tree that
  learns as it predicts (prequential) produces the 0/1 error stream the detectors watch;
- gauss-mean: N(0, 1) whose mean steps by 1 sd, and the same at sd 0.001 (units matter to ADWIN);
- gauss-var: N(0, 1) whose sd doubles and halves;
- bernoulli: an error rate stepping between 0.10 and 0.20.

Detectors: river's ADWIN and Page-Hinkley with their defaults, and Page-Hinkley calibrated as in
configs/calibrated.yaml, for 1 sd shifts and for 0.3 sd shifts. No cooldown: every detection counts. Scoring (stream_monitor.scoring):
the first detection within `--max-delay` of a change is a hit (its delay counts), further ones
there are repeats, any other is a false positive; a change without a hit is a miss (FN).

    python benchmarks/detection_quality.py [--events 100000] [--seeds 3] [--docs FILE]
"""

from __future__ import annotations

import argparse
import math
import random
import re
from collections.abc import Callable, Iterator
from multiprocessing import Pool
from pathlib import Path
from typing import Any

from river import tree
from river.datasets import synth
from river.drift import ADWIN, PageHinkley

from stream_monitor.core.calibration import Calibration
from stream_monitor.core.detectors import DETECTOR_TYPES
from stream_monitor.scoring import Detection, score

LABEL_NOISE = 0.10
# calibrated_ph: configs/calibrated.yaml (tuned for 1 sd shifts); calibrated_ph_s0.3 tuned for
# 0.3 sd shifts (`calibrate: {shift: 0.3}`), the size of the Bernoulli steps.
DETECTORS = ("adwin", "page_hinkley", "calibrated_ph", "calibrated_ph_s0.3")
STREAMS = (
    "sine1",
    "mixed",
    "stagger",
    "gauss-mean",
    "gauss-mean-sd0.001",
    "gauss-var",
    "bernoulli",
)
DOCS = Path(__file__).resolve().parent.parent / "docs" / "detection-quality.md"
START, END = "<!-- bench-quality:start -->", "<!-- bench-quality:end -->"


def classifier_errors(name: str, seed: int, events: int, every: int) -> Iterator[float]:
    """The 0/1 errors of a Hoeffding tree learning a synthetic concept that switches abruptly."""
    functions = {"sine1": (0, 1), "mixed": (0, 1), "stagger": (0, 1, 2)}[name]
    noise = random.Random(seed)
    model = tree.HoeffdingTreeClassifier()
    produced = 0
    segment = 0
    while produced < events:
        function = functions[segment % len(functions)]
        generator: Any
        if name == "sine1":
            generator = synth.Sine(classification_function=function, seed=seed + segment)
        elif name == "mixed":
            generator = synth.Mixed(classification_function=function, seed=seed + segment)
        else:
            generator = synth.STAGGER(classification_function=function, seed=seed + segment)
        for x, y in generator.take(min(every, events - produced)):
            if noise.random() < LABEL_NOISE:
                y = 1 - int(y)
            predicted = model.predict_one(x)
            model.learn_one(x, y)
            yield 0.0 if predicted == y else 1.0
        produced += every
        segment += 1


def numeric(name: str, seed: int, events: int, every: int) -> Iterator[float]:
    rng = random.Random(seed)
    for i in range(events):
        odd = (i // every) % 2 == 1
        if name == "gauss-mean":
            yield rng.gauss(1.0 if odd else 0.0, 1.0)
        elif name == "gauss-mean-sd0.001":
            yield rng.gauss(0.001 if odd else 0.0, 0.001)
        elif name == "gauss-var":
            yield rng.gauss(0.0, 2.0 if odd else 1.0)
        else:
            yield 1.0 if rng.random() < (0.20 if odd else 0.10) else 0.0


def detector(name: str) -> tuple[Any, Callable[[float], Any]]:
    if name == "adwin":
        adwin = ADWIN()
        return adwin, adwin.update
    if name == "page_hinkley":
        ph = PageHinkley()
        return ph, ph.update
    calibration = Calibration(shift=0.3) if name.endswith("_s0.3") else Calibration()
    kind = DETECTOR_TYPES["page_hinkley"]
    calibrated = PageHinkley(**calibration.detector_params("page_hinkley", kind.defaults()))
    return calibrated, calibration.scaler(calibrated, kind.prime, True, None).update


def run(job: tuple[str, int, int, int]) -> tuple[str, int, dict[str, list[int]]]:
    """Detection indices of every detector on one seeded stream."""
    stream, seed, events, every = job
    values: Iterator[float] = (
        classifier_errors(stream, seed, events, every)
        if stream in ("sine1", "mixed", "stagger")
        else numeric(stream, seed, events, every)
    )
    built = {name: detector(name) for name in DETECTORS}
    found: dict[str, list[int]] = {name: [] for name in DETECTORS}
    for index, value in enumerate(values):
        for name, (instance, update) in built.items():
            update(value)
            if instance.drift_detected:
                found[name].append(index)
    return stream, seed, found


def table(
    results: list[tuple[str, int, dict[str, list[int]]]], events: int, every: int, max_delay: int
) -> str:
    changes = [("s", at) for at in range(every, events, every)]
    rows = [
        "| stream | detector | mean delay | FP / 1e5 | FN / 1e5 | missed changes | repeats / 1e5 |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for stream in STREAMS:
        runs = [found for name, _, found in results if name == stream]
        total = events * len(runs)
        for name in DETECTORS:
            delays: list[int] = []
            false_positives = misses = repeats = 0
            for found in runs:
                result = score(changes, [Detection("s", i) for i in found[name]], max_delay)
                delays.extend(result.delays)
                false_positives += len(result.false_positives)
                misses += result.misses
                repeats += result.duplicates
            delay = f"{sum(delays) / len(delays):.0f}" if delays else "–"
            rows.append(
                f"| {stream} | {name} | {delay} | {1e5 * false_positives / total:.1f} "
                f"| {1e5 * misses / total:.1f} | {misses}/{len(changes) * len(runs)} "
                f"| {1e5 * repeats / total:.1f} |"
            )
    return "\n".join(rows)


def write_docs(path: Path, text: str) -> None:
    document = path.read_text(encoding="utf-8")
    if START not in document or END not in document:
        raise SystemExit(f"{path}: no {START} ... {END} section to replace")
    replaced = re.sub(
        re.escape(START) + ".*?" + re.escape(END),
        lambda _: f"{START}\n{text}\n{END}",
        document,
        flags=re.S,
    )
    path.write_text(replaced, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--every", type=int, default=20_000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--max-delay", type=int, default=5_000)
    parser.add_argument("--docs", type=Path, default=DOCS, help="Markdown file to update.")
    parser.add_argument("--no-docs", action="store_true", help="Only print the table.")
    args = parser.parse_args()
    jobs = [
        (s, seed, args.events, args.every) for s in STREAMS for seed in range(1, args.seeds + 1)
    ]
    with Pool(2) as pool:
        results = pool.map(run, jobs, chunksize=1)
    changes = math.ceil(args.events / args.every) - 1
    text = (
        f"{args.seeds} seeds × {args.events:,} events per stream, a change every "
        f"{args.every:,} events ({changes} per run), hits within {args.max_delay:,} events.\n\n"
        + table(results, args.events, args.every, args.max_delay)
    )
    print(text)
    if not args.no_docs:
        write_docs(args.docs, text)
        print(f"\nwritten to {args.docs}")


if __name__ == "__main__":
    main()
