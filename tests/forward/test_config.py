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
    ],
)
def test_errors_name_the_key_and_never_the_url(forward: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build_config({"forward": forward}, environ={})
    assert message in str(caught.value)
    assert "token" not in str(caught.value)


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
