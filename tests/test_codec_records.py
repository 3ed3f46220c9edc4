"""Every record type through the msgspec structs (obsv/core/codec.py): lines written by
the codec before msgspec still decode and re-encode byte for byte, and random records of
every type round-trip through a line."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from obsv.core.alert import Alert
from obsv.core.codec import (
    EVENT_TYPES,
    CodecError,
    decode_line,
    decode_line_without_bodies,
    encode_line,
    format_time,
)
from obsv.core.events import (
    AlertDecided,
    AlertReceived,
    CommentPosted,
    ConfigApplied,
    Delivery,
    Envelope,
    Event,
    GitHubIssueObserved,
    HookReceived,
    IssueClosed,
    IssueFailed,
    IssueOpened,
    IssueReopened,
    LeaderElected,
    LinkedIssue,
    LogCheckpoint,
    Policy,
    SentryIssueChanged,
    SentryResolved,
    SilenceAdded,
    SilenceExpired,
    StormDecided,
    StormIssue,
    Suppressed,
    SyncDecided,
)
from obsv.core.routes import Route

# Two lines (one without prev, one with) per case, written by the hand-made codec this
# one replaced: every record type, optional fields set and unset, whole-second times,
# non-ASCII and U+2028 in strings, routes and a non-default policy.
GOLDEN_LINES = Path(__file__).parent.joinpath("golden", "records.jsonl").read_bytes()
GOLDEN = GOLDEN_LINES.splitlines(keepends=True)


@pytest.mark.parametrize("line", GOLDEN, ids=lambda line: orjson.loads(line)["type"])
def test_lines_of_the_old_codec_decode_and_encode_back_byte_for_byte(line: bytes) -> None:
    envelope = decode_line(line)
    assert encode_line(envelope) == line
    assert envelope.prev == orjson.loads(line).get("prev")


def test_the_golden_lines_cover_every_record_type() -> None:
    types = {orjson.loads(line)["type"] for line in GOLDEN}
    assert types == {cls.TYPE for cls in EVENT_TYPES}


_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)  # no lone surrogates
_opt_text = st.none() | _text
_ids = st.integers(1, 2**53)
_opt_ids = st.none() | _ids
_times = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1),
                      timezones=st.just(UTC))
# Whole seconds are the case msgspec's own time format would write differently.
_times = _times | _times.map(lambda at: at.replace(microsecond=0))
_opt_times = st.none() | _times
_hex = st.text("0123456789abcdef", min_size=64, max_size=64)
_deliveries = st.builds(Delivery, _opt_text, _text, _opt_text, _text)
_alerts = st.builds(Alert, _text, _text, _text, _text, _opt_text, _opt_text, _opt_text,
                    _opt_text, _opt_text, _opt_text, _opt_text,
                    st.lists(st.tuples(_text, _text), max_size=3).map(tuple))
_routes = st.builds(Route, _text, st.lists(_text, max_size=2).map(tuple),
                    st.lists(_text, max_size=2).map(tuple),
                    st.dictionaries(_text, _text, max_size=2).map(lambda d: tuple(d.items())),
                    st.none() | st.lists(_text, max_size=2).map(tuple), _opt_text, _opt_ids,
                    _opt_ids)
_policies = st.builds(Policy, _text, st.lists(_text, max_size=2).map(tuple), _ids, _ids,
                      _opt_text, st.lists(_text, max_size=2).map(tuple), _ids, _text,
                      st.booleans(), st.booleans(), st.lists(_routes, max_size=2).map(tuple),
                      st.booleans(), st.lists(_text, min_size=1, max_size=2).map(tuple))
_reasons = st.sampled_from(["duplicate", "below_min_level", "environment_filtered", "wont_fix",
                            "regression", "cooldown", "recurrence", "storm_budget",
                            "new_issue", "silenced", "unrouted"])
_storm_issues = st.builds(StormIssue, _text, _opt_text, _opt_text, _opt_text)

EVENTS: dict[type, st.SearchStrategy[Event]] = {
    AlertReceived: st.one_of(
        st.builds(AlertReceived, _deliveries, _alerts, _text, st.none() | _hex),
        st.builds(AlertReceived, _deliveries, _alerts, st.none(), _hex)),
    HookReceived: st.builds(HookReceived, _deliveries, _opt_text, _text),
    AlertDecided: st.builds(
        AlertDecided, _ids, _text, _text, st.sampled_from(["open", "comment", "suppress",
                                                           "reopen"]), _reasons,
        st.none() | st.builds(LinkedIssue, _ids, _opt_ids),
        st.none() | st.builds(Suppressed, _ids, _opt_times, _opt_times), _opt_times,
        _opt_text, _opt_text),
    ConfigApplied: st.builds(ConfigApplied, _policies),
    IssueOpened: st.builds(IssueOpened, _ids, _text, _opt_text, _opt_ids, _text, st.booleans()),
    CommentPosted: st.builds(CommentPosted, _ids, _text, _opt_text, _opt_ids, _opt_ids, _text,
                             st.booleans()),
    IssueFailed: st.builds(IssueFailed, _ids, _ids, _opt_ids, _text, st.booleans(),
                           _opt_times),
    SentryIssueChanged: st.builds(SentryIssueChanged, _deliveries, _text, _text, _opt_text,
                                  _opt_text, _opt_text, _text, _opt_text),
    GitHubIssueObserved: st.builds(
        GitHubIssueObserved, _text, _ids, _text, _text, st.sampled_from(["open", "closed"]),
        _opt_text, _opt_times, _times, st.lists(_text, max_size=3).map(tuple),
        st.sampled_from(["webhook", "poll"]), _opt_text, _opt_text),
    IssueReopened: st.builds(IssueReopened, _ids, _opt_text, _opt_ids, st.booleans()),
    IssueClosed: st.builds(IssueClosed, _ids, _opt_text, _opt_ids, st.booleans()),
    SentryResolved: st.builds(SentryResolved, _ids, _text),
    SyncDecided: st.sampled_from([("close", "resolved_in_sentry"),
                                  ("resolve_sentry", "closed_on_github")]).flatmap(
        lambda pair: st.builds(SyncDecided, _ids, _text, st.just(pair[0]), st.just(pair[1]))),
    StormDecided: st.builds(StormDecided, _ids, st.sampled_from(["open", "comment"]), _opt_text,
                            _times, st.lists(_storm_issues, max_size=3).map(tuple)),
    LogCheckpoint: st.builds(LogCheckpoint, _ids, _hex),
    LeaderElected: st.builds(LeaderElected, _ids, _text),
    SilenceAdded: st.builds(SilenceAdded, _text, st.lists(_text, max_size=3).map(tuple),
                            _times, _times, _text, _text),
    SilenceExpired: st.builds(SilenceExpired, _text, _text),
}


def test_every_record_type_has_a_strategy() -> None:
    assert set(EVENTS) == set(EVENT_TYPES)


@pytest.mark.parametrize("kind", EVENT_TYPES, ids=lambda kind: kind.TYPE)
@given(data=st.data(), seq=_ids, at=_times, prev=st.none() | _hex)
def test_every_record_type_round_trips_through_its_line(kind: type, data: st.DataObject,
                                                        seq: int, at: datetime,
                                                        prev: str | None) -> None:
    event = data.draw(EVENTS[kind])
    envelope = Envelope(seq, at, event, prev)
    line = encode_line(envelope)
    decoded = decode_line(line)
    assert decoded == envelope and decoded.prev == prev
    assert encode_line(decoded) == line  # what is read is written back as it was
    record = orjson.loads(line)  # any JSON parser reads it, the chain's fields first
    header = ([] if prev is None else ["prev"]) + ["seq", "at", "type", "v"]
    assert list(record)[:len(header)] == header
    assert record["type"] == kind.TYPE and record["at"].endswith("Z")


@given(at=st.datetimes(timezones=st.timezones() | st.just(UTC)))
def test_the_fast_time_format_is_the_log_format(at: datetime) -> None:
    """format_time's fast way (msgspec) and the line's write RFC 3339 in UTC with
    microseconds and a four-digit year, which the line's reader takes back: strftime
    wrote the year 999 as "999", a line no RFC 3339 reader (msgspec's included) reads."""
    expected = at.astimezone(UTC).isoformat(timespec="microseconds")[:-6] + "Z"
    assert format_time(at) == expected
    line = encode_line(Envelope(1, at, LeaderElected(1, "r")))
    assert orjson.loads(line)["at"] == expected
    assert decode_line(line).at == at.astimezone(UTC)  # (a local time in a gap equals none)


_LINE = (b'{"seq":1,"at":"2026-01-01T00:00:00.000000Z","type":"leader.elected","v":1,'
         b'"epoch":1,"replica":"r"')


@pytest.mark.parametrize(("line", "said"), [
    (_LINE + b',"x":' + b"[" * 100_000 + b"]" * 100_000 + b"}", "not JSON"),  # too deep
    (_LINE.replace(b'"r"', b'"\xff"') + b"}", "not JSON"),  # not UTF-8
    (_LINE.replace(b'"seq":1', b'"seq":' + b"9" * 5000) + b"}", "not JSON"),  # no int
    (_LINE + b"}x", "not JSON"),
    (b"[1]", "a record must be a JSON object"),
    (_LINE.replace(b'"seq":1', b'"seq":1.0') + b"}", r"got `float` - at `\$\.seq`"),
], ids=["deep", "utf8", "bigint", "trailing", "array", "float"])
def test_a_hostile_line_is_a_codec_error_never_a_crash(line: bytes, said: str) -> None:
    with pytest.raises(CodecError, match=said):
        decode_line(line)


@given(text=st.text(st.characters(exclude_categories=["Cs"])),
       number=st.integers(-2**63, 2**64 - 1))
def test_strings_and_integers_are_written_as_the_old_codec_wrote_them(text: str,
                                                                     number: int) -> None:
    """The old codec wrote lines with orjson; msgspec must escape every string and write
    every integer the same way, or a re-encoded line would change its hash."""
    assert msgspec.json.encode([text, number]) == orjson.dumps([text, number])


# -- decode_line_without_bodies: the audit's read path when no secret needs the bodies ------

def _without_body(envelope: Envelope) -> Envelope:
    event = envelope.event
    if isinstance(event, AlertReceived):
        event = AlertReceived(event.delivery, event.alert, None, event.raw_sha256)
    return Envelope(envelope.seq, envelope.at, event, envelope.prev)


def _outcome(decode: Callable[[bytes], Envelope], line: bytes) -> object:
    """What a decoder makes of a line: the record (without its body), or its error."""
    try:
        return _without_body(decode(line))
    except CodecError as exc:
        return f"CodecError: {exc}"


@pytest.mark.parametrize("line", GOLDEN, ids=lambda line: orjson.loads(line)["type"])
def test_without_bodies_the_golden_lines_are_the_same_records_less_the_body(line: bytes) -> None:
    assert decode_line_without_bodies(line) == _without_body(decode_line(line))


@pytest.mark.parametrize("kind", EVENT_TYPES, ids=lambda kind: kind.TYPE)
@given(data=st.data(), seq=_ids, at=_times, prev=st.none() | _hex)
def test_without_bodies_any_record_is_the_same_record_less_the_body(
        kind: type, data: st.DataObject, seq: int, at: datetime, prev: str | None) -> None:
    line = encode_line(Envelope(seq, at, data.draw(EVENTS[kind]), prev))
    without = decode_line_without_bodies(line)
    assert without == _without_body(decode_line(line))
    if kind is AlertReceived:
        assert without.event.raw is None  # type: ignore[attr-defined]


_RECEIVED = encode_line(Envelope(3, datetime(2026, 1, 1, 0, 0, 0, 1, tzinfo=UTC), AlertReceived(
    Delivery("r", "event_alert", "1", "ab" * 32),
    Alert("1", "e" * 32, "error", "1:hash:x", "1", "prod", "T", "c", "https://s/1/"),
    '{"a":"b"}')))
_BODY = b'"raw":"{\\"a\\":\\"b\\"}"'


@pytest.mark.parametrize("line", [
    _RECEIVED,
    _RECEIVED.replace(_BODY, b'"raw":"caf\xc3\xa9 \xe2\x80\xa8"'),  # UTF-8 in the body
    _RECEIVED.replace(_BODY, b'"raw":"\xff\xfe"'),  # not UTF-8, inside the body only
    _RECEIVED.replace(_BODY, b'"raw":"bad \\q escape"'),
    _RECEIVED.replace(_BODY, b'"raw":"\\ud800 lone surrogate"'),
    _RECEIVED.replace(_BODY, b'"raw":"a\x01control"'),
    _RECEIVED.replace(_BODY, b'"raw":5'),  # not a string
    _RECEIVED.replace(_BODY, b'"raw":{"a":"b"}'),
    _RECEIVED.replace(_BODY, b'"raw":null'),  # neither body nor hash
    _RECEIVED.replace(_BODY, b'"raw":null,"raw_sha256":"' + b"c" * 64 + b'"'),
    _RECEIVED.replace(_BODY, b'"raw":nul'),
    _RECEIVED.replace(b',' + _BODY, b""),  # no body field at all
    _RECEIVED.replace(b'"v":1', b'"v":2'),
    _RECEIVED[:-10],  # cut short
], ids=["plain", "utf8", "not-utf8", "bad-escape", "surrogate", "control", "number",
        "object", "null-no-hash", "null-hash", "nul", "missing", "newer", "short"])
def test_without_bodies_every_alert_line_gets_the_answer_decode_line_gives(line: bytes) -> None:
    """The body is stepped over unread, yet the audit accepts and refuses exactly what the
    full decoder does, with the same message: a hostile body is never waved through."""
    assert _outcome(decode_line_without_bodies, line) == _outcome(decode_line, line)
