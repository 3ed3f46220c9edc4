"""Snapshots of the folded state, ``<log>.snapshot``: when to write one, and the file.

Rules:
1. A snapshot is a cache, never a source of truth. It is used only when it proves
   that it is whole (rule 2) and that it belongs to this log (rule 3); otherwise it
   is ignored with a warning (``snapshot.ignored``) and the fold starts at seq 1.
2. Whole: the first line is a header (format, log offset), then one line per row of
   ``obsv.core.snapshot``, then a trailer with the number of rows and the sha256 of
   every byte before it. A file cut anywhere, even at a row boundary, has no
   trailer or a wrong one.
3. This log's: the line that ends at the header's offset (read through
   obsv/eventlog.py, the only code that opens the log) is the one the snapshot was
   made after (its sha256 is in the header) and holds the snapshot's seq, and that
   offset is within the part of the log being folded. The seq alone is not enough:
   another log (a backup restored beside the wrong snapshot) can have a record of
   that seq ending at that very offset.
4. Written atomically (a fresh temp file, fsync, rename) with mode 0600, since it
   holds alert data; neither written nor read through a symlink.
4a. The header also names the log's head it covers, ``"head": "SEQ:HASH"`` (the seq
   and the chain hash of its line, docs/reference.md §11), in the form that
   ``obsv replay --verify --head`` takes, so an operator can keep it elsewhere.
5. Written once ``every`` records have been folded since the last one, but at most
   every 10 s (writing costs O(state)), from a copy of the state on a worker thread
   so deliveries are not held up; and at a clean stop.
6. Where the bytes go is the log's (``EventStore.snapshot_store``, obsv/logstore.py):
   the file ``<log>.snapshot`` (obsv/files.py) or a row of the database
   (obsv/pglog.py). The "offset" is the log's opaque position: a byte offset in a
   file, a seq in the database; rules 2 and 3 hold for both.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import time
from collections.abc import Iterator
from typing import Any, BinaryIO

import orjson
import structlog

from obsv.core.policy import State
from obsv.core.snapshot import UnsupportedSnapshot, snapshot_rows, state_from_rows
from obsv.eventlog import decode_line, line_sha256
from obsv.logstore import EventStore, Position, SnapshotStore
from obsv.metrics import Metrics
from obsv.runtime import return_free_memory

log = structlog.get_logger("obsv.snapshots")

# 1 had no trailer, 2 no hash of the log's line: neither can prove rule 2 or 3, so a
# file of either is ignored (the next clean stop writes a format 3 one).
FORMAT = 3
_MIN_INTERVAL = 10.0
_WRITE_CHUNK = 1 << 20
# A row this long is a column block (obsv/core/snapshot.py: 50 KB of first-seen times,
# 800 KB of links): once loaded, its garbage and the tables its entries outgrew go back
# to the system before the next (obsv/runtime.py rule 4). Not after every row: a day of
# GitHub deliveries is a row each, and a trim walks the whole heap.
_TRIM_AFTER = 16 << 10


class Unusable(ValueError):
    """Why a snapshot is ignored (rules 1 to 3)."""


class SnapshotFile:
    """The file itself: rules 1 to 4."""

    def __init__(self, eventlog: EventStore) -> None:
        # Where the bytes go is the log's business (a file beside it, or a database
        # row); what they are, and what proves them, is this module's.
        self.store: SnapshotStore = eventlog.snapshot_store()
        self._log = eventlog

    def save(self, state: State, offset: Position) -> None:
        """Write the snapshot for ``state``, which covers the log up to ``offset``."""
        line = self._log.line_at(offset)
        if line is None:
            raise OSError(f"no line of {self._log.location} ends at {offset}")
        head = f"{state.last_seq}:{line_sha256(line)}"
        self.store.write(_batched(_lines(state, offset, _sha256(line), head)))

    def load(self, limit: Position) -> tuple[State, Position] | None:
        """The snapshot's state and log offset, or None when it is absent or cannot be
        used (rules 1 to 3); ``limit`` is where the part of the log being folded ends."""
        try:
            return self._load(limit)
        except Unusable as exc:
            log.warning("snapshot.ignored", path=self.store.location, reason=str(exc),
                        consequence="folding the whole log")
            return None

    def _load(self, limit: Position) -> tuple[State, Position] | None:
        try:
            opened = self.store.open()
        except OSError as exc:
            raise Unusable(f"cannot open it: {exc.strerror or exc}") from None
        if opened is None:
            return None
        try:
            with opened as f, _collector_paused():
                offset, line_sha256, state = _read(f)
        except Unusable:
            raise
        except UnsupportedSnapshot as exc:  # the next clean stop writes this version's
            raise Unusable(f"{exc}: another obsv version wrote it") from None
        except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
            raise Unusable(repr(exc)) from None
        if not 0 < offset <= limit:
            raise Unusable(f"its offset {offset} is outside the log (0, {limit}]")
        line = self._log.line_at(offset)
        if line is None or _sha256(line) != line_sha256:
            raise Unusable("does not match the log: the line at its offset is not the one "
                           "it was made after (another log's snapshot, or the log changed)")
        if _seq_of(line) != state.last_seq:
            raise Unusable("does not match the log: no record of its seq ends at its offset")
        return state, offset


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Loading makes a million objects at 100 000 issues, none in a cycle: the cyclic
    collector would only traverse them again and again as they pile up (a third of the
    load's time). Paused for the whole process, but only this long."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _seq_of(line: bytes) -> int | None:
    try:
        return decode_line(line).seq
    except Exception:  # any line that is not a record is simply not a match
        return None


def _lines(state: State, offset: int, line_hash: str, head: str) -> Iterator[bytes]:
    """Rule 2: header, rows, and the trailer that proves them."""
    digest = hashlib.sha256()
    header = orjson.dumps({"format": FORMAT, "offset": offset,
                           "line_sha256": line_hash, "head": head}) + b"\n"
    digest.update(header)
    yield header
    rows = 0
    for row in snapshot_rows(state):
        line = orjson.dumps(row) + b"\n"
        digest.update(line)
        rows += 1
        yield line
    yield orjson.dumps({"rows": rows, "sha256": digest.hexdigest()}) + b"\n"


def _batched(lines: Iterator[bytes]) -> Iterator[bytes]:
    """About a megabyte per write: one syscall per row was most of a snapshot's cost."""
    batch: list[bytes] = []
    size = 0
    for line in lines:
        batch.append(line)
        size += len(line)
        if size >= _WRITE_CHUNK:
            yield b"".join(batch)
            batch, size = [], 0
    if batch:
        yield b"".join(batch)


def _read(f: BinaryIO) -> tuple[int, str, State]:
    header_line = f.readline()
    header = orjson.loads(header_line)
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise Unusable(f"not a format {FORMAT} snapshot (an older obsv wrote it, "
                         "without what proves it whole and this log's)")
    offset, line_sha256 = header["offset"], header["line_sha256"]
    if not isinstance(offset, int) or not isinstance(line_sha256, str):
        raise Unusable("its header is not an offset and a hash")
    return offset, line_sha256, state_from_rows(_proven_rows(f, header_line))


def _proven_rows(f: BinaryIO, header_line: bytes) -> Iterator[Any]:
    """Every row but the last line, which must be the trailer that matches them; the
    check runs when the rows run out, before ``state_from_rows`` returns a state."""
    digest = hashlib.sha256(header_line)
    count = 0
    pending: bytes | None = None
    for line in f:
        if pending is not None:
            digest.update(pending)
            count += 1
            yield orjson.loads(pending)
            if len(pending) >= _TRIM_AFTER:
                return_free_memory()
        pending = line
    trailer = orjson.loads(pending) if pending and pending.endswith(b"\n") else None
    if not isinstance(trailer, dict):
        raise Unusable("it has no trailer: the file was cut short")
    if trailer.get("rows") != count or trailer.get("sha256") != digest.hexdigest():
        raise Unusable(f"its trailer does not match its {count} rows: cut or changed")


class Snapshots:
    """When to write a snapshot (rule 5), for one consumer."""

    def __init__(self, eventlog: EventStore, metrics: Metrics, every: int) -> None:
        self.file = SnapshotFile(eventlog)
        self._log = eventlog
        self._metrics = metrics
        self._every = every
        self._seq = 0
        self._at = float("-inf")
        self._task: asyncio.Task[None] | None = None

    def load(self, limit: Position) -> tuple[State, Position] | None:
        """The usable snapshot, if any (runs on the fold's thread)."""
        loaded = self.file.load(limit)
        self._seq = loaded[0].last_seq if loaded else 0
        return loaded

    @property
    def seq(self) -> int:
        """The seq the last snapshot loaded or written covers."""
        return self._seq

    def maybe_save(self, state: State) -> None:
        """Start writing a snapshot off the loop if one is due and none is being written."""
        if self._task is not None and not self._task.done():
            return
        if (state.last_seq - self._seq >= self._every
                and time.monotonic() - self._at >= _MIN_INTERVAL and self._matches(state)):
            frozen, offset = state.copy(), self._log.position
            self._task = asyncio.create_task(self._save_off_loop(frozen, offset))

    async def close(self, state: State | None) -> None:
        """Wait for a snapshot being written; then write ``state``'s now (clean stop)."""
        if self._task is not None:
            await self._task
        if state is not None and self._matches(state):
            # Off the loop: a database's snapshot store hands its query to the loop.
            loop = asyncio.get_running_loop()
            if await loop.run_in_executor(None, self._save, state, self._log.position):
                self._saved(state.last_seq)

    async def _save_off_loop(self, frozen: State, offset: Position) -> None:
        loop = asyncio.get_running_loop()
        if await loop.run_in_executor(None, self._save, frozen, offset):
            self._saved(frozen.last_seq)

    def _matches(self, state: State) -> bool:
        # Only a state that covers the log exactly is worth saving.
        return state.last_seq == self._log.last_seq != 0

    def _save(self, state: State, offset: Position) -> bool:
        try:
            self.file.save(state, offset)
        except OSError as exc:
            log.warning("snapshot.write_failed", error=str(exc))
            return False
        return True

    def _saved(self, seq: int) -> None:
        self._seq = seq
        self._at = time.monotonic()
        self._metrics.snapshot_seq.set(seq)
