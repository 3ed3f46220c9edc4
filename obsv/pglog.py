"""The event log in PostgreSQL (``OBSV_DATABASE_URL``, docs/reference.md §12).

Rules:
1. The records are the JSONL log's lines, byte for byte (obsv/eventlog.py: the same
   codec, the same ``prev`` chain), stored without their ``\\n``: ``obsv export``
   prints a JSONL log. Each row also has small columns (type, at, Sentry issue id,
   the line's sha256) and, for records with a raw body, the line without it
   (``light``): the fold at start reads those and never the bodies (rule 8).
2. One head row carries the last ``seq``, its line's hash, the last ``at``, the
   epoch and the log's byte count. Every batch is one transaction: stamp seqs after
   the head, chain the lines, then one statement moves the head row (locking it)
   and inserts the records (``unnest``), but only if the head row still holds the
   head the batch was stamped after (seq and epoch). A process stamps after the head
   it last wrote, which costs one round trip; when another replica wrote since, the
   statement changes nothing and the batch is redone in a transaction that first
   locks and reads the head row. So ``seq`` is gapless and in commit order whichever
   replica wrote, and the chain never forks.
3. Group commit in the application: one batch in flight per process; appends that
   arrive meanwhile queue and go out together as the next batch (as the JSONL writer
   batches its fsyncs), up to about ``PAGE_BYTES`` of records (whole calls, at least
   one; the rest go in the batches after): a burst of deliveries with large bodies
   never makes one statement of gigabytes, past the statement timeout, that would fail
   every one of them. A caller's future resolves after the commit that holds its
   record, so a 202 means committed.
4. Fencing: records appended with an ``epoch`` go in only if the head row, locked in
   that same transaction, still carries that epoch; otherwise their call fails with
   ``LeadershipLost`` and none of them is written (the batch's other records are).
   ``take_leadership`` bumps the epoch and appends ``leader.elected`` in one
   transaction.
5. A failed transaction (the database gone, a timeout) fails every append of its
   batch with ``LogWriteError`` and writes nothing: the receivers answer 503 with
   ``Retry-After``. Unless the error was its own records' (a data error), it fails
   the calls queued behind that batch too, untried: split by rule 3's bound, each
   batch of them would wait out the same timeout again, and a delivery would wait
   that timeout times the megabytes queued ahead of it. Every wait is bounded:
   connect, statement, lock and pool timeouts. A commit whose answer was lost may
   still have happened: its records are then in the log (and the tail hands them to
   the consumer), and Sentry's retry of a 503 is recognised by content as a
   duplicate, as after any lost answer.
6. Listeners see every record committed by any replica, once, in seq order: a tail
   task reads ``seq > last`` from the table, woken by ``NOTIFY`` (sent in each
   batch's transaction, so delivered on commit), by this process's own commits, and
   at least every second in case a notification was lost. It never skips a seq.
   When it cannot read, the log is not ``writable`` (/readyz 503) until it can again:
   a follower that no delivery reaches leaves the load balancer as soon as a leader.
7. Schema: created and migrated by obsv at start under a transaction-scoped advisory
   lock, idempotently (``obsv_schema`` holds the version), so replicas starting
   together do it once. A newer version is refused, never migrated down; tables of
   obsv's names without a version are someone else's: refused, left untouched. The
   body column is compressed with lz4 (pglz when the server lacks it, with a
   warning). A server older than PostgreSQL 14 is refused at start.
8. Reads for the fold (``read``), snapshots and ``line_at`` are blocking, for a
   worker thread (obsv/logstore.py rule 6): they hand their queries to the loop.
   ``read(bodies=False)`` yields the records that had a body without it
   (``raw: null`` and ``raw_sha256``), and ``whole`` fetches the whole records the
   consumer still needs them for (pending intents).
9. The URL holds a password (in its user info or ``?password=``): it is never logged
   or printed; ``location`` masks it, and ``error_line`` removes it from the driver's
   messages.
10. Every read comes in pages of at most ``READ_PAGE`` lines and ``PAGE_BYTES`` bytes
   of lines, whichever comes first, and always at least one line (a line larger than
   the budget comes alone), so a log of bodies near ``OBSV_MAX_BODY_BYTES`` never
   makes one result of gigabytes (client memory, the statement timeout). The bytes
   are the lines as stored, uncompressed (``octet_length``, which reads the size from
   the value's header without decompressing it): what crosses the wire and sits in
   memory; lz4 shrinks only the disk. The fold's reads are bounded too: only an
   ``alert.received`` and a ``github.issue`` have a ``light`` row, so it reads a
   ``hook.received`` or a ``sentry.issue`` whole, body included.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import io
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, BinaryIO

import asyncpg
import structlog
from asyncpg.pool import PoolConnectionProxy
from msgspec.structs import astuple, replace

from obsv.clock import Clock, utc_now
from obsv.core.codec import GENESIS, CodecError, type_name
from obsv.core.events import (
    AlertReceived,
    Envelope,
    Event,
    GitHubIssueObserved,
    LeaderElected,
    LogCheckpoint,
)
from obsv.errors import StartupError
from obsv.eventlog import (
    CHECKPOINT_INTERVAL,
    LogCorrupt,
    LogWriteError,
    chain,
    decode_line,
    encode_line,
)
from obsv.logstore import LeadershipLost, Listener
from obsv.settings import masked_url, url_passwords

log = structlog.get_logger("obsv.pglog")

_Conn = asyncpg.Connection | PoolConnectionProxy

SCHEMA_VERSION = 1
CHANNEL = "obsv_events"
CONNECT_TIMEOUT = 5.0
STATEMENT_TIMEOUT = 10.0  # seconds: any one statement, client and server side
POOL_TIMEOUT = 5.0
READ_PAGE = 2000  # lines of one read (rule 10)
# Bytes of lines one read returns or one insert carries (rules 3 and 10), besides a
# single line (or append_many call) larger than this. A page of ordinary alerts (~8 KB
# a line) is ~500 lines; a line can reach several MB (a 1 MiB body, JSON-escaped), and
# comes alone.
PAGE_BYTES = 4 << 20
_TAIL_POLL = 1.0
_BLOCKING_TIMEOUT = 120.0
# Bytes of a batch above which chaining runs on a thread: below it, hashing costs the
# loop under a millisecond, less than the hop to a thread and back on a busy machine.
_HASH_OFF_LOOP = 1 << 20
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LOCK_KEY = 0x6F627376  # "obsv": the advisory lock of schema migrations

# Rule 7. Each entry brings the schema from the previous version to its own.
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        """CREATE TABLE obsv_head (
               id boolean PRIMARY KEY DEFAULT true CHECK (id),
               seq bigint NOT NULL,
               sha256 text NOT NULL,
               at timestamptz NOT NULL,
               epoch bigint NOT NULL,
               bytes bigint NOT NULL)""",
        f"""INSERT INTO obsv_head (seq, sha256, at, epoch, bytes)
            VALUES (0, '{GENESIS}', 'epoch', 0, 0)""",
        """CREATE TABLE obsv_events (
               seq bigint PRIMARY KEY,
               type text NOT NULL,
               at timestamptz NOT NULL,
               sentry_issue_id text,
               line_sha256 text NOT NULL,
               line bytea NOT NULL,
               light bytea)""",
        "CREATE INDEX obsv_events_sentry_issue ON obsv_events (sentry_issue_id)",
        """CREATE TABLE obsv_snapshot (
               id boolean PRIMARY KEY DEFAULT true CHECK (id),
               saved_at timestamptz NOT NULL,
               data bytea NOT NULL)""",
    ),
}
_COMPRESSED = (("obsv_events", "line"), ("obsv_snapshot", "data"))

_WRITE = """
    WITH head AS (
        UPDATE obsv_head SET seq = $10, sha256 = $11, at = $12, epoch = $13,
                             bytes = bytes + $14
        WHERE seq = $8 AND epoch = $9
        RETURNING seq
    ), inserted AS (
        INSERT INTO obsv_events (seq, type, at, sentry_issue_id, line_sha256, line, light)
        SELECT * FROM unnest($1::bigint[], $2::text[], $3::timestamptz[], $4::text[],
                             $5::text[], $6::bytea[], $7::bytea[])
        WHERE EXISTS (SELECT 1 FROM head)
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM inserted) AS inserted, pg_notify($15, seq::text) FROM head
"""
# A batch's transaction is milliseconds of client work between its statements. A
# replica frozen (SIGSTOP, a VM pause, a partition) inside one holds the head row, and
# every other replica's appends and a new leader's take_leadership wait on it: the
# server ends such a session after 2 s, and a lock is waited for 3 s at most (Sentry
# has given up on that delivery long before; it is answered 503 and retried).
IDLE_IN_TRANSACTION_TIMEOUT = 2.0
LOCK_TIMEOUT = 3.0
SERVER_SETTINGS = {"application_name": "obsv",
                   "statement_timeout": str(int(STATEMENT_TIMEOUT * 1000)),
                   "lock_timeout": str(int(LOCK_TIMEOUT * 1000)),
                   "idle_in_transaction_session_timeout":
                       str(int(IDLE_IN_TRANSACTION_TIMEOUT * 1000))}


class DatabaseUnavailable(StartupError):
    """The database cannot be reached or used at start; one line naming the fix."""


class DatabaseReadFailed(DatabaseUnavailable, OSError):
    """``line_at`` could not read: an ``OSError``, as a file's failed read is, so the
    snapshot writer skips that snapshot with a warning instead of failing a clean
    stop; at start it is still one line naming the fix."""


@dataclass(slots=True)
class _Append:
    """One queued append: an event, or ``replica`` asking to take the lead (rule 4)."""

    event: Event | None
    epoch: int | None
    future: asyncio.Future[Envelope]
    replica: str | None = None
    call: int = 0  # appends of one call share it: they go in, or fail, together


@dataclass(frozen=True, slots=True)
class _Head:
    seq: int
    sha256: str
    at: datetime
    epoch: int
    bytes: int


def light_event(event: Event) -> Event | None:
    """Rule 1: the record without its raw body, for the fold; None when it has none.
    A body kept by hash (``raw: null``, ``raw_sha256``) is how the log already writes a
    redelivery, so the codec reads it and the fold decides the same."""
    match event:
        case AlertReceived(raw=str(raw)):
            return replace(event, raw=None,
                           raw_sha256=hashlib.sha256(raw.encode("utf-8")).hexdigest())
        case GitHubIssueObserved(raw=str()):
            return replace(event, raw=None)
        case _:
            return None


def _sentry_issue_id(event: Event) -> str | None:
    """The record's Sentry issue id for the ``sentry_issue_id`` column (for operators'
    queries; obsv reads the line), or None. A text column refuses a NUL, which a JSON
    line holds escaped: such an id failed its batch at every retry of its delivery
    (503), and every delivery batched with it."""
    if isinstance(event, AlertReceived):
        value: object = event.alert.sentry_issue_id
    else:
        value = getattr(event, "sentry_issue_id", None)
    return value if isinstance(value, str) and "\x00" not in value else None


async def connect(url: str, *, min_size: int = 1, max_size: int = 4) -> asyncpg.Pool:
    """A pool on ``url`` with every wait bounded (rule 5); ``DatabaseUnavailable``
    naming the masked URL when it cannot be reached."""
    try:
        pool = await asyncpg.create_pool(
            url, min_size=min_size, max_size=max_size, timeout=CONNECT_TIMEOUT,
            command_timeout=STATEMENT_TIMEOUT, server_settings=SERVER_SETTINGS)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError,
            ValueError) as exc:
        raise DatabaseUnavailable(
            f"cannot use the database {masked_url(url)} ({error_line(exc, url)}); check "
            "OBSV_DATABASE_URL (host, port, user, database) and that PostgreSQL runs") from None
    assert pool is not None
    return pool


OLDEST_SERVER = 14  # idle_session_timeout (obsv/leadership.py rule 1), lz4 compression


def require_supported(version: asyncpg.ServerVersion, location: str) -> None:
    """Refuse a server older than ``OLDEST_SERVER`` in one line: on PostgreSQL 13 the
    election's connection is refused (``idle_session_timeout`` is unknown) over and
    over, and no replica ever leads or decides."""
    if version.major < OLDEST_SERVER:
        raise DatabaseUnavailable(
            f"the database {location} runs PostgreSQL {version.major}.{version.minor}; "
            f"obsv needs PostgreSQL {OLDEST_SERVER} or newer (for idle_session_timeout, "
            "which hands the lead over when a replica freezes); upgrade it, or use the "
            "JSONL log (unset OBSV_DATABASE_URL)")


def error_line(exc: BaseException, url: str) -> str:
    """An error as one short line, with ``url``'s password masked wherever the driver
    quoted it (a DSN it could not parse, say)."""
    text = str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = text.replace(url, masked_url(url))
    # As written in the URL and decoded (%40 is @), in the user info or ``?password=``.
    for password in sorted(url_passwords(url), key=len, reverse=True):
        text = text.replace(password, "***")
    return text[:200]


async def migrate(pool: asyncpg.Pool) -> None:
    """Rule 7: bring the schema to ``SCHEMA_VERSION``, once, whoever starts first."""
    async with pool.acquire(timeout=POOL_TIMEOUT) as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
        # Only created when missing: CREATE ... IF NOT EXISTS still needs the right to
        # create, which a role granted only reads and writes on obsv's tables lacks.
        current = 0
        if await conn.fetchval("SELECT to_regclass('obsv_schema') IS NULL"):
            await conn.execute("CREATE TABLE obsv_schema (version int NOT NULL)")
        else:
            current = await conn.fetchval("SELECT max(version) FROM obsv_schema") or 0
        if current > SCHEMA_VERSION:
            raise DatabaseUnavailable(
                f"the database's obsv schema is version {current}, newer than this obsv "
                f"({SCHEMA_VERSION}); run the newer obsv, or point OBSV_DATABASE_URL elsewhere")
        if current == 0:
            await _refuse_foreign_tables(conn)
        for version in range(current + 1, SCHEMA_VERSION + 1):
            for statement in _MIGRATIONS[version]:
                await conn.execute(statement)
            if version == 1:
                await _compress(conn)
            await conn.execute("INSERT INTO obsv_schema (version) VALUES ($1)", version)


async def _refuse_foreign_tables(conn: _Conn) -> None:
    """Before the first migration: a table of obsv's name that obsv did not make (no
    schema version recorded) belongs to someone else; never write beside it."""
    names = [name for name, _ in _COMPRESSED] + ["obsv_head"]
    found = await conn.fetchval(
        "SELECT string_agg(name, ', ' ORDER BY name) FROM unnest($1::text[]) AS name "
        "WHERE to_regclass(name) IS NOT NULL", names)
    if found:
        raise DatabaseUnavailable(
            f"the database already holds {found}, not made by obsv (no obsv_schema "
            "version); point OBSV_DATABASE_URL at a database of obsv's own")


async def _compress(conn: _Conn) -> None:
    lz4 = await conn.fetchval(
        "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'")
    if not lz4:
        log.warning("database.no_lz4", consequence="bodies are compressed with pglz (slower)")
        return
    for table, column in _COMPRESSED:
        await conn.execute(f"ALTER TABLE {table} ALTER COLUMN {column} SET COMPRESSION lz4")


class PgEventLog:
    """The event log in PostgreSQL: obsv/logstore.py's ``SharedEventStore``."""

    def __init__(self, url: str, pool: asyncpg.Pool, head: _Head, clock: Clock) -> None:
        self._url = url
        self._pool = pool
        self._clock = clock
        self._last = head  # rule 6: the last record handed to listeners
        self._head: _Head | None = None  # what this process last wrote (None: read it)
        self._conn: asyncpg.Connection | None = None  # the writer's
        self._epoch = head.epoch
        self._queue: list[_Append] = []
        self._wakeup = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._tail: asyncio.Task[None] | None = None
        self._tail_wake = asyncio.Event()
        self._committed: dict[int, tuple[Envelope, bytes]] = {}  # ours, not yet handed on
        self._listeners: list[Listener] = []
        self._listen_conn: asyncpg.Connection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._checkpoint_due: datetime | None = None
        self._calls = 0
        self._closing = False
        self._tail_stopped = False
        self.writable = True

    @classmethod
    async def open(cls, url: str, clock: Clock = utc_now) -> PgEventLog:
        """Connect, create or migrate the schema, read the head (``DatabaseUnavailable``
        in one line when any of it fails)."""
        pool = await connect(url)
        try:
            async with pool.acquire(timeout=POOL_TIMEOUT) as conn:
                require_supported(conn.get_server_version(), masked_url(url))
            await migrate(pool)
            head = await _read_head(pool)
        except DatabaseUnavailable:
            await pool.close()
            raise
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            await pool.close()
            raise DatabaseUnavailable(
                f"cannot prepare the database {masked_url(url)} ({error_line(exc, url)}); the user "
                "needs to create tables in it") from None
        return cls(url, pool, head, clock)

    # -- the port's properties (obsv/logstore.py) -----------------------------------

    @property
    def location(self) -> str:
        """The database URL with its password masked."""
        return masked_url(self._url)

    @property
    def last_seq(self) -> int:
        """The seq of the last record handed to listeners."""
        return self._last.seq

    @property
    def last_at(self) -> datetime:
        """Its ``at``."""
        return self._last.at

    @property
    def head_sha256(self) -> str:
        """Its line's hash."""
        return self._last.sha256

    @property
    def position(self) -> int:
        """Its seq: positions in the database are seqs."""
        return self._last.seq

    @property
    def size(self) -> int:
        """Bytes of the lines (``\\n`` counted) up to it."""
        return self._last.bytes

    @property
    def epoch(self) -> int:
        """The epoch as last seen (taken, lost, or read by the tail)."""
        return self._epoch

    def add_listener(self, listener: Listener) -> None:
        """Rule 6."""
        self._listeners.append(listener)

    def start(self) -> None:
        """Start the writer and the tail on the running loop."""
        if self._writer is None:
            self._loop = asyncio.get_running_loop()
            self._writer = self._loop.create_task(self._write_loop(), name="obsv-pg-writer")
            self._tail = self._loop.create_task(self._tail_loop(), name="obsv-pg-tail")

    async def close(self) -> None:
        """Finish queued appends, stop the tail, close the connections. Calling it
        again, at once or after a cancelled call, waits for the same end."""
        self._closing = True
        self._wakeup.set()
        if self._writer is not None:
            # Shielded: a caller that gives up leaves the writer to finish what was
            # queued, and a later close waits for it instead of finding it cancelled.
            await asyncio.shield(self._writer)
        if self._tail is not None:
            # The flag stops the tail even if its cancellation is lost (Python 3.11's
            # wait_for can swallow one); the wait is bounded either way.
            self._tail_stopped = True
            self._tail_wake.set()
            self._tail.cancel()
            await asyncio.wait([self._tail], timeout=STATEMENT_TIMEOUT)
            if self._tail.done() and not self._tail.cancelled():
                self._tail.exception()  # retrieved: a failure was logged by the loop
            self._tail = None
        for conn in (self._conn, self._listen_conn):
            if conn is not None:
                try:
                    await asyncio.wait_for(conn.close(), CONNECT_TIMEOUT)
                except (OSError, TimeoutError, asyncpg.InterfaceError):
                    conn.terminate()
        self._conn = self._listen_conn = None
        try:
            await asyncio.wait_for(self._pool.close(), STATEMENT_TIMEOUT)
        except (OSError, TimeoutError, asyncpg.InterfaceError):
            self._pool.terminate()

    # -- appending (rules 2 to 5) -----------------------------------------------------

    async def append(self, event: Event, *, epoch: int | None = None) -> Envelope:
        """Append one record; returns it once committed."""
        return (await self._enqueue([event], epoch))[0]

    async def append_many(self, events: Sequence[Event], *,
                          epoch: int | None = None) -> list[Envelope]:
        """Append records in order, in one transaction; returns them once committed."""
        if not events:
            return []
        return await self._enqueue(list(events), epoch)

    async def take_leadership(self, replica: str) -> int:
        """Rule 4: bump the epoch and append ``leader.elected``; the new epoch."""
        envelope = (await self._enqueue([None], None, replica=replica))[0]
        assert isinstance(envelope.event, LeaderElected)
        return envelope.event.epoch

    async def _enqueue(self, events: Sequence[Event | None], epoch: int | None,
                       replica: str | None = None) -> list[Envelope]:
        if self._writer is None or self._closing:
            raise LogWriteError("the event log is closed")
        loop = asyncio.get_running_loop()
        self._calls += 1
        entries = [_Append(event, epoch, loop.create_future(), replica, call=self._calls)
                   for event in events]
        self._queue.extend(entries)  # synchronously: records keep the order of the calls
        self._wakeup.set()
        if len(entries) == 1:  # the receivers' case: no gather around one future
            return [await entries[0].future]
        return list(await asyncio.gather(*(entry.future for entry in entries)))

    async def _write_loop(self) -> None:
        while self._queue or not self._closing:
            if not self._queue:
                await self._wakeup.wait()
                self._wakeup.clear()
                continue
            try:
                batch, self._queue = _next_batch(self._queue)
            except Exception:  # a bug in the estimate: the whole queue, never a dead writer
                log.exception("log.batch_estimate_failed", records=len(self._queue))
                batch, self._queue = self._queue, []
            behind = len(self._queue)  # whole calls: _enqueue queues a call at once
            pending = [entry for entry in batch if not entry.future.done()]
            try:
                failed = await self._commit(pending)
            except Exception as exc:  # nothing foreseen: fail this batch, never the writer
                self._drop_connection()
                log.exception("log.write_failed", database=self.location, records=len(batch))
                for entry in pending:
                    if not entry.future.done():
                        entry.future.set_exception(LogWriteError(
                            f"cannot write to the database {self.location}: {exc!r}"))
                continue
            if failed is not None and behind:
                # Rule 5: the calls queued behind a batch the database refused would each
                # wait out the same timeout again, one batch after another.
                queued, self._queue = self._queue[:behind], self._queue[behind:]
                for entry in queued:
                    if not entry.future.done():
                        entry.future.set_exception(failed)

    async def _commit(self, batch: list[_Append]) -> LogWriteError | None:
        """Write ``batch`` and resolve its futures; the error the calls queued behind
        it would meet too (rule 5: the database's, not its records'), if any."""
        if not batch:
            return None
        try:
            conn = await self._connection()
            # Rule 2, usually in one round trip: the head this process last wrote is
            # still the head (one replica writing, or no one else since), checked by
            # the statement itself; otherwise lock the head row, read it, write.
            written = None
            if self._head is not None:
                written = await self._write(conn, batch, self._head, locked=False)
            if written is None:
                async with conn.transaction():
                    written = await self._write(conn, batch, await _lock_head(conn),
                                                locked=True)
                assert written is not None
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError,
                # After a SIGSTOP/SIGCONT a statement's client-side timeout fires at once
                # and the transaction's exit finds the connection mid-cancel: the
                # connection is in an unknown state, the batch failed, the writer goes on.
                asyncpg.InternalClientError) as exc:
            self._drop_connection()
            self.writable = False
            error = LogWriteError(f"cannot write to the database {self.location}: "
                                  f"{error_line(exc, self._url)}")
            log.error("log.write_failed", database=self.location, error=error_line(exc, self._url),
                      records=len(batch))
            for entry in batch:
                if not entry.future.done():
                    entry.future.set_exception(error)
            # A data error is this batch's records' own (one that cannot be encoded or
            # stored): the calls behind it would not meet it.
            return None if isinstance(exc, asyncpg.DataError) else error
        self.writable = True
        for _, envelope, line in written:
            if isinstance(envelope.event, LeaderElected):
                self._epoch = max(self._epoch, envelope.event.epoch)
            self._committed[envelope.seq] = (envelope, line)
        # When nobody else wrote in between, listeners get the batch now, before its
        # appenders resume (as from the JSONL writer); otherwise the tail reads the
        # records before it first, then hands it on.
        self._hand_on_committed()
        for done, envelope, _ in written:
            if done is not None and not done.future.done():
                done.future.set_result(envelope)
        if self._committed:
            self._tail_wake.set()
        return None

    async def _connection(self) -> asyncpg.Connection:
        """The writer's own connection (a pool's reset on every release would cost a
        round trip per batch); opened again after a failure."""
        if self._conn is None or self._conn.is_closed():
            self._conn = None
            self._conn = await asyncpg.connect(
                self._url, timeout=CONNECT_TIMEOUT, command_timeout=STATEMENT_TIMEOUT,
                server_settings=SERVER_SETTINGS)
        return self._conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            self._conn.terminate()
            self._conn = None
        self._head = None  # read it again, under the lock

    async def _write(self, conn: _Conn, batch: list[_Append], head: _Head, *, locked: bool
                     ) -> list[tuple[_Append | None, Envelope, bytes]] | None:
        """Stamp, chain and write ``batch`` after ``head`` in one statement that moves
        the head only if it is still ``head`` (seq and epoch): rule 4's fencing is in
        that same statement. None when it was not (``locked`` False only)."""
        at = max(self._clock(), head.at)
        if not locked and any(e.epoch is not None and e.epoch > head.epoch for e in batch):
            return None  # an epoch newer than ours: our head is stale
        epoch = head.epoch
        accepted: list[tuple[_Append | None, Envelope]] = []
        if self._checkpoint_is_due(at, batch):
            accepted.append((None, Envelope(head.seq + 1, at,
                                            LogCheckpoint(head.seq, head.sha256))))
        # Epochs only grow: an epoch below the head's is stale even if the head is.
        fenced = {entry.call for entry in batch
                  if entry.epoch is not None and entry.epoch != head.epoch}
        for entry in batch:
            if entry.call in fenced:
                continue
            event = entry.event
            if event is None:  # take_leadership
                epoch += 1
                event = LeaderElected(epoch, entry.replica or "")
            accepted.append((entry, Envelope(head.seq + len(accepted) + 1, at, event)))
        lines: list[bytes] = []
        if accepted:
            rows, sha, size = await self._encode(accepted, head.sha256)
            last = head.seq + len(accepted)
            done = await conn.fetchrow(_WRITE, *rows, head.seq, head.epoch, last, sha, at,
                                       epoch, size, CHANNEL)
            if done is None:
                if locked:  # cannot be: the head row is ours
                    raise asyncpg.DataError("the locked head row moved")
                return None
            if done["inserted"] != len(accepted):
                raise asyncpg.DataError(f"inserted {done['inserted']} of {len(accepted)}")
            self._head = _Head(last, sha, at, epoch, head.bytes + size)
            self._checkpoint_done(at, accepted)
            lines = rows[5]
        for entry in batch:
            if entry.call in fenced and not entry.future.done():
                self._epoch = max(self._epoch, head.epoch)
                entry.future.set_exception(LeadershipLost(entry.epoch or 0, head.epoch))
        return [(entry, envelope, line) for (entry, envelope), line in zip(
            accepted, lines, strict=True)]

    async def _encode(self, accepted: list[tuple[_Append | None, Envelope]], prev: str
                      ) -> tuple[list[list[Any]], str, int]:
        """Rule 1: the columns of each record; the last line's hash; the bytes added."""
        lines: list[bytes] = []
        for _entry, envelope in accepted:
            try:
                lines.append(encode_line(envelope))
            except Exception as exc:  # a bug upstream: fails the batch, writes nothing
                raise asyncpg.DataError(f"cannot encode a record: {exc!r}") from exc
        if sum(len(line) for line in lines) > _HASH_OFF_LOOP:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(None, _columns, accepted, lines, prev)
        return _columns(accepted, lines, prev)

    def _checkpoint_is_due(self, at: datetime, batch: list[_Append]) -> bool:
        """The JSONL writer's rule 10: a ``log.checkpoint`` (the head before this batch)
        leads the first batch committed at least 60 s after the previous one."""
        if self._closing or all(isinstance(entry.event, LogCheckpoint) for entry in batch):
            return False
        return self._checkpoint_due is not None and at >= self._checkpoint_due

    def _checkpoint_done(self, at: datetime,
                         accepted: list[tuple[_Append | None, Envelope]]) -> None:
        if any(isinstance(e.event, LogCheckpoint) for _, e in accepted):
            self._checkpoint_due = at + CHECKPOINT_INTERVAL
        elif self._checkpoint_due is None:
            self._checkpoint_due = at + CHECKPOINT_INTERVAL  # the first batch since open
        # Otherwise the due time stands.

    # -- the tail (rule 6) ------------------------------------------------------------

    async def _tail_loop(self) -> None:
        failures = 0
        while not self._tail_stopped:
            try:
                await self._listen()
                await self._catch_up()
                failures = 0
                # The database answers again: ready for deliveries (/readyz), so a load
                # balancer that took this replica out after a failed write sends them
                # again; a write that still fails sets it back.
                self.writable = True
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError,
                    LogCorrupt) as exc:
                # The database does not answer: out of the load balancer (/readyz 503)
                # now, not at the next delivery's failed write (a follower may get none).
                self.writable = False
                failures += 1
                if failures in (1, 10) or failures % 60 == 0:
                    log.warning("log.tail_failed", database=self.location,
                                error=error_line(exc, self._url), attempts=failures)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._tail_wake.wait(), _TAIL_POLL)
            self._tail_wake.clear()

    async def _listen(self) -> None:
        """(Re)open the LISTEN connection when it is gone; the poll covers the gap."""
        if self._listen_conn is not None and not self._listen_conn.is_closed():
            return
        if self._listen_conn is not None:
            self._listen_conn.terminate()
            self._listen_conn = None
        conn = await asyncpg.connect(self._url, timeout=CONNECT_TIMEOUT,
                                     command_timeout=STATEMENT_TIMEOUT)
        if self._tail_stopped:  # closed meanwhile: nobody would close this one
            conn.terminate()
            return
        await conn.add_listener(CHANNEL, self._notified)
        self._listen_conn = conn

    def _notified(self, _conn: _Conn, _pid: int, _channel: str, payload: object) -> None:
        """A batch committed (the payload is its last seq): wake the tail, unless it was
        ours and already handed on (most are, on a single replica)."""
        try:
            seq = int(str(payload))
        except ValueError:
            seq = self._last.seq + 1
        if seq > self._last.seq:
            self._tail_wake.set()

    def _hand_on_committed(self) -> None:
        """Hand on this process's committed records that follow the last one handed on."""
        due = self._last.seq + 1
        for seq in [s for s in self._committed if s < due]:
            del self._committed[seq]  # the tail read them first
        run: list[tuple[Envelope, bytes]] = []
        while due in self._committed:
            run.append(self._committed.pop(due))
            due += 1
        if run:
            self._hand_on(run)

    async def _catch_up(self) -> None:
        while True:
            self._hand_on_committed()
            upto = min(self._committed) - 1 if self._committed else None
            rows = await self._fetch(self._last.seq, upto, READ_PAGE, bodies=True)
            # Our own commits may have been handed on while the query ran.
            rows = [(seq, line) for seq, line in rows if seq > self._last.seq]
            if not rows:
                self._hand_on_committed()
                return
            self._hand_on([(self._decode(seq, line), line) for seq, line in rows])

    def _hand_on(self, run: list[tuple[Envelope, bytes]]) -> None:
        seq = self._last.seq
        added = 0
        for envelope, line in run:
            if envelope.seq != seq + 1:
                raise LogCorrupt(self.location, envelope.seq, envelope.seq,
                                 f"seq {envelope.seq} after seq {seq}")
            if isinstance(envelope.event, LeaderElected):
                self._epoch = max(self._epoch, envelope.event.epoch)
            added += len(line) + 1
            seq = envelope.seq
        if not run:
            return
        last, line = run[-1]  # only the last line's hash is the head's
        self._last = _Head(seq, _sha256(line), last.at, self._last.epoch,
                           self._last.bytes + added)
        envelopes = [envelope for envelope, _ in run]
        for listener in self._listeners:
            listener(envelopes)

    def _decode(self, seq: int, line: bytes) -> Envelope:
        try:
            envelope = decode_line(line)
        except (CodecError, ValueError) as exc:
            raise LogCorrupt(self.location, seq, seq, str(exc)) from exc
        if envelope.seq != seq:
            raise LogCorrupt(self.location, seq, seq, f"the line holds seq {envelope.seq}")
        return envelope

    async def _fetch(self, after: int, upto: int | None, limit: int, *,
                     bodies: bool) -> list[tuple[int, bytes]]:
        column = "line" if bodies else "coalesce(light, line)"
        async with self._pool.acquire(timeout=POOL_TIMEOUT) as conn:
            rows = await conn.fetch(page_query(column, "($4::bigint IS NULL OR seq <= $4)"),
                                    after, limit, PAGE_BYTES, upto)
        return [(row["seq"], bytes(row["line"])) for row in rows]

    # -- blocking reads, for worker threads (rule 8) ------------------------------------

    def _blocking(self, make: Callable[[], Any]) -> Any:
        loop = self._loop
        if loop is None:
            raise RuntimeError("the log is not started")
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            raise RuntimeError("a blocking read of the event log was called on the loop")
        try:
            return asyncio.run_coroutine_threadsafe(make(), loop).result(_BLOCKING_TIMEOUT)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            # At start (the fold) this stops serve with one line, as any start-up failure.
            raise DatabaseUnavailable(
                f"cannot read the event log from the database {self.location} "
                f"({error_line(exc, self._url)}); check that PostgreSQL runs, then start "
                "again") from None

    def read(self, start: int = 0, end: int | None = None, *, first_seq: int | None = None,
             bodies: bool = True) -> Iterator[tuple[int, Envelope]]:
        """Blocking: ``(seq, record)`` after seq ``start`` up to ``end``, checked like
        the JSONL ``read_records``; ``bodies=False`` leaves the raw bodies out."""
        due = first_seq
        after = start
        while True:
            rows: list[tuple[int, bytes]] = self._blocking(
                functools.partial(self._fetch, after, end, READ_PAGE, bodies=bodies))
            if not rows:
                return
            for seq, line in rows:
                envelope = self._decode(seq, line)
                if due is not None:
                    if seq != due:
                        raise LogCorrupt(self.location, seq, seq, f"seq {seq} where {due} "
                                         "was due")
                    due += 1
                yield seq, envelope
            after = rows[-1][0]

    def whole(self, seqs: Iterable[int]) -> dict[int, Envelope]:
        """Blocking: the whole records (bodies included) of ``seqs``."""
        wanted = sorted(set(seqs))
        if not wanted:
            return {}
        rows = self._blocking(lambda: self._lines(wanted))
        return {seq: self._decode(seq, line) for seq, line in rows}

    async def _lines(self, seqs: list[int]) -> list[tuple[int, bytes]]:
        """The lines of ``seqs``, read in pages (rule 10): as many pending intents as
        there are, each page one bounded result."""
        lines: list[tuple[int, bytes]] = []
        after = 0
        async with self._pool.acquire(timeout=POOL_TIMEOUT) as conn:
            while rows := await conn.fetch(page_query("line", "seq = ANY($4::bigint[])"),
                                           after, READ_PAGE, PAGE_BYTES, seqs):
                lines.extend((row["seq"], bytes(row["line"])) for row in rows)
                after = rows[-1]["seq"]
        return lines

    def line_at(self, position: int) -> bytes | None:
        """Blocking: the line (``\\n`` included) of the record with seq ``position``."""
        try:
            rows = self._blocking(lambda: self._lines([position]))
        except DatabaseUnavailable as exc:
            raise DatabaseReadFailed(str(exc)) from None
        return rows[0][1] + b"\n" if rows else None

    def snapshot_store(self) -> PgSnapshotStore:
        """Snapshots live in the ``obsv_snapshot`` row."""
        return PgSnapshotStore(self)

    async def save_snapshot(self, data: bytes) -> None:
        """Replace the snapshot row (one statement: atomic)."""
        async with self._pool.acquire(timeout=POOL_TIMEOUT) as conn:
            await conn.execute(
                "INSERT INTO obsv_snapshot (id, saved_at, data) VALUES (true, now(), $1) "
                "ON CONFLICT (id) DO UPDATE SET saved_at = now(), data = excluded.data", data,
                timeout=max(STATEMENT_TIMEOUT, len(data) / 10e6))

    async def load_snapshot(self) -> bytes | None:
        """The snapshot row's bytes, or None."""
        async with self._pool.acquire(timeout=POOL_TIMEOUT) as conn:
            data = await conn.fetchval("SELECT data FROM obsv_snapshot WHERE id",
                                       timeout=_BLOCKING_TIMEOUT)
        return None if data is None else bytes(data)


class PgSnapshotStore:
    """obsv/logstore.py's ``SnapshotStore`` in the database; blocking (rule 8)."""

    def __init__(self, eventlog: PgEventLog) -> None:
        self._log = eventlog

    @property
    def location(self) -> str:
        """The table, in the masked database URL."""
        return f"obsv_snapshot in {self._log.location}"

    def write(self, chunks: Iterable[bytes]) -> None:
        """Replace the snapshot; ``OSError`` when the database refuses."""
        data = b"".join(chunks)
        try:
            self._log._blocking(lambda: self._log.save_snapshot(data))
        except DatabaseUnavailable as exc:
            raise OSError(f"cannot write the snapshot: {exc}") from None

    def open(self) -> BinaryIO | None:
        """The snapshot's bytes to read, or None."""
        try:
            data = self._log._blocking(self._log.load_snapshot)
        except DatabaseUnavailable as exc:
            raise OSError(f"cannot read the snapshot: {exc}") from None
        return None if data is None else io.BytesIO(data)


def _columns(accepted: list[tuple[_Append | None, Envelope]], lines: list[bytes], prev: str
             ) -> tuple[list[list[Any]], str, int]:
    """The insert's column arrays (seq, type, at, issue, sha256, line, light), the last
    line's hash and the bytes added. Each line is chained exactly as the JSONL writer
    chains it (``chain``), so the bytes are the same."""
    columns: list[list[Any]] = [[], [], [], [], [], [], []]
    size = 0
    for (_, envelope), line in zip(accepted, lines, strict=True):
        pieces, prev = chain([line], prev)
        whole = b"".join(pieces)[:-1]  # stored without its "\n"
        add_row(columns, envelope, whole, prev)
        size += len(whole) + 1
    return columns, prev, size


def add_row(columns: list[list[Any]], envelope: Envelope, line: bytes, sha256: str) -> None:
    """Append one record's columns (rule 1) to the insert's arrays; ``line`` without
    its ``\n``, ``sha256`` its hash."""
    light = light_event(envelope.event)
    columns[0].append(envelope.seq)
    columns[1].append(type_name(envelope.event))
    columns[2].append(envelope.at)
    columns[3].append(_sentry_issue_id(envelope.event))
    columns[4].append(sha256)
    columns[5].append(line)
    columns[6].append(None if light is None else encode_line(replace(envelope, event=light))[:-1])


def _next_batch(queue: list[_Append]) -> tuple[list[_Append], list[_Append]]:
    """Rule 3: the first calls of ``queue`` whose records come to ``PAGE_BYTES`` at most
    (always the first call: a call goes in, or fails, whole), and the rest."""
    size, taken = 0, 0
    while taken < len(queue):
        end = taken + 1
        while end < len(queue) and queue[end].call == queue[taken].call:
            end += 1  # one call's appends are queued together (_enqueue)
        grown = size + sum(_size_estimate(entry.event) for entry in queue[taken:end])
        if taken and grown > PAGE_BYTES:
            break
        size, taken = grown, end
    return queue[:taken], queue[taken:]


def _size_estimate(event: Event | None) -> int:
    """About the bytes a record adds to the insert, before it is encoded: its raw body
    escaped, an alert's own fields (twice with a body: the light row repeats them) and
    a kilobyte for the rest. Only bodies and the fields a body sets reach megabytes."""
    raw = getattr(event, "raw", None)
    size = 1024 if not isinstance(raw, str) else 1024 + _escaped_size(raw)
    if isinstance(event, AlertReceived):
        # A body's title, culprit, URL or fingerprint are not bounded, and a redelivery
        # (raw null) keeps them: estimated at a kilobyte, thousands of those made one
        # statement of gigabytes again.
        alert = event.alert
        text = "".join([value for value in astuple(alert) if isinstance(value, str)]
                       + [key + value for key, value in alert.tags])
        size += _escaped_size(text) * (2 if isinstance(raw, str) else 1)
    return size


def _escaped_size(text: str) -> int:
    """At most about the bytes of ``text`` in a JSON line: JSON doubles quotes and
    backslashes; a character outside ASCII is up to 4 bytes."""
    return len(text) * (2 if text.isascii() else 4)


def page_query(column: str, where: str) -> str:
    """Rule 10: the query of one page of ``column`` (as ``line``) after seq ``$1``,
    where ``where`` holds (its own parameters from ``$4``), in seq order: at most ``$2``
    rows and ``$3`` bytes of lines, and always the first row. The window sums sizes
    over the page's rows only; a row past the budget is neither sent nor decompressed
    (the server passes stored values along untouched until a row is sent)."""
    return f"""
        SELECT seq, line FROM (
            SELECT seq, line, row_number() OVER w AS n, sum(octet_length(line)) OVER w AS upto
            FROM (SELECT seq, {column} AS line FROM obsv_events
                  WHERE seq > $1 AND {where} ORDER BY seq LIMIT $2) AS page
            WINDOW w AS (ORDER BY seq ROWS UNBOUNDED PRECEDING)
        ) AS sized
        WHERE n = 1 OR upto <= $3::bigint
        ORDER BY seq"""


def _sha256(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


_NO_HEAD = ("the row of obsv_head (the log's last seq, hash and epoch) is missing from "
            "the database: deleted by hand?")


async def _lock_head(conn: _Conn) -> _Head:
    """In an open transaction: the head row, locked until it ends."""
    row = await conn.fetchrow("SELECT seq, sha256, at, epoch, bytes FROM obsv_head FOR UPDATE")
    if row is None:  # deleted by hand since start: the batch fails, nothing is written
        raise asyncpg.DataError(_NO_HEAD)
    return _Head(row["seq"], row["sha256"], row["at"], row["epoch"], row["bytes"])


async def _read_head(pool: asyncpg.Pool) -> _Head:
    async with pool.acquire(timeout=POOL_TIMEOUT) as conn:
        row = await conn.fetchrow("SELECT seq, sha256, at, epoch, bytes FROM obsv_head")
    if row is None:  # migrate() inserted it: someone deleted it since
        raise DatabaseUnavailable(
            f"{_NO_HEAD}; restore the database from a backup, or copy the log out with "
            "obsv export and into an empty database with obsv import")
    return _Head(row["seq"], row["sha256"], row["at"], row["epoch"], row["bytes"])
