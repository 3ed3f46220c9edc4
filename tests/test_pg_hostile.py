"""Hostile configuration and a misbehaving database (docs/reference.md §12, §1 exit
codes): URLs in every form libpq accepts, passwords that need escaping and never show,
a database that is not obsv's, the offline commands' bad arguments, and a database
that dies under a command or under running replicas."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import urllib.parse
from pathlib import Path

import asyncpg
import orjson
import pytest
from structlog.testing import capture_logs

from obsv.core.events import SilenceExpired
from obsv.pglog import DatabaseUnavailable, PgEventLog, require_supported
from obsv.pgtools import DatabaseLines

from .conftest import SECRET, ClientFactory, alert_body, post_signed, wait_until
from .pgserver import PgServer
from .process import ServeProcess, free_port
from .replicas import deliver, get_text, leader_of, role, stop_quietly, wait_records, wait_role
from .test_eventlog_contract import start_writer, verify_chain
from .test_pg_service import exported, obsv, records

# Every character a URL must escape in a password, and one that is not ASCII.
PASSWORD = "h@rd:p/ss%w?rd#é"
ENCODED = urllib.parse.quote(PASSWORD, safe="")
_roles = itertools.count(1)


def _shown_forms() -> list[str]:
    """The password as a leak could show it: raw, escaped, and its distinctive core."""
    return [PASSWORD, ENCODED, "p/ss%w", "p%2Fss"]


def assert_no_password(text: str) -> None:
    """``text`` holds the password in no form."""
    for form in _shown_forms():
        assert form not in text, f"the password ({form!r}) shows in: {text!r}"


@pytest.fixture
def password_url(pg_server: PgServer, pg_url: str) -> str:
    """The URL of this test's database for a role that must give ``PASSWORD``."""
    role = f"obsv_pw_{os.getpid()}_{next(_roles)}"
    database = urllib.parse.urlsplit(pg_url).path.lstrip("/")
    escaped = PASSWORD.replace("'", "''")
    pg_server.psql(f"CREATE ROLE {role} LOGIN PASSWORD '{escaped}'")
    pg_server.psql(f"ALTER DATABASE \"{database}\" OWNER TO {role}")
    pg_server.psql(f"ALTER SCHEMA public OWNER TO {role}", database)
    pg_server.require_password(role)
    return f"postgresql://{role}:{ENCODED}@127.0.0.1:{pg_server.port}/{database}"


def serve_env(tmp_path: Path, url: str) -> dict[str, str]:
    """What ``obsv serve`` needs besides the database (ServeProcess sets the port)."""
    return {"OBSV_SENTRY_CLIENT_SECRET": SECRET, "OBSV_DATABASE_URL": url,
            "OBSV_OUTBOX_DIR": str(tmp_path / "outbox"),
            "OBSV_GITHUB_POLL_SECONDS": "0"}


def one_line(result_stderr: bytes) -> str:
    """The command's stderr, asserted to be a single line."""
    err = result_stderr.decode()
    assert err.count("\n") == 1, err
    return err.strip()


# -- the URL: every form, and the password never shown ----------------------------------


async def test_a_password_with_characters_a_url_escapes_works_and_never_shows(
        tmp_path: Path, password_url: str) -> None:
    replica = ServeProcess(tmp_path, serve_env(tmp_path, password_url))
    try:
        await replica.start()
        await deliver(replica.url, "a" * 32)
        shown = (await get_text(replica.url + "/readyz") + await get_text(replica.url + "/metrics"))
        assert replica.proc is not None
        with open(f"/proc/{replica.proc.pid}/cmdline", "rb") as cmdline:
            shown += cmdline.read().decode(errors="replace")
        assert replica.stop() == 0
    finally:
        stop_quietly(replica)
    shown += replica.stderr_path.read_text()
    assert '"leader.elected"' in shown  # the log was read: it is where a leak would be
    assert_no_password(shown)


def test_a_password_given_as_a_query_parameter_is_masked_too(tmp_path: Path) -> None:
    # libpq and asyncpg take ?password= as well as user:password@.
    url = f"postgresql://obsv@127.0.0.1:{free_port()}/obsv?sslmode=disable&password={ENCODED}"
    for argv, env in ((["serve"], serve_env(tmp_path, url)),
                      (["export", "--database-url", url], {}),
                      (["replay", "--database-url", url], {})):
        result = obsv(*argv, env=env)
        assert result.returncode == 2
        line = one_line(result.stderr)
        assert "password=***" in line and "cannot" in line
        assert_no_password(line)


@pytest.mark.parametrize("raw", ["p/ss", "p@ss", "p#ss", "p?ss"])
def test_a_password_with_a_raw_url_character_says_to_escape_it_and_never_shows(
        tmp_path: Path, raw: str) -> None:
    url = f"postgresql://obsv:{raw}word@127.0.0.1:{free_port()}/obsv"
    result = obsv("serve", env=serve_env(tmp_path, url))
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert "percent-encode it" in line and "obsv:***@" in line
    assert f"{raw}word" not in line and raw[1:] + "word" not in line


async def test_a_socket_url_and_a_url_with_several_hosts_reach_the_log(
        make_client: ClientFactory, pg_server: PgServer, pg_url: str) -> None:
    client = await make_client(database_url=pg_url)
    assert (await post_signed(client, alert_body("a" * 32))).status == 202
    await client.close()
    expected = await exported(pg_url)
    database = urllib.parse.urlsplit(pg_url).path
    socket_dir = urllib.parse.quote(str(pg_server.socket_dir), safe="")
    dead = free_port()
    forms = [
        # libpq's socket forms: the directory in ?host=, or escaped as the host.
        f"postgresql://{database}?host={pg_server.socket_dir}&port={pg_server.port}"
        "&user=postgres",
        f"postgresql://postgres@{socket_dir}:{pg_server.port}{database}",
        # Several hosts, the first one down: how a client follows an HA failover.
        f"postgres://postgres@127.0.0.1:{dead},127.0.0.1:{pg_server.port}{database}"
        "?target_session_attrs=read-write&application_name=audit",
    ]
    for url in forms:
        assert await exported(url) == expected, url


# -- the database: not obsv's, newer, bad arguments -----------------------------------


async def test_a_database_holding_a_table_of_obsvs_name_is_refused_and_left_alone(
        tmp_path: Path, pg_url: str) -> None:
    conn = await asyncpg.connect(pg_url, timeout=10)
    try:
        await conn.execute("CREATE TABLE obsv_events (id serial PRIMARY KEY, name text)")
        await conn.execute("INSERT INTO obsv_events (name) VALUES ('theirs')")
    finally:
        await conn.close()
    loop = asyncio.get_running_loop()
    result = await loop.run_in_executor(None, lambda: obsv("serve", env=serve_env(tmp_path,
                                                                                    pg_url)))
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert "obsv_events, not made by obsv" in line and "a database of obsv's own" in line
    conn = await asyncpg.connect(pg_url, timeout=10)
    try:
        assert await conn.fetchval("SELECT name FROM obsv_events") == "theirs"
        assert await conn.fetchval("SELECT to_regclass('obsv_schema')") is None
    finally:
        await conn.close()


async def test_a_schema_from_a_newer_obsv_is_refused_and_never_migrated_down(
        tmp_path: Path, pg_url: str) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    loop = asyncio.get_running_loop()
    made = await loop.run_in_executor(None, lambda: obsv("import", str(empty),
                                                         "--database-url", pg_url))
    assert made.returncode == 0, made.stderr
    conn = await asyncpg.connect(pg_url, timeout=10)
    try:
        await conn.execute("INSERT INTO obsv_schema (version) VALUES (99)")
    finally:
        await conn.close()
    for argv, env in ((["serve"], serve_env(tmp_path, pg_url)),
                      (["import", str(empty), "--database-url", pg_url], {})):
        result = await loop.run_in_executor(None, lambda a=argv, e=env: obsv(
            *a, env=e))
        assert result.returncode == 2
        line = one_line(result.stderr)
        assert "obsv schema is version 99, newer than this obsv" in line
    conn = await asyncpg.connect(pg_url, timeout=10)
    try:
        versions = [r["version"] for r in await conn.fetch("SELECT version FROM obsv_schema")]
    finally:
        await conn.close()
    assert sorted(versions) == [1, 99]


async def test_a_user_without_create_rights_is_told_so_in_one_line(
        tmp_path: Path, pg_server: PgServer, pg_url: str) -> None:
    role = f"obsv_ro_{os.getpid()}_{next(_roles)}"
    pg_server.psql(f"CREATE ROLE {role} LOGIN")  # PostgreSQL 15+: no CREATE on public
    pg_server.psql("REVOKE CREATE ON SCHEMA public FROM PUBLIC",
                   urllib.parse.urlsplit(pg_url).path.lstrip("/"))
    url = pg_url.replace("postgres@", f"{role}:secretpw@")
    loop = asyncio.get_running_loop()
    result = await loop.run_in_executor(None, lambda: obsv("serve",
                                                           env=serve_env(tmp_path, url)))
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert "permission denied for schema public" in line
    assert "needs to create tables" in line and "secretpw" not in line


async def test_export_since_seq_past_the_head_or_the_seq_range_is_a_usage_error(
        make_client: ClientFactory, pg_url: str) -> None:
    client = await make_client(database_url=pg_url)
    assert (await post_signed(client, alert_body("a" * 32))).status == 202
    await client.close()
    head = len(records(await exported(pg_url)))
    assert await exported(pg_url, "--since-seq", str(head)) == b""  # nothing new: fine
    loop = asyncio.get_running_loop()
    for since in (str(head + 1), str(2**63), "-1"):
        result = await loop.run_in_executor(None, lambda s=since: obsv(
            "export", "--database-url", pg_url, "--since-seq", s))
        assert result.returncode == 2, since
        line = one_line(result.stderr)
        assert line.startswith(f"obsv: --since-seq {since}") and "give 0 or a seq" in line
        assert result.stdout == b""
    past = await loop.run_in_executor(None, lambda: obsv(
        "export", "--database-url", pg_url, "--since-seq", str(head + 1)))
    assert f"its last seq is {head}" in past.stderr.decode()


def test_a_database_that_dies_under_a_reading_command_is_one_line(
        pg_server: PgServer, pg_url: str, tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    assert obsv("import", str(empty), "--database-url", pg_url).returncode == 0  # the schema
    lines = DatabaseLines(pg_url)
    try:
        pg_server.stop("immediate")
        with pytest.raises(DatabaseUnavailable) as error:
            list(lines)
    finally:
        lines.close()
        pg_server.start()
    message = str(error.value)
    assert "\n" not in message and message.startswith("cannot read the event log")
    assert "check that PostgreSQL runs" in message


# -- the database restarting under running replicas ------------------------------------


async def test_replicas_ride_out_a_database_restart_without_being_restarted(
        tmp_path: Path, pg_server: PgServer, pg_url: str) -> None:
    replicas = [ServeProcess(tmp_path, {**serve_env(tmp_path, pg_url),
                                        "OBSV_OUTBOX_DIR": str(tmp_path / f"outbox-{n}")})
                for n in range(2)]
    try:
        for replica in replicas:
            await replica.start()
        await leader_of(replicas)
        await deliver(replicas[1].url, "a" * 32)
        pg_server.stop("immediate")
        try:
            for replica in replicas:  # out of the load balancer while it is down
                for _ in range(200):
                    if await role(replica) is None:
                        break
                    await asyncio.sleep(0.05)
                assert await role(replica) is None
        finally:
            pg_server.start()
        await leader_of(replicas, timeout=30)
        seqs = [await deliver(replica.url, f"{n + 1:x}" * 32) for n, replica in
                enumerate(replicas)]
        log = await wait_records(pg_url, lambda rs: {
            r.get("alert_seq") for r in rs if r["type"] == "alert.decided"} >= set(seqs))
        assert [r["seq"] for r in log] == list(range(1, len(log) + 1))
        for replica in replicas:
            assert replica.proc is not None and replica.proc.poll() is None
    finally:
        for replica in replicas:
            stop_quietly(replica)


def test_a_server_older_than_postgresql_14_is_refused_in_one_line() -> None:
    # No PostgreSQL 13 here to start: the gate PgEventLog.open applies to the version
    # the server announced (every other test here passes it with the server it runs).
    old = asyncpg.ServerVersion(13, 16, 0, "final", 0)
    with pytest.raises(DatabaseUnavailable) as error:
        require_supported(old, "postgresql://obsv:***@db/obsv")
    message = str(error.value)
    assert "\n" not in message and "runs PostgreSQL 13.16" in message
    assert "needs PostgreSQL 14 or newer" in message
    require_supported(asyncpg.ServerVersion(14, 0, 0, "final", 0), "postgresql://db/obsv")


async def test_a_writer_killed_mid_batch_leaves_a_gapless_chained_log(pg_url: str) -> None:
    log = await PgEventLog.open(pg_url)
    log.start()
    try:
        await log.append(SilenceExpired("first", "test"))
        victim = start_writer(pg_url, "victim", 20000)
        try:
            conn = await asyncpg.connect(pg_url, timeout=10)
            try:
                for _ in range(600):  # until its batches are going in
                    if await conn.fetchval("SELECT count(*) FROM obsv_events") > 200:
                        break
                    await asyncio.sleep(0.05)
                mine = asyncio.gather(*(log.append(SilenceExpired(f"mine-{n}", "test"))
                                        for n in range(200)))
                assert victim.poll() is None  # still appending
                victim.send_signal(signal.SIGKILL)  # while its batches (and ours) go on
                appended = await mine
            finally:
                await conn.close()
        finally:
            victim.kill()
            victim.wait(timeout=10)
        assert len(appended) == 200  # every append of the survivor went in
        await log.append(SilenceExpired("last", "test"))
    finally:
        await log.close()
    data = await exported(pg_url)
    lines = data.splitlines()
    assert [orjson.loads(line)["seq"] for line in lines] == list(range(1, len(lines) + 1))
    verify_chain([line + b"\n" for line in lines])
    ids = [orjson.loads(line)["id"] for line in lines]
    assert ids[-1] == "last" and {f"mine-{n}" for n in range(200)} <= set(ids)


async def test_a_head_row_held_by_another_session_is_a_503_not_a_hang(
        make_client: ClientFactory, pg_url: str) -> None:
    client = await make_client(database_url=pg_url)
    assert (await post_signed(client, alert_body("a" * 32))).status == 202
    blocker = await asyncpg.connect(pg_url, timeout=10)
    try:
        transaction = blocker.transaction()
        await transaction.start()
        await blocker.execute("SELECT * FROM obsv_head FOR UPDATE")  # an admin's session
        answer = await post_signed(client, alert_body("b" * 32))
        assert answer.status == 503 and answer.headers["Retry-After"].isdigit()
        await transaction.rollback()
    finally:
        await blocker.close()
    assert (await post_signed(client, alert_body("c" * 32))).status == 202
    log = records(await exported(pg_url))
    received = [r["alert"]["event_id"] for r in log if r["type"] == "alert.received"]
    assert received == ["a" * 32, "c" * 32]


async def test_a_database_down_for_long_is_not_a_flood_of_election_warnings(
        make_client: ClientFactory, pg_server: PgServer, pg_url: str) -> None:
    with capture_logs() as logs:
        await make_client(database_url=pg_url)
        pg_server.stop("immediate")
        try:
            await wait_until(lambda: any(e.get("attempts") == 10 for e in logs
                                         if e["event"] == "leader.connection_failed"),
                             timeout=60)
        finally:
            pg_server.start()
    failed = [e for e in logs if e["event"] == "leader.connection_failed"]
    assert [e["attempts"] for e in failed] == [1, 10]  # not one line every 0.5 s
    assert all("Connect call failed" in e["error"] or "connection" in e["error"].lower()
               for e in failed)


async def test_two_obsv_logs_in_two_schemas_of_one_database_each_have_a_leader(
        tmp_path: Path, pg_url: str) -> None:
    # One database, two deployments (staging and production, say), each in its own
    # schema through the URL's search_path: each must elect its own leader.
    conn = await asyncpg.connect(pg_url, timeout=10)
    try:
        await conn.execute("CREATE SCHEMA staging; CREATE SCHEMA production")
    finally:
        await conn.close()
    urls = [f"{pg_url}?options=-c%20search_path%3D{schema}"
            for schema in ("staging", "production")]
    replicas = [ServeProcess(tmp_path, {**serve_env(tmp_path, url),
                                        "OBSV_OUTBOX_DIR": str(tmp_path / f"outbox-{n}")})
                for n, url in enumerate(urls)]
    try:
        for replica in replicas:
            await replica.start()
        for replica in replicas:
            await wait_role(replica, "leader")
        seqs = [await deliver(replica.url, f"{n + 1:x}" * 32)
                for n, replica in enumerate(replicas)]
        for url, seq in zip(urls, seqs, strict=True):
            await wait_records(url, lambda rs, s=seq: any(
                r["type"] == "alert.decided" and r["alert_seq"] == s for r in rs))
    finally:
        for replica in replicas:
            stop_quietly(replica)


async def test_a_clean_stop_while_the_database_is_down_exits_0(
        tmp_path: Path, pg_server: PgServer, pg_url: str) -> None:
    replica = ServeProcess(tmp_path, serve_env(tmp_path, pg_url))
    try:
        await replica.start()
        seq = await deliver(replica.url, "a" * 32)
        await wait_records(pg_url, lambda rs: any(r["type"] == "issue.opened" and
                                                  r["alert_seq"] == seq for r in rs))
        pg_server.stop("immediate")
        try:
            # The clean stop's snapshot cannot be written: skipped, not a failed stop
            # (a supervisor would count it as a crash, and it said "start again").
            assert replica.stop() == 0, replica.stderr_path.read_text()[-2000:]
        finally:
            pg_server.start()
    finally:
        stop_quietly(replica)
    assert '"snapshot.write_failed"' in replica.stderr_path.read_text()


async def test_a_role_that_may_only_read_and_write_obsvs_tables_can_serve(
        tmp_path: Path, pg_server: PgServer, pg_url: str) -> None:
    # Least privilege: an owner made the tables once (here: an import of an empty log);
    # the service's role may read and write them, and create nothing.
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    loop = asyncio.get_running_loop()
    made = await loop.run_in_executor(None, lambda: obsv("import", str(empty),
                                                         "--database-url", pg_url))
    assert made.returncode == 0, made.stderr
    role = f"obsv_dml_{os.getpid()}_{next(_roles)}"
    database = urllib.parse.urlsplit(pg_url).path.lstrip("/")
    pg_server.psql(f"CREATE ROLE {role} LOGIN")
    pg_server.psql("REVOKE CREATE ON SCHEMA public FROM PUBLIC; "
                   f"GRANT SELECT, INSERT, UPDATE ON obsv_schema, obsv_head, obsv_events, "
                   f"obsv_snapshot TO {role}", database)
    url = pg_url.replace("postgres@", f"{role}@")
    replica = ServeProcess(tmp_path, serve_env(tmp_path, url))
    try:
        await replica.start()
        seq = await deliver(replica.url, "a" * 32)
        await wait_records(pg_url, lambda rs: any(r["type"] == "issue.opened" and
                                                  r["alert_seq"] == seq for r in rs))
        assert replica.stop() == 0  # its clean stop's snapshot is an upsert: allowed
    finally:
        stop_quietly(replica)
    assert '"snapshot.write_failed"' not in replica.stderr_path.read_text()


async def test_a_log_whose_head_row_was_deleted_is_one_line_and_still_exports(
        tmp_path: Path, make_client: ClientFactory, pg_url: str) -> None:
    client = await make_client(database_url=pg_url)
    assert (await post_signed(client, alert_body("a" * 32))).status == 202
    await client.close()
    before = await exported(pg_url)
    conn = await asyncpg.connect(pg_url, timeout=10)
    try:
        await conn.execute("DELETE FROM obsv_head")  # a careless clean-up
    finally:
        await conn.close()
    loop = asyncio.get_running_loop()
    result = await loop.run_in_executor(None, lambda: obsv("serve",
                                                           env=serve_env(tmp_path, pg_url)))
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert "the row of obsv_head" in line and "obsv export" in line
    assert await exported(pg_url) == before  # what is left can still be copied out
    assert await exported(pg_url, "--since-seq", "1") == b"".join(
        before.splitlines(keepends=True)[1:])
