"""A snapshot proves it was made from this log, not from another log that happens to
have a record of the same seq ending at the same offset (obsv/snapshots.py rule 3)."""

from __future__ import annotations

from structlog.testing import capture_logs

from obsv.settings import Settings

from .conftest import ClientFactory, alert_body, post_signed, records_of, wait_until
from .test_snapshots import decided

# Same lengths: the two logs line up byte for byte. The hash is the cooldown key.
OURS, THEIRS = "1117540176", "2227540176"
HASHES = {OURS: ["1" * 32], THEIRS: ["2" * 32]}


async def one_alert(make_client: ClientFactory, settings: Settings, issue_id: str,
                    event_id: str) -> int:
    client = await make_client(cooldown_seconds=3600)
    response = await post_signed(client, alert_body(event_id=event_id, issue_id=issue_id,
                                                     hashes=HASHES[issue_id]))
    seq: int = (await response.json())["seq"]
    await wait_until(lambda: seq in decided(settings.event_log)
                     and len(records_of(settings.event_log, "issue.opened")) == 1)
    await client.close()  # a clean stop writes the snapshot
    return seq


async def test_a_snapshot_of_another_log_with_the_same_shape_is_ignored(
        make_client: ClientFactory, settings: Settings) -> None:
    log = settings.event_log
    snapshot = log.with_name(log.name + ".snapshot")
    await one_alert(make_client, settings, THEIRS, "a" * 32)
    theirs_log, theirs_snapshot = log.read_bytes(), snapshot.read_bytes()
    log.unlink()
    snapshot.unlink()
    for outbox_file in settings.outbox_dir.iterdir():
        outbox_file.unlink()
    await one_alert(make_client, settings, OURS, "a" * 32)
    assert len(log.read_bytes()) == len(theirs_log) and log.read_bytes() != theirs_log
    snapshot.write_bytes(theirs_snapshot)  # e.g. a backup restored beside the wrong log

    with capture_logs() as logs:
        client = await make_client(cooldown_seconds=3600)
        response = await post_signed(client, alert_body(event_id="c" * 32, issue_id=THEIRS,
                                                          hashes=HASHES[THEIRS]))
        seq = (await response.json())["seq"]
        await wait_until(lambda: seq in decided(log))
        await client.close()
    # This log never saw THEIRS: a new issue, not a cooldown of the other log's issue.
    assert decided(log)[seq] == ("open", "new_issue")
    [ignored] = [e for e in logs if e["event"] == "snapshot.ignored"]
    assert "does not match the log" in ignored["reason"]
