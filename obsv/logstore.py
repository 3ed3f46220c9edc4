"""The event-log port: what the receivers, consumer, admin API and snapshots need of a
log, so that a JSONL file (obsv/eventlog.py) and PostgreSQL (obsv/pglog.py) serve
them alike (docs/reference.md §4, §12).

Rules:
1. ``append``/``append_many`` return the records once they are durable: fsync'd in
   the file, committed in the database. A failed write raises ``LogWriteError`` and
   records nothing of the call; the log stays usable for the next one.
2. ``seq`` is gapless, from 1, in commit order, whichever process appended; ``at``
   never goes backwards; every line carries ``prev`` (§11). The lines are the same
   bytes in both implementations.
3. Fencing: an append given an ``epoch`` commits only if the log's epoch still
   equals it, checked in the same transaction that records it; otherwise it raises
   ``LeadershipLost`` (a ``LogWriteError``) and nothing of it is recorded. The file
   has one writer (flock), so it accepts and ignores the epoch.
4. Listeners see every record committed by any process, exactly once each, in
   ``seq`` order, without gaps, starting after ``last_seq``/``position`` as they
   were when the listener was added (one synchronous step, obsv/consumer.py rule 3).
   ``last_seq`` is the last record handed to listeners, so for a shared log it may
   trail what other processes have just committed.
5. A ``Position`` is opaque: where a record ends (a byte offset in the file, the
   ``seq`` in the database). Positions only come from this port (``position``, and
   the ones ``read`` yields) and only go back into it.
6. The blocking methods (``read``, ``whole``, ``line_at``, the snapshot store's) do I/O
   and may take long: call them from a worker thread, never on the event loop
   (the database implementation hands its queries to the loop and waits).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from typing import BinaryIO, Protocol, runtime_checkable

from obsv.core.events import Envelope, Event
from obsv.eventlog import LogWriteError

Listener = Callable[[Sequence[Envelope]], None]
Position = int


class LeadershipLost(LogWriteError):
    """Rule 3: another process took the lead (the log's epoch moved past ours); nothing
    of the append was recorded. A ``LogWriteError``, so code that only retries failed
    writes stays safe; a leader should catch it first and step down."""

    def __init__(self, epoch: int, current: int) -> None:
        super().__init__(f"leadership lost: this process leads epoch {epoch}, the log is "
                         f"at epoch {current}")
        self.epoch, self.current = epoch, current


class SnapshotStore(Protocol):
    """Where snapshot bytes go (a file beside the log, or a database row); their format
    is obsv/snapshots.py's. Blocking (rule 6)."""

    @property
    def location(self) -> str:
        """Where it is, for messages (a path, or a table in a masked URL)."""
        ...

    def write(self, chunks: Iterable[bytes]) -> None:
        """Replace the snapshot with ``chunks``, atomically: a reader sees the old
        snapshot or the whole new one. ``OSError`` when it cannot be written."""
        ...

    def open(self) -> BinaryIO | None:
        """The snapshot to read (the caller closes it), or None when there is none;
        ``OSError`` when one is there but cannot be read."""
        ...


class EventStore(Protocol):
    """An append-only, gapless, hash-chained event log (rules 1 to 6)."""

    writable: bool  # False after a failed write, True again after a good one (/readyz)

    @property
    def location(self) -> str:
        """The log, for messages: its path, or its database URL with the password masked."""
        ...

    @property
    def last_seq(self) -> int:
        """The seq of the last record handed to listeners (0 for an empty log)."""
        ...

    @property
    def last_at(self) -> datetime:
        """The ``at`` of that record (the epoch for an empty log)."""
        ...

    @property
    def head_sha256(self) -> str:
        """The hash of that record's line (64 zeros for an empty log)."""
        ...

    @property
    def position(self) -> Position:
        """Where that record ends (rule 5): a fold of ``read(…, position)`` reaches it."""
        ...

    @property
    def size(self) -> int:
        """Bytes of the records' lines up to ``position`` (the ``obsv_log_bytes`` gauge)."""
        ...

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener`` with each batch of records as they become durable (rule 4)."""
        ...

    def start(self) -> None:
        """Start the writer (and, for a shared log, the tail) on the running loop."""
        ...

    async def close(self) -> None:
        """Finish queued appends, stop, release the file or connections."""
        ...

    async def append(self, event: Event, *, epoch: int | None = None) -> Envelope:
        """Append one record; returns it once durable (rules 1 and 3)."""
        ...

    async def append_many(self, events: Sequence[Event], *,
                          epoch: int | None = None) -> list[Envelope]:
        """Append records in order, in one batch, all or none; returns them once durable."""
        ...

    def read(self, start: Position = 0, end: Position | None = None, *,
             first_seq: int | None = None,
             bodies: bool = True) -> Iterator[tuple[Position, Envelope]]:
        """Blocking (rule 6): ``(end position, record)`` for each record after ``start``
        up to ``end``; ``LogCorrupt`` at a record that does not parse or, with
        ``first_seq``, whose seq is not the one due. With ``bodies=False`` a log may
        yield records without their raw body (``raw`` None; an ``alert.received``
        then carries ``raw_sha256``), which is all the fold needs: ``whole`` gives
        the rest back where it is needed."""
        ...

    def whole(self, seqs: Iterable[int]) -> dict[int, Envelope]:
        """Blocking (rule 6): the records of ``seqs``, bodies included."""
        ...

    def line_at(self, position: Position) -> bytes | None:
        """Blocking (rule 6): the line (``\\n`` included) of the record that ends at
        ``position``, or None when none does."""
        ...

    def snapshot_store(self) -> SnapshotStore:
        """Where this log's snapshots are kept."""
        ...


@runtime_checkable
class SharedEventStore(EventStore, Protocol):
    """A log several processes append to (PostgreSQL): leadership is taken through it.
    The JSONL log is not one (it has a single writer by flock)."""

    @property
    def epoch(self) -> int:
        """The log's epoch as last seen by this process (0 before anyone led)."""
        ...

    async def take_leadership(self, replica: str) -> int:
        """In one transaction, bump the log's epoch and append ``leader.elected``
        (``LeaderElected(epoch, replica)``); returns the new epoch."""
        ...
