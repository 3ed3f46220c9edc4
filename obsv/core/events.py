"""The facts obsv records: one frozen msgspec struct per log record type.

A record is an ``Envelope``: the ``seq`` and ``at`` the log writer gave it, and an
event saying what happened, in the past tense. Events are created without ``seq``
and ``at`` because only the writer knows them (it assigns both under group commit).

Each struct is also the record's JSON schema (obsv/core/codec.py): its fields in the
order the line holds them, its ``TYPE`` the line's ``type``, and a field with a default
is written only when it differs from it (``omit_defaults``), so older lines, which lack
it, re-encode byte for byte (codec.py rule 5 names the three records that differ).
Structs are frozen (equal by value, hashable) and untracked by the garbage collector
(``gc=False``): a record only holds strings, numbers, times and other records, so it
can never be part of a reference cycle, and a replay of a million of them no longer
pays for the collector walking them over and over. ``Policy`` stays a dataclass: the
codec reads and writes it by hand (older lines lack settings, routes hold their tags
as an object), and settings build it. Copy a record with ``msgspec.structs.replace``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, ClassVar, Literal

from msgspec import Meta, Struct

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
# A time in a record: RFC 3339 with an offset (a naive time is not a record's).
Time = Annotated[datetime, Meta(tz=True)]
# A line's hash (``prev``, a checkpoint's head): docs/reference.md §11.
Sha256 = Annotated[str, Meta(pattern="^[0-9a-f]{64}$")]


class Record(Struct, frozen=True, gc=False, omit_defaults=True):
    """The base of every event: frozen, compared by value, written by the codec."""

    TYPE: ClassVar[str]


class Delivery(Struct, frozen=True, gc=False):
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


class AlertReceived(Record, frozen=True):
    """A verified ``event_alert`` delivery, with its exact body; a redelivery of a body
    already in the log carries only its sha256 (``raw`` None, docs/reference.md §4)."""

    TYPE: ClassVar[str] = "alert.received"

    delivery: Delivery
    alert: Alert
    raw: str | None
    raw_sha256: str | None = None


class HookReceived(Record, frozen=True):
    """A verified delivery of any other resource; it opens no issue."""

    TYPE: ClassVar[str] = "hook.received"

    delivery: Delivery
    action: str | None
    raw: str


class LinkedIssue(Struct, frozen=True, gc=False):
    """The GitHub issue an alert is linked to: the alert that opened it, and its number."""

    alert_seq: int
    number: int | None


class Suppressed(Struct, frozen=True, gc=False):
    """Alerts held back by cooldown since the last notification on a linked issue."""

    count: int
    first_at: Time | None
    last_at: Time | None


class AlertDecided(Record, frozen=True):
    """What the consumer decided for the alert at ``alert_seq``, and why."""

    TYPE: ClassVar[str] = "alert.decided"

    alert_seq: int
    sentry_issue_id: str
    fingerprint_key: str
    action: Action
    reason: Reason
    linked_issue: LinkedIssue | None = None
    suppressed: Suppressed | None = None
    # For a ``regression``: since when the linked issue was closed (rows 7 and 8) or
    # its Sentry issue resolved (row 9), for the comment's "closed since ...".
    since: Time | None = None
    # For ``silenced``: the silence that muted the alert (docs/reference.md §5 row 2).
    silence_id: str | None = None
    # The repository the decision concerns (docs/reference.md §8): the linked issue's,
    # else the route's, else the default; None in a dry run without any, and on older lines.
    repo: str | None = None


class ConfigApplied(Record, frozen=True):
    """The service started with a policy different from the last one recorded."""

    TYPE: ClassVar[str] = "config.applied"

    policy: Policy


class IssueOpened(Record, frozen=True):
    """The sink opened (or found, or rendered) the issue for an ``open`` decision."""

    TYPE: ClassVar[str] = "issue.opened"

    alert_seq: int
    sentry_issue_id: str
    repo: str | None
    number: int | None
    url: str
    dry_run: bool


class CommentPosted(Record, frozen=True):
    """The sink posted the comment for a ``comment`` decision."""

    TYPE: ClassVar[str] = "comment.posted"

    alert_seq: int
    sentry_issue_id: str
    repo: str | None
    number: int | None
    comment_id: int | None
    url: str
    dry_run: bool


class IssueFailed(Record, frozen=True):
    """An attempt to carry out a decision failed; ``retryable`` says whether it will be
    retried. ``alert_seq`` is the seq of the record decided (for a sync decision, its cause)."""

    TYPE: ClassVar[str] = "issue.failed"

    alert_seq: int
    attempt: int
    status: int | None
    error: str
    retryable: bool
    next_attempt_at: Time | None


class SentryIssueChanged(Record, frozen=True):
    """A verified Sentry ``issue`` delivery: a Sentry issue was resolved, unresolved,
    ignored, assigned or created (docs/reference.md §7)."""

    TYPE: ClassVar[str] = "sentry.issue"

    delivery: Delivery
    action: str
    sentry_issue_id: str
    status: str | None
    substatus: str | None
    resolution_type: str | None
    raw: str
    # ``statusDetails.inRelease`` when Sentry names the release of the fix. The line
    # holds it before ``raw``, and always (null too): see codec.py.
    release: str | None = None


class GitHubIssueObserved(Record, frozen=True):
    """The state of an issue obsv opened, as a GitHub webhook or a poll reported it."""

    TYPE: ClassVar[str] = "github.issue"

    repo: str
    number: int
    sentry_issue_id: str  # from obsv's marker in the issue body
    action: str  # closed, reopened, labeled, unlabeled, deleted, transferred, ... or observed
    state: IssueState
    state_reason: str | None  # completed, not_planned, duplicate, reopened
    closed_at: Time | None  # GitHub's
    updated_at: Time  # GitHub's: orders reports, which webhooks may deliver out of order
    labels: tuple[str, ...]
    source: ObservedBy
    delivery_id: str | None  # X-GitHub-Delivery; None for a poll
    raw: str | None  # the webhook body; None for a poll


class IssueReopened(Record, frozen=True):
    """The sink reopened the issue of a ``reopen`` decision (its comment comes next)."""

    TYPE: ClassVar[str] = "issue.reopened"

    alert_seq: int
    repo: str | None
    number: int | None
    dry_run: bool


class IssueClosed(Record, frozen=True):
    """The sink commented on and closed the issue of a ``close`` sync decision;
    ``alert_seq`` is the seq of the record that decision was taken on."""

    TYPE: ClassVar[str] = "issue.closed"

    alert_seq: int
    repo: str | None
    number: int | None
    dry_run: bool


class SentryResolved(Record, frozen=True):
    """Sentry accepted obsv's request to resolve an issue (a ``resolve_sentry`` decision)."""

    TYPE: ClassVar[str] = "sentry.resolved"

    cause_seq: int
    sentry_issue_id: str


class SyncDecided(Record, frozen=True):
    """What the consumer decided on the ``sentry.issue`` or ``github.issue`` at ``cause_seq``."""

    TYPE: ClassVar[str] = "sync.decided"

    cause_seq: int
    sentry_issue_id: str
    action: SyncAction
    reason: SyncReason


class StormIssue(Struct, frozen=True, gc=False):
    """One Sentry issue a storm digest lists: what a human needs to triage it from the
    digest (docs/reference.md §5), as the suppressed alert said it."""

    sentry_issue_id: str
    title: str | None
    level: str | None
    web_url: str | None


class StormDecided(Record, frozen=True):
    """The storm digest of ``repo`` (docs/reference.md §5): ``open`` it, or ``comment`` on
    it, listing ``issues``. Derived while folding the ``storm_budget`` suppression at
    ``alert_seq``; its posts name this record's own seq as their ``alert_seq``."""

    TYPE: ClassVar[str] = "storm.decided"

    alert_seq: int
    action: StormAction
    repo: str | None
    window_start: Time
    issues: tuple[StormIssue, ...]

    @property
    def sentry_issue_ids(self) -> tuple[str, ...]:
        """The Sentry issue ids listed, in order."""
        return tuple(issue.sentry_issue_id for issue in self.issues)


class LeaderElected(Record, frozen=True):
    """A replica took the lead on a shared PostgreSQL log (docs/reference.md §12): it
    bumped the head's epoch to ``epoch`` in the transaction that wrote this record, and
    every decision or outcome it appends afterwards commits only while the head still
    carries that epoch. Decides nothing."""

    TYPE: ClassVar[str] = "leader.elected"

    epoch: int
    replica: str


class LogCheckpoint(Record, frozen=True):
    """The log's head when this record was written: the last ``seq`` and the sha256 of
    its line, for an operator to keep elsewhere (docs/reference.md §11). Decides nothing."""

    TYPE: ClassVar[str] = "log.checkpoint"

    head_seq: int
    head_sha256: Sha256


class SilenceAdded(Record, frozen=True):
    """An operator muted the alerts matching ``matchers`` from ``starts_at`` until
    ``ends_at`` (docs/reference.md §9); matchers as the strings they were given in."""

    TYPE: ClassVar[str] = "silence.added"

    id: str
    matchers: tuple[str, ...]
    starts_at: Time
    ends_at: Time
    comment: str
    created_by: str


class SilenceExpired(Record, frozen=True):
    """An operator ended the silence ``id`` early."""

    TYPE: ClassVar[str] = "silence.expired"

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


class Envelope(Struct, frozen=True, gc=False):
    """One record of the log: its position, its time, and what happened."""

    seq: int
    at: Time
    event: Event
    # The sha256 of the line before this one (docs/reference.md §11), as read from the
    # log: None for a record not read back (the writer puts it in the line on its own
    # thread) and for the lines of an older log. A property of the line, not of the
    # record: two envelopes with the same seq, time and event are the same record, so
    # equality and hashing leave it out.
    prev: str | None = None

    def __eq__(self, other: object) -> bool:
        return (type(other) is Envelope and self.seq == other.seq and self.at == other.at
                and self.event == other.event)

    def __hash__(self) -> int:
        return hash((self.seq, self.at, self.event))
