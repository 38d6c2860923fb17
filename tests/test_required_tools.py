"""Tools some tests talk to (Alertmanager, promtool, ...): by hand a missing one skips with a
message; under `make test` (STREAM_MONITOR_REQUIRE_TOOLS=1) it fails, so CI proves them."""

from __future__ import annotations

import re

import pytest

from tests.helpers import REQUIRE_TOOLS, ROOT, required_tool


def test_a_missing_tool_skips_by_hand_and_fails_when_required(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv(REQUIRE_TOOLS, raising=False)
    with pytest.raises(pytest.skip.Exception, match="promtool is not installed"):
        required_tool("promtool", hint="make test-tools")
    monkeypatch.setenv(REQUIRE_TOOLS, "1")
    with pytest.raises(pytest.fail.Exception, match="STREAM_MONITOR_REQUIRE_TOOLS=1 requires it"):
        required_tool("promtool", hint="make test-tools")


def test_make_test_and_test_faults_require_the_tools_after_installing_them() -> None:
    makefile = (ROOT / "Makefile").read_text()
    for target in ("test", "test-faults"):
        rule = re.search(rf"^{target}:([^\n]*)\n((?:\t[^\n]*\n)+)", makefile, re.M)
        assert rule, target
        assert "test-tools" in rule.group(1).split(), target
        assert f"{REQUIRE_TOOLS}=1 $(PYTEST)" in rule.group(2), target
