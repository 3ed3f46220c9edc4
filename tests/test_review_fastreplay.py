"""A hostile review of 72f49e6: ``obsv replay --json`` reads one loop of line summaries
(codec.summaries, obsv/ledger.py), and the ``obsv`` command ends ``replay`` and ``why``
with ``os._exit`` once the answer is printed (cli.entry, auditcli._exit_now). The
command must still answer with the exit code docs/reference.md gives, whatever the
shell did with its output streams."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .test_audit_cli import three_alerts, write


def obsv_with_stderr_closed(*args: str) -> subprocess.CompletedProcess[str]:
    """``obsv ARGS 2>&-``: the shell starts it with no stderr at all (Python then has
    ``sys.stderr is None``), as a cron line or a service unit may."""
    return subprocess.run(["/bin/sh", "-c", 'exec "$@" 2>&-', "sh", sys.executable, "-m",
                           "obsv", *args], capture_output=True, text=True, timeout=60,
                          check=False, env={"PATH": "/usr/bin:/bin"})


@pytest.mark.parametrize(("log", "args", "expected"), [
    ("complete", ["replay", "--json"], 0), ("complete", ["replay"], 0),
    ("complete", ["replay", "--verify"], 0), ("complete", ["why", "100", "--log"], 0),
    ("bad line", ["replay", "--json"], 2), ("bad line", ["replay"], 2),
    ("bad line", ["why", "100", "--log"], 2)],
    ids=["replay --json", "replay", "replay --verify", "why", "bad line: replay --json",
         "bad line: replay", "bad line: why"])
def test_a_closed_stderr_does_not_change_the_exit_code(tmp_path: Path, log: str,
                                                       args: list[str], expected: int) -> None:
    """``_exit_now`` flushed ``sys.stderr`` unconditionally: with stderr closed that is
    None, the flush raised AttributeError after the answer was printed, and every
    replay and why exited 1 (a complete answer with findings) instead of 0, or instead
    of 2 for a bad line. ``cli.main`` as a function still returned the right code."""
    path = write(tmp_path / "events.jsonl", three_alerts())
    if log == "bad line":
        lines = path.read_bytes().splitlines(keepends=True)
        path.write_bytes(b"".join(lines[:3]) + b"{not json\n" + b"".join(lines[3:]))
    argv = [*args, str(path)] if args[0] == "why" else [args[0], str(path), *args[1:]]
    result = obsv_with_stderr_closed(*argv)
    assert result.returncode == expected, result
    if log == "complete":
        assert result.stdout  # the answer is printed, as before
