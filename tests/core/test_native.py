"""The compiled core is used only when it was built from the sources that are there now."""

from __future__ import annotations

import importlib.machinery
import json
import sys
from pathlib import Path

import stream_monitor.core as core
from stream_monitor.core import monitor, signals

SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]
MODULES = ("signals",)


def built_from(folder: Path, source: str, python: str | None = None) -> None:
    """A folder as tools/build_native.py leaves it, for one module."""
    (folder / "signals.py").write_text(source)
    (folder / "settings.py").write_text("Y = 1\n")
    for name in (*MODULES, core.SHARED_LIBRARY):
        (folder / f"{name}{SUFFIX}").write_bytes(b"")
    manifest = {
        "python": python or sys.version.split()[0],
        "modules": list(MODULES),
        "inputs": core.build_inputs(folder),
    }
    (folder / "native.json").write_text(json.dumps(manifest))


def sources(folder: Path, **environ: str) -> bool:
    return core.uses_sources(folder, environ=environ, modules=MODULES)


def test_a_build_of_the_current_sources_is_used(tmp_path: Path) -> None:
    built_from(tmp_path, "X = 1\n")
    assert not sources(tmp_path)


def test_a_source_changed_since_the_build_means_the_sources_are_used(tmp_path: Path) -> None:
    built_from(tmp_path, "X = 1\n")
    (tmp_path / "signals.py").write_text("X = 2\n")
    assert sources(tmp_path)


def test_a_module_the_build_depends_on_changed_means_the_sources_are_used(
    tmp_path: Path,
) -> None:
    built_from(tmp_path, "X = 1\n")
    (tmp_path / "settings.py").write_text("Y = 2\n")  # not compiled, but its types are
    assert sources(tmp_path)


def test_a_missing_extension_or_shared_library_means_the_sources_are_used(tmp_path: Path) -> None:
    for name in (*MODULES, core.SHARED_LIBRARY):
        built_from(tmp_path, "X = 1\n")
        (tmp_path / f"{name}{SUFFIX}").unlink()
        assert sources(tmp_path)


def test_no_build_another_python_or_the_setting_means_the_sources_are_used(
    tmp_path: Path,
) -> None:
    assert sources(tmp_path)  # no native.json
    built_from(tmp_path, "X = 1\n", python="3.0.0")
    assert sources(tmp_path)
    built_from(tmp_path, "X = 1\n")
    assert sources(tmp_path, STREAM_MONITOR_PURE_PYTHON="1")
    assert not sources(tmp_path, STREAM_MONITOR_PURE_PYTHON="0")


def test_a_manifest_of_another_shape_means_the_sources_are_used(tmp_path: Path) -> None:
    built_from(tmp_path, "X = 1\n")
    manifest = json.loads((tmp_path / "native.json").read_text())
    for modules in ([], {}, "signals", None, ["signals", "monitor"]):
        (tmp_path / "native.json").write_text(json.dumps({**manifest, "modules": modules}))
        assert sources(tmp_path)
    (tmp_path / "native.json").write_text("[1, 2]")
    assert sources(tmp_path)


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
