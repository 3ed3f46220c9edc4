"""Where decisions go: the sink interface, and the dry-run sink that writes files.

A sink turns one recorded intent into one outcome record (``issue.opened``,
``comment.posted`` or ``issue.failed``); the consumer appends it. A sink never
writes the log and never decides anything.

Rules shared by every sink:
1. What can never succeed is a permanent failure (``retryable: false``), recorded
   once, not retried forever: a payload the renderer cannot handle (rendering is
   deterministic, so it would raise again), an outbox write refused for a reason
   that cannot heal (``PERMANENT_ERRNOS``).
2. No wait is longer than ``MAX_RETRY_SECONDS`` (docs/reference.md §6: doubling up
   to an hour, and never more than an hour away, whatever a server says).
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

import orjson

from obsv.core.events import AlertDecided, AlertReceived, CommentPosted, IssueFailed, IssueOpened
from obsv.core.render import IssueDraft, comment_marker_for, render_comment, render_issue
from obsv.errors import StartupError
from obsv.files import write_private

MAX_RETRY_SECONDS = 3600
# Outbox write errors that the same write will meet again: the name is too long for
# the filesystem, or a directory sits where the file goes. ENOSPC, EIO, EACCES and
# the like can heal (space freed, disk replaced, permissions fixed) and stay retryable.
PERMANENT_ERRNOS = frozenset({errno.ENAMETOOLONG, errno.EISDIR, errno.EINVAL})
_PLAIN_ID = re.compile(r"[0-9]{1,64}")
_SLUG_DROPPED = re.compile(r"[^a-z0-9]+")


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


def render_job(job: OpenJob) -> IssueDraft | IssueFailed:
    """The issue to post, or the permanent failure of a payload that cannot be rendered
    (rule 1: the renderer is total by design; this is the net below it)."""
    try:
        return render_issue(job.received.alert, body_of(job.received), job.labels)
    except Exception as exc:
        return unrenderable(job.alert_seq, job.attempts, exc)


def render_comment_job(job: CommentJob) -> str | IssueFailed:
    """The comment to post, or the permanent failure of one that cannot be rendered."""
    try:
        return render_comment(job.received.alert, job.decision)
    except Exception as exc:
        return unrenderable(job.alert_seq, job.attempts, exc)


def unrenderable(alert_seq: int, attempts: int, exc: Exception) -> IssueFailed:
    """Rule 1 for a render that raised: the same payload would raise again."""
    return IssueFailed(alert_seq, attempts + 1, None,
                       f"cannot render this alert: {type(exc).__name__}", False, None)


def outbox_name(sentry_issue_id: str) -> str:
    """The outbox file of a Sentry issue: one file per id, safe on any filesystem.

    A plain number (what Sentry's issue ids are) keeps ``<id>.md``. Any other id gets
    ``<slug>-<hash>.md``: a lowercase ASCII slug for people (at most 40 characters),
    and 32 hex digits of the id's SHA-256 that keep two ids apart. Such a name is at
    most 76 bytes, lowercase (no clash on a case-insensitive disk), never starts with
    a dot or a dash, and holds no separator; it always has a ``-``, so it is never a
    number's name.
    """
    if _PLAIN_ID.fullmatch(sentry_issue_id):
        return f"{sentry_issue_id}.md"
    digest = hashlib.sha256(sentry_issue_id.encode("utf-8", "surrogatepass")).hexdigest()
    slug = _SLUG_DROPPED.sub("_", sentry_issue_id.lower()).strip("_")[:40].strip("_")
    return f"{slug or 'id'}-{digest[:32]}.md"


class DryRunSink:
    """Renders each issue to ``<outbox>/<outbox_name(id)>`` (``<id>.md`` for Sentry's
    numeric ids); comments are appended to the same file."""

    dry_run = True

    def __init__(self, outbox: Path, repo: str | None, clock: Callable[[], datetime]) -> None:
        self.outbox = outbox
        self.repo = repo
        self._clock = clock

    async def start(self) -> None:
        """Create the outbox and prove it writable, so that a bad ``OBSV_OUTBOX_DIR``
        stops ``obsv serve`` before it listens instead of failing every alert."""
        probe = self.outbox / f".obsv-write-check-{os.getpid()}"
        try:
            self.outbox.mkdir(parents=True, exist_ok=True)
            write_private(probe, b"", how="replace")
            probe.unlink()
        except OSError as exc:
            why = "a file is in the way" if isinstance(exc, FileExistsError) else exc.strerror
            raise StartupError(
                f"outbox directory {self.outbox} is not writable ({why or exc}); "
                "set OBSV_OUTBOX_DIR to a directory obsv can create and write") from None

    async def close(self) -> None:
        """Nothing to release."""

    async def open_issue(self, job: OpenJob) -> IssueOpened | IssueFailed:
        """Write the rendered issue; rewriting it on a retry is harmless."""
        alert = job.received.alert
        draft = render_job(job)
        if isinstance(draft, IssueFailed):
            return draft
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
        text = render_comment_job(job)
        if isinstance(text, IssueFailed):
            return text
        try:
            already = path.exists() and comment_marker_for(job.alert_seq) in path.read_text("utf-8")
            if not already:
                write_private(path, f"\n---\n\n## Comment\n\n{text}".encode(), how="append")
        except OSError as exc:
            return self._failure(job.alert_seq, job.attempts, exc)
        return CommentPosted(job.alert_seq, alert.sentry_issue_id, self.repo, job.issue_number,
                             None, str(path), True)

    def _failure(self, alert_seq: int, attempts: int, exc: OSError) -> IssueFailed:
        error = f"outbox write failed: {exc.strerror or exc}"
        if exc.errno in PERMANENT_ERRNOS:  # rule 1
            return IssueFailed(alert_seq, attempts + 1, None, error, False, None)
        return IssueFailed(alert_seq, attempts + 1, None, error, True,
                           retry_time(self._clock(), attempts + 1))


def retry_time(now: datetime, rounds_failed: int) -> datetime:
    """When the next round of attempts starts: 30 s, doubling, at most an hour."""
    seconds = 30 * 2 ** min(7, max(0, rounds_failed - 1))
    return now + timedelta(seconds=min(MAX_RETRY_SECONDS, seconds))
