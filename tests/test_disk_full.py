"""A log on a real, tiny tmpfs: a full disk answers 503 and corrupts nothing."""

from __future__ import annotations

from pathlib import Path

from obsv.settings import Settings

from .conftest import (
    ClientFactory,
    alert_body,
    assert_contiguous,
    deliveries,
    fill,
    post_signed,
)


async def test_full_disk_is_503_and_recovers(make_client: ClientFactory, settings: Settings,
                                             tiny_disk: Path) -> None:
    log_path = tiny_disk / "events.jsonl"
    client = await make_client(event_log=log_path)
    assert (await post_signed(client, alert_body(event_id="a" * 32))).status == 202
    filler = fill(tiny_disk, leave_bytes=12 * 1024)

    acked = {}
    for n in range(10):
        event_id = f"{n:032x}"
        response = await post_signed(client, alert_body(event_id=event_id))
        if response.status == 202:
            acked[event_id] = (await response.json())["seq"]
            continue
        assert response.status == 503
        assert response.headers["Retry-After"].isdigit()
        assert await response.json() == {"error": "log_unavailable"}
        break
    else:
        raise AssertionError("the disk never filled up")
    assert log_path.read_bytes().endswith(b"\n")
    assert_contiguous(log_path)  # every line whole and parsed, no gap
    logged = {r["alert"]["event_id"]: r["seq"] for r in deliveries(log_path)
              if r["type"] == "alert.received"}
    assert acked.items() <= logged.items()
    assert (await client.get("/readyz")).status == 503

    filler.unlink()
    response = await post_signed(client, alert_body(event_id="b" * 32))
    assert response.status == 202
    seq = (await response.json())["seq"]
    assert seq > max(logged.values())
    assert (await client.get("/readyz")).status == 200
    records = assert_contiguous(log_path)
    assert any(r["seq"] == seq and r["alert"]["event_id"] == "b" * 32 for r in records)
