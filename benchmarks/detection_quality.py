"""Detection quality on standard drift streams: mean time between false alarms, delay, misses.

Streams (each `--events` long, an abrupt change every `--every` events, `--seeds` seeds each):
- sine1, mixed, stagger (river.datasets.synth) with 10% of labels flipped; the concept switches
  (sine1/mixed between their two functions, stagger through its three) and a Hoeffding tree that
  learns as it predicts (prequential) produces the 0/1 error stream the detectors watch;
- gauss-mean-<sd>: N(0, sd²) whose mean steps by 1 sd and back, at sd 0.001, 1 and 1000;
- gauss-var-<sd>: N(0, sd²) whose sd doubles and halves back, at the same scales;
- bernoulli-<p>: a 0/1 rate stepping between p and 2p (0.5 and 0.6 for p = 0.5);
- categories-0.2-0.6, categories-0.2-0.3: a categorical feature of four values (0.2, 0.3, 0.25,
  0.25) whose first one's share steps to 0.6 (or 0.3), the others scaled down, and back;
- new-category-5%: three values (0.5, 0.3, 0.2), and in every second segment a fourth at 5%;
- boolean-0.2: True/False at a rate stepping between 0.2 and 0.3.

And drift from the first event, with a reference (`reference_table`): a training sample of
5,000 events gives the model's reference (`stream_monitor.references`), then a stream that differs
from it from its first event: the delay to the first alert, with the reference and without (then
the first values are learnt as normal), and the false alarms of streams that match it.

Detection, each through the real `Monitor` with the stream as one feature of one key:
- default: the built-in rules of a feature (rate, mean, spread: configs/example.yaml) with the
  alert policy users get (alerts.min_effect 0.2, drift_resolved events);
- river-adwin, river-ph: river's ADWIN and Page-Hinkley with their defaults (configs/river.yaml,
  min_effect 0: river's exact detections);
- calibrated-0.2: Page-Hinkley calibrated as 0.2's configs/calibrated.yaml did (warm-up 1000,
  shift 1, no clipping), on every signal.
No cooldown: every detection counts. For `default`, a drift_resolved event counts like a
detection: it is what tells people that the change went back (the other detectors report a
return as one more change).

Scoring (stream_monitor.scoring): the first event within `--max-delay` of a change is a hit (its
delay counts), further ones there are repeats, any other is a false alarm; a change without a hit
is a miss. The headline is the mean time between false alarms (MTBFA): events outside the
`--max-delay` windows after changes, per false alarm, per key.

    python benchmarks/detection_quality.py [--events 100000] [--seeds 3] [--docs FILE]
"""

from __future__ import annotations

import argparse
import math
import random
import re
import statistics
import time
from collections.abc import Iterable, Iterator
from dataclasses import replace
from multiprocessing import Pool
from pathlib import Path
from typing import Any

from river import tree
from river.datasets import synth

from stream_monitor.config import build_config
from stream_monitor.core.events import PREDICTION, Prediction, Record
from stream_monitor.core.monitor import Monitor
from stream_monitor.core.reference import parse
from stream_monitor.core.settings import MonitorSettings
from stream_monitor.references import ReferenceRecorder, reference_file
from stream_monitor.scoring import Detection, score

LABEL_NOISE = 0.10
KINDS = ("performance", "prediction", "feature", "data_quality")
ONE_FEATURE = {"prediction": [], "performance": []}  # the feature and its data quality
RAW_POLICY = {"cooldown": 0, "min_effect": 0, "resolve": {"enabled": False}}
CONFIGS: dict[str, dict[str, Any]] = {
    "default": {"signals": ONE_FEATURE, "alerts": {"cooldown": 0}},
    "river-adwin": {
        "signals": {**ONE_FEATURE, "feature": ["adwin"], "data_quality": ["adwin"]},
        "alerts": RAW_POLICY,
    },
    "river-ph": {
        "signals": {**ONE_FEATURE, "feature": ["page_hinkley"], "data_quality": ["page_hinkley"]},
        "alerts": RAW_POLICY,
    },
    "calibrated-0.2": {
        "detectors": {
            "calibrated_ph": {
                "type": "page_hinkley",
                "calibrate": {"warmup": 1000, "shift": 1.0, "clip": None},
            }
        },
        "signals": {
            **ONE_FEATURE,
            "feature": ["calibrated_ph"],
            "data_quality": ["calibrated_ph"],
        },
        "alerts": RAW_POLICY,
    },
}
DETECTORS = tuple(CONFIGS)
CLASSIFIER_STREAMS = ("sine1", "mixed", "stagger")
STREAMS = (
    *CLASSIFIER_STREAMS,
    "gauss-mean-0.001",
    "gauss-mean-1",
    "gauss-mean-1000",
    "gauss-var-0.001",
    "gauss-var-1",
    "gauss-var-1000",
    "bernoulli-0.5",
    "bernoulli-0.1",
    "bernoulli-0.01",
    "categories-0.2-0.6",
    "categories-0.2-0.3",
    "new-category-5%",
    "boolean-0.2",
)
COUNTRIES = ("fr", "de", "es", "it")
MIX = (0.2, 0.3, 0.25, 0.25)
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
    kind, _, parameter = name.rpartition("-")
    value = float(parameter)
    for i in range(events):
        odd = (i // every) % 2 == 1
        if kind == "gauss-mean":
            yield rng.gauss(value if odd else 0.0, value)
        elif kind == "gauss-var":
            yield rng.gauss(0.0, 2.0 * value if odd else value)
        else:
            rate = (0.6 if value == 0.5 else 2 * value) if odd else value
            yield 1.0 if rng.random() < rate else 0.0


def categorical(name: str, seed: int, events: int, every: int) -> Iterator[str | bool]:
    rng = random.Random(seed)
    for i in range(events):
        odd = (i // every) % 2 == 1
        if name == "boolean-0.2":
            yield rng.random() < (0.3 if odd else 0.2)
        elif name == "new-category-5%":
            if odd and rng.random() < 0.05:
                yield "new"
            else:
                yield rng.choices(("a", "b", "c"), (0.5, 0.3, 0.2))[0]
        else:
            yield rng.choices(COUNTRIES, shifted(float(name.rpartition("-")[2])) if odd else MIX)[0]


def shifted(share: float) -> tuple[float, ...]:
    """MIX with the first category at `share`, the others scaled to make up the rest."""
    rest = (1.0 - share) / (1.0 - MIX[0])
    return (share, *(other * rest for other in MIX[1:]))


def events_of(monitor: Monitor, values: Iterable[Any]) -> list[int]:
    """Indices of the values that raised an alert or a drift_resolved event."""
    found = []
    monitor.begin()
    for index, value in enumerate(values):
        monitor.apply(
            Record(PREDICTION, None, None, "s", 0, index),
            Prediction("p", "m", 1, features={"x": value}),
        )
        if index % 5000 == 4999:
            found += [a.event["data"]["source_position"]["offset"] for a in monitor.end().alerts]
            monitor.begin()
    found += [a.event["data"]["source_position"]["offset"] for a in monitor.end().alerts]
    return found


def settings_of(name: str) -> MonitorSettings:
    return build_config(CONFIGS[name], environ={}).monitor_settings()


def run(job: tuple[str, str, int, int, int]) -> tuple[str, str, int, list[int], float]:
    """Event indices of one detector on one seeded stream, and the seconds it took."""
    stream, detector, seed, events, every = job
    values: Iterable[Any]
    if stream in CLASSIFIER_STREAMS:
        values = classifier_errors(stream, seed, events, every)
    elif stream.startswith(("categories", "new-category", "boolean")):
        values = categorical(stream, seed, events, every)
    else:
        values = numeric(stream, seed, events, every)
    started = time.perf_counter()
    found = events_of(Monitor(settings_of(detector)), values)
    return stream, detector, seed, found, time.perf_counter() - started


class Row:
    """Scores of one detector on one stream, over its seeds."""

    def __init__(self) -> None:
        self.delays: list[int] = []
        self.false_alarms = self.misses = self.repeats = self.changes = 0
        self.stable = 0  # events outside the windows after changes

    def mtbfa(self) -> str:
        if not self.false_alarms:
            return f"> {self.stable:,}"
        return f"{self.stable / self.false_alarms:,.0f}"

    def cells(self) -> list[str]:
        delay = f"{sum(self.delays) / len(self.delays):.0f}" if self.delays else "–"
        per = 1e5 / max(self.stable, 1)
        return [
            self.mtbfa(),
            f"{per * self.false_alarms:.1f}",
            delay,
            f"{self.misses}/{self.changes}",
            f"{per * self.repeats:.1f}",
        ]


def scores(
    results: list[tuple[str, str, int, list[int], float]], events: int, every: int, max_delay: int
) -> dict[tuple[str, str], Row]:
    changes = [("s", at) for at in range(every, events, every)]
    stable_per_run = events - len(changes) * max_delay
    rows: dict[tuple[str, str], Row] = {}
    for stream, detector, _, found, _ in results:
        row = rows.setdefault((stream, detector), Row())
        result = score(changes, [Detection("s", i) for i in found], max_delay)
        row.delays.extend(result.delays)
        row.false_alarms += len(result.false_positives)
        row.misses += result.misses
        row.repeats += result.duplicates
        row.changes += len(changes)
        row.stable += stable_per_run
    return rows


def table(rows: dict[tuple[str, str], Row]) -> str:
    lines = [
        "| stream | detector | MTBFA (events) | false alarms / 1e5 | mean delay | missed | repeats / 1e5 |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for stream in STREAMS:
        for detector in DETECTORS:
            row = rows[(stream, detector)]
            lines.append(f"| {stream} | {detector} | " + " | ".join(row.cells()) + " |")
    lines += [
        "",
        "All streams together:",
        "",
        "| detector | MTBFA (events) | false alarms / 1e5 | mean delay | missed | repeats / 1e5 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for detector in DETECTORS:
        total = Row()
        for stream in STREAMS:
            row = rows[(stream, detector)]
            total.delays += row.delays
            total.false_alarms += row.false_alarms
            total.misses += row.misses
            total.repeats += row.repeats
            total.changes += row.changes
            total.stable += row.stable
        lines.append(f"| {detector} | " + " | ".join(total.cells()) + " |")
    return "\n".join(lines)


def scenario_alerts() -> str:
    """Alerts per change on the seeded scenarios, with the spread rule on features only (the
    default) and on every kind: the evidence for leaving it off scores and errors."""
    from stream_monitor.core.events import LABEL
    from stream_monitor.replay import run as replay
    from stream_monitor.scenarios import covariate_shift, generate

    scenarios = {
        "default (seed 7)": generate("default", events=6000, seed=7),
        "default (seed 3)": generate("default", events=6000, seed=3),
        "covariate shift": covariate_shift(events=40_000, label_delay=5000),
        "stable (seed 21)": generate("stable", events=20_000, seed=21),
    }
    variants = {
        "features only (default)": {},
        "every kind": {
            "signals": {
                **{kind: ["rate", "mean", "spread"] for kind in KINDS},
                "feature": ["rate", "mean", "spread", "categories"],
            }
        },
    }
    lines = [
        "| scenario | spread rule on | alerts | what alerted |",
        "|---|---|---:|---|",
    ]
    for name, scenario in scenarios.items():
        streams: dict[int, tuple[list[Record], list[Record]]] = {0: ([], [])}
        streams[0][0].extend(
            Record(PREDICTION, e, None, "p", 0, i) for i, e in enumerate(scenario.predictions)
        )
        streams[0][1].extend(
            Record(LABEL, e, None, "l", 0, i) for i, e in enumerate(scenario.labels)
        )
        for variant, data in variants.items():
            ((_, alerts, _),) = replay(build_config(data, environ={}).monitor_settings(), streams)
            found = [
                f"{a.event['data']['model']} {a.event['data']['signal']} ({a.event['data']['rule']})"
                for a in alerts
                if a.event["type"] == "stream_monitor.drift_detected"
            ]
            lines.append(f"| {name} | {variant} | {len(found)} | {', '.join(found) or 'none'} |")
    return "\n".join(lines)


# Drift from the first event, against a reference: (case, kind of feature, its change).
REFERENCE_CASES = (
    ("numeric +1 sd", "numeric", 1.0),
    ("numeric +0.5 sd", "numeric", 0.5),
    ("numeric +0.25 sd", "numeric", 0.25),
    ("categories fr 0.2 → 0.6", "categories", 0.6),
    ("categories fr 0.2 → 0.3", "categories", 0.3),
    ("boolean 0.2 → 0.3", "boolean", 0.3),
)
TRAINING = 5_000  # events of the sample the reference is built from
FROM_START = 20_000  # events of each drifted stream
MATCHING = 100_000  # events of each stream that matches its reference
REFERENCE_SEEDS = 5


def feature_value(kind: str, change: float | None, rng: random.Random) -> Any:
    """A value of a feature of `kind`, as in its training data (`change` None) or changed."""
    if kind == "numeric":
        return rng.gauss(100.0 + 20.0 * (change or 0.0), 20.0)
    if kind == "categories":
        return rng.choices(COUNTRIES, shifted(change) if change else MIX)[0]
    return rng.random() < (change or 0.2)


def with_reference(kind: str, seed: int) -> MonitorSettings:
    """The default rules, with the reference of a training sample of `kind`."""
    settings = settings_of("default")
    recorder = ReferenceRecorder(settings)
    rng = random.Random(10_000 + seed)
    recorder.process(
        Record(
            PREDICTION,
            {
                "prediction_id": f"t{i}",
                "model": "m",
                "prediction": 1,
                "features": {"x": feature_value(kind, None, rng)},
            },
            None,
            "t",
            0,
            i,
        )
        for i in range(TRAINING)
    )
    return replace(settings, reference=parse(reference_file(recorder.summary(), {})))


def reference_run(job: tuple[str, str, float | None, int, bool]) -> tuple[str, bool, list[int]]:
    """Alert indices of one stream changed from its first event (`change` None: matching)."""
    case, kind, change, seed, referenced = job
    settings = with_reference(kind, seed) if referenced else settings_of("default")
    rng = random.Random(seed)
    count = MATCHING if change is None else FROM_START
    values = (feature_value(kind, change, rng) for _ in range(count))
    return case, referenced, events_of(Monitor(settings), values)


def reference_table(pool: Any) -> str:
    jobs = [
        (case, kind, change, seed, referenced)
        for case, kind, change in REFERENCE_CASES
        for seed in range(1, REFERENCE_SEEDS + 1)
        for referenced in (True, False)
    ]
    jobs += [
        (f"{kind} matching", kind, None, seed, True)
        for kind in ("numeric", "categories", "boolean")
        for seed in range(1, 4)
    ]
    found: dict[tuple[str, bool], list[list[int]]] = {}
    for case, referenced, alerts in pool.map(reference_run, jobs, chunksize=1):
        found.setdefault((case, referenced), []).append(alerts)
    lines = [
        f"| drift from the first event ({FROM_START:,} events, {REFERENCE_SEEDS} seeds) | "
        "with a reference: median delay (max) | found | without: found |",
        "|---|---:|---:|---:|",
    ]
    for case, _, _ in REFERENCE_CASES:
        firsts = [runs[0] for runs in found[(case, True)] if runs]
        delay = f"{statistics.median(firsts):,.0f} ({max(firsts):,})" if firsts else "–"
        without = sum(1 for runs in found[(case, False)] if runs)
        lines.append(
            f"| {case} | {delay} | {len(firsts)}/{REFERENCE_SEEDS} | {without}/{REFERENCE_SEEDS} |"
        )
    lines += [
        "",
        f"| stream that matches its reference (3 × {MATCHING:,} events) | alerts |",
        "|---|---:|",
    ]
    for kind in ("numeric", "categories", "boolean"):
        alerts = sum(len(runs) for runs in found[(f"{kind} matching", True)])
        lines.append(f"| {kind} | {alerts} |")
    return "\n".join(lines)


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
        (stream, detector, seed, args.events, args.every)
        for stream in STREAMS
        for detector in DETECTORS
        for seed in range(1, args.seeds + 1)
    ]
    started = time.perf_counter()
    with Pool(2) as pool:
        results = pool.map(run, jobs, chunksize=1)
        references = reference_table(pool)
    seconds = time.perf_counter() - started
    changes = math.ceil(args.events / args.every) - 1
    text = (
        f"{args.seeds} seeds × {args.events:,} events per stream, a change every "
        f"{args.every:,} events ({changes} per run), hits within {args.max_delay:,} events; "
        "MTBFA counts the events outside those windows. `python benchmarks/detection_quality.py`"
        " (`make bench-quality`).\n\n"
        + table(scores(results, args.events, args.every, args.max_delay))
        + "\n\nDrift from the first event, against a reference built from a training sample of "
        f"{TRAINING:,} events (the default rules), and streams that match their reference:\n\n"
        + references
        + "\n\nAlerts of the default rules on the seeded scenarios (every change should give one"
        " alert per signal it moves; eta and `stable` none), with the spread rule on features"
        " only and on every signal kind:\n\n"
        + scenario_alerts()
        + f"\n\n(The streams and reference runs took {seconds / 60:.0f} minutes on two cores.)"
    )
    print(text)
    if not args.no_docs:
        write_docs(args.docs, text)
        print(f"\nwritten to {args.docs}")


if __name__ == "__main__":
    main()
