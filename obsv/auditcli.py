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
from obsv.eventlog import LogCorrupt
from obsv.settings import load_settings

_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def run(args: argparse.Namespace) -> int:
    """``obsv replay`` or ``obsv why``; returns the exit code."""

    settings = load_settings(args.config, os.environ, require_secret=False)
    path = Path(getattr(args, "log", None) or settings.event_log)
    if not path.is_file():
        raise UsageError(f"no event log at {path}; pass the log's path "
                         "(obsv replay LOG, obsv why ID --log LOG)")
    try:
        if args.command == "why":
            return _why(path, args.sentry_issue_id)
        override = settings.policy() if args.policy == "current" else None
        since = _since(args.since) if args.since else None
        result = audit(path, override, args.issue)
    except LogCorrupt as exc:
        print(f"obsv: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    if args.verify:
        return _print_verify(path, result, override)
    rows = [r for r in result.rows.values() if since is None or r.at >= since]
    _print_rows(rows, as_json=args.json, current=override is not None)
    return 1 if result.findings and not args.json else 0


def _since(text: str) -> datetime:

    if match := _DURATION.match(text.strip()):
        amount, unit = match.groups()
        return datetime.now(UTC) - timedelta(**{_UNITS[unit]: int(amount)})
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(f"--since {text!r}: give an RFC 3339 time (2026-11-27T08:00:00Z), "
                         "a date, or a duration such as 90m, 6h, 2d") from None
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
            out.write(orjson.dumps(data) + b"\n")
        out.flush()
        return
    rows_by_seq = {row.seq: row for row in rows}
    table = [("SEQ", "TIME (UTC)", "SENTRY ISSUE", "LEVEL", "DECISION", "REASON", "GITHUB")]
    for row in rows:
        action, reason = _decision(row, current)
        table.append((str(row.seq), row.at.strftime("%Y-%m-%d %H:%M:%S"),
                      row.alert.sentry_issue_id, row.alert.level, action, reason,
                      _github_column(row, rows_by_seq)))
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
        print(f"MISMATCH {finding}")
    against = "today's settings" if override else "the policies recorded in the log"
    alerts = len(result.rows)
    if result.unrecorded:
        shown = ", ".join(map(str, result.unrecorded[:10]))
        more = " …" if len(result.unrecorded) > 10 else ""
        print(f"note: {len(result.unrecorded)} alert(s) decided but not recorded yet (seq {shown}{more})")
    if result.findings:
        print(f"{path}: {len(result.findings)} finding(s) in {result.records} records "
              f"({alerts} alerts), decisions checked against {against}")
        return 1
    print(f"{path}: ok: {result.records} records, seq contiguous, {alerts} alerts, every "
          f"decision re-derived with {against}")
    return 0


def _why(path: Path, sentry_issue_id: str) -> int:
    result = audit(path, issue=sentry_issue_id)
    rows = list(result.rows.values())
    if not rows:
        print(f"no alerts of Sentry issue {sentry_issue_id} in {path}")
        return 1
    print(f"Sentry issue {sentry_issue_id}: {len(rows)} alert(s) in {path}")
    for row in rows:
        action, reason = _decision(row, current=False)
        env = row.alert.environment or "no environment"
        print(f"\n{format_time(row.at)}  alert seq {row.seq}  {row.alert.level} in {env}"
              f"  event {row.alert.event_id}")
        if row.alert.title:
            print(f"    {row.alert.title}")
        print(f"    decision: {action} ({_explain(reason, row, result)})")
        for at, what in row.history[1:] if row.history else []:
            print(f"    {format_time(at)}  {what}")
    now = datetime.now(UTC)
    action, reason, detail = next_alert_now(result.state, rows[-1].alert, now)
    print(f"\nAnother alert now ({format_time(now)}) would be: {action} ({reason})"
          + (f", {detail}" if detail else ""))
    return 0


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
