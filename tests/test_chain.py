"""The tamper-evident log (docs/reference.md §11): a log written by the real server is
edited the ways a forger would, and the real CLI (``python -m obsv replay --verify``)
names the first broken line; an untouched log, and an older log without ``prev``
continued by this obsv, pass.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from obsv.core.events import AlertReceived, Delivery
from obsv.eventlog import EventLog, chain, encode_line

from .conftest import (
    SECRET,
    ClientFactory,
    FakeClock,
    alert_body,
    post_signed,
    records_of,
    sentry_bytes,
    wait_until,
)
from .records import Log, make_alert, seconds
from .test_audit_cli import obsv

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ZEROS = "0" * 64


def line_hash(line: bytes) -> str:
    return hashlib.sha256(line.rstrip(b"\n")).hexdigest()


async def serve_alerts(make_client: ClientFactory, log: Path, issues: int = 3,
                       redeliver: bool = False) -> list[bytes]:
    """Alerts of ``issues`` Sentry issues through the real server, each decided and its
    dry-run issue opened; the server is stopped; the log's lines."""
    client = await make_client(clock=FakeClock(T0))
    for n in range(issues):
        raw = sentry_bytes(alert_body(event_id=f"{n:032x}", issue_id=str(100 + n),
                                      hashes=[f"{n:032x}"], title=f"Boom {n}"))
        assert (await post_signed(client, raw, request_id=f"r{n}")).status == 202
        if redeliver:
            assert (await post_signed(client, raw, request_id=f"again{n}")).status == 202
    await wait_until(lambda: len(records_of(log, "issue.opened")) == issues)
    await client.close()
    return log.read_bytes().splitlines(keepends=True)


def renumber(lines: list[bytes], seqs: list[int]) -> list[bytes]:
    """The lines with their ``seq`` set to ``seqs``: what a forger hiding a change does."""
    return [re.sub(rb'"seq":\d+', b'"seq":%d' % seq, line, count=1)
            for line, seq in zip(lines, seqs, strict=True)]


def rechain(lines: list[bytes]) -> list[bytes]:
    """The lines with every ``prev`` recomputed: a forger who knows the chain's rule."""
    bare = [re.sub(rb'^\{"prev":"[0-9a-f]{64}",', b"{", line) for line in lines]
    pieces, _ = chain(bare, ZEROS)
    joined = b"".join(pieces)
    return joined.splitlines(keepends=True)


def verify(path: Path, *args: str) -> Any:
    return obsv("replay", str(path), "--verify", *args)


def line_of(lines: list[bytes], kind: str, nth: int = 0) -> int:
    """The 0-based index of the ``nth`` line of record type ``kind``."""
    return [i for i, line in enumerate(lines) if b'"type":"%s"' % kind.encode() in line][nth]


async def test_an_untouched_log_from_the_server_verifies(make_client: ClientFactory,
                                                         settings: Any) -> None:
    lines = await serve_alerts(make_client, settings.event_log)

    records = [orjson.loads(line) for line in lines]
    assert records[0]["prev"] == ZEROS
    assert all(r["prev"] == line_hash(before) for r, before in zip(records[1:], lines,
                                                                      strict=False))
    result = verify(settings.event_log)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"chain: intact over {len(lines)} record(s) with prev" in result.stdout
    assert "MISMATCH" not in result.stdout


async def test_one_changed_byte_is_named_by_the_line_after_it(make_client: ClientFactory,
                                                              settings: Any) -> None:
    lines = await serve_alerts(make_client, settings.event_log)
    k = line_of(lines, "alert.received", 1)
    assert b'"title":"Boom 1"' in lines[k]
    lines[k] = lines[k].replace(b'"title":"Boom 1"', b'"title":"Boom 7"')  # still valid JSON
    settings.event_log.write_bytes(b"".join(lines))

    result = verify(settings.event_log)

    assert result.returncode == 1
    seq = orjson.loads(lines[k + 1])["seq"]
    assert (f"MISMATCH line {k + 2}: chain broken at seq {seq}: its prev is not the hash of "
            f"line {k + 1}: line {k + 1} was changed") in result.stdout
    assert "chain: broken (1 link(s))" in result.stdout


async def test_a_byte_changed_inside_a_body_is_named_though_no_body_is_decoded(
        make_client: ClientFactory, settings: Any) -> None:
    """Without a secret the audit steps over the bodies unread (issue 12); the chain is
    still the hash of each line's bytes, so an edit inside a body breaks it."""
    lines = await serve_alerts(make_client, settings.event_log)
    k = line_of(lines, "alert.received", 1)
    inside = b'\\"title\\":\\"Boom 1\\"'  # the body's own title, escaped in "raw"
    assert lines[k].count(inside) == 1
    lines[k] = lines[k].replace(inside, inside.replace(b"Boom 1", b"Boom 7"))
    settings.event_log.write_bytes(b"".join(lines))

    result = verify(settings.event_log)

    assert result.returncode == 1
    seq = orjson.loads(lines[k + 1])["seq"]
    assert (f"MISMATCH line {k + 2}: chain broken at seq {seq}: its prev is not the hash "
            f"of line {k + 1}: line {k + 1} was changed") in result.stdout


async def test_one_changed_byte_of_a_decision_reason_is_named(make_client: ClientFactory,
                                                               settings: Any) -> None:
    lines = await serve_alerts(make_client, settings.event_log)
    k = line_of(lines, "alert.decided", 0)
    lines[k] = lines[k].replace(b'"reason":"new_issue"', b'"reason":"new_issuE"')
    settings.event_log.write_bytes(b"".join(lines))

    result = verify(settings.event_log)

    assert result.returncode == 1
    assert f"MISMATCH line {k + 2}: chain broken" in result.stdout
    assert "recorded open (new_issuE), derived open (new_issue)" in result.stdout


async def test_a_removed_record_with_renumbered_seqs_is_named(make_client: ClientFactory,
                                                              settings: Any) -> None:
    lines = await serve_alerts(make_client, settings.event_log)
    k = line_of(lines, "issue.opened", 0)
    forged = lines[:k] + lines[k + 1:]
    forged = renumber(forged, list(range(1, len(forged) + 1)))
    settings.event_log.write_bytes(b"".join(forged))

    result = verify(settings.event_log)

    assert result.returncode == 1
    assert "where" not in result.stdout  # the seqs run on: only the chain tells
    assert f"MISMATCH line {k + 1}: chain broken at seq {k + 1}" in result.stdout


async def test_a_reordered_pair_is_named(make_client: ClientFactory, settings: Any) -> None:
    lines = await serve_alerts(make_client, settings.event_log)
    k = line_of(lines, "issue.opened", 1)
    lines[k], lines[k + 1] = lines[k + 1], lines[k]
    lines = renumber(lines, list(range(1, len(lines) + 1)))
    settings.event_log.write_bytes(b"".join(lines))

    result = verify(settings.event_log)

    assert result.returncode == 1
    assert f"MISMATCH line {k + 1}: chain broken at seq {k + 1}" in result.stdout
    assert "the first is named above" in result.stdout


async def test_a_truncated_tail_fails_against_the_head_kept_elsewhere(
        make_client: ClientFactory, settings: Any) -> None:
    lines = await serve_alerts(make_client, settings.event_log)
    head = f"{len(lines)}:{line_hash(lines[-1])}"
    kept = verify(settings.event_log, "--head", head)
    assert kept.returncode == 0, kept.stdout + kept.stderr
    assert f"head {head}: seq {len(lines)} is at line {len(lines)}" in kept.stdout

    settings.event_log.write_bytes(b"".join(lines[:-2]))  # the chain itself is still whole
    result = verify(settings.event_log, "--head", head)

    assert result.returncode == 1
    assert (f"MISMATCH seq {len(lines)}: --head {head}: the log ends at seq {len(lines) - 2} "
            f"and holds no seq {len(lines)}: the log was truncated") in result.stdout


async def test_a_rewritten_last_line_fails_against_the_head(make_client: ClientFactory,
                                                            settings: Any) -> None:
    """The chain cannot see a change to the last line (no line after it vouches for it):
    the head kept elsewhere does."""
    lines = await serve_alerts(make_client, settings.event_log)
    head = f"{len(lines)}:{line_hash(lines[-1])}"
    lines[-1] = lines[-1].replace(b'"dry_run":true', b'"dry_run":false')
    settings.event_log.write_bytes(b"".join(lines))

    assert verify(settings.event_log).returncode == 0  # what the chain alone says
    result = verify(settings.event_log, "--head", head)

    assert result.returncode == 1
    assert f"MISMATCH line {len(lines)}: --head {head}: the line holding seq" in result.stdout
    assert "rewritten" in result.stdout


def test_a_bad_head_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"")
    for args in (["--verify", "--head", "12"], ["--verify", "--head", "0:" + ZEROS],
                 ["--head", "1:" + ZEROS]):
        result = obsv("replay", str(path), *args)
        assert result.returncode == 2, (args, result)
        assert result.stderr.count("\n") == 1 and "--head" in result.stderr


async def test_a_forged_body_fails_its_signature_though_the_chain_was_redone(
        make_client: ClientFactory, settings: Any) -> None:
    lines = await serve_alerts(make_client, settings.event_log, redeliver=True)
    received = [orjson.loads(line) for line in lines if b'"alert.received"' in line]
    assert [r["raw"] is None for r in received] == [False, True] * 3
    ok = verify(settings.event_log, "--secret", SECRET)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "signatures: 6 stored bodies re-checked, 0 fail" in ok.stdout

    k = line_of(lines, "alert.received", 2)  # the second alert's whole body
    lines[k] = lines[k].replace(b'Boom 1', b'Boom 9')  # in alert and raw, as a forger would
    forged = rechain(lines)
    settings.event_log.write_bytes(b"".join(forged))

    result = obsv("replay", str(settings.event_log), "--verify",
                  env={"OBSV_SENTRY_CLIENT_SECRET": SECRET})  # the configured secret

    assert result.returncode == 1
    assert "chain: intact" in result.stdout  # the forger redid the chain ...
    seq = orjson.loads(forged[k])["seq"]
    again = orjson.loads(forged[line_of(forged, "alert.received", 3)])
    assert again["raw"] is None and again["alert"]["event_id"] == f"{1:032x}"
    # ... but not the signature: the body and its redelivery (checked by raw_sha256
    # against it) both fail.
    assert (f"MISMATCH seq {seq}: 2 of 6 stored bodies do not match their recorded "
            f"signature (seq {seq}, {again['seq']})") in result.stdout
    assert "signatures: 6 stored bodies re-checked, 2 fail" in result.stdout
    wrong = verify(settings.event_log, "--secret", "not-the-secret")
    assert "6 of 6 stored bodies do not match" in wrong.stdout


def v1_log() -> list[bytes]:
    """Lines written before the chain: records without ``prev``."""
    log = Log()
    log.config()
    for _ in range(2):
        log.alert(after=seconds(60), issue="100")
    return [encode_line(envelope) for envelope in log.records]


async def test_an_older_log_continued_by_this_obsv_verifies(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    old = v1_log()
    path.write_bytes(b"".join(old))
    eventlog = EventLog.open(path, clock=lambda: T0)
    eventlog.start()
    await eventlog.append_many([AlertReceived(Delivery("r", "event_alert", None, "s"),
                                              make_alert("200", "ev-new"), "{}")] * 2)
    await eventlog.close()
    lines = path.read_bytes().splitlines(keepends=True)
    assert orjson.loads(lines[len(old)])["prev"] == line_hash(old[-1])

    result = verify(path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "chain: intact over 2 record(s) with prev" in result.stdout

    path.write_bytes(b"".join(lines) + old[-1].replace(b'"seq":5', b'"seq":8'))
    broken = verify(path)
    assert broken.returncode == 1
    assert (f"MISMATCH line {len(lines) + 1}: chain broken at seq 8: has no prev, though "
            "the chain started before it") in broken.stdout


async def test_a_checkpoint_is_written_while_records_arrive_not_when_idle(
        make_client: ClientFactory, settings: Any) -> None:
    clock = FakeClock(T0)
    client = await make_client(clock=clock)
    log = settings.event_log

    async def alert(n: int) -> None:
        raw = sentry_bytes(alert_body(event_id=f"{n:032x}", issue_id=str(100 + n),
                                      hashes=[f"{n:032x}"]))
        assert (await post_signed(client, raw, request_id=f"r{n}")).status == 202
        await wait_until(lambda: len(records_of(log, "issue.opened")) == n + 1)

    await alert(0)
    clock.advance(seconds=59)
    await alert(1)
    assert records_of(log, "log.checkpoint") == []  # not 60 s yet
    clock.advance(seconds=2)
    await alert(2)
    await wait_until(lambda: len(records_of(log, "log.checkpoint")) == 1)
    clock.advance(seconds=3600)  # idle: nothing arrives, and the checkpoint is no arrival
    await client.get("/readyz")
    await client.close()

    lines = log.read_bytes().splitlines(keepends=True)
    [checkpoint] = records_of(log, "log.checkpoint")
    before = lines[checkpoint["seq"] - 2]
    assert checkpoint["head_seq"] == orjson.loads(before)["seq"] == checkpoint["seq"] - 1
    assert checkpoint["head_sha256"] == line_hash(before) == checkpoint["prev"]

    result = verify(log, "--head", f"{checkpoint['head_seq']}:{checkpoint['head_sha256']}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (f"last checkpoint: line {checkpoint['seq']} (seq {checkpoint['seq']}), head "
            f"{checkpoint['head_seq']}:{checkpoint['head_sha256']}") in result.stdout


async def test_no_checkpoint_on_an_idle_log(make_client: ClientFactory, settings: Any) -> None:
    clock = FakeClock(T0)
    client = await make_client(clock=clock)
    raw = sentry_bytes(alert_body())
    assert (await post_signed(client, raw)).status == 202
    await wait_until(lambda: len(records_of(settings.event_log, "issue.opened")) == 1)
    for _ in range(5):
        clock.advance(seconds=600)
        await asyncio.sleep(0.05)
    await client.close()
    assert records_of(settings.event_log, "log.checkpoint") == []


async def test_replay_why_and_the_snapshot_head_work_on_a_chained_log(
        make_client: ClientFactory, settings: Any) -> None:
    lines = await serve_alerts(make_client, settings.event_log)

    replay = obsv("replay", str(settings.event_log), "--json")
    assert replay.returncode == 0, replay.stderr
    assert [orjson.loads(r)["action"] for r in replay.stdout.splitlines()] == ["open"] * 3
    why = obsv("why", "101", "--log", str(settings.event_log))
    assert why.returncode == 0, why.stderr
    assert "decision: open (new_issue" in why.stdout

    snapshot = settings.event_log.with_name("events.jsonl.snapshot")
    header = orjson.loads(snapshot.read_bytes().splitlines()[0])  # written at the clean stop
    assert header["head"] == f"{len(lines)}:{line_hash(lines[-1])}"
    assert verify(settings.event_log, "--head", header["head"]).returncode == 0
