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
import sys

import asyncpg
from baseline_http import Queue, serve

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS base_head (id boolean PRIMARY KEY, seq bigint NOT NULL)",
    "INSERT INTO base_head VALUES (true, 0) ON CONFLICT DO NOTHING",
    "CREATE TABLE IF NOT EXISTS base_events (seq bigint PRIMARY KEY, body bytea NOT NULL)",
    "ALTER TABLE base_events ALTER COLUMN body SET COMPRESSION lz4",
)


class GroupCommit(Queue):
    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__()
        self.pool = pool

    async def run(self) -> None:
        while True:
            batch = await self.next_batch()
            async with self.pool.acquire() as conn, conn.transaction():
                last = await conn.fetchval(
                    "UPDATE base_head SET seq = seq + $1 RETURNING seq", len(batch))
                first = last - len(batch) + 1
                await conn.execute(
                    "INSERT INTO base_events SELECT * FROM unnest($1::bigint[], $2::bytea[])",
                    list(range(first, last + 1)), [body for body, _ in batch])
            for n, (_, future) in enumerate(batch):
                future.set_result(first + n)


def main() -> None:
    port, url, secret = int(sys.argv[1]), sys.argv[2], sys.argv[3].encode()
    holder: list[GroupCommit] = []
    tasks: list[asyncio.Task[None]] = []

    async def record(raw: bytes) -> int:
        return int(await holder[0].append(raw))

    async def start() -> None:
        pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
        async with pool.acquire() as conn:
            for statement in SCHEMA:
                await conn.execute(statement)
        holder.append(GroupCommit(pool))
        tasks.append(asyncio.create_task(holder[0].run()))

    serve(port, secret, record, start)


if __name__ == "__main__":
    main()
