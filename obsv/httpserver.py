"""Serving the app on TCP with the limits aiohttp leaves to its caller.

aiohttp has no deadline for a request head nor for a body, and asyncio's accept loop,
once descriptors run out, logs a traceback for every failed ``accept()`` (up to the
backlog's length per loop turn) and retries a second later. A thousand clients that
send half a request therefore used to take every descriptor and keep them, after
which nothing was answered and stderr filled with tracebacks. This module listens
and accepts itself, by these rules:

1. At most ``max_connections`` connections are open at once: RLIMIT_NOFILE less the
   descriptors open at start, less headroom for what the service itself opens (the
   log, snapshots, outbox files, connections to GitHub). At the cap obsv stops
   accepting; new connections wait in the kernel's listen backlog until one closes.
2. A connection must complete a request head within ``timeout`` seconds of opening,
   or it is closed; between requests aiohttp's keep-alive timeout (set to the same
   ``timeout`` by the caller) does the same.
3. A request body must have arrived ``timeout`` seconds after its head: the body's
   stream then fails with ``BodyTimeout``, which the receiver answers with 408.
4. ``accept()`` failing for want of resources (EMFILE, ENFILE, ENOBUFS, ENOMEM)
   pauses accepting for a moment. That, and cut connections, are logged at most once
   a minute, with how many were not logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import resource
import socket
import time
from collections.abc import Callable
from typing import Any

import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

log = structlog.get_logger("obsv.httpserver")

MAX_CONNECTIONS = 4096  # ceiling when the descriptor limit is very high: memory is finite
HEADROOM = 64  # descriptors kept for the service's own files and outgoing connections
LOG_EVERY_SECONDS = 60.0
ACCEPT_RETRY_SECONDS = 0.5
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
# The client went away between connecting and our accept(): nothing to do.
_CLIENT_GONE = frozenset({errno.ECONNABORTED, errno.EPROTO, errno.EPERM})

RequestFactory = Callable[..., web.BaseRequest]


class BodyTimeout(TimeoutError):
    """The request body did not arrive within the deadline after its head. A
    ``TimeoutError``, so aiohttp's draining of an unread body stops on it quietly."""


def connection_cap(soft_limit: int, in_use: int) -> int:
    """Rule 1: how many client connections fit under ``soft_limit`` descriptors."""
    spare = soft_limit - in_use
    return max(1, min(MAX_CONNECTIONS, spare - min(HEADROOM, spare // 2)))


def open_descriptors() -> int:
    """How many descriptors this process has open (Linux, BSD, macOS)."""
    for listing in ("/proc/self/fd", "/dev/fd"):
        with contextlib.suppress(OSError):
            return len(os.listdir(listing))
    return HEADROOM  # unknown: assume as many again as the headroom


def default_cap() -> int:
    """Rule 1 for this process, now."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return connection_cap(soft, open_descriptors())


class Throttle:
    """Lets one occurrence through per ``interval`` seconds and counts the rest."""

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval = interval
        self._clock = clock
        self._next = float("-inf")
        self._held = 0

    def due(self) -> int | None:
        """``None`` to stay quiet; else how many occurrences were held back before."""
        now = self._clock()
        if now < self._next:
            self._held += 1
            return None
        held, self._held, self._next = self._held, 0, now + self._interval
        return held


class GuardedSite(web.BaseSite):
    """A TCP site (like ``web.TCPSite``) that applies the rules above."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, *, timeout: float,
                 max_connections: int | None = None, backlog: int = 128) -> None:
        super().__init__(runner, backlog=backlog)
        self._host, self._port = host, port
        self.timeout = timeout
        self.max_connections = max_connections
        self._slots: asyncio.Semaphore | None = None
        self._sockets: list[socket.socket] = []
        self._accepting: list[asyncio.Task[None]] = []
        self._connections: dict[RequestHandler, _Connection] = {}
        self._out_of_resources = Throttle(LOG_EVERY_SECONDS)
        self._timed_out = Throttle(LOG_EVERY_SECONDS)

    @property
    def name(self) -> str:
        """The URL this site serves."""
        return f"http://{self._host}:{self._port}"

    @property
    def open_connections(self) -> int:
        """Client connections open now."""
        return len(self._connections)

    async def start(self) -> None:
        """Listen, and accept in the background until ``stop``."""
        await super().start()
        server = self._runner.server
        assert server is not None
        if self.max_connections is None:
            self.max_connections = default_cap()
        self._slots = asyncio.Semaphore(self.max_connections)
        server.request_factory = self._on_head(server.request_factory)
        self._sockets = _listen(self._host, self._port, self._backlog)
        loop = asyncio.get_running_loop()
        self._accepting = [loop.create_task(self._accept_loop(sock, server))
                           for sock in self._sockets]

    async def stop(self) -> None:
        """Stop accepting and close the listening sockets (the runner closes the
        connections)."""
        for task in self._accepting:
            task.cancel()
        for task in self._accepting:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for sock in self._sockets:
            sock.close()
        await super().stop()

    async def _accept_loop(self, sock: socket.socket, server: web.Server) -> None:
        loop = asyncio.get_running_loop()
        assert self._slots is not None
        while True:
            await self._slots.acquire()  # rule 1: at the cap, wait for a connection to end
            try:
                conn, _address = await loop.sock_accept(sock)
            except OSError as exc:
                self._slots.release()
                if exc.errno in _CLIENT_GONE:
                    continue
                self._accept_failed(exc)
                await asyncio.sleep(ACCEPT_RETRY_SECONDS)
                continue
            connection = _Connection(self, server())
            try:
                await loop.connect_accepted_socket(_returning(connection), conn)
            except Exception as exc:  # this loop must outlive any one client
                conn.close()
                connection.release()
                self._accept_failed(exc)

    def _accept_failed(self, exc: Exception) -> None:
        held = self._out_of_resources.due()
        if held is None:
            return
        code = getattr(exc, "errno", None)
        event = "accept.out_of_resources" if code in _OUT_OF_RESOURCES else "accept.failed"
        log.error(event, error=getattr(exc, "strerror", None) or repr(exc), errno=code,
                  open_connections=self.open_connections,
                  max_connections=self.max_connections, not_logged_since=held)

    def _on_head(self, make_request: RequestFactory) -> RequestFactory:
        """aiohttp builds the request once its head is parsed: that ends rule 2's wait
        and starts rule 3's."""
        def request_with_deadline(message: Any, payload: Any, protocol: RequestHandler,
                                  *args: Any) -> web.BaseRequest:
            connection = self._connections.get(protocol)
            if connection is not None:
                connection.head_arrived(payload)
            return make_request(message, payload, protocol, *args)
        return request_with_deadline

    def _timed_out_once(self, phase: str) -> None:
        held = self._timed_out.due()
        if held is not None:
            log.info("connection.timed_out", phase=phase, timeout_seconds=self.timeout,
                     not_logged_since=held)


class _Connection(asyncio.Protocol):
    """One client connection: aiohttp's handler, its slot, and its deadlines.

    A connection has at most one timer. A keep-alive connection carries request after
    request, and a timer set and cancelled for each body cost 1 µs of every delivery;
    so a request head only notes when its body is due, and the timer, when it fires,
    looks at what is pending then: nothing (the body came), a body whose time has not
    come (a later request's: the timer is set again for it), or a body that is late.
    Each deadline is kept to the same instant as with a timer per request.
    """

    def __init__(self, site: GuardedSite, handler: RequestHandler) -> None:
        self._site = site
        self._handler = handler
        self._timer: asyncio.TimerHandle | None = None
        self._awaiting_head = True  # rule 2: until the first head
        self._body: Any = None  # rule 3: the payload of the request whose body is due
        self._body_due = 0.0  # ... by this loop time
        self._holds_slot = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._site._connections[self._handler] = self
        self._timer = asyncio.get_running_loop().call_later(self._site.timeout, self._due)
        self._handler.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self._handler.data_received(data)

    def eof_received(self) -> None:  # None: the transport closes, as aiohttp's handler asks
        self._handler.eof_received()

    def pause_writing(self) -> None:
        self._handler.pause_writing()

    def resume_writing(self) -> None:
        self._handler.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._body = None
        self._site._connections.pop(self._handler, None)
        self.release()
        self._handler.connection_lost(exc)

    def release(self) -> None:
        """Give the connection's slot back, once."""
        if self._holds_slot and self._site._slots is not None:
            self._holds_slot = False
            self._site._slots.release()

    def head_arrived(self, payload: Any) -> None:
        self._awaiting_head = False
        if payload.is_eof():
            self._body = None
            return
        loop = asyncio.get_running_loop()
        self._body, self._body_due = payload, loop.time() + self._site.timeout
        if self._timer is None:
            self._timer = loop.call_at(self._body_due, self._due)

    def _due(self) -> None:
        """A deadline has come: find out which, if any, is overdue."""
        self._timer = None
        if self._awaiting_head:
            self._site._timed_out_once("head")
            self._handler.force_close()
            return
        payload = self._body
        if payload is None or payload.is_eof():
            self._body = None
            return
        loop = asyncio.get_running_loop()
        if loop.time() < self._body_due:  # a later request's body, not yet due
            self._timer = loop.call_at(self._body_due, self._due)
            return
        self._body = None
        self._site._timed_out_once("body")
        payload.set_exception(BodyTimeout())


def _returning(protocol: asyncio.Protocol) -> Callable[[], asyncio.Protocol]:
    return lambda: protocol


def _listen(host: str, port: int, backlog: int) -> list[socket.socket]:
    """Listening sockets for every address ``host`` names, as ``loop.create_server``
    would bind them (address reuse on, IPv6 sockets IPv6 only)."""
    sockets: list[socket.socket] = []
    seen: set[Any] = set()
    try:
        for family, kind, proto, _name, address in socket.getaddrinfo(
                host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE):
            if address in seen:
                continue
            seen.add(address)
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(backlog)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets
