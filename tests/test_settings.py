"""Settings: defaults, precedence, and one-line errors with exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from obsv.cli import main
from obsv.settings import ConfigError, load_settings

BASE = {"OBSV_SENTRY_CLIENT_SECRET": "s"}


def test_defaults_match_the_contract() -> None:
    s = load_settings(None, BASE)
    assert (s.host, s.port, s.max_body_bytes) == ("127.0.0.1", 8000, 1_048_576)
    assert s.event_log == Path("var/events.jsonl") and s.outbox_dir == Path("var/outbox")
    assert (s.min_level, s.environments, s.cooldown_seconds, s.max_issues_per_hour) == (
        "error", (), 21600, 20)
    assert s.github_labels == ("agent:builder",) and s.dry_run is True
    assert s.github_api_url == "https://api.github.com"
    assert s.log_format == "json"


def test_documented_config_file_is_valid_and_equals_the_defaults() -> None:
    documented = load_settings("config/obsv.toml", BASE)
    assert documented == load_settings(None, BASE)


def test_env_wins_over_file(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('min_level = "warning"\nport = 9000\nenvironments = ["prod"]\n')
    s = load_settings(str(config), {**BASE, "OBSV_PORT": "9100", "OBSV_ENVIRONMENTS": "a, b"})
    assert (s.min_level, s.port, s.environments) == ("warning", 9100, ("a", "b"))


def test_config_from_obsv_config_env(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('sentry_client_secret = "from-file"\n')
    assert load_settings(None, {"OBSV_CONFIG": str(config)}).sentry_client_secret == "from-file"


def test_credentials_select_the_real_sink() -> None:
    s = load_settings(None, {**BASE, "OBSV_GITHUB_TOKEN": "t", "OBSV_GITHUB_REPO": "o/r"})
    assert s.dry_run is False and s.has_github_credentials


def test_repr_hides_secrets() -> None:
    s = load_settings(None, {"OBSV_SENTRY_CLIENT_SECRET": "hunter2",
                             "OBSV_GITHUB_TOKEN": "ghp_x", "OBSV_GITHUB_REPO": "o/r"})
    assert "hunter2" not in repr(s) and "ghp_x" not in repr(s)


BAD = [
    ({}, "OBSV_SENTRY_CLIENT_SECRET is not set"),
    ({"OBSV_SENTRY_CLIENT_SECRET": "  "}, "OBSV_SENTRY_CLIENT_SECRET is not set"),
    ({**BASE, "OBSV_MIN_LEVEL": "loud"}, "OBSV_MIN_LEVEL: 'loud' is not a Sentry level"),
    ({**BASE, "OBSV_COOLDOWN_SECONDS": "-1"}, "OBSV_COOLDOWN_SECONDS: -1 is out of range"),
    ({**BASE, "OBSV_PORT": "http"}, "OBSV_PORT: 'http' is not a whole number"),
    ({**BASE, "OBSV_PORT": "70000"}, "OBSV_PORT: 70000 is out of range"),
    ({**BASE, "OBSV_MAX_BODY_BYTES": "0"}, "OBSV_MAX_BODY_BYTES: 0 is out of range"),
    ({**BASE, "OBSV_GITHUB_REPO": "not a repo"}, "is not a GitHub repository"),
    ({**BASE, "OBSV_GITHUB_REPO": "owner/name/extra"}, "is not a GitHub repository"),
    ({**BASE, "OBSV_DRY_RUN": "maybe"}, "OBSV_DRY_RUN: 'maybe' is not true or false"),
    ({**BASE, "OBSV_DRY_RUN": "false"}, "OBSV_DRY_RUN is false but no GitHub credentials"),
    ({**BASE, "OBSV_GITHUB_TOKEN": "t"}, "OBSV_GITHUB_REPO is not set"),
    ({**BASE, "OBSV_GITHUB_APP_ID": "1"}, "OBSV_GITHUB_APP_PRIVATE_KEY_PATH is not set"),
    ({**BASE, "OBSV_GITHUB_API_URL": "ftp://x"}, "is not an http(s) URL"),
    ({**BASE, "OBSV_LOG_FORMAT": "xml"}, "is not a log format"),
    ({**BASE, "OBSV_GITHUB_LABELS": " , "}, "OBSV_GITHUB_LABELS is empty"),
]


@pytest.mark.parametrize(("env", "message"), BAD, ids=[m for _, m in BAD])
def test_bad_values_raise_one_line(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(None, env)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_unknown_key_in_file(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('sentry_client_secret = "s"\ncooldown = 5\n')
    with pytest.raises(ConfigError, match="unknown key 'cooldown'"):
        load_settings(str(config), {})


def test_wrong_type_in_file(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('sentry_client_secret = "s"\nmax_issues_per_hour = -3\n')
    with pytest.raises(ConfigError, match=r"max_issues_per_hour in .*: -3 is out of range"):
        load_settings(str(config), {})


def test_missing_and_invalid_toml_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(str(tmp_path / "nope.toml"), BASE)
    broken = tmp_path / "b.toml"
    broken.write_text("port = = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(str(broken), BASE)


def test_serve_exits_2_with_one_line(capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OBSV_SENTRY_CLIENT_SECRET", raising=False)
    monkeypatch.delenv("OBSV_CONFIG", raising=False)
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("obsv: OBSV_SENTRY_CLIENT_SECRET is not set") and err.count("\n") == 1


def test_serve_in_a_real_process_exits_2_without_traceback(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "obsv", "serve"], capture_output=True, text=True, cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "OBSV_SENTRY_CLIENT_SECRET": "s", "OBSV_MIN_LEVEL": "x"},
        timeout=30, check=False)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("obsv: OBSV_MIN_LEVEL")



def test_serve_refuses_a_log_with_a_corrupt_middle_line(tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    config = '{"seq":1,"at":"2026-01-01T00:00:00.000000Z","type":"config.applied","v":1,' \
             '"policy":{"min_level":"error","environments":[],"cooldown_seconds":1,' \
             '"max_issues_per_hour":1,"repo":null,"labels":["agent:builder"]}}'
    hook = config.replace('"seq":1', '"seq":3')
    log.write_text(config + "\n{broken\n" + hook + "\n")
    result = subprocess.run(
        [sys.executable, "-m", "obsv", "serve"], capture_output=True, text=True, cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "OBSV_SENTRY_CLIENT_SECRET": "s", "OBSV_PORT": "0",
             "OBSV_EVENT_LOG": str(log), "OBSV_LOG_FORMAT": "json"}, timeout=60, check=False)
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("obsv: ") and "line 2 is not a valid record" in last
    assert "Traceback" not in result.stderr
