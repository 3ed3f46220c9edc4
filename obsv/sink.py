"""Where decisions go: the sink interface, and the dry-run sink that writes files.

A sink turns one recorded intent into one outcome record (``issue.opened``,
``comment.posted``, ``issue.reopened``, ``issue.closed`` or ``issue.failed``; the
Sentry sink in sentryapi.py: ``sentry.resolved``); the consumer appends it. A sink
never writes the log and never decides anything.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

import orjson

from obsv.core.events import (
    AlertDecided,
    AlertReceived,
    CommentPosted,
    IssueClosed,
    IssueFailed,
    IssueOpened,
    IssueReopened,
    SentryIssueChanged,
    StormDecided,
    SyncDecided,
)
from obsv.core.render import (
    IssueDraft,
    close_marker_for,
    comment_marker_for,
    render_close_comment,
    render_reopen_note,
    render_storm_comment,
    render_storm_digest,
    reopen_marker_for,
    storm_marker_for,
)
from obsv.errors import StartupError
from obsv.files import write_private
from obsv.settings import Settings
from obsv.templates import BUILTIN, Renderer, load_renderer

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
    # The decision; a ``regression`` open (row 8) names the issue it replaces.
    decision: AlertDecided | None = None
    # The first alert of this Sentry issue in the log (the fold keeps it), for the body.
    first_seen: datetime | None = None
    # The repository of the decision (its route's, else the default; docs/reference.md §8).
    repo: str | None = None


@dataclass(frozen=True, slots=True)
class CommentJob:
    """Comment on the linked issue for the ``comment`` decision of ``alert_seq``, or the
    regression comment that follows a ``reopen`` (the same decision, after its
    ``issue.reopened``)."""

    alert_seq: int
    at: datetime
    received: AlertReceived
    decision: AlertDecided
    issue_number: int | None
    attempts: int
    maybe_sent: bool
    first_seen: datetime | None = None  # as in OpenJob, for comment templates
    repo: str | None = None  # the linked issue's repository


@dataclass(frozen=True, slots=True)
class ReopenJob:
    """Reopen the linked issue for the ``reopen`` decision of ``alert_seq`` (row 7): one
    PATCH, state and labels back. Its regression comment is a ``CommentJob`` next."""

    alert_seq: int
    decision: AlertDecided
    issue_number: int | None
    labels: tuple[str, ...]  # the configured labels, put back beside the issue's own
    mute_label: str  # never put back
    attempts: int
    maybe_sent: bool
    repo: str | None = None  # the linked issue's repository


@dataclass(frozen=True, slots=True)
class CloseJob:
    """Comment why, then close the linked issue as completed, for the ``close`` sync
    decision taken on the ``sentry.issue`` record at ``cause_seq``."""

    cause_seq: int
    at: datetime  # the cause's record time: reconciliation looks no further back
    cause: SentryIssueChanged
    decision: SyncDecided
    issue_number: int | None
    attempts: int
    maybe_sent: bool
    repo: str | None = None  # the linked issue's repository


@dataclass(frozen=True, slots=True)
class ResolveJob:
    """Resolve the Sentry issue for the ``resolve_sentry`` sync decision taken on the
    ``github.issue`` record at ``cause_seq``. The organization is the linked alert's
    (from its ``web_url``), else read from its API ``url``."""

    cause_seq: int
    decision: SyncDecided
    org: str | None
    attempts: int
    maybe_sent: bool  # unused: resolving is idempotent (sentryapi.py rule 2)
    api_url: str | None = None


@dataclass(frozen=True, slots=True)
class DigestJob:
    """Open the storm digest, or comment on it, for the ``storm.decided`` record at
    ``storm_seq`` (docs/reference.md §5); its outcome names that seq."""

    storm_seq: int
    at: datetime  # the record's time: reconciliation looks no further back
    decision: StormDecided
    digest_key: int  # the digest's link: the seq of the alert that opened it
    labels: tuple[str, ...]  # OBSV_STORM_LABELS
    issue_number: int | None  # the digest's, for a comment
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
        """Post the recurrence or regression comment, or say why not."""

    async def reopen_issue(self, job: ReopenJob) -> IssueReopened | IssueFailed:
        """Reopen the issue with its labels back, or say why not."""

    async def close_issue(self, job: CloseJob) -> IssueClosed | IssueFailed:
        """Comment why and close the issue as completed, or say why not."""

    async def post_digest(self, job: DigestJob) -> IssueOpened | CommentPosted | IssueFailed:
        """Open the storm digest or comment on it, or say why not."""


def body_of(received: AlertReceived) -> dict[str, object]:
    """The parsed webhook body of a recorded alert (validated when it was received)."""
    if received.raw is None:
        # A redelivery recorded by hash only (obsv/ingress.py) is always decided
        # duplicate, so nothing renders it; were one rendered, the alert fields suffice.
        return {}
    body = orjson.loads(received.raw)
    assert isinstance(body, dict)
    return body


def render_job(job: OpenJob, renderer: Renderer = BUILTIN) -> IssueDraft | IssueFailed:
    """The issue to post, or the permanent failure of a payload that cannot be rendered
    (rule 1: the renderer is total by design; this is the net below it)."""
    try:
        return renderer.issue(job.received.alert, body_of(job.received), job.labels,
                              job.first_seen, job.decision)
    except Exception as exc:
        return unrenderable(job.alert_seq, job.attempts, exc)


def render_comment_job(job: CommentJob, renderer: Renderer = BUILTIN) -> str | IssueFailed:
    """The comment to post, or the permanent failure of one that cannot be rendered."""
    try:
        return renderer.comment(job.received.alert, job.decision, body_of(job.received),
                                job.first_seen)
    except Exception as exc:
        return unrenderable(job.alert_seq, job.attempts, exc)


def render_close_job(job: CloseJob) -> str | IssueFailed:
    """The comment that explains a close, or the permanent failure of one that cannot be
    rendered."""
    try:
        return render_close_comment(job.cause, job.cause_seq)
    except Exception as exc:
        return unrenderable(job.cause_seq, job.attempts, exc)


def reopen_labels(current: Sequence[str], configured: Sequence[str], mute_label: str
                  ) -> tuple[str, ...]:
    """The labels a reopen puts on the issue: the ones it has, then the configured ones
    it lost, in that order, each once; never the mute label (docs/reference.md §5 row 7)."""
    labels = dict.fromkeys(name for name in (*current, *configured) if name != mute_label)
    return tuple(labels)


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
    numeric ids); comments, reopens and closes are appended to the same file as
    ``## Comment``, ``## Reopened`` and ``## Closed`` sections, once per decision."""

    dry_run = True

    def __init__(self, outbox: Path, repo: str | None, clock: Callable[[], datetime],
                 renderer: Renderer = BUILTIN) -> None:
        self.outbox = outbox
        self.repo = repo
        self._clock = clock
        self.renderer = renderer

    @classmethod
    def from_settings(cls, settings: Settings, clock: Callable[[], datetime]) -> DryRunSink:
        """The outbox sink of ``settings``, with its templates loaded and checked."""
        return cls(settings.outbox_dir, settings.github_repo, clock,
                   load_renderer(settings.template_dir, settings.redact_pii))

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
        draft = render_job(job, self.renderer)
        if isinstance(draft, IssueFailed):
            return draft
        path = self.outbox / outbox_name(alert.sentry_issue_id)
        text = outbox_text(draft)
        try:
            write_private(path, text.encode("utf-8"), how="replace")
        except OSError as exc:
            return self._failure(job.alert_seq, job.attempts, exc)
        return IssueOpened(job.alert_seq, alert.sentry_issue_id, job.repo or self.repo, None,
                           str(path), True)

    async def post_comment(self, job: CommentJob) -> CommentPosted | IssueFailed:
        """Append the comment to the issue's file, once per decision."""
        alert = job.received.alert
        path = self.outbox / outbox_name(alert.sentry_issue_id)
        text = render_comment_job(job, self.renderer)
        if isinstance(text, IssueFailed):
            return text
        failed = self._append_once(path, "Comment", text, comment_marker_for(job.alert_seq),
                                   job.alert_seq, job.attempts)
        return failed or CommentPosted(job.alert_seq, alert.sentry_issue_id, job.repo or self.repo,
                                       job.issue_number, None, str(path), True)

    async def reopen_issue(self, job: ReopenJob) -> IssueReopened | IssueFailed:
        """Append what the reopen would do (state, labels) to the issue's file, once."""
        path = self.outbox / outbox_name(job.decision.sentry_issue_id)
        labels = reopen_labels((), job.labels, job.mute_label)
        text = render_reopen_note(job.decision, labels)
        failed = self._append_once(path, "Reopened", text, reopen_marker_for(job.alert_seq),
                                   job.alert_seq, job.attempts)
        return failed or IssueReopened(job.alert_seq, job.repo or self.repo, job.issue_number,
                                       True)

    async def close_issue(self, job: CloseJob) -> IssueClosed | IssueFailed:
        """Append the comment that explains the close to the issue's file, once."""
        path = self.outbox / outbox_name(job.decision.sentry_issue_id)
        text = render_close_job(job)
        if isinstance(text, IssueFailed):
            return text
        failed = self._append_once(path, "Closed", text, close_marker_for(job.cause_seq),
                                   job.cause_seq, job.attempts)
        return failed or IssueClosed(job.cause_seq, job.repo or self.repo, job.issue_number,
                                     True)

    async def post_digest(self, job: DigestJob) -> IssueOpened | CommentPosted | IssueFailed:
        """Write the digest to its own file, ``storm-<digest_key>.md``; append each comment
        to it once."""
        decision = job.decision
        path = self.outbox / f"storm-{job.digest_key}.md"
        if decision.action == "open":
            draft = render_storm_digest(decision, job.labels, job.storm_seq)
            try:
                write_private(path, outbox_text(draft).encode("utf-8"), how="replace")
            except OSError as exc:
                return self._failure(job.storm_seq, job.attempts, exc)
            return IssueOpened(job.storm_seq, "", decision.repo or self.repo, None, str(path),
                               True)
        text = render_storm_comment(decision, job.storm_seq)
        failed = self._append_once(path, "Comment", text, storm_marker_for(job.storm_seq),
                                   job.storm_seq, job.attempts)
        return failed or CommentPosted(job.storm_seq, "", decision.repo or self.repo,
                                       job.issue_number, None, str(path), True)

    def _append_once(self, path: Path, heading: str, text: str, marker: str, seq: int,
                     attempts: int) -> IssueFailed | None:
        """Append a ``## heading`` section unless the file already holds ``marker`` (a
        retry after the write but before its record); None when it is in the file."""
        try:
            if not (path.exists() and marker in path.read_text("utf-8")):
                write_private(path, f"\n---\n\n## {heading}\n\n{text}".encode(),
                              how="append")
        except OSError as exc:
            return self._failure(seq, attempts, exc)
        return None

    def _failure(self, alert_seq: int, attempts: int, exc: OSError) -> IssueFailed:
        error = f"outbox write failed: {exc.strerror or exc}"
        if exc.errno in PERMANENT_ERRNOS:  # rule 1
            return IssueFailed(alert_seq, attempts + 1, None, error, False, None)
        return IssueFailed(alert_seq, attempts + 1, None, error, True,
                           retry_time(self._clock(), attempts + 1))


def outbox_text(draft: IssueDraft) -> str:
    """An issue as the dry-run outbox (and ``obsv render``) writes it."""
    return f"# {draft.title}\n\nLabels: {', '.join(draft.labels)}\n\n{draft.body}"


def retry_time(now: datetime, rounds_failed: int) -> datetime:
    """When the next round of attempts starts: 30 s, doubling, at most an hour."""
    seconds = 30 * 2 ** min(7, max(0, rounds_failed - 1))
    return now + timedelta(seconds=min(MAX_RETRY_SECONDS, seconds))
