"""The Sentry webhook receiver: checks in docs/reference.md §3 order, then one durable append.

1. 413 from ``Content-Length`` before reading, or as soon as a chunked body passes
   the limit: a huge body is never held in memory.
2. 401 unless ``Sentry-Hook-Signature`` is the HMAC of the raw bytes; nothing is
   parsed before this, so an unsigned body never reaches the JSON parser or the log.
3. 400 for bytes that are not UTF-8 JSON; 422 for JSON that is not a usable
   delivery. Both are 4xx on purpose: Sentry retries 5xx, and these will not heal.
4. 202 ``{"status":"accepted","seq":N}`` for ``event_alert``, 200 for the rest, each
   only after the record is fsync'd. 503 + ``Retry-After`` when it cannot be.
5. A redelivery of a body this process already stored whole is recorded with
   ``raw: null`` and ``raw_sha256`` (docs/reference.md §4; ``StoredBodies``).
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import orjson
import structlog
from aiohttp import web

from obsv import logs
from obsv.core.alert import (
    EVENT_ALERT,
    InvalidPayload,
    alert_from_delivery,
    alert_from_json,
    validate_delivery,
)
from obsv.core.events import AlertReceived, Delivery, HookReceived, SentryIssueChanged
from obsv.core.lifecycle import sentry_issue_from_delivery
from obsv.core.policy import EVENT_ID_WINDOW
from obsv.core.signature import is_valid
from obsv.eventlog import LogWriteError
from obsv.httpserver import BodyTimeout
from obsv.logstore import EventStore
from obsv.metrics import Metrics

log = structlog.get_logger("obsv.ingress")

RETRY_AFTER_SECONDS = "5"
_READ_STEP = 64 * 1024

Remembers = Callable[[str, timedelta], bool]


@dataclass(frozen=True, slots=True)
class Rejected(Exception):
    """A delivery answered with an error status and a JSON body."""

    status: int
    body: Mapping[str, Any]
    # The request was not read to its end (a body that does not decode, or is too
    # slow): the connection cannot carry another request, so the answer closes it.
    close: bool = False


class Receiver:
    """Turns one webhook request into one durable record, or a clear rejection."""

    def __init__(self, secret: str, max_body_bytes: int, eventlog: EventStore,
                 metrics: Metrics, remembers: Remembers = lambda _id, _margin: False) -> None:
        self._secret = secret
        self._max_body = max_body_bytes
        self._log = eventlog
        self._metrics = metrics
        self._bodies = StoredBodies(remembers)

    async def handle(self, request: web.Request) -> web.Response:
        """The whole of ``POST /webhooks/sentry``."""
        resource = header(request, "Sentry-Hook-Resource") or ""
        request_id = header(request, "Request-ID")
        # Each line of the delivery names it (request_id, resource). They are passed
        # with the line rather than bound as contextvars: binding and resetting, and
        # merging them into the line, cost as much again as the rest of the line.
        context = {"request_id": request_id, "resource": resource or None}
        close = False
        try:
            status, body = await self._accept(request, resource, context)
        except Rejected as rejected:
            status, body, close = rejected.status, dict(rejected.body), rejected.close
            log.info("delivery.rejected", status=status, error=body.get("error"), **context)
        self._metrics.count_delivery(_resource_label(resource), status)
        headers = {"Retry-After": RETRY_AFTER_SECONDS} if status == 503 else None
        # What web.json_response sends, without its detour through text.
        response = web.Response(body=orjson.dumps(body), status=status, headers=headers,
                                content_type="application/json", charset="utf-8")
        if close:
            response.force_close()
        return response

    async def _accept(self, request: web.Request, resource: str,
                      context: dict[str, str | None]) -> tuple[int, dict[str, Any]]:
        raw = await read_limited(request, self._max_body)
        signature = request.headers.get("Sentry-Hook-Signature")
        if not is_valid(self._secret, raw, signature):
            raise Rejected(401, {"error": "invalid_signature"})
        assert signature is not None
        delivery = Delivery(
            request_id=context["request_id"],
            resource=resource,
            hook_timestamp=header(request, "Sentry-Hook-Timestamp"),
            signature=signature,
        )
        event = to_event(delivery, raw)
        if isinstance(event, AlertReceived):
            event = self._bodies.shrink(event, raw)
        started = time.perf_counter()
        try:
            envelope = await self._log.append(event)
        except LogWriteError as exc:
            log.error("log.write_failed", error=str(exc), **context)
            raise Rejected(503, {"error": "log_unavailable"}) from exc
        self._metrics.log_append_seconds.observe(time.perf_counter() - started)
        seq = envelope.seq
        if isinstance(event, AlertReceived):
            self._bodies.stored(event)
            logs.info(log, "alert.received", seq=seq,
                      sentry_issue_id=event.alert.sentry_issue_id,
                      body_stored=event.raw is not None, **context)
            return 202, {"status": "accepted", "seq": seq}
        if isinstance(event, SentryIssueChanged):
            logs.info(log, "sentry.issue.received", seq=seq,
                      sentry_issue_id=event.sentry_issue_id, action=event.action, **context)
            return 202, {"status": "accepted", "seq": seq}
        logs.info(log, "hook.received", seq=seq, action=event.action, **context)
        return 200, {"status": "recorded", "seq": seq}


class StoredBodies:
    """Which event ids this process stored a whole body for, and with which signature.

    A redelivery (a new ``Request-ID``) normally has the same bytes, and so the same
    signature; the same signature means the same bytes. Storing each copy whole let
    one 1 MB alert sent 200 times fill 200 MB. A delivery whose event id and signature
    match a body
    stored earlier is recorded with ``raw: null`` and ``raw_sha256`` instead, but
    only while the consumer's fold still holds that event id for ``_MARGIN`` more
    (``remembers``): such a record is then surely decided ``duplicate``, so nothing
    ever needs its body. Anything else (another body, an id the fold has not seen
    or is about to forget) is stored whole, which is always safe.

    Bounded: ``capacity`` ids, each kept ``EVENT_ID_WINDOW`` (as long as the policy
    keeps event ids); O(1) per delivery. It starts empty at every start: seeding it
    would mean reading bodies back from the log, and it must never claim a body it
    has not seen written; the cost is one more whole body per event id redelivered
    across a restart.
    """

    _MARGIN = timedelta(hours=1)  # far more than an append takes; Sentry retries in minutes

    def __init__(self, remembers: Remembers, capacity: int = 100_000,
                 window: timedelta = EVENT_ID_WINDOW) -> None:
        self._remembers = remembers
        self._capacity = capacity
        self._window = window.total_seconds()
        # event id -> [signature, when stored (monotonic), sha256 of the body or None]
        self._signatures: OrderedDict[str, list[Any]] = OrderedDict()

    def shrink(self, event: AlertReceived, raw: bytes) -> AlertReceived:
        """``event`` itself, or the same record without its body when that is safe."""
        known = self._signatures.get(event.alert.event_id)
        if known is None or known[0] != event.delivery.signature:
            return event
        if not self._remembers(event.alert.event_id, self._MARGIN):
            return event
        # The same signature is the same bytes, so the hash is computed once per stored
        # body, at its first redelivery, not at every one.
        digest = known[2]
        if digest is None:
            digest = known[2] = hashlib.sha256(raw).hexdigest()
        # Built directly: dataclasses.replace costs as much again as the hash.
        return AlertReceived(event.delivery, event.alert, None, digest)

    def stored(self, event: AlertReceived) -> None:
        """``event`` is durable; if it carried its body, remember that body's signature."""
        if event.raw is None:
            return
        now = time.monotonic()
        self._signatures.pop(event.alert.event_id, None)
        while self._signatures and (len(self._signatures) >= self._capacity or
                                    now - next(iter(self._signatures.values()))[1]
                                    > self._window):
            self._signatures.popitem(last=False)
        self._signatures[event.alert.event_id] = [event.delivery.signature, now, None]


def header(request: web.Request, name: str) -> str | None:
    """A header as text that is safe to record: aiohttp keeps undecodable bytes as
    surrogates, which no UTF-8 log line can hold, so they become U+FFFD."""
    value = request.headers.get(name)
    if value is None or value.isascii():
        return value
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


async def read_limited(request: web.Request, limit: int) -> bytes:
    """The raw body, or 413 as soon as it is known to exceed ``limit``; 400 when a
    ``Content-Encoding`` (deflate, gzip) does not decode, which no retry can heal; 408
    when it has not arrived within the server's request timeout (``obsv.httpserver``)."""
    too_large = Rejected(413, {"error": "body_too_large", "max_bytes": limit})
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    content = request.content
    try:
        # at_eof(): the body is in, so no last read is awaited only to learn that.
        while not content.at_eof() and (chunk := await content.read(_READ_STEP)):
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
    except BodyTimeout:
        # obsv.httpserver ends a body that has not arrived in time; the client is too
        # slow (or hostile), and Sentry itself gives up after one second.
        raise Rejected(408, {"error": "body_timeout"}, close=True) from None
    except web.RequestPayloadError:
        # aiohttp decompresses as it reads; a body that is not what its encoding says
        # (or a broken chunked framing) cannot be the JSON Sentry sent. Its rest cannot
        # be read either: ending the stream here stops aiohttp from draining it after
        # the answer (which would raise the same error again, as a logged traceback).
        request.content.feed_eof()
        raise Rejected(400, {"error": "invalid_json"}, close=True) from None
    return b"".join(chunks)


def parse_json(raw: bytes) -> tuple[str, Any]:
    """``(body as text, parsed JSON)``, or 400 ``invalid_json``."""
    try:
        text = raw.decode("utf-8")
        return text, orjson.loads(raw)
    except (UnicodeDecodeError, orjson.JSONDecodeError):
        raise Rejected(400, {"error": "invalid_json"}) from None


def to_event(delivery: Delivery, raw: bytes
             ) -> AlertReceived | SentryIssueChanged | HookReceived:
    """The record for a verified delivery, 400 ``invalid_json`` or 422
    ``invalid_payload``: an ``event_alert`` is an alert, an ``issue`` delivery (resolved,
    unresolved, ignored …) a ``sentry.issue`` folded like alerts (docs/reference.md §7),
    the rest a hook."""
    try:
        if delivery.resource == EVENT_ALERT:  # the hot path: a typed decode of the bytes
            text = _text(raw)
            try:
                return AlertReceived(delivery, alert_from_json(raw), text)
            except ValueError:  # not JSON, or deeper than msgspec goes: orjson decides
                pass
        text, body = parse_json(raw)
        validate_delivery(delivery.resource or None, body)
        if delivery.resource == EVENT_ALERT:
            return AlertReceived(delivery, alert_from_delivery(body, validated=True), text)
        if delivery.resource == SENTRY_ISSUE:
            return sentry_issue_from_delivery(delivery, body, text)
    except InvalidPayload as problem:
        raise Rejected(problem.status, {
            "error": "invalid_payload", "missing": problem.missing, "invalid": problem.invalid,
        }) from None
    action = body.get("action")
    return HookReceived(delivery, action if isinstance(action, str) else None, text)


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Rejected(400, {"error": "invalid_json"}) from None


SENTRY_ISSUE = "issue"
_KNOWN_RESOURCES = frozenset(
    {EVENT_ALERT, "installation", "metric_alert", "issue", "error", "comment", "seer"}
)


def _resource_label(resource: str) -> str:
    """Bound the metric's label values: a caller cannot mint new series at will."""
    if not resource:
        return "none"
    return resource if resource in _KNOWN_RESOURCES else "other"
