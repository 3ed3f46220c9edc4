"""The test PostgreSQL itself (tests/pgserver.py): a fresh database per test."""

from __future__ import annotations

import asyncpg

from .pgserver import PgServer


async def test_each_test_gets_an_empty_database_it_can_write(pg_url: str) -> None:
    conn = await asyncpg.connect(pg_url, timeout=10)
    try:
        tables = await conn.fetchval(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        await conn.execute("CREATE TABLE t (x int)")
        await conn.execute("INSERT INTO t VALUES (1)")
        assert tables == 0
        assert await conn.fetchval("SELECT sum(x) FROM t") == 1
    finally:
        await conn.close()


async def test_a_stopped_server_refuses_connections_and_comes_back(
        pg_server: PgServer, pg_url: str) -> None:
    pg_server.stop()
    try:
        refused = False
        try:
            await asyncpg.connect(pg_url, timeout=5)
        except OSError:
            refused = True
        assert refused
    finally:
        pg_server.start()
    conn = await asyncpg.connect(pg_url, timeout=10)
    assert await conn.fetchval("SELECT 1") == 1
    await conn.close()
