"""Sentry webhook payload -> Alert: validation, ids, level and fingerprint key.

Rules (docs/reference.md §3 step 4 and §5):
1. A usable delivery is a JSON object with a ``Sentry-Hook-Resource`` header.
2. For ``event_alert``, ``data.event`` is an object with a string ``event_id``;
   ``level``, ``issue_id``, ``hashes``, ``fingerprint`` and ``tags`` have their
   documented types where present. Anything else is an ``InvalidPayload`` (422),
   never a 5xx: Sentry retries 5xx, and a bad payload will not get better.
3. The Sentry issue id is ``issue_id``; older payloads lack it, then the number in
   ``issue_url`` or ``web_url`` (``/issues/<id>/``); else the first of ``hashes``.
   Whichever it came from, an id longer than ``ISSUE_ID_MAX`` is invalid
   (``data.event.issue_id``): the id becomes a GitHub marker and an outbox file
   name, and no real Sentry id comes close (see ``ISSUE_ID_MAX``). So is an
   ``event_id`` longer than ``EVENT_ID_MAX`` (Sentry's are 32 hex digits): it is
   remembered for redeliveries, and cutting it would merge distinct events.
4. The literal default fingerprint ``["{{ default }}"]`` is shared by unrelated
   errors, so it is never a key by itself (see ``fingerprint_key``).
5. Free text is kept bounded in the ``Alert`` (the raw body keeps all of it): the
   title and culprit to ``TEXT_KEPT`` characters, the URL to ``URL_KEPT``, the level
   and environment to ``TAG_VALUE_KEPT``, like release and tags. The ``Alert`` is in
   every record of its alert, in the state, and in storm digests.
"""

from __future__ import annotations

import hashlib
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeGuard
from urllib.parse import urlsplit

import msgspec
from msgspec import Struct

LEVELS: tuple[str, ...] = ("debug", "info", "warning", "error", "fatal")
_LEVEL_RANK = {name: rank for rank, name in enumerate(LEVELS)}
# Sentry's SDKs and older relays also send these spellings.
_LEVEL_ALIASES = {"warn": "warning", "critical": "fatal", "log": "info"}

_ISSUE_NUMBER_IN_URL = re.compile(r"/issues/(\d+)(?:/|$|\?)")
# Sentry accepts the variable with or without inner spaces.
_DEFAULT_VARIABLE = re.compile(r"^\{\{\s*default\s*\}\}$")
_DEFAULT_FINGERPRINT = ["{{ default }}"]  # what Sentry sends unless a rule sets one

EVENT_ALERT = "event_alert"
# Sentry issue ids are 64-bit integers (at most 20 digits) and grouping hashes are 32
# hex characters; 128 leaves room for other relays' ids while keeping markers, outbox
# names and log lines small. Refused at the door (422), since a longer id will never
# get better, rather than failing later where only a retry loop would notice.
ISSUE_ID_MAX = 128
EVENT_ID_MAX = 128
# Rule 5: an issue title is at most 256 characters on GitHub; a kilobyte keeps enough
# of a title or culprit for silences and templates, two of a URL.
TEXT_KEPT = 1024
URL_KEPT = 2048
# The longest fingerprint or hash a key spells out (docs/reference.md §5); longer ones
# are keyed by their SHA-256 (``fingerprint_key``).
FINGERPRINT_KEY_MAX = 256


class Alert(Struct, frozen=True, gc=False, omit_defaults=True):
    """The fields of an ``event_alert`` that decisions and audits need; as a struct, also
    the ``alert`` of an ``alert.received`` line (obsv/core/codec.py), where the fields
    with a default are written only when set."""

    sentry_issue_id: str
    event_id: str
    level: str
    fingerprint_key: str
    project: str | None
    environment: str | None
    title: str | None
    culprit: str | None
    web_url: str | None
    # What routes and silences match on besides the fields above (docs/reference.md §8,
    # §9): the project's slug from the event's API url, the release, and the tags.
    project_slug: str | None = None
    release: str | None = None
    tags: tuple[tuple[str, str], ...] = ()


@dataclass(slots=True)
class InvalidPayload(Exception):
    """Valid JSON that is not a usable Sentry delivery (HTTP 422)."""

    missing: list[str] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)
    status: int = 422

    def __str__(self) -> str:
        return f"invalid payload: missing={self.missing} invalid={self.invalid}"


class SentryEvent(Struct, gc=False):
    """The fields of ``data.event`` that obsv reads. Decoding a body into it skips the
    rest (stack traces, breadcrumbs, contexts: nearly all of a real payload) without
    building it. The values keep their JSON types (``Any``): rule 2's checks below say
    which are usable, so that a bad one is named in the 422, never a decoder message."""

    event_id: Any = None
    level: Any = None
    issue_id: Any = None
    issue_url: Any = None
    web_url: Any = None
    url: Any = None
    hashes: Any = None
    fingerprint: Any = None
    tags: Any = None
    project: Any = None
    environment: Any = None
    title: Any = None
    culprit: Any = None
    release: Any = None


class _SentryData(Struct, gc=False):
    event: SentryEvent | None = None


class _SentryPayload(Struct, gc=False):
    data: _SentryData | None = None


_payload_decoder = msgspec.json.Decoder(_SentryPayload)

Tags = list[tuple[str, str | None]] | dict[str, str | None]


class _TypedEvent(Struct, gc=False):
    """``SentryEvent`` with rule 2's types, for the hot path: the decoder checks them
    in C as it builds the values, where checking ``Any`` values in Python took as long
    as the decode (tags alone: three passes, 2.3 µs). A body it refuses is not
    necessarily invalid (a field of another type is, an issue id that is a float
    is too, but the 422 must name it): it then takes the lenient ``SentryEvent`` way,
    which names every bad field. The fields rule 2 does not type stay ``Any``."""

    event_id: str | None = None
    level: str | None = None
    issue_id: str | int | None = None
    issue_url: Any = None
    web_url: Any = None
    url: Any = None
    hashes: list[str] | None = None
    fingerprint: list[str] | None = None
    tags: Tags | None = None
    project: Any = None
    environment: Any = None
    title: Any = None
    culprit: Any = None
    release: Any = None


class _TypedData(Struct, gc=False):
    event: _TypedEvent | None = None


class _TypedPayload(Struct, gc=False):
    data: _TypedData | None = None


_typed_decoder = msgspec.json.Decoder(_TypedPayload)


def level_rank(level: str) -> int:
    """Rank of a Sentry level; unknown levels count as ``error`` (docs/reference.md §5)."""
    rank = _LEVEL_RANK.get(level)
    if rank is None:
        normal = level.lower()
        rank = _LEVEL_RANK.get(_LEVEL_ALIASES.get(normal, normal), _LEVEL_RANK["error"])
    return rank


def validate_delivery(resource: str | None, body: object) -> None:
    """Raise ``InvalidPayload`` unless ``body`` is usable for ``resource``."""
    problem = InvalidPayload()
    if resource is None or resource == "":
        problem.missing.append("Sentry-Hook-Resource")
    if not isinstance(body, dict):
        problem.invalid.append("body")
    elif resource == EVENT_ALERT:
        _check_event_alert(body, problem)
    if problem.missing or problem.invalid:
        raise problem


def _check_event_alert(body: Mapping[str, Any], problem: InvalidPayload) -> None:
    data = body.get("data")
    if data is None:
        problem.missing.append("data.event")
        return
    if not isinstance(data, dict):
        problem.invalid.append("data")
        return
    event = data.get("event")
    if event is None:
        problem.missing.append("data.event")
        return
    if not isinstance(event, dict):
        problem.invalid.append("data.event")
        return
    _check_event_fields(_as_event(event), problem)


def _as_event(event: Mapping[str, Any]) -> SentryEvent:
    """``data.event`` as parsed JSON -> the fields obsv reads (any JSON object converts)."""
    return msgspec.convert(event, SentryEvent)


def _check_event_fields(event: SentryEvent, problem: InvalidPayload) -> None:
    event_id = event.event_id
    if event_id is None:
        problem.missing.append("data.event.event_id")
    elif not _is_nonempty_str(event_id) or len(event_id) > EVENT_ID_MAX:
        problem.invalid.append("data.event.event_id")
    checks = {
        "level": _is_nonempty_str,
        "issue_id": _is_issue_id,
        "hashes": _is_str_list,
        "fingerprint": _is_str_list,
        "tags": _is_tags,
    }
    for name, check in checks.items():
        value = getattr(event, name)
        if value is not None and not check(value):
            problem.invalid.append(f"data.event.{name}")
    if not problem.invalid:
        sentry_issue_id = _sentry_issue_id(event)
        if sentry_issue_id is None:
            problem.missing.append("data.event.issue_id")
        elif len(sentry_issue_id) > ISSUE_ID_MAX:
            problem.invalid.append("data.event.issue_id")


def _is_nonempty_str(value: object) -> bool:
    return isinstance(value, str) and value != ""


def _is_issue_id(value: object) -> bool:
    if isinstance(value, bool):
        return False
    return _is_nonempty_str(value) or (isinstance(value, int) and value >= 0)


def _is_str_list(value: object) -> TypeGuard[list[str]]:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _is_tags(value: object) -> bool:
    """Sentry sends tags as ``[[key, value], ...]``; some relays send an object."""
    if isinstance(value, dict):
        return all(v is None or isinstance(v, str) for v in value.values())
    if not isinstance(value, list):
        return False
    for pair in value:
        if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)):
            return False
        if pair[1] is not None and not isinstance(pair[1], str):
            return False
    return True


def tag_pairs(tags: object) -> list[tuple[str, str | None]]:
    """Tags as ``(key, value)`` pairs, whichever of Sentry's shapes they came in."""
    if isinstance(tags, dict):
        return [(str(k), v if isinstance(v, str) else None) for k, v in tags.items()]
    if isinstance(tags, list):
        return [
            (pair[0], pair[1] if isinstance(pair[1], str) else None)
            for pair in tags
            if isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)
        ]
    return []


def alert_from_delivery(body: Mapping[str, Any], *, validated: bool = False) -> Alert:
    """Build the ``Alert`` of an ``event_alert`` body (validating it unless told it was)."""
    if not validated:
        validate_delivery(EVENT_ALERT, body)
    return _alert_of(_as_event(body["data"]["event"]))


def alert_from_json(raw: bytes) -> Alert:
    """The ``Alert`` of an ``event_alert`` body straight from its bytes: a typed decode of
    the fields obsv reads, the rest skipped. ``InvalidPayload`` naming every missing and
    invalid field as ``validate_delivery`` does (a body of the wrong shape takes that
    slower way to say so); a ``ValueError`` if it is not JSON (not UTF-8, or nested
    deeper than msgspec's recursion limit, too: a 400 like any other bad JSON)."""
    try:
        payload = _typed_decoder.decode(raw)
    except msgspec.ValidationError:
        return _alert_from_lenient_json(raw)  # some field of another type: name it
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    event = payload.data.event if payload.data is not None else None
    alert = _alert_of_typed(event) if event is not None else None
    # None: something rule 2 refuses, which the lenient way names (rare: a 422).
    return alert if alert is not None else _alert_from_lenient_json(raw)


def _alert_from_lenient_json(raw: bytes) -> Alert:
    """``alert_from_json`` for a body the typed decode cannot take as it is: every value
    kept as the JSON gave it, checked in Python, so the 422 names each bad field."""
    try:
        payload = _payload_decoder.decode(raw)
    except msgspec.ValidationError:
        body = _untyped(raw)  # JSON, but data or data.event is not an object
        validate_delivery(EVENT_ALERT, body)
        return alert_from_delivery(body, validated=True)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    event = payload.data.event if payload.data is not None else None
    problem = InvalidPayload()
    if event is None:
        problem.missing.append("data.event")
    else:
        _check_event_fields(event, problem)
    if problem.missing or problem.invalid:
        raise problem
    assert event is not None
    return _alert_of(event)


def _untyped(raw: bytes) -> Any:
    try:
        return msgspec.json.decode(raw)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def _alert_of(event: SentryEvent) -> Alert:
    sentry_issue_id = _sentry_issue_id(event)
    assert sentry_issue_id is not None  # the checks guarantee it
    project = _project(event)
    tags = tag_pairs(event.tags)  # once: the level, the environment and the kept tags
    return Alert(
        sentry_issue_id=sentry_issue_id,
        event_id=event.event_id,
        level=_level(event, tags),
        fingerprint_key=fingerprint_key(event.fingerprint, event.hashes, project,
                                        sentry_issue_id),
        project=project,
        environment=_kept(_environment(event, tags), TAG_VALUE_KEPT),
        title=_kept(event.title, TEXT_KEPT),
        culprit=_kept(event.culprit, TEXT_KEPT),
        web_url=_kept(event.web_url, URL_KEPT),
        project_slug=_project_slug(event),
        release=_bounded(event.release),
        tags=_kept_tags(tags),
    )


def _alert_of_typed(event: _TypedEvent) -> Alert | None:
    """``_alert_of`` for a typed event, or None where rule 2 refuses a value the types
    let through (an empty string, a negative issue id, an issue id too long or nowhere)."""
    event_id, level, issue_id = event.event_id, event.level, event.issue_id
    if not event_id or len(event_id) > EVENT_ID_MAX or level == "" or issue_id == "" or (
            type(issue_id) is int and issue_id < 0):
        return None
    sentry_issue_id = str(issue_id) if issue_id is not None else _sentry_issue_id(event)
    if sentry_issue_id is None or len(sentry_issue_id) > ISSUE_ID_MAX:
        return None
    project = _project(event)
    tags = event.tags
    return Alert(
        sentry_issue_id=sentry_issue_id,
        event_id=event_id,
        level=_level(event, tags),
        fingerprint_key=fingerprint_key(event.fingerprint, event.hashes, project,
                                        sentry_issue_id),
        project=project,
        environment=_kept(_environment(event, tags), TAG_VALUE_KEPT),
        title=_kept(event.title, TEXT_KEPT),
        culprit=_kept(event.culprit, TEXT_KEPT),
        web_url=_kept(event.web_url, URL_KEPT),
        project_slug=_project_slug(event),
        release=_bounded(event.release),
        tags=_kept_tags(tags),
    )


def _tag_value(tags: Tags | None, name: str) -> str | None:
    """The first non-empty value of tag ``name``, from either of Sentry's shapes."""
    if isinstance(tags, dict):
        return tags.get(name) or None
    for key, value in tags or ():
        if key == name and value:
            return value
    return None


def _kept_tags(tags: Tags | None) -> tuple[tuple[str, str], ...]:
    """The first ``TAGS_KEPT`` tags with a value, each cut to ``TAG_VALUE_KEPT``, in one
    pass over either of Sentry's shapes (``tag_pairs`` gives the lenient way's)."""
    pairs = tags.items() if isinstance(tags, dict) else tags or ()
    return tuple([(key[:TAG_VALUE_KEPT], value[:TAG_VALUE_KEPT])
                  for key, value in pairs if value is not None][:TAGS_KEPT])


def _sentry_issue_id(event: SentryEvent | _TypedEvent) -> str | None:
    issue_id = event.issue_id
    if _is_issue_id(issue_id):
        return str(issue_id)
    for url in (event.issue_url, event.web_url):
        if isinstance(url, str) and (match := _ISSUE_NUMBER_IN_URL.search(url)):
            return match.group(1)
    hashes = event.hashes
    if _is_str_list(hashes) and hashes and hashes[0]:
        return str(hashes[0])
    return None


def fingerprint_key(
    fingerprint: object, hashes: object, project: str | None, sentry_issue_id: str
) -> str:
    """The cooldown key: custom fingerprint, else first hash, else the issue id.

    ``{{ default }}`` inside a custom fingerprint stands for Sentry's own grouping,
    so it is replaced by the first hash; the literal default fingerprint alone says
    nothing about the error, so it falls through to the hash. A fingerprint or hash
    longer than ``FINGERPRINT_KEY_MAX`` is keyed by its SHA-256 instead: the key is in
    every record of its alert and in the state, so it stays small whatever the body.
    """
    first_hash = hashes[0] if _is_str_list(hashes) and hashes else None
    scope = project if project is not None else "-"
    # The literal default, as nearly every event sends it, is known without the regex.
    if fingerprint != _DEFAULT_FINGERPRINT and _is_str_list(fingerprint) and fingerprint:
        values: list[str] = fingerprint
        defaults = [bool(_DEFAULT_VARIABLE.match(v)) for v in values]
        if not all(defaults):
            default = first_hash or sentry_issue_id
            parts = [default if is_default else v for v, is_default in zip(values, defaults,
                                                                           strict=True)]
            # Measured before it is joined: each default repeats the hash, so a small
            # body can spell a key of gigabytes (a thousand defaults, a long hash).
            if sum(map(len, parts)) + len(parts) <= FINGERPRINT_KEY_MAX:
                return f"{scope}:fp:" + "|".join(parts)
            return f"{scope}:fp:sha256:" + _digest([default, *values])
    if first_hash:
        if len(first_hash) <= FINGERPRINT_KEY_MAX:
            return f"{scope}:hash:{first_hash}"
        return f"{scope}:hash:sha256:" + _digest([first_hash])
    return f"issue:{sentry_issue_id}"


def _digest(values: list[str]) -> str:
    """The SHA-256 of ``values`` as one unambiguous text (a JSON array): a key for a
    fingerprint too long to be one itself. Never over the expansion of its defaults,
    whose length is the body's times itself."""
    return hashlib.sha256(msgspec.json.encode(values)).hexdigest()


def _level(event: SentryEvent | _TypedEvent, tags: Tags | None) -> str:
    """The event's level, else its ``level`` tag, else ``error``; lower case, bounded."""
    level = event.level
    if not (isinstance(level, str) and level):
        level = _tag_value(tags, "level") or "error"
    return level[:TAG_VALUE_KEPT].lower()


def _environment(event: SentryEvent | _TypedEvent, tags: Tags | None) -> str | None:
    """The event's environment, else its ``environment`` tag."""
    environment = event.environment
    if isinstance(environment, str) and environment:
        return environment
    return _tag_value(tags, "environment")


def _project(event: SentryEvent | _TypedEvent) -> str | None:
    project = event.project
    if isinstance(project, bool):
        return None
    if isinstance(project, int | str) and str(project) != "":
        return str(project)
    return None


_PROJECT_IN_API_URL = re.compile(r"/api/0/projects/[^/]+/([^/]+)/")
# Tags are kept for matching, bounded: the raw body keeps them all anyway.
TAGS_KEPT = 64
TAG_VALUE_KEPT = 200


def _project_slug(event: SentryEvent | _TypedEvent) -> str | None:
    """The project's slug, from the event's API url (``/api/0/projects/<org>/<slug>/``)."""
    url = event.url
    if isinstance(url, str) and (match := _PROJECT_IN_API_URL.search(url)):
        return match.group(1)[:TAG_VALUE_KEPT]
    return None


def _bounded(value: object) -> str | None:
    return value[:TAG_VALUE_KEPT] if isinstance(value, str) and value else None



def _kept(value: object, limit: int) -> str | None:
    """Rule 5: a string cut to ``limit`` characters; None for anything else."""
    return value[:limit] if isinstance(value, str) else None


_ORG_IN_PATH = re.compile(r"^/organizations/([^/]+)/")


def sentry_org(web_url: str | None) -> str | None:
    """The organization slug in a Sentry issue or event URL (``/organizations/<org>/...``
    on sentry.io and self-hosted, or ``https://<org>.sentry.io/issues/...``)."""
    if not web_url:
        return None
    parts = urlsplit(web_url)
    match = _ORG_IN_PATH.match(parts.path)
    if match:
        return sys.intern(match.group(1))  # one object per organization, however many links
    host = parts.hostname or ""
    if host.endswith(".sentry.io") and parts.path.startswith("/issues/"):
        return sys.intern(host.removesuffix(".sentry.io").split(".")[0]) or None
    return None
