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
6. A line that does not parse anywhere else is ``LogCorrupt`` naming the line. So is
   a ``seq`` out of turn: open checks that the last few records run on by one (a
   copied old line at the end would make new records reuse seqs), and the consumer's
   fold checks every record it reads (``read_records(first_seq=...)``).
7. The log is a regular file reached without following a symlink: a log path that
   is a link (to ``/dev/null``, to another program's file) or a device, FIFO or
   directory is refused (``LogPathRefused``, before anything is written). obsv
   never chmods: a missing log is created 0600, and an existing one with a wider
   mode is reported (``mode``) and left as it is, as it may not be obsv's to change.
8. Open costs O(tail), whatever the tail holds: the last newline is found by
   scanning back in fixed chunks, and a torn tail is copied aside in bounded chunks.
9. The lines form a hash chain (docs/reference.md §11): each line starts with
   ``"prev"``, the sha256 of the line before it without its ``\n`` (64 zeros for the
   first line), so an edited, dropped or reordered line breaks the link after it.
   Records are encoded on the loop; the log thread, which writes them anyway, puts
   ``prev`` in front of each line and hashes it, so the loop does no hashing. Open
   learns the last line's hash from the tail it reads for rule 6. A failed batch
   leaves the head where it was, like ``seq``.
10. While records arrive, the writer adds a ``log.checkpoint`` (the head: last seq
   and its line's hash) to the first batch committed at least 60 s (by the log's
   clock) after the previous checkpoint, or after the first batch since open. It is
   written only after other records, so an idle log stays silent, and a checkpoint
   never makes another one due.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import os
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from obsv.clock import Clock as Clock  # re-exported: the shells import it from here
from obsv.clock import utc_now as utc_now
from obsv.core import codec
from obsv.core.codec import GENESIS, CodecError
from obsv.core.events import Envelope, Event, LogCheckpoint
from obsv.errors import StartupError
from obsv.files import FileSnapshotStore, write_private

Listener = Callable[[Sequence[Envelope]], None]
_Accepted = list[tuple[Envelope, "asyncio.Future[Envelope]"]]

_FILE_MODE = 0o600
_TAIL_CHUNK = 64 * 1024
_READ_CHUNK = 1 << 20
_COPY_CHUNK = 1 << 20
_CHECKED_LINES = 16  # rule 6: how many of the last records open checks ...
_CHECKED_BYTES = 1 << 20  # ... as long as they fit in this (the last one always does)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_REASON = 300  # characters of a parse error shown: it may quote a value megabytes long
CHECKPOINT_INTERVAL = timedelta(seconds=60)  # rule 10
_PREV = b'{"prev":"'


class LogCorrupt(Exception):
    """A whole line of the log does not parse; ``line`` is 1-based when known."""

    def __init__(self, path: Path | str, line: int | None, offset: int, reason: str) -> None:
        reason = bounded_reason(reason)
        where = f"line {line}" if line is not None else f"byte offset {offset}"
        super().__init__(f"{path}: {where} is not a valid record ({reason})")
        self.path, self.line, self.offset, self.reason = path, line, offset, reason


class LogPathRefused(StartupError):
    """Rule 7: the log path is not a regular file obsv may write (a symlink, a device)."""


class LogInUse(Exception):
    """Another process has the log open for writing: a log has exactly one writer."""


class LogWriteError(Exception):
    """The log could not be written; nothing of the failed batch stays in it."""


def bounded_reason(reason: str) -> str:
    """A parse error as one short line: the decoder quotes the value it refused, which
    in a damaged or hostile log can be megabytes (and the message is printed whole)."""
    if len(reason) <= _MAX_REASON:
        return reason
    return f"{reason[:_MAX_REASON]}… ({len(reason)} characters)"


@dataclass(frozen=True, slots=True)
class TornTail:
    """Bytes set aside on open because the last write did not finish."""

    side_file: Path
    size: int


def decode_line(line: bytes) -> Envelope:
    """One log line -> record; ``CodecError`` if not (the codec reads the bytes itself)."""
    return codec.decode_line(line)


def encode_line(envelope: Envelope) -> bytes:
    """One record -> its log line, ``\\n`` included."""
    return codec.encode_line(envelope)


def line_sha256(line: bytes) -> str:
    """The hash the next line's ``prev`` carries: sha256 of ``line`` without its ``\\n``."""
    return hashlib.sha256(line[:-1] if line.endswith(b"\n") else line).hexdigest()


def chain(lines: Sequence[bytes], prev: str) -> tuple[list[bytes | memoryview], str]:
    """Rule 9: ``lines`` (encoded without ``prev``, ``\\n`` included) as pieces to join,
    each line led by ``"prev"``, and the hash of the last one. The pieces are views, so
    no line is copied before the one ``join`` of the batch."""
    pieces: list[bytes | memoryview] = []
    for line in lines:
        rest = memoryview(line)[1:]  # after the "{" every record starts with
        head = _PREV + prev.encode("ascii") + b'",'
        digest = hashlib.sha256(head)
        digest.update(rest[:-1])
        pieces += (head, rest)
        prev = digest.hexdigest()
    return pieces, prev


def iter_lines(path: Path, start: int = 0, end: int | None = None
               ) -> Iterator[tuple[int, bytes]]:
    """Yield ``(end offset, line)`` for each line from ``start`` (up to ``end``), the
    ``\n`` kept (JSON parsers ignore it, and not slicing it off saves a copy of every
    line). A last line without ``\n`` is yielded with a negative end offset so callers
    can report it."""
    with open(path, "rb", buffering=_READ_CHUNK) as f:
        f.seek(start)
        offset = start
        for line in f:
            offset += len(line)
            if end is not None and offset > end:
                return
            yield (offset if line.endswith(b"\n") else -offset), line


def read_records(path: Path, start: int = 0, end: int | None = None,
                 first_seq: int | None = None) -> Iterator[tuple[int, Envelope]]:
    """Yield ``(end offset, record)`` for every whole record from ``start`` to ``end``.

    Raises ``LogCorrupt`` at the first line that does not parse, and, when
    ``first_seq`` is given, at the first record whose ``seq`` is not the one due
    (``first_seq``, then one more each line). A torn tail is not a record and is
    not yielded (``EventLog.open`` sets it aside; ``replay --verify`` reports it
    through ``iter_lines``).
    """
    line_no = 0 if start == 0 else None
    due = first_seq
    for offset, line in iter_lines(path, start, end):
        if offset < 0:
            return
        if line_no is not None:
            line_no += 1
        try:
            record = decode_line(line)
        except (CodecError, orjson.JSONDecodeError) as exc:
            raise _corrupt(path, line_no, offset - len(line), str(exc)) from exc
        if due is not None:
            if record.seq != due:
                raise _corrupt(path, line_no, offset - len(line),
                               f"seq {record.seq} where {due} was due")
            due += 1
        yield offset, record


def line_ending_at(path: Path, offset: int) -> bytes | None:
    """The whole line (``\n`` included) that ends exactly at byte ``offset``, or None
    when no line ends there."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if offset <= 0 or os.fstat(fd).st_size < offset:
            return None
        if os.pread(fd, 1, offset - 1) != b"\n":
            return None
        start = _line_start(fd, offset - 1)
        return os.pread(fd, offset - start, start)
    except OSError:
        return None
    finally:
        os.close(fd)


def line_number_at(path: Path, offset: int) -> int:
    """The 1-based number of the line that starts at ``offset``: a count of every
    newline before it, so only error paths call it."""
    with open(path, "rb", buffering=0) as f:
        return _count_newlines(f.fileno(), offset) + 1


def _corrupt(path: Path, line: int | None, offset: int, reason: str) -> LogCorrupt:
    if line is None:
        line = line_number_at(path, offset)
    return LogCorrupt(path, line, offset, reason)


class EventLog:
    """Append-only, group-committed, fsync'd JSONL log with ``seq`` and ``at``."""

    def __init__(self, path: Path, fd: int, size: int, last: Envelope | None,
                 clock: Clock, torn: TornTail | None, mode: int = _FILE_MODE,
                 head_sha256: str = GENESIS) -> None:
        self.path = path
        self.torn = torn
        self.mode = mode  # as found on open: rule 7 reports a wider one, never changes it
        self._fd = fd
        self._size = size
        self._dirty = False
        self._last_seq = last.seq if last else 0
        self._last_at = last.at if last else _EPOCH
        self._head_sha256 = head_sha256  # rule 9: what the next line's prev is
        self._checkpoint_due: datetime | None = None  # rule 10
        self._clock = clock
        self._queue: list[tuple[Event, asyncio.Future[Envelope]]] = []
        self._wakeup = asyncio.Event()
        self._listeners: list[Listener] = []
        # One thread does every write + fsync, so they never overlap or reorder.
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="obsv-log")
        self._writer: asyncio.Task[None] | None = None
        self._idle: asyncio.Future[None] | None = None  # resolved when no batch is in flight
        self._closing = False
        self.writable = True

    @classmethod
    def open(cls, path: Path, clock: Clock = utc_now) -> EventLog:
        """Open (creating) the log, check its last records, set aside a torn tail."""
        # An OSError here (a read-only or virtual file system, a file on the way) is
        # turned into one line naming the culprit by the CLI, which knows the setting.
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, created = _open_regular(path)
        try:
            _lock(path, fd)
            if created:
                _fsync_dir(path.parent)
            mode = stat.S_IMODE(os.fstat(fd).st_mode)
            whole = _whole_end(fd)
            last, head_sha256 = _check_last_records(path, fd, whole)
            torn = _set_aside_tail(path, fd, whole, last.seq if last else 0)
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd, whole, last, clock, torn, mode, head_sha256)

    @property
    def last_seq(self) -> int:
        """The ``seq`` of the last durable record (0 for an empty log)."""
        return self._last_seq

    @property
    def last_at(self) -> datetime:
        """The ``at`` of the last durable record (the epoch for an empty log)."""
        return self._last_at

    @property
    def head_sha256(self) -> str:
        """The hash of the last durable line (rule 9; 64 zeros for an empty log)."""
        return self._head_sha256

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

    async def append(self, event: Event, *, epoch: int | None = None) -> Envelope:
        """Append one record; returns it once it is fsync'd. ``LogWriteError`` if not.
        ``epoch`` is ignored: a file has one writer (flock), so nobody can take over."""
        return await self._enqueue(event)

    async def append_many(self, events: Sequence[Event], *,
                          epoch: int | None = None) -> list[Envelope]:
        """Append records in order, in one batch; returns them once fsync'd."""
        futures = [self._enqueue(event) for event in events]
        # Awaited in turn rather than through gather (a wrapper and a callback per
        # record: 1.1 µs of the consumer's recording of each decision): they resolve
        # together, so only the first await waits.
        try:
            return [await future for future in futures]
        except BaseException:
            for future in futures:
                if not future.done():
                    future.cancel()  # as gather did: one still queued is not written
                elif not future.cancelled():
                    future.exception()  # retrieved: the batch failed as one
            raise

    # -- the rest of the event-log port (obsv/logstore.py) -------------------------

    @property
    def location(self) -> str:
        """The log's path, for messages."""
        return str(self.path)

    @property
    def position(self) -> int:
        """The byte offset after the last durable record (the port's opaque position)."""
        return self._size

    def read(self, start: int = 0, end: int | None = None, *, first_seq: int | None = None,
             bodies: bool = True) -> Iterator[tuple[int, Envelope]]:
        """``read_records`` of this log (blocking: call it off the loop); the records
        always come whole, whatever ``bodies`` says."""
        return read_records(self.path, start, end, first_seq)

    def whole(self, seqs: Iterable[int]) -> dict[int, Envelope]:
        """The records of ``seqs`` (blocking). ``read`` never leaves bodies out, so
        nothing calls this on a file but for a record stored by hash: a scan is fine."""
        wanted = set(seqs)
        found: dict[int, Envelope] = {}
        for _, envelope in read_records(self.path) if wanted else ():
            if envelope.seq in wanted:
                found[envelope.seq] = envelope
                if len(found) == len(wanted):
                    break
        return found

    def line_at(self, position: int) -> bytes | None:
        """The line that ends at byte ``position`` (blocking: call it off the loop)."""
        return line_ending_at(self.path, position)

    def snapshot_store(self) -> FileSnapshotStore:
        """Snapshots go to ``<log>.snapshot`` beside the log (obsv/snapshots.py)."""
        return FileSnapshotStore(self.path.with_name(self.path.name + ".snapshot"))

    def _enqueue(self, event: Event) -> asyncio.Future[Envelope]:
        # Queued synchronously, so records keep the order of the calls.
        if self._writer is None or self._closing:
            raise LogWriteError("the event log is closed")
        future = asyncio.get_running_loop().create_future()
        self._queue.append((event, future))
        self._wakeup.set()
        return future

    async def close(self) -> None:
        """Finish queued appends, stop the writer, close the file. Calling it again, at
        once or after a cancelled call, waits for the same end: the file is closed once
        (a second ``os.close`` could close whatever file has since reused the number)."""
        self._closing = True
        self._wakeup.set()
        if self._writer is not None:
            # Shielded: a caller that gives up leaves the writer to finish what was
            # queued, and a later close waits for it instead of finding it cancelled.
            await asyncio.shield(self._writer)
        if self._fd >= 0:
            self._io.shutdown(wait=True)
            os.close(self._fd)
            self._fd = -1

    async def _write_loop(self) -> None:
        """Rule 3: commit batch after batch while appends come. The log thread hands
        each result back through ``_committed``, which settles the batch and sends the
        next one in the same callback; this task only waits for the log to go idle."""
        loop = asyncio.get_running_loop()
        while self._queue or not self._closing:
            if not self._queue:
                await self._wakeup.wait()
                self._wakeup.clear()
                continue
            idle = self._idle = loop.create_future()
            if self._send_next(loop):
                await idle

    def _send_next(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Stamp what is queued and hand it to the log thread; False if nothing was."""
        while self._queue:
            batch, self._queue = self._queue, []
            try:
                accepted, lines = self._stamp_and_encode(batch)
            except Exception as exc:  # a bug (the clock): off the queue, so answered here
                loop.call_exception_handler({"message": "the event log could not stamp a "
                                             "batch", "exception": exc})
                error = LogWriteError(f"cannot stamp a batch: {exc!r}")
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            if accepted:
                self._io.submit(self._write_batch, loop, accepted, lines)
                return True
        return False

    def _write_batch(self, loop: asyncio.AbstractEventLoop, accepted: _Accepted,
                     lines: list[bytes]) -> None:
        """Runs on the log thread: write the batch, then hand the result to the loop.
        A callback rather than a future the writer task awaits: the loop runs it at the
        start of its next turn, and the next batch goes out from there, where waking a
        task would take one more turn behind every handler that became ready."""
        outcome: tuple[int, str] | Exception
        try:
            outcome = self._chain_and_write(lines)
        except Exception as exc:  # an OSError, or a bug: the batch fails either way
            outcome = exc
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody to tell
            loop.call_soon_threadsafe(self._committed, loop, accepted, outcome)

    def _committed(self, loop: asyncio.AbstractEventLoop, accepted: _Accepted,
                   outcome: tuple[int, str] | Exception) -> None:
        try:
            self._settle(loop, accepted, outcome)
        finally:  # whatever went wrong settling this batch, the next one goes out
            idle = self._idle
            if not self._send_next(loop) and idle is not None and not idle.done():
                idle.set_result(None)

    def _settle(self, loop: asyncio.AbstractEventLoop, accepted: _Accepted,
                outcome: tuple[int, str] | Exception) -> None:
        """Resolve the batch's appends with their records (rule 3) or its failure
        (rule 4), then hand the records to the listeners."""
        if isinstance(outcome, Exception):
            self.writable = False
            reason = (outcome.strerror or outcome) if isinstance(outcome, OSError) \
                else repr(outcome)
            error = LogWriteError(f"cannot write {self.path}: {reason}")
            for _, future in accepted:
                if not future.done():
                    future.set_exception(error)
            return
        size, head = outcome
        self.writable = True
        self._size += size
        self._head_sha256 = head
        self._last_seq, self._last_at = accepted[-1][0].seq, accepted[-1][0].at
        for envelope, future in accepted:
            if not future.done():
                future.set_result(envelope)
        for listener in self._listeners:
            try:
                listener([envelope for envelope, _ in accepted])
            except Exception as exc:  # a bug in one costs the others (and rule 10) nothing
                loop.call_exception_handler({"message": "an event-log listener raised",
                                             "exception": exc, "listener": listener})
        self._maybe_checkpoint(loop, accepted)

    def _maybe_checkpoint(self, loop: asyncio.AbstractEventLoop,
                          accepted: list[tuple[Envelope, asyncio.Future[Envelope]]]) -> None:
        """Rule 10: queue a ``log.checkpoint`` first in the next batch when one is due."""
        if self._closing or all(isinstance(e.event, LogCheckpoint) for e, _ in accepted):
            return
        at = accepted[-1][0].at
        due, self._checkpoint_due = self._checkpoint_due, at + CHECKPOINT_INTERVAL
        if due is None or at < due:
            if due is not None:
                self._checkpoint_due = due
            return
        future: asyncio.Future[Envelope] = loop.create_future()
        # Nobody awaits it: a failed checkpoint is retried by the next batch that is due.
        future.add_done_callback(_failed_checkpoint)
        self._queue.insert(0, (LogCheckpoint(self._last_seq, self._head_sha256), future))
        self._wakeup.set()

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

    def _chain_and_write(self, lines: list[bytes]) -> tuple[int, str]:
        """Runs on the log thread: chain ``lines`` to the head (rule 9), write them
        durably; their size and the new head. The loop waits for this before it
        commits the next batch, so the head read here is never stale."""
        pieces, head = chain(lines, self._head_sha256)
        data = b"".join(pieces)
        self._write_durably(data)
        return len(data), head

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


def _failed_checkpoint(future: asyncio.Future[Envelope]) -> None:
    if not future.cancelled():
        future.exception()  # retrieved: the failed batch was reported with its appends


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


def _open_regular(path: Path) -> tuple[int, bool]:
    """Rule 7: ``(fd, created)`` of the log, a regular file reached without following a
    symlink. A device or FIFO is refused before it is opened (opening one can block
    or have effects of its own); the check after opening covers a swap in between."""
    flags = os.O_RDWR | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW
    try:
        return os.open(path, flags | os.O_CREAT | os.O_EXCL, _FILE_MODE), True
    except FileExistsError:
        pass  # O_EXCL also refuses a symlink, dangling or not: looked at below
    except OSError as exc:
        raise _unusable(path, exc) from None
    try:
        _refuse_unless_regular(path, os.lstat(path).st_mode)
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            _refuse_unless_regular(path, stat.S_IFLNK)
        raise _unusable(path, exc) from None
    try:
        _refuse_unless_regular(path, os.fstat(fd).st_mode)
    except BaseException:
        os.close(fd)
        raise
    return fd, False


_KINDS = {stat.S_IFDIR: "a directory", stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a device",
          stat.S_IFBLK: "a device", stat.S_IFSOCK: "a socket"}


def _refuse_unless_regular(path: Path, mode: int) -> None:
    if stat.S_ISREG(mode):
        return
    if stat.S_ISLNK(mode):
        try:
            target = f" to {os.readlink(path)}"
        except OSError:
            target = ""
        raise LogPathRefused(
            f"{path} is a symbolic link{target}; obsv opens its event log only as a regular "
            "file, never through a link: set OBSV_EVENT_LOG to the file's real path")
    kind = _KINDS.get(stat.S_IFMT(mode), "not a file")
    raise LogPathRefused(f"{path} is not a regular file ({kind}); set OBSV_EVENT_LOG to the "
                         "path of a regular file (obsv creates it when missing)")


def _unusable(path: Path, exc: OSError) -> LogPathRefused:
    return LogPathRefused(f"cannot open {path} ({exc.strerror or exc}); make it readable and "
                          "writable by this user, or set OBSV_EVENT_LOG to another path")


def _whole_end(fd: int) -> int:
    """The offset just after the last ``\n`` (0 when there is none): rule 8, each byte
    of the tail is read once, whatever it holds."""
    position = os.fstat(fd).st_size
    while position > 0:
        step = min(_TAIL_CHUNK, position)
        position -= step
        newline = os.pread(fd, step, position).rfind(b"\n")
        if newline >= 0:
            return position + newline + 1
    return 0


def _line_start(fd: int, newline: int) -> int:
    """The offset of the line whose ``\n`` is at ``newline``."""
    position = newline
    while position > 0:
        step = min(_TAIL_CHUNK, position)
        position -= step
        previous = os.pread(fd, step, position).rfind(b"\n")
        if previous >= 0:
            return position + previous + 1
    return 0


def _last_lines(fd: int, whole: int) -> list[tuple[int, bytes]]:
    """Up to ``_CHECKED_LINES`` whole lines before ``whole``, oldest first, as
    ``(start offset, line without \n)``; fewer once they pass ``_CHECKED_BYTES``, but
    always the last one whole. Chunks are joined once, so this is linear too."""
    chunks: list[bytes] = []
    position, newlines = whole, 0
    while position > 0 and newlines <= _CHECKED_LINES:
        if newlines >= 2 and whole - position >= _CHECKED_BYTES:
            break
        step = min(_TAIL_CHUNK, position)
        position -= step
        chunk = os.pread(fd, step, position)
        chunks.append(chunk)
        newlines += chunk.count(b"\n")
    data = b"".join(reversed(chunks))
    lines, start = [], position
    for line in data[:-1].split(b"\n") if data else []:
        lines.append((start, line))
        start += len(line) + 1
    if position > 0:
        lines = lines[1:]  # the first piece began before what was read
    return lines[-_CHECKED_LINES:]


def _check_last_records(path: Path, fd: int, whole: int) -> tuple[Envelope | None, str]:
    """Rule 6: the last records parse and their seqs run on by one; the last one, and
    the hash of its line (rule 9)."""
    previous: Envelope | None = None
    head = GENESIS
    for start, line in _last_lines(fd, whole):
        head = line_sha256(line)
        try:
            record = decode_line(line)
        except (CodecError, orjson.JSONDecodeError) as exc:
            raise LogCorrupt(path, _count_newlines(fd, start) + 1, start, str(exc)) from exc
        if previous is not None and record.seq != previous.seq + 1:
            raise LogCorrupt(path, _count_newlines(fd, start) + 1, start,
                             f"seq {record.seq} after seq {previous.seq}: the last records "
                             "must run on by one (an old line copied to the end?)")
        previous = record
    return previous, head


def _count_newlines(fd: int, end: int) -> int:
    count, position = 0, 0
    while position < end:
        chunk = os.pread(fd, min(_COPY_CHUNK, end - position), position)
        if not chunk:
            break
        count += chunk.count(b"\n")
        position += len(chunk)
    return count


def _set_aside_tail(path: Path, fd: int, whole: int, last_seq: int) -> TornTail | None:
    end = os.fstat(fd).st_size
    if end == whole:
        return None
    side = _free_side_path(path, last_seq)
    # Durable before the log forgets it; copied in chunks, never held whole (rule 8).
    write_private(side, _chunks(fd, whole, end), how="create")
    os.ftruncate(fd, whole)
    os.fsync(fd)
    return TornTail(side, end - whole)


def _chunks(fd: int, start: int, end: int) -> Iterator[bytes]:
    position = start
    while position < end:
        chunk = os.pread(fd, min(_COPY_CHUNK, end - position), position)
        if not chunk:
            raise OSError(errno.EIO, "the log shrank while its torn tail was copied")
        position += len(chunk)
        yield chunk


def _free_side_path(path: Path, last_seq: int) -> Path:
    n = 1
    while os.path.lexists(candidate := path.with_name(f"{path.name}.torn-{last_seq}-{n}")):
        n += 1
    return candidate
