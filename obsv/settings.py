"""Settings: the one place that reads the environment and the TOML file.

Precedence: built-in defaults < the TOML file (``--config`` or ``OBSV_CONFIG``) <
``OBSV_*`` environment variables. Every problem is a ``ConfigError`` whose message is
one line naming the setting and the fix; the CLI prints it and exits 2.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from obsv.core.alert import LEVELS
from obsv.core.events import Policy
from obsv.core.routes import Route, is_glob

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
    request_timeout_seconds: int = 10
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
    # The issue lifecycle (docs/reference.md §7).
    github_webhook_secret: str | None = None
    github_poll_seconds: int = 300
    reopen_window_seconds: int = 1_209_600
    mute_label: str = "obsv:mute"
    # docs/reference.md §5: the storm digest's labels, never the agent label.
    storm_labels: tuple[str, ...] = ("obsv:storm",)
    close_on_resolve: bool = False
    resolve_in_sentry: bool = False
    sentry_api_token: str | None = None
    sentry_api_url: str = "https://sentry.io"
    # The issue text (docs/reference.md §6, §10).
    template_dir: Path | None = None
    redact_pii: bool = True
    # The admin API (docs/reference.md §9): off (404) without a token.
    admin_token: str | None = None
    admin_url: str | None = None  # what `obsv silence` calls; default from host and port
    # docs/reference.md §8: ``[[routes]]``, from the TOML file only.
    routes: tuple[Route, ...] = ()
    # docs/reference.md §12: the event log in PostgreSQL instead of ``event_log``.
    # A credential (it may hold a password): shown masked, readable from a file.
    database_url: str | None = None

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
            reopen_window_seconds=self.reopen_window_seconds,
            mute_label=self.mute_label,
            storm_labels=self.storm_labels,
            close_on_resolve=self.close_on_resolve,
            resolve_in_sentry=self.resolve_in_sentry,
            routes=self.routes,
            dry_run=self.dry_run,
        )

    @property
    def repos(self) -> tuple[str, ...]:
        """Every repository obsv may open issues in: the default, then each route's."""
        named = (self.github_repo, *(route.repo for route in self.routes))
        return tuple(dict.fromkeys(repo for repo in named if repo is not None))


# Settings whose values are credentials: never shown (repr, error messages), and each
# may be read from a file named by ``<key>_file`` / ``OBSV_<KEY>_FILE`` (docs/reference.md §2).
_SECRETS = {"sentry_client_secret", "github_token", "github_webhook_secret",
            "sentry_api_token", "admin_token", "database_url"}
_FILE_SUFFIX = "_file"
# A secret file holds one token; anything larger is the wrong file (or /dev/zero).
_MAX_SECRET_FILE_BYTES = 64 * 1024
_MAX_KEY_FILE_BYTES = 1024 * 1024


def _text(name: str, raw: object) -> str:
    if not isinstance(raw, str):
        raise ConfigError(f"{name}: expected a string, got {raw!r}")
    return raw.strip()


def _optional_text(name: str, raw: object) -> str | None:
    return _text(name, raw) or None


def _secret(name: str, raw: object) -> str:
    if not isinstance(raw, str):  # the value is not shown: it may be the secret itself
        raise ConfigError(f"{name}: expected a string in quotes; the value is not shown "
                          "because it is a secret")
    return raw.strip()


def _optional_secret(name: str, raw: object) -> str | None:
    return _secret(name, raw) or None


def _github_id(name: str, raw: object) -> str | None:
    """A GitHub App or installation id: a positive whole number, kept as text."""
    if isinstance(raw, int) and not isinstance(raw, bool) and raw > 0:
        return str(raw)
    text = raw.strip() if isinstance(raw, str) else None
    if text == "":
        return None
    if text is None or not text.isascii() or not text.isdigit() or int(text) == 0:
        raise ConfigError(f"{name}: {raw!r} is not a positive whole number; copy the id from "
                          "the GitHub App's settings page (App ID) or the installation's URL")
    return str(int(text))


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


def _label(name: str, raw: object) -> str:
    label = _text(name, raw)
    if not label or len(label) > 50:  # GitHub's limit for a label name
        raise ConfigError(f"{name}: give a GitHub label name of 1 to 50 characters")
    return label


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


_QUERY_PASSWORD = re.compile(r"([?&]password=)([^&#]*)", re.IGNORECASE)
_HOST = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[^\[\]:,]+)?(?::\d{1,5})?$")
_URL_SHAPE = "postgresql://user:password@host:5432/database"


def _userinfo(url: str) -> tuple[str, str, str]:
    """``url`` cut into what precedes its user info, the user info (``user:password``,
    empty when none) and what follows its ``@``. The user info ends at the last ``@``
    before the host; a password written with a raw ``/``, ``?`` or ``#`` (which should
    have been percent-encoded) ends the host early for a URL parser, so then the last
    ``@`` of the URL counts: masking too much is safe, too little is not."""
    scheme, sep, rest = url.partition("://")
    prefix = scheme + sep if sep else ""
    rest = rest if sep else url
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    at = rest.rfind("@", 0, end)
    if at < 0 and ":" in rest[:end]:
        at = rest.rfind("@")
    if at < 0:
        return prefix, "", rest
    return prefix, rest[:at], rest[at + 1:]


def url_passwords(url: str) -> list[str]:
    """Every password ``url`` carries, as written and percent-decoded: in its user
    info, and in a ``password`` query parameter (which libpq and asyncpg accept too)."""
    found = [match.group(2) for match in _QUERY_PASSWORD.finditer(url)]
    userinfo = _userinfo(url)[1]
    if ":" in userinfo:
        found.append(userinfo.partition(":")[2])
    shown: list[str] = []
    for password in found:
        for form in (password, urllib.parse.unquote(password),
                     urllib.parse.unquote_plus(password)):
            if form and form not in shown:
                shown.append(form)
    return shown


def masked_url(url: str) -> str:
    """``url`` with its password replaced by ``***``: how a database URL is shown."""
    prefix, userinfo, rest = _userinfo(url)
    if ":" in userinfo:
        url = f"{prefix}{userinfo.partition(':')[0]}:***@{rest}"
    return _QUERY_PASSWORD.sub(r"\1***", url)


def database_url(name: str, raw: object) -> str | None:
    """A ``postgresql://`` URL (libpq's forms: several hosts, a socket directory as
    the host or in ``?host=``), or None for the JSONL log; errors show it masked."""
    url = _optional_secret(name, raw)
    if url is None:
        return None
    shown = masked_url(url)
    if not url.startswith(("postgresql://", "postgres://")):
        raise ConfigError(f"{name}: {shown} is not a postgresql:// URL; write it as "
                          f"{_URL_SHAPE}")
    _, userinfo, _ = _userinfo(url)
    parts = urllib.parse.urlsplit(url)
    if userinfo and ("@" in userinfo or "@" not in parts.netloc):
        raise ConfigError(f"{name}: the password in {shown} holds a character a URL "
                          "cannot carry as is (@ / ? #); percent-encode it (@ is %40, "
                          "/ is %2F, ? is %3F, # is %23, % is %25)")
    hosts = parts.netloc.rpartition("@")[2]
    query = urllib.parse.parse_qs(parts.query)
    if not hosts and not parts.path.strip("/") and "host" not in query:
        raise ConfigError(f"{name}: {shown} names no server; write it as {_URL_SHAPE}")
    if hosts and not all(_HOST.match(host) for host in hosts.split(",")):
        raise ConfigError(f"{name}: {shown} is not a URL (a host or port that does not "
                          f"parse); write it as {_URL_SHAPE}")
    return url


def _log_format(name: str, raw: object) -> str:
    value = _text(name, raw).lower()
    if value not in ("json", "console"):
        raise ConfigError(f"{name}: {raw!r} is not a log format; use json or console")
    return value


_PARSERS: dict[str, Callable[[str, Any], Any]] = {
    "sentry_client_secret": _secret,
    "host": _text,
    "port": _integer(0, 65535),
    "event_log": _path,
    "max_body_bytes": _integer(1),
    "request_timeout_seconds": _integer(1, 3600),
    "min_level": _level,
    "environments": _names,
    "cooldown_seconds": _integer(0),
    "max_issues_per_hour": _integer(0),
    "github_repo": _repo,
    "github_token": _optional_secret,
    "github_app_id": _github_id,
    "github_app_private_key_path": _optional_path,
    "github_installation_id": _github_id,
    "github_api_url": _url,
    "github_labels": _names,
    "dry_run": _boolean,
    "outbox_dir": _path,
    "log_format": _log_format,
    "snapshot_every": _integer(1),
    "github_webhook_secret": _optional_secret,
    "github_poll_seconds": _integer(0, 86_400),
    "reopen_window_seconds": _integer(0),
    "mute_label": _label,
    "storm_labels": _names,
    "close_on_resolve": _boolean,
    "resolve_in_sentry": _boolean,
    "sentry_api_token": _optional_secret,
    "sentry_api_url": _url,
    "template_dir": _optional_path,
    "redact_pii": _boolean,
    "admin_token": _optional_secret,
    "admin_url": lambda name, raw: _url(name, raw) if _text(name, raw) else None,
    "database_url": database_url,
}


def env_name(key: str) -> str:
    """The environment variable that sets ``key``."""
    return f"OBSV_{key.upper()}"


def load_settings(config_path: str | None, env: Mapping[str, str], *,
                  stderr_is_tty: bool = False, require_secret: bool = True) -> Settings:
    """Defaults, then the TOML file, then ``OBSV_*``; validated as a whole.

    The offline commands (replay, why) pass ``require_secret=False``: they read a
    log and a policy, and must work on a laptop that has no production secret
    (nor the GitHub App's key file).
    """
    _check_variables(env)
    values: dict[str, Any] = {}
    path = config_path or env.get("OBSV_CONFIG") or None
    if path:
        data = _read_toml(Path(path))
        values.update(_parse_source(data, lambda key: key, f" in {path}"))
        if _ROUTES in data:
            values["routes"] = _routes(data[_ROUTES], f" in {path}")
    values.update(_parse_source(env, env_name, ""))
    values.setdefault("log_format", "console" if stderr_is_tty else "json")
    if not require_secret:
        values.setdefault("sentry_client_secret", "-")
    settings = _complete(values)
    if require_secret and settings.github_app_private_key_path is not None:
        _check_app_key(settings.github_app_private_key_path)
    return settings


def _parse_source(source: Mapping[str, Any], spelled: Callable[[str], str],
                  where: str) -> dict[str, Any]:
    """Every setting one source (the TOML file, or the environment) gives, parsed.
    ``spelled`` is how the source names a key; ``where`` says which file, for messages."""
    values: dict[str, Any] = {}
    for key, parse in _PARSERS.items():
        direct, from_file = spelled(key), spelled(key + _FILE_SUFFIX)
        if key in _SECRETS and from_file in source:
            if direct in source:
                raise ConfigError(f"{direct} and {from_file} are both set{where}: keep one "
                                  "of them")
            secret = _read_secret_file(from_file + where, source[from_file])
            values[key] = parse(direct + where, secret)
        elif direct in source:
            values[key] = parse(direct + where, source[direct])
    return values


def _read_regular_file(path: Path, limit: int) -> bytes:
    """At most ``limit`` bytes of a regular file. Opened without blocking and checked
    before reading: a FIFO nobody writes would hang start-up, a device never end."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read(limit)
    finally:
        os.close(fd)


def _read_secret_file(name: str, raw: object) -> str:
    """The secret in the file ``raw`` names, without its trailing newline (the
    Docker and Kubernetes secrets convention)."""
    path = _path(name, raw)
    try:
        data = _read_regular_file(path, _MAX_SECRET_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{name}: {path} cannot be read ({exc.strerror}); point it at the "
                          "file that holds the secret") from None
    if len(data) > _MAX_SECRET_FILE_BYTES:
        raise ConfigError(f"{name}: {path} is larger than {_MAX_SECRET_FILE_BYTES} bytes; "
                          "a secret file holds only the secret")
    try:
        secret = data.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise ConfigError(f"{name}: {path} is not UTF-8 text; a secret file holds only "
                          "the secret") from None
    if not secret.strip():
        raise ConfigError(f"{name}: {path} is empty; write the secret into it")
    return secret


def _known_variables() -> set[str]:
    return ({"OBSV_CONFIG"} | {env_name(key) for key in _PARSERS}
            | {env_name(key + _FILE_SUFFIX) for key in _SECRETS})


def _check_variables(env: Mapping[str, str]) -> None:
    """A misspelt ``OBSV_*`` variable would otherwise be ignored in silence, and the
    setting it meant to change would keep its default."""
    known = _known_variables()
    for name in sorted(env):
        if name.startswith("OBSV_") and name not in known:
            raise ConfigError(f"{name} is not a setting{_hint(name, known)}; unset it, or see "
                              "config/obsv.toml for every setting (key k is OBSV_K)")


def _hint(name: str, known: set[str]) -> str:
    if name.endswith(_FILE_SUFFIX.upper()) and name[:-5] in known:
        secrets = ", ".join(sorted(env_name(key) for key in _SECRETS))
        return f": only secret settings ({secrets}) can be read from a file"
    bare = name.removeprefix("OBSV_")
    candidates = {n.removeprefix("OBSV_"): n for n in known}
    longer = sorted(n for b, n in candidates.items() if b.startswith(bare + "_"))
    import difflib  # here: only a misspelt setting needs it (every command starts faster)
    close = longer or [candidates[b] for b in difflib.get_close_matches(bare, candidates, 1,
                                                                        0.75)]
    return f" (did you mean {close[0]}?)" if close else ""


def _read_toml(path: Path) -> dict[str, Any]:
    import tomllib  # here: only a config file needs it (4 ms of every command's start)
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
    known = set(_PARSERS) | {key + _FILE_SUFFIX for key in _SECRETS} | {_ROUTES}
    unknown = sorted(set(data) - known)
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
    if has_credentials and not values.get("github_repo") and not values.get("routes"):
        raise ConfigError("OBSV_GITHUB_REPO is not set: GitHub credentials need the owner/name "
                          "of the repository to open issues in (or [[routes]] naming them)")
    dry_run = values.setdefault("dry_run", not has_credentials)
    if not dry_run and not has_credentials:
        raise ConfigError("OBSV_DRY_RUN is false but no GitHub credentials are set: set "
                          "OBSV_GITHUB_TOKEN (or the three OBSV_GITHUB_APP_* settings)")
    if not values.get("github_labels", ("agent:builder",)):
        raise ConfigError("OBSV_GITHUB_LABELS is empty: give at least one label, "
                          "e.g. agent:builder")
    if values.get("resolve_in_sentry") and not values.get("sentry_api_token"):
        raise ConfigError("OBSV_RESOLVE_IN_SENTRY is true but OBSV_SENTRY_API_TOKEN is not set: "
                          "give a Sentry API token with the event:write scope, or turn it off")
    if values.get("mute_label", "obsv:mute") in values.get("github_labels", ("agent:builder",)):
        raise ConfigError("OBSV_MUTE_LABEL is one of OBSV_GITHUB_LABELS: every issue would be "
                          "muted; choose a label of its own, e.g. obsv:mute")
    _check_storm_labels(values)
    return Settings(**values)


def _check_storm_labels(values: dict[str, Any]) -> None:
    """The digest lists issues for humans: an agent label would hand it to the agent."""
    storm = values.get("storm_labels", ("obsv:storm",))
    if not storm:
        raise ConfigError("OBSV_STORM_LABELS is empty: give at least one label, "
                          "e.g. obsv:storm")
    agent = set(values.get("github_labels", ("agent:builder",)))
    for route in values.get("routes", ()):
        agent.update(route.labels or ())
    if taken := sorted(agent & set(storm)):
        raise ConfigError(f"OBSV_STORM_LABELS holds the agent label {taken[0]}: the storm "
                          "digest is for humans; choose a label of its own, e.g. obsv:storm")


def _check_app(values: dict[str, Any]) -> None:
    app_keys = ("github_app_id", "github_app_private_key_path", "github_installation_id")
    given = [key for key in app_keys if values.get(key)]
    if given and len(given) < len(app_keys):
        missing = next(key for key in app_keys if key not in given)
        raise ConfigError(f"{env_name(missing)} is not set: a GitHub App needs "
                          "OBSV_GITHUB_APP_ID, OBSV_GITHUB_APP_PRIVATE_KEY_PATH and "
                          "OBSV_GITHUB_INSTALLATION_ID together")
    if given and values.get("github_token"):
        raise ConfigError("both OBSV_GITHUB_TOKEN and a GitHub App are set: keep one of them")


def _check_app_key(path: Path) -> None:
    """The App's key must parse now: otherwise the first alert would find out, as a
    failed token request (whose error from PyJWT even speaks of a public key)."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    name = "OBSV_GITHUB_APP_PRIVATE_KEY_PATH"
    fix = "download a private key from the GitHub App's settings page and point it there"
    try:
        pem = _read_regular_file(path, _MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{name}: {path} cannot be read ({exc.strerror}); {fix}") from None
    try:
        key = load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        # TypeError: a key protected by a passphrase. The library's message is not
        # shown: it can quote the file, and the file is a secret.
        raise ConfigError(f"{name}: {path} is not a PEM private key without a passphrase; "
                          f"{fix}") from None
    if not isinstance(key, RSAPrivateKey):
        raise ConfigError(f"{name}: {path} is not an RSA private key (GitHub Apps sign with "
                          f"RS256); {fix}")


# -- routes (docs/reference.md §8) ---------------------------------------------------------

_ROUTES = "routes"
_ROUTE_KEYS = ("projects", "environments", "tags", "repo", "labels", "min_level",
               "cooldown_seconds", "max_issues_per_hour")


def _routes(raw: object, where: str) -> tuple[Route, ...]:
    """The ``[[routes]]`` tables, in order; an error names ``route N`` (1-based) and the key."""
    if not isinstance(raw, list):
        raise ConfigError(f"routes{where}: write each route as a [[routes]] table")
    return tuple(_route(f"route {n}{where}", table) for n, table in enumerate(raw, 1))


def _route(name: str, table: object) -> Route:
    if not isinstance(table, dict):
        raise ConfigError(f"{name}: write it as a [[routes]] table")
    unknown = sorted(set(table) - set(_ROUTE_KEYS))
    if unknown:
        raise ConfigError(f"{name}: unknown key {unknown[0]!r}; a route has "
                          f"{', '.join(_ROUTE_KEYS)}")
    if "repo" not in table:
        raise ConfigError(f"{name}: repo is missing; every route names its repository "
                          "as owner/name")
    repo = _repo(f"{name}: repo", table["repo"])
    if repo is None:
        raise ConfigError(f"{name}: repo is empty; write it as owner/name")
    labels = None
    if "labels" in table:
        labels = tuple(_label(f"{name}: labels", item) for item in _list(name, "labels", table))
        if not labels:
            raise ConfigError(f"{name}: labels is empty; give at least one label, or leave "
                              "it out to use OBSV_GITHUB_LABELS")

    def optional(key: str, parse: Callable[[str, Any], Any]) -> Any:
        return parse(f"{name}: {key}", table[key]) if key in table else None

    return Route(repo=repo, projects=_globs(name, "projects", table),
                 environments=_globs(name, "environments", table), tags=_tag_globs(name, table),
                 labels=labels, min_level=optional("min_level", _level),
                 cooldown_seconds=optional("cooldown_seconds", _integer(0)),
                 max_issues_per_hour=optional("max_issues_per_hour", _integer(0)))


def _list(name: str, key: str, table: dict[str, Any]) -> list[Any]:
    value = table[key]
    if not isinstance(value, list):
        raise ConfigError(f"{name}: {key} must be a list, e.g. {key} = [\"...\"]")
    return value


def _globs(name: str, key: str, table: dict[str, Any]) -> tuple[str, ...]:
    if key not in table:
        return ()
    globs = tuple(_glob(f"{name}: {key}", item) for item in _list(name, key, table))
    if not globs:
        raise ConfigError(f"{name}: {key} is empty and would match nothing; leave it out to "
                          "match any")
    return globs


def _glob(name: str, raw: object) -> str:
    if not isinstance(raw, str | int) or isinstance(raw, bool):
        raise ConfigError(f"{name}: expected a string, got {raw!r}")
    glob = str(raw).strip()
    if not is_glob(glob):
        raise ConfigError(f"{name}: {raw!r} is not a glob; close every [ and give a "
                          "non-empty pattern (*, ?, [abc])")
    return glob


def _tag_globs(name: str, table: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    tags = table.get("tags", {})
    if not isinstance(tags, dict):
        raise ConfigError(f"{name}: tags must be a table, e.g. tags = {{ team = \"payments\" }}")
    return tuple((str(key), _glob(f"{name}: tags.{key}", value))
                 for key, value in tags.items())
