"""Printing for ``obsv replay`` and ``obsv why`` (the folding is in ``audit.py``)."""

from __future__ import annotations

import argparse
import gc
import os
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NoReturn

import msgspec

from obsv.audit import (
    READ_CHUNK,
    Audit,
    Context,
    Entry,
    Head,
    Integrity,
    Probe,
    Row,
    audit,
    next_alert_now,
    row_json,
    webhook_sender,
)
from obsv.core.alert import Alert
from obsv.core.codec import format_time
from obsv.core.events import (
    AlertDecided,
    CommentPosted,
    Event,
    GitHubIssueObserved,
    IssueClosed,
    IssueFailed,
    IssueOpened,
    IssueReopened,
    Policy,
    SentryIssueChanged,
    SentryResolved,
    SyncDecided,
)
from obsv.core.policy import WONT_FIX_REASONS
from obsv.errors import UsageError
from obsv.ledger import recorded_rows
from obsv.settings import Settings, database_url, load_settings

_DURATION = re.compile(r"^(\d+)([smhd])$")
_HEAD = re.compile(r"^([1-9][0-9]{0,18}):([0-9a-fA-F]{64})$")
_NO_SECRET = ("", "-")  # load_settings(require_secret=False) fills in "-" when unset
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def run(args: argparse.Namespace, *, exit_when_done: bool = False) -> int:
    """``obsv replay`` or ``obsv why``; returns the exit code, or with
    ``exit_when_done`` ends the process with it once the answer is printed.

    Exit codes: 0 a complete answer; 1 a complete answer with findings (a seq gap, a
    decision that differs from the recorded one), each named on stderr; 2 no answer,
    because a line of the log is not a record (or a usage error). A torn last line is
    a note, not a finding, outside ``--verify``: it is not a record, and a live log
    may end in a write still in progress.
    """
    # One pass that only adds to what it keeps (rows, links, maps) and makes no cycles:
    # the collector would find no garbage, and its full walks over everything kept cost
    # about a sixth of a replay of the bench log. Back on when the command returns.
    collecting = gc.isenabled()
    gc.disable()
    try:
        code, answer = _run(args)
        if exit_when_done:
            _exit_now(code, answer)
        return code
    finally:
        if collecting:
            gc.enable()


def _exit_now(code: int, answer: Audit) -> NoReturn:
    """End the process with the answer printed and still held: what a replay built (a
    row and its parts per alert, tens of MB for a large log) is left to the kernel
    instead of being taken apart object by object, a tenth of a ``--json`` replay
    (bench/README.md). As mypy ends its runs; only for a process that has nothing left
    to run (the ``obsv`` command, not a caller of ``cli.main``)."""
    sys.stdout.flush()
    sys.stderr.flush()  # never None here: cli.entry gives a closed one /dev/null
    os._exit(code)


def _run(args: argparse.Namespace) -> tuple[int, Audit]:
    settings = load_settings(args.config, os.environ, require_secret=False)
    why = args.command == "why"
    since = _since(args.since) if not why and args.since else None
    override = settings.policy() if not why and args.policy == "current" else None
    integrity = None if why else _integrity(args, settings)
    url = _database_url(args, settings)
    issue = args.sentry_issue_id if why else args.issue
    # The JSON rows are the recorded answers: read fast when that is the fold's answer.
    recorded = not why and args.json and override is None and integrity is None
    if url is not None:  # docs/reference.md §12: the same answers from the database
        from obsv.pgtools import DatabaseLines
        lines = DatabaseLines(url)
        path: Path | str = lines.location
        try:
            result = ((recorded and recorded_rows(line for _, line in lines))
                      or audit(lines, override, issue, integrity))
        finally:
            lines.close()
    else:
        path = Path(getattr(args, "log", None) or settings.event_log)
        if not path.is_file():
            raise UsageError((f"{path} is not a regular file (a directory, a FIFO, a device)"
                              if path.exists() else f"no event log at {path}")
                             + "; pass the log's path (obsv replay LOG, obsv why ID --log LOG)")
        try:
            result = ((recorded and _recorded_rows_of(path))
                      or audit(path, override, issue, integrity))
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    if result.unreadable is not None:
        line = result.unreadable
        _warn(f"{path}: line {line.line} is {line.message}; "
              + ("the records after it were not checked" if not why and args.verify else
                 "no answer past it: repair or remove that line (obsv replay --verify "
                 "checks the rest)"))
        if why or not args.verify:
            return 2, result
    if why:
        code = _why(path, args.sentry_issue_id, result)
    elif args.verify:
        assert integrity is not None
        return _print_verify(path, result, override, integrity), result
    else:
        rows = [r for r in result.rows.values() if (since is None or r.at >= since)
                and (args.issue is None or r.alert.sentry_issue_id == args.issue)]
        _print_rows(result, rows, as_json=args.json, current=override is not None)
        code = 0
    return max(code, _report_findings(path, result, current=override is not None)), result


def _recorded_rows_of(path: Path) -> Audit | None:
    with open(path, "rb", buffering=READ_CHUNK) as lines:
        return recorded_rows(lines)


def _database_url(args: argparse.Namespace, settings: Settings) -> str | None:
    """``--database-url``; else OBSV_DATABASE_URL unless a LOG file is named."""
    named = getattr(args, "log", None)
    given = getattr(args, "database_url", None)
    if given and named:
        raise UsageError("give either a LOG file or --database-url, not both")
    if given:
        return database_url("--database-url", given)
    return None if named else settings.database_url


def _integrity(args: argparse.Namespace, settings: Settings) -> Integrity | None:
    """The tamper checks ``--verify`` makes (docs/reference.md §11); None without it."""
    if not args.verify:
        for flag in ("head", "secret"):
            if getattr(args, flag) is not None:
                raise UsageError(f"--{flag} is checked by --verify: add --verify")
        return None
    head = None
    if args.head is not None:
        match = _HEAD.match(args.head.strip())
        if match is None:
            raise UsageError(f"--head {args.head!r}: give SEQ:HASH, a seq and the 64 hex "
                             "digits of its line's sha256 (a log.checkpoint's head_seq and "
                             "head_sha256, or a snapshot header's head)")
        head = Head(int(match.group(1)), match.group(2).lower())
    secret = args.secret if args.secret is not None else settings.sentry_client_secret
    return Integrity(head=head, secret=None if secret in _NO_SECRET else secret)


def _warn(message: str) -> None:
    print(f"obsv: {printable(message)}", file=sys.stderr)


def _report_findings(path: Path | str, result: Audit, *, current: bool) -> int:
    """Name on stderr what makes the answer above worth a second look; 1 if anything."""
    if result.torn is not None:
        _warn(f"note: {path}: {result.torn}; not part of this answer")
    gaps = result.of_kind("gap")
    for finding in gaps[:5]:
        _warn(f"{path}: {finding}")
    if len(gaps) > 5:
        _warn(f"{path}: {len(gaps) - 5} more seq gap(s)")
    differ = len(result.of_kind("decision"))
    if differ:
        against = ("under today's settings (--policy current)" if current
                   else "when re-derived with the recorded policies")
        _warn(f"{path}: {differ} decision(s) differ from the recorded ones {against}; "
              f"obsv replay --verify{' --policy current' if current else ''} lists them")
    return 1 if gaps or differ else 0


def _since(text: str) -> datetime:
    usage = UsageError(f"--since {text!r}: give an RFC 3339 time (2026-11-27T08:00:00Z), "
                       "a date, or a duration such as 90m, 6h, 2d, within the calendar")
    if match := _DURATION.match(text.strip()):
        amount, unit = match.groups()
        try:
            return datetime.now(UTC) - timedelta(**{_UNITS[unit]: int(amount)})
        except (OverflowError, ValueError):  # before year 1, or too large for timedelta
            raise usage from None
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        raise usage from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _decision(row: Row, current: bool) -> tuple[str, str]:
    if current or row.action is None:
        action, reason = row.derived.action, row.derived.reason
        if row.action is None:
            return action + "*", reason
        if (action, reason) != (row.action, row.reason):
            return action, f"{reason} (recorded: {row.action} {row.reason})"
        return action, reason
    return row.action, row.reason or ""


_JSON_BATCH = 1000  # rows encoded per call: one call per row costs a fifth of printing


def _print_rows(result: Audit, rows: list[Row], *, as_json: bool, current: bool) -> None:
    if as_json:
        out, encode_lines = sys.stdout.buffer, msgspec.json.Encoder().encode_lines
        for start in range(0, len(rows), _JSON_BATCH):
            out.write(json_printable(encode_lines([
                row_json(result, row, current=current)
                for row in rows[start:start + _JSON_BATCH]])))
        out.flush()
        return
    table = [["SEQ", "TIME (UTC)", "SENTRY ISSUE", "LEVEL", "DECISION", "REASON", "GITHUB"]]
    for row in rows:
        action, reason = _decision(row, current)
        table.append([printable(cell) for cell in (
            str(row.seq), row.at.strftime("%Y-%m-%d %H:%M:%S"), row.alert.sentry_issue_id,
            row.alert.level, action, reason, _github_column(result, row))])
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]) - 1)]
    for line in table:
        print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=False)) + "  " + line[-1])
    if any(r.action is None for r in rows):
        print("\n* derived, not yet recorded (the service has not decided it yet, or stopped "
              "before recording it; it will on its next start)")


def _github_column(result: Audit, row: Row) -> str:
    """The issue opened (and the one it replaces), reopened, commented on, or linked."""
    decision = row.decision
    replaces = result.replaces(row)
    also = f" (replaces {replaces})" if replaces else ""
    if github := result.github(row):
        return github + also
    if decision.action == "open":
        return "pending" + also
    if row.link_seq is None:
        return f"(silence {decision.silence_id})" if decision.silence_id else ""
    issue = result.issues.get(row.link_seq)
    linked = f"linked: {issue or 'pending'}"
    if decision.action == "comment":
        return f"pending ({linked})"
    if decision.action == "reopen":
        return f"pending reopen ({linked})"
    quiet = _wont_fix_why(row.context) if decision.reason == "wont_fix" else None
    return f"({linked}{', ' + quiet if quiet else ''})"


def _wont_fix_why(context: Context | None) -> str | None:
    """Row 6 in a few words: closed as not planned (or duplicate), or muted."""
    if context is None:
        return None
    link = context.link
    if link.state == "closed" and link.state_reason in WONT_FIX_REASONS:
        return f"closed as {link.state_reason}"
    return "muted"


def _print_verify(path: Path | str, result: Audit, override: Policy | None,
                  integrity: Integrity) -> int:
    for finding in result.findings:
        _say(f"MISMATCH {finding}")
    for line in _integrity_lines(integrity):
        _say(line)
    against = "today's settings" if override else "the policies recorded in the log"
    alerts = len(result.rows)
    if result.unrecorded:
        _say(f"note: {len(result.unrecorded)} alert(s) decided but not recorded yet "
             f"(seq {_seqs(result.unrecorded)})")
    if result.unrecorded_sync:
        _say(f"note: {len(result.unrecorded_sync)} sync decision(s) derived but not recorded "
             f"yet (on seq {_seqs(result.unrecorded_sync)})")
    if result.unrecorded_storm:
        _say(f"note: {len(result.unrecorded_storm)} storm decision(s) derived but not "
             f"recorded yet (on alert seq {_seqs(result.unrecorded_storm)})")
    counted = f"{alerts} alerts, {result.sync_decisions} sync decisions"
    if result.storm_decisions:
        counted += f", {result.storm_decisions} storm decisions"
    if result.findings:
        _say(f"{path}: {len(result.findings)} finding(s) in {result.records} records "
             f"({counted}), decisions checked against {against}")
        return 1
    _say(f"{path}: ok: {result.records} records, seq contiguous, {counted}, every "
         f"decision re-derived with {against}")
    return 0


def _integrity_lines(integrity: Integrity) -> list[str]:
    """What the tamper checks covered: the chain, the head, the last checkpoint and the
    signatures, one line each (their findings are printed above as MISMATCH). A log
    written before the chain, checked without a secret, gets none: nothing was checked."""
    lines = []
    if integrity.breaks:
        lines.append(f"chain: broken ({integrity.breaks} link(s)); the first is named above")
    elif integrity.chained:
        lines.append(f"chain: intact over {integrity.chained} record(s) with prev")
    if integrity.head is not None and integrity.head_line is not None:
        lines.append(f"head {integrity.head}: seq {integrity.head.seq} is at line "
                     f"{integrity.head_line}")
    if integrity.checkpoint is not None:
        line_no, seq, event = integrity.checkpoint
        lines.append(f"last checkpoint: line {line_no} (seq {seq}), head "
                     f"{event.head_seq}:{event.head_sha256}")
    elif integrity.chained:
        lines.append("last checkpoint: none in the log yet")
    if integrity.secret is not None:
        failed = len(integrity.signatures_failed)
        skipped = (f", {integrity.signatures_skipped} redelivery(ies) without a body skipped "
                   "(no earlier body of their event id in the log)"
                   if integrity.signatures_skipped else "")
        lines.append(f"signatures: {integrity.signatures_checked} stored bodies re-checked, "
                     f"{failed} fail{skipped}")
    return lines


def _seqs(seqs: list[int]) -> str:
    return ", ".join(map(str, seqs[:10])) + (" …" if len(seqs) > 10 else "")


def _why(path: Path | str, sentry_issue_id: str, result: Audit) -> int:
    rows = list(result.rows.values())
    if not rows:
        _say(f"no alerts of Sentry issue {sentry_issue_id} in {path}")
        return 1
    reports = sum(isinstance(e.envelope.event, GitHubIssueObserved | SentryIssueChanged)
                  for e in result.timeline)
    _say(f"Sentry issue {sentry_issue_id}: {len(rows)} alert(s)"
         + (f", {reports} report(s) from GitHub and Sentry" if reports else "")
         + f" in {path}")
    for entry in result.timeline:
        for line in _timeline_lines(result, entry):
            if line is None:
                print()
            else:
                _say(line)
    matched = dict.fromkeys(r.decision.silence_id for r in rows if r.decision.silence_id)
    if matched:
        print()
        _say(f"Silences that matched ({len(matched)}):")
        for silence_id in matched:
            _say(f"    {silence_detail(result, silence_id)}")
    now = datetime.now(UTC)
    last = rows[-1].alert
    assert isinstance(last, Alert)  # a fold's row (why folds the log): the whole alert
    probe = next_alert_now(result, last, now)
    decision = probe.decision
    detail = _now_detail(result, probe)
    print()
    _say(f"Another alert now ({format_time(now)}) would be: {decision.action} "
         f"({decision.reason})" + (f", {detail}" if detail else ""))
    return 0


def _timeline_lines(result: Audit, entry: Entry) -> list[str | None]:
    """The lines of one timeline entry; None is a blank line before a new block."""
    envelope = entry.envelope
    at, seq, event = format_time(envelope.at), envelope.seq, envelope.event
    if entry.row is not None:
        row = entry.row
        action, _ = _decision(row, current=False)
        env = row.alert.environment or "no environment"
        lines: list[str | None] = [
            None, f"{at}  alert seq {seq}  {row.alert.level} in {env}  event {row.alert.event_id}"]
        if row.alert.title:
            lines.append(f"    {row.alert.title}")
        repo = result.repo(row)
        lines.append(f"    decision: {action} ({_explain(result, row.decision, row.context)})"
                     + (f" in {repo}" if repo else "") + _rederived(row.recorded, row.derived))
        if row.digest_seq is not None:
            lines.append(f"    listed in the storm digest: {result.digest(row.digest_seq)}"
                         f"  (storm.decided seq {row.digest_seq})")
        return lines
    match event:
        case GitHubIssueObserved() | SentryIssueChanged():
            lines = [None, f"{at}  {_report(event, seq)}"]
            decision = entry.recorded_sync or entry.derived_sync
            if decision is not None:
                mark = "" if entry.recorded_sync else "*"
                lines.append(f"    decision: {decision.action}{mark} "
                             f"({_explain_sync(result, entry, decision)})"
                             + _rederived(entry.recorded_sync, entry.derived_sync))
            return lines
        case SyncDecided():
            return [None, f"{at}  sync decision {event.action} ({event.reason}) on seq "
                    f"{event.cause_seq}, which derives none  (sync.decided seq {seq})"]
        case _:
            return [f"{at}  {_outcome_line(result, event, seq)}"]


def _rederived(recorded: AlertDecided | SyncDecided | None,
               derived: AlertDecided | SyncDecided | None) -> str:
    """A note when the recorded decision is not the one the log derives."""
    if recorded is None or (derived is not None and
                            (recorded.action, recorded.reason) == (derived.action, derived.reason)):
        return ""
    if derived is None:
        return "  [re-derived: none]"
    return f"  [re-derived: {derived.action} ({derived.reason})]"


def _report(event: GitHubIssueObserved | SentryIssueChanged, seq: int) -> str:
    """A github.issue or sentry.issue in one line: what it says of the issue."""
    if isinstance(event, SentryIssueChanged):
        return (f"Sentry: {event.action}; status {event.status or '-'}, substatus "
                f"{event.substatus or '-'}, resolution {event.resolution_type or '-'}"
                + (f", in release {event.release}" if event.release else "")
                + f"  (sentry.issue seq {seq})")
    sender = webhook_sender(event)
    state = event.state + (f" ({event.state_reason})" if event.state_reason else "")
    if event.closed_at is not None and event.state == "closed":
        state += f" since {format_time(event.closed_at)}"
    return (f"GitHub ({event.source}{', by ' + sender if sender else ''}): {event.repo}"
            f"#{event.number} {event.action}; state {state}; labels "
            + (", ".join(event.labels) or "none") + f"  (github.issue seq {seq})")


def _outcome_line(result: Audit, event: Event, seq: int) -> str:
    """An outcome (the sink's record of carrying out a decision) in one line, naming
    the decision it carried out."""
    def of(key: int) -> str:
        entry = result.entries.get(key)
        what = f"alert seq {key}" if entry and entry.row else f"the sync decision on seq {key}"
        return f"  (seq {seq}, for {what})"

    def issue(repo: str | None, number: int | None, key: int) -> str:
        if number is not None:
            return f"{repo or ''}#{number}"
        entry = result.entries.get(key)  # a dry run: the outbox file of the linked issue
        link_seq = None if entry is None else entry.row.link_seq if entry.row else entry.link_seq
        return result.issue_name(link_seq) if link_seq else "its outbox file"

    dry = " (dry run)" if getattr(event, "dry_run", False) else ""
    match event:
        case IssueOpened():
            where = (f"{issue(event.repo, event.number, event.alert_seq)} {event.url}"
                     if event.number is not None else event.url)
            return f"issue opened: {where}{dry}{of(event.alert_seq)}"
        case CommentPosted():
            on = f" on {event.repo or ''}#{event.number}" if event.number is not None else ""
            return f"comment posted: {event.url}{on}{dry}{of(event.alert_seq)}"
        case IssueReopened():
            return (f"issue reopened: {issue(event.repo, event.number, event.alert_seq)}{dry}"
                    f"{of(event.alert_seq)}")
        case IssueClosed():
            return (f"issue closed: {issue(event.repo, event.number, event.alert_seq)} as "
                    f"completed{dry}{of(event.alert_seq)}")
        case SentryResolved():
            return (f"Sentry issue {event.sentry_issue_id} resolved by obsv"
                    f"{of(event.cause_seq)}")
        case IssueFailed():
            kind = "retryable" if event.retryable else "permanent"
            when = (f", next attempt {format_time(event.next_attempt_at)}"
                    if event.next_attempt_at else "")
            return (f"attempt {event.attempt} failed ({kind}, status {event.status}): "
                    f"{event.error}{when}{of(event.alert_seq)}")
    return f"seq {seq}"


def _say(line: str) -> None:
    """Print one line of output; everything in it that came from the log is escaped."""
    print(printable(line))


# Characters that act on a terminal instead of showing: C0 and C1 controls (ESC starts
# escape sequences, CSI U+009B is a one-character ESC [, CR and NL fake rows), the line
# and paragraph separators, and the bidirectional overrides that reorder what is shown.
_ABOVE_C0_UNSAFE = r"\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
_TERMINAL_UNSAFE = re.compile(rf"[\x00-\x1f{_ABOVE_C0_UNSAFE}]")
_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    return _SHORT_ESCAPES.get(char) or (
        f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")


def printable(text: str) -> str:
    """``text`` with control characters written as escapes (``\\x1b``, ``\\n``), so a
    value from the log can neither drive the terminal nor start a line of its own."""
    return _TERMINAL_UNSAFE.sub(_escape, text)


# What a JSON encoder leaves raw of _TERMINAL_UNSAFE: it escapes every C0 control, so
# the only ones in its output are the newlines that end its lines.
_JSON_UNSAFE = re.compile(f"[{_ABOVE_C0_UNSAFE}]")


def json_printable(lines: bytes) -> bytes:
    """JSON lines (one or many, as an encoder wrote them) with the characters encoders
    leave raw (DEL, C1 controls, separators, bidi overrides) written as ``\\uXXXX``: the
    same values to a parser, inert on a terminal. They can only occur inside strings,
    where the escape is valid JSON."""
    if lines.isascii() and b"\x7f" not in lines:
        return lines
    text = lines.decode("utf-8")
    return _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text).encode("utf-8")


# What each decision means, by "action reason" where the action changes the meaning,
# else by reason (docs/reference.md §5 rows, §7 sync decisions).
_EXPLANATIONS = {
    "new_issue": "no linked GitHub issue yet",
    "duplicate": "this event_id was already received: a Sentry redelivery",
    "unrouted": "no route takes the alert and OBSV_GITHUB_REPO is not set",
    "below_min_level": "level below the route's min_level, else OBSV_MIN_LEVEL",
    "environment_filtered": "environment not in OBSV_ENVIRONMENTS",
    "wont_fix": "a human closed the linked issue as not planned or a duplicate, or muted it "
                "with OBSV_MUTE_LABEL: never reopened, never commented",
    "reopen": "the linked issue was closed at most OBSV_REOPEN_WINDOW_SECONDS before: "
              "reopen it, then comment",
    "open regression": "the linked issue was closed longer than OBSV_REOPEN_WINDOW_SECONDS "
                       "before: a new issue that names the old one",
    "comment regression": "Sentry reported the issue resolved since the last notification: "
                          "comment at once, whatever the cooldown",
    "regression": "the error came back after its issue was closed or resolved",
    "cooldown": "the linked issue was notified less than the route's cooldown_seconds "
                "(else OBSV_COOLDOWN_SECONDS) before",
    "recurrence": "cooldown passed: comment on the linked issue",
    "storm_budget": "the route's max_issues_per_hour (else OBSV_MAX_ISSUES_PER_HOUR) issues "
                    "already opened in the hour before",
    "silenced": "an active silence matches the alert (obsv silence list)",
    "resolved_in_sentry": "Sentry reported the issue resolved and OBSV_CLOSE_ON_RESOLVE is "
                          "on: comment why and close the linked issue as completed",
    "closed_on_github": "the GitHub issue was closed as completed and "
                        "OBSV_RESOLVE_IN_SENTRY is on: resolve the Sentry issue",
}


def _explanation(action: str, reason: str) -> str:
    return (_EXPLANATIONS.get(f"{action} {reason}") or _EXPLANATIONS.get(action)
            or _EXPLANATIONS.get(reason, reason))


def _explain(result: Audit, decision: AlertDecided, context: Context | None) -> str:
    """A decision's reason in words, and what in the log made it so."""
    detail = _detail(result, decision, context)
    return (f"{decision.reason}: {_explanation(decision.action, decision.reason)}"
            + (f"; {detail}" if detail else ""))


def _detail(result: Audit, decision: AlertDecided, context: Context | None) -> str:
    """The linked issue, and for ``wont_fix`` and ``regression`` who closed, muted or
    resolved it and since when; for ``silenced``, who muted it, why and until when."""
    if decision.reason == "silenced":
        return silence_detail(result, decision.silence_id)
    if decision.linked_issue is None:
        return ""
    name = result.issue_name(decision.linked_issue.alert_seq)
    if context is None:
        return f"linked issue {name}"
    link, policy, known = context.link, context.policy, context.provenance
    if decision.reason == "wont_fix":
        if link.state == "closed" and link.state_reason in WONT_FIX_REASONS:
            return f"{name} was closed as {link.state_reason}{_by(known.closed)}"
        return f"{name} carries the mute label {policy.mute_label}{_by(known.labels)}"
    if decision.reason != "regression":
        return f"linked issue {name}"
    since = format_time(decision.since) if decision.since else "an unknown time"
    window = _duration(policy.reopen_window_seconds)
    if decision.action == "comment":
        return f"linked issue {name}, its Sentry issue resolved since {since}{_by(known.resolved)}"
    closed = f"closed ({link.state_reason or 'no reason'}) since {since}{_by(known.closed)}"
    if decision.action == "reopen":
        return f"reopens {name}, {closed}, within the reopen window ({window})"
    return f"replaces {name}, {closed}, longer ago than the reopen window ({window})"


def silence_detail(result: Audit, silence_id: str | None) -> str:
    """A silence in words: its id, matchers, who added it, why, and until when."""
    silence = result.silences.get(silence_id or "")
    if silence is None:
        return f"silence {silence_id} (not in this log)"
    until = format_time(silence.ends_at)
    if silence.expired_at is not None:
        until += f", expired {format_time(silence.expired_at)} by {silence.expired_by}"
    matchers = " ".join(str(m) for m in silence.matchers)
    return (f"silence {silence.id} [{matchers}] by {silence.created_by}: "
            f"{silence.comment!r}, until {until}")


def _by(report: str | None) -> str:
    return f" ({report})" if report else ""


def _duration(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _explain_sync(result: Audit, entry: Entry, decision: SyncDecided) -> str:
    """A sync decision's reason in words, and what it acts on."""
    target = (result.issue_name(entry.link_seq)
              if decision.action == "close" and entry.link_seq is not None
              else f"Sentry issue {decision.sentry_issue_id}")
    return f"{decision.reason}: {_explanation(decision.action, decision.reason)}; {target}"


def _now_detail(result: Audit, probe: Probe) -> str:
    """What the "another alert now" line adds: the cooldown's end, or the linked issue
    and why it is quiet or regressed."""
    decision, context = probe.decision, probe.context
    if decision.reason == "cooldown" and context is not None:
        until = context.link.last_notified_at + timedelta(
            seconds=context.policy.cooldown_seconds)
        return f"until {format_time(until)}"
    return _detail(result, decision, context)
