"""A hostile review of how the ``obsv`` command writes its answer (cli._answer_stdout,
cli.entry, auditcli._exit_now): whatever the shell or the image did with stdout, the
answer comes out whole, in the order it was printed, with the exit code and the one
line docs/reference.md §1 gives."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .test_audit_cli import three_alerts, write


def log_with_a_gap(path: Path) -> Path:
    """Three alerts and their decisions, the third line (seq 3) missing: a finding."""
    lines = write(path, three_alerts()).read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:2] + lines[3:]))
    return path


@pytest.mark.parametrize("unbuffered", ["python -u", "PYTHONUNBUFFERED=1"])
def test_unbuffered_the_answer_comes_before_the_findings(tmp_path: Path,
                                                         unbuffered: str) -> None:
    """``python -u`` and PYTHONUNBUFFERED=1 (the Dockerfile sets it) write each print at
    once, so with stdout and stderr on one pipe (``2>&1``, a container's log) the rows
    come before the finding printed after them. The answer's stdout held them in a
    buffer of its own until the end: the finding came first."""
    path = log_with_a_gap(tmp_path / "events.jsonl")
    flags, env = (["-u"], {}) if unbuffered == "python -u" else ([], {"PYTHONUNBUFFERED": "1"})
    result = subprocess.run([sys.executable, *flags, "-m", "obsv", "replay", str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            timeout=60, check=False, cwd=tmp_path,
                            env={"PATH": "/usr/bin:/bin", **env})

    lines = result.stdout.splitlines()
    assert result.returncode == 1, result.stdout
    assert lines[0].startswith("SEQ ")
    assert lines[-1] == f"obsv: {path}: line 3: seq 4 where 3 was due"
