"""The decision core: State, apply(state, record) and decide(state, alert, at, policy).

Rules (docs/reference.md §5), numbered like h11's state machine so the code can cite them:

 1. Records are folded in ``seq`` order. Each ``alert.received`` is decided exactly
    once, from the state built by the records before it, the policy of the last
    ``config.applied`` before it, and its own ``at``. Never the wall clock: replaying
    the same log yields the same decisions.
 2. An alert's decision is folded at the alert's own position, even though its
    ``alert.decided`` record lands later in the log. The next alert therefore sees
    it, and a replay, the live consumer and a restart all agree.
 3. First matching row wins:
      suppress duplicate             the event_id was already received (Sentry
                                     retries with a new Request-ID, same event_id)
      suppress below_min_level       level under the policy's min level (unknown = error)
      suppress environment_filtered  environments set and the alert's not in it
      suppress cooldown              linked issue notified less than cooldown ago
      comment  recurrence            linked issue and the cooldown has passed
      suppress storm_budget          no linked issue and max_issues_per_hour opens
                                     already decided in the hour before
      open     new_issue             no linked issue
 4. The linked issue is the one linked to the alert's Sentry issue id, else to its
    fingerprint key. An issue is linked from its ``open`` decision on (pending),
    and unlinked only when that open fails permanently.
 5. A notification is an ``open`` or ``comment`` decision; its time is the alert's
    ``at``, not GitHub's answer, so decisions never depend on the sink's speed.
 6. A filter or storm_budget suppression opens nothing: the next alert of the same
    Sentry issue is decided afresh. A permanently failed open still counted
    towards the storm budget.
 7. State stays O(distinct issues): received event ids are kept for
    ``EVENT_ID_WINDOW``, 24 hours (Sentry retries a failed delivery within minutes;
    a redelivery older than a day is decided afresh) and the
    rolling hour holds only the opens still inside it. Both are pruned by record
    time, so pruning is as deterministic as the decisions.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Literal, assert_never

from obsv.core.alert import Alert, level_rank
from obsv.core.events import (
    Action,
    AlertDecided,
    AlertReceived,
    CommentPosted,
    ConfigApplied,
    Envelope,
    GitHubIssueObserved,
    HookReceived,
    IssueClosed,
    IssueFailed,
    IssueOpened,
    IssueReopened,
    LinkedIssue,
    Policy,
    Reason,
    SentryIssueChanged,
    SentryResolved,
    Suppressed,
    SyncDecided,
)

EVENT_ID_WINDOW = timedelta(hours=24)
STORM_WINDOW = timedelta(hours=1)

_DEFAULT_POLICY = Policy()

LinkStatus = Literal["pending", "opened"]


@dataclass(frozen=True, slots=True)
class Link:
    """A GitHub issue opened (or being opened) for an alert, and its notification clock."""

    alert_seq: int
    sentry_issue_id: str
    fingerprint_key: str
    opened_at: datetime
    last_notified_at: datetime
    status: LinkStatus = "pending"
    number: int | None = None
    url: str | None = None
    suppressed: int = 0
    suppressed_first: datetime | None = None
    suppressed_last: datetime | None = None


@dataclass(frozen=True, slots=True)
class Intent:
    """A decision to open or comment that has no final outcome yet."""

    alert_seq: int
    action: Literal["open", "comment"]
    link_seq: int
    at: datetime
    received: AlertReceived
    decision: AlertDecided
    recorded: bool = False
    attempts: int = 0
    next_attempt_at: datetime | None = None


@dataclass(slots=True)
class State:
    """Everything decisions need, folded from the log."""

    last_seq: int = 0
    policy: Policy | None = None  # of the last config.applied; None before the first
    policy_override: Policy | None = None
    event_ids: OrderedDict[str, datetime] = field(default_factory=OrderedDict)
    links: dict[int, Link] = field(default_factory=dict)
    links_by_issue: dict[str, int] = field(default_factory=dict)
    links_by_key: dict[str, int] = field(default_factory=dict)
    recent_opens: deque[datetime] = field(default_factory=deque)
    intents: dict[int, Intent] = field(default_factory=dict)
    unrecorded: dict[int, AlertDecided] = field(default_factory=dict)

    @property
    def effective_policy(self) -> Policy:
        """The policy decisions use: the override (``--policy current``) or the recorded one."""
        return self.policy_override or self.policy or _DEFAULT_POLICY

    def copy(self) -> State:
        """A copy that later folds do not change (links and intents are immutable, so
        copying the containers is enough): what a snapshot is written from."""
        return State(
            last_seq=self.last_seq, policy=self.policy, policy_override=self.policy_override,
            event_ids=self.event_ids.copy(), links=self.links.copy(),
            links_by_issue=self.links_by_issue.copy(), links_by_key=self.links_by_key.copy(),
            recent_opens=self.recent_opens.copy(), intents=self.intents.copy(),
            unrecorded=self.unrecorded.copy())

    def linked(self, alert: Alert) -> Link | None:
        """The linked issue of an alert (rule 4)."""
        seq = self.links_by_issue.get(alert.sentry_issue_id)
        if seq is None:
            seq = self.links_by_key.get(alert.fingerprint_key)
        return None if seq is None else self.links[seq]


def decide(state: State, alert: Alert, at: datetime, alert_seq: int,
           policy: Policy) -> AlertDecided:
    """The decision for one alert (rule 3); reads ``state``, never changes it."""
    action, reason, link = _verdict(state, alert, at, policy)
    linked = suppressed = None
    if link is not None:
        linked = LinkedIssue(link.alert_seq, link.number)
        if action == "comment":
            suppressed = Suppressed(link.suppressed, link.suppressed_first,
                                    link.suppressed_last)
    return AlertDecided(alert_seq, alert.sentry_issue_id, alert.fingerprint_key, action,
                        reason, linked, suppressed)


def _verdict(state: State, alert: Alert, at: datetime,
             policy: Policy) -> tuple[Action, Reason, Link | None]:
    """Rule 3's table, first matching row wins."""
    if alert.event_id in state.event_ids:
        return "suppress", "duplicate", None
    if level_rank(alert.level) < level_rank(policy.min_level):
        return "suppress", "below_min_level", None
    if policy.environments and alert.environment not in policy.environments:
        return "suppress", "environment_filtered", None
    link = state.linked(alert)
    if link is not None:
        if at - link.last_notified_at < timedelta(seconds=policy.cooldown_seconds):
            return "suppress", "cooldown", link
        return "comment", "recurrence", link
    if opens_in_hour_before(state, at) >= policy.max_issues_per_hour:
        return "suppress", "storm_budget", None
    return "open", "new_issue", None


def opens_in_hour_before(state: State, at: datetime) -> int:
    """How many ``open`` decisions fall less than an hour before ``at``."""
    # recent_opens is in time order and pruned up to the last alert, so only its
    # oldest entries can have left the window: count those off the front.
    stale = 0
    for opened in state.recent_opens:
        if at - opened < STORM_WINDOW:
            break
        stale += 1
    return len(state.recent_opens) - stale


def apply(state: State, envelope: Envelope) -> AlertDecided | None:
    """Fold one record into ``state``; for an alert, return the decision it got."""
    state.last_seq = envelope.seq
    event = envelope.event
    match event:
        case AlertReceived():
            return _receive(state, event, envelope.at, envelope.seq)
        case AlertDecided():
            _record_decision(state, event)
        case ConfigApplied(policy=policy):
            state.policy = policy
        case IssueOpened():
            _opened(state, event)
        case CommentPosted():
            _commented(state, event)
        case IssueFailed():
            _failed(state, event)
        case HookReceived():
            pass
        case (SentryIssueChanged() | GitHubIssueObserved() | IssueReopened() | IssueClosed()
              | SentryResolved() | SyncDecided()):
            pass  # the issue lifecycle is folded from the next commit on
        case _:
            assert_never(event)
    return None


def _receive(state: State, received: AlertReceived, at: datetime, seq: int) -> AlertDecided:
    alert = received.alert
    _prune(state, at)
    decision = decide(state, alert, at, seq, state.effective_policy)
    if alert.event_id not in state.event_ids:
        state.event_ids[alert.event_id] = at
    _fold_decision(state, decision, received, at)
    state.unrecorded[seq] = decision
    return decision


def _prune(state: State, at: datetime) -> None:
    """Rule 7: forget what no later decision can need (times never go backwards)."""
    while state.event_ids:
        oldest_id, oldest_at = next(iter(state.event_ids.items()))
        if at - oldest_at <= EVENT_ID_WINDOW:
            break
        del state.event_ids[oldest_id]
    while state.recent_opens and at - state.recent_opens[0] >= STORM_WINDOW:
        state.recent_opens.popleft()


def _fold_decision(state: State, decision: AlertDecided, received: AlertReceived,
                   at: datetime) -> None:
    alert = received.alert
    if decision.action == "open":
        link = Link(decision.alert_seq, alert.sentry_issue_id, alert.fingerprint_key, at, at)
        state.links[link.alert_seq] = link
        state.links_by_issue[alert.sentry_issue_id] = link.alert_seq
        state.links_by_key[alert.fingerprint_key] = link.alert_seq
        state.recent_opens.append(at)
        state.intents[decision.alert_seq] = Intent(
            decision.alert_seq, "open", link.alert_seq, at, received, decision)
        return
    if decision.linked_issue is None:
        return
    link = state.links[decision.linked_issue.alert_seq]
    if decision.action == "comment":
        state.links[link.alert_seq] = replace(
            link, last_notified_at=at, suppressed=0, suppressed_first=None,
            suppressed_last=None)
        state.intents[decision.alert_seq] = Intent(
            decision.alert_seq, "comment", link.alert_seq, at, received, decision)
    elif decision.reason == "cooldown":
        state.links[link.alert_seq] = replace(
            link, suppressed=link.suppressed + 1,
            suppressed_first=link.suppressed_first or at, suppressed_last=at)


def _record_decision(state: State, event: AlertDecided) -> None:
    """The decision is durable now: its intent may be acted on (side effects follow records)."""
    state.unrecorded.pop(event.alert_seq, None)
    intent = state.intents.get(event.alert_seq)
    if intent is not None:
        state.intents[event.alert_seq] = replace(intent, recorded=True)


def _opened(state: State, event: IssueOpened) -> None:
    state.intents.pop(event.alert_seq, None)
    link = state.links.get(event.alert_seq)
    if link is not None:
        state.links[event.alert_seq] = replace(link, status="opened", number=event.number,
                                               url=event.url)


def _commented(state: State, event: CommentPosted) -> None:
    state.intents.pop(event.alert_seq, None)


def _failed(state: State, event: IssueFailed) -> None:
    intent = state.intents.get(event.alert_seq)
    if intent is None:
        return
    if event.retryable:
        state.intents[event.alert_seq] = replace(
            intent, attempts=event.attempt, next_attempt_at=event.next_attempt_at)
        return
    del state.intents[event.alert_seq]
    if intent.action == "open":
        _unlink(state, intent.link_seq)


def _unlink(state: State, link_seq: int) -> None:
    """A permanently failed open leaves no linked issue (docs/reference.md §5)."""
    link = state.links.pop(link_seq, None)
    if link is None:
        return
    if state.links_by_issue.get(link.sentry_issue_id) == link_seq:
        del state.links_by_issue[link.sentry_issue_id]
    if state.links_by_key.get(link.fingerprint_key) == link_seq:
        del state.links_by_key[link.fingerprint_key]


def orphaned_comments(state: State) -> list[Intent]:
    """Comment intents whose linked issue will never exist: they must be failed too."""
    return [i for i in state.intents.values()
            if i.action == "comment" and i.recorded and i.link_seq not in state.links]


def ready_intents(state: State) -> list[Intent]:
    """Recorded intents the sink may act on, oldest first (comments wait for their issue)."""
    ready = []
    for intent in sorted(state.intents.values(), key=lambda i: i.alert_seq):
        if not intent.recorded:
            continue
        if intent.action == "comment":
            link = state.links.get(intent.link_seq)
            if link is None or link.status != "opened":
                continue
        ready.append(intent)
    return ready
