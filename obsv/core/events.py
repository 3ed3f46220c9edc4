"""The facts obsv records: one frozen dataclass per log record type.

A record is an ``Envelope``: the ``seq`` and ``at`` the log writer gave it, and an
event saying what happened, in the past tense. Events are created without ``seq``
and ``at`` because only the writer knows them (it assigns both under group commit).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from obsv.core.alert import Alert
from obsv.core.routes import Route

Action = Literal["open", "comment", "suppress", "reopen"]
Reason = Literal[
    "duplicate",
    "below_min_level",
    "environment_filtered",
    "wont_fix",
    "regression",
    "cooldown",
    "recurrence",
    "storm_budget",
    "new_issue",
    "silenced",
    "unrouted",
]
SyncAction = Literal["close", "resolve_sentry"]
SyncReason = Literal["resolved_in_sentry", "closed_on_github"]
StormAction = Literal["open", "comment"]
IssueState = Literal["open", "closed"]
ObservedBy = Literal["webhook", "poll"]


@dataclass(frozen=True, slots=True)
class Delivery:
    """How a webhook arrived: the unsigned headers and the signature we checked."""

    request_id: str | None
    resource: str
    hook_timestamp: str | None
    signature: str


@dataclass(frozen=True, slots=True)
class Policy:
    """The settings that decisions depend on, recorded so replays can reuse them."""

    min_level: str = "error"
    environments: tuple[str, ...] = ()
    cooldown_seconds: int = 21600
    max_issues_per_hour: int = 20
    repo: str | None = None
    labels: tuple[str, ...] = ("agent:builder",)
    # docs/reference.md §5 rows 6-8 and §7; older config.applied lines lack these
    # and decode with these defaults.
    reopen_window_seconds: int = 1209600
    mute_label: str = "obsv:mute"
    close_on_resolve: bool = False
    resolve_in_sentry: bool = False
    # docs/reference.md §8. ``dry_run`` is recorded because row 3 (``unrouted``) depends
    # on it; lines without it come from before routing, when a policy without a repo
    # could only be a dry run's, so that is the default.
    routes: tuple[Route, ...] = ()
    dry_run: bool = True
    # docs/reference.md §5, the storm digest's labels; never the agent label.
    storm_labels: tuple[str, ...] = ("obsv:storm",)


@dataclass(frozen=True, slots=True)
class AlertReceived:
    """A verified ``event_alert`` delivery, with its exact body; a redelivery of a body
    already in the log carries only its sha256 (``raw`` None, docs/reference.md §4)."""

    delivery: Delivery
    alert: Alert
    raw: str | None
    raw_sha256: str | None = None


@dataclass(frozen=True, slots=True)
class HookReceived:
    """A verified delivery of any other resource; it opens no issue."""

    delivery: Delivery
    action: str | None
    raw: str


@dataclass(frozen=True, slots=True)
class LinkedIssue:
    """The GitHub issue an alert is linked to: the alert that opened it, and its number."""

    alert_seq: int
    number: int | None


@dataclass(frozen=True, slots=True)
class Suppressed:
    """Alerts held back by cooldown since the last notification on a linked issue."""

    count: int
    first_at: datetime | None
    last_at: datetime | None


@dataclass(frozen=True, slots=True)
class AlertDecided:
    """What the consumer decided for the alert at ``alert_seq``, and why."""

    alert_seq: int
    sentry_issue_id: str
    fingerprint_key: str
    action: Action
    reason: Reason
    linked_issue: LinkedIssue | None = None
    suppressed: Suppressed | None = None
    # For a ``regression``: since when the linked issue was closed (rows 7 and 8) or
    # its Sentry issue resolved (row 9), for the comment's "closed since ...".
    since: datetime | None = None
    # For ``silenced``: the silence that muted the alert (docs/reference.md §5 row 2).
    silence_id: str | None = None
    # The repository the decision concerns (docs/reference.md §8): the linked issue's,
    # else the route's, else the default; None in a dry run without any, and on older lines.
    repo: str | None = None


@dataclass(frozen=True, slots=True)
class ConfigApplied:
    """The service started with a policy different from the last one recorded."""

    policy: Policy


@dataclass(frozen=True, slots=True)
class IssueOpened:
    """The sink opened (or found, or rendered) the issue for an ``open`` decision."""

    alert_seq: int
    sentry_issue_id: str
    repo: str | None
    number: int | None
    url: str
    dry_run: bool


@dataclass(frozen=True, slots=True)
class CommentPosted:
    """The sink posted the comment for a ``comment`` decision."""

    alert_seq: int
    sentry_issue_id: str
    repo: str | None
    number: int | None
    comment_id: int | None
    url: str
    dry_run: bool


@dataclass(frozen=True, slots=True)
class IssueFailed:
    """An attempt to carry out a decision failed; ``retryable`` says whether it will be
    retried. ``alert_seq`` is the seq of the record decided (for a sync decision, its cause)."""

    alert_seq: int
    attempt: int
    status: int | None
    error: str
    retryable: bool
    next_attempt_at: datetime | None


@dataclass(frozen=True, slots=True)
class SentryIssueChanged:
    """A verified Sentry ``issue`` delivery: a Sentry issue was resolved, unresolved,
    ignored, assigned or created (docs/reference.md §7)."""

    delivery: Delivery
    action: str
    sentry_issue_id: str
    status: str | None
    substatus: str | None
    resolution_type: str | None
    raw: str
    # ``statusDetails.inRelease`` when Sentry names the release of the fix.
    release: str | None = None


@dataclass(frozen=True, slots=True)
class GitHubIssueObserved:
    """The state of an issue obsv opened, as a GitHub webhook or a poll reported it."""

    repo: str
    number: int
    sentry_issue_id: str  # from obsv's marker in the issue body
    action: str  # closed, reopened, labeled, unlabeled, deleted, transferred, ... or observed
    state: IssueState
    state_reason: str | None  # completed, not_planned, duplicate, reopened
    closed_at: datetime | None  # GitHub's
    updated_at: datetime  # GitHub's: orders reports, which webhooks may deliver out of order
    labels: tuple[str, ...]
    source: ObservedBy
    delivery_id: str | None  # X-GitHub-Delivery; None for a poll
    raw: str | None  # the webhook body; None for a poll


@dataclass(frozen=True, slots=True)
class IssueReopened:
    """The sink reopened the issue of a ``reopen`` decision (its comment comes next)."""

    alert_seq: int
    repo: str | None
    number: int | None
    dry_run: bool


@dataclass(frozen=True, slots=True)
class IssueClosed:
    """The sink commented on and closed the issue of a ``close`` sync decision;
    ``alert_seq`` is the seq of the record that decision was taken on."""

    alert_seq: int
    repo: str | None
    number: int | None
    dry_run: bool


@dataclass(frozen=True, slots=True)
class SentryResolved:
    """Sentry accepted obsv's request to resolve an issue (a ``resolve_sentry`` decision)."""

    cause_seq: int
    sentry_issue_id: str


@dataclass(frozen=True, slots=True)
class SyncDecided:
    """What the consumer decided on the ``sentry.issue`` or ``github.issue`` at ``cause_seq``."""

    cause_seq: int
    sentry_issue_id: str
    action: SyncAction
    reason: SyncReason


@dataclass(frozen=True, slots=True)
class StormIssue:
    """One Sentry issue a storm digest lists: what a human needs to triage it from the
    digest (docs/reference.md §5), as the suppressed alert said it."""

    sentry_issue_id: str
    title: str | None
    level: str | None
    web_url: str | None


@dataclass(frozen=True, slots=True)
class StormDecided:
    """The storm digest of ``repo`` (docs/reference.md §5): ``open`` it, or ``comment`` on
    it, listing ``issues``. Derived while folding the ``storm_budget`` suppression at
    ``alert_seq``; its posts name this record's own seq as their ``alert_seq``."""

    alert_seq: int
    action: StormAction
    repo: str | None
    window_start: datetime
    issues: tuple[StormIssue, ...]

    @property
    def sentry_issue_ids(self) -> tuple[str, ...]:
        """The Sentry issue ids listed, in order."""
        return tuple(issue.sentry_issue_id for issue in self.issues)


@dataclass(frozen=True, slots=True)
class LeaderElected:
    """A replica took the lead on a shared PostgreSQL log (docs/reference.md §12): it
    bumped the head's epoch to ``epoch`` in the transaction that wrote this record, and
    every decision or outcome it appends afterwards commits only while the head still
    carries that epoch. Decides nothing."""

    epoch: int
    replica: str


@dataclass(frozen=True, slots=True)
class LogCheckpoint:
    """The log's head when this record was written: the last ``seq`` and the sha256 of
    its line, for an operator to keep elsewhere (docs/reference.md §11). Decides nothing."""

    head_seq: int
    head_sha256: str


@dataclass(frozen=True, slots=True)
class SilenceAdded:
    """An operator muted the alerts matching ``matchers`` from ``starts_at`` until
    ``ends_at`` (docs/reference.md §9); matchers as the strings they were given in."""

    id: str
    matchers: tuple[str, ...]
    starts_at: datetime
    ends_at: datetime
    comment: str
    created_by: str


@dataclass(frozen=True, slots=True)
class SilenceExpired:
    """An operator ended the silence ``id`` early."""

    id: str
    by: str


Event = (
    AlertReceived
    | HookReceived
    | AlertDecided
    | ConfigApplied
    | IssueOpened
    | CommentPosted
    | IssueFailed
    | SentryIssueChanged
    | GitHubIssueObserved
    | IssueReopened
    | IssueClosed
    | SentryResolved
    | SyncDecided
    | StormDecided
    | LogCheckpoint
    | LeaderElected
    | SilenceAdded
    | SilenceExpired
)


@dataclass(frozen=True, slots=True)
class Envelope:
    """One record of the log: its position, its time, and what happened."""

    seq: int
    at: datetime
    event: Event
    # The sha256 of the line before this one (docs/reference.md §11), as read from the
    # log: None for a record not read back (the writer puts it in the line on its own
    # thread) and for the lines of an older log. A property of the line, not of the
    # record: two envelopes with the same seq, time and event are the same record.
    prev: str | None = field(default=None, compare=False)
