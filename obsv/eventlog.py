"""The event log: the only code that opens ``events.jsonl``.

Rules:
1. One JSON object per line, ``\\n``-terminated, UTF-8, file mode 0600. Nothing is
   ever rewritten in place; the file only grows (or is cut back to a line boundary
   after a failed write, below).
2. ``seq`` is contiguous from 1 and ``at`` never goes backwards: the writer assigns
   both, one ``at`` per batch from the clock it is given (the service gives it the
   trusted clock of obsv/clock.py), never below the last ``at``.
3. Group commit: appends queue up while a write + fsync is in flight and the next
   batch goes out as one ``write`` and one ``fdatasync``. Every caller's future
   resolves only after the fsync that covers its record, so a 202 means durable.
4. A failed write (ENOSPC, EIO, EFBIG …) fails every append of its batch and cuts
   the file back to its last whole line, so nothing half-written stays; ``seq`` is
   not consumed and the next batch simply tries again.
5. On open, bytes after the last ``\\n`` are a torn write from a crash: they are moved
   to a side file (``<log>.torn-<seq>-<n>``) with a warning, never parsed into the
   log nor silently dropped; ``seq`` continues after the last whole record.
6. A line that does not parse anywhere else is ``LogCorrupt`` naming the line.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson

from obsv.clock import Clock as Clock  # re-exported: the shells import it from here
from obsv.clock import utc_now as utc_now
from obsv.core.codec import CodecError, decode, encode
from obsv.core.events import Envelope, Event
from obsv.files import write_private

Listener = Callable[[Sequence[Envelope]], None]

_FILE_MODE = 0o600
_TAIL_CHUNK = 64 * 1024
_READ_CHUNK = 1 << 20
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class LogCorrupt(Exception):
    """A whole line of the log does not parse; ``line`` is 1-based when known."""

    def __init__(self, path: Path, line: int | None, offset: int, reason: str) -> None:
        where = f"line {line}" if line is not None else f"byte offset {offset}"
        super().__init__(f"{path}: {where} is not a valid record ({reason})")
        self.path, self.line, self.offset, self.reason = path, line, offset, reason


class LogInUse(Exception):
    """Another process has the log open for writing: a log has exactly one writer."""


class LogWriteError(Exception):
    """The log could not be written; nothing of the failed batch stays in it."""


@dataclass(frozen=True, slots=True)
class TornTail:
    """Bytes set aside on open because the last write did not finish."""

    side_file: Path
    size: int


def decode_line(line: bytes) -> Envelope:
    """One log line -> record; ``CodecError`` or ``orjson.JSONDecodeError`` if not."""
    record = orjson.loads(line)
    if not isinstance(record, dict):
        raise CodecError("a record must be a JSON object")
    return decode(record)


def encode_line(envelope: Envelope) -> bytes:
    """One record -> its log line, ``\\n`` included."""
    return orjson.dumps(encode(envelope)) + b"\n"


def iter_lines(path: Path, start: int = 0) -> Iterator[tuple[int, bytes]]:
    """Yield ``(end offset, line)`` for each line from ``start``, the ``\n`` kept (JSON
    parsers ignore it, and not slicing it off saves a copy of every line). A last
    line without ``\n`` is yielded with a negative end offset so callers can report it."""
    with open(path, "rb", buffering=_READ_CHUNK) as f:
        f.seek(start)
        offset = start
        for line in f:
            offset += len(line)
            yield (offset if line.endswith(b"\n") else -offset), line


def read_records(path: Path, start: int = 0) -> Iterator[tuple[int, Envelope]]:
    """Yield ``(end offset, record)`` for every whole record from ``start``.

    Raises ``LogCorrupt`` at the first line that does not parse. A torn tail is not
    a record and is not yielded (``EventLog.open`` sets it aside; ``replay --verify``
    reports it through ``iter_lines``).
    """
    line_no = 0 if start == 0 else None
    for end, line in iter_lines(path, start):
        if end < 0:
            return
        if line_no is not None:
            line_no += 1
        try:
            yield end, decode_line(line)
        except (CodecError, orjson.JSONDecodeError) as exc:
            raise LogCorrupt(path, line_no, end - len(line), str(exc)) from exc


class EventLog:
    """Append-only, group-committed, fsync'd JSONL log with ``seq`` and ``at``."""

    def __init__(self, path: Path, fd: int, size: int, last: Envelope | None,
                 clock: Clock, torn: TornTail | None) -> None:
        self.path = path
        self.torn = torn
        self._fd = fd
        self._size = size
        self._dirty = False
        self._last_seq = last.seq if last else 0
        self._last_at = last.at if last else _EPOCH
        self._clock = clock
        self._queue: list[tuple[Event, asyncio.Future[Envelope]]] = []
        self._wakeup = asyncio.Event()
        self._listeners: list[Listener] = []
        # One thread does every write + fsync, so they never overlap or reorder.
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="obsv-log")
        self._writer: asyncio.Task[None] | None = None
        self._closing = False
        self.writable = True

    @classmethod
    def open(cls, path: Path, clock: Clock = utc_now) -> EventLog:
        """Open (creating) the log, set aside a torn tail, find the last ``seq``."""
        path.parent.mkdir(parents=True, exist_ok=True)
        created = not path.exists()
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, _FILE_MODE)
        try:
            _lock(path, fd)
            os.fchmod(fd, _FILE_MODE)
            if created:
                _fsync_dir(path.parent)
            size, last_line = _last_whole_line(fd)
            last = _decode_last(path, last_line, size) if last_line else None
            torn = _set_aside_tail(path, fd, size, last.seq if last else 0)
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd, size, last, clock, torn)

    @property
    def last_seq(self) -> int:
        """The ``seq`` of the last durable record (0 for an empty log)."""
        return self._last_seq

    @property
    def last_at(self) -> datetime:
        """The ``at`` of the last durable record (the epoch for an empty log)."""
        return self._last_at

    @property
    def size(self) -> int:
        """Bytes of whole, durable records."""
        return self._size

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener`` with each batch of records once they are durable."""
        self._listeners.append(listener)

    def start(self) -> None:
        """Start the writer task on the running loop."""
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write_loop())

    async def append(self, event: Event) -> Envelope:
        """Append one record; returns it once it is fsync'd. ``LogWriteError`` if not."""
        return await self._enqueue(event)

    async def append_many(self, events: Sequence[Event]) -> list[Envelope]:
        """Append records in order, in one batch; returns them once fsync'd."""
        return list(await asyncio.gather(*(self._enqueue(event) for event in events)))

    def _enqueue(self, event: Event) -> asyncio.Future[Envelope]:
        # Queued synchronously, so records keep the order of the calls.
        if self._writer is None or self._closing:
            raise LogWriteError("the event log is closed")
        future = asyncio.get_running_loop().create_future()
        self._queue.append((event, future))
        self._wakeup.set()
        return future

    async def close(self) -> None:
        """Finish queued appends, stop the writer, close the file."""
        if self._writer is not None:
            self._closing = True
            self._wakeup.set()
            await self._writer
            self._writer = None
        self._io.shutdown(wait=True)
        os.close(self._fd)

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue or not self._closing:
            if not self._queue:
                await self._wakeup.wait()
                self._wakeup.clear()
                continue
            batch, self._queue = self._queue, []
            await self._commit(loop, batch)

    async def _commit(self, loop: asyncio.AbstractEventLoop,
                      batch: list[tuple[Event, asyncio.Future[Envelope]]]) -> None:
        accepted, lines = self._stamp_and_encode(batch)
        if not accepted:
            return
        data = b"".join(lines)
        try:
            await loop.run_in_executor(self._io, self._write_durably, data)
        except OSError as exc:
            self.writable = False
            error = LogWriteError(f"cannot write {self.path}: {exc.strerror or exc}")
            for _, future in accepted:
                future.set_exception(error)
            return
        self.writable = True
        self._size += len(data)
        self._last_seq, self._last_at = accepted[-1][0].seq, accepted[-1][0].at
        for envelope, future in accepted:
            if not future.done():
                future.set_result(envelope)
        for listener in self._listeners:
            listener([envelope for envelope, _ in accepted])

    def _stamp_and_encode(self, batch: list[tuple[Event, asyncio.Future[Envelope]]]
                          ) -> tuple[list[tuple[Envelope, asyncio.Future[Envelope]]],
                                     list[bytes]]:
        """Give each record its seq and line; a record that cannot be encoded fails
        alone and takes no seq, so one bad record never fails its neighbours."""
        at = max(self._clock(), self._last_at)
        accepted: list[tuple[Envelope, asyncio.Future[Envelope]]] = []
        lines: list[bytes] = []
        for event, future in batch:
            if future.done():  # the caller went away (cancelled): nothing to record
                continue
            envelope = Envelope(self._last_seq + len(accepted) + 1, at, event)
            try:
                lines.append(encode_line(envelope))
            except Exception as exc:  # a bug upstream; never a half-written line
                future.set_exception(LogWriteError(f"cannot encode a record: {exc!r}"))
                continue
            accepted.append((envelope, future))
        return accepted, lines

    def _write_durably(self, data: bytes) -> None:
        """Runs on the log thread: write all of ``data`` and fsync, or cut it back."""
        try:
            if self._dirty:
                os.ftruncate(self._fd, self._size)
                self._dirty = False
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            os.fdatasync(self._fd)
        except OSError:
            self._dirty = True
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._size)
                self._dirty = False
            raise


def _lock(path: Path, fd: int) -> None:
    """Rule 1 needs one writer: two services appending to one file would interleave
    seqs. The lock goes with the process, so a SIGKILLed writer never leaves it held."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise LogInUse(f"{path} is in use by another obsv process; stop it, or point "
                       "OBSV_EVENT_LOG at another file") from None


def _fsync_dir(directory: Path) -> None:
    """Make a new directory entry durable (the file itself is fsync'd per batch)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _last_whole_line(fd: int) -> tuple[int, bytes]:
    """``(bytes up to and including the last \\n, that last line)`` of the file."""
    end = os.fstat(fd).st_size
    position, tail = end, b""
    while position > 0:
        step = min(_TAIL_CHUNK, position)
        position -= step
        tail = os.pread(fd, step, position) + tail
        newline = tail.rfind(b"\n")
        if newline < 0:
            continue
        whole = position + newline + 1
        previous = tail.rfind(b"\n", 0, newline)
        if previous >= 0 or position == 0:
            return whole, tail[previous + 1:newline]
        # The last line is longer than what we read: keep reading backwards.
    return 0, b""


def _decode_last(path: Path, line: bytes, size: int) -> Envelope:
    try:
        return decode_line(line)
    except (CodecError, orjson.JSONDecodeError) as exc:
        raise LogCorrupt(path, None, size - len(line) - 1, str(exc)) from exc


def _set_aside_tail(path: Path, fd: int, whole: int, last_seq: int) -> TornTail | None:
    end = os.fstat(fd).st_size
    if end == whole:
        return None
    torn = os.pread(fd, end - whole, whole)
    side = _free_side_path(path, last_seq)
    write_private(side, torn, how="create")  # durable before the log forgets it
    os.ftruncate(fd, whole)
    os.fsync(fd)
    return TornTail(side, len(torn))


def _free_side_path(path: Path, last_seq: int) -> Path:
    n = 1
    while (candidate := path.with_name(f"{path.name}.torn-{last_seq}-{n}")).exists():
        n += 1
    return candidate
