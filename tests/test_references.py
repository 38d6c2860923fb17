"""`stream-monitor reference`: a reference from a training sample, then detection against it."""

from __future__ import annotations

import csv
import random
from pathlib import Path
from typing import Any

import orjson
import pytest

from stream_monitor.config import build_config
from stream_monitor.core.reference import FORMAT, parse
from stream_monitor.references import build_reference
from stream_monitor.scenarios import generate
from tests.helpers import T0, run_cli
from tests.test_replay import write_jsonl


def training(count: int, seed: int, shift: float = 0.0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [
        {
            "prediction_id": f"t{i}",
            "model": "fraud",
            "prediction": rng.random() < 0.1,
            "score": round(rng.random(), 4),
            "timestamp": T0 + 100 * i,
            "features": {
                "amount": round(rng.gauss(100.0 + 20.0 * shift, 20.0), 3),
                "country": rng.choices(["fr", "de", "es", "it"], [0.2, 0.3, 0.25, 0.25])[0],
                "new_customer": rng.random() < 0.3,
                "note": None if i % 10 == 0 else "ok",
            },
        }
        for i in range(count)
    ]


def test_reference_from_json_lines_has_every_signal_the_config_watches(tmp_path: Path) -> None:
    scenario = generate("stable", events=3000, seed=5)
    write_jsonl(tmp_path / "p.jsonl", scenario.predictions)
    write_jsonl(tmp_path / "l.jsonl", scenario.labels)
    result = run_cli(
        "reference",
        "--predictions",
        str(tmp_path / "p.jsonl"),
        "--labels",
        str(tmp_path / "l.jsonl"),
        "--output",
        str(tmp_path / "ref.json"),
    )
    assert result.returncode == 0, result.stderr
    assert "fraud: 3,000 predictions, 19 signals, 5 features (2 categorical)" in result.stderr
    assert f"point the config at it with `reference: {tmp_path / 'ref.json'}`" in result.stderr
    data = orjson.loads((tmp_path / "ref.json").read_bytes())
    assert data["format"] == FORMAT and set(data["models"]) == {"credit", "eta", "fraud"}
    fraud = data["models"]["fraud"]
    assert fraud["features"] == {
        "amount": "numeric",
        "country": "categorical",
        "hour": "numeric",
        "merchant": "categorical",
        "new_customer": "boolean",
    }
    signals = fraud["signals"]
    amount = signals["feature/amount"]
    assert amount["n"] == 3000 and amount["mean"] == pytest.approx(100.0, abs=1.5)
    assert amount["sd"] == pytest.approx(20.0, abs=1.0) and not amount["binary"]
    assert amount["pairs"]["mean"] == pytest.approx(1.13, abs=0.06)  # 2/√π for a Gaussian
    assert amount["quantiles"]["0.5"] == pytest.approx(100.0, abs=2.0)
    country = signals["feature/country"]
    assert country["n"] == 3000 and country["other"] == 0.0
    assert country["categories"]["fr"] == pytest.approx(0.2, abs=0.02)
    assert signals["feature/new_customer"]["binary"] and signals["feature/new_customer"][
        "mean"
    ] == pytest.approx(0.3, abs=0.03)
    assert signals["performance/error"]["mean"] == pytest.approx(0.05, abs=0.015)  # from the labels
    assert signals["data_quality/missing_rate:amount"]["mean"] == 0.0
    assert signals["data_quality/wrong_type_rate:country"] == {
        "n": 3000,
        "mean": 0.0,
        "sd": 0.0,
        "binary": True,
    }
    assert data["models"]["eta"]["signals"]["performance/absolute_error"]["n"] == 3000
    parse(data)  # what it writes, it reads


def test_a_reference_from_csv_then_drift_from_the_first_event(tmp_path: Path) -> None:
    """A training sample as CSV (no model column, labels in the rows), then the issue's test:
    a stream +1 sd from its first event is alerted within 300 events; one like its training
    data is not alerted at all."""
    rows = training(5000, 1)
    with (tmp_path / "train.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["prediction", "score", "label", "amount", "country", "new_customer", "note"]
        )
        for row in rows:
            features = row["features"]
            writer.writerow(
                [
                    row["prediction"],
                    row["score"],
                    row["prediction"],
                    features["amount"],
                    features["country"],
                    str(features["new_customer"]).lower(),
                    features["note"] or "",
                ]
            )
    result = run_cli(
        "reference",
        "--predictions",
        str(tmp_path / "train.csv"),
        "--model",
        "fraud",
        "--output",
        str(tmp_path / "ref.json"),
    )
    assert result.returncode == 0, result.stderr
    fraud = orjson.loads((tmp_path / "ref.json").read_bytes())["models"]["fraud"]
    assert fraud["events"] == 5000
    assert (
        fraud["features"]["note"] == "categorical"
        and fraud["features"]["new_customer"] == "boolean"
    )
    assert fraud["signals"]["data_quality/missing_rate:note"]["mean"] == 0.1  # empty cells
    assert fraud["signals"]["performance/error"]["mean"] == 0.0  # the labels in the rows

    (tmp_path / "monitor.yaml").write_text("reference: ref.json\n")

    def replay(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        write_jsonl(tmp_path / "p.jsonl", events)
        out = run_cli(
            "replay",
            "--config",
            str(tmp_path / "monitor.yaml"),
            "--predictions",
            str(tmp_path / "p.jsonl"),
        )
        assert out.returncode == 0, out.stderr
        return [orjson.loads(line)["data"] for line in out.stdout.splitlines()]

    drifted = replay(training(300, 2, shift=1.0))
    assert [(a["signal"], a["source_position"]["offset"]) for a in drifted] == [("amount", 56)]
    assert drifted[0]["effect"]["before"] == pytest.approx(100.0, abs=1.0)
    assert replay(training(20_000, 3)) == []


def test_a_reference_from_parquet_matches_the_one_from_json_lines(tmp_path: Path) -> None:
    pyarrow = pytest.importorskip("pyarrow")
    from pyarrow import parquet

    rows = training(2000, 4)
    write_jsonl(tmp_path / "train.jsonl", rows)
    parquet.write_table(pyarrow.Table.from_pylist(rows), tmp_path / "train.parquet")
    config = build_config({}, environ={})
    from_json = build_reference(config, tmp_path / "train.jsonl", None)
    from_parquet = build_reference(config, tmp_path / "train.parquet", None)
    assert from_parquet["models"] == from_json["models"]
    assert from_parquet["source"]["predictions"] == "train.parquet"


def test_a_missing_parquet_reader_or_an_unmonitored_sample_is_a_clear_error(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "p.jsonl", training(10, 5))
    (tmp_path / "only.yaml").write_text("models: [{match: credit}]\n")
    result = run_cli(
        "reference",
        "--config",
        str(tmp_path / "only.yaml"),
        "--predictions",
        str(tmp_path / "p.jsonl"),
        "--output",
        str(tmp_path / "ref.json"),
    )
    assert result.returncode == 1
    assert "no event of" in result.stderr and "is of a model the config monitors" in result.stderr
    assert not (tmp_path / "ref.json").exists()
