"""Records <-> log lines, and upgrades of older schema versions.

The record structs of ``events.py`` are the schema: msgspec decodes a line straight
into them (typed and validated in C) and encodes them back. msgspec does no I/O, so
the core still never sees a file. Rules:
1. Every line holds ``seq``, ``at`` (RFC 3339 UTC with microseconds), ``type`` and
   ``v``, in that order, then the event's fields in the order its struct declares
   them; ``prev`` comes first when the line has one (obsv/eventlog.py rule 9). The
   bytes are the format (the hash chain hashes them, and every log backend must
   write the same line), so nothing here may change a byte of an existing line.
2. ``v`` is the schema version of that record type. A reader upgrades older versions
   through ``_UPGRADES`` before decoding, so code downstream only sees the current shape.
3. Unknown types and missing or mistyped fields are ``CodecError`` naming the field
   (msgspec's ``$.field`` path): a log we cannot read is an error that names the
   record, never a silently skipped line.
4. Times are written as ``format_time`` writes them, always with six fractional
   digits: msgspec drops ``.000000`` from a whole second, so it only writes times
   that have microseconds (every clock time); the others go through ``format_time``.
5. A field with a default is written only when it differs from it (msgspec's
   ``omit_defaults``), as the hand-written codec did, so older lines re-encode as they
   were. Three records do not fit that or their struct's order, and keep a small
   encoder each (``_SPECIAL_ENCODERS``): ``config.applied``, ``storm.decided`` and
   ``sentry.issue``.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Collection, Iterable, Iterator
from datetime import UTC, datetime
from functools import reduce
from typing import Any, get_type_hints

import msgspec
from msgspec import Struct
from msgspec import inspect as schema
from msgspec.structs import astuple
from msgspec.structs import replace as with_fields

from obsv.core import events as _events
from obsv.core.events import (
    AlertDecided,
    AlertReceived,
    CommentPosted,
    ConfigApplied,
    Envelope,
    Event,
    GitHubIssueObserved,
    HookReceived,
    IssueClosed,
    IssueFailed,
    IssueOpened,
    IssueReopened,
    LeaderElected,
    LogCheckpoint,
    Policy,
    Record,
    SentryIssueChanged,
    SentryResolved,
    SilenceAdded,
    SilenceExpired,
    StormDecided,
    SyncDecided,
)
from obsv.core.routes import Route

VERSION = 1
# The ``prev`` of the first line of a log (docs/reference.md §11).
GENESIS = "0" * 64
_DEFAULT_POLICY = Policy()

Json = dict[str, Any]

# type name -> {from_version: function that returns the dict at from_version + 1}
_UPGRADES: dict[str, dict[int, Callable[[Json], Json]]] = {}

EVENT_TYPES: tuple[type[Record], ...] = (
    AlertReceived, HookReceived, AlertDecided, ConfigApplied, IssueOpened, CommentPosted,
    IssueFailed, SentryIssueChanged, GitHubIssueObserved, IssueReopened, IssueClosed,
    SentryResolved, SyncDecided, StormDecided, LogCheckpoint, LeaderElected, SilenceAdded,
    SilenceExpired,
)
_BY_NAME = {cls.TYPE: cls for cls in EVENT_TYPES}
_TYPE_AND_VERSION = {cls: f',"type":"{cls.TYPE}","v":{VERSION}'.encode() for cls in EVENT_TYPES}


class CodecError(ValueError):
    """A record that cannot be read: unknown type, newer version, or a bad field."""


def format_time(at: datetime) -> str:
    """RFC 3339 UTC with microseconds, the one time format of the log."""
    if at.tzinfo is UTC:  # the common case, 4x faster than isoformat()
        text = _encoder.encode(at)  # b'"...Z"', with no fraction for a whole second
        return text[1:-1].decode() if at.microsecond else text[1:-2].decode() + ".000000Z"
    # isoformat, not strftime: strftime writes the year 999 as "999", which no RFC 3339
    # reader (msgspec's included) takes back, so such a line could not be read again.
    return at.astimezone(UTC).isoformat(timespec="microseconds")[:-6] + "Z"


def parse_time(text: str) -> datetime:
    """Inverse of ``format_time``; accepts any RFC 3339 offset."""
    at = datetime.fromisoformat(text)
    if at.tzinfo is None:
        raise CodecError(f"time without a UTC offset: {text!r}")
    return at.astimezone(UTC)


def type_name(event: Event) -> str:
    """The ``type`` field of an event."""
    return event.TYPE


# -- encoding -------------------------------------------------------------------------------

_encoder = msgspec.json.Encoder()


def encode_line(envelope: Envelope) -> bytes:
    """One record -> its log line, ``\\n`` included (rule 1)."""
    at = envelope.at
    if at.microsecond and at.tzinfo is UTC:
        at_text = _encoder.encode(at)  # msgspec writes these exactly as format_time does
    else:  # rule 4: a whole second, or another offset
        at_text = b'"' + format_time(at).encode() + b'"'
    prev = envelope.prev
    start = b'{"seq":' if prev is None else b'{"prev":"' + prev.encode() + b'","seq":'
    body = _encoder.encode(_wire(envelope.event))  # b'{...}': the event's own fields
    return b"".join((start, b"%d" % envelope.seq, b',"at":', at_text,
                     _TYPE_AND_VERSION[type(envelope.event)], b"," if len(body) > 2 else b"",
                     memoryview(body)[1:], b"\n"))


def encode(envelope: Envelope) -> Json:
    """The JSON-ready dict of one record, keys in line order (for snapshots and tests)."""
    record: Json = msgspec.json.decode(encode_line(envelope))
    return record


def _wire(event: Record) -> object:
    """What msgspec encodes for ``event``: the struct itself, unless it holds times
    (rule 4) or is one of the records whose line is not its struct as it is (rule 5)."""
    special = _SPECIAL_ENCODERS.get(type(event))
    if special is not None:
        return special(event)
    return _times_as_text(event)


def _times_as_text(struct: Struct) -> Struct:
    """``struct`` with its time fields (nested ones too) as ``format_time`` text. msgspec
    checks no types when encoding, so the copy encodes as the original would, but with
    the log's time format."""
    changes: dict[str, object] = {}
    for name, nested in _time_fields(type(struct)):
        value = getattr(struct, name)
        if value is None:
            continue
        changes[name] = _times_as_text(value) if nested else format_time(value)
    return with_fields(struct, **changes) if changes else struct


_TIME_FIELDS: dict[type, tuple[tuple[str, bool], ...]] = {}


def _time_fields(cls: type) -> tuple[tuple[str, bool], ...]:
    """The fields of a struct type that hold a time (False) or a struct holding one
    (True), worked out once per type from its schema."""
    known = _TIME_FIELDS.get(cls)
    if known is None:
        info = schema.type_info(cls)
        assert isinstance(info, schema.StructType)
        known = tuple((f.name, isinstance(kind, schema.StructType))
                      for f in info.fields for kind in _kinds(f.type)
                      if isinstance(kind, schema.DateTimeType) or (
                          isinstance(kind, schema.StructType) and _time_fields(kind.cls)))
        _TIME_FIELDS[cls] = known
    return known


def _kinds(kind: schema.Type) -> tuple[schema.Type, ...]:
    return kind.types if isinstance(kind, schema.UnionType) else (kind,)


def _config_fields(event: ConfigApplied) -> Json:
    return {"policy": encode_policy(event.policy)}


def _storm_fields(event: StormDecided) -> Json:
    # The ids listed are written beside the issues (a reader's index into them).
    return {"alert_seq": event.alert_seq, "action": event.action, "repo": event.repo,
            "window_start": format_time(event.window_start),
            "sentry_issue_ids": list(event.sentry_issue_ids), "issues": event.issues}


def _sentry_issue_fields(event: SentryIssueChanged) -> Json:
    # ``release`` came later but is written before ``raw``, null too.
    return {"delivery": event.delivery, "action": event.action,
            "sentry_issue_id": event.sentry_issue_id, "status": event.status,
            "substatus": event.substatus, "resolution_type": event.resolution_type,
            "release": event.release, "raw": event.raw}


_SPECIAL_ENCODERS: dict[type, Callable[[Any], object]] = {
    ConfigApplied: _config_fields,
    StormDecided: _storm_fields,
    SentryIssueChanged: _sentry_issue_fields,
}


def encode_policy(policy: Policy) -> Json:
    """The JSON-ready dict of a policy (also printed by the CLI)."""
    fields: Json = {
        "min_level": policy.min_level,
        "environments": list(policy.environments),
        "cooldown_seconds": policy.cooldown_seconds,
        "max_issues_per_hour": policy.max_issues_per_hour,
        "repo": policy.repo,
        "labels": list(policy.labels),
        "reopen_window_seconds": policy.reopen_window_seconds,
        "mute_label": policy.mute_label,
        "close_on_resolve": policy.close_on_resolve,
        "resolve_in_sentry": policy.resolve_in_sentry,
    }
    # Written only when set, so the lines of a policy without routes (all of them
    # before routing) re-encode byte for byte as they were.
    if policy.routes:
        fields["routes"] = [encode_route(route) for route in policy.routes]
    if not policy.dry_run:
        fields["dry_run"] = False
    if policy.storm_labels != _DEFAULT_POLICY.storm_labels:
        fields["storm_labels"] = list(policy.storm_labels)
    return fields


def encode_route(route: Route) -> Json:
    """A route as JSON: its repo, and only the conditions and overrides it sets."""
    fields: Json = {"repo": route.repo}
    if route.projects:
        fields["projects"] = list(route.projects)
    if route.environments:
        fields["environments"] = list(route.environments)
    if route.tags:
        fields["tags"] = dict(route.tags)
    for name in ("labels", "min_level", "cooldown_seconds", "max_issues_per_hour"):
        value = getattr(route, name)
        if value is not None:
            fields[name] = list(value) if isinstance(value, tuple) else value
    return fields


# -- decoding -------------------------------------------------------------------------------

# The chain's fields of a line (rule 1), added to every record type's line struct.
_HEADER: list[tuple[str, Any] | tuple[str, Any, Any]] = [
    ("seq", int), ("at", _events.Time), ("v", int), ("prev", _events.Sha256 | None, None)]


# Fields read as any string although their type is narrower: a hand-edited decision
# (``"reason":"new_issuE"``) must reach ``replay --verify`` as a decision that differs
# from the one re-derived, after a broken link, not stop the audit as an unreadable line.
_LENIENT: dict[type, dict[str, Any]] = {AlertDecided: {"action": str, "reason": str}}


class _PolicyLine(Record, frozen=True):
    """``config.applied`` as read: its policy is read by ``decode_policy`` (routes hold
    their tags as an object, and older lines lack the newer settings)."""

    policy: dict[str, Any]


def _line_struct(cls: type[Record], tag: str,
                 read_as: dict[str, Any] | None = None) -> type[Struct]:
    """The struct of a whole line of ``cls``: the chain's fields and the event's, tagged
    by ``type`` so that one msgspec decoder reads any line; ``read_as`` reads some
    fields as another type (``decode_line_without_bodies``)."""
    hints = get_type_hints(cls, include_extras=True) | _LENIENT.get(cls, {}) | (read_as or {})
    defaults = dict(zip(cls.__struct_fields__[::-1], cls.__struct_defaults__[::-1],
                        strict=False))
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = [
        (name, hints[name], defaults[name]) if name in defaults else (name, hints[name])
        for name in cls.__struct_fields__]
    return msgspec.defstruct(f"{cls.__name__}Line", [*fields, *_HEADER], kw_only=True,
                             tag_field="type", tag=tag, gc=False)


def _make_event(cls: type[Record]) -> Callable[[tuple[Any, ...]], Event]:
    """How to build ``cls`` from the first values of its line struct's tuple."""
    special = _SPECIAL_DECODERS.get(cls)
    if special is not None:
        return special
    count = len(cls.__struct_fields__)
    return lambda values: cls(*values[:count])  # type: ignore[return-value]


def decode_line(line: bytes) -> Envelope:
    """One log line (``\\n`` or not) -> its record; ``CodecError`` naming what is wrong."""
    try:
        decoded = _decoder.decode(line)
    except _NOT_READ as exc:
        raise _unreadable(line, exc) from None
    return _envelope(decoded, line)


def decode_line_without_bodies(line: bytes) -> Envelope:
    """``decode_line``, except that an ``alert.received`` comes without its body (``raw``
    None; ``raw_sha256`` as written): for a reader that never looks at the bodies, such
    as ``obsv replay`` without a secret to re-check them. msgspec steps over the body
    unread, which is most of the work of decoding a line with a large one.

    It accepts exactly the lines ``decode_line`` accepts, with the same errors: a body
    that is not a string or null, and a line that is not ASCII (msgspec does not check
    the UTF-8 of what it steps over), are read by ``decode_line`` itself."""
    if line.isascii():
        try:
            return _envelope(_bodyless_decoder.decode(line), line)
        except _READ_IN_FULL:
            pass
    envelope = decode_line(line)
    event = envelope.event
    if isinstance(event, AlertReceived) and event.raw is not None:  # the same shape
        return Envelope(envelope.seq, envelope.at, with_fields(event, raw=None), envelope.prev)
    return envelope


def _envelope(decoded: Struct, line: bytes) -> Envelope:
    """The record of a decoded line struct."""
    make, count, kind = _LINES[type(decoded)]
    values = astuple(decoded)
    seq, at, version, prev = values[count:]
    if version != VERSION:
        return decode(_upgrade(msgspec.json.decode(line)))
    if at.tzinfo is not UTC:  # a line written elsewhere with another offset
        at = _in_utc(at)
    try:
        event = make(values)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CodecError(f"malformed record ({kind}): {exc}") from exc
    # The record's time fields (learnt on first use: msgspec's schema of every type is
    # 8 ms at import, which every command would pay): mostly none, or one unset.
    times = _TIME_FIELDS.get(type(event))
    if times is None:
        times = _time_fields(type(event))
    for name, nested in times:
        value = getattr(event, name)
        if value is not None and (nested or value.tzinfo is not UTC):
            _refuse_times_beyond_utc(event, ((name, nested),))
    return Envelope(seq, at, event, prev)


def _refuse_times_beyond_utc(struct: Struct, times: tuple[tuple[str, bool], ...]) -> None:
    """``CodecError`` for a time in ``struct`` that UTC cannot hold (a ``since`` of year
    1 at +01:00): the fold compares and prints times in UTC, and would overflow there,
    in the service's start or an audit, instead of naming the line."""
    for name, nested in times:
        value = getattr(struct, name)
        if value is None:
            continue
        if nested:
            _refuse_times_beyond_utc(value, _time_fields(type(value)))
        elif value.tzinfo is not UTC:
            _in_utc(value)


def decode(record: Json) -> Envelope:
    """The record a JSON dict describes (a snapshot holds some); ``CodecError`` if it is
    not one."""
    if not isinstance(record, dict):
        raise CodecError("a record must be a JSON object")
    return decode_line(msgspec.json.encode(_upgrade(record)))


# What msgspec raises for bytes it cannot read: not JSON (or numbers beyond 64 bits),
# not UTF-8, or nested deeper than its recursion limit (a hostile line must be a
# CodecError naming the line, never a traceback).
_NOT_READ = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)


def _unreadable(line: bytes, exc: Exception) -> CodecError:
    """Rule 3, the slow path of a line the typed decode refused: say why in words."""
    try:
        record = msgspec.json.decode(line)
    except _NOT_READ:
        return CodecError(f"not JSON: {exc}")
    if not isinstance(record, dict):
        return CodecError("a record must be a JSON object")
    kind = record.get("type")
    if kind not in _BY_NAME:
        return CodecError(f"unknown record type {kind!r}")
    try:
        _upgrade(record)
    except CodecError as newer:
        return newer
    return CodecError(f"malformed record ({kind}): {exc}")


def _upgrade(record: Json) -> Json:
    kind, version = record.get("type"), record.get("v")
    if version == VERSION:
        return record
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CodecError(f"bad schema version {version!r}")
    if version > VERSION:
        raise CodecError(f"record version {version} is newer than this obsv ({VERSION})")
    steps = _UPGRADES.get(str(kind), {})
    while version < VERSION:
        record = steps[version](record)
        version += 1
    return record


def _received(values: tuple[Any, ...]) -> AlertReceived:
    event = AlertReceived(*values[:4])
    if event.raw is None and event.raw_sha256 is None:
        raise CodecError("an alert.received needs its raw body, or raw null and raw_sha256")
    return event


class _ReadInFull(Exception):  # not an error: the way back to decode_line
    """Raised by ``_received_without_body`` for a line only ``decode_line`` may judge."""


def _received_without_body(values: tuple[Any, ...]) -> AlertReceived:
    # values[2] is the body as msgspec.Raw: its JSON text, not decoded.
    first = memoryview(values[2])[0]
    if first == _QUOTE or (first == _NULL and values[3] is not None):
        return AlertReceived(values[0], values[1], None, values[3])
    raise _ReadInFull  # a body of another type, or neither body nor hash: named there


_QUOTE, _NULL = ord('"'), ord("n")


def _sync(values: tuple[Any, ...]) -> SyncDecided:
    event = SyncDecided(*values[:4])
    if (event.action, event.reason) not in (("close", "resolved_in_sentry"),
                                            ("resolve_sentry", "closed_on_github")):
        raise CodecError(f"unknown sync decision {event.action!r} ({event.reason!r})")
    return event


def _config(values: tuple[Any, ...]) -> ConfigApplied:
    return ConfigApplied(decode_policy(values[0]))


def decode_policy(p: Json) -> Policy:
    """Inverse of ``encode_policy``; settings an older obsv did not record get their defaults."""
    return Policy(
        min_level=str(p["min_level"]),
        environments=tuple(p["environments"]),
        cooldown_seconds=_int(p["cooldown_seconds"]),
        max_issues_per_hour=_int(p["max_issues_per_hour"]),
        repo=p["repo"],
        labels=tuple(p["labels"]),
        reopen_window_seconds=_int(p.get("reopen_window_seconds",
                                         _DEFAULT_POLICY.reopen_window_seconds)),
        mute_label=str(p.get("mute_label", _DEFAULT_POLICY.mute_label)),
        close_on_resolve=_bool(p.get("close_on_resolve", _DEFAULT_POLICY.close_on_resolve)),
        resolve_in_sentry=_bool(p.get("resolve_in_sentry", _DEFAULT_POLICY.resolve_in_sentry)),
        routes=tuple(decode_route(route) for route in p.get("routes") or ()),
        dry_run=_bool(p.get("dry_run", _DEFAULT_POLICY.dry_run)),
        storm_labels=tuple(str(label) for label in p.get("storm_labels")
                           or _DEFAULT_POLICY.storm_labels),
    )


def decode_route(r: Json) -> Route:
    """Inverse of ``encode_route``."""
    labels = r.get("labels")
    return Route(
        repo=str(r["repo"]),
        projects=tuple(str(p) for p in r.get("projects") or ()),
        environments=tuple(str(e) for e in r.get("environments") or ()),
        tags=tuple((str(k), str(v)) for k, v in (r.get("tags") or {}).items()),
        labels=None if labels is None else tuple(str(label) for label in labels),
        min_level=_optional_str(r.get("min_level")),
        cooldown_seconds=_optional_int(r.get("cooldown_seconds")),
        max_issues_per_hour=_optional_int(r.get("max_issues_per_hour")),
    )


def _int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise CodecError(f"expected an integer, got {value!r}")
    return value


def _optional_int(value: object) -> int | None:
    return None if value is None else _int(value)


def _bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise CodecError(f"expected true or false, got {value!r}")
    return value


def _optional_str(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise CodecError(f"expected a string, got {value!r}")


_SPECIAL_DECODERS: dict[type, Callable[[tuple[Any, ...]], Event]] = {
    AlertReceived: _received,
    SyncDecided: _sync,
    _PolicyLine: _config,
}
# One line struct per record type, and the one decoder that reads them all.
_LINES: dict[type[Struct], tuple[Callable[[tuple[Any, ...]], Event], int, str]] = {}
for _cls in EVENT_TYPES:
    _source = _PolicyLine if _cls is ConfigApplied else _cls
    _LINES[_line_struct(_source, _cls.TYPE)] = (_make_event(_source),
                                                len(_source.__struct_fields__), _cls.TYPE)
_decoder = msgspec.json.Decoder(reduce(operator.or_, _LINES))
# The same, with the alert.received line reading its body as msgspec.Raw (stepped over).
_RECEIVED_WITHOUT_BODY = _line_struct(AlertReceived, AlertReceived.TYPE, {"raw": msgspec.Raw})
_bodyless_decoder = msgspec.json.Decoder(reduce(operator.or_, (
    _RECEIVED_WITHOUT_BODY, *(line for line, (_, _, kind) in _LINES.items()
                              if kind != AlertReceived.TYPE))))
_LINES[_RECEIVED_WITHOUT_BODY] = (_received_without_body,
                                  len(AlertReceived.__struct_fields__), AlertReceived.TYPE)
_READ_IN_FULL = (_ReadInFull, CodecError, *_NOT_READ)


# -- the recorded answers, read fast (``obsv replay --json``, obsv/ledger.py) ----------------
# A line read for its summary: its type and seq, and for the two records an alert's row
# is made of, the alert and its time (``alert.received``: an ``AlertSummary``) or the
# decision (``alert.decided``).


class AlertSummary(Struct, frozen=True, gc=False):
    """The fields of an alert that an audit row shows (``obsv replay --json``): what
    ``summaries`` reads of an ``alert.received``; the rest (the project, culprit,
    URL, release and tags) is stepped over, with the body and the delivery."""

    sentry_issue_id: str
    event_id: str
    level: str
    fingerprint_key: str
    environment: str | None
    title: str | None


def _summary_struct(cls: type[Record], fields: list[tuple[str, Any]]) -> type[Struct]:
    """A line of ``cls`` read for its summary: ``fields``, seq and v (and the class's
    ``TYPE``); msgspec steps over every other key unread (bodies, deliveries, reports,
    the time)."""
    return msgspec.defstruct(f"{cls.__name__}Summary", [*fields, ("seq", int), ("v", int)],
                             kw_only=True, tag_field="type", tag=cls.TYPE, gc=False,
                             namespace={"TYPE": cls.TYPE})


class DecidedSummary(AlertDecided, frozen=True, kw_only=True, tag_field="type",
                     tag=AlertDecided.TYPE):
    """An ``alert.decided`` line read as the decision itself (an ``AlertDecided``: the
    line's own keys are the record's, and seq and v come along), with no second struct
    to build: one per alert. Its action and reason are the strict ones: a hand-edited
    one is a ``CodecError`` here, and the full fold reads it (``_LENIENT``) and says it
    differs."""

    seq: int
    v: int


# The summary of an ``alert.received``: ``alert`` (an ``AlertSummary``), ``at`` (UTC), seq.
ReceivedSummary = _summary_struct(AlertReceived, [("alert", AlertSummary),
                                                  ("at", _events.Time)])
_SUMMARY_TYPES: dict[type[Struct], str] = {
    ReceivedSummary: AlertReceived.TYPE, DecidedSummary: AlertDecided.TYPE,
    **{_summary_struct(cls, []): cls.TYPE for cls in EVENT_TYPES
       if cls not in (AlertReceived, AlertDecided)}}
_summary_decoder = msgspec.json.Decoder(reduce(operator.or_, _SUMMARY_TYPES))


def summaries(lines: Iterable[bytes], in_full: Collection[str] = ()) -> Iterator[Any]:
    """The summary of each line (each with its ``\\n``), in order: a ``ReceivedSummary``
    for an ``alert.received`` (its ``at`` in UTC), a ``DecidedSummary`` for an
    ``alert.decided``, the ``Envelope`` (``decode_line``) for a line of any other type
    named in ``in_full``, and for the rest a struct with only its ``seq`` and ``TYPE``.

    Only what a summary holds is read and checked: a line this accepts may still hold a
    bad field elsewhere (a body, a delivery, a report), which ``decode_line`` refuses.
    For a reader that shows what was recorded and leaves the checking to ``replay
    --verify``. ``CodecError`` for a line it cannot summarise (not JSON, an unknown type,
    a bad summarised field, an older version: read those with ``decode_line``) and for
    a torn last line (no ``\\n``). One loop, not a call per line: a replay of a log of
    small records spends a tenth of its time on nothing else (bench/README.md)."""
    decode = _summary_decoder.decode
    full = frozenset(kind for kind, name in _SUMMARY_TYPES.items() if name in in_full)
    line = b"\n"
    for line in lines:
        try:
            summary: Any = decode(line)
        except _NOT_READ as exc:
            raise CodecError(f"not summarised: {exc}") from None
        if summary.v != VERSION:
            raise CodecError(f"record version {summary.v}: read it with decode_line")
        kind = type(summary)
        if kind is ReceivedSummary:
            if summary.at.tzinfo is not UTC:  # a line written elsewhere with another offset
                summary.at = _in_utc(summary.at)
        elif kind is DecidedSummary:
            since = summary.since
            if since is not None and since.tzinfo is not UTC:
                _in_utc(since)  # shown in UTC (format_time): refused now, not while printing
        elif kind in full:
            summary = decode_line(line)
        yield summary
    if line[-1:] != b"\n":
        raise CodecError("the last line is torn (no newline)")


def _in_utc(at: datetime) -> datetime:
    """``at`` in UTC; ``CodecError`` for a time that UTC cannot hold (year 1 at +01:00,
    year 9999 at -01:00: valid RFC 3339, but ``astimezone`` overflows)."""
    try:
        return at.astimezone(UTC)
    except OverflowError:
        raise CodecError(f"time {at.isoformat()} is out of range in UTC") from None
