"""Building issue-lifecycle records for core tests: what GitHub and Sentry report back,
and the sink's outcomes, folded like the service (sync decisions recorded right after)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from obsv.core.events import (
    CommentPosted,
    Delivery,
    GitHubIssueObserved,
    IssueClosed,
    IssueReopened,
    SentryIssueChanged,
    SentryResolved,
    SyncDecided,
)

from .records import Log

REPO = "o/r"


@dataclass
class LifeLog(Log):
    """``Log`` plus the records of docs/reference.md §7."""

    def github(self, number: int, action: str = "closed", *, state: str | None = None,
               reason: str | None = None, closed_at: datetime | None = None,
               labels: tuple[str, ...] = ("agent:builder",), issue: str = "1",
               delivery: str | None = None, source: str = "webhook",
               updated_at: datetime | None = None, after: timedelta = timedelta(0),
               record: bool = True, sender: str | None = None) -> SyncDecided | None:
        """GitHub reports issue ``number`` (as of ``updated_at``, by default now); returns
        the sync decision it got, if any. ``sender`` is the login GitHub's webhook names
        as the one who acted."""
        self.now += after
        if state is None:
            state = "closed" if action == "closed" else "open"
        if state == "closed" and closed_at is None:
            closed_at = self.now
        if action == "closed" and reason is None:
            reason = "completed"
        raw = json.dumps({"action": action, "sender": {"login": sender}} if sender else {})
        event = GitHubIssueObserved(REPO, number, issue, action, state,  # type: ignore[arg-type]
                                    reason, closed_at, updated_at or self.now, labels,
                                    source,  # type: ignore[arg-type]
                                    delivery, raw if source == "webhook" else None)
        return self._sync_after(event, record)

    def sentry(self, action: str, *, issue: str = "1", status: str | None = None,
               resolution: str | None = None, after: timedelta = timedelta(0),
               record: bool = True) -> SyncDecided | None:
        """Sentry reports a change of its issue; returns the sync decision it got, if any."""
        self.now += after
        if status is None:
            status = {"resolved": "resolved", "ignored": "ignored"}.get(action, "unresolved")
        event = SentryIssueChanged(Delivery("r", "issue", None, "s"), action, issue, status,
                                   None, resolution, "{}")
        return self._sync_after(event, record)

    def report(self, event: GitHubIssueObserved | SentryIssueChanged,
               after: timedelta = timedelta(0), record: bool = True) -> SyncDecided | None:
        """Fold a report built elsewhere (from a sample webhook, say) ``after`` the
        previous record; returns the sync decision it got, recorded unless told not to."""
        self.now += after
        return self._sync_after(event, record)

    def _sync_after(self, event: GitHubIssueObserved | SentryIssueChanged,
                    record: bool) -> SyncDecided | None:
        self.add(event)
        derived = self.state.unrecorded.get(len(self.records))
        if derived is None:
            return None
        assert isinstance(derived, SyncDecided)
        if record:
            self.add(derived)
        return derived

    def reopened(self, alert_seq: int, number: int, repo: str = REPO) -> None:
        self.add(IssueReopened(alert_seq, repo, number, False))

    def commented(self, alert_seq: int, number: int, repo: str = REPO, issue: str = "1",
                  url: str = "u") -> None:
        self.add(CommentPosted(alert_seq, issue, repo, number, 1, url, False))

    def closed(self, cause_seq: int, number: int, repo: str = REPO) -> None:
        self.add(IssueClosed(cause_seq, repo, number, False))

    def resolved(self, cause_seq: int, issue: str = "1") -> None:
        self.add(SentryResolved(cause_seq, issue))
