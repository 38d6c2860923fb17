"""The compiled core is used only when it was built from the sources that are there now."""

from __future__ import annotations

import hashlib
import importlib.machinery
import json
import sys
from pathlib import Path

import stream_monitor.core as core
from stream_monitor.core import monitor, signals


def built_from(folder: Path, source: str, python: str | None = None) -> None:
    (folder / "signals.py").write_text(source)
    (folder / f"signals{importlib.machinery.EXTENSION_SUFFIXES[0]}").write_bytes(b"")
    digest = hashlib.sha256(source.encode()).hexdigest()
    manifest = {"python": python or sys.version.split()[0], "modules": {"signals": digest}}
    (folder / "native.json").write_text(json.dumps(manifest))


def test_a_build_of_the_current_sources_is_used(tmp_path: Path) -> None:
    built_from(tmp_path, "X = 1\n")
    assert not core.uses_sources(tmp_path, environ={})


def test_a_source_changed_since_the_build_means_the_sources_are_used(tmp_path: Path) -> None:
    built_from(tmp_path, "X = 1\n")
    (tmp_path / "signals.py").write_text("X = 2\n")
    assert core.uses_sources(tmp_path, environ={})


def test_a_manifest_without_its_extensions_means_the_sources_are_used(tmp_path: Path) -> None:
    built_from(tmp_path, "X = 1\n")
    for path in tmp_path.iterdir():
        if path.suffix == ".so":
            path.unlink()
    assert core.uses_sources(tmp_path, environ={})


def test_no_build_another_python_or_the_setting_means_the_sources_are_used(
    tmp_path: Path,
) -> None:
    assert core.uses_sources(tmp_path, environ={})  # no native.json
    built_from(tmp_path, "X = 1\n", python="3.0.0")
    assert core.uses_sources(tmp_path, environ={})
    built_from(tmp_path, "X = 1\n")
    assert core.uses_sources(tmp_path, environ={"STREAM_MONITOR_PURE_PYTHON": "1"})
    assert not core.uses_sources(tmp_path, environ={"STREAM_MONITOR_PURE_PYTHON": "0"})


def test_the_modules_imported_are_the_ones_the_decision_names() -> None:
    for module in (monitor, signals):
        assert module.__file__ is not None
        assert module.__file__.endswith(".py") == core.PYTHON_SOURCES


def test_the_sources_finder_finds_a_source_even_next_to_an_extension() -> None:
    spec = core._Sources().find_spec("stream_monitor.core.signals", list(core.__path__))
    assert spec is not None
    assert isinstance(spec.loader, importlib.machinery.SourceFileLoader)
    assert spec.origin == str(Path(core.__file__).with_name("signals.py"))
    assert core._Sources().find_spec("json", None) is None
