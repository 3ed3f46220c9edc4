"""Settings: the one place that reads the environment and the TOML file.

Precedence: built-in defaults < the TOML file (``--config`` or ``OBSV_CONFIG``) <
``OBSV_*`` environment variables. Every problem is a ``ConfigError`` whose message is
one line naming the setting and the fix; the CLI prints it and exits 2.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from obsv.core.alert import LEVELS
from obsv.core.events import Policy

_REPO = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}$")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class ConfigError(Exception):
    """A setting is missing or wrong; the message is one line that names the fix."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting of obsv, validated. ``repr`` never shows a secret."""

    sentry_client_secret: str
    host: str = "127.0.0.1"
    port: int = 8000
    event_log: Path = Path("var/events.jsonl")
    max_body_bytes: int = 1_048_576
    min_level: str = "error"
    environments: tuple[str, ...] = ()
    cooldown_seconds: int = 21_600
    max_issues_per_hour: int = 20
    github_repo: str | None = None
    github_token: str | None = None
    github_app_id: str | None = None
    github_app_private_key_path: Path | None = None
    github_installation_id: str | None = None
    github_api_url: str = "https://api.github.com"
    github_labels: tuple[str, ...] = ("agent:builder",)
    dry_run: bool = True
    outbox_dir: Path = Path("var/outbox")
    log_format: str = "json"
    snapshot_every: int = 10_000

    def __repr__(self) -> str:
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _SECRETS and value:
                value = "<redacted>"
            shown.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(shown)})"

    @property
    def has_github_credentials(self) -> bool:
        """A token, or a complete GitHub App configuration."""
        return bool(self.github_token) or self.github_app_id is not None

    def policy(self) -> Policy:
        """The settings that decisions depend on (recorded as ``config.applied``)."""
        return Policy(
            min_level=self.min_level,
            environments=self.environments,
            cooldown_seconds=self.cooldown_seconds,
            max_issues_per_hour=self.max_issues_per_hour,
            repo=self.github_repo,
            labels=self.github_labels,
        )


_SECRETS = {"sentry_client_secret", "github_token"}


def _text(name: str, raw: object) -> str:
    if not isinstance(raw, str):
        raise ConfigError(f"{name}: expected a string, got {raw!r}")
    return raw.strip()


def _optional_text(name: str, raw: object) -> str | None:
    return _text(name, raw) or None


def _integer(minimum: int, maximum: int | None = None) -> Callable[[str, object], int]:
    def parse(name: str, raw: object) -> int:
        if isinstance(raw, bool):
            raise ConfigError(f"{name}: expected a whole number, got {raw!r}")
        try:
            value = raw if isinstance(raw, int) else int(str(raw).strip())
        except ValueError:
            raise ConfigError(f"{name}: {raw!r} is not a whole number") from None
        if value < minimum or (maximum is not None and value > maximum):
            upper = f" and at most {maximum}" if maximum is not None else ""
            raise ConfigError(f"{name}: {value} is out of range; use at least {minimum}{upper}")
        return value
    return parse


def _level(name: str, raw: object) -> str:
    level = _text(name, raw).lower()
    if level not in LEVELS:
        raise ConfigError(f"{name}: {raw!r} is not a Sentry level; use one of {', '.join(LEVELS)}")
    return level


def _names(name: str, raw: object) -> tuple[str, ...]:
    items = raw if isinstance(raw, list) else _text(name, raw).split(",")
    names = tuple(_text(name, item) for item in items)
    return tuple(item for item in names if item)


def _repo(name: str, raw: object) -> str | None:
    repo = _optional_text(name, raw)
    if repo is not None and not _REPO.match(repo):
        raise ConfigError(f"{name}: {repo!r} is not a GitHub repository; write it as owner/name")
    return repo


def _boolean(name: str, raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    text = _text(name, raw).lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise ConfigError(f"{name}: {raw!r} is not true or false")


def _path(name: str, raw: object) -> Path:
    text = _text(name, raw)
    if not text:
        raise ConfigError(f"{name}: must not be empty; give a file or directory path")
    return Path(text).expanduser()


def _optional_path(name: str, raw: object) -> Path | None:
    return _path(name, raw) if _text(name, raw) else None


def _url(name: str, raw: object) -> str:
    url = _text(name, raw).rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"{name}: {raw!r} is not an http(s) URL")
    return url


def _log_format(name: str, raw: object) -> str:
    value = _text(name, raw).lower()
    if value not in ("json", "console"):
        raise ConfigError(f"{name}: {raw!r} is not a log format; use json or console")
    return value


_PARSERS: dict[str, Callable[[str, Any], Any]] = {
    "sentry_client_secret": _text,
    "host": _text,
    "port": _integer(0, 65535),
    "event_log": _path,
    "max_body_bytes": _integer(1),
    "min_level": _level,
    "environments": _names,
    "cooldown_seconds": _integer(0),
    "max_issues_per_hour": _integer(0),
    "github_repo": _repo,
    "github_token": _optional_text,
    "github_app_id": _optional_text,
    "github_app_private_key_path": _optional_path,
    "github_installation_id": _optional_text,
    "github_api_url": _url,
    "github_labels": _names,
    "dry_run": _boolean,
    "outbox_dir": _path,
    "log_format": _log_format,
    "snapshot_every": _integer(1),
}


def env_name(key: str) -> str:
    """The environment variable that sets ``key``."""
    return f"OBSV_{key.upper()}"


def load_settings(config_path: str | None, env: Mapping[str, str], *,
                  stderr_is_tty: bool = False, require_secret: bool = True) -> Settings:
    """Defaults, then the TOML file, then ``OBSV_*``; validated as a whole.

    The offline commands (replay, why) pass ``require_secret=False``: they read a
    log and a policy, and must work on a laptop that has no production secret.
    """
    values: dict[str, Any] = {}
    path = config_path or env.get("OBSV_CONFIG") or None
    if path:
        for key, raw in _read_toml(Path(path)).items():
            values[key] = _PARSERS[key](f"{key} in {path}", raw)
    for key, parse in _PARSERS.items():
        if env_name(key) in env:
            values[key] = parse(env_name(key), env[env_name(key)])
    values.setdefault("log_format", "console" if stderr_is_tty else "json")
    if not require_secret:
        values.setdefault("sentry_client_secret", "-")
    return _complete(values)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist; pass --config with a TOML file") \
            from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    unknown = sorted(set(data) - set(_PARSERS))
    if unknown:
        raise ConfigError(
            f"{path}: unknown key {unknown[0]!r}; config/obsv.toml lists every key"
        )
    return data


def _complete(values: dict[str, Any]) -> Settings:
    secret = values.get("sentry_client_secret")
    if not secret:
        raise ConfigError(
            "OBSV_SENTRY_CLIENT_SECRET is not set: set it (or sentry_client_secret in the "
            "config file) to the Sentry integration's client secret; obsv never runs unverified"
        )
    _check_app(values)
    has_credentials = bool(values.get("github_token")) or bool(values.get("github_app_id"))
    if has_credentials and not values.get("github_repo"):
        raise ConfigError("OBSV_GITHUB_REPO is not set: GitHub credentials need the owner/name "
                          "of the repository to open issues in")
    dry_run = values.setdefault("dry_run", not has_credentials)
    if not dry_run and not has_credentials:
        raise ConfigError("OBSV_DRY_RUN is false but no GitHub credentials are set: set "
                          "OBSV_GITHUB_TOKEN (or the three OBSV_GITHUB_APP_* settings)")
    if not values.get("github_labels", ("agent:builder",)):
        raise ConfigError("OBSV_GITHUB_LABELS is empty: give at least one label, "
                          "e.g. agent:builder")
    return Settings(**values)


def _check_app(values: dict[str, Any]) -> None:
    app_keys = ("github_app_id", "github_app_private_key_path", "github_installation_id")
    given = [key for key in app_keys if values.get(key)]
    if given and len(given) < len(app_keys):
        missing = next(key for key in app_keys if key not in given)
        raise ConfigError(f"{env_name(missing)} is not set: a GitHub App needs "
                          "OBSV_GITHUB_APP_ID, OBSV_GITHUB_APP_PRIVATE_KEY_PATH and "
                          "OBSV_GITHUB_INSTALLATION_ID together")
    key_path = values.get("github_app_private_key_path")
    if key_path is not None and given and not os.access(key_path, os.R_OK):
        raise ConfigError(f"OBSV_GITHUB_APP_PRIVATE_KEY_PATH: {key_path} cannot be read; "
                          "point it at the App's .pem private key")
    if given and values.get("github_token"):
        raise ConfigError("both OBSV_GITHUB_TOKEN and a GitHub App are set: keep one of them")
