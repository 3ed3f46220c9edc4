"""The ingest baseline: the least a durable receiver must do, and nothing more.

Reads the body, checks the HMAC, parses the JSON, and group-commits one fsync'd
line per request. obsv's ingest is measured against this in the same run.
Usage: python bench/baseline_server.py PORT LOG SECRET [uvloop]
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import sys

import orjson
from aiohttp import web


class GroupCommit:
    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self.queue: list[tuple[bytes, asyncio.Future[int]]] = []
        self.wake = asyncio.Event()
        self.seq = 0

    def _write(self, data: bytes) -> None:
        os.write(self.fd, data)
        os.fdatasync(self.fd)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self.wake.wait()
            self.wake.clear()
            batch, self.queue = self.queue, []
            if not batch:
                continue
            await loop.run_in_executor(None, self._write, b"".join(line for line, _ in batch))
            for _, future in batch:
                self.seq += 1
                future.set_result(self.seq)

    async def append(self, line: bytes) -> int:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.queue.append((line, future))
        self.wake.set()
        return await future


def _json(status: int, body: dict[str, object]) -> web.Response:
    """The answer as obsv builds it (obsv/ingress.py): orjson bytes, no detour through
    text, so the ratio does not count a cheaper answer as obsv's own gain."""
    return web.Response(body=orjson.dumps(body), status=status,
                        content_type="application/json", charset="utf-8")


def main() -> None:
    port, path, secret = int(sys.argv[1]), sys.argv[2], sys.argv[3].encode()
    if sys.argv[4:] == ["uvloop"]:  # as obsv is run in the same benchmark
        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    log = GroupCommit(path)

    async def handle(request: web.Request) -> web.Response:
        raw = await request.read()
        expected = hmac.new(secret, raw, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, request.headers.get("Sentry-Hook-Signature", "")):
            return _json(401, {"error": "invalid_signature"})
        orjson.loads(raw)
        seq = await log.append(orjson.dumps({"raw": raw.decode()}) + b"\n")
        return _json(202, {"status": "accepted", "seq": seq})

    tasks: list[asyncio.Task[None]] = []

    async def start(_app: web.Application) -> None:
        tasks.append(asyncio.create_task(log.run()))

    app = web.Application()
    app.on_startup.append(start)
    app.router.add_post("/webhooks/sentry", handle)
    app.router.add_get("/healthz", lambda _: web.Response(text="ok"))
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


if __name__ == "__main__":
    main()
