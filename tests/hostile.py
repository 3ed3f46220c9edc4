"""Hostile Sentry payloads shared by tests: the ones that broke obsv once."""

from __future__ import annotations

from .conftest import alert_body, sentry_bytes


def deep_breadcrumb_body(event_id: str, depth: int = 1000) -> bytes:
    """An alert whose breadcrumb nests ``depth`` lists deep, as raw bytes: json.dumps
    cannot write it, orjson (what obsv parses with) reads up to 1024 levels."""
    body = alert_body(event_id=event_id, breadcrumbs={"values": [
        {"level": "info", "category": "DEEP", "data": {"nested": "DEEP"}}]})
    deep = b"[" * depth + b'"bottom"' + b"]" * depth
    return sentry_bytes(body).replace(b'"DEEP"', deep)
