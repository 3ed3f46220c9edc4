"""Offline tools on a PostgreSQL event log: read its lines (``replay``, ``why``,
``export``) and load a JSONL log into an empty database (``import``); docs/reference.md
§12.

Rules:
1. The lines come out exactly as stored: the JSONL log's bytes (obsv/pglog.py rule 1),
   so ``obsv export > events.jsonl`` is a log ``obsv replay --verify`` accepts, and
   ``serve`` could open.
2. ``import`` loads only into a database whose log is empty, in one transaction
   holding the head row: a failure (a broken chain, a seq out of turn, a line that
   is not a record, the database gone) leaves the database as it was. The chain is
   checked as the lines go in (docs/reference.md §11: records of an older log without
   ``prev`` are accepted until the first one that has it). Each statement inserts at
   most ``_IMPORT_BATCH`` lines and ``PAGE_BYTES`` bytes of them (a line larger than
   that goes alone): a log of 1 MiB bodies never makes one statement of gigabytes.
3. Reads come in pages bounded by lines and bytes (obsv/pglog.py rule 10); ``export``
   writes its output in chunks of the same bound.
4. Commands run without an event loop of their own, so these open a private one.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from obsv.core.codec import GENESIS, CodecError
from obsv.core.events import Envelope, LeaderElected
from obsv.errors import StartupError, UsageError
from obsv.eventlog import bounded_reason, decode_line, iter_lines, line_sha256
from obsv.pglog import (
    CONNECT_TIMEOUT,
    PAGE_BYTES,
    POOL_TIMEOUT,
    READ_PAGE,
    STATEMENT_TIMEOUT,
    DatabaseUnavailable,
    add_row,
    connect,
    error_line,
    migrate,
    page_query,
)
from obsv.settings import database_url, load_settings, masked_url

_IMPORT_BATCH = 1000
_MAX_SEQ = 2**63 - 1  # the seq column is a bigint
_INSERT_ROWS = """
    INSERT INTO obsv_events (seq, type, at, sentry_issue_id, line_sha256, line, light)
    SELECT * FROM unnest($1::bigint[], $2::text[], $3::timestamptz[], $4::text[],
                         $5::text[], $6::bytea[], $7::bytea[])
"""


class ImportRefused(Exception):
    """The file cannot be imported as it is (rule 2); one line naming the line."""


class DatabaseLines:
    """The lines of a database's log as ``(end offset, line)`` with ``\\n``, like
    ``iter_lines`` of a file, for the offline commands (rules 3 and 4). Connects at once, so
    a wrong URL is one line before anything is printed."""

    def __init__(self, url: str, since_seq: int = 0) -> None:
        self.location = masked_url(url)
        self._url = url
        self._since = since_seq
        self._loop = asyncio.new_event_loop()
        try:
            self._conn: asyncpg.Connection = self._loop.run_until_complete(self._open(url))
        except BaseException:
            self._loop.close()
            raise

    async def _open(self, url: str) -> asyncpg.Connection:
        try:
            conn = await asyncpg.connect(url, timeout=CONNECT_TIMEOUT,
                                         command_timeout=STATEMENT_TIMEOUT)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError,
                ValueError) as exc:
            raise DatabaseUnavailable(
                f"cannot reach the database {self.location} ({error_line(exc, url)}); check the "
                "URL (--database-url or OBSV_DATABASE_URL) and that PostgreSQL runs") from None
        if not await conn.fetchval("SELECT to_regclass('obsv_events') IS NOT NULL"):
            await conn.close()
            raise UsageError(f"no obsv event log in the database {self.location}; give the "
                             "URL of the database obsv serve writes to")
        return conn

    def head_seq(self) -> int:
        """The seq of the log's last record (0 for an empty log), from the records
        themselves: what export reads, even from a database whose head row is damaged."""
        seq = self._query(self._conn.fetchval("SELECT max(seq) FROM obsv_events"))
        return int(seq or 0)

    def _query(self, query: Awaitable[Any]) -> Any:
        """Run ``query`` on the private loop; the database failing half-way through
        (gone, restarted, a timeout) is one line, as failing at the start is."""
        try:
            return self._loop.run_until_complete(query)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise DatabaseUnavailable(
                f"cannot read the event log from the database {self.location} "
                f"({error_line(exc, self._url)}); check that PostgreSQL runs, then run "
                "the command again") from None

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        offset, after = 0, self._since
        while True:
            rows = self._query(self._conn.fetch(page_query("line", "true"), after, READ_PAGE,
                                                PAGE_BYTES))
            if not rows:
                return
            for row in rows:
                line = bytes(row["line"]) + b"\n"
                offset += len(line)
                yield offset, line
            after = rows[-1]["seq"]

    def close(self) -> None:
        """Close the connection and the private loop."""
        try:
            self._loop.run_until_complete(self._conn.close(timeout=CONNECT_TIMEOUT))
        except (OSError, TimeoutError, asyncpg.InterfaceError):
            self._conn.terminate()
        finally:
            self._loop.close()


def import_log(path: Path, url: str) -> int:
    """Rule 2: load the JSONL log at ``path`` into the empty database at ``url``; the
    number of records loaded."""
    return asyncio.run(_import(path, url))


async def _import(path: Path, url: str) -> int:
    pool = await connect(url, max_size=1)
    try:
        await migrate(pool)
        async with pool.acquire(timeout=POOL_TIMEOUT) as conn, conn.transaction():
            head = await conn.fetchrow("SELECT seq FROM obsv_head FOR UPDATE")
            assert head is not None
            if head["seq"] != 0:
                raise UsageError(
                    f"the database {masked_url(url)} already holds an event log ({head['seq']} "
                    "records); obsv import loads only into an empty one")
            return await _load(conn, path)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        if isinstance(exc, OSError) and exc.filename:
            raise UsageError(f"cannot read {exc.filename}: {exc.strerror}") from None
        raise StartupError(f"cannot import into the database {masked_url(url)} "
                           f"({error_line(exc, url)}); nothing was imported") from None
    finally:
        await pool.close()


async def _load(conn: Any, path: Path) -> int:
    batch = _Batch(conn)
    prev: str | None = None  # the hash the next line's prev must carry, once chained
    chained = False
    last: Envelope | None = None
    size, epoch = 0, 0
    for line_no, (end, line) in enumerate(iter_lines(path), 1):
        if end < 0:
            raise ImportRefused(f"{path}: line {line_no} is torn (no newline at the end); "
                                "start obsv serve on the file once (it sets the torn tail "
                                "aside) or remove that line, then import")
        envelope = _decode(path, line_no, line)
        body = line[:-1]
        due = 1 if last is None else last.seq + 1
        if envelope.seq != due:
            raise ImportRefused(f"{path}: line {line_no}: seq {envelope.seq} where {due} was "
                                "due; nothing was imported")
        has_prev = body.startswith(b'{"prev":"')
        chained = chained or has_prev
        expected = prev or GENESIS
        if chained and not body.startswith(f'{{"prev":"{expected}",'.encode()):
            raise ImportRefused(f"{path}: line {line_no}: its prev does not match the line "
                                "before it (the chain is broken, docs/reference.md §11); "
                                "obsv replay --verify names the break; nothing was imported")
        prev = line_sha256(body)
        await batch.add(envelope, body, prev)
        size += len(line)
        if isinstance(envelope.event, LeaderElected):
            epoch = max(epoch, envelope.event.epoch)
        last = envelope
    await batch.flush()
    if last is not None:
        await conn.execute("UPDATE obsv_head SET seq = $1, sha256 = $2, at = $3, epoch = $4, "
                           "bytes = $5", last.seq, prev, last.at, epoch, size)
    return last.seq if last is not None else 0


class _Batch:
    """Rows on their way into one INSERT (rule 2): sent before a row would take the
    statement past ``_IMPORT_BATCH`` lines or ``PAGE_BYTES`` bytes (line and light)."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self._columns: list[list[Any]] = [[] for _ in range(7)]
        self._bytes = 0

    async def add(self, envelope: Envelope, line: bytes, sha256: str) -> None:
        """Queue one record's row, sending the rows before it first when it would
        not fit; a row larger than the budget goes alone."""
        row: list[list[Any]] = [[] for _ in range(7)]
        add_row(row, envelope, line, sha256)
        light = row[6][0]
        size = len(line) + (len(light) if light is not None else 0)
        if len(self._columns[0]) >= _IMPORT_BATCH or self._bytes + size > PAGE_BYTES:
            await self.flush()
        for column, (value,) in zip(self._columns, row, strict=True):
            column.append(value)
        self._bytes += size

    async def flush(self) -> None:
        """Insert the queued rows, if any, in one statement."""
        if self._columns[0]:
            await self._conn.execute(_INSERT_ROWS, *self._columns)
        self._columns = [[] for _ in range(7)]
        self._bytes = 0


def _decode(path: Path, line_no: int, line: bytes) -> Envelope:
    try:
        return decode_line(line)
    except (CodecError, orjson.JSONDecodeError) as exc:
        raise ImportRefused(f"{path}: line {line_no} is not a valid record "
                            f"({bounded_reason(str(exc))}); nothing was imported") from None


# -- the commands (obsv/cli.py) --------------------------------------------------------


def database_url_of(args: argparse.Namespace) -> str:
    """``--database-url``, else ``OBSV_DATABASE_URL`` (through the settings, so
    ``OBSV_DATABASE_URL_FILE`` and the config file count too)."""
    if args.database_url:
        return str(database_url("--database-url", args.database_url))
    settings = load_settings(args.config, os.environ, require_secret=False)
    if not settings.database_url:
        raise UsageError("no database: pass --database-url postgresql://… or set "
                         "OBSV_DATABASE_URL")
    return settings.database_url


def export_command(args: argparse.Namespace) -> int:
    """``obsv export``: the log as JSONL on standard output, line for line (rule 1)."""
    if not 0 <= args.since_seq <= _MAX_SEQ:
        raise UsageError(f"--since-seq {args.since_seq}: give 0 or a seq of the log")
    lines = DatabaseLines(database_url_of(args), args.since_seq)
    out = sys.stdout.buffer
    try:
        head = lines.head_seq()
        if args.since_seq > head:  # a typo, or not the database meant: never silence
            raise UsageError(f"--since-seq {args.since_seq} is past the end of the log in "
                             f"{lines.location} (its last seq is {head}); give 0 or a seq "
                             "of the log")
        chunk: list[bytes] = []
        held = 0
        for _, line in lines:  # rule 3: one output chunk holds what one page may
            if chunk and (len(chunk) >= READ_PAGE or held + len(line) > PAGE_BYTES):
                out.write(b"".join(chunk))
                chunk, held = [], 0
            chunk.append(line)
            held += len(line)
        out.write(b"".join(chunk))
    finally:
        lines.close()
    return 0


def import_command(args: argparse.Namespace) -> int:
    """``obsv import FILE``: rule 2; 1 when the file is refused, with one line."""
    url = database_url_of(args)
    path = Path(args.file)
    if not path.is_file():
        raise UsageError(f"no event log at {path}; pass the path of a JSONL log")
    try:
        count = import_log(path, url)
    except ImportRefused as exc:
        print(f"obsv: {exc}", file=sys.stderr)
        return 1
    print(f"imported {count} records from {path} into {masked_url(url)}")
    return 0
