"""Synthetic but consistent event logs: decisions derived by the real fold, outcomes
recorded for every open (so a restart has no pending intent to post)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from obsv.core.alert import alert_from_delivery
from obsv.core.events import (
    AlertReceived,
    CommentPosted,
    ConfigApplied,
    Delivery,
    Envelope,
    Event,
    IssueOpened,
    Policy,
)
from obsv.core.policy import State, apply
from obsv.eventlog import encode_line
from tests.conftest import alert_body

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def small_body(event_id: str, issue: int) -> dict[str, object]:
    """A minimal but realistic event_alert (about 600 bytes on the wire)."""
    return {"action": "triggered", "data": {"event": {
        "event_id": event_id, "issue_id": str(issue), "level": "error", "project": 1,
        "hashes": [f"{issue:032x}"], "fingerprint": ["{{ default }}"], "environment": "prod",
        "title": f"KeyError: 'user_{issue % 97}'", "culprit": "app.views in checkout",
        "web_url": f"https://sentry.io/organizations/acme/issues/{issue}/events/{event_id}/",
        "exception": {"values": [{"type": "KeyError", "value": f"'user_{issue % 97}'",
                                  "stacktrace": {"frames": [{"filename": "app/views.py",
                                                             "lineno": 42, "in_app": True}]}}]},
    }, "triggered_rule": "errors"}}


def write_log(path: Path, records: int, distinct_issues: int, *, full_body: bool = False,
              max_issues_per_hour: int = 20, step: timedelta = timedelta(seconds=1)) -> int:
    """Write about ``records`` records, an alert every ``step``; returns how many."""
    state = State()
    seq = 0
    at = T0
    policy = Policy(max_issues_per_hour=max_issues_per_hour, cooldown_seconds=3600)
    delivery = Delivery("req", "event_alert", "1767225600", "0" * 64)
    with open(path, "wb") as f:
        def add(event: Event) -> object:
            nonlocal seq
            seq += 1
            envelope = Envelope(seq, at, event)
            f.write(encode_line(envelope))
            return apply(state, envelope)

        add(ConfigApplied(policy))
        n = 0
        while seq < records:
            n += 1
            at += step
            issue = n % distinct_issues
            event_id = f"{n:032x}"
            body = (alert_body(event_id=event_id, issue_id=str(issue), hashes=[f"{issue:032x}"])
                    if full_body else small_body(event_id, issue))
            raw = json.dumps(body, separators=(",", ":"))
            decision = add(AlertReceived(delivery, alert_from_delivery(body), raw))
            assert decision is not None
            add(decision)  # type: ignore[arg-type]
            alert_seq = seq - 1
            if decision.action == "open":  # type: ignore[attr-defined]
                add(IssueOpened(alert_seq, str(issue), "acme/shop", n, f"https://gh/{n}", False))
            elif decision.action == "comment":  # type: ignore[attr-defined]
                add(CommentPosted(alert_seq, str(issue), "acme/shop", n, n, f"https://gh/c{n}",
                                  False))
    return seq
