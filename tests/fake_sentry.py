"""A fake Sentry API over real HTTP on 127.0.0.1: the one endpoint obsv calls.

``PUT /api/0/organizations/{org}/issues/{id}/`` with a bearer token, as Sentry's
"Update an Issue" documents it. It keeps each issue's status and a journal of every
request, and plays scripted faults (a status, optionally after applying the change,
optionally late).
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .fakes import Loopback


@dataclass
class SentryFault:
    """What the next update gets instead of the real answer."""

    status: int = 502
    apply_anyway: bool = False
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # answer this late (a client with a shorter timeout gives up)


@dataclass
class SentryRequest:
    """One request the fake received."""

    method: str
    org: str
    issue_id: str
    authorization: str
    body: Any
    path: str = ""  # as received, still percent-encoded


class FakeSentry(Loopback):
    """The fake; ``base_url`` is valid between ``start()`` and ``close()``."""

    def __init__(self, token: str = "sentry-api-token") -> None:
        self.token = token
        self.status: dict[str, str] = {}
        self.journal: list[SentryRequest] = []
        self.faults: deque[SentryFault] = deque()

    async def start(self) -> str:
        app = web.Application()
        app.router.add_put("/api/0/organizations/{org}/issues/{issue_id}/", self._update)
        app.router.add_route("*", "/{anything:.*}", self._elsewhere)
        return await self._serve(app)

    def updates(self) -> list[SentryRequest]:
        """Every update request received, in order."""
        return [r for r in self.journal if r.method == "PUT"]

    async def _elsewhere(self, request: web.Request) -> web.Response:
        """Any other request is journaled too (a test can see nothing went astray): 404."""
        self.journal.append(SentryRequest(request.method, "", "", request.headers.get(
            "Authorization", ""), None, request.raw_path))
        return web.json_response({"detail": "The requested resource does not exist"},
                                 status=404)

    async def _update(self, request: web.Request) -> web.Response:
        raw = await request.read()
        body = json.loads(raw) if raw else None
        org, issue_id = request.match_info["org"], request.match_info["issue_id"]
        authorization = request.headers.get("Authorization", "")
        self.journal.append(SentryRequest(request.method, org, issue_id, authorization, body,
                                          request.raw_path))
        if authorization != f"Bearer {self.token}":
            return web.json_response({"detail": "Invalid token"}, status=401)
        fault = self.faults.popleft() if self.faults else None
        if fault is not None and fault.delay:
            await asyncio.sleep(fault.delay)
        if fault is not None and not fault.apply_anyway:
            return web.json_response({"detail": "fault"}, status=fault.status,
                                     headers=fault.headers)
        if not isinstance(body, dict) or body.get("status") not in (
                "resolved", "unresolved", "ignored", "resolvedInNextRelease"):
            return web.json_response({"status": ["Invalid status"]}, status=400)
        self.status[issue_id] = str(body["status"])
        if fault is not None:
            return web.json_response({"detail": "fault"}, status=fault.status,
                                     headers=fault.headers)
        return web.json_response({"id": issue_id, "status": self.status[issue_id]})
