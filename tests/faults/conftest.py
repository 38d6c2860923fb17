"""The fault suite's figures: each test records what it measured, printed at the end of the run.

`make test-faults` shows them in a "fault figures" section; docs/reliability.md quotes them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

FIGURES: list[tuple[str, dict[str, Any]]] = []


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Callable[..., None]:
    def record(**values: Any) -> None:
        FIGURES.append((request.node.name, values))

    return record


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FIGURES:
        return
    terminalreporter.section("fault figures")
    for name, values in FIGURES:
        fields = " ".join(f"{key}={value}" for key, value in values.items())
        terminalreporter.write_line(f"{name}: {fields}")
