"""Leader election among replicas sharing one PostgreSQL log (docs/reference.md §12).

Every replica accepts deliveries; exactly one, the leader, decides and posts.

Rules:
1. The lock. A replica leads while it holds a session-level advisory lock
   (``pg_try_advisory_lock``) on a connection of its own, opened with
   ``idle_session_timeout`` (3 s): when the leader's process dies the server ends its
   session and the lock goes with it; when the process freezes (SIGSTOP, a paused VM,
   a partition) its session falls idle and the server ends it 3 s later.
2. Keep-alive. The leader runs a query on that connection every second, bounded by a
   timeout; one that fails or times out means the session, and the lock, may be gone:
   leadership is lost at once. Followers try the lock every 0.5 s on their own such
   connection, which keeps it alive too.
3. Lease. The leader trusts its lock only for ``lease`` (2 s, less than the idle
   timeout) after the last keep-alive answered. A process waking from a freeze finds
   its lease run out before it can start another GitHub write, without waiting for its
   next keep-alive to fail (``holds``).
4. The epoch. Once it holds the lock a replica takes the lead in the log
   (``take_leadership``: one transaction bumps the head's epoch and appends
   ``leader.elected``). Every decision and outcome it appends carries that epoch and
   commits only while the head still carries it, so the database refuses a former
   leader's writes after a takeover however late they come. The lock says who should
   lead; the epoch makes sure only that one's writes land. A refused write
   (``LeadershipLost``) makes the replica step down at once (``lost``).
5. Every wait is bounded: connecting, each query, taking the lead. Any failure drops
   the connection (and with it the lock) and starts over as a follower.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg
import structlog

from obsv.settings import masked_url, url_passwords

log = structlog.get_logger("obsv.leadership")

# The advisory lock's key: any 64-bit number other programs on the database are
# unlikely to use; this one is "obsv" "lead" in ASCII. Advisory locks are per
# database, and two obsv logs may share one database in two schemas (a search_path in
# the URL's options, or each role's own schema): the key is mixed with the oid of the
# log's head table, so each log has a lock of its own and each its own leader.
LOCK_KEY = 0x6F627376_6C656164
_TRY_LOCK = "SELECT pg_try_advisory_lock($1::bigint # 'obsv_head'::regclass::oid::bigint)"


@dataclass(frozen=True, slots=True)
class Timings:
    """Rules 1 to 3 and 5, in seconds; tests and the benchmark shorten nothing."""

    idle_session_timeout: float = 3.0
    keepalive: float = 1.0
    lease: float = 2.0
    retry: float = 0.5
    connect_timeout: float = 5.0
    query_timeout: float = 1.0
    take_timeout: float = 5.0


TakeLeadership = Callable[[str], Awaitable[int]]


class Leadership:
    """One replica's part in the election: follower until it holds the lock and has
    taken the lead in the log, then leader until the lock or the epoch is lost."""

    def __init__(self, url: str, replica: str, take_leadership: TakeLeadership, *,
                 timings: Timings = Timings()) -> None:
        self._url = url
        self.replica = replica
        self._take = take_leadership
        self._on_elected: Callable[[int], None] = _ignore
        self._on_lost: Callable[[str], None] = _ignore
        self._timings = timings
        self.epoch: int | None = None  # set while leading
        self._renewed = 0.0  # monotonic time the last keep-alive answered (rule 3)
        self._lost = asyncio.Event()
        self._tried = asyncio.Event()  # the first try for the lock is over
        self._task: asyncio.Task[None] | None = None

    @property
    def leading(self) -> bool:
        """Whether this replica took the lead and has not lost it yet."""
        return self.epoch is not None

    def holds(self) -> bool:
        """Rule 3: leading, and the lock proved alive within the lease."""
        return self.leading and time.monotonic() - self._renewed < self._timings.lease

    def start(self, on_elected: Callable[[int], None], on_lost: Callable[[str], None]
              ) -> None:
        """Compete on the running loop until ``close``: ``on_elected(epoch)`` once this
        replica has taken the lead, ``on_lost(reason)`` when it has lost it."""
        self._on_elected, self._on_lost = on_elected, on_lost
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="obsv-leadership")

    async def close(self) -> None:
        """Stop competing; a leader steps down and drops the lock with its connection."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def first_try(self) -> None:
        """Return once the first try is over: the lock was busy, or won and the lead
        taken (``on_elected`` called), or the try failed."""
        await self._tried.wait()

    def lost(self, reason: str) -> None:
        """Rule 4: a write of this epoch was refused; step down now, compete again."""
        if self.leading:
            self._step_down(reason)
            self._lost.set()

    async def _run(self) -> None:
        failures = 0  # connections failed in a row: the database down, say
        while True:
            connection: asyncpg.Connection | None = None
            try:
                connection = await self._connect()
                failures = 0
                await self._wait_for_lock(connection)
                await self._lead(connection)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # rule 5: whatever went wrong, start over
                if self.leading:
                    self._step_down(_describe(exc, self._url))
                else:
                    failures += 1
                    # Tried every 0.5 s: a database down for an hour is 7,200 tries,
                    # logged at the first, the tenth, then once a minute.
                    if failures in (1, 10) or failures % 120 == 0:
                        log.warning("leader.connection_failed", attempts=failures,
                                    error=_describe(exc, self._url))
            finally:
                self._tried.set()
                if self.leading:  # cancelled (close) while leading
                    self._step_down("stopping")
                if connection is not None:
                    # Never waits on a peer that may be gone; the server ends the
                    # session (and the lock) when the socket closes.
                    connection.terminate()
            await asyncio.sleep(self._timings.retry)

    async def _connect(self) -> asyncpg.Connection:
        t = self._timings
        return await asyncpg.connect(
            self._url, timeout=t.connect_timeout, command_timeout=t.query_timeout,
            statement_cache_size=0,
            server_settings={
                "idle_session_timeout": f"{int(t.idle_session_timeout * 1000)}ms",
                "application_name": f"obsv leader election ({self.replica})"[:63]})

    async def _wait_for_lock(self, connection: asyncpg.Connection) -> None:
        """Rule 2: try the lock every ``retry`` seconds (which keeps the session busy)."""
        t = self._timings
        while True:
            locked = await connection.fetchval(
                _TRY_LOCK, LOCK_KEY, timeout=t.query_timeout)
            if locked:
                self._renewed = time.monotonic()
                return
            self._tried.set()
            await asyncio.sleep(t.retry)

    async def _lead(self, connection: asyncpg.Connection) -> None:
        """Rules 2 and 4, holding the lock: keep its session alive from now on (taking
        the lead can wait on other replicas' appends longer than the idle timeout),
        take the lead in the log, and lead until a keep-alive fails or a write is
        refused. Returns when the lead is lost; raises what made it so."""
        self._lost.clear()
        pings = asyncio.create_task(self._keep_alive(connection), name="obsv-leader-ping")
        lost = asyncio.create_task(self._lost.wait(), name="obsv-leader-lost")
        taking = asyncio.ensure_future(
            asyncio.wait_for(self._take(self.replica), self._timings.take_timeout))
        try:
            await asyncio.wait({taking, pings}, return_when=asyncio.FIRST_COMPLETED)
            if not taking.done():  # the keep-alive failed first: it raises
                await pings
            epoch = taking.result()
            self.epoch = epoch
            log.info("leader.elected", epoch=epoch, replica=self.replica)
            self._on_elected(epoch)
            self._tried.set()
            await asyncio.wait({pings, lost}, return_when=asyncio.FIRST_COMPLETED)
            if pings.done():
                pings.result()  # raises the keep-alive's failure
        finally:
            for task in (taking, pings, lost):
                task.cancel()
            await asyncio.gather(taking, pings, lost, return_exceptions=True)

    async def _keep_alive(self, connection: asyncpg.Connection) -> None:
        """Rule 2: a query every ``keepalive`` seconds, until one fails (it raises)."""
        t = self._timings
        while True:
            started = time.monotonic()
            await connection.fetchval("SELECT 1", timeout=t.query_timeout)
            self._renewed = started  # the session was alive when the query was sent
            await asyncio.sleep(t.keepalive)

    def _step_down(self, reason: str) -> None:
        epoch, self.epoch = self.epoch, None
        (log.info if reason == "stopping" else log.warning)(
            "leader.lost", epoch=epoch, replica=self.replica, reason=reason)
        self._on_lost(reason)


def _ignore(_: object) -> None:
    """No one to tell (before ``start``)."""


def _describe(exc: BaseException, url: str) -> str:
    """One line for a log, with ``url``'s password masked wherever the driver quoted it."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = text.replace(url, masked_url(url))
    for password in sorted(url_passwords(url), key=len, reverse=True):
        text = text.replace(password, "***")
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__
