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


def rsa_pem(tmp_path: Path) -> Path:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path / "app.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.TraditionalOpenSSL,
                                       serialization.NoEncryption()))
    return path


def app_env(key: Path, app_id: str = "12345", installation_id: str = "678") -> dict[str, str]:
    return {**BASE, "OBSV_GITHUB_REPO": "o/r", "OBSV_GITHUB_APP_ID": app_id,
            "OBSV_GITHUB_APP_PRIVATE_KEY_PATH": str(key),
            "OBSV_GITHUB_INSTALLATION_ID": installation_id}


def test_a_github_app_with_a_real_key_and_numeric_ids(tmp_path: Path) -> None:
    s = load_settings(None, app_env(rsa_pem(tmp_path), app_id=" 12345 "))
    assert (s.github_app_id, s.github_installation_id) == ("12345", "678")
    assert s.dry_run is False and s.has_github_credentials


def test_app_ids_may_be_toml_integers(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f'github_app_id = 12345\ngithub_installation_id = 678\n'
                      f'github_app_private_key_path = "{rsa_pem(tmp_path)}"\n'
                      'github_repo = "o/r"\n')
    s = load_settings(str(config), BASE)
    assert (s.github_app_id, s.github_installation_id) == ("12345", "678")


PUBLIC_KEY = b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"


@pytest.mark.parametrize("content", [b"not a key\n", b"", b"\xff\xfe garbage", PUBLIC_KEY])
def test_an_app_key_that_does_not_parse_stops_startup(tmp_path: Path, content: bytes) -> None:
    key = tmp_path / "app.pem"
    key.write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        load_settings(None, app_env(key))
    message = str(caught.value)
    assert message.startswith(f"OBSV_GITHUB_APP_PRIVATE_KEY_PATH: {key} is not")
    assert "public key" not in message and "\n" not in message


def test_an_app_key_that_is_not_rsa_stops_startup(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = tmp_path / "ec.pem"
    key.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    with pytest.raises(ConfigError, match="is not an RSA private key"):
        load_settings(None, app_env(key))


@pytest.mark.parametrize(("setting", "value"), [
    ("app_id", "abc"), ("app_id", "0"), ("app_id", "-3"), ("app_id", "1.5"),
    ("installation_id", "x12"), ("installation_id", "0"),
])
def test_app_ids_must_be_positive_integers(tmp_path: Path, setting: str, value: str) -> None:
    env = app_env(rsa_pem(tmp_path), **{setting: value})
    name = "OBSV_GITHUB_APP_ID" if setting == "app_id" else "OBSV_GITHUB_INSTALLATION_ID"
    with pytest.raises(ConfigError) as caught:
        load_settings(None, env)
    assert str(caught.value).startswith(f"{name}: {value!r} is not a positive whole number")


@pytest.mark.parametrize(("variable", "hint"), [
    ("OBSV_COOLDOWN", "did you mean OBSV_COOLDOWN_SECONDS?"),
    ("OBSV_MINLEVEL", "did you mean OBSV_MIN_LEVEL?"),
    ("OBSV_PORT_FILE", "only secret settings"),
    ("OBSV_WHATEVER", "unset it, or see config/obsv.toml for every setting"),
])
def test_an_unknown_obsv_variable_stops_startup(variable: str, hint: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(None, {**BASE, variable: "5"})
    message = str(caught.value)
    assert message.startswith(f"{variable} is not a setting") and hint in message
    assert "\n" not in message


def test_obsv_config_and_secret_files_are_known_variables(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("port = 9001\n")
    secret = tmp_path / "secret"
    secret.write_text("from-a-file\n")
    s = load_settings(None, {"OBSV_CONFIG": str(config),
                             "OBSV_SENTRY_CLIENT_SECRET_FILE": str(secret)})
    assert (s.port, s.sentry_client_secret) == (9001, "from-a-file")


def test_every_secret_can_come_from_a_file(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("ghp_from_file\r\n")
    (tmp_path / "secret").write_text("  spaced secret\n")
    s = load_settings(None, {"OBSV_SENTRY_CLIENT_SECRET_FILE": str(tmp_path / "secret"),
                             "OBSV_GITHUB_TOKEN_FILE": str(tmp_path / "token"),
                             "OBSV_GITHUB_REPO": "o/r"})
    assert s.github_token == "ghp_from_file"
    assert s.sentry_client_secret == "spaced secret"


def test_secret_files_in_toml_and_env_precedence(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("file-secret\n")
    config = tmp_path / "c.toml"
    config.write_text(f'sentry_client_secret_file = "{tmp_path / "secret"}"\n')
    assert load_settings(str(config), {}).sentry_client_secret == "file-secret"
    # The environment wins over the file, in either form.
    assert load_settings(str(config), {"OBSV_SENTRY_CLIENT_SECRET": "env"}
                         ).sentry_client_secret == "env"


def test_a_secret_given_twice_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("a\n")
    with pytest.raises(ConfigError, match="OBSV_SENTRY_CLIENT_SECRET and "
                                          "OBSV_SENTRY_CLIENT_SECRET_FILE are both set"):
        load_settings(None, {"OBSV_SENTRY_CLIENT_SECRET": "b",
                             "OBSV_SENTRY_CLIENT_SECRET_FILE": str(tmp_path / "secret")})
    config = tmp_path / "c.toml"
    config.write_text(f'sentry_client_secret = "b"\n'
                      f'sentry_client_secret_file = "{tmp_path / "secret"}"\n')
    with pytest.raises(ConfigError, match="both set"):
        load_settings(str(config), {})


@pytest.mark.parametrize("problem", ["missing", "directory", "empty", "binary", "huge"])
def test_an_unusable_secret_file_is_one_line(tmp_path: Path, problem: str) -> None:
    path = tmp_path / "secret"
    if problem == "directory":
        path.mkdir()
    elif problem == "empty":
        path.write_text("\n")
    elif problem == "binary":
        path.write_bytes(b"\xff\xfe\x00")
    elif problem == "huge":
        path.write_bytes(b"x" * 100_000)
    with pytest.raises(ConfigError) as caught:
        load_settings(None, {"OBSV_SENTRY_CLIENT_SECRET_FILE": str(path)})
    message = str(caught.value)
    assert message.startswith(f"OBSV_SENTRY_CLIENT_SECRET_FILE: {path}")
    assert "\n" not in message and "xxxx" not in message


@pytest.mark.parametrize("line", ["sentry_client_secret = 918273645",
                                  "sentry_client_secret = [\"918273645\"]",
                                  "github_token = 918273645"])
def test_a_wrongly_typed_secret_is_never_echoed(tmp_path: Path, line: str) -> None:
    config = tmp_path / "c.toml"
    config.write_text(line + "\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(str(config), BASE)
    assert "918273645" not in str(caught.value)
    assert "expected a string" in str(caught.value)


@pytest.mark.parametrize(("env", "expected"), [
    ({"OBSV_SENTRY_CLIENT_SECRET": "s", "OBSV_COOLDOWN": "5"}, "obsv: OBSV_COOLDOWN is not"),
    ({"OBSV_SENTRY_CLIENT_SECRET_FILE": "/nonexistent/secret"},
     "obsv: OBSV_SENTRY_CLIENT_SECRET_FILE: /nonexistent/secret cannot be read"),
    ({"OBSV_SENTRY_CLIENT_SECRET": "s", "OBSV_GITHUB_REPO": "o/r",
      "OBSV_GITHUB_APP_ID": "one", "OBSV_GITHUB_APP_PRIVATE_KEY_PATH": "{tmp}/key.pem",
      "OBSV_GITHUB_INSTALLATION_ID": "2"}, "obsv: OBSV_GITHUB_APP_ID: 'one' is not"),
    ({"OBSV_SENTRY_CLIENT_SECRET": "s", "OBSV_GITHUB_REPO": "o/r",
      "OBSV_GITHUB_APP_ID": "1", "OBSV_GITHUB_APP_PRIVATE_KEY_PATH": "{tmp}/key.pem",
      "OBSV_GITHUB_INSTALLATION_ID": "2"},
     "obsv: OBSV_GITHUB_APP_PRIVATE_KEY_PATH: {tmp}/key.pem is not a PEM private key"),
])
def test_serve_stops_before_listening_on_bad_settings(tmp_path: Path, env: dict[str, str],
                                                      expected: str) -> None:
    (tmp_path / "key.pem").write_text("-----BEGIN RSA PRIVATE KEY-----\nnope\n")
    env = {name: value.replace("{tmp}", str(tmp_path)) for name, value in env.items()}
    expected = expected.replace("{tmp}", str(tmp_path))
    result = subprocess.run(
        [sys.executable, "-m", "obsv", "serve"], capture_output=True, text=True, cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "OBSV_PORT": "0", **env}, timeout=30, check=False)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(expected) and result.stderr.count("\n") == 1
    assert not (tmp_path / "var").exists()  # nothing opened, nothing listened


def test_serve_never_echoes_a_wrongly_typed_secret(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("sentry_client_secret = 918273645\n")
    result = subprocess.run(
        [sys.executable, "-m", "obsv", "serve", "--config", str(config)], capture_output=True,
        text=True, cwd=tmp_path, env={"PATH": "/usr/bin:/bin"}, timeout=30, check=False)
    assert result.returncode == 2
    assert "918273645" not in result.stderr and result.stderr.count("\n") == 1
