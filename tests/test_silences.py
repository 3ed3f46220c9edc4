"""Silences in the core (docs/reference.md §5 row 2, §9): matchers, rule 2, the fold."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from obsv.core.alert import Alert
from obsv.core.codec import decode, encode
from obsv.core.events import (
    AlertDecided,
    AlertReceived,
    Delivery,
    Envelope,
    Event,
    SilenceAdded,
    SilenceExpired,
)
from obsv.core.policy import State, apply
from obsv.core.silences import (
    FIELDS,
    SilenceError,
    new_silence,
    parse_duration,
    parse_matcher,
)
from obsv.core.snapshot import state_from_dict, state_to_dict

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def alert(event_id: str = "e1", **fields: object) -> Alert:
    base: dict[str, object] = dict(
        sentry_issue_id="42", event_id=event_id, level="error", fingerprint_key="k42",
        project="7", environment="production", title="TimeoutError: db", culprit="app.db",
        web_url=None, project_slug="web", release="shop@1.2", tags=(("team", "pay"),))
    base.update(fields)
    return Alert(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize("text,matches", [
    ("project=web", True),          # the slug
    ("project=7", True),            # or the numeric id
    ("project!=web", False),
    ("project=api", False),
    ("environment=production", True),
    ("level!=error", False),
    ("title=~Timeout.*", True),
    ("title=~Timeout", False),      # the whole value, not a search
    ("title!~.*db", False),
    ("culprit=app.db", True),
    ("release=~shop@1\\..*", True),
    ("sentry_issue_id=42", True),
    ("tag:team=pay", True),
    ("tag:team!=pay", False),
    ("tag:absent=", True),          # a missing value is the empty string
    ("tag:absent=x", False),
])
def test_matcher_table(text: str, matches: bool) -> None:
    matcher = parse_matcher(text)
    assert str(matcher) == text
    assert matcher.matches(alert()) is matches


@pytest.mark.parametrize("text,fragment", [
    ("colour=red", "unknown name 'colour'"),
    ("project", "is not NAME=VALUE"),
    ("title=~(", "not a valid regex"),
    ("title=~(a+)+", "regex refused"),
    ("title=~(a|aa)*b", "regex refused"),
    ("title=~.*.*.*.*x", "more than 3 repetitions"),
    ("title=~" + "a" * 257, "longer than 256"),
])
def test_bad_matchers_are_refused_naming_the_matcher(text: str, fragment: str) -> None:
    with pytest.raises(SilenceError) as caught:
        parse_matcher(text, "matchers[3]")
    assert caught.value.field == "matchers[3]"
    assert fragment in caught.value.message


def test_new_silence_names_the_bad_field() -> None:
    good = {"matchers": ["project=web"], "duration": "2h", "comment": "deploy"}
    assert new_silence(good, T0).ends_at == T0 + timedelta(hours=2)
    cases = {
        "matchers[1]": {**good, "matchers": ["project=web", "nope"]},
        "comment": {k: v for k, v in good.items() if k != "comment"},
        "ends_at": {**{k: v for k, v in good.items() if k != "duration"},
                    "ends_at": "2025-12-31T00:00:00Z"},
        "duration": {**good, "duration": "forever"},
        "body": ["not", "an", "object"],
    }
    for field, body in cases.items():
        with pytest.raises(SilenceError) as caught:
            new_silence(body, T0)
        assert caught.value.field == field, body


def test_durations() -> None:
    assert parse_duration("90m") == timedelta(minutes=90)
    assert parse_duration("7d") == timedelta(days=7)
    for bad in ("0h", "400d", "99999999999w", "1y", ""):
        with pytest.raises(SilenceError):
            parse_duration(bad)


_VALUES = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)


@given(name=st.sampled_from([*FIELDS, "tag:team"]), op=st.sampled_from(["=", "!="]),
       value=_VALUES)
def test_parse_format_round_trip(name: str, op: str, value: str) -> None:
    # ``title=~x`` is the regex operator: an equality with a value starting with ~ is
    # written as a regex (title=~\~x), as in Alertmanager's syntax.
    assume(not (op == "=" and value.startswith("~")))
    matcher = parse_matcher(f"{name}{op}{value}")
    assert (matcher.name, matcher.op, matcher.value) == (name, op, value)
    assert parse_matcher(str(matcher)) == matcher


@given(value=_VALUES, other=_VALUES)
def test_equality_and_escaped_regex_agree(value: str, other: str) -> None:
    """``title=V`` and ``title=~re.escape(V)`` match the same titles; ``!=`` is its negation."""
    assume(not value.startswith("~"))  # see test_parse_format_round_trip
    subject = alert(title=other)
    eq = parse_matcher(f"title={value}").matches(subject)
    assert eq is (value == other)
    if len(re.escape(value)) <= 256 and value.count("*") + value.count("+") == 0:
        assert parse_matcher(f"title=~{re.escape(value)}").matches(subject) is eq
    assert parse_matcher(f"title!={value}").matches(subject) is (not eq)


# -- the fold --------------------------------------------------------------------------

def _received(a: Alert) -> AlertReceived:
    return AlertReceived(Delivery(None, "event_alert", None, "sig"), a, "{}")


class Log:
    """A log built record by record, folded as the consumer folds it."""

    def __init__(self) -> None:
        self.state = State()
        self.records: list[Envelope] = []

    def add(self, at: datetime, event: Event) -> AlertDecided | None:
        envelope = decode(encode(Envelope(len(self.records) + 1, at, event)))  # via the codec
        self.records.append(envelope)
        decision = apply(self.state, envelope)
        if decision is not None:
            self.add(at, decision)
        return decision


def test_rule_2_silences_after_duplicate_and_names_the_silence() -> None:
    log = Log()
    log.add(T0, SilenceAdded("s1", ("project=web", "title=~Timeout.*"), T0,
                             T0 + timedelta(hours=1), "deploy", "ana"))
    decided = log.add(T0 + timedelta(minutes=1), _received(alert("e1")))
    assert decided is not None
    assert (decided.action, decided.reason, decided.silence_id) == ("suppress", "silenced", "s1")
    again = log.add(T0 + timedelta(minutes=2), _received(alert("e1")))
    assert again is not None and again.reason == "duplicate"
    elsewhere = alert("e2", project_slug="api", project="8", sentry_issue_id="43",
                      fingerprint_key="k43")
    other = log.add(T0 + timedelta(minutes=3), _received(elsewhere))
    assert other is not None and other.reason == "new_issue"
    ended = log.add(T0 + timedelta(hours=1), _received(alert("e3")))  # ends_at is excluded
    assert ended is not None and ended.reason == "new_issue"


def test_expired_silence_mutes_no_later_alert() -> None:
    log = Log()
    log.add(T0, SilenceAdded("s1", ("level=error",), T0, T0 + timedelta(days=1), "x", "ana"))
    log.add(T0 + timedelta(minutes=1), SilenceExpired("s1", "bo"))
    decided = log.add(T0 + timedelta(minutes=2), _received(alert()))
    assert decided is not None and decided.reason == "new_issue"
    assert log.state.silences["s1"].expired_by == "bo"


def test_ended_silences_are_forgotten_after_a_day() -> None:
    log = Log()
    log.add(T0, SilenceAdded("s1", ("level=error",), T0, T0 + timedelta(hours=1), "x", "ana"))
    log.add(T0 + timedelta(hours=20), _received(alert("e1")))
    assert "s1" in log.state.silences  # still listed for a while after it ended
    log.add(T0 + timedelta(hours=26), _received(alert("e2")))
    assert log.state.silences == {}


_SILENCE_MATCHERS = st.lists(st.sampled_from([
    "project=web", "project=7", "project!=api", "environment=production", "level=~err.*",
    "level!=fatal", "tag:team=pay", "tag:team!~p.*", "title=~Timeout.*", "release=",
]), min_size=1, max_size=3)
_ALERTS = st.builds(
    lambda slug, env, level, team: (slug, env, level, team),
    st.sampled_from(["web", "api"]), st.sampled_from(["production", "staging", None]),
    st.sampled_from(["error", "fatal", "warning"]), st.sampled_from(["pay", "search"]))
_STEPS = st.lists(st.one_of(
    st.tuples(st.just("silence"), _SILENCE_MATCHERS, st.integers(0, 30), st.integers(1, 90)),
    st.tuples(st.just("expire"), st.integers(0, 9)),
    st.tuples(st.just("alert"), _ALERTS),
), max_size=30)


@settings(max_examples=60, deadline=None)
@given(steps=_STEPS)
def test_random_silences_and_alerts_fold_to_the_recorded_decisions(steps: list[tuple]) -> None:
    """Every decision is rule 2 as written (an oracle over the silences so far), a fresh
    fold of the log derives the same decisions, and so does one from a snapshot."""
    log = Log()
    added: list[tuple[str, tuple[str, ...], datetime, datetime, datetime | None]] = []
    at = T0
    for n, step in enumerate(steps):
        at += timedelta(minutes=7)
        if step[0] == "silence":
            _, matchers, start_in, length = step
            starts = at + timedelta(minutes=start_in)
            log.add(at, SilenceAdded(f"s{n}", tuple(matchers), starts,
                                     starts + timedelta(minutes=length), "c", "ana"))
            added.append((f"s{n}", tuple(matchers), starts,
                          starts + timedelta(minutes=length), None))
        elif step[0] == "expire" and added:
            i = step[1] % len(added)
            sid, m, s, e, expired = added[i]
            log.add(at, SilenceExpired(sid, "bo"))
            added[i] = (sid, m, s, e, expired or at)
        elif step[0] == "alert":
            slug, env, level, team = step[1]
            a = alert(f"e{n}", project_slug=slug, project="7" if slug == "web" else "8",
                      environment=env, level=level, tags=(("team", team),))
            decided = log.add(at, _received(a))
            assert decided is not None
            expected = next((sid for sid, m, s, e, expired in added
                             if s <= at < e and expired is None
                             and all(parse_matcher(t).matches(a) for t in m)), None)
            assert decided.silence_id == expected
            assert (decided.reason == "silenced") is (expected is not None)
    recorded = [r.event for r in log.records if isinstance(r.event, AlertDecided)]
    replayed = Log()
    for half, envelope in enumerate(log.records):
        if half == len(log.records) // 2:  # restart from a snapshot halfway through
            replayed.state = state_from_dict(state_to_dict(replayed.state))
        apply(replayed.state, envelope)
    assert state_to_dict(replayed.state) == state_to_dict(log.state)
    fresh = State()
    derived = [d for r in log.records if (d := apply(fresh, r)) is not None]
    assert derived == recorded
