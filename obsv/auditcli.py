"""Printing for ``obsv replay`` and ``obsv why`` (the folding is in ``audit.py``)."""

from __future__ import annotations

import argparse
import os
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from obsv.audit import Audit, Row, audit, next_alert_now
from obsv.core.codec import format_time
from obsv.core.events import Policy
from obsv.errors import UsageError
from obsv.settings import load_settings

_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def run(args: argparse.Namespace) -> int:
    """``obsv replay`` or ``obsv why``; returns the exit code.

    Exit codes: 0 a complete answer; 1 a complete answer with findings (a seq gap, a
    decision that differs from the recorded one), each named on stderr; 2 no answer,
    because a line of the log is not a record (or a usage error). A torn last line is
    a note, not a finding, outside ``--verify``: it is not a record, and a live log
    may end in a write still in progress.
    """
    settings = load_settings(args.config, os.environ, require_secret=False)
    path = Path(getattr(args, "log", None) or settings.event_log)
    if not path.is_file():
        raise UsageError(f"no event log at {path}; pass the log's path "
                         "(obsv replay LOG, obsv why ID --log LOG)")
    why = args.command == "why"
    since = _since(args.since) if not why and args.since else None
    override = settings.policy() if not why and args.policy == "current" else None
    try:
        result = audit(path, override, args.sentry_issue_id if why else args.issue)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    if result.unreadable is not None:
        line = result.unreadable
        _warn(f"{path}: line {line.line} is {line.message}; "
              + ("the records after it were not checked" if not why and args.verify else
                 "no answer past it: repair or remove that line (obsv replay --verify "
                 "checks the rest)"))
        if why or not args.verify:
            return 2
    if why:
        code = _why(path, args.sentry_issue_id, result)
    elif args.verify:
        return _print_verify(path, result, override)
    else:
        rows = [r for r in result.rows.values() if since is None or r.at >= since]
        _print_rows(rows, as_json=args.json, current=override is not None)
        code = 0
    return max(code, _report_findings(path, result, current=override is not None))


def _warn(message: str) -> None:
    print(f"obsv: {printable(message)}", file=sys.stderr)


def _report_findings(path: Path, result: Audit, *, current: bool) -> int:
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
        action, reason = row.derived_action or "?", row.derived_reason or "?"
        if row.action is None:
            return action + "*", reason
        if (action, reason) != (row.action, row.reason):
            return action, f"{reason} (recorded: {row.action} {row.reason})"
        return action, reason
    return row.action, row.reason or ""


def _print_rows(rows: list[Row], *, as_json: bool, current: bool) -> None:
    if as_json:
        out = sys.stdout.buffer
        for row in rows:
            data = row.to_json()
            if current:
                data["action"], data["reason"] = row.derived_action, row.derived_reason
                data["recorded_action"], data["recorded_reason"] = row.action, row.reason
            out.write(json_printable(orjson.dumps(data)) + b"\n")
        out.flush()
        return
    rows_by_seq = {row.seq: row for row in rows}
    table = [["SEQ", "TIME (UTC)", "SENTRY ISSUE", "LEVEL", "DECISION", "REASON", "GITHUB"]]
    for row in rows:
        action, reason = _decision(row, current)
        table.append([printable(cell) for cell in (
            str(row.seq), row.at.strftime("%Y-%m-%d %H:%M:%S"), row.alert.sentry_issue_id,
            row.alert.level, action, reason, _github_column(row, rows_by_seq))])
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]) - 1)]
    for line in table:
        print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=False)) + "  " + line[-1])
    if any(r.action is None for r in rows):
        print("\n* derived, not yet recorded (the service has not decided it yet, or stopped "
              "before recording it; it will on its next start)")


def _github_column(row: Row, rows_by_seq: dict[int, Row]) -> str:
    if row.outcome:
        return row.outcome
    if row.link_seq is not None:
        linked = rows_by_seq.get(row.link_seq)
        return f"(linked: {linked.outcome if linked and linked.outcome else 'pending'})"
    return "pending" if (row.action or row.derived_action) in ("open", "comment") else ""


def _print_verify(path: Path, result: Audit, override: Policy | None) -> int:
    for finding in result.findings:
        _say(f"MISMATCH {finding}")
    against = "today's settings" if override else "the policies recorded in the log"
    alerts = len(result.rows)
    if result.unrecorded:
        shown = ", ".join(map(str, result.unrecorded[:10]))
        more = " …" if len(result.unrecorded) > 10 else ""
        _say(f"note: {len(result.unrecorded)} alert(s) decided but not recorded yet "
             f"(seq {shown}{more})")
    if result.findings:
        _say(f"{path}: {len(result.findings)} finding(s) in {result.records} records "
             f"({alerts} alerts), decisions checked against {against}")
        return 1
    _say(f"{path}: ok: {result.records} records, seq contiguous, {alerts} alerts, every "
         f"decision re-derived with {against}")
    return 0


def _why(path: Path, sentry_issue_id: str, result: Audit) -> int:
    rows = list(result.rows.values())
    if not rows:
        _say(f"no alerts of Sentry issue {sentry_issue_id} in {path}")
        return 1
    _say(f"Sentry issue {sentry_issue_id}: {len(rows)} alert(s) in {path}")
    for row in rows:
        action, reason = _decision(row, current=False)
        env = row.alert.environment or "no environment"
        print()
        _say(f"{format_time(row.at)}  alert seq {row.seq}  {row.alert.level} in {env}"
             f"  event {row.alert.event_id}")
        if row.alert.title:
            _say(f"    {row.alert.title}")
        _say(f"    decision: {action} ({_explain(reason, row, result)})")
        for at, what in row.history[1:] if row.history else []:
            _say(f"    {format_time(at)}  {what}")
    now = datetime.now(UTC)
    action, reason, detail = next_alert_now(result.state, rows[-1].alert, now)
    print()
    _say(f"Another alert now ({format_time(now)}) would be: {action} ({reason})"
         + (f", {detail}" if detail else ""))
    return 0


def _say(line: str) -> None:
    """Print one line of output; everything in it that came from the log is escaped."""
    print(printable(line))


# Characters that act on a terminal instead of showing: C0 and C1 controls (ESC starts
# escape sequences, CSI U+009B is a one-character ESC [, CR and NL fake rows), the line
# and paragraph separators, and the bidirectional overrides that reorder what is shown.
_TERMINAL_UNSAFE = re.compile(
    r"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    return _SHORT_ESCAPES.get(char) or (
        f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")


def printable(text: str) -> str:
    """``text`` with control characters written as escapes (``\\x1b``, ``\\n``), so a
    value from the log can neither drive the terminal nor start a line of its own."""
    return _TERMINAL_UNSAFE.sub(_escape, text)


def json_printable(line: bytes) -> bytes:
    """A JSON line with the characters orjson leaves raw (DEL, C1 controls, separators,
    bidi overrides) written as ``\\uXXXX``: the same value to a parser, inert on a
    terminal. They can only occur inside strings, where the escape is valid JSON."""
    if line.isascii() and b"\x7f" not in line:
        return line
    text = line.decode("utf-8")
    return _TERMINAL_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text).encode("utf-8")


_EXPLANATIONS = {
    "new_issue": "no linked GitHub issue yet",
    "duplicate": "this event_id was already received: a Sentry redelivery",
    "below_min_level": "level below OBSV_MIN_LEVEL",
    "environment_filtered": "environment not in OBSV_ENVIRONMENTS",
    "cooldown": "the linked issue was notified less than OBSV_COOLDOWN_SECONDS before",
    "recurrence": "cooldown passed: comment on the linked issue",
    "storm_budget": "OBSV_MAX_ISSUES_PER_HOUR issues already opened in the hour before",
}


def _explain(reason: str, row: Row, result: Audit) -> str:
    text = f"{reason}: {_EXPLANATIONS.get(reason, reason)}"
    if row.link_seq is not None:
        linked = result.rows.get(row.link_seq)
        target = linked.outcome if linked and linked.outcome else None
        text += f"; linked issue {target or f'opened by alert {row.link_seq}'}"
    return text
