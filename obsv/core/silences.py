"""Silences (docs/reference.md §9): matchers, and what a silence mutes. No I/O.

Rules:
1. A matcher is ``NAME=VALUE``, ``NAME!=VALUE``, ``NAME=~REGEX`` or ``NAME!~REGEX``,
   NAME one of ``FIELDS`` or ``tag:TAG``. A field the alert lacks counts as the
   empty string (so ``release=`` matches an alert without a release).
   ``=~`` is always the regex operator: an equality whose value starts with ``~``
   is written as the regex ``NAME=~\\~...`` (as in Alertmanager).
2. A regex matches the whole value (``re.fullmatch``), and is compiled once, when the
   matcher is parsed. Python's ``re`` cannot be stopped once it runs, and the fold
   must never hang on one alert: patterns are at most ``MAX_PATTERN`` characters, a
   quantified group holding a quantifier or an alternation (``(a+)+``, ``(a|aa)*``,
   the shapes that backtrack exponentially) is refused, so are more than
   ``MAX_REPEATS`` repetitions (``.*.*.*.*`` backtracks polynomially), and a regex only sees the
   first ``MATCHED_CHARS`` characters of a value (the alert keeps release, slug and
   tags at that size anyway; obsv/core/alert.py).
3. A silence mutes the alerts that every one of its matchers matches, whose ``at``
   lies in ``[starts_at, ends_at)``, while no ``silence.expired`` of it came before
   them in the log. Decided at the alert's position, so replay agrees.
4. Every error is a ``SilenceError`` naming the field (``matchers[1]``, ``ends_at``)
   and what is wrong: the admin API answers it as 400.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from obsv.core.alert import Alert
from obsv.core.codec import parse_time

FIELDS = ("sentry_issue_id", "project", "environment", "level", "title", "culprit", "release")
TAG_PREFIX = "tag:"
MAX_PATTERN = 256  # characters of a value or regex
MATCHED_CHARS = 200  # a regex sees this much of a value (the size alert.py keeps)
MAX_REPEATS = 3  # *, + and {..} in one regex: 200 characters ** 3 steps at worst
MAX_MATCHERS = 32
MAX_TEXT = 1024  # comment and created_by
MAX_DURATION = timedelta(days=366)

Op = Literal["=", "!=", "=~", "!~"]
_MATCHER = re.compile(r"(?s)(?P<name>[a-z_]+|tag:[^=!~\s]{1,200})(?P<op>=~|!=|!~|=)(?P<value>.*)")
_DURATION = re.compile(r"^(\d{1,9})([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


@dataclass(frozen=True, slots=True)
class SilenceError(ValueError):
    """A silence that cannot be made: ``field`` names the culprit (HTTP 400)."""

    field: str
    message: str
    status: int = 400

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


@dataclass(frozen=True, slots=True)
class Matcher:
    """One condition of a silence; ``str()`` gives back the text it was parsed from."""

    name: str
    op: Op
    value: str
    regex: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    def __str__(self) -> str:
        return f"{self.name}{self.op}{self.value}"

    def matches(self, alert: Alert) -> bool:
        """Whether the alert satisfies this condition (rule 1 and 2)."""
        values = _values(alert, self.name)
        if self.regex is not None:
            hit = any(self.regex.fullmatch(v[:MATCHED_CHARS]) for v in values)
        else:
            hit = self.value in values
        return hit if self.op in ("=", "=~") else not hit


def _values(alert: Alert, name: str) -> tuple[str, ...]:
    """The alert's values for a matcher name; ``project`` is the slug or the numeric id."""
    if name.startswith(TAG_PREFIX):
        tag = name[len(TAG_PREFIX):]
        found = tuple(v for k, v in alert.tags if k == tag)
        return found or ("",)
    if name == "project":
        both = tuple(v for v in (alert.project_slug, alert.project) if v is not None)
        return both or ("",)
    value: str | None = getattr(alert, name)
    return (value or "",)


def parse_matcher(text: object, where: str = "matcher") -> Matcher:
    """The matcher ``text`` describes; ``SilenceError`` naming ``where`` if none."""
    if not isinstance(text, str):
        raise SilenceError(where, "a matcher is a string like project=web")
    match = _MATCHER.fullmatch(text)
    if match is None:
        raise SilenceError(where, f"{text[:80]!r} is not NAME=VALUE, NAME!=VALUE, "
                                  "NAME=~REGEX or NAME!~REGEX")
    name, value = match["name"], match["value"]
    op: Op = match["op"]  # type: ignore[assignment]  # the regex allows only these four
    if name not in FIELDS and not name.startswith(TAG_PREFIX):
        raise SilenceError(where, f"unknown name {name!r}; use one of {', '.join(FIELDS)} "
                                  "or tag:NAME")
    if len(value) > MAX_PATTERN:
        raise SilenceError(where, f"the value is longer than {MAX_PATTERN} characters")
    regex = None
    if op in ("=~", "!~"):
        regex = _compile(value, where)
    return Matcher(name, op, value, regex)


def _compile(pattern: str, where: str) -> re.Pattern[str]:
    problem = _backtracking_hazard(pattern)
    if problem:
        raise SilenceError(where, f"regex refused: {problem}; Python's re cannot be "
                                  "interrupted, so a silence must not be able to hang obsv")
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise SilenceError(where, f"not a valid regex: {exc}") from None


def _backtracking_hazard(pattern: str) -> str | None:
    """Rule 2: a quantified group that holds a quantifier or an alternation, else None."""
    groups: list[bool] = []  # per open group: does it hold a quantifier or |?
    closed_risky = False
    repeats = 0
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            i += 2
            closed_risky = False
            continue
        if char == "[":  # a character class: skip to its end
            i = _class_end(pattern, i)
            closed_risky = False
            continue
        if char in "*+{" and closed_risky:
            return "a repeated group that itself repeats or alternates (like (a+)+)"
        quantifier = char in "*+{" or (char == "?" and pattern[i - 1:i] not in ("(", "*", "+",
                                                                               "?", "}"))
        repeats += char in "*+{"
        if repeats > MAX_REPEATS:
            return f"more than {MAX_REPEATS} repetitions (*, +, {{}})"
        if groups and (quantifier or char == "|"):
            groups[-1] = True
        closed_risky = False
        if char == "(":
            groups.append(False)
        elif char == ")" and groups:
            risky = groups.pop()
            if risky and groups:
                groups[-1] = True
            closed_risky = risky
        i += 1
    return None


def _class_end(pattern: str, start: int) -> int:
    i = start + 1
    if i < len(pattern) and pattern[i] == "^":
        i += 1
    if i < len(pattern) and pattern[i] == "]":
        i += 1
    while i < len(pattern) and pattern[i] != "]":
        i += 2 if pattern[i] == "\\" else 1
    return i + 1


def parse_matchers(texts: object, where: str = "matchers") -> tuple[Matcher, ...]:
    """A silence's matchers: a non-empty list of at most ``MAX_MATCHERS`` strings."""
    if not isinstance(texts, list | tuple) or not texts:
        raise SilenceError(where, "give a non-empty list of matchers, like [\"project=web\"]")
    if len(texts) > MAX_MATCHERS:
        raise SilenceError(where, f"at most {MAX_MATCHERS} matchers")
    return tuple(parse_matcher(t, f"{where}[{i}]") for i, t in enumerate(texts))


def parse_duration(text: object, where: str = "duration") -> timedelta:
    """``30s``, ``90m``, ``24h``, ``7d``, ``2w``: positive, at most ``MAX_DURATION``."""
    match = _DURATION.match(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise SilenceError(where, f"{str(text)[:40]!r} is not a duration like 90m, 24h or 7d")
    amount, unit = match.groups()
    try:
        duration = timedelta(**{_UNITS[unit]: int(amount)})
    except OverflowError:
        duration = MAX_DURATION * 2
    if duration <= timedelta(0) or duration > MAX_DURATION:
        raise SilenceError(where, "give a duration above 0 and at most 366 days")
    return duration


@dataclass(frozen=True, slots=True)
class Silence:
    """A silence as the fold knows it (rule 3)."""

    id: str
    matchers: tuple[Matcher, ...]
    starts_at: datetime
    ends_at: datetime
    comment: str
    created_by: str
    expired_at: datetime | None = None  # its silence.expired record's time
    expired_by: str | None = None

    def active_at(self, at: datetime) -> bool:
        """Rule 3's time condition (an expiry is always before ``at`` in the log)."""
        return self.expired_at is None and self.starts_at <= at < self.ends_at

    def mutes(self, alert: Alert, at: datetime) -> bool:
        """Whether this silence mutes ``alert`` received at ``at``."""
        return self.active_at(at) and all(m.matches(alert) for m in self.matchers)

    @property
    def stopped_at(self) -> datetime:
        """When it stopped (or will stop) muting: its expiry, else its end."""
        if self.expired_at is not None and self.expired_at < self.ends_at:
            return self.expired_at
        return self.ends_at


@dataclass(frozen=True, slots=True)
class NewSilence:
    """What a valid ``POST /api/silences`` asks for."""

    matchers: tuple[str, ...]
    ends_at: datetime
    comment: str
    created_by: str


def new_silence(body: object, now: datetime) -> NewSilence:
    """Validate an API body (docs/reference.md §9); ``SilenceError`` names the field."""
    if not isinstance(body, Mapping):
        raise SilenceError("body", "send a JSON object")
    unknown = sorted(set(body) - {"matchers", "ends_at", "duration", "comment", "created_by"})
    if unknown:
        raise SilenceError(unknown[0], "not a field of a silence")
    matchers = parse_matchers(body.get("matchers"))
    ends_at = _ends_at(body, now)
    comment = _text(body, "comment", required=True)
    created_by = _text(body, "created_by", required=False) or "unknown"
    return NewSilence(tuple(str(m) for m in matchers), ends_at, comment, created_by)


def _ends_at(body: Mapping[str, object], now: datetime) -> datetime:
    if "ends_at" in body and "duration" in body:
        raise SilenceError("ends_at", "give ends_at or duration, not both")
    if "duration" in body:
        return now + parse_duration(body["duration"])
    raw = body.get("ends_at")
    if not isinstance(raw, str):
        raise SilenceError("ends_at", "give ends_at (RFC 3339) or duration (like 24h)")
    try:
        ends_at = parse_time(raw)
    except ValueError:
        raise SilenceError("ends_at", f"{raw[:40]!r} is not an RFC 3339 time with an offset") \
            from None
    if ends_at <= now:
        raise SilenceError("ends_at", "is in the past; a silence must end after now")
    if ends_at - now > MAX_DURATION:
        raise SilenceError("ends_at", "is more than 366 days away")
    return ends_at


def _text(body: Mapping[str, object], name: str, *, required: bool) -> str:
    raw = body.get(name)
    if raw is None and not required:
        return ""
    if not isinstance(raw, str) or not raw.strip():
        raise SilenceError(name, "give a non-empty string" + (" saying why" if required else ""))
    if len(raw) > MAX_TEXT:
        raise SilenceError(name, f"at most {MAX_TEXT} characters")
    return raw.strip()


def first_muting(silences: Iterable[Silence], alert: Alert, at: datetime) -> Silence | None:
    """The first silence (in log order) that mutes the alert, if any."""
    return next((s for s in silences if s.mutes(alert, at)), None)
