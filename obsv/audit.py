"""Offline audit of an event log: ``obsv replay`` and ``obsv why``. Never contacts GitHub.

Everything here is derived by folding the log with the same ``apply`` the
service uses, so what the audit says is what the service did (or, with
``--policy current``, what today's settings would do). Decisions are re-derived
where the core derives them (docs/reference.md §5 rule 2, policy.py rules 2 and 11):
an alert's at the alert, a sync decision at its ``sentry.issue`` or ``github.issue``,
and each recorded ``alert.decided`` / ``sync.decided`` is compared with that.

``--verify`` also checks what makes the log tamper-evident (docs/reference.md §11,
``Integrity``): the hash chain line by line, a head kept elsewhere, the checkpoints,
and with the webhook secret every stored body against its recorded signature.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import orjson
from msgspec import UNSET, Struct, UnsetType
from msgspec.structs import replace

from obsv.core.alert import Alert
from obsv.core.codec import (
    GENESIS,
    AlertSummary,
    CodecError,
    decode_line,
    decode_line_without_bodies,
    format_time,
)
from obsv.core.events import (
    AlertDecided,
    AlertReceived,
    CommentPosted,
    Envelope,
    Event,
    GitHubIssueObserved,
    HookReceived,
    IssueClosed,
    IssueFailed,
    IssueOpened,
    IssueReopened,
    LogCheckpoint,
    Policy,
    SentryIssueChanged,
    SentryResolved,
    SilenceAdded,
    SilenceExpired,
    StormDecided,
    SyncDecided,
)
from obsv.core.policy import Link, State, apply, decide, observed_link
from obsv.core.signature import is_valid
from obsv.core.silences import Silence

# The records that carry out a decision, named by the seq of the record decided.
Outcome = IssueOpened | CommentPosted | IssueReopened | IssueClosed | IssueFailed | SentryResolved


@dataclass(frozen=True, slots=True)
class IssueRef:
    """A GitHub issue obsv opened (or rendered to the outbox), as ``issue.opened`` said."""

    repo: str | None
    number: int | None
    url: str

    def __str__(self) -> str:
        return f"#{self.number}" if self.number is not None else self.url


@dataclass(frozen=True, slots=True)
class Provenance:
    """Which records last closed, labelled or resolved a linked issue (and who, when
    GitHub's webhook says): what explains a ``wont_fix`` or a ``regression``."""

    closed: str | None = None
    labels: str | None = None
    resolved: str | None = None


_NOT_KNOWN = Provenance()  # shared: frozen, and most links have no provenance


class Context(Struct, frozen=True, gc=False):
    """A linked issue as the log knew it when a decision was taken on it."""

    link: Link
    policy: Policy
    provenance: Provenance


class Row(Struct, gc=False):
    """One alert: what arrived, what was decided, and what GitHub (or the outbox) said.

    A struct, not a dataclass: a replay makes one per alert, and msgspec builds it in C
    and keeps it out of the collector's walks (it never refers back to anything that
    refers to it)."""

    seq: int
    at: datetime
    alert: Alert | AlertSummary  # a summary: the row of ``obsv replay --json`` (ledger.py)
    derived: AlertDecided
    recorded: AlertDecided | None = None
    context: Context | None = None  # its linked issue before the decision
    policy_repo: str | None = None  # the policy's repo when it was decided
    opened: IssueRef | None = None
    reopened: bool = False
    comment: str | None = None
    failed: str | None = None
    digest_seq: int | None = None  # the storm.decided that listed this storm_budget alert

    @property
    def action(self) -> str | None:
        """The recorded action (None until the decision is recorded)."""
        return self.recorded.action if self.recorded else None

    @property
    def reason(self) -> str | None:
        """The recorded reason (None until the decision is recorded)."""
        return self.recorded.reason if self.recorded else None

    @property
    def decision(self) -> AlertDecided:
        """The decision the service took: the recorded one, else the one derived."""
        return self.recorded or self.derived

    @property
    def link_seq(self) -> int | None:
        """The seq of the alert whose ``open`` made this alert's linked issue."""
        linked = self.decision.linked_issue
        return linked.alert_seq if linked else None


@dataclass(slots=True)
class Entry:
    """One line of a Sentry issue's timeline (``obsv why``): a record in log order, with
    the decision taken on it (an alert's, or a sync decision on a report)."""

    envelope: Envelope
    row: Row | None = None
    derived_sync: SyncDecided | None = None
    recorded_sync: SyncDecided | None = None
    link_seq: int | None = None  # the linked issue a report or sync decision is about


@dataclass(slots=True)
class Finding:
    """Something ``--verify`` found wrong; any finding makes the exit code 1."""

    seq: int | None
    line: int | None
    message: str
    kind: str = "decision"  # or "unreadable", "torn", "gap", "chain", "head", "signature"

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line is not None else f"seq {self.seq}"
        return f"{where}: {self.message}"


@dataclass(slots=True)
class Audit:
    """The result of one pass over a log."""

    rows: dict[int, Row] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    unrecorded: list[int] = field(default_factory=list)  # alerts decided, not recorded
    unrecorded_sync: list[int] = field(default_factory=list)  # causes, likewise
    unrecorded_storm: list[int] = field(default_factory=list)  # alerts, likewise
    state: State = field(default_factory=State)
    records: int = 0
    sync_decisions: int = 0
    storm_decisions: int = 0
    # The first line that is not a record: the pass stopped there, so nothing after it
    # was read and no answer about the log is complete.
    unreadable: Finding | None = None
    # An unterminated last line: a crash, or a write still in progress on a live log.
    torn: Finding | None = None
    # Every issue ever opened, by the seq of the alert that opened it (kept after the
    # link is gone, so a replaced issue can still be named).
    issues: dict[int, IssueRef] = field(default_factory=dict)
    provenance: dict[int, Provenance] = field(default_factory=dict)
    # With an issue id: its timeline, and the links its alerts opened or were linked to.
    timeline: list[Entry] = field(default_factory=list)
    entries: dict[int, Entry] = field(default_factory=dict)
    followed: set[int] = field(default_factory=set)
    # Every silence of the log, as it last stood (kept after the fold forgets it, so a
    # ``silenced`` decision can always say who muted what, why and until when).
    silences: dict[str, Silence] = field(default_factory=dict)
    # Each storm digest post (by its storm.decided seq): the digest issue, or the comment.
    digest_posts: dict[int, str] = field(default_factory=dict)
    digest_seqs: set[int] = field(default_factory=set)

    def of_kind(self, *kinds: str) -> list[Finding]:
        """The findings of the given kinds, in log order."""
        return [f for f in self.findings if f.kind in kinds]

    def issue_name(self, link_seq: int) -> str:
        """How to name the issue opened by the alert at ``link_seq``: ``#N`` or its
        outbox path, or that it is not opened yet."""
        issue = self.issues.get(link_seq)
        return str(issue) if issue else f"the issue of alert seq {link_seq} (not opened yet)"

    def repo(self, row: Row) -> str | None:
        """The repo the decision names (docs/reference.md §8); for a decision recorded
        before routing, the repo of the issue it concerns, else the policy's then."""
        decision = row.recorded or row.derived  # row.decision: a line per alert calls this
        if decision.repo is not None:
            return decision.repo
        if decision.action == "open":
            issue = row.opened
        else:
            linked = decision.linked_issue
            issue = self.issues.get(linked.alert_seq) if linked is not None else None
        return (issue.repo if issue else None) or row.policy_repo

    def github(self, row: Row) -> str | None:
        """What GitHub (or the outbox) has for this alert: the issue opened, the issue
        reopened and its comment, the comment, or the failure."""
        if (row.opened is None and row.comment is None and row.failed is None
                and not row.reopened and row.digest_seq is None):
            return None  # most alerts: suppressed, nothing posted
        parts = []
        if row.opened is not None:
            parts.append(str(row.opened))
        comment = row.comment
        if row.reopened and row.link_seq is not None:
            reopened = self.issue_name(row.link_seq)
            parts.append(f"{reopened} reopened")
            if comment == reopened:  # a dry run appends the comment to the same file
                comment = None
        parts += [p for p in (comment, row.failed) if p]
        if row.digest_seq is not None:
            parts.append(f"(in the storm digest: {self.digest(row.digest_seq)})")
        return ", ".join(parts) or None

    def digest(self, storm_seq: int) -> str:
        """The storm digest post a storm.decided made: its issue or comment, or pending."""
        return self.digest_posts.get(storm_seq, f"storm.decided seq {storm_seq}, not posted yet")

    def replaces(self, row: Row) -> str | None:
        """For a ``regression`` open (docs/reference.md §5 row 8): the old issue it names."""
        decision = row.decision
        if decision.action != "open" or decision.linked_issue is None:
            return None
        return self.issue_name(decision.linked_issue.alert_seq)


@dataclass(frozen=True, slots=True)
class Head:
    """A line an operator kept elsewhere: its seq and the sha256 of its bytes."""

    seq: int
    sha256: str

    def __str__(self) -> str:
        return f"{self.seq}:{self.sha256}"


_SHOWN_SEQS = 10


@dataclass(slots=True)
class Integrity:
    """The tamper checks of ``--verify`` (docs/reference.md §11), fed every whole line.

    The chain starts at the first record with ``prev``; from there each ``prev`` must be
    the hash of the line before (64 zeros on line 1) and a record without one is a break.
    Only the first break is a finding: every link after a removed or reordered line may
    break too, and they are counted instead.
    """

    head: Head | None = None
    secret: str | None = None
    findings: list[Finding] = field(default_factory=list)
    chained: int = 0  # records with prev
    breaks: int = 0
    head_line: int | None = None  # the line holding head.seq
    last_seq: int | None = None
    checkpoint: tuple[int, int, LogCheckpoint] | None = None  # (line, seq, record)
    signatures_checked: int = 0
    signatures_failed: list[int] = field(default_factory=list)  # seqs
    signatures_skipped: int = 0  # raw null with no earlier body of its event id in the log
    _expected: str = GENESIS
    _started: bool = False
    # event id -> (sha256, signature, valid) of the first stored body, for the raw null
    # of a redelivery: the same body signed with the same secret has the same signature.
    _bodies: dict[str, tuple[str, str, bool]] = field(default_factory=dict)

    def feed(self, line_no: int, line: bytes, envelope: Envelope) -> None:
        """Check one whole line (``\\n`` included) and the record it holds."""
        digest = hashlib.sha256(memoryview(line)[:-1]).hexdigest()
        self._link(line_no, envelope)
        if isinstance(envelope.event, LogCheckpoint):
            self._checkpoint(line_no, envelope, envelope.event)
        if self.head is not None and envelope.seq == self.head.seq and self.head_line is None:
            self.head_line = line_no
            if digest != self.head.sha256:
                self.findings.append(Finding(envelope.seq, line_no, (
                    f"--head {self.head}: the line holding seq {envelope.seq} has hash "
                    f"{digest}: the log was rewritten since that head was taken"), "head"))
        if self.secret is not None:
            self._signature(envelope)
        self._expected = digest
        self.last_seq = envelope.seq

    def finish(self) -> None:
        """The findings that need the whole log: a head it does not hold, signatures."""
        if self.head is not None and self.head_line is None:
            ends = (f"the log ends at seq {self.last_seq}" if self.last_seq is not None
                    else "the log is empty")
            self.findings.append(Finding(self.head.seq, None, (
                f"--head {self.head}: {ends} and holds no seq {self.head.seq}: the log was "
                "truncated, or it is not the log that head was taken from"), "head"))
        if self.signatures_failed:
            failed = self.signatures_failed
            shown = ", ".join(map(str, failed[:_SHOWN_SEQS])) + (
                " …" if len(failed) > _SHOWN_SEQS else "")
            self.findings.append(Finding(failed[0], None, (
                f"{len(failed)} of {self.signatures_checked} stored bodies do not match "
                f"their recorded signature (seq {shown}): forged, or checked with the wrong "
                "secret"), "signature"))

    def _link(self, line_no: int, envelope: Envelope) -> None:
        prev = envelope.prev
        if prev is None and not self._started:
            return  # an older log's line, before the chain starts
        self._started = True
        self.chained += prev is not None
        if prev == self._expected:
            return
        self.breaks += 1
        if self.breaks > 1:
            return
        if prev is None:
            why = "has no prev, though the chain started before it: written by something else"
        elif line_no == 1:
            why = "its prev is not 64 zeros, as the first line's is: lines were removed before it"
        else:
            why = (f"its prev is not the hash of line {line_no - 1}: line {line_no - 1} was "
                   f"changed, or lines were removed, inserted or reordered before line {line_no}")
        self.findings.append(Finding(envelope.seq, line_no,
                                     f"chain broken at seq {envelope.seq}: {why}", "chain"))

    def _checkpoint(self, line_no: int, envelope: Envelope, event: LogCheckpoint) -> None:
        self.checkpoint = (line_no, envelope.seq, event)
        if (event.head_seq, event.head_sha256) != (self.last_seq, self._expected):
            self.findings.append(Finding(envelope.seq, line_no, (
                f"log.checkpoint names head {event.head_seq}:{event.head_sha256}, but the line "
                f"before it is seq {self.last_seq} with hash {self._expected}"), "chain"))

    def _signature(self, envelope: Envelope) -> None:
        event, secret = envelope.event, self.secret
        assert secret is not None
        if not isinstance(event, AlertReceived | HookReceived | SentryIssueChanged):
            return  # github.issue bodies are GitHub's, signed with another secret, not kept
        signature = event.delivery.signature
        if event.raw is None:
            assert isinstance(event, AlertReceived)
            first = self._bodies.get(event.alert.event_id)
            if first is None:
                self.signatures_skipped += 1
                return
            self.signatures_checked += 1
            if first != (event.raw_sha256, signature, True):
                self.signatures_failed.append(envelope.seq)
            return
        body = event.raw.encode("utf-8")  # the exact bytes: ingress stored them as UTF-8
        self.signatures_checked += 1
        valid = is_valid(secret, body, signature)
        if not valid:
            self.signatures_failed.append(envelope.seq)
        if isinstance(event, AlertReceived):
            self._bodies.setdefault(event.alert.event_id,
                                    (hashlib.sha256(body).hexdigest(), signature, valid))


def audit(path: Path | Iterable[tuple[int, bytes]], policy_override: Policy | None = None,
          issue: str | None = None, integrity: Integrity | None = None) -> Audit:
    """Fold ``path`` once: rows per alert, integrity and decision findings, and with
    ``issue`` the timeline of that Sentry issue; with ``integrity``, its checks too.
    ``path`` may instead be the lines themselves, as ``iter_lines`` gives them
    (``(end offset, line)``, the ``\n`` kept)."""
    result = Audit(state=State(policy_override=policy_override))
    _read(path, result, issue, integrity)
    if integrity is not None:
        integrity.finish()
        result.findings.extend(integrity.findings)
    pending = result.state.unrecorded
    result.unrecorded = sorted(s for s, d in pending.items() if isinstance(d, AlertDecided))
    result.unrecorded_sync = sorted(s for s, d in pending.items() if isinstance(d, SyncDecided))
    result.unrecorded_storm = sorted(result.state.storm_unrecorded)
    return result


# The size of each read of the log (the default 8 KiB means a read per line or two).
READ_CHUNK = 1 << 20


def _read(path: Path | Iterable[tuple[int, bytes]], result: Audit, issue: str | None,
          integrity: Integrity | None) -> None:
    """Decode and fold every whole line, up to the first that is not a record.

    A file is read here rather than through obsv.eventlog, which would bring the
    service's asyncio machinery into every ``obsv replay`` (issue 12)."""
    if isinstance(path, Path):
        with open(path, "rb", buffering=READ_CHUNK) as lines:
            _fold_lines(lines, result, issue, integrity)
    else:
        _fold_lines((line for _, line in path), result, issue, integrity)


def _fold_lines(lines: Iterable[bytes], result: Audit, issue: str | None,
                integrity: Integrity | None) -> None:
    """Fold lines (each with its ``\\n``; a last one without is torn). Bodies are only
    decoded when a secret is there to re-check them against their signatures."""
    bodies = integrity is not None and integrity.secret is not None
    decode = decode_line if bodies else decode_line_without_bodies
    expected_seq = 1
    for line_no, line in enumerate(lines, 1):
        if line[-1:] != b"\n":
            result.torn = Finding(None, line_no, f"torn last line ({len(line)} bytes, "
                                  "no newline): set aside on the next start", "torn")
            result.findings.append(result.torn)
            return
        try:
            envelope = decode(line)
        except CodecError as exc:
            from obsv.eventlog import bounded_reason  # only for this one message
            result.unreadable = Finding(None, line_no,
                                        f"not a valid record ({bounded_reason(str(exc))})",
                                        "unreadable")
            result.findings.append(result.unreadable)
            return
        if envelope.seq != expected_seq:
            result.findings.append(Finding(envelope.seq, line_no,
                                           f"seq {envelope.seq} where {expected_seq} "
                                           "was due", "gap"))
        expected_seq = envelope.seq + 1
        if integrity is not None:
            integrity.feed(line_no, line, envelope)
        _fold(result, envelope, issue)


def _fold(result: Audit, envelope: Envelope, issue: str | None) -> None:
    event, seq, state = envelope.event, envelope.seq, result.state
    result.records += 1
    # The two records of nearly every alert take a short way: the general one below
    # would do the same for them, through checks that cannot apply.
    if isinstance(event, AlertReceived) and issue is None:
        _fold_received(result, envelope, event)
        return
    if isinstance(event, AlertDecided):
        _check_decision(result, seq, event)
        apply(state, envelope)
        if (decided := result.rows.get(event.alert_seq)) is not None:
            decided.recorded = event
        return
    if isinstance(event, SyncDecided):
        result.sync_decisions += 1
        _check_sync(result, seq, event)
    elif isinstance(event, StormDecided):
        result.storm_decisions += 1
        _check_storm(result, seq, event)
        _listed_in_digest(result, seq, event)
    link_seq = _concerned_link(state, event)
    before = state.links.get(link_seq) if link_seq is not None else None
    context = _context(result, event.alert) if isinstance(event, AlertReceived) else None
    policy_repo = state.effective_policy.repo
    derived = apply(state, envelope)
    if isinstance(event, SilenceAdded | SilenceExpired) and event.id in state.silences:
        result.silences[event.id] = state.silences[event.id]
    if link_seq is not None:
        _note_changes(result, envelope, link_seq, before, state.links.get(link_seq))
    if isinstance(event, AlertReceived) and derived is not None:
        if issue is None or event.alert.sentry_issue_id == issue:
            row = Row(seq, envelope.at, event.alert, derived, context=context,
                      policy_repo=policy_repo)
            result.rows[seq] = row
            if issue is not None:
                _add_entry(result, Entry(envelope, row=row))
                # The issues this Sentry issue's alerts opened or were linked to: what
                # GitHub reports about them belongs in its timeline.
                followed = seq if derived.action == "open" else row.link_seq
                if followed is not None:
                    result.followed.add(followed)
        return
    if isinstance(event, IssueOpened):
        result.issues[event.alert_seq] = IssueRef(event.repo, event.number, event.url)
    if isinstance(event, IssueOpened | CommentPosted) and event.alert_seq in result.digest_seqs:
        result.digest_posts[event.alert_seq] = (
            str(IssueRef(event.repo, event.number, event.url))
            if isinstance(event, IssueOpened) else event.url)
    if isinstance(event, Outcome):
        fill_in_outcome(result, event)
    if issue is not None:
        _follow(result, envelope, issue, link_seq)


def _fold_received(result: Audit, envelope: Envelope, event: AlertReceived) -> None:
    """An alert, outside ``obsv why``: its row, with its linked issue before it."""
    state = result.state
    context = _context(result, event.alert)
    policy_repo = state.effective_policy.repo
    derived = apply(state, envelope)
    if derived is not None:
        result.rows[envelope.seq] = Row(envelope.seq, envelope.at, event.alert, derived,
                                        None, context, policy_repo)


def _listed_in_digest(result: Audit, seq: int, event: StormDecided) -> None:
    """Mark the storm_budget alerts a digest post lists (the latest unlisted one of each
    Sentry issue), so replay and why can say where they went."""
    result.digest_seqs.add(seq)
    listed = {issue.sentry_issue_id for issue in event.issues}
    for row in reversed(list(result.rows.values())):
        if not listed:
            return
        sentry_issue_id = row.alert.sentry_issue_id
        if (sentry_issue_id in listed and row.digest_seq is None
                and row.decision.reason == "storm_budget"):
            row.digest_seq = seq
            listed.discard(sentry_issue_id)


def _context(result: Audit, alert: Alert) -> Context | None:
    """The alert's linked issue as the log knows it now, before the alert is decided."""
    link = result.state.linked(alert)
    if link is None:
        return None
    return Context(link, result.state.effective_policy,
                   result.provenance.get(link.alert_seq, _NOT_KNOWN))


def _concerned_link(state: State, event: Event) -> int | None:
    """The link a report or an outcome is about, before it is folded (a report may
    unlink it)."""
    match event:
        case GitHubIssueObserved():
            link = observed_link(state, event)
            return link.alert_seq if link else None
        case SentryIssueChanged():
            return state.links_by_issue.get(event.sentry_issue_id)
        case IssueClosed() | SentryResolved():
            key = event.alert_seq if isinstance(event, IssueClosed) else event.cause_seq
            intent = state.intents.get(key)
            return intent.link_seq if intent else None
    return None


def _note_changes(result: Audit, envelope: Envelope, link_seq: int, before: Link | None,
                  after: Link | None) -> None:
    """Remember which record closed, labelled or resolved a linked issue, for the
    explanation of later decisions on it."""
    if after is None:
        return
    closed = after.state == "closed" and (before is None or _closure(before) != _closure(after))
    labelled = after.labels is not None and (before is None or before.labels != after.labels)
    resolved = after.resolved_since is not None and (
        before is None or before.resolved_since != after.resolved_since)
    if not (closed or labelled or resolved):
        return
    report = _describe_report(envelope)
    known = result.provenance.get(link_seq, _NOT_KNOWN)
    result.provenance[link_seq] = Provenance(
        closed=report if closed else known.closed, labels=report if labelled else known.labels,
        resolved=report if resolved else known.resolved)


def _closure(link: Link) -> tuple[object, ...]:
    return link.state, link.state_reason, link.closed_at


def _describe_report(envelope: Envelope) -> str:
    event, seq = envelope.event, envelope.seq
    match event:
        case GitHubIssueObserved():
            sender = webhook_sender(event)
            return f"github.issue seq {seq}, {event.source}" + (f", by {sender}" if sender
                                                                 else "")
        case SentryIssueChanged():
            return f"sentry.issue seq {seq}, {event.action}"
        case IssueClosed():
            return f"closed by obsv, issue.closed seq {seq}"
        case SentryResolved():
            return f"resolved by obsv, sentry.resolved seq {seq}"
    return f"seq {seq}"


def webhook_sender(event: GitHubIssueObserved) -> str | None:
    """Who acted on GitHub, per the webhook's ``sender.login`` (a poll does not say)."""
    if event.raw is None:
        return None
    try:
        body = orjson.loads(event.raw)
    except orjson.JSONDecodeError:
        return None
    sender = body.get("sender") if isinstance(body, dict) else None
    login = sender.get("login") if isinstance(sender, dict) else None
    return f"@{login}" if isinstance(login, str) and login else None


def fill_in_outcome(result: Audit, event: Outcome) -> None:
    """Fill in the alert row this outcome belongs to, if it is one."""
    key = event.cause_seq if isinstance(event, SentryResolved) else event.alert_seq
    row = result.rows.get(key)
    if row is None:
        return
    match event:
        case IssueOpened():
            row.opened, row.failed = result.issues[event.alert_seq], None
        case IssueReopened():
            row.reopened, row.failed = True, None
        case CommentPosted():
            row.comment, row.failed = event.url, None
        case IssueFailed():
            row.failed = f"failed ({'retryable' if event.retryable else 'permanent'})"


def _follow(result: Audit, envelope: Envelope, issue: str, link_seq: int | None) -> None:
    """Add a report, a sync decision or an outcome to the timeline of ``issue``."""
    event = envelope.event
    match event:
        case GitHubIssueObserved():
            if event.sentry_issue_id == issue or link_seq in result.followed:
                _add_entry(result, _report_entry(result, envelope, link_seq))
        case SentryIssueChanged():
            if event.sentry_issue_id == issue:
                _add_entry(result, _report_entry(result, envelope, link_seq))
        case SyncDecided():
            cause = result.entries.get(event.cause_seq)
            if cause is not None and cause.row is None:
                cause.recorded_sync = event
            elif event.sentry_issue_id == issue:  # a decision on nothing that derives one
                _add_entry(result, Entry(envelope, recorded_sync=event))
        case IssueOpened() | CommentPosted() | IssueReopened() | IssueClosed() | IssueFailed():
            if event.alert_seq in result.entries:
                _add_entry(result, Entry(envelope))
        case SentryResolved():
            if event.cause_seq in result.entries or event.sentry_issue_id == issue:
                _add_entry(result, Entry(envelope))


def _report_entry(result: Audit, envelope: Envelope, link_seq: int | None) -> Entry:
    derived = result.state.unrecorded.get(envelope.seq)
    return Entry(envelope, derived_sync=derived if isinstance(derived, SyncDecided) else None,
                 link_seq=link_seq)


def _add_entry(result: Audit, entry: Entry) -> None:
    result.timeline.append(entry)
    result.entries.setdefault(entry.envelope.seq, entry)


def _check_decision(result: Audit, seq: int, recorded: AlertDecided) -> None:
    """Compare a recorded decision with the one derived at its alert's position."""
    derived = result.state.unrecorded.get(recorded.alert_seq)
    if not isinstance(derived, AlertDecided):
        result.findings.append(Finding(seq, None, f"decision for alert {recorded.alert_seq} "
                                       "with no alert.received awaiting a decision before it"))
        return
    if derived == recorded:  # nearly always: one comparison of the two structs, in C
        return
    # A decision recorded before routing names no repo: nothing to compare it with.
    # (``--policy current`` without any repo, a dry run's, has nothing to compare either.)
    repo_differs = None not in (recorded.repo, derived.repo) and derived.repo != recorded.repo
    if repo_differs or (derived.action, derived.reason, derived.linked_issue,
                        derived.suppressed, derived.since, derived.silence_id) != (
            recorded.action, recorded.reason, recorded.linked_issue, recorded.suppressed,
            recorded.since, recorded.silence_id):
        result.findings.append(Finding(seq, None, (
            f"alert {recorded.alert_seq}: recorded {recorded.action} ({recorded.reason}), "
            f"derived {derived.action} ({derived.reason})"
            + ("" if derived.linked_issue == recorded.linked_issue else
               f"; linked issue recorded {recorded.linked_issue}, derived {derived.linked_issue}")
            + ("" if derived.suppressed == recorded.suppressed else
               f"; suppressed recorded {recorded.suppressed}, derived {derived.suppressed}")
            + ("" if derived.since == recorded.since else
               f"; since recorded {_time(recorded.since)}, derived {_time(derived.since)}")
            + ("" if derived.silence_id == recorded.silence_id else
               f"; silence recorded {recorded.silence_id}, derived {derived.silence_id}")
            + (f"; repo recorded {recorded.repo}, derived {derived.repo}" if repo_differs
               else ""))))


def _check_sync(result: Audit, seq: int, recorded: SyncDecided) -> None:
    """Compare a recorded sync decision with the one derived while folding its cause
    (policy.py rule 11)."""
    derived = result.state.unrecorded.get(recorded.cause_seq)
    said = f"recorded {recorded.action} ({recorded.reason})"
    if not isinstance(derived, SyncDecided):
        result.findings.append(Finding(seq, None, (
            f"sync decision on seq {recorded.cause_seq}: {said}, but that record derives "
            "none (or it was decided already)")))
        return
    if (derived.action, derived.reason, derived.sentry_issue_id) != (
            recorded.action, recorded.reason, recorded.sentry_issue_id):
        result.findings.append(Finding(seq, None, (
            f"sync decision on seq {recorded.cause_seq}: {said}, derived {derived.action} "
            f"({derived.reason})"
            + ("" if derived.sentry_issue_id == recorded.sentry_issue_id else
               f"; Sentry issue recorded {recorded.sentry_issue_id}, "
               f"derived {derived.sentry_issue_id}"))))


def _check_storm(result: Audit, seq: int, recorded: StormDecided) -> None:
    """Compare a recorded storm decision with the one derived while folding its alert
    (policy.py rule 15)."""
    derived = result.state.storm_unrecorded.get(recorded.alert_seq)
    said = f"storm decision on alert {recorded.alert_seq}: recorded {recorded.action}"
    if derived is None:
        result.findings.append(Finding(seq, None, (
            f"{said}, but that alert derives none (or it was decided already)")))
    elif derived[0] != recorded:
        theirs = derived[0]
        result.findings.append(Finding(seq, None, (
            f"{said} of {len(recorded.issues)} Sentry issue(s) in {recorded.repo}, derived "
            f"{theirs.action} of {len(theirs.issues)} in {theirs.repo}")))


def _time(at: datetime | None) -> str:
    return format_time(at) if at else "none"


@dataclass(frozen=True, slots=True)
class Probe:
    """What another alert of a Sentry issue would get now, and the issue it is about."""

    decision: AlertDecided
    context: Context | None


def next_alert_now(result: Audit, last: Alert, now: datetime) -> Probe:
    """What the service would decide for another alert of this issue at ``now``."""
    state = result.state
    probe = replace(last, event_id="obsv-why-probe")  # all it matches on, silences too
    decision = decide(state, probe, now, state.last_seq + 1, state.effective_policy)
    return Probe(decision, _context(result, probe))


class JsonRow(Struct, gc=False):
    """The ``--json`` line of a row (docs/reference.md §1 names its keys), in key order.
    A struct, encoded by msgspec: half the cost of a dict through orjson, once per alert.
    With ``--policy current``, action and reason are today's, and the recorded ones
    follow them."""

    seq: int
    at: str
    sentry_issue_id: str
    event_id: str
    level: str
    environment: str | None
    fingerprint_key: str
    title: str | None
    action: str | None
    reason: str | None
    repo: str | None
    github: str | None
    linked_alert_seq: int | None
    replaces: str | None
    since: str | None
    recorded_action: str | UnsetType | None = UNSET
    recorded_reason: str | UnsetType | None = UNSET


def row_json(result: Audit, row: Row, *, current: bool = False) -> JsonRow:
    """The ``--json`` line of a row; ``current``: with the decision derived under today's
    settings (``--policy current``) and the recorded one after it."""
    recorded, alert = row.recorded, row.alert
    decision = recorded or row.derived
    linked = decision.linked_issue
    # Audit.replaces, with its common answer first (a line per alert).
    replaces = (None if linked is None or decision.action != "open"
                else result.issue_name(linked.alert_seq))
    action, reason = (recorded.action, recorded.reason) if recorded else (None, None)
    json_row = JsonRow(
        row.seq, format_time(row.at), alert.sentry_issue_id, alert.event_id, alert.level,
        alert.environment, alert.fingerprint_key, alert.title, action, reason,
        result.repo(row), result.github(row), linked.alert_seq if linked else None,
        replaces, format_time(decision.since) if decision.since else None)
    if current:
        json_row.action, json_row.reason = row.derived.action, row.derived.reason
        json_row.recorded_action, json_row.recorded_reason = action, reason
    return json_row
