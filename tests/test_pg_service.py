"""obsv on PostgreSQL end to end (docs/reference.md §12): the real server with
OBSV_DATABASE_URL against the fake GitHub, and the offline commands on the database
(export, import, replay, why)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
from structlog.testing import capture_logs

from obsv.settings import Settings

from .conftest import SECRET, ClientFactory, alert_body, post_signed, wait_until
from .fakes import FakeGitHub, start_service_against
from .pgserver import PgServer
from .process import free_port

ROOT = Path(__file__).parent.parent


def obsv(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run the CLI in a child process, as a user would; stdout as bytes."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OBSV_")}
    return subprocess.run([sys.executable, "-m", "obsv", *argv], cwd=ROOT, capture_output=True,
                          env={**clean, **(env or {})}, timeout=60, check=False)


async def exported(url: str, *extra: str) -> bytes:
    """``obsv export`` of the database, run off the loop."""
    loop = asyncio.get_running_loop()
    result = await loop.run_in_executor(None, lambda: obsv("export", "--database-url", url,
                                                           *extra))
    assert result.returncode == 0, result.stderr
    return result.stdout


def records(data: bytes) -> list[dict[str, Any]]:
    """The records of JSONL bytes."""
    return [orjson.loads(line) for line in data.splitlines()]


async def test_deliveries_open_issues_with_the_log_in_postgresql(
        aiohttp_client: Any, settings: Settings, github: FakeGitHub, pg_url: str) -> None:
    service = await start_service_against(github, aiohttp_client, settings, database_url=pg_url)
    first = await service.alert("a" * 32)
    again = await service.alert("b" * 32)  # the same Sentry issue: a comment, after cooldown
    other = await service.alert("c" * 32, issue_id="42", hashes=["other"])
    assert 1 < first < again < other  # seq 1 is the config.applied of the start
    await wait_until(lambda: len(github.issues) == 2)
    log = records(await exported(pg_url))
    while sum(r["type"] == "issue.opened" for r in log) < 2:
        await asyncio.sleep(0.05)
        log = records(await exported(pg_url))
    assert [r["seq"] for r in log] == list(range(1, len(log) + 1))
    decided = {r["alert_seq"]: r["action"] for r in log if r["type"] == "alert.decided"}
    assert decided == {first: "open", again: "suppress", other: "open"}
    opened = sorted(r["number"] for r in log if r["type"] == "issue.opened")
    assert opened == [1, 2] and sorted(i["number"] for i in github.issues) == [1, 2]
    assert not settings.event_log.exists()  # nothing went to the JSONL file
    ready = await service.client.get("/readyz")
    assert ready.status == 200


async def test_a_dead_database_is_503_with_retry_after_and_recovers(
        make_client: ClientFactory, pg_server: PgServer, pg_url: str) -> None:
    client = await make_client(database_url=pg_url)
    assert (await post_signed(client, alert_body("a" * 32))).status == 202
    for _ in range(500):  # decided and posted: nothing left for the consumer to write
        if b"issue.opened" in await exported(pg_url):
            break
        await asyncio.sleep(0.02)
    pg_server.stop("immediate")
    try:
        answer = await post_signed(client, alert_body("b" * 32))
        assert answer.status == 503
        assert answer.headers["Retry-After"].isdigit()
        assert (await client.get("/readyz")).status == 503
    finally:
        pg_server.start()
    # Ready again once the database answers, before any delivery: a load balancer that
    # took the replica out would otherwise never send it one.
    for _ in range(500):
        if (await client.get("/readyz")).status == 200:
            break
        await asyncio.sleep(0.02)
    assert (await client.get("/readyz")).status == 200
    answer = await post_signed(client, alert_body("c" * 32))
    assert answer.status == 202
    log = records(await exported(pg_url))
    event_ids = [r["alert"]["event_id"] for r in log if r["type"] == "alert.received"]
    assert event_ids == ["a" * 32, "c" * 32]
    assert [r["seq"] for r in log] == list(range(1, len(log) + 1))


async def test_export_is_a_jsonl_log_that_replay_verifies_and_answers_alike(
        make_client: ClientFactory, pg_url: str, tmp_path: Path) -> None:
    client = await make_client(database_url=pg_url)
    for n, issue in enumerate(["1", "2", "1"]):
        body = alert_body(f"{n:032x}", issue_id=issue, hashes=[issue])
        assert (await post_signed(client, body)).status == 202
    await wait_until(lambda: len(list((tmp_path / "var" / "outbox").glob("*.md"))) == 2)
    data = await exported(pg_url)
    log = tmp_path / "exported.jsonl"
    log.write_bytes(data)
    loop = asyncio.get_running_loop()

    def offline() -> list[subprocess.CompletedProcess[bytes]]:
        return [obsv("replay", str(log), "--verify", "--secret", SECRET),
                obsv("replay", str(log), "--json"),
                obsv("replay", "--database-url", pg_url, "--json"),
                obsv("why", "1", "--log", str(log)),
                obsv("why", "1", "--database-url", pg_url),
                obsv("replay", "--verify", "--secret", SECRET, env={"OBSV_DATABASE_URL": pg_url})]
    verify, from_file, from_db, why_file, why_db, verify_db = await loop.run_in_executor(
        None, offline)
    assert verify.returncode == 0, verify.stderr
    assert b"chain: intact" in verify.stdout and b"3 stored bodies re-checked" in verify.stdout
    assert from_file.returncode == from_db.returncode == 0
    assert from_db.stdout == from_file.stdout and len(from_db.stdout.splitlines()) == 3
    # The same timeline; only the log it names differs (and "another alert now" the time).
    db_why = why_db.stdout.replace(pg_url.encode(), b"LOG").splitlines()[:-1]
    assert db_why == why_file.stdout.replace(str(log).encode(), b"LOG").splitlines()[:-1]
    assert b"open" in why_db.stdout
    assert verify_db.returncode == 0, verify_db.stderr
    assert b"chain: intact" in verify_db.stdout
    since = await exported(pg_url, "--since-seq", "3")
    assert data.splitlines(keepends=True)[3:] == since.splitlines(keepends=True)


async def test_import_then_export_gives_back_the_file_byte_for_byte(
        make_client: ClientFactory, pg_url: str, settings: Settings) -> None:
    client = await make_client()  # the JSONL log
    for n in range(3):
        assert (await post_signed(client, alert_body(f"{n:032x}"))).status == 202
    await client.close()  # a clean stop: the file holds its last record
    original = settings.event_log.read_bytes()
    loop = asyncio.get_running_loop()
    loaded = await loop.run_in_executor(None, lambda: obsv(
        "import", str(settings.event_log), "--database-url", pg_url))
    assert loaded.returncode == 0, loaded.stderr
    count = len(original.splitlines())
    assert loaded.stdout.decode().startswith(f"imported {count} records")
    assert await exported(pg_url) == original
    again = await loop.run_in_executor(None, lambda: obsv(
        "import", str(settings.event_log), "--database-url", pg_url))
    assert again.returncode == 2
    err = again.stderr.decode()
    assert err.count("\n") == 1 and "already holds an event log" in err


async def test_import_refuses_a_broken_chain_and_loads_nothing(
        pg_url: str, tmp_path: Path, make_client: ClientFactory, settings: Settings) -> None:
    client = await make_client()
    for n in range(3):
        assert (await post_signed(client, alert_body(f"{n:032x}"))).status == 202
    await client.close()
    lines = settings.event_log.read_bytes().splitlines(keepends=True)
    lines[2] = lines[2].replace(b'"seq"', b'"seq" ', 1)  # still a record, but edited
    broken = tmp_path / "broken.jsonl"
    broken.write_bytes(b"".join(lines))
    loop = asyncio.get_running_loop()
    refused = await loop.run_in_executor(None, lambda: obsv(
        "import", str(broken), "--database-url", pg_url))
    assert refused.returncode == 1
    err = refused.stderr.decode()
    assert err.count("\n") == 1 and "line 4: its prev does not match" in err
    assert await exported(pg_url) == b""


def test_an_unreachable_database_stops_serve_with_one_line(tmp_path: Path) -> None:
    url = f"postgresql://obsv:hunter2secret@127.0.0.1:{free_port()}/obsv"
    result = obsv("serve", env={"OBSV_SENTRY_CLIENT_SECRET": SECRET,
                                "OBSV_DATABASE_URL": url, "OBSV_PORT": str(free_port()),
                                "OBSV_OUTBOX_DIR": str(tmp_path / "outbox")})
    assert result.returncode == 2
    err = result.stderr.decode()
    assert err.count("\n") == 1, err
    last = err.strip()
    assert last.startswith("obsv: cannot use the database postgresql://obsv:***@127.0.0.1")
    assert "OBSV_DATABASE_URL" in last
    assert "hunter2secret" not in err


def test_a_url_that_is_not_postgresql_is_a_configuration_error() -> None:
    result = obsv("serve", env={"OBSV_SENTRY_CLIENT_SECRET": SECRET,
                                "OBSV_DATABASE_URL": "mysql://root:topsecret@db/obsv"})
    assert result.returncode == 2
    err = result.stderr.decode()
    assert err.count("\n") == 1 and "is not a postgresql:// URL" in err
    assert "topsecret" not in err and "mysql://root:***@db/obsv" in err


async def test_the_database_password_is_never_logged(
        make_client: ClientFactory, pg_server: PgServer, pg_url: str) -> None:
    # The test server trusts 127.0.0.1, so any password gets in: a real URL's shape.
    url = pg_url.replace("postgres@", "postgres:hunter2secret@")
    with capture_logs() as logs:
        client = await make_client(database_url=url)
        assert (await post_signed(client, alert_body("a" * 32))).status == 202
        pg_server.stop("immediate")
        try:
            assert (await post_signed(client, alert_body("b" * 32))).status == 503
        finally:
            pg_server.start()
        ready = await (await client.get("/readyz")).text()
    shown = repr(logs) + ready
    assert "hunter2secret" not in shown
    assert "postgres:***@127.0.0.1" in shown  # named, masked


async def test_an_empty_database_beside_a_jsonl_log_says_how_to_import_it(
        make_client: ClientFactory, settings: Settings, pg_url: str) -> None:
    client = await make_client()  # the JSONL log first
    assert (await post_signed(client, alert_body("a" * 32))).status == 202
    await client.close()
    with capture_logs() as logs:
        first = await make_client(database_url=pg_url)
    await first.close()  # one process deciding at a time (leadership is not this test's)
    [warning] = [e for e in logs if e["event"] == "log.file_not_imported"]
    assert f"obsv import {settings.event_log}" in warning["fix"]
    with capture_logs() as again:  # once imported (here: not empty), nothing to say
        await make_client(database_url=pg_url)
    assert not [e for e in again if e["event"] == "log.file_not_imported"]
