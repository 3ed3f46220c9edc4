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
