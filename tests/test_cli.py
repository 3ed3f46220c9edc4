"""The CLI's help and usage errors: complete help, one-line errors, exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from obsv.cli import main

from .conftest import SECRET, fill
from .process import free_port


@pytest.mark.parametrize(("argv", "expected"), [
    (["--help"], ["serve", "replay", "why", "send-test"]),
    (["serve", "--help"], ["--config"]),
    (["replay", "--help"], ["--json", "--verify", "--policy", "--issue", "--since", "LOG"]),
    (["why", "--help"], ["SENTRY_ISSUE_ID", "--log"]),
    (["send-test", "--help"], ["--url", "--secret", "--payload", "--config", "--resource"]),
])
def test_help_is_complete(argv: list[str], expected: list[str],
                          capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert all(word in out for word in expected), out


@pytest.mark.parametrize("argv", [[], ["nope"], ["replay", "--policy", "tomorrow"],
                                  ["why"], ["serve", "--bogus"]])
def test_usage_errors_are_one_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("obsv") and "--help" in err


def test_since_must_be_a_time(tmp_path: object, capsys: pytest.CaptureFixture[str]) -> None:
    from pathlib import Path

    log = Path(str(tmp_path)) / "e.jsonl"
    log.write_text("")
    assert main(["replay", str(log), "--since", "yesterday-ish"]) == 2
    assert "give an RFC 3339 time" in capsys.readouterr().err


async def test_a_second_service_on_the_same_log_is_refused(tmp_path: object) -> None:
    import subprocess
    import sys
    from pathlib import Path

    from .conftest import SECRET
    from .process import ServeProcess, free_port

    log = Path(str(tmp_path)) / "events.jsonl"
    env = {"OBSV_SENTRY_CLIENT_SECRET": SECRET, "OBSV_EVENT_LOG": str(log)}
    first = ServeProcess(Path(str(tmp_path)), env)
    await first.start()
    try:
        second = subprocess.run(
            [sys.executable, "-m", "obsv", "serve"], capture_output=True, text=True,
            env={"PATH": "/usr/bin:/bin", **env, "OBSV_PORT": str(free_port())},
            timeout=60, check=False)
    finally:
        assert first.stop() == 0
    assert second.returncode == 2
    assert second.stderr.strip().splitlines()[-1].startswith(
        f"obsv: {log} is in use by another obsv process")


def serve_once(cwd: object, **env: str) -> subprocess.CompletedProcess[str]:
    """``obsv serve`` that is expected to stop at start (bounded by a timeout)."""
    return subprocess.run(
        [sys.executable, "-m", "obsv", "serve"], capture_output=True, text=True, cwd=str(cwd),
        env={"PATH": "/usr/bin:/bin", "OBSV_SENTRY_CLIENT_SECRET": SECRET, "OBSV_PORT": "0",
             "OBSV_LOG_FORMAT": "json", **env},
        timeout=60, check=False)


@pytest.mark.parametrize(("log", "where", "problem"), [
    ("/sys/obsv/events.jsonl", "/sys/obsv", "Operation not permitted"),
    ("{tmp}/afile/events.jsonl", "{tmp}/afile", "a file, not a directory"),
    ("{tmp}/afile/sub/events.jsonl", "{tmp}/afile", "a file, not a directory"),
])
@pytest.mark.parametrize("sink", ["dry run", "github"])
def test_an_unusable_log_path_is_one_line_before_listening(tmp_path: Path, log: str, where: str,
                                                           problem: str, sink: str) -> None:
    (tmp_path / "afile").write_text("not a directory\n")
    github = {"OBSV_GITHUB_TOKEN": "t", "OBSV_GITHUB_REPO": "o/r",
              "OBSV_GITHUB_API_URL": f"http://127.0.0.1:{free_port()}"} if sink == "github" else {}
    result = serve_once(tmp_path, OBSV_EVENT_LOG=log.replace("{tmp}", str(tmp_path)),
                        OBSV_OUTBOX_DIR=str(tmp_path / "outbox"), **github)
    assert result.returncode == 2, result.stderr
    where = where.replace("{tmp}", str(tmp_path))
    assert result.stderr.startswith(f"obsv: cannot use {where} for OBSV_EVENT_LOG")
    assert problem in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr  # nothing else: no serving, no trace


@pytest.mark.parametrize("sink", ["dry run", "github"])
def test_a_directory_as_the_log_is_one_line_before_listening(tmp_path: Path, sink: str) -> None:
    github = {"OBSV_GITHUB_TOKEN": "t", "OBSV_GITHUB_REPO": "o/r",
              "OBSV_GITHUB_API_URL": f"http://127.0.0.1:{free_port()}"} if sink == "github" else {}
    result = serve_once(tmp_path, OBSV_EVENT_LOG=str(tmp_path),
                        OBSV_OUTBOX_DIR=str(tmp_path / "outbox"), **github)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"obsv: {tmp_path} is not a regular file (a directory)")
    assert "OBSV_EVENT_LOG" in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr


def test_a_torn_tail_on_a_full_disk_is_one_line_and_the_log_is_kept(
        tiny_disk: Path) -> None:
    log = tiny_disk / "events.jsonl"
    record = ('{"seq":1,"at":"2026-01-01T00:00:00.000000Z","type":"config.applied","v":1,'
              '"policy":{"min_level":"error","environments":[],"cooldown_seconds":1,'
              '"max_issues_per_hour":1,"repo":null,"labels":["agent:builder"]}}\n')
    log.write_bytes(record.encode() + b'{"seq":2,"raw":"' + b"x" * 100_000)
    before = log.read_bytes()
    fill(tiny_disk, leave_bytes=8 * 1024)

    result = serve_once(tiny_disk, OBSV_EVENT_LOG=str(log),
                        OBSV_OUTBOX_DIR=str(tiny_disk / "outbox"))

    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"obsv: cannot use {log} for OBSV_EVENT_LOG")
    assert "No space left on device" in result.stderr and "free space" in result.stderr
    assert log.read_bytes() == before
