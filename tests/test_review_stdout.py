"""A hostile review of how the ``obsv`` command writes its answer (streams.answer_stdout,
cli.entry, auditcli._exit_now): whatever the shell or the image did with stdout, the
answer comes out whole, in the order it was printed, with the exit code and the one
line docs/reference.md §1 gives."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .records import Log
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


def obsv_with_stderr_full(*args: str, stdout: str, cwd: Path) -> int:
    """``obsv ARGS 2>/dev/full``, stdout on /dev/full too (``>/dev/full 2>&1``: a
    ``>>file 2>&1`` on a full disk) or on /dev/null; the exit code."""
    with open("/dev/full", "wb") as full, open(stdout, "wb") as out:
        return subprocess.run([sys.executable, "-m", "obsv", *args], stdout=out,
                              stderr=full, timeout=60, check=False, cwd=cwd,
                              env={"PATH": "/usr/bin:/bin"}).returncode


@pytest.mark.parametrize(("args", "stdout"), [
    (["replay", "LOG"], "/dev/full"), (["replay", "LOG", "--json"], "/dev/full"),
    (["replay", "LOG", "--verify"], "/dev/full"), (["why", "100", "--log", "LOG"], "/dev/full"),
    (["replay", "--no-such-flag"], "/dev/null"), (["replay", "no-such-log"], "/dev/null"),
    (["replay", "BAD"], "/dev/null"), (["why", "100", "--log", "BAD"], "/dev/null")],
    ids=["replay &>full", "replay --json &>full", "replay --verify &>full", "why &>full",
         "usage error 2>full", "no log 2>full", "bad line 2>full", "why: bad line 2>full"])
def test_a_full_stderr_keeps_exit_2(tmp_path: Path, args: list[str], stdout: str) -> None:
    """A message stderr cannot take is lost, as under ``2>&-``; the exit code must still
    say what happened (docs/reference.md §1: 2, no answer). The failed print of the
    message raised instead: a traceback nobody could read and exit 1, which reads as a
    finding (a mismatch, for a ``replay --verify >>file 2>&1`` from cron on a full
    disk), or 120 from Python's own flush at exit."""
    log = write(tmp_path / "events.jsonl", three_alerts())
    bad = tmp_path / "bad.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    bad.write_bytes(b"".join(lines[:3]) + b"{not json\n" + b"".join(lines[3:]))
    argv = [{"LOG": str(log), "BAD": str(bad)}.get(arg, arg) for arg in args]

    assert obsv_with_stderr_full(*argv, stdout=stdout, cwd=tmp_path) == 2


def test_a_full_stderr_keeps_the_answer_and_exit_1_for_a_finding(tmp_path: Path) -> None:
    """The rows are the answer and all of them come out; the gap named on (a full)
    stderr is still exit 1. Its failed print made the exit Python's 120 before."""
    path = log_with_a_gap(tmp_path / "events.jsonl")
    with open("/dev/full", "wb") as full:
        result = subprocess.run([sys.executable, "-m", "obsv", "replay", "--json", str(path)],
                                stdout=subprocess.PIPE, stderr=full, timeout=60, check=False,
                                cwd=tmp_path, env={"PATH": "/usr/bin:/bin"})

    assert result.returncode == 1
    assert [row["seq"] for row in map(json.loads, result.stdout.splitlines())] == [2, 4, 6]


TITLE = "Zürich naïve ✓"


@pytest.mark.parametrize("encoding", ["PYTHONIOENCODING=ascii", "PYTHONIOENCODING=latin-1",
                                      "LC_ALL=C PYTHONUTF8=0"])
@pytest.mark.parametrize("command", ["why", "render"])
def test_an_answer_beyond_the_locale_s_encoding_is_printed_escaped(
        tmp_path: Path, encoding: str, command: str) -> None:
    """What the terminal's encoding cannot hold (ASCII, Latin-1: a C locale without
    UTF-8 mode, a PYTHONIOENCODING) comes out escaped, as Python's own stderr writes
    it, with the rest of the answer and exit 0: an alert's title in ``why``, the em
    dash of the issue title ``render`` prints for Sentry's sample. It was a
    UnicodeEncodeError traceback half-way through the answer, and exit 1."""
    log = Log()
    log.config()
    log.alert(issue="100", title=TITLE)
    path = write(tmp_path / "events.jsonl", log)
    argv, text = ((["why", "100", "--log", str(path)], TITLE) if command == "why"
                  else (["render"], "ReferenceError \u2014 <anonymous>"))
    env = dict(pair.split("=") for pair in encoding.split())
    result = subprocess.run([sys.executable, "-m", "obsv", *argv], capture_output=True,
                            timeout=60, check=False, cwd=tmp_path,
                            env={"PATH": "/usr/bin:/bin", **env})

    assert (result.returncode, result.stderr) == (0, b"")
    codec = "latin-1" if "latin-1" in encoding else "ascii"
    assert text.encode(codec, "backslashreplace") in result.stdout
    assert result.stdout.endswith(b"\n")


def test_a_closed_stdout_under_dev_mode_is_still_one_line(tmp_path: Path) -> None:
    """``python -X dev`` reports what a file's close raises when it is collected; the
    answer's text layer over a closed stdout still held the answer, and its close
    failed again after the one line: "Exception ignored in: <_io.TextIOWrapper>" and
    a traceback. Once reported, the answer goes nowhere, as /dev/null takes it when
    stdout has a descriptor."""
    path = write(tmp_path / "events.jsonl", three_alerts())
    result = subprocess.run(["/bin/sh", "-c", 'exec "$@" >&-', "sh", sys.executable, "-X",
                             "dev", "-m", "obsv", "replay", str(path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            timeout=60, check=False, env={"PATH": "/usr/bin:/bin"})

    assert result.returncode == 2
    assert result.stderr == ("obsv: cannot write the answer to standard output: it is "
                             "closed; send the output elsewhere\n")
