"""Logging: JSON lines, secrets redacted, and a dead stderr never fails a delivery."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import structlog

from obsv.logs import configure

from .conftest import SECRET, alert_body, sentry_bytes, signed_headers
from .process import free_port


def test_json_lines_with_credentials_redacted() -> None:
    out = io.BytesIO()
    stream = io.TextIOWrapper(out, write_through=True)
    try:
        configure("json", stream=stream)
        structlog.get_logger("t").info("hello", github_token="ghp_x", client_secret="s",
                                       seq=3)
        line = json.loads(out.getvalue().decode().splitlines()[-1])
    finally:
        configure("console", stream=sys.__stderr__)
    assert line["event"] == "hello" and line["seq"] == 3 and line["level"] == "info"
    assert line["github_token"] == "<redacted>" and line["client_secret"] == "<redacted>"
    assert line["timestamp"].endswith("Z")


def test_closed_stderr_does_not_fail_a_delivery(tmp_path: Path) -> None:
    """A log shipper that goes away must not turn accepted deliveries into 500s."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "obsv", "serve"], cwd=tmp_path, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, env={**os.environ, "OBSV_SENTRY_CLIENT_SECRET": SECRET,
                                     "OBSV_PORT": str(port), "OBSV_LOG_FORMAT": "json",
                                     "OBSV_EVENT_LOG": str(tmp_path / "events.jsonl")})
    url = f"http://127.0.0.1:{port}"
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # wait until the consumer is ready
            if b"consumer.ready" in line:
                break
        proc.stderr.close()  # every later log write now fails with EPIPE
        statuses = []
        for n in range(2):
            raw = sentry_bytes(alert_body(event_id=f"{n:032x}"))
            request = urllib.request.Request(url + "/webhooks/sentry", data=raw,
                                             headers=signed_headers(raw))
            with urllib.request.urlopen(request, timeout=10) as response:
                statuses.append(response.status)
        assert statuses == [202, 202]
    finally:
        proc.terminate()
        proc.wait(timeout=20)
