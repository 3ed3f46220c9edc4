"""Every README snippet marked runnable runs, in dry-run mode, against a real server."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from .process import ServeProcess

ROOT = Path(__file__).resolve().parent.parent
RUNNABLE = re.compile(r"<!-- runnable[^>]*-->\n```sh\n(.*?)\n```", re.S)


def runnable_blocks() -> list[str]:
    return RUNNABLE.findall((ROOT / "README.md").read_text("utf-8"))


def test_the_readme_has_runnable_snippets() -> None:
    assert runnable_blocks(), "mark shell blocks with <!-- runnable --> so they are tested"


async def test_runnable_snippets_succeed(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "config", tmp_path / "config")
    venv_bin = tmp_path / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "obsv").write_text(f"#!/bin/sh\nexec {sys.executable} -m obsv \"$@\"\n")
    (venv_bin / "obsv").chmod(0o755)
    server = ServeProcess(tmp_path, {"OBSV_CONFIG": "config/local.toml"})
    await server.start()
    try:
        for block in runnable_blocks():
            result = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", block], cwd=tmp_path, capture_output=True,
                text=True, timeout=120, check=False,
                env={**os.environ, "OBSV_PORT": str(server.port)})
            assert result.returncode == 0, f"{block}\n---\n{result.stdout}\n{result.stderr}"
            assert "ok:" in result.stdout and "obsv_deliveries_total" in result.stdout
    finally:
        server.stop()
    assert (tmp_path / "var" / "outbox" / "1117540176.md").exists()
