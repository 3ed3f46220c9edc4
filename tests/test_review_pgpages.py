"""A hostile review of the byte bounds of the PostgreSQL log (obsv/pglog.py rules 3
and 10): what the group commit's size estimate misses, and what a failed batch does
to the calls queued behind it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from obsv import pglog
from obsv.core.events import AlertReceived, Delivery, HookReceived
from obsv.eventlog import LogWriteError
from obsv.pglog import PgEventLog
from obsv.pgtools import import_log
from obsv.settings import Settings

from .conftest import ClientFactory, alert_body, post_signed, sentry_bytes, signed_headers
from .records import make_alert
from .test_pg_pages import BUDGET, hook, log_records, off_loop, record_insert_statements, write_log
from .test_pg_service import exported, records


@pytest.fixture
def small_pages(monkeypatch: pytest.MonkeyPatch) -> int:
    """Writer batches of at most ``BUDGET`` bytes (or one call)."""
    monkeypatch.setattr(pglog, "PAGE_BYTES", BUDGET)
    return BUDGET


def redelivery(n: int, title: str) -> AlertReceived:
    """An alert as ingress records a redelivery of a body already stored: no body
    (``raw`` null, its sha256), but the alert's own fields, which the body set."""
    return AlertReceived(Delivery(f"req-{n}", "event_alert", None, "ab" * 32),
                         make_alert(str(n), f"ev-{n}", title=title), None, "cd" * 32)


async def test_records_without_a_body_but_with_a_long_title_are_batched_by_their_size(
        pg_url: str, small_pages: int) -> None:
    # A body's title (or culprit, web_url, fingerprint) is not bounded: a 1 MiB body
    # can make a title of nearly 1 MiB. A redelivery keeps the alert and drops only the
    # body, so its line is as long; estimated at a kilobyte, thousands of them (up to
    # the connection cap) went into one statement of gigabytes again.
    title = "t" * (small_pages // 3)
    log = await PgEventLog.open(pg_url)
    seen = await record_insert_statements(pg_url)
    log.start()
    try:
        burst = await asyncio.gather(*(log.append(redelivery(n, title)) for n in range(12)))
        statements = await seen.fetch("SELECT rows, bytes FROM seen_inserts ORDER BY n")
    finally:
        await seen.close()
        await log.close()
    assert [e.seq for e in burst] == list(range(1, 13))
    assert sum(s["rows"] for s in statements) == 12
    assert all(s["bytes"] <= small_pages or s["rows"] == 1 for s in statements), [
        dict(s) for s in statements]
    assert await off_loop(lambda: [e.event for _, e in log_records(pg_url)]) == [
        redelivery(n, title) for n in range(12)]


async def test_an_alert_with_its_body_counts_the_alert_twice_line_and_light(
        pg_url: str, small_pages: int) -> None:
    # With its body, an alert's fields are in the line and again in the light row: a
    # small body with a long title (the escape of the body is not where the bytes are).
    title = "t" * (small_pages // 4)
    events = [AlertReceived(Delivery(f"req-{n}", "event_alert", None, "ab" * 32),
                            make_alert(str(n), f"ev-{n}", title=title), "{}")
              for n in range(12)]
    log = await PgEventLog.open(pg_url)
    seen = await record_insert_statements(pg_url)
    log.start()
    try:
        await asyncio.gather(*(log.append(event) for event in events))
        statements = await seen.fetch("SELECT rows, bytes FROM seen_inserts ORDER BY n")
    finally:
        await seen.close()
        await log.close()
    assert sum(s["rows"] for s in statements) == 12
    assert all(s["bytes"] <= small_pages or s["rows"] == 1 for s in statements), [
        dict(s) for s in statements]


async def test_a_delivery_never_records_a_line_many_times_longer_than_its_body(
        make_client: ClientFactory, settings: Settings) -> None:
    # Every estimate of a record's bytes (rule 3's batches, rule 10's pages, the fold's
    # memory) assumes a line is about as long as the body it came from.
    client = await make_client()
    raw = sentry_bytes(alert_body(hashes=["h" * 10_000],
                                  fingerprint=["checkout"] + ["{{ default }}"] * 1000))
    response = await client.post("/webhooks/sentry", data=raw, headers=signed_headers(raw))
    assert response.status == 202
    assert len(raw) < 40_000
    assert settings.event_log.stat().st_size < 10 * len(raw)


async def test_calls_queued_behind_a_batch_that_cannot_be_written_fail_with_it(
        pg_url: str, small_pages: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # The head row held by another session (an admin's, a frozen replica's): a batch
    # waits out the lock timeout and fails (503). Before the byte bound every call queued
    # then was in that batch; split into batches, each call behind it waited out the
    # same timeout again, one batch after another: a delivery waited the lock (or
    # connect, or statement) timeout times the megabytes ahead of it, without bound,
    # while the database stayed out of reach.
    monkeypatch.setitem(pglog.SERVER_SETTINGS, "lock_timeout", "300")
    log = await PgEventLog.open(pg_url)
    log.start()
    blocker = await asyncpg.connect(pg_url)
    try:
        first = await log.append(hook(0, 100))
        transaction = blocker.transaction()
        await transaction.start()
        await blocker.execute("SELECT * FROM obsv_head FOR UPDATE")
        # Queued together; each larger than a batch, so each is a batch of its own.
        calls = [asyncio.ensure_future(log.append(hook(n, small_pages)))
                 for n in range(1, 5)]
        await asyncio.wait(calls, return_when=asyncio.FIRST_COMPLETED)
        answered = [call.done() for call in calls]
        await asyncio.wait(calls)
        await transaction.rollback()
        after = await log.append(hook(5, 100))
    finally:
        await blocker.close()
        await log.close()
    assert answered == [True] * 4  # the first failure answered every call behind it
    for call in calls:
        with pytest.raises(LogWriteError):
            call.result()
    assert (first.seq, after.seq) == (1, 2)  # nothing of theirs was written
    assert await off_loop(lambda: [e.event for _, e in log_records(pg_url)]) == [
        hook(0, 100), hook(5, 100)]


async def test_a_bug_in_the_batch_estimate_never_stops_the_writer(
        pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # _next_batch runs outside the writer's guard: had the estimate raised (a record of
    # a shape it did not foresee), the writer task died, and every append after it, this
    # one included, waited for ever (no 202, no 503; /readyz still 200).
    def broken(event: object) -> int:
        raise TypeError("an estimate that did not foresee this record")

    monkeypatch.setattr(pglog, "_size_estimate", broken)
    log = await PgEventLog.open(pg_url)
    log.start()
    try:
        answered = await asyncio.wait_for(log.append(hook(0, 100)), 30)
        again = await asyncio.wait_for(log.append_many([hook(1, 100), hook(2, 100)]), 30)
    finally:
        await log.close()
    assert [answered.seq] + [e.seq for e in again] == [1, 2, 3]
    assert await off_loop(lambda: [e.event for _, e in log_records(pg_url)]) == [
        hook(n, 100) for n in range(3)]


async def test_an_issue_id_holding_a_nul_is_recorded_in_postgresql_as_in_a_jsonl_log(
        make_client: ClientFactory, pg_url: str) -> None:
    # The JSONL log writes it (JSON escapes it); the sentry_issue_id column is text,
    # which PostgreSQL refuses a NUL in: the batch failed, the delivery was answered
    # 503 at every retry, and with it every delivery in its batch and (rule 5) queued
    # behind it.
    client = await make_client(database_url=pg_url)
    answers = await asyncio.gather(
        post_signed(client, alert_body("a" * 32, issue_id="12\u00003"), request_id="r1"),
        post_signed(client, alert_body("b" * 32), request_id="r2"))
    assert [answer.status for answer in answers] == [202, 202]
    received = [r for r in records(await exported(pg_url)) if r["type"] == "alert.received"]
    ids = {r["alert"]["event_id"]: r["alert"]["sentry_issue_id"] for r in received}
    assert set(ids) == {"a" * 32, "b" * 32} and ids["a" * 32] == "12\u00003"


async def test_obsv_import_loads_a_jsonl_log_holding_an_issue_id_with_a_nul(
        pg_url: str, tmp_path: Path) -> None:
    event = AlertReceived(Delivery("req-1", "event_alert", None, "ab" * 32),
                          make_alert("12\u00003", "ev-1"), "{}")
    original = await write_log(tmp_path / "events.jsonl", [event])
    count = await off_loop(lambda: import_log(tmp_path / "events.jsonl", pg_url))
    assert count == 1
    assert await exported(pg_url) == original


async def test_calls_queued_behind_a_batch_whose_own_records_were_refused_still_go_in(
        pg_url: str, small_pages: int) -> None:
    # A data error is the batch's own records' (one that cannot be encoded: a bug
    # upstream, here a lone surrogate no UTF-8 line can hold), not the database's: the
    # calls behind it have nothing to do with it and are written.
    bad = hook(1, small_pages)
    bad = HookReceived(bad.delivery, "\ud800", bad.raw)
    log = await PgEventLog.open(pg_url)
    log.start()
    try:
        await log.append(hook(0, 100))
        calls = [asyncio.ensure_future(log.append(event))
                 for event in (bad, hook(2, 100), hook(3, 100))]
        await asyncio.wait(calls)
    finally:
        await log.close()
    with pytest.raises(LogWriteError):
        calls[0].result()
    assert [call.result().seq for call in calls[1:]] == [2, 3]
    assert await off_loop(lambda: [e.event for _, e in log_records(pg_url)]) == [
        hook(0, 100), hook(2, 100), hook(3, 100)]
