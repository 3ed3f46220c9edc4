"""The recorded answers of a log, read fast: the rows of ``obsv replay --json``.

``audit.py`` folds the log with the service's own ``apply``, re-deriving every decision
and comparing it with the recorded one; the table, ``--verify`` and ``why`` need that.
A ``--json`` row needs less: the alert as received, the decision as recorded, and what
GitHub (or the outbox) said (docs/reference.md §1). So this reads each line's summary
(``summaries``: msgspec steps over bodies, deliveries and reports unread), makes the
same ``Row`` objects ``audit`` makes, from the recorded decisions, and the command
prints them with the same code: two to three times faster than the fold on the
bench's logs (bench/README.md, "Replay and codec").

It only answers when its answer is the fold's: ``None`` (fold in full) for a line it
cannot summarise, a seq gap, a torn last line, an alert with no recorded decision
(the fold derives one), a decision for no alert awaiting one, an outcome before its
decision, or a storm digest (whose listing of alerts needs the fold). What it does not
do is re-derive: a recorded decision that the policies would not take is shown as
recorded, and found by ``obsv replay --verify`` (and the table).
"""

from __future__ import annotations

from collections.abc import Iterable

from obsv.audit import Audit, IssueRef, Row, fill_in_outcome
from obsv.core.codec import CodecError, DecidedSummary, ReceivedSummary, summaries
from obsv.core.events import (
    AlertDecided,
    CommentPosted,
    ConfigApplied,
    Envelope,
    Event,
    IssueFailed,
    IssueOpened,
    IssueReopened,
    StormDecided,
)

# The records that fill in a row after its decision (``audit.fill_in_outcome``) and the
# policy's, read in full: there are few of them next to the alerts and decisions.
_IN_FULL = frozenset(cls.TYPE for cls in (IssueOpened, CommentPosted, IssueReopened,
                                          IssueFailed, ConfigApplied))


class _FoldInstead(Exception):
    """Something only the full fold answers as the command must (see the module doc)."""


def recorded_rows(lines: Iterable[bytes]) -> Audit | None:
    """The rows of every alert of ``lines`` (each with its ``\\n``), from the recorded
    decisions and outcomes; None where only the full fold answers right."""
    result = Audit()
    try:
        _read(lines, result)
    except _FoldInstead:
        return None
    return result


# What a row holds until its decision is read (never seen outside: a row still holding
# it at the end sends the log to the fold, which derives the decision).
_UNDECIDED = AlertDecided(0, "", "", "suppress", "duplicate")


def _read(lines: Iterable[bytes], result: Audit) -> None:
    # A line per record, so the common records take the fewest steps (local names,
    # the first branches, nothing called that needs not be). Each alert's row is made
    # as it arrives, in seq order, and gets its decision when that is read.
    rows = result.rows
    policy_repo: str | None = None
    seq = decided = 0
    try:
        for summary in summaries(lines, _IN_FULL):
            seq += 1
            if summary.seq != seq:
                raise _FoldInstead  # a gap: the fold names it
            kind = type(summary)
            if kind is ReceivedSummary:
                rows[seq] = Row(seq, summary.at, summary.alert, _UNDECIDED, None, None,
                                policy_repo)
            elif kind is DecidedSummary:
                row = rows.get(summary.alert_seq)
                if row is None or row.recorded is not None:
                    raise _FoldInstead  # a decision for no alert awaiting one: named there
                row.derived = row.recorded = summary
                decided += 1
            elif kind is Envelope:  # a line read in full (_IN_FULL)
                if isinstance(summary.event, ConfigApplied):
                    policy_repo = summary.event.policy.repo
                else:
                    _outcome(result, summary.event)
            elif summary.TYPE == StormDecided.TYPE:
                raise _FoldInstead
    except CodecError:
        raise _FoldInstead from None  # a line it cannot summarise, a torn tail: named there
    result.records = seq
    if decided != len(rows):
        raise _FoldInstead  # undecided alerts: the fold derives their decisions


def _outcome(result: Audit, event: Event) -> None:
    """Fill in the row an outcome names."""
    if not isinstance(event, IssueOpened | CommentPosted | IssueReopened | IssueFailed):
        raise _FoldInstead  # read otherwise in full than its summary did
    row = result.rows.get(event.alert_seq)
    if row is not None and row.recorded is None:
        raise _FoldInstead  # an outcome before its decision: only the fold can say
    if isinstance(event, IssueOpened):
        result.issues[event.alert_seq] = IssueRef(event.repo, event.number, event.url)
    fill_in_outcome(result, event)
