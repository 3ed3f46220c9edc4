"""What both ingest baselines share (bench/baseline_server.py on a file,
bench/pg_baseline_server.py on PostgreSQL): the queue of appends a group commit
drains, and the HTTP side, which is the least a receiver must do: read the body,
check the HMAC, parse the JSON, append, answer as obsv answers. Only where the
batch goes differs. Imported by the baseline scripts, which run with bench/ on
their path."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web

Batch = list[tuple[bytes, "asyncio.Future[int]"]]


class Queue:
    """Appends waiting for the next group commit: one batch in flight at a time."""

    def __init__(self) -> None:
        self.queue: Batch = []
        self.wake = asyncio.Event()

    async def next_batch(self) -> Batch:
        """Everything appended since the last batch, once there is something."""
        while True:
            await self.wake.wait()
            self.wake.clear()
            batch, self.queue = self.queue, []
            if batch:
                return batch

    async def append(self, item: bytes) -> int:
        """Queue ``item``; its seq once its batch is durable."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.queue.append((item, future))
        self.wake.set()
        return await future


def _json(status: int, body: dict[str, object]) -> web.Response:
    """The answer as obsv builds it (obsv/ingress.py): orjson bytes, no detour through
    text, so the ratio does not count a cheaper answer as obsv's own gain."""
    return web.Response(body=orjson.dumps(body), status=status,
                        content_type="application/json", charset="utf-8")


def serve(port: int, secret: bytes, record: Callable[[bytes], Awaitable[int]],
          start: Callable[[], Awaitable[None]]) -> None:
    """Serve ``/webhooks/sentry`` and ``/healthz`` on 127.0.0.1:``port``; ``start``
    runs before the first request, ``record`` makes a verified body durable."""

    async def handle(request: web.Request) -> web.Response:
        raw = await request.read()
        expected = hmac.new(secret, raw, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, request.headers.get("Sentry-Hook-Signature", "")):
            return _json(401, {"error": "invalid_signature"})
        orjson.loads(raw)
        return _json(202, {"status": "accepted", "seq": await record(raw)})

    async def on_startup(_app: web.Application) -> None:
        await start()

    app = web.Application()
    app.on_startup.append(on_startup)
    app.router.add_post("/webhooks/sentry", handle)
    app.router.add_get("/healthz", lambda _: web.Response(text="ok"))
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)
