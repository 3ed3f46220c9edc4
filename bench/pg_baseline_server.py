"""The PostgreSQL ingest baseline: the least a durable receiver on PostgreSQL must do.

Reads the body, checks the HMAC, parses the JSON, and group-commits in the
database: one batch in flight, one transaction per batch that takes the seqs from a
head row (``UPDATE … RETURNING``) and inserts the bodies with one multi-row insert
from ``unnest`` into an lz4-compressed ``bytea`` column. obsv's PostgreSQL ingest is
measured against this in the same run (bench/pgingest.py).
Usage: python bench/pg_baseline_server.py PORT DATABASE_URL SECRET
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import sys

import asyncpg
import orjson
from aiohttp import web

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS base_head (id boolean PRIMARY KEY, seq bigint NOT NULL)",
    "INSERT INTO base_head VALUES (true, 0) ON CONFLICT DO NOTHING",
    "CREATE TABLE IF NOT EXISTS base_events (seq bigint PRIMARY KEY, body bytea NOT NULL)",
    "ALTER TABLE base_events ALTER COLUMN body SET COMPRESSION lz4",
)


class GroupCommit:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.queue: list[tuple[bytes, asyncio.Future[int]]] = []
        self.wake = asyncio.Event()

    async def run(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            batch, self.queue = self.queue, []
            if not batch:
                continue
            async with self.pool.acquire() as conn, conn.transaction():
                last = await conn.fetchval(
                    "UPDATE base_head SET seq = seq + $1 RETURNING seq", len(batch))
                first = last - len(batch) + 1
                await conn.execute(
                    "INSERT INTO base_events SELECT * FROM unnest($1::bigint[], $2::bytea[])",
                    list(range(first, last + 1)), [body for body, _ in batch])
            for n, (_, future) in enumerate(batch):
                future.set_result(first + n)

    async def append(self, body: bytes) -> int:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.queue.append((body, future))
        self.wake.set()
        return await future


def _json(status: int, body: dict[str, object]) -> web.Response:
    """The answer as obsv builds it (obsv/ingress.py): orjson bytes, no detour through
    text, so the ratio does not count a cheaper answer as obsv's own gain."""
    return web.Response(body=orjson.dumps(body), status=status,
                        content_type="application/json", charset="utf-8")


def main() -> None:
    port, url, secret = int(sys.argv[1]), sys.argv[2], sys.argv[3].encode()
    holder: list[GroupCommit] = []

    async def handle(request: web.Request) -> web.Response:
        raw = await request.read()
        expected = hmac.new(secret, raw, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, request.headers.get("Sentry-Hook-Signature", "")):
            return _json(401, {"error": "invalid_signature"})
        orjson.loads(raw)
        seq = await holder[0].append(raw)
        return _json(202, {"status": "accepted", "seq": seq})

    tasks: list[asyncio.Task[None]] = []

    async def start(_app: web.Application) -> None:
        pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
        async with pool.acquire() as conn:
            for statement in SCHEMA:
                await conn.execute(statement)
        holder.append(GroupCommit(pool))
        tasks.append(asyncio.create_task(holder[0].run()))

    app = web.Application()
    app.on_startup.append(start)
    app.router.add_post("/webhooks/sentry", handle)
    app.router.add_get("/healthz", lambda _: web.Response(text="ok"))
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


if __name__ == "__main__":
    main()
