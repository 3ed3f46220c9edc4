"""`obsv replay` and `obsv why` as a user runs them: a real process, a log on disk.

A bad line is named on stderr and never answered around (docs/reference.md §1 exit
codes); text from the log never reaches the terminal as control characters; a closed
stdout ends the command quietly.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from msgspec.structs import replace

from obsv.core.alert import Alert
from obsv.core.events import AlertReceived, Delivery
from obsv.eventlog import encode_line

from .records import Log, make_alert, seconds

BROKEN_PIPE_STATUS = 141  # 128 + SIGPIPE, what a shell shows for `cmd | head`


def obsv(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "obsv", *args], capture_output=True,
                          text=True, timeout=60, check=False, cwd=cwd,
                          env={"PATH": "/usr/bin:/bin", **(env or {})})


def write(path: Path, log: Log) -> Path:
    path.write_bytes(b"".join(encode_line(envelope) for envelope in log.records))
    return path


def three_alerts(issue: str = "100") -> Log:
    log = Log()
    log.config()
    for _ in range(3):
        log.alert(after=seconds(60), issue=issue)
    return log


@pytest.mark.parametrize("args", [["replay"], ["replay", "--json"], ["why", "100", "--log"]],
                         ids=["replay", "replay --json", "why"])
def test_a_bad_line_is_named_and_nothing_partial_is_printed(tmp_path: Path,
                                                            args: list[str]) -> None:
    path = write(tmp_path / "events.jsonl", three_alerts())
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:3]) + b"{not json\n" + b"".join(lines[3:]))

    result = obsv(*args, str(path))

    assert result.returncode == 2, result
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"obsv: {path}: line 4 is not a valid record")


def test_verify_reports_a_bad_line_as_a_finding(tmp_path: Path) -> None:
    path = write(tmp_path / "events.jsonl", three_alerts())
    with path.open("ab") as f:
        f.write(b"[1, 2]\n")

    result = obsv("replay", str(path), "--verify")

    assert result.returncode == 1
    assert "line 8" in result.stderr and "not a valid record" in result.stderr
    assert "MISMATCH line 8" in result.stdout


def test_replay_json_reports_a_gap_with_exit_1(tmp_path: Path) -> None:
    log = three_alerts()
    log.records = [replace(e, seq=e.seq + (1 if e.seq > 2 else 0)) for e in log.records]
    path = write(tmp_path / "events.jsonl", log)

    result = obsv("replay", str(path), "--json")

    assert result.returncode == 1
    assert len(result.stdout.splitlines()) == 3  # the answer, and a reason for the 1
    assert "seq 4 where 3 was due" in result.stderr


EVIL_ID = "66\x1b[2J\n999  2026-03-01 12:00:00  FAKE"


def hostile_log() -> Log:
    log = Log()
    log.config()
    evil = Alert(EVIL_ID, "ev-\x1b]0;pwned\x07", "error",
                 "p:hash:66", "p", "prod\r\x1b[2K", "Boom\x1b[31m red\u202e\n    decision: fake",
                 None, None)
    log.add(AlertReceived(Delivery("r", "event_alert", None, "s"), evil, "{}"))
    log.alert(issue="67")
    return log


def test_replay_and_why_escape_control_characters(tmp_path: Path) -> None:
    path = write(tmp_path / "events.jsonl", hostile_log())

    table = obsv("replay", str(path))
    why = obsv("why", EVIL_ID, "--log", str(path))

    for result in (table, why):
        assert result.returncode == 0, result.stderr
        assert "\x1b" not in result.stdout and "\r" not in result.stdout
        assert "\u202e" not in result.stdout and "\x07" not in result.stdout
        assert "FAKE" in result.stdout and "\\x1b" in result.stdout
    assert len(table.stdout.splitlines()) == 1 + 2 + 2  # header, two alerts, footnote
    assert not any(line.startswith("999") for line in table.stdout.splitlines())
    assert "\\n999" in table.stdout
    decisions = [line for line in why.stdout.splitlines() if line.startswith("    decision:")]
    assert decisions == ["    decision: open* (new_issue: no linked GitHub issue yet)"]


def test_replay_json_has_no_raw_control_characters(tmp_path: Path) -> None:
    log = hostile_log()
    c1 = make_alert(issue="68", event_id="ev-c1")
    log.add(AlertReceived(Delivery("r", "event_alert", None, "s"),
                          replace(c1, title="csi\u009b31m"), "{}"))
    path = write(tmp_path / "events.jsonl", log)

    result = obsv("replay", str(path), "--json")

    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["sentry_issue_id"] for r in rows][-1] == "68"
    assert rows[-1]["title"] == "csi\u009b31m"  # the value survives, escaped in JSON
    assert "\u009b" not in result.stdout and "\x1b" not in result.stdout


@pytest.mark.parametrize("args", [["why", "100", "--log"], ["replay", "--json"], ["replay"]],
                         ids=["why", "replay --json", "replay"])
def test_a_closed_stdout_ends_quietly(tmp_path: Path, args: list[str]) -> None:
    log = Log()
    log.config()
    for _ in range(400):
        log.alert(after=seconds(60), issue="100")
    path = write(tmp_path / "events.jsonl", log)

    # The reader goes away before the command writes, as `| head` does after a few lines.
    proc = subprocess.Popen([sys.executable, "-m", "obsv", *args, str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={"PATH": "/usr/bin:/bin"})
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == BROKEN_PIPE_STATUS
    assert stderr == ""


@pytest.mark.parametrize("since", ["99999999999d", "9999999999999999999999s", "0001-01-01"])
def test_since_out_of_range_is_a_usage_error(tmp_path: Path, since: str) -> None:
    path = write(tmp_path / "events.jsonl", three_alerts())

    result = obsv("replay", str(path), "--since", since)

    if since == "0001-01-01":  # far back but representable: everything
        assert result.returncode == 0 and len(result.stdout.splitlines()) == 4
        return
    assert result.returncode == 2
    assert result.stderr.startswith(f"obsv: --since {since!r}") and result.stderr.count("\n") == 1


def test_replay_policy_current_exits_1_when_decisions_differ(tmp_path: Path) -> None:
    log = Log()
    log.config(min_level="error")
    log.alert(issue="1", level="warning")
    log.alert(after=seconds(60), issue="2", level="error")
    path = write(tmp_path / "events.jsonl", log)

    same = obsv("replay", str(path), "--policy", "current", env={"OBSV_MIN_LEVEL": "error"})
    differs = obsv("replay", str(path), "--policy", "current", env={"OBSV_MIN_LEVEL": "warning"})
    as_json = obsv("replay", str(path), "--policy", "current", "--json",
                   env={"OBSV_MIN_LEVEL": "warning"})

    assert same.returncode == 0, same.stderr
    assert differs.returncode == 1
    assert "open" in differs.stdout.splitlines()[1] and "recorded: suppress" in differs.stdout
    assert "1 decision(s) differ" in differs.stderr
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout.splitlines()[0])["recorded_action"] == "suppress"


@pytest.mark.parametrize(("args", "said"), [(["replay", "--json"], '"sentry_issue_id":"100"'),
                                           (["replay", "--verify"], "ok: 7 records"),
                                           (["why", "100", "--log"], "Sentry issue 100")])
def test_the_collector_is_back_on_after_an_audit_command(tmp_path: Path, args: list[str],
                                                         said: str,
                                                         capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    """replay and why run without the cyclic collector; a caller in the same process
    (a test, an embedding tool) gets it back, whatever the command answered."""
    import gc

    from obsv.cli import main

    path = write(tmp_path / "events.jsonl", three_alerts())
    argv = [*args, str(path)] if args[0] == "why" else [args[0], str(path), *args[1:]]
    assert gc.isenabled()
    assert main(argv) == 0
    assert gc.isenabled()
    assert said in capsys.readouterr().out


# What `obsv replay` and `obsv why` must not load: the server's stack. They read a file
# and print; starting asyncio, aiohttp and structlog costs more than folding a small log.
SERVER_STACK = ("asyncio", "aiohttp", "structlog", "gidgethub", "jinja2", "prometheus_client",
                "tenacity", "obsv.eventlog", "obsv.server", "obsv.consumer")


@pytest.mark.parametrize("args", [["replay", "--json"], ["replay", "--verify"],
                                  ["why", "100", "--log"]],
                         ids=["replay --json", "replay --verify", "why"])
def test_replay_and_why_start_without_the_server_stack(tmp_path: Path, args: list[str]) -> None:
    path = write(tmp_path / "events.jsonl", three_alerts())
    code = ("import sys\nfrom obsv.cli import main\n"
            f"code = main({[*args, str(path)]!r})\n"
            f"loaded = [m for m in {SERVER_STACK!r} if m in sys.modules]\n"
            "print('LOADED', ','.join(loaded), 'EXIT', code, file=sys.stderr)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, check=False, env={"PATH": "/usr/bin:/bin"})
    assert result.stderr.strip().splitlines()[-1] == "LOADED  EXIT 0", result.stderr
    assert result.stdout  # it did answer: rows, the verify summary, the timeline


def test_the_audit_of_lines_handed_to_it_is_the_audit_of_the_file(tmp_path: Path) -> None:
    """audit() reads a file itself (without obsv.eventlog), or takes the lines as
    iter_lines gives them (another store's log): the same rows and findings, a torn
    last line included."""
    from obsv.audit import audit, row_json
    from obsv.eventlog import iter_lines

    path = write(tmp_path / "events.jsonl", three_alerts())
    with open(path, "ab") as f:
        f.write(b'{"seq":8,"at":')  # a write the crash cut short
    from_file, from_lines = audit(path), audit(iter_lines(path))
    assert [row_json(from_file, r) for r in from_file.rows.values()] == [
        row_json(from_lines, r) for r in from_lines.rows.values()]
    assert len(from_file.rows) == 3
    assert [str(f) for f in from_file.findings] == [str(f) for f in from_lines.findings] == [
        "line 8: torn last line (14 bytes, no newline): set aside on the next start"]
