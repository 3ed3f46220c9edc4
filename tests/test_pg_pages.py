"""Reads and writes of the PostgreSQL log are bounded by bytes, not only by lines
(obsv/pglog.py rule 10, obsv/pgtools.py rules 2 and 3): a log whose lines hold bodies
near ``OBSV_MAX_BODY_BYTES`` is imported, exported, replayed and caught up with in
statements and pages of a few MB, a line larger than a page still goes through alone,
and the bytes come back exactly as the file holds them."""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from obsv import consumer, pglog, pgtools
from obsv.core.events import (
    AlertDecided,
    AlertReceived,
    Delivery,
    Envelope,
    Event,
    HookReceived,
)
from obsv.eventlog import EventLog, decode_line
from obsv.pglog import PgEventLog, connect, migrate
from obsv.pgtools import DatabaseLines, import_log

from .conftest import ClientFactory, wait_until
from .records import make_alert
from .test_pg_service import exported, obsv

# The budget the in-process tests lower PAGE_BYTES to, so a log of a few MB (cheap to
# make) spans many pages; the CLI test keeps the shipped budget.
BUDGET = 256 << 10


@pytest.fixture
def small_pages(monkeypatch: pytest.MonkeyPatch) -> int:
    """Pages and import statements of at most ``BUDGET`` bytes (or one line)."""
    monkeypatch.setattr(pglog, "PAGE_BYTES", BUDGET)
    monkeypatch.setattr(pgtools, "PAGE_BYTES", BUDGET)
    return BUDGET


def hook(n: int, size: int) -> HookReceived:
    """A delivery whose line is about ``size`` bytes: its body is quotes, which the
    line escapes to twice their number (as a body of JSON strings full of them)."""
    return HookReceived(Delivery(f"req-{n}", "issue", None, "ab" * 32), "created",
                        '"' * (size // 2))


def alert(n: int, size: int) -> AlertReceived:
    """An alert whose body makes a line of about ``size`` bytes; its light row is small."""
    raw = '{"pad":"' + "x" * size + '"}'
    return AlertReceived(Delivery(f"req-{n}", "event_alert", None, "ab" * 32),
                         make_alert(str(n), f"ev-{n}"), raw)


def big_log_events(budget: int) -> list[Event]:
    """Small records, lines of a fifth of ``budget`` (several to a page), and one line
    of three budgets (which must go alone)."""
    events: list[Event] = [hook(n, 200) for n in range(5)]
    events += [alert(n, budget // 5) if n % 2 else hook(n, budget // 5) for n in range(5, 35)]
    events.append(hook(35, 3 * budget))
    events += [hook(n, 200) for n in range(36, 41)]
    return events


async def write_log(path: Path, events: list[Event]) -> bytes:
    """A real JSONL log holding ``events``; its bytes."""
    log = EventLog.open(path)
    log.start()
    for event in events:
        await log.append(event)
    await log.close()
    return path.read_bytes()


def line_sizes(data: bytes) -> dict[int, int]:
    """Each seq's line length (without its newline) in a JSONL log's bytes."""
    return {seq: len(line) for seq, line in enumerate(data.splitlines(), 1)}


async def off_loop(call: Callable[[], Any]) -> Any:
    """Run a blocking call (a CLI-like tool with its own loop) on a thread."""
    return await asyncio.get_running_loop().run_in_executor(None, call)


async def record_insert_statements(url: str) -> asyncpg.Connection:
    """Migrate, then have the database itself note each INSERT into the log: its rows
    and the bytes of line and light it carried (a statement-level trigger)."""
    pool = await connect(url, max_size=1)
    try:
        await migrate(pool)
    finally:
        await pool.close()
    conn = await asyncpg.connect(url)
    await conn.execute("""
        CREATE TABLE seen_inserts (n serial, rows bigint, bytes bigint);
        CREATE FUNCTION note_insert() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO seen_inserts (rows, bytes)
            SELECT count(*), sum(octet_length(line) + coalesce(octet_length(light), 0))
            FROM inserted;
            RETURN NULL;
        END $$;
        CREATE TRIGGER note_insert AFTER INSERT ON obsv_events
            REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT EXECUTE FUNCTION note_insert();
    """)
    return conn


def read_back(url: str) -> bytes:
    """The database's log as ``replay`` and ``export`` read it (blocking)."""
    lines = DatabaseLines(url)
    try:
        return b"".join(line for _, line in lines)
    finally:
        lines.close()


def log_records(url: str) -> list[tuple[int, Envelope]]:
    """The database's records, decoded from the lines export reads (blocking)."""
    return [(n, decode_line(line)) for n, line in enumerate(read_back(url).splitlines(), 1)]


def peak_bytes_while(consume: Iterator[Any]) -> int:
    """The most memory Python held at once while ``consume`` was run through, each
    item dropped as it came (the offline commands stream the same way)."""
    tracemalloc.start()
    try:
        for _ in consume:
            pass
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


async def test_import_sends_statements_of_a_few_mb_of_a_log_of_large_bodies(
        pg_url: str, tmp_path: Path) -> None:
    # The shipped budget, through the command a user runs: lines of 2 MiB (a 1 MiB body
    # of backslashes or quotes, escaped) and small ones between them.
    budget = pglog.PAGE_BYTES
    events: list[Event] = []
    for n in range(6):
        events += [hook(2 * n, 300), hook(2 * n + 1, 2 << 20)]
    original = await write_log(tmp_path / "events.jsonl", events)
    assert len(original) > 3 * budget
    seen = await record_insert_statements(pg_url)
    try:
        loaded = await off_loop(lambda: obsv("import", str(tmp_path / "events.jsonl"),
                                             "--database-url", pg_url))
        assert loaded.returncode == 0, loaded.stderr
        statements = await seen.fetch("SELECT rows, bytes FROM seen_inserts ORDER BY n")
    finally:
        await seen.close()
    assert sum(s["rows"] for s in statements) == len(events)
    assert len(statements) > 1
    assert all(s["bytes"] <= budget for s in statements), [dict(s) for s in statements]
    assert await exported(pg_url) == original


async def test_import_batches_by_bytes_and_a_line_past_the_budget_goes_alone(
        pg_url: str, tmp_path: Path, small_pages: int) -> None:
    original = await write_log(tmp_path / "events.jsonl", big_log_events(small_pages))
    sizes = line_sizes(original)
    seen = await record_insert_statements(pg_url)
    try:
        count = await off_loop(lambda: import_log(tmp_path / "events.jsonl", pg_url))
        statements = await seen.fetch("SELECT rows, bytes FROM seen_inserts ORDER BY n")
    finally:
        await seen.close()
    assert count == len(sizes)
    assert sum(s["rows"] for s in statements) == len(sizes)
    for statement in statements:
        assert statement["bytes"] <= small_pages or statement["rows"] == 1, dict(statement)
    assert max(sizes.values()) > small_pages  # that line went, alone
    assert await off_loop(lambda: read_back(pg_url)) == original


async def test_export_and_replay_read_pages_of_a_few_mb_whatever_the_lines_hold(
        pg_url: str, tmp_path: Path, small_pages: int) -> None:
    events: list[Event] = [hook(n, small_pages // 5) for n in range(120)]  # 24 budgets
    original = await write_log(tmp_path / "events.jsonl", events)
    await off_loop(lambda: import_log(tmp_path / "events.jsonl", pg_url))

    def streamed() -> tuple[int, bytes]:
        lines = DatabaseLines(pg_url)
        try:
            data = b"".join(line for _, line in lines)
            return peak_bytes_while(iter(lines)), data
        finally:
            lines.close()

    peak, data = await off_loop(streamed)
    assert data == original
    # A page of a budget, held a few times over (the driver's buffer, the rows, each
    # line with its newline): never the whole log, which one page of 2,000 lines was.
    assert peak < 6 * small_pages < len(original) / 4, (peak, len(original))


async def test_a_follower_catches_up_on_large_bodies_in_pages_of_a_few_mb(
        pg_url: str, tmp_path: Path, small_pages: int) -> None:
    original = await write_log(tmp_path / "events.jsonl", big_log_events(small_pages))
    sizes = line_sizes(original)
    follower = await PgEventLog.open(pg_url)  # the empty log: it reads all that comes
    pages: list[list[Envelope]] = []
    follower.add_listener(lambda batch: pages.append(list(batch)))
    follower.start()
    try:
        await off_loop(lambda: import_log(tmp_path / "events.jsonl", pg_url))
        await wait_until(lambda: follower.last_seq == len(sizes), timeout=30)
    finally:
        await follower.close()
    seqs = [envelope.seq for page in pages for envelope in page]
    assert seqs == list(range(1, len(sizes) + 1))
    assert len(pages) > 1
    for page in pages:
        held = sum(sizes[envelope.seq] for envelope in page)
        assert held <= small_pages or len(page) == 1, (len(page), held)
    bodies = {envelope.seq: envelope.event for page in pages for envelope in page}
    assert bodies[36] == hook(35, 3 * small_pages)  # the line past the budget, whole


async def test_the_fold_reads_records_without_a_light_row_in_bounded_pages(
        pg_url: str, tmp_path: Path, small_pages: int) -> None:
    # hook.received keeps its body in the fold's reads too (no light row): the pages of
    # read(bodies=False) are bounded by bytes as well.
    events: list[Event] = [hook(n, small_pages // 5) for n in range(120)]  # 24 budgets
    original = await write_log(tmp_path / "events.jsonl", events)
    await off_loop(lambda: import_log(tmp_path / "events.jsonl", pg_url))
    log = await PgEventLog.open(pg_url)
    log.start()
    try:
        peak = await off_loop(lambda: peak_bytes_while(log.read(0, bodies=False,
                                                                first_seq=1)))
        read = await off_loop(lambda: [e.event for _, e in log.read(0, bodies=False)])
        whole = await off_loop(lambda: log.whole(range(1, 121)))
    finally:
        await log.close()
    assert read == events
    assert peak < 6 * small_pages < len(original) / 4, (peak, len(original))
    # whole() reads the pending intents' bodies in pages too: every one comes back.
    assert [whole[seq].event for seq in sorted(whole)] == events


async def test_a_burst_of_large_deliveries_is_written_in_statements_of_a_few_mb(
        pg_url: str, small_pages: int) -> None:
    log = await PgEventLog.open(pg_url)
    seen = await record_insert_statements(pg_url)
    log.start()
    try:
        # Queued together while nothing is in flight: one batch, before the bound.
        burst = await asyncio.gather(*(log.append(hook(n, small_pages // 3))
                                       for n in range(12)))
        # One call larger than the budget still goes in whole, in one statement.
        many = await log.append_many([hook(n, small_pages // 3) for n in range(12, 17)])
        statements = await seen.fetch("SELECT rows, bytes FROM seen_inserts ORDER BY n")
    finally:
        await seen.close()
        await log.close()
    assert [e.seq for e in burst + many] == list(range(1, 18))
    assert len(statements) > 2
    *bursts, call = statements
    assert sum(s["rows"] for s in bursts) == 12
    assert all(s["bytes"] <= small_pages for s in bursts), [dict(s) for s in bursts]
    assert call["rows"] == 5 and call["bytes"] > small_pages
    assert await off_loop(lambda: [e.event for _, e in log_records(pg_url)]) == [
        hook(n, small_pages // 3) for n in range(17)]


async def test_a_new_leader_records_a_backlog_of_decisions_in_bounded_statements(
        pg_url: str, tmp_path: Path, make_client: ClientFactory) -> None:
    # A log of alerts nobody decided (a leader gone for long while replicas took
    # deliveries, or a restart behind a backlog): the leader records every decision, a
    # bounded number per append, since an append is one statement that the writer never
    # splits; one append of them all could outlast the statement timeout and be retried
    # the same forever.
    backlog = consumer.RECORD_CHUNK * 2 + 300
    await write_log(tmp_path / "events.jsonl",
                    [alert(n, 100) for n in range(backlog)])
    conn = await record_insert_statements(pg_url)
    try:
        await off_loop(lambda: import_log(tmp_path / "events.jsonl", pg_url))
        await conn.execute("DELETE FROM seen_inserts")  # the import's own statements
        await make_client(database_url=pg_url)

        deadline = asyncio.get_running_loop().time() + 60
        while await conn.fetchval("SELECT count(*) FROM obsv_events "
                                  "WHERE type = 'alert.decided'") < backlog:
            assert asyncio.get_running_loop().time() < deadline, "the backlog was not decided"
            await asyncio.sleep(0.05)
        rows = [r["rows"] for r in await conn.fetch("SELECT rows FROM seen_inserts ORDER BY n")]
    finally:
        await conn.close()
    assert sum(rows) >= backlog  # every decision, besides the start's own records
    assert max(rows) <= consumer.RECORD_CHUNK, rows
    decisions = [e for _, e in await off_loop(lambda: log_records(pg_url))
                 if isinstance(e.event, AlertDecided)]
    assert sorted(d.event.alert_seq for d in decisions) == list(range(1, backlog + 1))
