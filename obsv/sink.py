"""Where decisions go: the sink interface, and the dry-run sink that writes files.

A sink turns one recorded intent into one outcome record (``issue.opened``,
``comment.posted`` or ``issue.failed``); the consumer appends it. A sink never
writes the log and never decides anything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

import orjson

from obsv.core.events import AlertDecided, AlertReceived, CommentPosted, IssueFailed, IssueOpened
from obsv.core.render import comment_marker_for, render_comment, render_issue
from obsv.files import write_private


@dataclass(frozen=True, slots=True)
class OpenJob:
    """Open the GitHub issue for the ``open`` decision of ``alert_seq``."""

    alert_seq: int
    at: datetime  # the alert's record time: reconciliation looks no further back
    received: AlertReceived
    labels: tuple[str, ...]
    attempts: int
    maybe_sent: bool  # an earlier attempt may have reached GitHub: look before posting


@dataclass(frozen=True, slots=True)
class CommentJob:
    """Comment on the linked issue for the ``comment`` decision of ``alert_seq``."""

    alert_seq: int
    at: datetime
    received: AlertReceived
    decision: AlertDecided
    issue_number: int | None
    attempts: int
    maybe_sent: bool


class Sink(Protocol):
    """One implementation posts to GitHub; the other renders into the outbox."""

    dry_run: bool

    async def start(self) -> None:
        """Acquire what posting needs (an HTTP session); called once before use."""

    async def close(self) -> None:
        """Release it."""

    async def open_issue(self, job: OpenJob) -> IssueOpened | IssueFailed:
        """Open the issue, or say why not."""

    async def post_comment(self, job: CommentJob) -> CommentPosted | IssueFailed:
        """Post the recurrence comment, or say why not."""


def body_of(received: AlertReceived) -> dict[str, object]:
    """The parsed webhook body of a recorded alert (validated when it was received)."""
    if received.raw is None:
        # A redelivery recorded by hash only (obsv/ingress.py) is always decided
        # duplicate, so nothing renders it; were one rendered, the alert fields suffice.
        return {}
    body = orjson.loads(received.raw)
    assert isinstance(body, dict)
    return body


def outbox_name(sentry_issue_id: str) -> str:
    """A file name for a Sentry issue id that cannot escape the outbox."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in sentry_issue_id)
    return (safe.lstrip(".") or "_")[:120] + ".md"


class DryRunSink:
    """Renders each issue to ``<outbox>/<sentry issue id>.md``; comments are appended."""

    dry_run = True

    def __init__(self, outbox: Path, repo: str | None, clock: Callable[[], datetime]) -> None:
        self.outbox = outbox
        self.repo = repo
        self._clock = clock

    async def start(self) -> None:
        """Nothing to acquire: files are opened per write."""

    async def close(self) -> None:
        """Nothing to release."""

    async def open_issue(self, job: OpenJob) -> IssueOpened | IssueFailed:
        """Write the rendered issue; rewriting it on a retry is harmless."""
        alert = job.received.alert
        draft = render_issue(alert, body_of(job.received), job.labels)
        path = self.outbox / outbox_name(alert.sentry_issue_id)
        labels = ", ".join(draft.labels)
        text = f"# {draft.title}\n\nLabels: {labels}\n\n{draft.body}"
        try:
            write_private(path, text.encode("utf-8"), how="replace")
        except OSError as exc:
            return self._failure(job.alert_seq, job.attempts, exc)
        return IssueOpened(job.alert_seq, alert.sentry_issue_id, self.repo, None, str(path), True)

    async def post_comment(self, job: CommentJob) -> CommentPosted | IssueFailed:
        """Append the comment to the issue's file, once per decision."""
        alert = job.received.alert
        path = self.outbox / outbox_name(alert.sentry_issue_id)
        text = render_comment(alert, job.decision)
        try:
            already = path.exists() and comment_marker_for(job.alert_seq) in path.read_text("utf-8")
            if not already:
                write_private(path, f"\n---\n\n## Comment\n\n{text}".encode(), how="append")
        except OSError as exc:
            return self._failure(job.alert_seq, job.attempts, exc)
        return CommentPosted(job.alert_seq, alert.sentry_issue_id, self.repo, job.issue_number,
                             None, str(path), True)

    def _failure(self, alert_seq: int, attempts: int, exc: OSError) -> IssueFailed:
        return IssueFailed(alert_seq, attempts + 1, None,
                           f"outbox write failed: {exc.strerror}", True,
                           retry_time(self._clock(), attempts + 1))


def retry_time(now: datetime, rounds_failed: int) -> datetime:
    """When the next round of attempts starts: 30 s, doubling, at most an hour."""
    return now + timedelta(seconds=min(3600, 30 * 2 ** min(7, max(0, rounds_failed - 1))))
