"""Records round-trip through the codec; unreadable records are errors, not guesses."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from obsv.core.alert import Alert
from obsv.core.codec import CodecError, decode, encode, format_time, parse_time
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
    LinkedIssue,
    Policy,
    SentryIssueChanged,
    SentryResolved,
    Suppressed,
    SyncDecided,
)

AT = datetime(2026, 11, 27, 8, 30, 1, 123456, tzinfo=UTC)
DELIVERY = Delivery("req", "event_alert", "1764232201", "ab" * 32)
ALERT = Alert("1", "e" * 32, "error", "1:hash:x", "1", "prod", "T", "c", "https://s/1/")

EVENTS: list[Event] = [
    AlertReceived(DELIVERY, ALERT, '{"é":"\\u00e9"}'),
    HookReceived(Delivery(None, "installation", None, "cd" * 32), "created", "{}"),
    AlertDecided(2, "1", "1:hash:x", "open", "new_issue"),
    AlertDecided(5, "1", "1:hash:x", "comment", "recurrence", LinkedIssue(2, 7),
                 Suppressed(3, AT, AT)),
    AlertDecided(6, "1", "1:hash:x", "suppress", "cooldown", LinkedIssue(2, None)),
    ConfigApplied(Policy("warning", ("prod",), 60, 5, "acme/shop", ("agent:builder", "x"))),
    IssueOpened(2, "1", "acme/shop", 7, "https://github.com/acme/shop/issues/7", False),
    IssueOpened(2, "1", None, None, "var/outbox/1.md", True),
    CommentPosted(5, "1", "acme/shop", 7, 99, "https://github.com/x#c", False),
    IssueFailed(2, 3, 502, "502 Bad Gateway", True, AT),
    IssueFailed(2, 1, 422, "422 Validation Failed", False, None),
]

SENTRY_DELIVERY = Delivery("req-9", "issue", "1764232201", "cd" * 32)
# The records of the issue lifecycle (docs/reference.md §4), each with the exact line the
# log holds for it at seq 12: these lines are the format other tools and older obsv read.
GOLDEN: list[tuple[Event, str]] = [
    (SentryIssueChanged(SENTRY_DELIVERY, "resolved", "4509912345", "resolved", None,
                        "in_release", '{"action":"resolved"}', "shop@2.3.1"),
     '{"seq":12,"at":"2026-11-27T08:30:01.123456Z","type":"sentry.issue","v":1,'
     '"delivery":{"request_id":"req-9","resource":"issue","hook_timestamp":"1764232201",'
     '"signature":"' + "cd" * 32 + '"},"action":"resolved","sentry_issue_id":"4509912345",'
     '"status":"resolved","substatus":null,"resolution_type":"in_release",'
     '"release":"shop@2.3.1","raw":"{\\"action\\":\\"resolved\\"}"}'),
    (GitHubIssueObserved("acme/shop", 12, "4509912345", "closed", "closed", "not_planned", AT,
                         AT, ("agent:builder", "obsv:mute"), "webhook", "7f3c2a10", "{}"),
     '{"seq":12,"at":"2026-11-27T08:30:01.123456Z","type":"github.issue","v":1,'
     '"repo":"acme/shop","number":12,"sentry_issue_id":"4509912345","action":"closed",'
     '"state":"closed","state_reason":"not_planned","closed_at":"2026-11-27T08:30:01.123456Z",'
     '"updated_at":"2026-11-27T08:30:01.123456Z","labels":["agent:builder","obsv:mute"],"source":"webhook","delivery_id":"7f3c2a10",'
     '"raw":"{}"}'),
    (GitHubIssueObserved("acme/shop", 12, "4509912345", "observed", "open", None, None, AT,
                         (), "poll", None, None),
     '{"seq":12,"at":"2026-11-27T08:30:01.123456Z","type":"github.issue","v":1,'
     '"repo":"acme/shop","number":12,"sentry_issue_id":"4509912345","action":"observed",'
     '"state":"open","state_reason":null,"closed_at":null,'
     '"updated_at":"2026-11-27T08:30:01.123456Z","labels":[],"source":"poll",'
     '"delivery_id":null,"raw":null}'),
    (IssueReopened(5, "acme/shop", 12, False),
     '{"seq":12,"at":"2026-11-27T08:30:01.123456Z","type":"issue.reopened","v":1,'
     '"alert_seq":5,"repo":"acme/shop","number":12,"dry_run":false}'),
    (IssueClosed(9, None, None, True),
     '{"seq":12,"at":"2026-11-27T08:30:01.123456Z","type":"issue.closed","v":1,'
     '"alert_seq":9,"repo":null,"number":null,"dry_run":true}'),
    (SentryResolved(9, "4509912345"),
     '{"seq":12,"at":"2026-11-27T08:30:01.123456Z","type":"sentry.resolved","v":1,'
     '"cause_seq":9,"sentry_issue_id":"4509912345"}'),
    (SyncDecided(9, "4509912345", "close", "resolved_in_sentry"),
     '{"seq":12,"at":"2026-11-27T08:30:01.123456Z","type":"sync.decided","v":1,'
     '"cause_seq":9,"sentry_issue_id":"4509912345","action":"close",'
     '"reason":"resolved_in_sentry"}'),
    (SyncDecided(9, "4509912345", "resolve_sentry", "closed_on_github"),
     '{"seq":12,"at":"2026-11-27T08:30:01.123456Z","type":"sync.decided","v":1,'
     '"cause_seq":9,"sentry_issue_id":"4509912345","action":"resolve_sentry",'
     '"reason":"closed_on_github"}'),
    (AlertDecided(7, "1", "1:hash:x", "reopen", "regression", LinkedIssue(2, 12),
                  Suppressed(0, None, None), AT),
     '{"seq":12,"at":"2026-11-27T08:30:01.123456Z","type":"alert.decided","v":1,'
     '"alert_seq":7,"sentry_issue_id":"1","fingerprint_key":"1:hash:x","action":"reopen",'
     '"reason":"regression","linked_issue":{"alert_seq":2,"number":12},'
     '"suppressed":{"count":0,"first_at":null,"last_at":null},'
     '"since":"2026-11-27T08:30:01.123456Z"}'),
    (AlertDecided(8, "1", "1:hash:x", "suppress", "wont_fix", LinkedIssue(2, 12)),
     '{"seq":12,"at":"2026-11-27T08:30:01.123456Z","type":"alert.decided","v":1,'
     '"alert_seq":8,"sentry_issue_id":"1","fingerprint_key":"1:hash:x","action":"suppress",'
     '"reason":"wont_fix","linked_issue":{"alert_seq":2,"number":12}}'),
    (ConfigApplied(Policy(reopen_window_seconds=60, mute_label="quiet", close_on_resolve=True,
                          resolve_in_sentry=True)),
     '{"seq":12,"at":"2026-11-27T08:30:01.123456Z","type":"config.applied","v":1,'
     '"policy":{"min_level":"error","environments":[],"cooldown_seconds":21600,'
     '"max_issues_per_hour":20,"repo":null,"labels":["agent:builder"],'
     '"reopen_window_seconds":60,"mute_label":"quiet","close_on_resolve":true,'
     '"resolve_in_sentry":true}}'),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__name__)
def test_every_record_type_round_trips(event: Event) -> None:
    envelope = Envelope(12, AT, event)
    record = encode(envelope)
    assert (record["seq"], record["at"], record["v"]) == (12, "2026-11-27T08:30:01.123456Z", 1)
    assert decode(record) == envelope


@pytest.mark.parametrize(("change", "message"), [
    ({"v": 2}, "newer than this obsv"),
    ({"v": 0}, "bad schema version"),
    ({"type": "alert.teleported"}, "unknown record type"),
    # The typed decode names the field ($.name) and what it expected there.
    ({"seq": "1"}, r"Expected `int`, got `str` - at `\$\.seq`"),
    ({"seq": True}, r"Expected `int`, got `bool` - at `\$\.seq`"),
    ({"at": "2026-11-27T08:30:01"}, r"timezone component - at `\$\.at`"),
])
def test_unreadable_records_are_errors(change: dict[str, Any], message: str) -> None:
    record = {**encode(Envelope(1, AT, EVENTS[2])), **change}
    with pytest.raises(CodecError, match=message):
        decode(record)


def test_missing_field_is_an_error() -> None:
    record = encode(Envelope(1, AT, EVENTS[0]))
    del record["alert"]
    with pytest.raises(CodecError, match="malformed record"):
        decode(record)


def test_times_are_utc_with_microseconds() -> None:
    assert format_time(AT) == "2026-11-27T08:30:01.123456Z"
    assert parse_time("2026-11-27T09:30:01.123456+01:00") == AT


@pytest.mark.parametrize(("event", "line"), GOLDEN, ids=lambda v: getattr(v, "action", None)
                         or type(v).__name__)
def test_lifecycle_records_have_their_golden_line(event: Event, line: str) -> None:
    envelope = Envelope(12, AT, event)
    assert orjson.dumps(encode(envelope)).decode() == line
    assert decode(orjson.loads(line)) == envelope


@pytest.mark.parametrize("line", [
    # alert.decided and config.applied as obsv wrote them before the issue lifecycle.
    '{"seq":3,"at":"2026-11-27T08:30:01.123456Z","type":"alert.decided","v":1,"alert_seq":2,'
    '"sentry_issue_id":"1","fingerprint_key":"1:hash:x","action":"comment",'
    '"reason":"recurrence","linked_issue":{"alert_seq":1,"number":7},'
    '"suppressed":{"count":1,"first_at":null,"last_at":null}}',
    '{"seq":1,"at":"2026-11-27T08:30:01.123456Z","type":"config.applied","v":1,'
    '"policy":{"min_level":"warning","environments":["prod"],"cooldown_seconds":60,'
    '"max_issues_per_hour":5,"repo":"acme/shop","labels":["agent:builder"]}}',
])
def test_older_lines_still_decode_with_defaults(line: str) -> None:
    event = decode(orjson.loads(line)).event
    if isinstance(event, AlertDecided):
        assert event.since is None and event.reason == "recurrence"
        assert "since" not in encode(Envelope(3, AT, event))
    else:
        assert isinstance(event, ConfigApplied)
        assert event.policy == Policy("warning", ("prod",), 60, 5, "acme/shop")
        assert (event.policy.reopen_window_seconds, event.policy.mute_label,
                event.policy.close_on_resolve, event.policy.resolve_in_sentry) == (
            1209600, "obsv:mute", False, False)


@pytest.mark.parametrize(("change", "message"), [
    ({"state": "merged"}, r"github.issue.*'merged' - at `\$\.state`"),
    ({"source": "email"}, r"github.issue.*'email' - at `\$\.source`"),
    ({"number": "12"}, r"Expected `int`, got `str` - at `\$\.number`"),
    ({"state_reason": 3}, r"Expected `str \| null`, got `int` - at `\$\.state_reason`"),
])
def test_unreadable_lifecycle_records_are_errors(change: dict[str, Any], message: str) -> None:
    record = {**orjson.loads(GOLDEN[1][1]), **change}
    with pytest.raises(CodecError, match=message):
        decode(record)


def test_unknown_sync_decision_is_an_error() -> None:
    record = {**orjson.loads(GOLDEN[6][1]), "reason": "closed_on_github"}
    with pytest.raises(CodecError, match="unknown sync decision"):
        decode(record)


_text = st.text(max_size=12)
_opt_text = st.none() | _text
_times = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1),
                      timezones=st.just(UTC))
_deliveries = st.builds(Delivery, _opt_text, _text, _opt_text, _text)
_lifecycle_events = st.one_of(
    st.builds(SentryIssueChanged, _deliveries, _text, _text, _opt_text, _opt_text, _opt_text,
              _text, _opt_text),
    st.builds(GitHubIssueObserved, _text, st.integers(1, 10**9), _text, _text,
              st.sampled_from(["open", "closed"]), _opt_text, st.none() | _times, _times,
              st.lists(_text, max_size=4).map(tuple), st.sampled_from(["webhook", "poll"]),
              _opt_text, _opt_text),
    st.builds(IssueReopened, st.integers(1, 10**9), _opt_text, st.none() | st.integers(1, 10**9),
              st.booleans()),
    st.builds(IssueClosed, st.integers(1, 10**9), _opt_text, st.none() | st.integers(1, 10**9),
              st.booleans()),
    st.builds(SentryResolved, st.integers(1, 10**9), _text),
    st.sampled_from([("close", "resolved_in_sentry"), ("resolve_sentry", "closed_on_github")])
    .flatmap(lambda ar: st.builds(SyncDecided, st.integers(1, 10**9), _text, st.just(ar[0]),
                                  st.just(ar[1]))),
    st.builds(AlertDecided, st.integers(1, 10**9), _text, _text,
              st.sampled_from(["open", "comment", "suppress", "reopen"]),
              st.sampled_from(["wont_fix", "regression", "recurrence", "cooldown"]),
              st.none() | st.builds(LinkedIssue, st.integers(1, 10**9),
                                    st.none() | st.integers(1, 10**9)),
              st.none() | st.builds(Suppressed, st.integers(0, 10**9), st.none() | _times,
                                    st.none() | _times),
              st.none() | _times),
    st.builds(ConfigApplied, st.builds(
        Policy, reopen_window_seconds=st.integers(0, 10**8), mute_label=_text,
        close_on_resolve=st.booleans(), resolve_in_sentry=st.booleans())),
)


@given(event=_lifecycle_events, seq=st.integers(1, 10**12), at=_times)
def test_lifecycle_records_round_trip_through_a_line(event: Event, seq: int,
                                                     at: datetime) -> None:
    envelope = Envelope(seq, at, event)
    assert decode(orjson.loads(orjson.dumps(encode(envelope)))) == envelope
