"""``obsv render``: print what obsv would post for a payload, without a log or a network.

It uses the same renderer (built-in, or the operator's templates, with the same
redaction) and the same framing as the dry-run sink, so what it prints is what the
outbox file and GitHub would receive: the issue as ``outbox_text`` writes it, or the
comment's body. The comment is a recurrence with nothing held back, decided for a
placeholder alert seq 0 (its hidden marker says so).
"""

from __future__ import annotations

import argparse
import os
import sys
from importlib import resources
from pathlib import Path

import orjson

from obsv.core.alert import EVENT_ALERT, InvalidPayload, alert_from_delivery
from obsv.core.events import AlertDecided, LinkedIssue, Suppressed
from obsv.errors import UsageError
from obsv.settings import load_settings
from obsv.sink import outbox_text
from obsv.templates import load_renderer


def render_command(args: argparse.Namespace) -> int:
    """Run ``obsv render``; prints to stdout, returns 0 (usage problems raise)."""
    settings = load_settings(args.config, os.environ, require_secret=False)
    raw = _payload(Path(args.payload) if args.payload else None, settings.max_body_bytes)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise UsageError(f"--payload {args.payload}: not JSON; give a Sentry event_alert "
                         "body (a webhook delivery as Sentry sends it)") from None
    try:
        alert = alert_from_delivery(body)
    except InvalidPayload as problem:
        fields = ", ".join(problem.missing + problem.invalid)
        raise UsageError(f"--payload {args.payload or 'sample'}: not a usable {EVENT_ALERT} "
                         f"({fields}); give a Sentry event_alert body") from None
    renderer = load_renderer(settings.template_dir, settings.redact_pii)
    if args.comment:
        decision = AlertDecided(0, alert.sentry_issue_id, alert.fingerprint_key, "comment",
                                "recurrence", LinkedIssue(0, None), Suppressed(0, None, None))
        sys.stdout.write(renderer.comment(alert, decision, body))
    else:
        draft = renderer.issue(alert, body, settings.github_labels)
        sys.stdout.write(outbox_text(draft))
    return 0


def _payload(path: Path | None, limit: int) -> bytes:
    """The payload's bytes; like the server, nothing over ``OBSV_MAX_BODY_BYTES``."""
    if path is None:
        return resources.files("obsv.samples").joinpath("event_alert.json").read_bytes()
    try:
        with open(path, "rb") as f:
            raw = f.read(limit + 1)
    except OSError as exc:
        raise UsageError(f"--payload {path}: {exc.strerror}; give the path of a JSON "
                         "file") from None
    if len(raw) > limit:
        raise UsageError(f"--payload {path}: larger than OBSV_MAX_BODY_BYTES ({limit} bytes); "
                         "the server would answer 413 to it")
    return raw
