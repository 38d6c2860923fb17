"""`stream-monitor backtest`: report files with the detections, and scores against the truth."""

from __future__ import annotations

from pathlib import Path

import orjson

from stream_monitor.scenarios import generate
from tests.helpers import run_cli
from tests.test_replay import write_jsonl


def test_backtest_report_holds_the_detections_and_scores_them(tmp_path: Path) -> None:
    scenario = generate("default", events=4000, seed=7)
    write_jsonl(tmp_path / "p.jsonl", scenario.predictions)
    write_jsonl(tmp_path / "l.jsonl", scenario.labels)
    truth = [{"model": model, "index": index} for model, index in scenario.change_points.items()]
    write_jsonl(tmp_path / "truth.jsonl", truth)
    report = tmp_path / "report"
    result = run_cli(
        "backtest",
        "--config",
        "configs/example.yaml",
        "--predictions",
        str(tmp_path / "p.jsonl"),
        "--labels",
        str(tmp_path / "l.jsonl"),
        "--truth",
        str(tmp_path / "truth.jsonl"),
        "--report",
        str(report),
    )
    assert result.returncode == 0, result.stderr
    alerts = [orjson.loads(line) for line in (report / "alerts.jsonl").read_bytes().splitlines()]
    assert alerts
    scores = orjson.loads((report / "scores.json").read_bytes())
    assert (scores["true_positives"], scores["false_positives"], scores["misses"]) == (2, 0, 0)
    # Change at prediction 2000 of each; credit's error is only seen through labels that arrive
    # 60 s (600 predictions) later, fraud's input moves at once.
    assert [(c["stream"], c["detected_at"], c["delay"], c["by"]) for c in scores["changes"]] == [
        ("credit", 2773, 773, "credit performance error / rate"),
        ("fraud", 2045, 45, "fraud feature amount / mean"),
    ]
    detected = [a for a in alerts if a["type"] == "stream_monitor.drift_detected"]
    # fraud's score, estimated error and country mix moved with its amount: the same change,
    # seen three times more
    assert scores["duplicates"] == len(detected) - 2 == 3

    index = (report / "index.html").read_text()
    for alert in alerts:
        assert alert["id"] in index  # every detection is listed in the page
    images = sorted(report.glob("*.png"))
    # One plot per key×signal, each a real PNG, each shown on the page (credit's and fraud's
    # estimated error from their scores included; fraud's country and merchant: their distance
    # per block and their unseen rate, its new_customer flag: its rate).
    assert len(images) == 33
    for image in images:
        assert image.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
        assert f"src='{image.name}'" in index
    # the reference of the period, in the format `stream-monitor reference` writes
    reference = orjson.loads((report / "reference.json").read_bytes())
    assert reference["format"] == "stream-monitor/reference/1"
    assert set(reference["models"]) == {"credit", "eta", "fraud"}
    fraud = reference["models"]["fraud"]
    assert fraud["features"]["country"] == "categorical" and fraud["events"] == 4000
    assert {"feature/amount", "feature/country", "performance/error"} <= set(fraud["signals"])
    assert f"{scores['true_positives']} true positives" in result.stderr
