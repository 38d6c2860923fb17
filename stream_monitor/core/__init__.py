"""The pure monitoring core: no Kafka, no network, no clock. Bytes or dicts in, alerts out.

Its per-event modules may also be compiled next to their sources (`tools/build_native.py`,
which `make` runs). Python would import such an extension even after its source changed, so
the compiled modules are used only when every source is still the one they were built from
(`native.json`) and all of them are there, and never with STREAM_MONITOR_PURE_PYTHON=1;
otherwise the sources are.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

_HERE = Path(__file__).resolve().parent
# What tools/build_native.py compiles: what runs per event (`categories.py` stays Python).
COMPILED = ("calibration", "effects", "events", "join", "lifecycle", "monitor", "signals")
SHARED_LIBRARY = "native__mypyc"  # the code of all of them; each module is a small shim


def build_inputs(folder: Path = _HERE) -> dict[str, str]:
    """sha256 of every source a build depends on: all of the core (mypyc checks the compiled
    modules against the others' types) and `stream_monitor/errors.py` (a base class)."""
    sources = sorted(folder.glob("*.py"))
    errors = folder.parent / "errors.py"
    if errors.exists():
        sources.append(errors)
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sources}


def _extension(folder: Path, module: str) -> bool:
    return any(
        (folder / f"{module}{suffix}").exists() for suffix in importlib.machinery.EXTENSION_SUFFIXES
    )


def _compiled_is_current(folder: Path, modules: Sequence[str]) -> bool:
    try:
        manifest = json.loads((folder / "native.json").read_text())
        return bool(
            manifest["python"] == sys.version.split()[0]
            and sorted(manifest["modules"]) == sorted(modules)
            and manifest["inputs"] == build_inputs(folder)
            and _extension(folder, SHARED_LIBRARY)
            and all(_extension(folder, module) for module in modules)
        )
    except Exception:  # a manifest that is not one (any shape): no usable build
        return False


class _Sources(importlib.abc.MetaPathFinder):
    """Finds this package's modules as source files only (the extensions next to them are
    stale or unwanted)."""

    def find_spec(
        self, name: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if not name.startswith(f"{__name__}.") or path is None:
            return None
        loaders = [(importlib.machinery.SourceFileLoader, importlib.machinery.SOURCE_SUFFIXES)]
        for entry in path:
            spec = importlib.machinery.FileFinder(entry, *loaders).find_spec(name)
            if spec is not None:
                return spec
        return None


def uses_sources(
    folder: Path = _HERE,
    environ: dict[str, str] | None = None,
    modules: Sequence[str] = COMPILED,
) -> bool:
    """Whether the core runs from its Python sources (no usable compiled modules)."""
    environ = dict(os.environ) if environ is None else environ
    return environ.get("STREAM_MONITOR_PURE_PYTHON", "") not in ("", "0") or (
        not _compiled_is_current(folder, modules)
    )


PYTHON_SOURCES = uses_sources()
if PYTHON_SOURCES:
    sys.meta_path.insert(0, _Sources())
