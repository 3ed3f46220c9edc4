"""Records round-trip through the codec; unreadable records are errors, not guesses."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

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
    HookReceived,
    IssueFailed,
    IssueOpened,
    LinkedIssue,
    Policy,
    Suppressed,
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
    ({"seq": "1"}, "expected an integer"),
    ({"at": "2026-11-27T08:30:01"}, "without a UTC offset"),
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
