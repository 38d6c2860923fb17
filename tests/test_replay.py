"""`stream-monitor replay` on a seeded three-model scenario, through the real command."""

from __future__ import annotations

import subprocess
from pathlib import Path

import orjson
import pytest

from stream_monitor.core.events import decode
from stream_monitor.scenarios import Scenario, generate
from tests.helpers import ROOT, T0, run_cli

CHANGE = 3000


def write_jsonl(path: Path, rows: list) -> None:
    path.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in rows))


def replay_scenario(
    tmp_path: Path, scenario: Scenario, *extra: str
) -> subprocess.CompletedProcess[str]:
    """Write the scenario as JSONL and replay it with the example config."""
    write_jsonl(tmp_path / "p.jsonl", scenario.predictions)
    write_jsonl(tmp_path / "l.jsonl", scenario.labels)
    return run_cli(
        "replay",
        "--config",
        "configs/example.yaml",
        "--predictions",
        str(tmp_path / "p.jsonl"),
        "--labels",
        str(tmp_path / "l.jsonl"),
        *extra,
    )


def test_replay_finds_both_changes_after_their_change_points_and_nothing_on_the_stable_model(
    tmp_path: Path,
) -> None:
    scenario = generate("default", events=2 * CHANGE, seed=7)
    result = replay_scenario(tmp_path, scenario, "--output", str(tmp_path / "alerts.jsonl"))
    assert result.returncode == 0, result.stderr
    alerts = [
        orjson.loads(line)["data"] for line in (tmp_path / "alerts.jsonl").read_bytes().splitlines()
    ]
    found = {(a["model"], a["signal_kind"], a["signal"]): a for a in alerts}

    credit = found[("credit", "performance", "error")]
    # Labels come 60 s (600 events) after their predictions; the drift starts at credit-0003000.
    assert credit["observations"] > CHANGE
    assert credit["severity"] == "critical"
    fraud = found[("fraud", "feature", "amount")]
    assert fraud["observations"] > CHANGE
    assert fraud["effect"]["shift"] == pytest.approx(1.5, abs=0.2)  # the scenario's +1.5 sd
    assert ("fraud", "prediction", "score") in found
    # fraud's country mix moved too (fr 20% -> 60%): the alert says which categories moved
    country = found[("fraud", "feature", "country")]["effect"]
    assert country["statistic"] == "categories" and country["size"] >= 1.0
    top = country["categories"][0]
    assert top["category"] == "fr" and top["before"] == pytest.approx(0.2, abs=0.05)
    assert top["after"] == pytest.approx(0.6, abs=0.07)
    # its merchant and new_customer flag did not move: no alert
    assert not {"merchant", "new_customer"} & {a["signal"] for a in alerts}
    # fraud's scores move towards 0.5: its estimated error rises with no label needed (its labels
    # show no change: the simulated scores are not calibrated, docs/detection-quality.md)
    assert ("fraud", "performance", "estimated_error") in found
    assert ("credit", "performance", "estimated_error") not in found  # only its labels changed
    assert all(
        a["observations"] > CHANGE
        for a in alerts
        if a is not found[("fraud", "feature", "country")]
    )
    # the country alert counts the values of the blocks it compared (after a 500-value
    # warm-up): it came after fraud's change, in the predictions file's line order
    assert found[("fraud", "feature", "country")]["source_position"]["offset"] > 3 * CHANGE
    assert not [a for a in alerts if a["model"] == "eta"]
    assert (
        "replayed 18000 predictions and 18000 labels; 18000 joined; 0 bad lines skipped; "
        "5 alerts (credit: 1, fraud: 4)\n"
    ) in result.stderr


def test_replay_reads_kcat_envelopes_and_reports_bad_lines_by_number(tmp_path: Path) -> None:
    good = {"prediction_id": "a", "model": "m", "prediction": 1, "timestamp": T0 + 1000}
    lines = [
        orjson.dumps(
            {
                "topic": "predictions",
                "partition": 0,
                "offset": 0,
                "key": "m",
                "payload": orjson.dumps(good).decode(),
            }
        ),
        b"{not json",
        orjson.dumps({"prediction_id": "b", "model": "m"}),
        orjson.dumps(dict(good, prediction_id="c", timestamp=T0 + 2000)),
    ]
    (tmp_path / "p.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    write_jsonl(
        tmp_path / "l.jsonl",
        [{"prediction_id": "a", "model": "m", "label": 0, "timestamp": T0 + 1500}],
    )
    result = run_cli(
        "replay", "--predictions", str(tmp_path / "p.jsonl"), "--labels", str(tmp_path / "l.jsonl")
    )
    assert result.returncode == 0
    assert "p.jsonl:2: skipped (malformed_json)" in result.stderr
    assert "p.jsonl:3: skipped (missing_field): field 'prediction' is required" in result.stderr
    assert (
        "replayed 4 predictions and 1 labels; 1 joined; 2 bad lines skipped; 0 alerts"
        in result.stderr
    )
    assert result.stdout == ""


def test_each_partition_merges_by_timestamp_predictions_first_on_ties(tmp_path: Path) -> None:
    from stream_monitor.processing.merge import LABELS, PREDICTIONS, StreamMerge
    from stream_monitor.replay import partitioned

    def event(pid: str, model: str, time: int | None) -> dict[str, object]:
        row: dict[str, object] = {"prediction_id": pid, "model": model, "prediction": 1}
        return row if time is None else {**row, "timestamp": T0 + time}

    # credit and churn land on different partitions of 4 (the Java client's murmur2).
    write_jsonl(
        tmp_path / "p.jsonl",
        [
            event("a", "credit", 10),
            event("f", "churn", 5),
            event("b", "credit", 20),
            event("c", "credit", None),
        ],
    )
    write_jsonl(
        tmp_path / "l.jsonl",
        [{**event("a", "credit", 10), "label": 1}, {**event("x", "credit", 15), "label": 1}],
    )
    streams = partitioned(tmp_path / "p.jsonl", tmp_path / "l.jsonl", 4)
    assert {p: (len(a), len(b)) for p, (a, b) in streams.items() if a or b} == {
        2: (3, 2),
        1: (1, 0),
    }
    merge = StreamMerge()
    predictions, labels = streams[2]
    for stream, records in ((PREDICTIONS, predictions), (LABELS, labels)):
        for record in records:
            merge.add(stream, record, decode(record))
    order = [
        (stream, record.value["prediction_id"]) for stream, record, _ in merge.drain((True, True))
    ]
    # the untimed prediction "c" keeps its place after "b" (it takes b's time)
    assert order == [(0, "a"), (1, "a"), (1, "x"), (0, "b"), (0, "c")]


def test_example_config_raises_nothing_on_stationary_data(tmp_path: Path) -> None:
    result = replay_scenario(tmp_path, generate("stable", events=6000, seed=21))
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert "18000 joined; 0 bad lines skipped; 0 alerts" in result.stderr


def test_river_config_keeps_rivers_golden_indices_through_replay(tmp_path: Path) -> None:
    """configs/river.yaml: river's raw defaults, ADWIN at index 1023 and Page-Hinkley at 1006 on
    river's docstring stream, through the real command."""
    from tests.helpers import golden_stream

    write_jsonl(
        tmp_path / "p.jsonl",
        [
            {"prediction_id": f"p{i}", "model": "m", "prediction": 1, "features": {"x": value}}
            for i, value in enumerate(golden_stream())
        ],
    )
    river = (ROOT / "configs" / "river.yaml").read_text()
    with_ph = tmp_path / "river-ph.yaml"
    with_ph.write_text(
        river.replace(
            '  - match: "*"           # glob on the model name; the first matching rule wins',
            '  - match: "*"\n    overrides: {x: [page_hinkley]}',
        )
    )
    for config, rule, index in (
        ("configs/river.yaml", "adwin", 1023),
        (str(with_ph), "page_hinkley", 1006),
    ):
        result = run_cli("replay", "--config", config, "--predictions", str(tmp_path / "p.jsonl"))
        assert result.returncode == 0, result.stderr
        first = orjson.loads(result.stdout.splitlines()[0])["data"]
        assert (first["signal"], first["rule"]) == ("x", rule)
        assert first["source_position"]["offset"] == index + 1  # JSONL lines count from 1
