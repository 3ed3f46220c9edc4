"""The one place that configures structlog.

JSON lines when stderr is not a terminal (what a log shipper wants), colours on a
terminal. Each line of a delivery names it (request id, resource, seq), passed with
the line; the lines written once per delivery go through ``info``, which renders
them with the same processors but without structlog's bound logger. Values of keys
that look like credentials are replaced before rendering, as a second line of
defence: no code path passes a secret to a logger on purpose.

Libraries log through the standard ``logging`` module; ``configure`` sends those
records through the same pipeline, so stderr holds JSON lines only. aiohttp logs a
full traceback for every request it rejects itself before obsv sees it (a header
over 8 KiB, too many headers, ``Content-Encoding: br``): one client could fill the
disk with them. Those become ``http.request_rejected`` at info level, without the
traceback, at most once a minute with how many were not logged.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import MutableMapping
from typing import Any, BinaryIO, TextIO

import orjson
import structlog

# The running loop of this thread, or None: the C function behind
# asyncio.get_running_loop, without the exception when there is none.
_running_loop = asyncio._get_running_loop
REJECTED_LOG_EVERY_SECONDS = 60.0
_SENSITIVE = ("secret", "token", "password", "authorization", "private_key", "signature")
_checked: dict[str, bool] = {}


def _is_sensitive(key: str) -> bool:
    # Log keys are a small fixed set, so the substring scan is done once per key.
    verdict = _checked.get(key)
    if verdict is None:
        verdict = _checked[key] = any(word in key.lower() for word in _SENSITIVE)
    return verdict


# Key sets (in order) already seen to name no credential: a line's keys come from the
# code that logs it, so there are a few dozen; bounded all the same.
_clean_keys: set[tuple[str, ...]] = set()
_CLEAN_KEYS_KEPT = 4096


def redact(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> Any:
    """Replace the value of any key that names a credential."""
    keys = tuple(event_dict)
    if keys in _clean_keys:  # one lookup instead of one per key
        return event_dict
    clean = True
    for key in keys:
        if _is_sensitive(key):
            event_dict[key] = "<redacted>"
            clean = False
    if clean and len(_clean_keys) < _CLEAN_KEYS_KEPT:
        _clean_keys.add(keys)
    return event_dict


class _UtcTimestamp:
    """``timestamp`` as structlog's ``TimeStamper(fmt="iso", utc=True)`` writes it
    (``2026-11-27T08:30:01.123456Z``) at half its cost: the date and time of day are
    formatted once per second, the microseconds per line. Every line of every
    delivery carries one."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, _logger: Any, _method: str,
                 event_dict: MutableMapping[str, Any]) -> Any:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        # %d truncates as int() does, and costs less than an f-string's format spec.
        event_dict["timestamp"] = "%s.%06dZ" % (self._prefix, (now - second) * 1e6)  # noqa: UP031
        return event_dict


def _format_exc_info(logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> Any:
    """structlog's ``format_exc_info``, called only for a line that has ``exc_info`` (it
    does nothing to the others, at the cost of a call through its class)."""
    if "exc_info" in event_dict:
        return structlog.processors.format_exc_info(logger, method, event_dict)
    return event_dict


def _json_bytes(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> bytes:
    """The line as JSON bytes (what structlog's ``JSONRenderer`` with orjson gives, less
    its indirection)."""
    return orjson.dumps(event_dict, default=str)


def _json_text(logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> str:
    return _json_bytes(logger, method, event_dict).decode()


_LEVEL_METHODS = ("msg", "log", "debug", "info", "warn", "warning", "err", "error",
                  "exception", "critical", "fatal", "failure")


def _never_raising(logger_class: type[Any]) -> type[Any]:
    """A logger whose writes never raise: a closed or full stderr (a log shipper gone,
    a pipe closed) must not turn an accepted delivery into a 500."""

    def msg(self: Any, message: Any) -> None:
        try:  # noqa: SIM105 (contextlib.suppress is an object and two calls per line)
            logger_class.msg(self, message)
        except (OSError, ValueError):  # ValueError: a closed file
            pass

    methods: dict[str, Any] = dict.fromkeys(_LEVEL_METHODS, msg)
    return type(f"Safe{logger_class.__name__}", (logger_class,), methods)


_SafePrintLogger = _never_raising(structlog.PrintLogger)
_HELD_AT_MOST = 1024  # lines held in one turn before they are written anyway


class _LinesPerTurn:
    """JSON lines to one binary stream, the lines of one event-loop turn in one write.

    Every delivery logs a line, and a write(2) of its own cost a third of the line
    (0.8 µs to /dev/null, more to a pipe). The lines made during one turn of the loop
    (a batch's answers, the consumer's decisions) are held and written together, in
    the order they were made, by a callback that runs at the start of the next turn.
    Rules:

    1. Every line takes the lock (a reentrant one: the collector may run a finalizer
       that logs, an unclosed aiohttp session, in the middle of a write). Without it,
       a thread appending to the held list could append to one already written out.
    2. A line made while a loop runs joins the held lines, whichever thread made it,
       so the log keeps the order the lines were made in (a worker's
       ``consumer.restored`` after the ``serving`` the loop made first; a second
       loop's lines after its earlier ones). With no loop running it is written at
       once (a command). At 1024 held lines, the thread that adds the last writes them.
    3. Lines held by a loop that stopped or closed before its next turn are written by
       the next line of any thread, before it, or at exit (``atexit``): never left to
       a loop that will not run again, nor held for a later loop of the same thread.
    4. A forked child does not write what its parent holds (the parent does).

    A SIGKILL can lose the lines of the turn it cuts short, never a record: the event
    log is the record, these are its narration.
    """

    def __init__(self, binary: BinaryIO) -> None:
        self._binary = binary
        self._held: list[bytes] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop that writes _held
        self._lock = threading.RLock()

    def msg(self, message: bytes) -> None:
        running = _running_loop()
        with self._lock:
            held, loop = self._held, self._loop
            if held is not None and loop is not None and (
                    running is loop or loop.is_running()):  # rule 2
                held.append(message)
                if len(held) >= _HELD_AT_MOST:
                    self._held = self._loop = None
                    self._write(b"\n".join(held) + b"\n")
                return
            # Rule 3: whatever is still held belongs to a loop that no longer runs.
            out, self._held, self._loop = held or [], None, None
            if running is None:
                out.append(message)
            else:
                self._held, self._loop = [message], running
                running.call_soon(self._write_turn, self._held)
            if out:
                self._write(b"\n".join(out) + b"\n")

    def _write_turn(self, held: list[bytes]) -> None:
        """Write ``held`` if it is still the list being held (not already written)."""
        with self._lock:
            if self._held is held:
                self._held = self._loop = None
                self._write(b"\n".join(held) + b"\n")

    def flush(self) -> None:
        """Write the held lines now."""
        with self._lock:
            held, self._held, self._loop = self._held, None, None
            if held:
                self._write(b"\n".join(held) + b"\n")

    def forked(self) -> None:
        """Rule 4: in a child, drop the parent's held lines and its lock's state."""
        self._lock = threading.RLock()
        self._held = self._loop = None

    def _write(self, data: bytes) -> None:
        # Never raises: a closed or full stderr (a log shipper gone, a pipe closed)
        # must not turn an accepted delivery into a 500. Called under the lock, so
        # the parts of two threads' writes never interleave (python -u).
        try:
            view = memoryview(data)
            while view:  # an unbuffered stderr (python -u) may take part of it
                written = self._binary.write(view)
                if not written:  # a full non-blocking stderr: the loop never waits on
                    return  # its log's reader (the lines are dropped, as before)
                view = view[written:]
            self._binary.flush()
        except (OSError, ValueError):  # ValueError: a closed file
            pass


# structlog calls the wrapped logger's method of the line's level.
for _method in _LEVEL_METHODS:
    setattr(_LinesPerTurn, _method, _LinesPerTurn.msg)

# Every one ``configure`` made: a logger structlog cached (``cache_logger_on_first_use``)
# keeps the one of the ``configure`` before its first line, and what that one holds
# at exit is written too.
_every_lines: weakref.WeakSet[_LinesPerTurn] = weakref.WeakSet()


@atexit.register
def flush() -> None:
    """Write the lines held for the current turn (``configure``'s JSON lines)."""
    for lines in list(_every_lines):
        lines.flush()


def _forked() -> None:
    for lines in list(_every_lines):
        lines.forked()


os.register_at_fork(after_in_child=_forked)


def configure(log_format: str, stream: TextIO | None = None, level: int = logging.INFO,
              *, cache: bool = True) -> None:
    """Configure structlog once for the process (called by the CLI only; tests pass
    ``cache=False`` so that ``structlog.testing.capture_logs`` sees every line)."""
    global _hot, _debug
    flush()  # what the previous configuration held goes out first, where it was meant to
    stream = stream or sys.stderr
    binary = getattr(stream, "buffer", None)
    renderer: Any
    factory: Any
    if log_format == "console":
        renderer = structlog.dev.ConsoleRenderer()
        factory = lambda *_: _SafePrintLogger(stream)  # noqa: E731
    elif binary is not None:
        # structlog's fast path: orjson bytes straight to the binary stream.
        renderer = _json_bytes
        lines = _LinesPerTurn(binary)
        _every_lines.add(lines)
        factory = lambda *_: lines  # noqa: E731
    else:
        renderer = _json_text
        factory = lambda *_: _SafePrintLogger(stream)  # noqa: E731
    processors = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        _UtcTimestamp(),
        redact,
        _format_exc_info,
        renderer,
    ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=factory,
        cache_logger_on_first_use=cache,
    )
    _hot = _HotPath(processors, factory(), level) if log_format != "console" else None
    _debug = level <= logging.DEBUG
    _route_stdlib_logging()


class _HotPath:
    """The processors ``configure`` installed, run without structlog's machinery (a lazy
    proxy, a bound logger, its method, a context copy: 60% of a line's cost) for the
    lines written once per delivery (``info``). Used only while those processors are
    still structlog's (``structlog.testing.capture_logs`` swaps them), so the line is
    the one structlog would write, byte for byte."""

    def __init__(self, processors: list[Any], logger: Any, level: int) -> None:
        self._processors = processors
        self._logger = logger
        self.info_enabled = level <= logging.INFO

    def installed(self) -> bool:
        """Whether structlog still runs these processors."""
        return structlog.get_config()["processors"] is self._processors

    def emit(self, method: str, event: str, fields: dict[str, Any]) -> None:
        """What structlog's bound logger does with ``log.<method>(event, **fields)``."""
        fields["event"] = event
        line: Any = fields
        for processor in self._processors:
            line = processor(self._logger, method, line)
        self._logger.msg(line)


_hot: _HotPath | None = None
_debug = True  # structlog's own default: every level is written until ``configure``


def debug_enabled() -> bool:
    """Whether ``configure`` lets debug lines through: a caller that logs one per alert
    skips building it (0.7 µs through structlog's proxy to be dropped) when not."""
    return _debug


def info(logger: Any, event: str, **fields: Any) -> None:
    """``logger.info(event, **fields)``, at about half its cost when ``configure`` chose
    JSON lines: for the lines written once per delivery. Same line, same redaction."""
    hot = _hot
    if hot is not None and hot.installed():
        if hot.info_enabled:
            hot.emit("info", event, fields)
        return
    logger.info(event, **fields)


class _StdlibToStructlog(logging.Handler):
    """Sends a standard ``logging`` record through structlog (see the module's docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self._next_rejected = float("-inf")
        self._held_rejected = 0

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):  # logging must never fail its caller
            exc = record.exc_info[1] if record.exc_info else None
            logger = structlog.get_logger(record.name)
            if record.name == "aiohttp.server" and _client_error_status(exc) is not None:
                self._rejected(logger, exc)
                return
            fields: dict[str, Any] = {"logger": record.name}
            if record.exc_info:
                fields["exc_info"] = record.exc_info
            logger.log(record.levelno, record.getMessage(), **fields)

    def _rejected(self, logger: Any, exc: BaseException | None) -> None:
        now = time.monotonic()
        if now < self._next_rejected:
            self._held_rejected += 1
            return
        held, self._held_rejected = self._held_rejected, 0
        self._next_rejected = now + REJECTED_LOG_EVERY_SECONDS
        message = str(getattr(exc, "message", "") or type(exc).__name__)
        logger.info("http.request_rejected", status=_client_error_status(exc),
                    error=message.strip().splitlines()[0][:200] if message.strip() else "",
                    not_logged_since=held)


def _client_error_status(exc: BaseException | None) -> int | None:
    """The 4xx of an exception aiohttp raised for a malformed request, else None."""
    code = getattr(exc, "code", None)
    return code if isinstance(code, int) and 400 <= code < 500 else None


def _route_stdlib_logging() -> None:
    """One bridge on the root logger, replacing the one a previous ``configure`` set."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _StdlibToStructlog):
            root.removeHandler(handler)
    root.addHandler(_StdlibToStructlog())
