"""The GitHub webhook receiver: ``POST /webhooks/github`` (docs/reference.md §3 and §7).

In this order, like the Sentry receiver:
1. 404 when ``OBSV_GITHUB_WEBHOOK_SECRET`` is not set (the route is off, fail closed).
2. 413 for a body over ``OBSV_MAX_BODY_BYTES``, without reading it all.
3. 401 unless ``X-Hub-Signature-256`` is ``sha256=`` + the HMAC of the raw bytes, checked
   by gidgethub's ``sansio.validate_event`` (constant time). A ``sha1=`` signature is
   refused: GitHub sends the SHA-256 one to every webhook, and SHA-1 is the weaker.
4. ``ping`` 200; any event but ``issues`` 200 ``ignored``: nothing recorded.
5. 400 ``invalid_delivery_id`` for an ``X-GitHub-Delivery`` over 128 characters (an
   empty one counts as none: the delivery is recorded, not deduplicated).
   400 for bytes that are not UTF-8 JSON, 422 for an ``issues`` body without a usable
   ``issue`` (fields named): GitHub does not retry a 4xx, and a bad body will not heal.
6. An issue without obsv's marker is not obsv's: 200 ``ignored``.
7. A delivery id already recorded (GitHub's "redeliver" button, or a retry) is answered
   200 ``duplicate`` and recorded once; the webhook of a change a poll of this process
   recorded first (same issue, state and GitHub ``updated_at``) is answered 200
   ``known``: webhooks and polls never record the same change twice.
8. Otherwise the ``github.issue`` record is appended and fsync'd, then 202.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import gidgethub
import gidgethub.sansio
import orjson
import structlog
from aiohttp import web

from obsv.core.lifecycle import InvalidGitHubPayload, github_issue_from_webhook
from obsv.eventlog import LogWriteError
from obsv.ingress import RETRY_AFTER_SECONDS, Rejected, header, read_limited
from obsv.logstore import EventStore
from obsv.metrics import Metrics
from obsv.poller import PolledChanges

log = structlog.get_logger("obsv.githubhooks")

# Delivery ids recorded by this process, beside those the fold knows (``seen``): the
# fold lags the log by a moment, and a redelivery can come within it.
_RECENT_DELIVERIES = 10_000
# GitHub's delivery ids are GUIDs (36 characters). A longer one is no GitHub delivery;
# kept, it would cost its length in memory (``_recent``, the fold) and in every record.
DELIVERY_ID_MAX = 128


class GitHubReceiver:
    """Turns one GitHub webhook request into at most one durable record."""

    def __init__(self, secret: str, max_body_bytes: int, eventlog: EventStore, metrics: Metrics,
                 seen: Callable[[str], bool], observations: asyncio.Lock | None = None,
                 polled: PolledChanges | None = None) -> None:
        self._secret = secret
        # Shared with the poller (obsv/poller.py rule 3): a poll never compares with the
        # log while a webhook's record is being appended.
        self._observations = observations or asyncio.Lock()
        self._polled = polled
        self._max_body = max_body_bytes
        self._log = eventlog
        self._metrics = metrics
        self._seen = seen
        self._recent: OrderedDict[str, None] = OrderedDict()

    async def handle(self, request: web.Request) -> web.Response:
        """The whole of ``POST /webhooks/github`` (rules 2-8)."""
        event = header(request, "X-GitHub-Event") or ""
        # An empty header is no id: treated as one, it would make the next delivery
        # without one a "duplicate" of a different change.
        delivery_id = (header(request, "X-GitHub-Delivery") or "").strip() or None
        with structlog.contextvars.bound_contextvars(github_delivery=delivery_id,
                                                     github_event=event or None):
            try:
                status, body = await self._accept(request, event, delivery_id)
            except Rejected as rejected:
                status, body = rejected.status, dict(rejected.body)
                log.info("github_delivery.rejected", status=status, error=body.get("error"))
        self._metrics.github_deliveries.labels(_event_label(event), str(status)).inc()
        headers = {"Retry-After": RETRY_AFTER_SECONDS} if status == 503 else None
        return web.json_response(body, status=status, headers=headers,
                                 dumps=lambda v: orjson.dumps(v).decode())

    async def _accept(self, request: web.Request, event: str,
                      delivery_id: str | None) -> tuple[int, dict[str, Any]]:
        raw = await read_limited(request, self._max_body)
        self._verify(raw, request.headers.get("X-Hub-Signature-256"))
        if delivery_id is not None and len(delivery_id) > DELIVERY_ID_MAX:
            raise Rejected(400, {"error": "invalid_delivery_id"})
        if event == "ping":
            return 200, {"status": "pong"}
        if event != "issues":
            return 200, {"status": "ignored"}
        try:
            record = github_issue_from_webhook(raw, delivery_id=delivery_id)
        except InvalidGitHubPayload as problem:
            raise Rejected(problem.status, problem.answer()) from None
        if record is None:
            return 200, {"status": "ignored"}
        async with self._observations:
            if delivery_id is not None and (delivery_id in self._recent
                                            or self._seen(delivery_id)):
                return 200, {"status": "duplicate"}
            if self._polled is not None and self._polled.recorded(record):
                # A poll recorded this very change first: once is enough.
                return 200, {"status": "known"}
            if delivery_id is not None:  # before the append: a concurrent twin sees it
                self._remember(delivery_id)
            try:
                envelope = await self._log.append(record)
            except LogWriteError as exc:
                if delivery_id is not None:  # not recorded: GitHub's retry must get through
                    self._recent.pop(delivery_id, None)
                log.error("log.write_failed", error=str(exc))
                raise Rejected(503, {"error": "log_unavailable"}) from exc
        log.info("github.issue.received", seq=envelope.seq, repo=record.repo,
                 number=record.number, action=record.action)
        return 202, {"status": "accepted", "seq": envelope.seq}

    def _verify(self, raw: bytes, signature: str | None) -> None:
        if not signature or not signature.startswith("sha256="):
            raise Rejected(401, {"error": "invalid_signature"})
        try:
            gidgethub.sansio.validate_event(raw, signature=signature, secret=self._secret)
        except gidgethub.ValidationFailure:
            raise Rejected(401, {"error": "invalid_signature"}) from None

    def _remember(self, delivery_id: str) -> None:
        self._recent[delivery_id] = None
        while len(self._recent) > _RECENT_DELIVERIES:
            self._recent.popitem(last=False)


_KNOWN_EVENTS = frozenset({"issues", "ping", "issue_comment", "pull_request", "push",
                           "installation", "label"})


def _event_label(event: str) -> str:
    """Bound the metric's label values: a caller cannot mint new series at will."""
    if not event:
        return "none"
    return event if event in _KNOWN_EVENTS else "other"
