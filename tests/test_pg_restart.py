"""Starting on a PostgreSQL log (docs/reference.md §12, obsv/pglog.py rules 7 and 8): the
schema made once by replicas starting together, the fold without bodies, and snapshots
kept in the database."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
from structlog.testing import capture_logs

from obsv.core.events import SilenceExpired
from obsv.pglog import SCHEMA_VERSION, PgEventLog
from obsv.settings import Settings

from .conftest import FakeClock, wait_until
from .fakes import FakeGitHub, Fault, start_service_against


async def sql(url: str, query: str, *args: Any) -> list[asyncpg.Record]:
    """Rows of one query, on a connection of its own."""
    conn = await asyncpg.connect(url, timeout=10)
    try:
        return await conn.fetch(query, *args)
    finally:
        await conn.close()


async def test_replicas_starting_together_make_the_schema_once(pg_url: str) -> None:
    logs = await asyncio.gather(*(PgEventLog.open(pg_url) for _ in range(3)))
    try:
        for log in logs:
            log.start()
        appended = await asyncio.gather(*(log.append(SilenceExpired(f"s{n}", "test"))
                                          for n, log in enumerate(logs)))
        seqs = [envelope.seq for envelope in appended]
        assert sorted(seqs) == [1, 2, 3]
    finally:
        for log in logs:
            await log.close()
    assert [r["version"] for r in await sql(pg_url, "SELECT version FROM obsv_schema")] == [
        SCHEMA_VERSION]
    assert [r["seq"] for r in await sql(pg_url, "SELECT seq FROM obsv_head")] == [3]
    again = await PgEventLog.open(pg_url)  # idempotent on an existing schema
    assert again.last_seq == 3
    await again.close()


async def test_a_pending_alert_is_posted_after_a_restart_with_its_whole_body(
        aiohttp_client: Any, settings: Settings, pg_url: str) -> None:
    start = datetime.now(UTC)
    down = FakeGitHub()
    await down.start()
    down.fail("create_issue", *[Fault(500)] * 50)
    first = await start_service_against(down, aiohttp_client, settings, clock=FakeClock(start),
                                        database_url=pg_url)
    await first.alert("a" * 32)

    async def failed() -> bool:
        rows = await sql(pg_url, "SELECT 1 FROM obsv_events WHERE type = 'issue.failed'")
        return bool(rows)
    for _ in range(500):
        if await failed():
            break
        await asyncio.sleep(0.02)
    assert await failed()
    await first.client.close()
    await down.close()
    # A crash before any snapshot: the next start folds the whole log, without bodies.
    await sql(pg_url, "DELETE FROM obsv_snapshot")
    [light] = await sql(pg_url, "SELECT light FROM obsv_events WHERE type = 'alert.received'")
    assert orjson.loads(light["light"])["raw"] is None

    up = FakeGitHub()
    await up.start()
    try:
        later = FakeClock(start + timedelta(hours=2))  # past the retry's next_attempt_at
        await start_service_against(up, aiohttp_client, settings, clock=later,
                                    database_url=pg_url)
        await wait_until(lambda: len(up.issues) == 1)
        body = up.issues[0]["body"]
        assert "### Exception" in body and "heck is not defined" in body  # from the raw body
    finally:
        await up.close()


async def test_a_clean_stop_keeps_a_snapshot_in_the_database_and_the_next_start_uses_it(
        aiohttp_client: Any, settings: Settings, github: FakeGitHub, pg_url: str) -> None:
    first = await start_service_against(github, aiohttp_client, settings, database_url=pg_url)
    await first.alert("a" * 32)
    await wait_until(lambda: len(github.issues) == 1)
    await asyncio.sleep(0.2)  # the issue.opened record
    await first.client.close()
    [row] = await sql(pg_url, "SELECT data FROM obsv_snapshot")
    header = orjson.loads(bytes(row["data"]).split(b"\n", 1)[0])
    [last] = await sql(pg_url, "SELECT seq, line_sha256 FROM obsv_events ORDER BY seq DESC "
                               "LIMIT 1")
    assert header["head"] == f"{last['seq']}:{last['line_sha256']}"
    assert header["offset"] == last["seq"]  # a position in the database is a seq
    with capture_logs() as logs:
        second = await start_service_against(github, aiohttp_client, settings,
                                             database_url=pg_url)
        await second.alert("b" * 32)  # the same issue: suppressed by the restored state
    restored = [e for e in logs if e["event"] == "consumer.restored"]
    assert restored and restored[0]["from_snapshot"] is True
    assert restored[0]["last_seq"] == last["seq"]
    await asyncio.sleep(0.2)
    assert len(github.issues) == 1
