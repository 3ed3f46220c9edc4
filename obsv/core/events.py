"""The facts obsv records: one frozen dataclass per log record type.

A record is an ``Envelope``: the ``seq`` and ``at`` the log writer gave it, and an
event saying what happened, in the past tense. Events are created without ``seq``
and ``at`` because only the writer knows them (it assigns both under group commit).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from obsv.core.alert import Alert

Action = Literal["open", "comment", "suppress"]
Reason = Literal[
    "duplicate",
    "below_min_level",
    "environment_filtered",
    "cooldown",
    "recurrence",
    "storm_budget",
    "new_issue",
]


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
    """An attempt to post a decision failed; ``retryable`` says whether it will be retried."""

    alert_seq: int
    attempt: int
    status: int | None
    error: str
    retryable: bool
    next_attempt_at: datetime | None


Event = (
    AlertReceived
    | HookReceived
    | AlertDecided
    | ConfigApplied
    | IssueOpened
    | CommentPosted
    | IssueFailed
)


@dataclass(frozen=True, slots=True)
class Envelope:
    """One record of the log: its position, its time, and what happened."""

    seq: int
    at: datetime
    event: Event
