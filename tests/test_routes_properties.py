"""Random routes, silences, alerts, configuration changes and sink outcomes: a replay of
the log yields exactly the recorded decisions (docs/reference.md §5, §8, §9), a fold
through any snapshot agrees, and a linked issue never changes repository."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from obsv.core.alert import Alert
from obsv.core.codec import decode, encode
from obsv.core.events import (
    AlertDecided,
    AlertReceived,
    ConfigApplied,
    Delivery,
    Envelope,
    Event,
    IssueFailed,
    IssueOpened,
    Policy,
    SilenceAdded,
    SilenceExpired,
)
from obsv.core.policy import State, apply, ready_intents
from obsv.core.routes import Route
from obsv.core.snapshot import state_from_dict, state_to_dict

from .test_lifecycle_properties import replay

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)
ROUTES = st.lists(st.builds(
    Route,
    repo=st.sampled_from(["acme/web", "acme/pay", "acme/ops"]),
    projects=st.sampled_from([(), ("web",), ("web-*",), ("api", "7")]),
    environments=st.sampled_from([(), ("production",), ("staging", "prod*")]),
    tags=st.sampled_from([(), (("team", "pay"),), (("team", "s*"),)]),
    min_level=st.sampled_from([None, "warning", "fatal"]),
    cooldown_seconds=st.sampled_from([None, 0, 600]),
    max_issues_per_hour=st.sampled_from([None, 0, 1, 3]),
), max_size=3).map(tuple)
POLICIES = st.builds(
    Policy, routes=ROUTES, repo=st.sampled_from([None, "acme/platform"]),
    dry_run=st.booleans(), max_issues_per_hour=st.sampled_from([0, 2, 20]),
    cooldown_seconds=st.sampled_from([0, 300, 3600]))
ALERTS = st.tuples(
    st.sampled_from(["1", "2", "3", "4"]),                      # Sentry issue
    st.sampled_from(["web", "web-admin", "api"]),               # project slug
    st.sampled_from(["production", "staging", None]),
    st.sampled_from(["error", "warning", "fatal"]),
    st.sampled_from(["pay", "search"]))                         # tag team
MATCHERS = st.lists(st.sampled_from([
    "project=web", "project=~web.*", "environment=production", "level!=fatal",
    "tag:team=pay", "sentry_issue_id=2"]), min_size=1, max_size=2)
STEPS = st.lists(st.one_of(
    st.tuples(st.just("alert"), ALERTS, st.integers(0, 1200)),
    st.tuples(st.just("config"), POLICIES),
    st.tuples(st.just("silence"), MATCHERS, st.integers(60, 7200)),
    st.tuples(st.just("expire"), st.integers(0, 5)),
    st.tuples(st.just("sink"), st.booleans()),
), min_size=1, max_size=40)


class Log:
    """Records through the codec, folded as the consumer folds them; decisions recorded
    right after their alert, as the live consumer does."""

    def __init__(self) -> None:
        self.state = State()
        self.records: list[Envelope] = []
        self.now = T0
        self.silences: list[str] = []
        self.repo_of_link: dict[int, str | None] = {}

    def add(self, event: Event) -> AlertDecided | None:
        envelope = decode(encode(Envelope(len(self.records) + 1, self.now, event)))
        self.records.append(envelope)
        decision = apply(self.state, envelope)
        for seq, derived in sorted(self.state.unrecorded.items()):
            if seq <= envelope.seq:
                self.add(derived)
        return decision

    def alert(self, fields: tuple[str, str, str | None, str, str], n: int) -> None:
        issue, slug, environment, level, team = fields
        alert = Alert(issue, f"ev{n}", level, f"k{issue}", "7" if slug == "api" else "9",
                      environment, f"Error {issue}", None, None, project_slug=slug,
                      tags=(("team", team),))
        decision = self.add(AlertReceived(Delivery(None, "event_alert", None, "s"), alert,
                                          "{}"))
        assert decision is not None
        link = self.state.linked(alert)
        if decision.action in ("open", "comment") and link is not None:
            # A linked issue keeps its repo, whatever the routes say later.
            first = self.repo_of_link.setdefault(link.alert_seq, link.repo)
            assert link.repo == first, (issue, first, link.repo)

    def sink(self, ok: bool) -> None:
        for intent in ready_intents(self.state)[:1]:
            received = intent.received
            if intent.action != "open" or not isinstance(received, AlertReceived):
                self.add(IssueFailed(intent.alert_seq, 1, 422, "x", False, None))
            elif ok:  # the sink posts to the decision's repository and says so
                repo = intent.decision.repo if isinstance(intent.decision, AlertDecided) \
                    else None
                self.add(IssueOpened(intent.alert_seq, received.alert.sentry_issue_id,
                                     repo, len(self.records), "u", False))
            else:
                self.add(IssueFailed(intent.alert_seq, 1, 422, "x", False, None))


@settings(max_examples=150, deadline=None)
@given(first=POLICIES, steps=STEPS, data=st.data())
def test_random_routes_silences_and_alerts_replay_to_the_recorded_decisions(
        first: Policy, steps: list[tuple[object, ...]], data: st.DataObject) -> None:
    log = Log()
    log.add(ConfigApplied(first))
    for n, step in enumerate(steps):
        kind = step[0]
        if kind == "alert":
            log.now += timedelta(seconds=int(step[2]))  # type: ignore[call-overload]
            log.alert(step[1], n)  # type: ignore[arg-type]
        elif kind == "config":
            log.add(ConfigApplied(step[1]))  # type: ignore[arg-type]
        elif kind == "silence":
            silence_id = f"s{n}"
            log.silences.append(silence_id)
            log.add(SilenceAdded(silence_id, tuple(step[1]), log.now,  # type: ignore[arg-type]
                                 log.now + timedelta(seconds=int(step[2])),  # type: ignore[call-overload]
                                 "why", "ana"))
        elif kind == "expire" and log.silences:
            log.add(SilenceExpired(log.silences[int(step[1]) % len(log.silences)], "bo"))  # type: ignore[call-overload]
        elif kind == "sink":
            log.sink(bool(step[1]))
    whole, mismatches = replay(log.records)
    assert mismatches == [] and whole.unrecorded == {}
    assert state_to_dict(whole) == state_to_dict(log.state)
    cut = data.draw(st.integers(0, len(log.records)))
    first_half, _ = replay(log.records[:cut])
    restored = state_from_dict(json.loads(json.dumps(state_to_dict(first_half))))
    second, mismatches = replay(log.records[cut:], restored)
    assert mismatches == []
    assert state_to_dict(second) == state_to_dict(whole)
