"""The snapshot beside the log (obsv/snapshots.py): used only when it proves it is whole."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from obsv.cli import main
from obsv.core.snapshot import SNAPSHOT_VERSION
from obsv.settings import Settings

from .conftest import ClientFactory, alert_body, post_signed, records_of, wait_until


async def send(client: Any, event_id: str) -> int:
    response = await post_signed(client, alert_body(event_id=event_id))
    assert response.status == 202
    seq: int = (await response.json())["seq"]
    return seq


def decided(log: Path) -> dict[int, tuple[str, str]]:
    return {r["alert_seq"]: (r["action"], r["reason"]) for r in records_of(log, "alert.decided")}


async def test_a_snapshot_cut_at_a_row_boundary_is_ignored(make_client: ClientFactory,
                                                           settings: Settings) -> None:
    log = settings.event_log
    client = await make_client(cooldown_seconds=3600)
    first = await send(client, "a" * 32)
    await wait_until(lambda: len(records_of(log, "issue.opened")) == 1)
    await client.close()  # a clean stop writes the snapshot
    snapshot = log.with_name(log.name + ".snapshot")
    lines = snapshot.read_bytes().splitlines(keepends=True)
    assert len(lines) > 3
    snapshot.write_bytes(b"".join(lines[:2]))  # whole lines, every row after the first gone

    with capture_logs() as logs:
        client = await make_client(cooldown_seconds=3600)
        second = await send(client, "b" * 32)
        await wait_until(lambda: second in decided(log))
        await client.close()
    assert decided(log) == {first: ("open", "new_issue"), second: ("suppress", "cooldown")}
    assert len(records_of(log, "issue.opened")) == 1
    assert [p.name for p in settings.outbox_dir.iterdir()] == ["1117540176.md"]
    [ignored] = [e for e in logs if e["event"] == "snapshot.ignored"]
    assert "no trailer" in ignored["reason"] and ignored["log_level"] == "warning"
    assert main(["replay", str(log), "--verify"]) == 0


async def test_a_whole_snapshot_is_used(make_client: ClientFactory, settings: Settings) -> None:
    log = settings.event_log
    client = await make_client(cooldown_seconds=3600)
    await send(client, "a" * 32)
    await wait_until(lambda: len(records_of(log, "issue.opened")) == 1)
    await client.close()
    with capture_logs() as logs:
        client = await make_client(cooldown_seconds=3600)
        await client.close()
    [restored] = [e for e in logs if e["event"] == "consumer.restored"]
    assert restored["from_snapshot"] is True
    assert not [e for e in logs if e["event"] == "snapshot.ignored"]


async def test_a_changed_row_is_caught_by_the_checksum(make_client: ClientFactory,
                                                       settings: Settings) -> None:
    log = settings.event_log
    client = await make_client(cooldown_seconds=3600)
    await send(client, "a" * 32)
    await wait_until(lambda: len(records_of(log, "issue.opened")) == 1)
    await client.close()
    snapshot = log.with_name(log.name + ".snapshot")
    text = snapshot.read_bytes()
    assert b"a" * 32 in text
    snapshot.write_bytes(text.replace(b"a" * 32, b"f" * 32))  # still valid JSON rows
    with capture_logs() as logs:
        client = await make_client(cooldown_seconds=3600)
        seq = await send(client, "f" * 32)
        await wait_until(lambda: seq in decided(log))
        await client.close()
    assert decided(log)[seq] == ("suppress", "cooldown")  # not a duplicate of a forged id
    [ignored] = [e for e in logs if e["event"] == "snapshot.ignored"]
    assert "does not match its" in ignored["reason"]


async def test_a_snapshot_of_an_older_version_is_ignored_with_a_warning(
        make_client: ClientFactory, settings: Settings) -> None:
    """An upgrade keeps serving: the old snapshot is named, the whole log folded."""
    log = settings.event_log
    client = await make_client(cooldown_seconds=3600)
    first = await send(client, "a" * 32)
    await wait_until(lambda: len(records_of(log, "issue.opened")) == 1)
    await client.close()
    snapshot = log.with_name(log.name + ".snapshot")
    header, version, *rows, _trailer = snapshot.read_bytes().splitlines(keepends=True)
    now = SNAPSHOT_VERSION
    assert version.startswith(b'["v",%d,' % now)
    lines = [header, version.replace(b'["v",%d,' % now, b'["v",%d,' % (now - 1), 1), *rows]
    digest = hashlib.sha256(b"".join(lines)).hexdigest()  # whole: only the version differs
    snapshot.write_bytes(b"".join(lines) + json.dumps(
        {"rows": len(lines) - 1, "sha256": digest}).encode() + b"\n")

    with capture_logs() as logs:
        client = await make_client(cooldown_seconds=3600)
        second = await send(client, "b" * 32)
        await wait_until(lambda: second in decided(log))
        await client.close()
    [ignored] = [e for e in logs if e["event"] == "snapshot.ignored"]
    assert ignored["reason"] == (f"snapshot version {now - 1}, this obsv reads version {now}: "
                                 "another obsv version wrote it")
    assert ignored["consequence"] == "folding the whole log"
    [restored] = [e for e in logs if e["event"] == "consumer.restored"]
    assert restored["from_snapshot"] is False
    assert decided(log) == {first: ("open", "new_issue"), second: ("suppress", "cooldown")}
