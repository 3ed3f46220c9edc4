"""The decision core: State, apply(state, record) and decide(state, alert, at, policy).

Rules (docs/reference.md §5 and §7), numbered like h11's state machine so the code can
cite them:

 1. Records are folded in ``seq`` order. Each ``alert.received`` is decided exactly
    once, from the state built by the records before it, the policy of the last
    ``config.applied`` before it, and its own ``at``. Never the wall clock: replaying
    the same log yields the same decisions.
 2. An alert's decision is folded at the alert's own position, even though its
    ``alert.decided`` record lands later in the log. The next alert therefore sees
    it, and a replay, the live consumer and a restart all agree. Decisions derived
    but not recorded yet are ``State.unrecorded``.
 3. First matching row wins:
      suppress duplicate             the event_id was already received (Sentry
                                     retries with a new Request-ID, same event_id)
      suppress silenced              an active silence matches the alert (rule 13)
      suppress unrouted              GitHub is the sink (not a dry run), and no linked
                                     issue, no route and no default repo takes it (rule 14)
      suppress below_min_level       level under the route's (else the policy's) min
                                     level (unknown = error)
      suppress environment_filtered  environments set and the alert's not in it
      suppress wont_fix              linked issue closed as not_planned or duplicate,
                                     or carrying the mute label: a human decided
      reopen   regression            linked issue closed (completed, by obsv, or no
                                     reason) at most reopen_window before the alert
                                     (a closed_at after the alert, clock skew, counts
                                     as inside): one PATCH, then one comment
      open     regression            linked issue closed longer ago: a new issue that
                                     names the old one; the link moves to it
      comment  regression            linked issue open, but its Sentry issue was
                                     reported resolved since the last notification
      suppress cooldown              linked issue notified less than cooldown ago
      comment  recurrence            linked issue and the cooldown has passed
      suppress storm_budget          no linked issue and max_issues_per_hour opens
                                     already decided in the hour before (the route's
                                     own budget and hour when it has one, rule 13)
      open     new_issue             no linked issue
 4. The linked issue is the one linked to the alert's Sentry issue id, else to its
    fingerprint key. An issue is linked from its ``open`` decision on (pending), and
    unlinked when that open (or a reopen) fails permanently, when GitHub reports it
    ``deleted`` or ``transferred``, or when an ``open``/``regression`` replaces it.
 5. A notification is an ``open``, ``comment`` or ``reopen`` decision; its time is the
    alert's ``at``, not GitHub's answer, so decisions never depend on the sink's speed.
    A reopen marks the link open at once: the next alert finds an open issue in
    cooldown, never a second reopen.
 6. A filter or storm_budget suppression opens nothing: the next alert of the same
    Sentry issue is decided afresh. A permanently failed open still counted
    towards the storm budget.
 7. State stays O(distinct issues): received event ids and GitHub delivery ids are
    kept for ``EVENT_ID_WINDOW``, 24 hours (Sentry and GitHub redeliver within that;
    an older redelivery is taken afresh) and the rolling hour holds only the opens
    still inside it. They are pruned by record time, so pruning is as deterministic
    as the decisions. A Sentry event id (32 lowercase hex digits) is kept as the
    number it spells (``event_key``): 44 bytes instead of 81, 3 MB a day at one
    alert a second; any other id stays text, and a number never equals a text.
 8. A ``github.issue`` is matched to its link by (repo, number), or, while the link's
    open is pending, by the marker's Sentry issue id (GitHub's webhook can beat the
    sink's ``issue.opened``), unless it is about an issue obsv linked before and left
    (its Sentry issue's older issue has the same marker). It updates what the log
    knows of the issue: state, state_reason, closed_at, labels. One that matches no
    link changes nothing, and a redelivery (a ``delivery_id`` already folded) is
    skipped. Issue numbers obsv unlinked are kept, one per issue, like the links.
 9. GitHub's webhooks may come late and out of order, and GitHub lags obsv's own
    writes. A report older (by GitHub's ``updated_at``) than the newest one applied,
    or than obsv's last write on the issue (its ``issue.reopened`` or
    ``issue.closed``), is stale and ignored. While a reopen is not yet done, a report
    that the issue is closed is behind obsv, and while a close is not yet done, one
    that it is open: their labels count, their state does not (except a close as
    not_planned or duplicate: a human's decision wins).
10. A ``sentry.issue`` is matched by its Sentry issue id. ``resolved`` marks it known
    resolved and due a regression comment (row 9) until the next notification, even
    if ``unresolved`` follows (Sentry sends that around the alert, in either order).
    Any other status, or a new alert of that Sentry issue (Sentry regresses a
    resolved issue on a new event), makes it no longer known resolved. After obsv's
    own ``sentry.resolved``, the next ``resolved`` of that Sentry issue is taken for
    Sentry's webhook of that very change (Sentry sends one for resolves made through
    its API too), whatever else Sentry reports first.
11. Sync decisions are derived while folding their cause and recorded after it as
    ``sync.decided``, exactly like alert decisions; their intents are keyed by the
    cause's seq:
      close / resolved_in_sentry        close_on_resolve, a sentry.issue ``resolved``
                                        that was not known resolved, for a linked
                                        issue open per the log and not muted
      resolve_sentry / closed_on_github resolve_in_sentry, a github.issue that turns
                                        its issue closed as completed, whose Sentry
                                        issue is not known resolved
    No echo: an action whose target is already in the wanted state is not taken, and
    a report that arrives while obsv's own write of that state is unfinished is its
    echo. A close marks the link closed at once (so an alert in between reopens after
    the close instead of commenting on an issue about to close).
12. Side effects follow records: an intent is acted on once its decision is recorded,
    and writes on one GitHub issue go in decision order (a reopen must not overtake
    the close before it). A reopen is two steps: ``issue.reopened`` records the PATCH,
    so a crash after it redoes only the comment.
13. Silences (docs/reference.md §9, obsv/core/silences.py): a ``silence.added`` is
    active for alerts whose ``at`` lies in ``[starts_at, ends_at)``, until its
    ``silence.expired`` is folded; the first active one (in log order) whose matchers
    all match suppresses the alert, and the decision names its ``silence_id``. A
    silence is forgotten ``SILENCE_KEPT`` after it stopped (ended or expired), by
    record time like rule 7, so the state stays bounded and the admin API can still
    list recently ended ones.
14. Routing (docs/reference.md §8, obsv/core/routes.py): the first route that matches
    the alert takes it; its min level and cooldown replace the policy's. A route with
    its own ``max_issues_per_hour`` counts only its own opens in its own rolling hour
    (keyed by ``Route.key``); every other open counts in the shared hour. A decision
    names its repo: the linked issue's (a linked Sentry issue stays with its issue
    whatever the routes say now), else the route's, else the default. The link keeps
    the repo from its open decision on, so writes on it never follow a route change.
15. The storm digest (docs/reference.md §5): a ``storm_budget`` suppression folds into
    the storm of its decision's repo. The first of a storm derives ``storm.decided``
    ``open``; a later one, once ``DIGEST_INTERVAL`` of alert time has passed since the
    digest's last post (its open starts that clock) and some Sentry issue is not listed
    yet, derives ``comment`` listing the ones suppressed since. A storm ends
    ``STORM_WINDOW`` after its last suppression; the next one starts a new storm and
    digest. Like sync decisions (rule 11) a storm decision is derived while folding its
    cause, the alert, and recorded after it; it waits in ``State.storm_unrecorded`` under
    the alert's seq (that key is the alert decision's). Its intent is keyed by the
    ``storm.decided`` record's own seq, which its posts name. The digest is a link of
    its own, keyed by the seq of the alert that opened it and indexed by no Sentry
    issue id or fingerprint key, so no alert ever comments on it; digest opens never
    count towards the budget. A digest whose open failed for good is unlinked, and the
    next suppression opens a new one.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Literal, assert_never

from obsv.core.alert import Alert, level_rank, sentry_org
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
    IssueState,
    LeaderElected,
    LinkedIssue,
    LogCheckpoint,
    Policy,
    Reason,
    SentryIssueChanged,
    SentryResolved,
    SilenceAdded,
    SilenceExpired,
    StormDecided,
    StormIssue,
    Suppressed,
    SyncAction,
    SyncDecided,
    SyncReason,
)
from obsv.core.routes import Route, route_for
from obsv.core.silences import Silence, SilenceError, first_muting, parse_matchers

EVENT_ID_WINDOW = timedelta(hours=24)
STORM_WINDOW = timedelta(hours=1)
DIGEST_INTERVAL = timedelta(minutes=10)  # rule 15: at most one digest comment per this
MAX_RETRY_WAIT = timedelta(hours=1)  # docs/reference.md §6: never more than 1 h away
WONT_FIX_REASONS = frozenset({"not_planned", "duplicate"})
UNLINKING_ACTIONS = frozenset({"deleted", "transferred"})
SILENCE_KEPT = timedelta(hours=24)  # rule 13: how long an ended silence is still listed

_DEFAULT_POLICY = Policy()
HEX_DIGITS = "0123456789abcdef"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

LinkStatus = Literal["pending", "opened"]
IntentAction = Literal["open", "comment", "reopen", "close", "resolve_sentry"]
# The record a decision was taken on, and the decision.
Decided = AlertReceived | SentryIssueChanged | GitHubIssueObserved | StormDecided
Decision = AlertDecided | SyncDecided | StormDecided
EventKey = str | int  # see event_key


def event_key(event_id: str) -> EventKey:
    """How ``State.event_ids`` keys an event id (rule 7): a Sentry one, 32 lowercase hex
    digits, as the number it spells, exactly invertible by ``event_id_of``; any other
    id as itself."""
    if len(event_id) == 32 and not event_id.strip(HEX_DIGITS):
        return int(event_id, 16)
    return event_id


def event_id_of(key: EventKey) -> str:
    """The event id ``key`` stands for (inverse of ``event_key``)."""
    return key if isinstance(key, str) else f"{key:032x}"


@dataclass(frozen=True, slots=True)
class Link:
    """A GitHub issue opened (or being opened) for an alert, its notification clock, and
    what the log knows of its fate on GitHub and in Sentry."""

    alert_seq: int
    sentry_issue_id: str
    fingerprint_key: str
    opened_at: datetime
    last_notified_at: datetime
    status: LinkStatus = "pending"
    # The issue's URL is not kept: nothing decided or posted reads it (the records
    # have it, for obsv why and replay), and at 100 000 issues it was 7 MB.
    number: int | None = None
    suppressed: int = 0
    suppressed_first: datetime | None = None
    suppressed_last: datetime | None = None
    repo: str | None = None
    # The opening alert's Sentry organization (to resolve the issue there): only that
    # of its link, one shared string per organization (100 bytes a link less).
    sentry_org: str | None = None
    # GitHub's side (rules 8 and 9); labels None until GitHub first reports them.
    state: IssueState = "open"
    state_reason: str | None = None
    closed_at: datetime | None = None
    labels: tuple[str, ...] | None = None
    # GitHub reported nothing newer than this, nor had obsv written since (rule 9).
    stale_before: datetime | None = None
    # Sentry's side (rule 10).
    sentry_resolved: bool = False
    resolved_since: datetime | None = None  # reported resolved since the last notification
    resolve_echo_due: bool = False  # obsv resolved it; Sentry's webhook for that may follow


@dataclass(frozen=True, slots=True)
class Intent:
    """A decision with a side effect that has no final outcome yet.

    ``alert_seq`` is the seq of the record decided: the alert, or for ``close`` and
    ``resolve_sentry`` the ``sentry.issue`` / ``github.issue`` the sync decision was
    taken on (``received``). Outcomes and ``issue.failed`` name it the same way.
    """

    alert_seq: int
    action: IntentAction
    link_seq: int
    at: datetime
    received: Decided
    decision: Decision
    recorded: bool = False
    attempts: int = 0
    next_attempt_at: datetime | None = None
    reopened: bool = False  # a reopen's PATCH is done: only its comment remains


@dataclass(slots=True)
class Storm:
    """Rule 15: one repository's storm. Mutable (one per repository, changed on every
    suppression in a storm): ``State.copy`` copies it."""

    window_start: datetime
    last_suppressed_at: datetime
    last_post_at: datetime  # the alert time of the digest's last post (open or comment)
    digest_seq: int  # the key of the digest's link
    listed: set[str] = field(default_factory=set)  # Sentry issue ids listed or pending
    pending: list[StormIssue] = field(default_factory=list)  # suppressed since last post

    def copy(self) -> Storm:
        """A copy later folds do not change."""
        return Storm(self.window_start, self.last_suppressed_at, self.last_post_at,
                     self.digest_seq, set(self.listed), list(self.pending))


class NumberIndex:
    """Rule 8's index of linked issues by ``(repo, number)``: one dict of numbers per
    repository, because a ``(repo, number)`` tuple per link cost 56 bytes more (5.6 MB
    at 100 000 issues, docs/reference.md §12's memory budget)."""

    __slots__ = ("_by_repo",)

    def __init__(self, by_repo: dict[str, dict[int, int]] | None = None) -> None:
        self._by_repo: dict[str, dict[int, int]] = by_repo if by_repo is not None else {}

    def get(self, repo: str, number: int) -> int | None:
        """The seq of the link of ``repo#number``, if one is indexed."""
        numbers = self._by_repo.get(repo)
        return None if numbers is None else numbers.get(number)

    def put(self, repo: str, number: int, link_seq: int) -> None:
        """Index ``repo#number`` as the link ``link_seq``'s issue."""
        self._by_repo.setdefault(repo, {})[number] = link_seq

    def drop(self, repo: str, number: int, link_seq: int) -> None:
        """Forget ``repo#number`` if it is still the link ``link_seq``'s."""
        numbers = self._by_repo.get(repo)
        if numbers is not None and numbers.get(number) == link_seq:
            del numbers[number]
            if not numbers:
                del self._by_repo[repo]

    def copy(self) -> NumberIndex:
        """A copy later folds do not change."""
        return NumberIndex({repo: numbers.copy() for repo, numbers in self._by_repo.items()})

    def __len__(self) -> int:
        return sum(len(numbers) for numbers in self._by_repo.values())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NumberIndex) and self._by_repo == other._by_repo

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"NumberIndex({self._by_repo!r})"


@dataclass(slots=True)
class State:
    """Everything decisions need, folded from the log."""

    last_seq: int = 0
    policy: Policy | None = None  # of the last config.applied; None before the first
    policy_override: Policy | None = None
    # Rule 7's remembered event ids and when each came, in the order they came; the
    # deque is that order, for pruning from the oldest (a dict iterates past the
    # entries deleted at its front, and an OrderedDict costs 40 bytes an id more).
    event_ids: dict[EventKey, datetime] = field(default_factory=dict)
    event_order: deque[EventKey] = field(default_factory=deque)
    github_deliveries: OrderedDict[str, datetime] = field(default_factory=OrderedDict)
    links: dict[int, Link] = field(default_factory=dict)
    links_by_issue: dict[str, int] = field(default_factory=dict)
    links_by_key: dict[str, int] = field(default_factory=dict)
    links_by_number: NumberIndex = field(default_factory=NumberIndex)
    # Issues obsv linked once and no more (rule 8): never taken for a pending open's.
    unlinked_numbers: set[tuple[str, int]] = field(default_factory=set)
    # Sentry issue ids whose webhook for obsv's own resolve may still come while no link
    # carries that (the link was unlinked): the next link of the id inherits it (rule 10).
    resolve_echoes: set[str] = field(default_factory=set)
    recent_opens: deque[datetime] = field(default_factory=deque)
    # Rule 13: the opens of each route with its own budget, by ``Route.key``.
    route_opens: dict[str, deque[datetime]] = field(default_factory=dict)
    intents: dict[int, Intent] = field(default_factory=dict)
    unrecorded: dict[int, Decision] = field(default_factory=dict)
    # The ``at`` of the first alert of each Sentry issue: the issue body's "first seen"
    # (docs/reference.md §6). One entry per distinct Sentry issue, like the links.
    first_seen: dict[str, datetime] = field(default_factory=dict)
    # Silences by id, in log order (rule 13).
    silences: dict[str, Silence] = field(default_factory=dict)
    # Rule 15: the storm of each repository ("" for a dry run's none), and the storm
    # decisions derived but not recorded, by their alert's seq, with their digest's key.
    storms: dict[str, Storm] = field(default_factory=dict)
    storm_unrecorded: dict[int, tuple[StormDecided, int]] = field(default_factory=dict)
    # Rule 7: no record before this time can make ``_prune`` forget anything, so it does
    # not look (None: not known, look at the next record). What keeps a new time
    # brings it forward (``_may_expire``); a state filled in otherwise (a snapshot) and
    # a copy start from None. Not part of what the state says: never compared.
    prune_due: datetime | None = field(default=None, compare=False, repr=False)

    @property
    def effective_policy(self) -> Policy:
        """The policy decisions use: the override (``--policy current``) or the recorded one."""
        return self.policy_override or self.policy or _DEFAULT_POLICY

    def copy(self) -> State:
        """A copy that later folds do not change (links and intents are immutable, so
        copying the containers is enough): what a snapshot is written from."""
        return State(
            last_seq=self.last_seq, policy=self.policy, policy_override=self.policy_override,
            event_ids=self.event_ids.copy(), event_order=self.event_order.copy(),
            github_deliveries=self.github_deliveries.copy(),
            links=self.links.copy(), links_by_issue=self.links_by_issue.copy(),
            links_by_key=self.links_by_key.copy(), links_by_number=self.links_by_number.copy(),
            unlinked_numbers=self.unlinked_numbers.copy(), recent_opens=self.recent_opens.copy(),
            resolve_echoes=self.resolve_echoes.copy(),
            intents=self.intents.copy(), unrecorded=self.unrecorded.copy(),
            first_seen=self.first_seen.copy(), silences=self.silences.copy(),
            route_opens={key: opens.copy() for key, opens in self.route_opens.items()},
            storms={key: storm.copy() for key, storm in self.storms.items()},
            storm_unrecorded=self.storm_unrecorded.copy())

    def linked(self, alert: Alert) -> Link | None:
        """The linked issue of an alert (rule 4)."""
        link_seq = self.links_by_issue.get(alert.sentry_issue_id)
        if link_seq is None:
            link_seq = self.links_by_key.get(alert.fingerprint_key)
        return None if link_seq is None else self.links[link_seq]


# -- deciding an alert ----------------------------------------------------------------

def decide(state: State, alert: Alert, at: datetime, alert_seq: int,
           policy: Policy) -> AlertDecided:
    """The decision for one alert (rule 3); reads ``state``, never changes it."""
    return _decide(state, alert, at, alert_seq, policy, route_for(policy, alert),
                   event_key(alert.event_id))


def _decide(state: State, alert: Alert, at: datetime, alert_seq: int, policy: Policy,
            route: Route | None, key: EventKey) -> AlertDecided:
    """``decide``, given the alert's route and event key (each found once per alert: the
    fold needs them again, for the open's budget and to remember the event id)."""
    duplicate = key in state.event_ids
    if not duplicate and state.silences:  # row 2 comes right after duplicate
        silence = first_muting(state.silences.values(), alert, at)
        if silence is not None:
            linked_now = state.linked(alert)
            return AlertDecided(alert_seq, alert.sentry_issue_id, alert.fingerprint_key,
                                "suppress", "silenced", silence_id=silence.id,
                                repo=_decision_repo(policy, route, linked_now))
    action, reason, link = _verdict(state, alert, at, policy, route, duplicate)
    repo = _decision_repo(policy, route, link)
    linked = suppressed = since = None
    if link is not None:
        linked = LinkedIssue(link.alert_seq, link.number)
        if action in ("comment", "reopen"):
            suppressed = Suppressed(link.suppressed, link.suppressed_first,
                                    link.suppressed_last)
        if reason == "regression":
            since = link.closed_at if link.state == "closed" else link.resolved_since
    return AlertDecided(alert_seq, alert.sentry_issue_id, alert.fingerprint_key, action,
                        reason, linked, suppressed, since, repo=repo)


def _decision_repo(policy: Policy, route: Route | None, link: Link | None) -> str | None:
    """Rule 14: the linked issue's repo, else the route's, else the default."""
    if link is not None and link.repo is not None:
        return link.repo
    return route.repo if route is not None else policy.repo


def _verdict(state: State, alert: Alert, at: datetime, policy: Policy, route: Route | None,
             duplicate: bool) -> tuple[Action, Reason, Link | None]:
    """Rule 3's table, first matching row wins."""
    if duplicate:
        return "suppress", "duplicate", None
    link_seq = state.links_by_issue.get(alert.sentry_issue_id)  # state.linked, inline
    if link_seq is None:
        link_seq = state.links_by_key.get(alert.fingerprint_key)
    link = None if link_seq is None else state.links[link_seq]
    if (route is None and policy.repo is None and not policy.dry_run
            and (link is None or link.repo is None)):
        return "suppress", "unrouted", None
    min_level = policy.min_level if route is None or route.min_level is None \
        else route.min_level
    if level_rank(alert.level) < level_rank(min_level):
        return "suppress", "below_min_level", None
    if policy.environments and alert.environment not in policy.environments:
        return "suppress", "environment_filtered", None
    if link is None:
        if _budget_spent(state, at, policy, route):
            return "suppress", "storm_budget", None
        return "open", "new_issue", None
    if is_wont_fix(link, policy):
        return "suppress", "wont_fix", link
    if link.state == "closed":
        closed_at = link.closed_at or at
        if at - closed_at <= timedelta(seconds=policy.reopen_window_seconds):
            return "reopen", "regression", link
        return "open", "regression", link
    if link.resolved_since is not None:
        return "comment", "regression", link
    cooldown = policy.cooldown_seconds if route is None or route.cooldown_seconds is None \
        else route.cooldown_seconds
    if at - link.last_notified_at < timedelta(seconds=cooldown):
        return "suppress", "cooldown", link
    return "comment", "recurrence", link


def is_wont_fix(link: Link, policy: Policy) -> bool:
    """Row 6: a human closed the issue as not planned or a duplicate, or muted it."""
    if link.state == "closed" and link.state_reason in WONT_FIX_REASONS:
        return True
    return link.labels is not None and policy.mute_label in link.labels


def opens_in_hour_before(state: State, at: datetime, route: Route | None = None) -> int:
    """How many ``open`` decisions fall less than an hour before ``at``: in the shared
    hour, or in the own hour of ``route`` (rule 13)."""
    opens = state.recent_opens if route is None else state.route_opens.get(route.key, ())
    # The opens are in time order and pruned up to the last alert, so only the
    # oldest entries can have left the window: count those off the front.
    stale = 0
    for opened in opens:
        if at - opened < STORM_WINDOW:
            break
        stale += 1
    return len(opens) - stale


def budget_route(policy: Policy, alert: Alert) -> Route | None:
    """The route whose own budget counts the alert's opens, or None: the shared one."""
    route = route_for(policy, alert)
    return route if route is not None and route.max_issues_per_hour is not None else None


def _budget_spent(state: State, at: datetime, policy: Policy, route: Route | None) -> bool:
    if route is not None and route.max_issues_per_hour is not None:
        return opens_in_hour_before(state, at, route) >= route.max_issues_per_hour
    return opens_in_hour_before(state, at) >= policy.max_issues_per_hour


# -- the fold ---------------------------------------------------------------------------

def apply(state: State, envelope: Envelope) -> AlertDecided | None:
    """Fold one record into ``state``; for an alert, return the decision it got.

    A sync decision derived from a ``sentry.issue`` or ``github.issue`` is not
    returned: like every decision it waits in ``state.unrecorded`` (under the cause's
    seq) until its record is folded.
    """
    state.last_seq = envelope.seq
    event, at, seq = envelope.event, envelope.at, envelope.seq
    match event:
        case AlertReceived():
            return _receive(state, event, at, seq)
        case AlertDecided():
            _record_decision(state, event.alert_seq)
        case SyncDecided():
            _record_decision(state, event.cause_seq)
        case StormDecided():
            _storm_recorded(state, event, at, seq)
        case ConfigApplied(policy=policy):
            state.policy = policy
        case IssueOpened():
            _opened(state, event)
        case CommentPosted():
            state.intents.pop(event.alert_seq, None)
        case IssueReopened():
            _reopened(state, event, at)
        case IssueClosed():
            _closed(state, event, at)
        case SentryResolved():
            _sentry_resolved(state, event, at)
        case IssueFailed():
            _failed(state, event, envelope.at)
        case SentryIssueChanged():
            _sentry_changed(state, event, at, seq)
        case GitHubIssueObserved():
            _github_observed(state, event, at, seq)
        case SilenceAdded():
            _silence_added(state, event, at)
        case SilenceExpired():
            _silence_expired(state, event, at)
        case HookReceived() | LogCheckpoint() | LeaderElected():  # decide nothing
            pass
        case _:
            assert_never(event)
    return None


def _receive(state: State, received: AlertReceived, at: datetime, seq: int) -> AlertDecided:
    alert = received.alert
    due = state.prune_due  # _prune's own first test, here to save the call per alert
    if due is None or at.tzinfo is not UTC or at >= due:
        _prune(state, at)
    policy = state.effective_policy
    route = route_for(policy, alert) if policy.routes else None
    key = event_key(alert.event_id)
    decision = _decide(state, alert, at, seq, policy, route, key)
    if decision.reason != "duplicate":  # the event id was not in state.event_ids
        state.event_ids[key] = at
        state.event_order.append(key)
        if len(state.event_ids) == 1:  # the oldest kept: prune looks at it
            _may_expire(state, at, EVENT_ID_WINDOW)
        _no_longer_resolved(state, alert.sentry_issue_id)
    state.first_seen.setdefault(alert.sentry_issue_id, at)
    _fold_decision(state, decision, received, at, route)
    state.unrecorded[seq] = decision
    if decision.reason == "storm_budget":
        _storm_suppressed(state, decision, alert, at)
    return decision


# -- the storm digest (rule 15) ---------------------------------------------------------

def _storm_suppressed(state: State, decision: AlertDecided, alert: Alert,
                      at: datetime) -> None:
    key = decision.repo or ""
    storm = state.storms.get(key)
    if (storm is None or at - storm.last_suppressed_at >= STORM_WINDOW
            or storm.digest_seq not in state.links):
        listed = StormIssue(alert.sentry_issue_id, alert.title, alert.level, alert.web_url)
        digest_seq = decision.alert_seq
        state.storms[key] = Storm(at, at, at, digest_seq, {alert.sentry_issue_id})
        _may_expire(state, at, STORM_WINDOW)
        state.links[digest_seq] = Link(digest_seq, "", "", at, at, repo=decision.repo)
        state.storm_unrecorded[decision.alert_seq] = (
            StormDecided(decision.alert_seq, "open", decision.repo, at, (listed,)), digest_seq)
        return
    if at < storm.last_suppressed_at:  # a time that went back: this storm ends sooner
        _may_expire(state, at, STORM_WINDOW)
    storm.last_suppressed_at = at
    if alert.sentry_issue_id not in storm.listed:
        storm.listed.add(alert.sentry_issue_id)
        storm.pending.append(StormIssue(alert.sentry_issue_id, alert.title, alert.level,
                                        alert.web_url))
    if storm.pending and at - storm.last_post_at >= DIGEST_INTERVAL:
        state.storm_unrecorded[decision.alert_seq] = (StormDecided(
            decision.alert_seq, "comment", decision.repo, storm.window_start,
            tuple(storm.pending)), storm.digest_seq)
        storm.pending = []
        storm.last_post_at = at


def _storm_recorded(state: State, event: StormDecided, at: datetime, seq: int) -> None:
    """The storm decision is durable: its post may be made, keyed by this record's seq."""
    derived = state.storm_unrecorded.pop(event.alert_seq, None)
    if derived is None:  # none was derived (a hand-made line): nothing to post
        return
    decision, digest_seq = derived
    state.intents[seq] = Intent(seq, decision.action, digest_seq, at, decision, decision,
                                recorded=True)


def _prune(state: State, at: datetime) -> None:
    """Rule 7: forget what no later decision can need (times never go backwards)."""
    due = state.prune_due
    if due is not None and at.tzinfo is UTC and at < due:
        return  # nothing can have expired yet: most alerts end here
    event_ids, order = state.event_ids, state.event_order
    while order and at - event_ids[order[0]] > EVENT_ID_WINDOW:
        del event_ids[order.popleft()]
    deliveries = state.github_deliveries
    while deliveries and at - next(iter(deliveries.values())) > EVENT_ID_WINDOW:
        deliveries.popitem(last=False)
    while state.recent_opens and at - state.recent_opens[0] >= STORM_WINDOW:
        state.recent_opens.popleft()
    for silence_id in [i for i, s in state.silences.items() if at - s.stopped_at > SILENCE_KEPT]:
        del state.silences[silence_id]
    for key, opens in list(state.route_opens.items()):
        while opens and at - opens[0] >= STORM_WINDOW:
            opens.popleft()
        if not opens:
            del state.route_opens[key]
    for key in [k for k, storm in state.storms.items()
                if at - storm.last_suppressed_at >= STORM_WINDOW]:
        del state.storms[key]  # rule 15: that storm is over (its digest link stays)
    state.prune_due = _next_expiry(state)


# A prune_due that nothing brings forward yet: nothing is kept that can expire.
_NEVER = datetime.max.replace(tzinfo=UTC)


def _next_expiry(state: State) -> datetime | None:
    """The earliest record time at which ``_prune`` can forget anything kept now (it
    looks at the oldest of each window, and at every silence and storm); None when a
    time kept is not in UTC, where adding and subtracting are not exact inverses."""
    kept = [(opens[0], STORM_WINDOW) for opens in state.route_opens.values() if opens]
    if state.event_order:
        kept.append((state.event_ids[state.event_order[0]], EVENT_ID_WINDOW))
    if state.github_deliveries:
        kept.append((next(iter(state.github_deliveries.values())), EVENT_ID_WINDOW))
    if state.recent_opens:
        kept.append((state.recent_opens[0], STORM_WINDOW))
    kept += [(silence.stopped_at, SILENCE_KEPT) for silence in state.silences.values()]
    kept += [(storm.last_suppressed_at, STORM_WINDOW) for storm in state.storms.values()]
    due = _NEVER
    for since, window in kept:
        if since.tzinfo is not UTC:
            return None
        if since <= _NEVER - window and since + window < due:  # else it never expires
            due = since + window
    return due


def _may_expire(state: State, since: datetime, window: timedelta) -> None:
    """Something kept from ``since`` for ``window`` (rule 7, 13 or 15): bring
    ``prune_due`` forward to its expiry if that is earlier."""
    due = state.prune_due
    if due is None:
        return
    if since.tzinfo is not UTC:
        state.prune_due = None
    elif since <= _NEVER - window and since + window < due:
        state.prune_due = since + window


# -- silences (rule 13) -------------------------------------------------------------------

def _silence_added(state: State, event: SilenceAdded, at: datetime) -> None:
    _prune(state, at)
    try:
        matchers = parse_matchers(list(event.matchers))
    except SilenceError:
        # The admin API refuses these; one in the log (written by hand, or by an obsv
        # whose matchers this one does not know) mutes nothing rather than everything.
        return
    silence = Silence(event.id, matchers, event.starts_at, event.ends_at, event.comment,
                      event.created_by)
    state.silences[event.id] = silence
    _may_expire(state, silence.stopped_at, SILENCE_KEPT)


def _silence_expired(state: State, event: SilenceExpired, at: datetime) -> None:
    silence = state.silences.get(event.id)
    if silence is not None and silence.expired_at is None:
        state.silences[event.id] = silence = replace(silence, expired_at=at, expired_by=event.by)
        _may_expire(state, silence.stopped_at, SILENCE_KEPT)


def _no_longer_resolved(state: State, sentry_issue_id: str) -> None:
    """Rule 10: a new event of a resolved Sentry issue regresses it in Sentry."""
    link_seq = state.links_by_issue.get(sentry_issue_id)
    if link_seq is not None and state.links[link_seq].sentry_resolved:
        state.links[link_seq] = replace(state.links[link_seq], sentry_resolved=False)


def _fold_decision(state: State, decision: AlertDecided, received: AlertReceived,
                   at: datetime, route: Route | None) -> None:
    alert = received.alert
    if decision.action == "open":
        echo_due = False
        if decision.linked_issue is not None:  # row 8: the link moves to the new issue
            echo_due = _resolve_echo_due(state, decision.linked_issue.alert_seq,
                                         alert.sentry_issue_id)
            _unlink(state, decision.linked_issue.alert_seq)
        if alert.sentry_issue_id in state.resolve_echoes:  # its old link was unlinked
            state.resolve_echoes.discard(alert.sentry_issue_id)
            echo_due = True
        link = Link(decision.alert_seq, alert.sentry_issue_id, alert.fingerprint_key, at, at,
                    repo=decision.repo, sentry_org=sentry_org(alert.web_url),
                    resolve_echo_due=echo_due)
        state.links[link.alert_seq] = link
        state.links_by_issue[alert.sentry_issue_id] = link.alert_seq
        state.links_by_key[alert.fingerprint_key] = link.alert_seq
        if route is None or route.max_issues_per_hour is None:  # budget_route's answer
            opens = state.recent_opens
        else:
            opens = state.route_opens.setdefault(route.key, deque())
        opens.append(at)
        if len(opens) == 1:  # the oldest kept: prune looks at it
            _may_expire(state, at, STORM_WINDOW)
        _intend(state, decision.alert_seq, "open", link.alert_seq, at, received, decision)
        return
    if decision.linked_issue is None:
        return
    link_seq = decision.linked_issue.alert_seq
    link = state.links[link_seq]
    if decision.action in ("comment", "reopen"):
        link = replace(link, last_notified_at=at, suppressed=0, suppressed_first=None,
                       suppressed_last=None, resolved_since=None)
        if decision.action == "reopen":  # rule 5: open at once
            link = replace(link, state="open", state_reason="reopened", closed_at=None)
        state.links[link_seq] = link
        _intend(state, decision.alert_seq, decision.action, link_seq, at, received, decision)
    elif decision.reason == "cooldown":
        state.links[link_seq] = replace(
            link, suppressed=link.suppressed + 1,
            suppressed_first=link.suppressed_first or at, suppressed_last=at)


def _resolve_echo_due(state: State, link_seq: int, sentry_issue_id: str) -> bool:
    """Whether Sentry may still send the webhook of obsv's resolve of this Sentry issue,
    made for the issue that a regression issue now replaces (rule 10)."""
    old = state.links[link_seq]
    return old.sentry_issue_id == sentry_issue_id and (
        old.resolve_echo_due or _unfinished(state, link_seq, "resolve_sentry"))


def _intend(state: State, seq: int, action: IntentAction, link_seq: int, at: datetime,
            received: Decided, decision: Decision) -> None:
    state.intents[seq] = Intent(seq, action, link_seq, at, received, decision)


def _record_decision(state: State, seq: int) -> None:
    """The decision is durable now: its intent may be acted on (side effects follow records)."""
    state.unrecorded.pop(seq, None)
    intent = state.intents.get(seq)
    if intent is not None:
        state.intents[seq] = replace(intent, recorded=True)


# -- outcomes ---------------------------------------------------------------------------

def _opened(state: State, event: IssueOpened) -> None:
    intent = state.intents.pop(event.alert_seq, None)
    # A storm digest's open names its storm.decided record; its link is keyed apart.
    link_seq = event.alert_seq if intent is None else intent.link_seq
    link = state.links.get(link_seq)
    if link is None:
        return
    _numbered(state, link, event.repo, event.number)
    state.links[link_seq] = replace(state.links[link_seq], status="opened")


def _numbered(state: State, link: Link, repo: str | None, number: int | None) -> None:
    """The link's issue is ``repo#number`` (indexed for rule 8)."""
    if link.repo is not None and link.number is not None:
        state.links_by_number.drop(link.repo, link.number, link.alert_seq)
    state.links[link.alert_seq] = replace(link, repo=repo, number=number)
    if repo is not None and number is not None:
        state.links_by_number.put(repo, number, link.alert_seq)


def _reopened(state: State, event: IssueReopened, at: datetime) -> None:
    intent = state.intents.get(event.alert_seq)
    if intent is None or intent.action != "reopen":
        return
    state.intents[event.alert_seq] = replace(intent, reopened=True)
    _written(state, intent.link_seq, at)


def _written(state: State, link_seq: int, at: datetime) -> None:
    """Rule 9: GitHub holds obsv's write since ``at``; what it reported before is stale."""
    link = state.links.get(link_seq)
    if link is not None:
        state.links[link_seq] = replace(link, stale_before=_later(link.stale_before, at))


def _later(a: datetime | None, b: datetime) -> datetime:
    return b if a is None or a < b else a


def _closed(state: State, event: IssueClosed, at: datetime) -> None:
    intent = state.intents.pop(event.alert_seq, None)
    if intent is None or intent.action != "close":
        return
    _written(state, intent.link_seq, at)
    link = state.links.get(intent.link_seq)
    # Still closed by this decision (nothing reopened it since, GitHub said nothing
    # newer): it has been closed since GitHub answered.
    if link is not None and link.state == "closed" and link.closed_at == intent.at:
        state.links[intent.link_seq] = replace(link, closed_at=at)


def _sentry_resolved(state: State, event: SentryResolved, at: datetime) -> None:
    intent = state.intents.pop(event.cause_seq, None)
    link_seq = intent.link_seq if intent is not None else state.links_by_issue.get(
        event.sentry_issue_id)
    link = None if link_seq is None else state.links.get(link_seq)
    if link is not None:
        state.links[link.alert_seq] = replace(link, sentry_resolved=True, resolved_since=at,
                                              resolve_echo_due=True)


def _failed(state: State, event: IssueFailed, at: datetime) -> None:
    intent = state.intents.get(event.alert_seq)
    if intent is None:
        return
    if event.retryable:
        # No retry is ever further than MAX_RETRY_WAIT from its failure, whatever an
        # older obsv (or a peer's Retry-After) wrote: a decision is never parked for good.
        due = event.next_attempt_at
        if due is not None and due - at > MAX_RETRY_WAIT:
            due = at + MAX_RETRY_WAIT
        state.intents[event.alert_seq] = replace(intent, attempts=event.attempt,
                                                 next_attempt_at=due)
        return
    del state.intents[event.alert_seq]
    if intent.action == "open" or (intent.action == "reopen" and not intent.reopened):
        # An issue that cannot be opened, or reopened (deleted or transferred without
        # obsv hearing of it, or out of reach), is linked no more: the next alert opens one.
        _unlink(state, intent.link_seq)
    elif intent.action == "close":
        link = state.links.get(intent.link_seq)
        if link is not None and link.state == "closed" and link.closed_at == intent.at:
            state.links[intent.link_seq] = replace(link, state="open", state_reason=None,
                                                   closed_at=None)


def _unlink(state: State, link_seq: int) -> None:
    """Rule 4: the link is gone, and so is an open still pending for it."""
    if link_seq in state.links and _resolve_echo_due(
            state, link_seq, state.links[link_seq].sentry_issue_id):
        state.resolve_echoes.add(state.links[link_seq].sentry_issue_id)
    link = state.links.pop(link_seq, None)
    if link is None:
        return
    if state.links_by_issue.get(link.sentry_issue_id) == link_seq:
        del state.links_by_issue[link.sentry_issue_id]
    if state.links_by_key.get(link.fingerprint_key) == link_seq:
        del state.links_by_key[link.fingerprint_key]
    if link.repo is not None and link.number is not None:
        state.unlinked_numbers.add((link.repo, link.number))
        state.links_by_number.drop(link.repo, link.number, link_seq)
    pending = state.intents.get(link_seq)
    if pending is not None and pending.action == "open":
        del state.intents[link_seq]


# -- what comes back from Sentry and GitHub ------------------------------------------------

def _sentry_changed(state: State, event: SentryIssueChanged, at: datetime, seq: int) -> None:
    """Rule 10, and rule 11's close."""
    link_seq = state.links_by_issue.get(event.sentry_issue_id)
    if link_seq is None:
        if event.action == "resolved":  # the echo came while no link carried it
            state.resolve_echoes.discard(event.sentry_issue_id)
        return
    link = state.links[link_seq]
    was_resolved = link.sentry_resolved
    # The echo of obsv's own resolve: Sentry's webhook for it, before or after its
    # sentry.resolved (a new alert in between may have made it "not resolved" again;
    # Sentry's older webhooks of the issue may still come first, in any order).
    echo = event.action == "resolved" and (
        link.resolve_echo_due or _unfinished(state, link_seq, "resolve_sentry"))
    resolved = _resolved_in_sentry(event)
    if resolved is not None:
        link = replace(link, sentry_resolved=resolved)
    if event.action == "resolved":
        link = replace(link, resolved_since=at, resolve_echo_due=False)
    state.links[link_seq] = link
    policy = state.effective_policy
    if (event.action == "resolved" and not was_resolved and not echo
            and policy.close_on_resolve and link.state == "open"
            and not is_wont_fix(link, policy) and not _unfinished(state, link_seq, "close")):
        state.links[link_seq] = replace(link, state="closed", state_reason="completed",
                                        closed_at=at)
        _sync(state, seq, at, event, link, "close", "resolved_in_sentry")


def _resolved_in_sentry(event: SentryIssueChanged) -> bool | None:
    """Whether the Sentry issue is resolved now, per this delivery (None: it does not say)."""
    if event.status is not None:
        return event.status == "resolved"
    return {"resolved": True, "unresolved": False, "ignored": False}.get(event.action)


def _github_observed(state: State, event: GitHubIssueObserved, at: datetime,
                     seq: int) -> None:
    """Rules 8 and 9, and rule 11's resolve_sentry."""
    _prune(state, at)
    if event.delivery_id is not None:
        if event.delivery_id in state.github_deliveries:
            return
        state.github_deliveries[event.delivery_id] = at
        if len(state.github_deliveries) == 1:  # the oldest kept: prune looks at it
            _may_expire(state, at, EVENT_ID_WINDOW)
    link = observed_link(state, event)
    if link is None:
        return
    if link.number is None:  # matched by the marker: now its number is known
        _numbered(state, link, event.repo, event.number)
        link = state.links[link.alert_seq]
    if event.action in UNLINKING_ACTIONS:
        _unlink(state, link.alert_seq)
        return
    after = _observe(state, link, event, at)
    state.links[link.alert_seq] = after
    policy = state.effective_policy
    if (policy.resolve_in_sentry and _closed_completed(after) and not _closed_completed(link)
            and not after.sentry_resolved
            and not _unfinished(state, link.alert_seq, "resolve_sentry")
            and not _unfinished(state, link.alert_seq, "close")):  # its echo (rule 11)
        _sync(state, seq, at, event, after, "resolve_sentry", "closed_on_github")


def observed_link(state: State, event: GitHubIssueObserved) -> Link | None:
    """Rule 8: the link a ``github.issue`` is about, if any."""
    link_seq = state.links_by_number.get(event.repo, event.number)
    if link_seq is not None:
        return state.links[link_seq]
    if (event.repo, event.number) in state.unlinked_numbers:
        return None  # an issue obsv left (a regression issue has the old one's marker)
    link_seq = state.links_by_issue.get(event.sentry_issue_id)
    if link_seq is None:
        return None
    link = state.links[link_seq]
    # A pending link knows the repo its open goes to (rule 13): another repo's issue
    # with the same marker is not it.
    if link.repo is not None and link.repo != event.repo:
        return None
    return link if link.status == "pending" and link.number is None else None


def _observe(state: State, link: Link, event: GitHubIssueObserved, at: datetime) -> Link:
    """The link once ``event`` is known (rule 9 decides which reports are stale)."""
    if link.stale_before is not None and event.updated_at < link.stale_before:
        return link
    link = replace(link, labels=tuple(sorted(set(event.labels))),
                   stale_before=event.updated_at)
    if _behind_obsv(state, link, event):
        return link
    closed_at = (event.closed_at or at) if event.state == "closed" else None
    return replace(link, state=event.state, state_reason=event.state_reason,
                   closed_at=closed_at)


def _behind_obsv(state: State, link: Link, event: GitHubIssueObserved) -> bool:
    """Rule 9: GitHub has not seen obsv's unfinished reopen or close yet (a close as not
    planned or duplicate, though, is a human's decision and always counts)."""
    if event.state == "closed":
        return (event.state_reason not in WONT_FIX_REASONS
                and _unfinished(state, link.alert_seq, "reopen"))
    return _unfinished(state, link.alert_seq, "close")


def _closed_completed(link: Link) -> bool:
    return link.state == "closed" and link.state_reason == "completed"


def _unfinished(state: State, link_seq: int, action: IntentAction) -> bool:
    """Whether obsv still has ``action`` to do on this link (a reopen whose PATCH is
    done counts as finished: the issue is open again)."""
    return any(i.link_seq == link_seq and i.action == action and not i.reopened
               for i in state.intents.values())


def _sync(state: State, cause_seq: int, at: datetime, cause: SentryIssueChanged |
          GitHubIssueObserved, link: Link, action: SyncAction, reason: SyncReason) -> None:
    decision = SyncDecided(cause_seq, link.sentry_issue_id, action, reason)
    _intend(state, cause_seq, action, link.alert_seq, at, cause, decision)
    state.unrecorded[cause_seq] = decision


# -- what the shells ask ----------------------------------------------------------------

def differs_from_log(state: State, event: GitHubIssueObserved) -> bool:
    """Whether recording this observation would tell the log something new about an issue
    obsv links (its state, state reason, closed_at or labels): what the poller asks so
    that webhooks and polls never record the same change twice."""
    link = observed_link(state, event)
    if link is None:
        return False
    if event.action in UNLINKING_ACTIONS:
        return True
    after = _observe(state, link, event, link.closed_at or _EPOCH)
    return _github_view(after) != _github_view(link)


def _github_view(link: Link) -> tuple[object, ...]:
    return link.state, link.state_reason, link.closed_at, link.labels


def delivery_recorded(state: State, delivery_id: str) -> bool:
    """Whether a ``github.issue`` with this ``X-GitHub-Delivery`` is already folded (kept
    for ``EVENT_ID_WINDOW``): the webhook receiver's duplicate check after a restart."""
    return delivery_id in state.github_deliveries


def orphaned_intents(state: State) -> list[Intent]:
    """Recorded intents whose linked issue is gone (never opened, deleted, transferred or
    replaced): they can never be carried out and must be recorded as failed."""
    return [i for i in state.intents.values()
            if i.action != "open" and i.recorded and i.link_seq not in state.links]


def ready_intents(state: State) -> list[Intent]:
    """Recorded intents the sink may act on now, oldest first (rule 12): writes on a
    GitHub issue wait until it is opened and until the earlier writes on it are done."""
    ready = []
    busy: set[int] = set()
    for intent in sorted(state.intents.values(), key=lambda i: i.alert_seq):
        on_github = intent.action != "resolve_sentry"
        if on_github:
            if intent.link_seq in busy:
                continue
            busy.add(intent.link_seq)
        if not intent.recorded:
            continue
        link = state.links.get(intent.link_seq)
        if intent.action != "open" and (link is None or (on_github and link.status != "opened")):
            continue
        ready.append(intent)
    return ready
