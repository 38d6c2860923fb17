"""The forward section: validated at start-up with the key named, secrets redacted, and the
README's and configs/forward.yaml's examples valid."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from stream_monitor.config import build_config, load_config
from stream_monitor.errors import ConfigError
from stream_monitor.forward.assembly import build_sinks
from stream_monitor.forward.clients import consumer_settings, producer_settings
from tests.helpers import ROOT, run_cli


@pytest.mark.parametrize(
    ("forward", "message"),
    [
        ({"webhooks": [{"url": "ftp://x/token"}]}, "forward.webhooks[0].url: must be an http"),
        (
            {"alertmanager": {"url": "http://am", "repeat_post": "soon"}},
            "forward.alertmanager.repeat_post",
        ),
        ({"webhooks": [{"url": "http://a", "mode": "mixed"}]}, "forward.webhooks[0].mode"),
        (
            {"webhooks": [{"url": "http://a"}, {"url": "http://b", "name": "webhook-0"}]},
            "two sinks",
        ),
        ({"give_up_after": "forever"}, "forward.give_up_after"),
        ({"sinks": []}, "forward.sinks"),
        # Timers the forwarder needs: `none` or 0 used to become the default silently.
        ({"give_up_after": "none"}, "forward.give_up_after: must be a duration"),
        ({"commit_interval": 0}, "forward.commit_interval: Input should be greater than 0"),
        ({"webhooks": [{"url": "http://a", "timeout": 0}]}, "forward.webhooks[0].timeout"),
        (
            {"alertmanager": {"url": "http://am", "active_for": "off"}},
            "forward.alertmanager.active_for: must be a duration",
        ),
        (
            {"alertmanager": {"url": "http://am", "resolve_timeout": "5m", "repeat_post": "5m"}},
            "forward.alertmanager.repeat_post: 300000 ms is not shorter than resolve_timeout",
        ),
        (
            {"alertmanager": {"url": "http://am", "resolve_timeout": "1m"}, "give_up_after": "1s"},
            None,
        ),
        ({"retry_backoff": "10s", "retry_backoff_max": "1s"}, "forward.retry_backoff: 10000 ms"),
        (
            {
                "webhooks": [
                    {"url": "http://a"},
                    {"url": "https://u:token@b", "headers": {"authorization": "Bearer x"}},
                ]
            },
            "forward.webhooks[1].url: has credentials (sent as Basic authentication) and "
            "forward.webhooks[1].headers has an Authorization header",
        ),
    ],
)
def test_errors_name_the_key_and_never_the_url(
    forward: dict[str, object], message: str | None
) -> None:
    if message is None:  # valid: the line above it is not
        build_config({"forward": forward}, environ={})
        return
    with pytest.raises(ConfigError) as caught:
        build_config({"forward": forward}, environ={})
    assert message in str(caught.value)
    assert "token" not in str(caught.value)


def test_repeat_post_defaults_to_half_the_resolve_timeout_in_one_place() -> None:
    forward = build_config(
        {"forward": {"alertmanager": {"url": "http://am", "resolve_timeout": "1m"}}}, environ={}
    ).forward
    assert forward.alertmanager is not None and forward.alertmanager.repeat_every_ms == 30_000
    [sink] = build_sinks(forward)
    assert sink.next_due() is None and sink._repeat == 30.0  # type: ignore[attr-defined]


def test_the_readme_example_and_configs_forward_yaml_are_valid() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Route alerts") :]
    block = re.search(r"```yaml\n(forward:.*?)```", section, re.S)
    assert block, "the README's Route alerts section lost its YAML example"
    config = build_config(yaml.safe_load(block.group(1)), environ={})
    assert [sink.name for sink in build_sinks(config.forward)] == [
        "alertmanager",
        "webhook-0",
        "webhook-1",
    ]
    shipped = load_config(ROOT / "configs" / "forward.yaml", environ={})
    assert [sink.name for sink in build_sinks(shipped.forward)] == ["alertmanager", "ops"]


def test_check_config_redacts_webhook_secrets(tmp_path: Path) -> None:
    path = tmp_path / "forward.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "forward": {
                    "webhooks": [
                        {
                            "url": "https://hooks.slack.com/services/T0/B0/very-secret-path",
                            "format": "slack",
                        },
                        {
                            "url": "https://ops.example/hook",
                            "headers": {"Authorization": "Bearer abcd-1234"},
                        },
                    ]
                }
            }
        )
    )
    result = run_cli("check-config", str(path))
    assert result.returncode == 0, result.stderr
    assert "very-secret-path" not in result.stdout and "abcd-1234" not in result.stdout
    assert (
        "https://hooks.slack.com/..." in result.stdout and '"Authorization": "***"' in result.stdout
    )


def test_the_forwarders_clients_take_the_raw_kafka_settings() -> None:
    config = build_config(
        {
            "kafka": {
                "client": {"security.protocol": "SASL_SSL"},
                "consumer": {"fetch.min.bytes": 10},
                "producer": {"compression.type": "zstd", "message.timeout.ms": 60000},
            },
            "forward": {"webhooks": [{"url": "http://a"}]},
        },
        environ={},
    )
    producer = producer_settings(config)
    assert producer["compression.type"] == "zstd" and producer["message.timeout.ms"] == 60000
    assert producer["security.protocol"] == "SASL_SSL" and producer["enable.idempotence"]
    consumer = consumer_settings(config)
    assert consumer["fetch.min.bytes"] == 10 and consumer["security.protocol"] == "SASL_SSL"
    assert "compression.type" not in consumer
