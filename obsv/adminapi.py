"""The admin API (docs/reference.md §3 and §9): silences, behind a bearer token.

Rules:
1. No ``OBSV_ADMIN_TOKEN``: every ``/api/*`` path answers 404, as if there were no
   API (fail closed; nothing is parsed). With one, a request without
   ``Authorization: Bearer <token>`` (compared in constant time) answers 401 before
   anything else, unknown paths included, so they reveal nothing.
2. A silence is added or expired by one durable append, like a delivery: 201 / 200
   only once its record is fsync'd; 503 with ``Retry-After`` when the log cannot be
   written. Validation lives in the core (obsv/core/silences.py): a bad body is 400
   naming the field.
3. What ``GET`` lists, and which ids ``DELETE`` knows, is the consumer's fold: the
   same state decisions are taken from. A write waits (briefly, bounded) until the
   fold has its record, so a ``GET`` right after it sees it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import secrets
from collections.abc import Callable, Mapping
from typing import Any

import orjson
import structlog
from aiohttp import web

from obsv.clock import TrustedClock
from obsv.consumer import Consumer
from obsv.core.codec import format_time
from obsv.core.events import Event, SilenceAdded, SilenceExpired
from obsv.core.silences import Silence, SilenceError, new_silence
from obsv.eventlog import LogWriteError
from obsv.ingress import Rejected, read_limited
from obsv.logstore import EventStore

log = structlog.get_logger("obsv.adminapi")

MAX_BODY_BYTES = 64 * 1024  # a silence is a few hundred bytes
MAX_SILENCES = 1000  # silences the fold holds (active and recently ended): rule 13 stays cheap
MAX_BY = 200
_FOLD_WAIT_SECONDS = 2.0
_RETRY_AFTER_SECONDS = "5"


class AdminApi:
    """``/api/*``: authentication, then the silences routes."""

    def __init__(self, token: str | None, eventlog: EventStore, clock: TrustedClock,
                 consumer: Callable[[], Consumer | None]) -> None:
        self._token = token.encode("utf-8") if token else None
        self._log = eventlog
        self._clock = clock
        self._consumer = consumer

    async def handle(self, request: web.Request) -> web.Response:
        """Every ``/api/*`` request (rule 1), dispatched by path and method."""
        if self._token is None:
            return _answer(404, {"error": "not_found"})
        if not self._authorized(request):
            response = _answer(401, {"error": "unauthorized"})
            response.headers["WWW-Authenticate"] = 'Bearer realm="obsv"'
            return response
        path = request.match_info.get("path", "").strip("/")
        parts = path.split("/")
        try:
            if parts == ["silences"]:
                if request.method == "POST":
                    return await self._add(request)
                if request.method == "GET":
                    return self._list()
                return _answer(405, {"error": "method_not_allowed"})
            if len(parts) == 2 and parts[0] == "silences":
                if request.method == "DELETE":
                    return await self._expire(request, parts[1])
                return _answer(405, {"error": "method_not_allowed"})
        except Rejected as rejected:
            response = _answer(rejected.status, dict(rejected.body))
            if rejected.close:
                response.force_close()
            return response
        return _answer(404, {"error": "not_found"})

    def _authorized(self, request: web.Request) -> bool:
        assert self._token is not None
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        # Bytes, not str: compare_digest refuses non-ASCII str, and a header is the
        # caller's to choose. Always compared, so a wrong scheme takes as long.
        same = hmac.compare_digest(given.strip().encode("utf-8", "surrogateescape"),
                                   self._token)
        return same and scheme.lower() == "bearer"

    def _fold(self) -> Consumer:
        consumer = self._consumer()
        if consumer is None or not consumer.caught_up:
            raise Rejected(503, {"error": "starting", "detail": "the event log is still "
                                 "being folded; try again in a few seconds"})
        return consumer

    async def _add(self, request: web.Request) -> web.Response:
        raw = await read_limited(request, MAX_BODY_BYTES)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise Rejected(400, {"error": "invalid_json", "field": "body"}) from None
        now = self._clock()
        try:
            wanted = new_silence(body, now)
        except SilenceError as exc:
            raise Rejected(400, {"error": "invalid_silence", "field": exc.field,
                                 "message": exc.message}) from None
        consumer = self._fold()
        if len(consumer.state.silences) >= MAX_SILENCES:
            raise Rejected(409, {"error": "too_many_silences", "max": MAX_SILENCES,
                                 "detail": "expire silences that are no longer needed"})
        silence_id = secrets.token_hex(8)
        event = SilenceAdded(silence_id, wanted.matchers, now, wanted.ends_at, wanted.comment,
                             wanted.created_by)
        seq = await self._append(event, consumer)
        log.info("silence.added", silence_id=silence_id, matchers=list(wanted.matchers),
                 ends_at=format_time(wanted.ends_at), created_by=wanted.created_by, seq=seq)
        return _answer(201, {"id": silence_id, "seq": seq})

    def _list(self) -> web.Response:
        consumer = self._fold()
        now = self._clock()
        silences = sorted(consumer.state.silences.values(), key=lambda s: s.starts_at)
        return _answer(200, {"silences": [silence_json(s, now) for s in silences]})

    async def _expire(self, request: web.Request, silence_id: str) -> web.Response:
        consumer = self._fold()
        silence = consumer.state.silences.get(silence_id)
        if silence is None:
            raise Rejected(404, {"error": "unknown_silence", "id": silence_id[:100]})
        by = request.query.get("by", "").strip()[:MAX_BY] or "unknown"
        if silence.expired_at is not None:  # already expired: nothing new to record
            return _answer(200, silence_json(silence, self._clock()))
        seq = await self._append(SilenceExpired(silence_id, by), consumer)
        log.info("silence.expired", silence_id=silence_id, by=by, seq=seq)
        expired = consumer.state.silences.get(silence_id, silence)
        return _answer(200, silence_json(expired, self._clock()) | {"seq": seq})

    async def _append(self, event: Event, consumer: Consumer) -> int:
        """Rule 2, then rule 3's bounded wait for the fold."""
        try:
            envelope = await self._log.append(event)
        except LogWriteError as exc:
            log.error("log.write_failed", error=str(exc))
            raise Rejected(503, {"error": "log_unavailable"}) from exc
        with contextlib.suppress(TimeoutError):  # durable already; the list may lag
            await asyncio.wait_for(consumer.applied(envelope.seq), _FOLD_WAIT_SECONDS)
        return envelope.seq


def silence_json(silence: Silence, now: Any) -> dict[str, Any]:
    """A silence as ``GET /api/silences`` lists it (docs/reference.md §9)."""
    expired_at = silence.expired_at
    if expired_at is None and silence.ends_at <= now:
        expired_at = silence.ends_at  # it ran out
    return {
        "id": silence.id, "matchers": [str(m) for m in silence.matchers],
        "starts_at": format_time(silence.starts_at), "ends_at": format_time(silence.ends_at),
        "comment": silence.comment, "created_by": silence.created_by,
        "expired_at": None if expired_at is None else format_time(expired_at),
        "expired_by": silence.expired_by, "active": silence.active_at(now),
    }


def _answer(status: int, body: Mapping[str, Any]) -> web.Response:
    headers = {"Retry-After": _RETRY_AFTER_SECONDS} if status == 503 else None
    return web.json_response(body, status=status, headers=headers,
                             dumps=lambda v: orjson.dumps(v).decode())
