"""Redeliveries of a body already in the log are recorded by hash (docs/reference.md §4)."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime

import pytest

from obsv.cli import main
from obsv.core.alert import alert_from_delivery
from obsv.core.codec import CodecError, decode, encode
from obsv.core.events import AlertReceived, Delivery, Envelope
from obsv.settings import Settings

from .conftest import (
    ClientFactory,
    alert_body,
    assert_contiguous,
    post_signed,
    records_of,
    sentry_bytes,
    wait_until,
)


def big_delivery(size: int = 1_000_000) -> bytes:
    body = alert_body(event_id="a" * 32)
    body["data"]["event"]["extra"] = {"blob": ""}
    body["data"]["event"]["extra"]["blob"] = "x" * (size - len(sentry_bytes(body)))
    raw = sentry_bytes(body)
    assert len(raw) == size
    return raw


def decided(settings: Settings) -> dict[int, tuple[str, str]]:
    return {r["alert_seq"]: (r["action"], r["reason"])
            for r in records_of(settings.event_log, "alert.decided")}


async def test_200_identical_deliveries_store_the_body_once(make_client: ClientFactory,
                                                            settings: Settings) -> None:
    raw = big_delivery()
    client = await make_client()
    response = await post_signed(client, raw, request_id="first")
    assert response.status == 202
    first: int = (await response.json())["seq"]
    await wait_until(lambda: first in decided(settings))

    async def redeliver(n: int) -> int:
        answer = await post_signed(client, raw, request_id=f"retry-{n}")
        status: int = answer.status
        return status

    statuses: list[int] = []
    for batch in range(0, 199, 8):
        statuses += await asyncio.gather(*(redeliver(n) for n in range(batch,
                                                                         min(199, batch + 8))))
    assert statuses == [202] * 199
    received = records_of(settings.event_log, "alert.received")
    assert len(received) == 200
    [whole] = [r for r in received if r["raw"] is not None]
    assert whole["seq"] == first and whole["raw"] == raw.decode()
    digest = hashlib.sha256(raw).hexdigest()
    assert all(r["raw"] is None and r["raw_sha256"] == digest for r in received[1:])
    assert settings.event_log.stat().st_size < 3_000_000  # not 200 MB

    await wait_until(lambda: len(decided(settings)) == 200)
    assert decided(settings) == {r["seq"]: ("open", "new_issue") if r["seq"] == first
                                 else ("suppress", "duplicate") for r in received}
    await wait_until(lambda: len(records_of(settings.event_log, "issue.opened")) == 1)
    await client.close()

    # Nothing reading the log trips on a body stored by hash: a restart (from the
    # snapshot the stop wrote), replay --verify and why.
    client = await make_client()
    await client.close()
    assert_contiguous(settings.event_log)
    assert main(["replay", str(settings.event_log), "--verify"]) == 0
    assert main(["why", "1117540176", "--log", str(settings.event_log)]) == 0


async def test_a_different_body_for_the_same_event_id_is_stored_whole(
        make_client: ClientFactory, settings: Settings) -> None:
    client = await make_client()
    first = alert_body(event_id="a" * 32)
    changed = alert_body(event_id="a" * 32, message="the same event, other bytes")
    seqs = []
    for body in (first, first, changed):
        response = await post_signed(client, body)
        assert response.status == 202
        seqs.append((await response.json())["seq"])
        await wait_until(lambda: seqs[-1] in decided(settings))
    await client.close()
    received = records_of(settings.event_log, "alert.received")
    assert [r["raw"] is None for r in received] == [False, True, False]
    assert received[2]["raw"] == sentry_bytes(changed).decode()
    assert [decided(settings)[seq][1] for seq in seqs] == ["new_issue", "duplicate", "duplicate"]


def test_the_codec_reads_bodies_stored_by_hash_and_older_lines() -> None:
    body = alert_body()
    at = datetime(2026, 5, 1, tzinfo=UTC)
    delivery = Delivery("r", "event_alert", None, "s")
    by_hash = Envelope(7, at, AlertReceived(delivery, alert_from_delivery(body), None, "ab" * 32))
    line = encode(by_hash)
    assert (line["raw"], line["raw_sha256"]) == (None, "ab" * 32)
    assert decode(line) == by_hash
    whole = encode(Envelope(8, at, AlertReceived(delivery, alert_from_delivery(body), "{}")))
    assert "raw_sha256" not in whole  # lines with a body look as they always did
    assert decode(whole).event.raw_sha256 is None  # type: ignore[union-attr]
    with pytest.raises(CodecError):
        decode({**line, "raw_sha256": None})




async def test_a_redelivery_after_a_changed_body_carries_the_changed_body_hash(
        make_client: ClientFactory, settings: Settings) -> None:
    """The hash of a stored body is computed once and kept with its signature: a new
    body stored for the same event id must not inherit the hash of the old one."""
    client = await make_client()
    first = alert_body(event_id="a" * 32)
    changed = alert_body(event_id="a" * 32, message="the same event, other bytes")
    seqs = []
    for body in (first, first, first, changed, changed):
        response = await post_signed(client, body)
        assert response.status == 202
        seqs.append((await response.json())["seq"])
        await wait_until(lambda: seqs[-1] in decided(settings))
    await client.close()
    received = records_of(settings.event_log, "alert.received")
    assert [r["raw"] is None for r in received] == [False, True, True, False, True]
    first_hash = hashlib.sha256(sentry_bytes(first)).hexdigest()
    assert [r.get("raw_sha256") for r in received] == [
        None, first_hash, first_hash, None, hashlib.sha256(sentry_bytes(changed)).hexdigest()]
    assert main(["replay", str(settings.event_log), "--verify"]) == 0
