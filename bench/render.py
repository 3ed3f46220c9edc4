"""Render: the built-in issue body for an event with 5,000 frames (and as many
breadcrumbs) against an ``orjson.loads`` of the same payload, in the same run. The body
shows only the top frames and the last breadcrumbs, so rendering must stay in
milliseconds however long the trace Sentry sends (docs/reference.md §6)."""

from __future__ import annotations

import copy
import json
import time
from importlib import resources
from typing import Any

import orjson

from obsv.core.alert import alert_from_delivery
from obsv.core.events import AlertDecided, LinkedIssue, Suppressed
from obsv.core.render import render_comment, render_issue

FRAMES = 5_000
ROUNDS = 50


def payload() -> dict[str, Any]:
    """The documented sample with a 5,000-frame, in-app, source-context stack."""
    body: dict[str, Any] = json.loads(
        resources.files("obsv.samples").joinpath("event_alert.json").read_text("utf-8"))
    event = body["data"]["event"]
    frame = {"filename": "app/handlers/deep.py", "abs_path": "/srv/app/handlers/deep.py",
             "function": "recurse", "module": "app.handlers.deep", "lineno": 42, "colno": 9,
             "in_app": True, "pre_context": ["def recurse(n):", "    if n:"],
             "context_line": "        return recurse(n - 1)", "post_context": ["    raise"],
             "vars": {"n": "17", "token": "secret-value", "payload": {"a": [1, 2, 3]}}}
    frames = [dict(copy.deepcopy(frame), lineno=i) for i in range(FRAMES)]
    event["exception"] = {"values": [{"type": "RecursionError", "value": "too deep",
                                      "stacktrace": {"frames": frames}}]}
    event["breadcrumbs"] = {"values": [{"category": "http", "message": f"GET /item/{i}",
                                        "level": "info"} for i in range(FRAMES)]}
    return body


def _best(fn: Any) -> float:
    best = float("inf")
    for _ in range(ROUNDS):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> dict[str, Any]:
    body = payload()
    raw = orjson.dumps(body)
    alert = alert_from_delivery(body)
    decision = AlertDecided(7, alert.sentry_issue_id, alert.fingerprint_key, "comment",
                            "recurrence", LinkedIssue(2, 12), Suppressed(0, None, None))
    parse = _best(lambda: orjson.loads(raw))
    issue = _best(lambda: render_issue(alert, body, ("agent:builder",)))
    comment = _best(lambda: render_comment(alert, decision, body))
    size = len(render_issue(alert, body, ("agent:builder",)).body)
    return {
        "name": "render",
        "rows": [
            ("payload", f"{FRAMES:,} frames, {FRAMES:,} breadcrumbs, {len(raw) / 1e6:.1f} MB"),
            ("orjson.loads of it (baseline)", f"{parse * 1e3:.2f} ms"),
            ("render_issue", f"{issue * 1e3:.2f} ms  ({issue / parse:.1f}x the parse; "
                             f"body {size:,} characters; target: milliseconds)"),
            ("render_comment", f"{comment * 1e3:.2f} ms  ({comment / parse:.1f}x the parse)"),
        ],
    }
