"""Offline audit of an event log: ``obsv replay`` and ``obsv why``. Never contacts GitHub.

Everything here is derived by folding the log with the same ``apply`` the
service uses, so what the audit says is what the service did (or, with
``--policy current``, what today's settings would do).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from obsv.core.alert import Alert
from obsv.core.codec import CodecError, decode, format_time
from obsv.core.events import (
    AlertDecided,
    AlertReceived,
    CommentPosted,
    Envelope,
    IssueFailed,
    IssueOpened,
    Policy,
)
from obsv.core.policy import State, apply, decide
from obsv.eventlog import iter_lines


@dataclass(slots=True)
class Row:
    """One alert: what arrived, what was decided, and what GitHub (or the outbox) said."""

    seq: int
    at: datetime
    alert: Alert
    action: str | None = None
    reason: str | None = None
    derived_action: str | None = None
    derived_reason: str | None = None
    link_seq: int | None = None
    outcome: str = ""
    history: list[tuple[datetime, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` line of this row."""
        return {
            "seq": self.seq, "at": format_time(self.at),
            "sentry_issue_id": self.alert.sentry_issue_id, "event_id": self.alert.event_id,
            "level": self.alert.level, "environment": self.alert.environment,
            "fingerprint_key": self.alert.fingerprint_key, "title": self.alert.title,
            "action": self.action, "reason": self.reason, "github": self.outcome or None,
            "linked_alert_seq": self.link_seq,
        }


@dataclass(slots=True)
class Finding:
    """Something ``--verify`` found wrong; any finding makes the exit code 1."""

    seq: int | None
    line: int | None
    message: str
    kind: str = "decision"  # or "unreadable", "torn", "gap"

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line is not None else f"seq {self.seq}"
        return f"{where}: {self.message}"


@dataclass(slots=True)
class Audit:
    """The result of one pass over a log."""

    rows: dict[int, Row] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    unrecorded: list[int] = field(default_factory=list)
    state: State = field(default_factory=State)
    records: int = 0
    # The first line that is not a record: the pass stopped there, so nothing after it
    # was read and no answer about the log is complete.
    unreadable: Finding | None = None
    # An unterminated last line: a crash, or a write still in progress on a live log.
    torn: Finding | None = None

    def of_kind(self, *kinds: str) -> list[Finding]:
        """The findings of the given kinds, in log order."""
        return [f for f in self.findings if f.kind in kinds]


def audit(path: Path, policy_override: Policy | None = None,
          issue: str | None = None) -> Audit:
    """Fold ``path`` once: rows per alert, integrity and decision findings."""
    result = Audit(state=State(policy_override=policy_override))
    expected_seq = 1
    for line_no, (end, line) in enumerate(iter_lines(path), 1):
        if end < 0:
            result.torn = Finding(None, line_no, f"torn last line ({len(line)} bytes, "
                                  "no newline): set aside on the next start", "torn")
            result.findings.append(result.torn)
            break
        try:
            record = orjson.loads(line)
            if not isinstance(record, dict):
                raise CodecError("not a JSON object")
            envelope = decode(record)
        except (orjson.JSONDecodeError, CodecError) as exc:
            result.unreadable = Finding(None, line_no, f"not a valid record ({exc})",
                                        "unreadable")
            result.findings.append(result.unreadable)
            break
        if envelope.seq != expected_seq:
            result.findings.append(Finding(envelope.seq, line_no,
                                           f"seq {envelope.seq} where {expected_seq} was due",
                                           "gap"))
        expected_seq = envelope.seq + 1
        _fold(result, envelope, issue)
    result.unrecorded = sorted(result.state.unrecorded)
    return result


def _fold(result: Audit, envelope: Envelope, issue: str | None) -> None:
    event = envelope.event
    result.records += 1
    if isinstance(event, AlertDecided):
        _check_decision(result, envelope.seq, event)
    derived = apply(result.state, envelope)
    if isinstance(event, AlertReceived) and derived is not None:
        if issue is None or event.alert.sentry_issue_id == issue:
            result.rows[envelope.seq] = Row(
                envelope.seq, envelope.at, event.alert, derived_action=derived.action,
                derived_reason=derived.reason,
                link_seq=derived.linked_issue.alert_seq if derived.linked_issue else None)
        return
    row = result.rows.get(getattr(event, "alert_seq", -1))
    if row is None:
        return
    match event:
        case AlertDecided():
            row.action, row.reason = event.action, event.reason
            row.history.append((envelope.at, f"decided {event.action} ({event.reason})"))
        case IssueOpened():
            row.outcome = f"#{event.number}" if event.number is not None else event.url
            row.history.append((envelope.at, f"issue opened: {row.outcome}"
                                + (" (dry run)" if event.dry_run else "")))
        case CommentPosted():
            row.outcome = event.url
            row.history.append((envelope.at, f"comment posted: {event.url}"
                                + (" (dry run)" if event.dry_run else "")))
        case IssueFailed():
            when = f", next attempt {format_time(event.next_attempt_at)}" \
                if event.next_attempt_at else ""
            kind = "retryable" if event.retryable else "permanent"
            row.outcome = f"failed ({kind})"
            row.history.append((envelope.at, f"attempt {event.attempt} failed ({kind}, "
                                f"status {event.status}): {event.error}{when}"))


def _check_decision(result: Audit, seq: int, recorded: AlertDecided) -> None:
    """Compare a recorded decision with the one derived at its alert's position."""
    derived = result.state.unrecorded.get(recorded.alert_seq)
    if not isinstance(derived, AlertDecided):
        result.findings.append(Finding(seq, None, f"decision for alert {recorded.alert_seq} "
                                       "with no alert.received awaiting a decision before it"))
        return
    if (derived.action, derived.reason, derived.linked_issue, derived.suppressed,
            derived.since) != (recorded.action, recorded.reason, recorded.linked_issue,
                               recorded.suppressed, recorded.since):
        result.findings.append(Finding(seq, None, (
            f"alert {recorded.alert_seq}: recorded {recorded.action} ({recorded.reason}), "
            f"derived {derived.action} ({derived.reason})"
            + ("" if derived.linked_issue == recorded.linked_issue else
               f"; linked issue recorded {recorded.linked_issue}, derived {derived.linked_issue}")
            + ("" if derived.suppressed == recorded.suppressed else
               f"; suppressed recorded {recorded.suppressed}, derived {derived.suppressed}"))))


def next_alert_now(state: State, last: Alert, now: datetime) -> tuple[str, str, str]:
    """What the service would decide for another alert of this issue at ``now``."""
    probe = Alert(last.sentry_issue_id, "obsv-why-probe", last.level, last.fingerprint_key,
                  last.project, last.environment, last.title, last.culprit, last.web_url)
    decision = decide(state, probe, now, state.last_seq + 1, state.effective_policy)
    detail = ""
    link = state.linked(probe)
    if decision.reason == "cooldown" and link is not None:
        until = link.last_notified_at.timestamp() + state.effective_policy.cooldown_seconds
        detail = f"until {format_time(datetime.fromtimestamp(until, now.tzinfo))}"
    elif link is not None:
        detail = f"linked issue {'#' + str(link.number) if link.number else link.url or 'pending'}"
    return decision.action, decision.reason, detail
