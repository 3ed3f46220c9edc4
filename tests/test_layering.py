"""The core is sans-I/O: importing it loads no shell library (STYLE.md)."""

from __future__ import annotations

import subprocess
import sys

SHELL_LIBRARIES = ("aiohttp", "gidgethub", "structlog", "orjson", "tenacity", "prometheus_client")


def test_core_imports_no_shell_library() -> None:
    code = (
        "import sys, pkgutil, importlib, obsv.core\n"
        "for m in pkgutil.iter_modules(obsv.core.__path__):\n"
        "    importlib.import_module('obsv.core.' + m.name)\n"
        f"print(','.join(sorted(n for n in {SHELL_LIBRARIES!r} if n in sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, timeout=60)
    assert result.stdout.strip() == "", f"obsv.core loaded: {result.stdout.strip()}"


# What the core may load besides the standard library. msgspec decodes and encodes the
# records (obsv/core/codec.py): it is pure (bytes in, objects out, no files, clock or
# sockets), and typed decoding in C is what keeps a replay of the log close to a bare
# JSON parse (bench/README.md, "Replay and codec"). msgspec itself imports
# typing_extensions when it is installed.
CORE_LIBRARIES = {"msgspec", "typing_extensions"}


def test_core_loads_only_the_standard_library_and_msgspec() -> None:
    code = (
        "import sys, pkgutil, importlib, obsv.core\n"
        "for m in pkgutil.iter_modules(obsv.core.__path__):\n"
        "    importlib.import_module('obsv.core.' + m.name)\n"
        "tops = {n.split('.')[0] for n in sys.modules}\n"
        "print(','.join(sorted(t for t in tops if t not in sys.stdlib_module_names\n"
        "                      and not t.startswith('_') and t != 'obsv')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, timeout=60)
    loaded = set(filter(None, result.stdout.strip().split(",")))
    assert loaded <= CORE_LIBRARIES, f"obsv.core loaded {sorted(loaded - CORE_LIBRARIES)}"
    assert "msgspec" in loaded  # the check sees third-party modules at all


def test_core_modules_are_all_imported_by_the_check() -> None:
    import pkgutil

    import obsv.core

    names = {m.name for m in pkgutil.iter_modules(obsv.core.__path__)}
    assert {"alert", "codec", "events", "signature"} <= names


def test_core_never_reads_the_clock() -> None:
    """Decisions take time from records only, so replay cannot drift with the wall clock."""
    from pathlib import Path

    import obsv.core

    forbidden = ("datetime.now", "datetime.utcnow", "date.today", "time.time", "time.monotonic",
                 "import time", "import os", "import random", "open(")
    for source in Path(obsv.core.__path__[0]).glob("*.py"):
        text = source.read_text("utf-8")
        found = [word for word in forbidden if word in text]
        assert not found, f"{source.name} uses {found}"
