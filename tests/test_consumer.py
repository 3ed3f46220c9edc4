"""End to end through the real server: deliveries -> decisions -> dry-run outbox -> replay."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import stat
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from obsv.cli import main
from obsv.settings import Settings

from .conftest import (
    ClientFactory,
    FakeClock,
    alert_body,
    assert_contiguous,
    post_signed,
    read_log,
    records_of,
    wait_until,
)

START = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)


def decided(path: Path) -> dict[int, tuple[str, str]]:
    return {r["alert_seq"]: (r["action"], r["reason"]) for r in records_of(path, "alert.decided")}


async def send(client: Any, event_id: str, **fields: Any) -> int:
    response = await post_signed(client, alert_body(event_id=event_id, **fields))
    assert response.status == 202, await response.text()
    seq: int = (await response.json())["seq"]
    return seq


def replay_json(log: Path, capsys: pytest.CaptureFixture[str], *extra: str,
                code: int = 0) -> list[dict[str, Any]]:
    assert main(["replay", str(log), "--json", *extra]) == code
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


async def test_scenario_open_duplicate_cooldown_level_recurrence(
        make_client: ClientFactory, settings: Settings,
        capsys: pytest.CaptureFixture[str]) -> None:
    clock = FakeClock(START)
    client = await make_client(clock=clock, cooldown_seconds=600)
    log = settings.event_log
    opened = await send(client, "a" * 32)
    duplicate = await send(client, "a" * 32)
    clock.advance(seconds=60)
    held = await send(client, "b" * 32)
    warning = await send(client, "c" * 32, level="warning", issue_id="999")
    await wait_until(lambda: len(records_of(log, "issue.opened")) == 1)
    clock.advance(seconds=600)
    recurred = await send(client, "d" * 32)
    await wait_until(lambda: len(records_of(log, "comment.posted")) == 1)

    assert decided(log) == {
        opened: ("open", "new_issue"), duplicate: ("suppress", "duplicate"),
        held: ("suppress", "cooldown"), warning: ("suppress", "below_min_level"),
        recurred: ("comment", "recurrence"),
    }
    [issue] = records_of(log, "issue.opened")
    outbox_file = settings.outbox_dir / "1117540176.md"
    assert issue["alert_seq"] == opened and issue["dry_run"] is True
    assert issue["number"] is None and issue["url"] == str(outbox_file)
    [comment] = records_of(log, "comment.posted")
    assert comment["alert_seq"] == recurred and comment["comment_id"] is None
    [recurrence] = [r for r in records_of(log, "alert.decided") if r["alert_seq"] == recurred]
    assert recurrence["suppressed"]["count"] == 1
    assert recurrence["linked_issue"] == {"alert_seq": opened, "number": None}

    text = outbox_file.read_text()
    assert text.startswith("# [error] ReferenceError — <anonymous>:3")
    assert "Labels: agent:builder" in text
    assert text.count("<!-- obsv:sentry-issue=1117540176 -->") == 1
    assert "1 more alert of this issue arrived during the cooldown" in text
    assert stat.S_IMODE(os.stat(outbox_file).st_mode) == 0o600
    assert_contiguous(log)

    rows = replay_json(log, capsys)
    assert [(r["seq"], r["action"], r["reason"]) for r in rows] == [
        (opened, "open", "new_issue"), (duplicate, "suppress", "duplicate"),
        (held, "suppress", "cooldown"), (warning, "suppress", "below_min_level"),
        (recurred, "comment", "recurrence")]
    assert rows[0]["github"] == str(outbox_file)
    assert [r["linked_alert_seq"] for r in rows] == [None, None, opened, None, opened]
    assert main(["replay", str(log), "--verify"]) == 0
    assert "ok:" in capsys.readouterr().out


async def test_config_applied_is_recorded_when_the_policy_changes(
        make_client: ClientFactory, settings: Settings) -> None:
    client = await make_client()
    await client.close()
    client = await make_client()
    await client.close()
    assert len(records_of(settings.event_log, "config.applied")) == 1
    client = await make_client(min_level="warning")
    await client.close()
    policies = [r["policy"] for r in records_of(settings.event_log, "config.applied")]
    assert [p["min_level"] for p in policies] == ["error", "warning"]
    assert policies[0] == {"min_level": "error", "environments": [], "cooldown_seconds": 21600,
                           "max_issues_per_hour": 20, "repo": None, "labels": ["agent:builder"],
                           "reopen_window_seconds": 1209600, "mute_label": "obsv:mute",
                           "close_on_resolve": False, "resolve_in_sentry": False}


async def test_restart_decides_nothing_twice(make_client: ClientFactory, settings: Settings,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    clock = FakeClock(START)
    log = settings.event_log
    client = await make_client(clock=clock, cooldown_seconds=60, snapshot_every=3)
    first = [await send(client, f"{n:032x}", issue_id=str(n % 3), hashes=[f"h{n % 3}"])
             for n in range(6)]
    await wait_until(lambda: len(records_of(log, "issue.opened")) == 3)
    await client.close()
    assert log.with_name(log.name + ".snapshot").exists()

    clock.advance(seconds=120)
    client = await make_client(clock=clock, cooldown_seconds=60, snapshot_every=3)
    second = [await send(client, f"{n + 100:032x}", issue_id=str(n % 3), hashes=[f"h{n % 3}"])
              for n in range(3)]
    await wait_until(lambda: len(records_of(log, "comment.posted")) == 3)
    await client.close()

    counts = Counter(r["alert_seq"] for r in records_of(log, "alert.decided"))
    assert set(counts) == set(first + second) and set(counts.values()) == {1}
    assert len(records_of(log, "issue.opened")) == 3
    assert len({r["alert_seq"] for r in records_of(log, "comment.posted")}) == 3
    assert main(["replay", str(log), "--verify"]) == 0


async def test_undecided_alerts_are_decided_on_start(settings: Settings,
                                                     make_client: ClientFactory) -> None:
    """An alert recorded just before a crash (no decision yet) is decided on restart."""
    from obsv.core.alert import alert_from_delivery
    from obsv.core.events import AlertReceived, Delivery
    from obsv.eventlog import EventLog

    eventlog = EventLog.open(settings.event_log)
    eventlog.start()
    body = alert_body(event_id="e" * 32)
    await eventlog.append(AlertReceived(Delivery("r", "event_alert", None, "s"),
                                        alert_from_delivery(body), json.dumps(body)))
    await eventlog.close()

    client = await make_client()
    await wait_until(lambda: len(records_of(settings.event_log, "issue.opened")) == 1)
    await client.close()
    assert decided(settings.event_log) == {1: ("open", "new_issue")}


async def test_tampered_decision_fails_verify(make_client: ClientFactory, settings: Settings,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    client = await make_client()
    seq = await send(client, "a" * 32)
    await wait_until(lambda: len(records_of(settings.event_log, "issue.opened")) == 1)
    await client.close()
    lines = settings.event_log.read_text().splitlines()
    tampered = [line.replace('"action":"open","reason":"new_issue"',
                             '"action":"suppress","reason":"storm_budget"')
                if '"type":"alert.decided"' in line else line for line in lines]
    assert tampered != lines
    settings.event_log.write_text("\n".join(tampered) + "\n")
    capsys.readouterr()
    assert main(["replay", str(settings.event_log), "--verify"]) == 1
    out = capsys.readouterr().out
    assert f"alert {seq}: recorded suppress (storm_budget), derived open (new_issue)" in out


async def test_verify_reports_gaps_and_torn_tails(settings: Settings, make_client: ClientFactory,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    client = await make_client()
    await send(client, "a" * 32)
    await client.close()
    lines = settings.event_log.read_bytes().splitlines(keepends=True)
    settings.event_log.write_bytes(b"".join([lines[0], *lines[2:]]) + b'{"seq":99')
    capsys.readouterr()
    assert main(["replay", str(settings.event_log), "--verify"]) == 1
    out = capsys.readouterr().out
    assert "seq 3 where 2 was due" in out and "torn last line" in out


def test_replay_of_a_missing_log_is_a_usage_error(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", str(tmp_path / "nope.jsonl")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("obsv: no event log at") and err.count("\n") == 1


async def test_why_explains_one_issue(make_client: ClientFactory, settings: Settings,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    client = await make_client(cooldown_seconds=3600)
    await send(client, "a" * 32)
    await send(client, "b" * 32)
    await wait_until(lambda: len(records_of(settings.event_log, "issue.opened")) == 1)
    await wait_until(lambda: len(decided(settings.event_log)) == 2)  # both recorded
    await client.close()
    capsys.readouterr()
    assert main(["why", "1117540176", "--log", str(settings.event_log)]) == 0
    out = capsys.readouterr().out
    assert "Sentry issue 1117540176: 2 alert(s)" in out
    assert "decision: open (new_issue" in out and "decision: suppress (cooldown" in out
    assert "issue opened:" in out
    assert "Another alert now" in out and "suppress (cooldown), until" in out
    assert main(["why", "42", "--log", str(settings.event_log)]) == 1


async def test_replay_filters_and_current_policy(make_client: ClientFactory, settings: Settings,
                                                 capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock(START)
    client = await make_client(clock=clock)
    await send(client, "a" * 32, level="warning", issue_id="1")
    clock.advance(hours=2)
    await send(client, "b" * 32, issue_id="2")
    await client.close()
    capsys.readouterr()
    assert [r["sentry_issue_id"] for r in replay_json(settings.event_log, capsys, "--issue", "2")
            ] == ["2"]
    assert [r["sentry_issue_id"] for r in replay_json(
        settings.event_log, capsys, "--since", "2026-05-01T10:00:00Z")] == ["2"]
    monkeypatch.setenv("OBSV_MIN_LEVEL", "warning")
    rows = replay_json(settings.event_log, capsys, "--policy", "current", code=1)
    assert (rows[0]["action"], rows[0]["recorded_action"]) == ("open", "suppress")
    assert main(["replay", str(settings.event_log), "--verify", "--policy", "current"]) == 1


def sealed(header: dict[str, Any], rows: list[Any]) -> bytes:
    """A snapshot file with a trailer that matches its rows (obsv/snapshots.py rule 2)."""
    lines = [json.dumps(value, separators=(",", ":")).encode() + b"\n"
             for value in [header, *rows]]
    digest = hashlib.sha256(b"".join(lines)).hexdigest()
    return b"".join(lines) + json.dumps({"rows": len(rows), "sha256": digest}).encode() + b"\n"


@pytest.mark.parametrize("damage", ["garbage", "wrong_offset", "other_log"])
async def test_a_snapshot_that_does_not_match_is_ignored(
        make_client: ClientFactory, settings: Settings, damage: str) -> None:
    log = settings.event_log
    client = await make_client(cooldown_seconds=3600)
    await send(client, "a" * 32)
    await wait_until(lambda: len(records_of(log, "issue.opened")) == 1)
    await client.close()
    snapshot = log.with_name(log.name + ".snapshot")
    header, *rows, _ = (json.loads(line) for line in snapshot.read_bytes().splitlines())
    if damage == "garbage":
        snapshot.write_bytes(b"\x00not json\n")
    elif damage == "wrong_offset":  # whole, but its offset is not where its seq ends
        snapshot.write_bytes(sealed({**header, "offset": 17}, rows))
    else:  # whole, but of a longer log: its seq is not where its offset points
        rows[0][2] += 9
        snapshot.write_bytes(sealed(header, rows))
    before = len(read_log(log))

    with capture_logs() as logs:
        client = await make_client(cooldown_seconds=3600)
        seq = await send(client, "b" * 32)
        await wait_until(lambda: seq in decided(log))
        await client.close()
    [ignored] = [e for e in logs if e["event"] == "snapshot.ignored"]
    assert ignored["reason"].startswith("JSONDecodeError" if damage == "garbage" else
                                        "does not match the log")
    assert decided(log)[seq] == ("suppress", "cooldown")  # the fold still knew the issue
    assert len(read_log(log)) == before + 2
    assert main(["replay", str(log), "--verify"]) == 0


async def test_snapshot_is_written_while_running(make_client: ClientFactory,
                                                 settings: Settings) -> None:
    log = settings.event_log
    snapshot = log.with_name(log.name + ".snapshot")
    client = await make_client(snapshot_every=2)
    await send(client, "a" * 32)
    await send(client, "b" * 32)
    await wait_until(snapshot.exists)  # written by the running service, not at stop
    # The gauge is set on the loop once the worker thread's write has returned, a turn
    # or two after the file appears.
    deadline = asyncio.get_running_loop().time() + 10
    while "obsv_snapshot_seq 0.0" in await (await client.get("/metrics")).text():
        assert asyncio.get_running_loop().time() < deadline, "obsv_snapshot_seq stayed 0"
        await asyncio.sleep(0.01)
    await client.close()
    client = await make_client(snapshot_every=2)
    seq = await send(client, "c" * 32)
    await wait_until(lambda: seq in decided(log))
    await client.close()
    assert decided(log)[seq] == ("suppress", "cooldown")
    assert main(["replay", str(log), "--verify"]) == 0


def write_hook_log(path: Path, count: int) -> None:
    """``count`` hook.received records, written as bytes: a log that takes a while to
    fold (each line is parsed and decoded) without taking a while to write."""
    path.parent.mkdir(parents=True, exist_ok=True)
    head = b'{"seq":'
    tail = (b',"at":"2026-05-01T09:00:00.000000Z","type":"hook.received","v":1,"delivery":'
            b'{"request_id":"r","resource":"installation","hook_timestamp":null,'
            b'"signature":"s"},"action":"created","raw":"{\\"action\\":\\"created\\"}"}\n')
    with open(path, "wb") as f:
        for start in range(1, count + 1, 10_000):
            f.write(b"".join(head + str(seq).encode() + tail
                             for seq in range(start, min(count, start + 9_999) + 1)))
    path.chmod(0o600)


async def test_deliveries_are_accepted_while_the_log_is_folded(
        aiohttp_client: Any, settings: Settings) -> None:
    """The receiver appends as soon as the log is open; /readyz is 503 until the
    consumer has caught up, and then the alert is decided exactly once."""
    from obsv.server import create_app

    from .conftest import wait_ready

    count = 200_000  # folds in about a second here; a delivery takes milliseconds
    write_hook_log(settings.event_log, count)
    client = await aiohttp_client(create_app(settings))  # listening, not waiting for ready
    with capture_logs() as logs:
        seq = await send(client, "a" * 32)
        readiness = await client.get("/readyz")
        assert readiness.status == 503, "the fold ended before the delivery: make the log longer"
        assert "not caught up" in (await readiness.json())["problems"][0]
        await wait_ready(client, timeout=60)
    assert seq == count + 1
    [restored] = [e for e in logs if e["event"] == "consumer.restored"]
    assert (restored["last_seq"], restored["arrived_meanwhile"]) == (count, 1)
    await wait_until(lambda: len(records_of(settings.event_log, "issue.opened")) == 1)
    await client.close()
    assert [r["alert_seq"] for r in records_of(settings.event_log, "alert.decided")] == [seq]
    assert_contiguous(settings.event_log)


async def test_one_consumer_step_decides_what_was_appended(settings: Settings) -> None:
    """Consumer.step() drives one round of deciding, without the background tasks."""
    from obsv.consumer import Consumer
    from obsv.core.alert import alert_from_delivery
    from obsv.core.events import AlertReceived, Delivery, Policy
    from obsv.eventlog import EventLog
    from obsv.metrics import Metrics
    from obsv.sink import DryRunSink

    eventlog = EventLog.open(settings.event_log)
    eventlog.start()
    clock = FakeClock(START)
    consumer = Consumer(eventlog, DryRunSink(settings.outbox_dir, None, clock), Policy(),
                        clock=clock, metrics=Metrics())
    await consumer.catch_up()
    body = alert_body(event_id="a" * 32)
    await eventlog.append(AlertReceived(Delivery("r", "event_alert", None, "s"),
                                        alert_from_delivery(body), json.dumps(body)))
    assert records_of(settings.event_log, "alert.decided") == []
    await consumer.step()
    [decision] = records_of(settings.event_log, "alert.decided")
    assert (decision["alert_seq"], decision["action"]) == (1, "open")
    assert set(consumer.state.intents) == {1}
    await consumer.step()  # folds the decision record: the intent may now be posted
    assert consumer.state.intents[1].recorded and consumer.state.unrecorded == {}
    assert len(read_log(settings.event_log)) == 2  # nothing recorded twice
    await consumer.stop()
    await eventlog.close()
