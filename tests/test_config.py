"""Config errors fail fast and name the offending key; env overrides and secrets behave."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream_monitor.config import build_config, load_config, parse_duration_ms
from stream_monitor.errors import ConfigError
from stream_monitor.kafka.settings import consumer_settings
from tests.helpers import ROOT


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"join": {"ttl": "seven days"}}, "join.ttl: 'seven days' is not a duration"),
        (
            {"join": {"max_pending_predictions": 0}},
            "join.max_pending_predictions: Input should be greater than or equal to 1",
        ),
        ({"alerts": {"cooldown": "soon"}}, "alerts.cooldown: Input should be a valid integer"),
        (
            {"detectors": {"x": {"type": "cusum"}}},
            "detectors.x.type: Input should be 'adwin' or 'page_hinkley'",
        ),
        (
            {"detectors": {"x": {"type": "adwin", "params": {"delt": 1}}}},
            "detectors.x.params.delt: not a parameter of adwin",
        ),
        ({"signals": {"feature": ["nope"]}}, "signals.feature: unknown detector rule 'nope'"),
        (
            {"models": [{"match": "*", "overrides": {"tenure": ["ph"]}}]},
            "models[0].overrides.tenure: unknown detector rule 'ph'",
        ),
        (
            {"models": [{"match": "*", "task": "ranking"}]},
            "models[0].task: Input should be 'auto', 'classification' or 'regression'",
        ),
        (
            {"kafka": {"processing_guarantee": "maybe"}},
            "kafka.processing_guarantee: Input should be",
        ),
        (
            {"kafka": {"bootstrap_server": "x"}},
            "kafka.bootstrap_server: Extra inputs are not permitted",
        ),
        ({"typo": 1}, "typo: Extra inputs are not permitted"),
        ({"alerts": {"min_effect": -1}}, "alerts.min_effect: Input should be greater than or"),
        ({"alerts": {"resolve": {"margin": 1.5}}}, "alerts.resolve.margin: Input should be less"),
        ({"alerts": {"resolve": {"after": 3}}}, "alerts.resolve.after: Extra inputs are not"),
        (
            {"detectors": {"v": {"type": "page_hinkley", "calibrate": {"statistic": "spread"}}}},
            "detectors.v.calibrate: statistic 'spread' needs an adwin detector",
        ),
        (
            {"detectors": {"v": {"type": "adwin", "calibrate": {"series": "binary-ish"}}}},
            "detectors.v.calibrate.series: Input should be 'any', 'continuous', 'binary' or 'categorical'",
        ),
        (
            {"detectors": {"v": {"type": "adwin", "calibrate": {"clip": 0}}}},
            "detectors.v.calibrate.clip: Input should be greater than 0",
        ),
    ],
)
def test_errors_name_the_offending_key(data: dict, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build_config(data, environ={})
    assert message in str(caught.value)


def test_environment_overrides_nested_keys_and_the_state_key() -> None:
    config = build_config(
        {"kafka": {"group_id": "g"}},
        environ={
            "STREAM_MONITOR__KAFKA__BOOTSTRAP_SERVERS": "broker:9093",
            "STREAM_MONITOR__KAFKA__PARTITIONS": "8",
            "STREAM_MONITOR__JOIN__TTL": "2h",
            "STREAM_MONITOR_STATE_KEY": "a-long-enough-secret",
            "UNRELATED": "x",
        },
    )
    assert config.kafka.bootstrap_servers == "broker:9093" and config.kafka.group_id == "g"
    assert config.kafka.partitions == 8 and config.join.ttl == 7_200_000
    assert config.signing_key() == b"a-long-enough-secret"
    assert "a-long-enough-secret" not in repr(config)


def test_durations() -> None:
    assert parse_duration_ms("7d") == 604_800_000
    assert parse_duration_ms("200ms") == 200
    assert parse_duration_ms("1.5s") == 1500
    assert parse_duration_ms(30) == 30_000
    assert parse_duration_ms("none") is None


def test_shipped_configs_are_valid() -> None:
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        load_config(path, environ={})


def test_unreadable_or_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "missing.yaml", environ={})
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="the top level must be a mapping"):
        load_config(bad, environ={})


def test_static_membership_gives_each_instance_its_own_group_instance_id() -> None:
    kafka = {"group_id": "fraud", "instance_id": "pod-0"}
    static = build_config({"kafka": {**kafka, "static_membership": True}}, environ={})
    assert consumer_settings(static)["group.instance.id"] == "fraud-pod-0"
    assert "group.instance.id" not in consumer_settings(build_config({"kafka": kafka}, environ={}))


def test_built_in_rules_stay_available_and_a_kind_left_out_keeps_its_defaults() -> None:
    """A config that tunes one rule (river's `adwin`, say) or names the rules of one kind keeps
    the built-in calibrated defaults for everything else."""
    config = build_config(
        {
            "detectors": {"adwin": {"type": "adwin", "params": {"delta": 0.01}}},
            "signals": {"feature": ["adwin"]},
        },
        environ={},
    )
    settings = config.monitor_settings()
    assert settings.signals == {
        "performance": ("rate", "mean"),
        "prediction": ("rate", "mean"),
        "feature": ("adwin",),
        "data_quality": ("rate",),
    }
    assert settings.rules["adwin"].params["delta"] == 0.01
    assert settings.rules["mean"].calibration is not None
    assert settings.min_effect == 0.2 and settings.resolve and settings.resolve_margin == 0.25
