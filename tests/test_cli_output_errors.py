"""A command whose answer cannot be written to stdout (a full disk, a quota, EIO) ends
with one line naming the fix and exit 2, never a traceback (docs/reference.md §1 exit
codes), and leaves the log as it was. /dev/full is a real stdout that answers every
write with ENOSPC, as a full disk does.
"""

from __future__ import annotations

import fcntl
import json
import os
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from .records import Log, seconds
from .test_audit_cli import write

CANNOT_WRITE = ("obsv: cannot write the answer to standard output: No space left on "
                "device; free space on its disk or send the output elsewhere\n")


def obsv_to_dev_full(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``obsv ARGS > /dev/full``, as a real process."""
    with open("/dev/full", "wb") as full:
        return subprocess.run([sys.executable, "-m", "obsv", *args], stdout=full,
                              stderr=subprocess.PIPE, text=True, timeout=60, check=False,
                              cwd=cwd, env={"PATH": "/usr/bin:/bin"})


def alerts(count: int) -> Log:
    log = Log()
    log.config()
    for _ in range(count):
        log.alert(after=seconds(60), issue="100")
    return log


# 3 alerts: the answer fits in stdout's buffer and fails at the last flush (for replay
# and why, the one before the process ends at once); 400: a write fails mid-answer.
@pytest.mark.parametrize("count", [3, 400], ids=["short", "long"])
@pytest.mark.parametrize("args", [["replay", "--json"], ["replay"], ["why", "100", "--log"],
                                  ["replay", "--verify"]],
                         ids=["replay --json", "replay", "why", "replay --verify"])
def test_an_answer_that_cannot_be_written_is_one_line_and_exit_2(
        tmp_path: Path, args: list[str], count: int) -> None:
    path = write(tmp_path / "events.jsonl", alerts(count))
    before = path.read_bytes()

    result = obsv_to_dev_full(*args, str(path), cwd=tmp_path)

    assert result.returncode == 2, result.stderr
    assert result.stderr == CANNOT_WRITE  # no traceback, no "Exception ignored"
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["events.jsonl"]


@pytest.mark.parametrize("args", [["render"], ["render", "--comment"], ["--help"]])
def test_other_printing_commands_say_the_same(tmp_path: Path, args: list[str]) -> None:
    result = obsv_to_dev_full(*args, cwd=tmp_path)

    assert result.returncode == 2, result.stderr
    assert result.stderr == CANNOT_WRITE


# What tells the two apart is where the error was raised, not its errno: this one is
# ENOSPC too, from writing another file (on /dev/full) while stdout is also /dev/full.
# The command's body is replaced to raise it, as no real command fails that way on cue.
_OTHER_FILE_FAILS = """
import sys
import obsv.preview

def render_command(args):
    with open("/dev/full", "wb", buffering=0) as other:
        other.write(b"not the answer")
    return 0

obsv.preview.render_command = render_command
sys.argv = ["obsv", "render"]
from obsv.cli import entry
entry()
"""


def test_an_error_writing_another_file_is_not_called_stdout(tmp_path: Path) -> None:
    with open("/dev/full", "wb") as full:
        result = subprocess.run([sys.executable, "-c", _OTHER_FILE_FAILS], stdout=full,
                                stderr=subprocess.PIPE, text=True, timeout=60,
                                check=False, cwd=tmp_path,
                                env={"PATH": "/usr/bin:/bin",
                                     "PYTHONPATH": str(Path(__file__).parents[1])})

    assert "cannot write the answer" not in result.stderr
    assert result.stderr.startswith("Traceback")  # a bug to report, not a message
    assert result.stderr.endswith("OSError: [Errno 28] No space left on device\n")
    assert "Exception ignored" not in result.stderr
    assert result.returncode == 1


@pytest.mark.parametrize("args", [["replay", "--json"], ["replay"], ["why", "100", "--log"]],
                         ids=["replay --json", "replay", "why"])
def test_a_closed_stdout_is_one_line_and_exit_2(tmp_path: Path, args: list[str]) -> None:
    """``obsv ARGS >&-``: Python starts with ``sys.stdout`` None, where a print vanishes
    (the table answered nothing, exit 0) and ``--json`` died on ``.buffer``."""
    path = write(tmp_path / "events.jsonl", alerts(3))
    argv = [*args, str(path)] if args[0] == "why" else [args[0], str(path), *args[1:]]
    result = subprocess.run(["/bin/sh", "-c", 'exec "$@" >&-', "sh", sys.executable, "-m",
                             "obsv", *argv], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, timeout=60, check=False, env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 2, result.stderr
    assert result.stderr == ("obsv: cannot write the answer to standard output: it is "
                             "closed; send the output elsewhere\n")


def _pipe_full(fd: int, deadline: float) -> bool:
    """Whether the pipe read by ``fd`` holds at least its capacity unread (its writer
    has met a full pipe), within ``deadline`` seconds."""
    capacity = fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4))[0] >= capacity:
            return True
        time.sleep(0.02)
    return False


@pytest.mark.parametrize("unbuffered", [False, True], ids=["buffered", "python -u"])
def test_a_non_blocking_stdout_that_fills_up_is_waited_for(
        tmp_path: Path, unbuffered: bool) -> None:
    """A parent may hand obsv a pipe set O_NONBLOCK (node, some CI runners): when its
    reader falls behind, the answer waits for it, as with a blocking pipe, instead of
    ending in a BlockingIOError traceback half-way through."""
    path = write(tmp_path / "events.jsonl", alerts(2000))
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    env = {"PATH": "/usr/bin:/bin", **({"PYTHONUNBUFFERED": "1"} if unbuffered else {})}
    with subprocess.Popen([sys.executable, "-m", "obsv", "replay", "--json", str(path)],
                          stdout=write_end, stderr=subprocess.PIPE, cwd=tmp_path,
                          env=env) as proc:
        os.close(write_end)
        try:
            assert _pipe_full(read_end, deadline=60), "the answer never filled the pipe"
            with os.fdopen(read_end, "rb") as answer:
                rows = answer.read().splitlines()
            assert proc.stderr is not None
            stderr = proc.stderr.read().decode()
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.wait(timeout=60) == 0, stderr
    assert stderr == ""
    assert len(rows) == 2000 and all(json.loads(row)["seq"] for row in rows)
