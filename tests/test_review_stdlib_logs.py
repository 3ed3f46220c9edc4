"""Requests aiohttp rejects itself do not flood stderr with tracebacks (obsv/logs.py)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from .conftest import SECRET, alert_body, sentry_bytes, signed_headers
from .process import ServeProcess

DEADLINE = 20.0


async def exchange(port: int, request: bytes) -> bytes:
    """Send ``request``; everything the server answers until it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    received = b""
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(DEADLINE):
            while chunk := await reader.read(65536):
                received += chunk
    except ConnectionError:
        pass
    finally:
        writer.close()
    return received


async def test_requests_aiohttp_rejects_are_logged_as_one_throttled_json_line(
        tmp_path: Path) -> None:
    server = ServeProcess(tmp_path, {"OBSV_SENTRY_CLIENT_SECRET": SECRET,
                                     "OBSV_EVENT_LOG": str(tmp_path / "events.jsonl"),
                                     "OBSV_OUTBOX_DIR": str(tmp_path / "outbox")})
    raw = sentry_bytes(alert_body())
    head = "".join(f"{k}: {v}\r\n" for k, v in signed_headers(raw).items())
    brotli = (f"POST /webhooks/sentry HTTP/1.1\r\nHost: x\r\n{head}Content-Encoding: br\r\n"
              f"Content-Length: {len(raw)}\r\n\r\n").encode() + raw
    long_signature = (b"POST /webhooks/sentry HTTP/1.1\r\nHost: x\r\nSentry-Hook-Signature: "
                      + b"a" * 20_000 + b"\r\nContent-Length: 2\r\n\r\n{}")
    await server.start()
    try:
        answers = [await exchange(server.port, brotli) for _ in range(20)]
        answers += [await exchange(server.port, long_signature) for _ in range(5)]
    finally:
        assert server.stop() == 0
    assert all(answer.startswith(b"HTTP/1.") and b" 400 " in answer.split(b"\r\n")[0]
               for answer in answers)
    lines = server.stderr_path.read_text().splitlines()
    assert [line for line in lines if not line.startswith("{")] == []
    records = [json.loads(line) for line in lines]
    rejected = [r for r in records if r["event"] == "http.request_rejected"]
    # One line now, the rest counted in the next one a minute later (the test is shorter).
    assert len(rejected) == 1, rejected
    assert rejected[0]["status"] == 400 and rejected[0]["level"] == "info"
    assert "brotli" in rejected[0]["error"] and "Traceback" not in lines[0]
