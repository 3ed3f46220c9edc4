"""A ``next_attempt_at`` far in the future, already in a log (written before waits were
capped, or by hand), must not park an alert for centuries (docs/reference.md §6: a
next round is never more than an hour away)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson

from obsv.core.events import Envelope, IssueFailed
from obsv.eventlog import encode_line
from obsv.settings import Settings

from .conftest import ClientFactory, FakeClock, alert_body, post_signed, records_of, wait_until

T0 = datetime(2026, 5, 1, 10, 0, tzinfo=UTC)


async def test_a_recorded_retry_centuries_away_is_tried_within_the_hour(
        make_client: ClientFactory, settings: Settings) -> None:
    log = settings.event_log
    clock = FakeClock(T0)
    client = await make_client(clock=clock)
    response = await post_signed(client, alert_body(event_id="a" * 32))
    seq = (await response.json())["seq"]
    await wait_until(lambda: len(records_of(log, "issue.opened")) == 1)
    await client.close()
    # The log as an older obsv left it: the open failed, retry "in 300 years".
    lines = log.read_bytes().splitlines(keepends=True)
    kept = [line for line in lines if orjson.loads(line)["type"] != "issue.opened"]
    assert len(kept) == len(lines) - 1 and orjson.loads(kept[-1])["type"] == "alert.decided"
    failed = IssueFailed(seq, 3, 429, "429 rate limited", True, T0 + timedelta(days=365 * 300))
    log.write_bytes(b"".join(kept) + encode_line(Envelope(len(kept) + 1, T0, failed)))
    for issue_file in settings.outbox_dir.iterdir():
        issue_file.unlink()

    clock.advance(hours=2)  # well past the longest wait obsv ever sets
    client = await make_client(clock=clock)
    try:
        await wait_until(lambda: len(records_of(log, "issue.opened")) == 1, timeout=5)
    finally:
        await client.close()
