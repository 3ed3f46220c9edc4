"""A damaged line quoting a huge value is named in one short line, not echoed whole."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import SECRET
from .test_log_hardening import write_hooks

MiB = 1 << 20


async def log_with_a_huge_wrong_value(tmp_path: Path) -> Path:
    path = tmp_path / "events.jsonl"
    await write_hooks(path, 5)
    lines = path.read_bytes().splitlines(keepends=True)
    # Valid JSON, a record type nobody knows: the codec's message quotes the value.
    lines[-1] = lines[-1].replace(b'"type":"hook.received"', b'"type":"' + b"9" * MiB + b'"')
    path.write_bytes(b"".join(lines))
    return path


def obsv(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "obsv", *args], capture_output=True, text=True, cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "OBSV_SENTRY_CLIENT_SECRET": SECRET, "OBSV_PORT": "0",
             "OBSV_LOG_FORMAT": "json", "OBSV_EVENT_LOG": str(tmp_path / "events.jsonl"),
             "OBSV_OUTBOX_DIR": str(tmp_path / "outbox")},
        timeout=60, check=False)


async def test_serve_names_a_huge_wrong_value_in_one_short_line(tmp_path: Path) -> None:
    path = await log_with_a_huge_wrong_value(tmp_path)
    before = path.read_bytes()
    result = obsv(tmp_path, "serve")
    assert result.returncode == 2, result.stderr[:500]
    assert result.stderr.count("\n") == 1 and len(result.stderr) < 1000, len(result.stderr)
    assert "line 5 is not a valid record" in result.stderr
    assert "characters)" in result.stderr  # says it was cut
    assert path.read_bytes() == before


@pytest.mark.parametrize("args", [["replay"], ["why", "1"], ["replay", "--verify"]])
async def test_the_audit_commands_name_a_huge_wrong_value_in_one_short_line(
        tmp_path: Path, args: list[str]) -> None:
    await log_with_a_huge_wrong_value(tmp_path)
    result = obsv(tmp_path, *args)
    assert result.returncode in (1, 2)
    assert len(result.stdout) + len(result.stderr) < 2000
