"""The CLI's help and usage errors: complete help, one-line errors, exit 2."""

from __future__ import annotations

import pytest

from obsv.cli import main


@pytest.mark.parametrize(("argv", "expected"), [
    (["--help"], ["serve", "replay", "why", "send-test"]),
    (["serve", "--help"], ["--config"]),
    (["replay", "--help"], ["--json", "--verify", "--policy", "--issue", "--since", "LOG"]),
    (["why", "--help"], ["SENTRY_ISSUE_ID", "--log"]),
    (["send-test", "--help"], ["--url", "--secret", "--payload", "--config"]),
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
