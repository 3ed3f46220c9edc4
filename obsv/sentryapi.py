"""Sentry's API, for ``OBSV_RESOLVE_IN_SENTRY``: resolve one issue, bounded and classified.

Rules (docs/reference.md §7):
1. One call: ``PUT {OBSV_SENTRY_API_URL}/api/0/organizations/{org}/issues/{id}/`` with
   ``{"status": "resolved"}`` and ``Authorization: Bearer <OBSV_SENTRY_API_TOKEN>``
   (Sentry's "Update an Issue"; the token needs the ``event:write`` scope).
2. The request is idempotent: resolving a resolved issue changes nothing, so a repeat
   after a crash or a lost answer is harmless and needs no reconciliation.
3. Every wait and size is bounded: a total timeout per request and a cap on the reply
   read (only the status matters). 5xx, 429, timeouts and connection errors are
   retryable; other 4xx (401 bad token, 403 missing scope, 404 unknown issue) are
   permanent: they will not heal by retrying.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import aiohttp

_ORG_IN_PATH = re.compile(r"/organizations/([A-Za-z0-9_.-]+)/")
_ORG_IN_API_PATH = re.compile(r"/api/0/projects/([A-Za-z0-9_.-]+)/")
_ORG_SUBDOMAIN = re.compile(r"^https?://([a-z0-9][a-z0-9-]*)\.sentry\.io/")
_REPLY_CAP = 64 * 1024


@dataclass(frozen=True, slots=True)
class SentryAPIError(Exception):
    """A failed call, classified: ``retryable`` says whether another round may help."""

    status: int | None
    message: str
    retryable: bool

    def __str__(self) -> str:
        return self.message


def sentry_org(web_url: str | None, api_url: str | None) -> str | None:
    """The organisation slug of an issue, from the alert's ``web_url`` (or its API ``url``)."""
    for url, pattern in ((web_url, _ORG_IN_PATH), (web_url, _ORG_SUBDOMAIN),
                         (api_url, _ORG_IN_API_PATH)):
        if url and (match := pattern.search(url)):
            return match.group(1)
    return None


class SentryAPI:
    """A small client over one aiohttp session."""

    def __init__(self, base_url: str, token: str, timeout: float = 30.0) -> None:
        self._base = base_url.rstrip("/")
        self._token = token
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Open the session."""
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self._timeout))

    async def close(self) -> None:
        """Close the session."""
        if self._session is not None:
            await self._session.close()

    async def resolve(self, org: str, issue_id: str) -> None:
        """Rule 1: resolve the issue, or raise ``SentryAPIError``."""
        assert self._session is not None, "SentryAPI.start() was not called"
        url = f"{self._base}/api/0/organizations/{org}/issues/{issue_id}/"
        headers = {"Authorization": f"Bearer {self._token}"}
        try:
            async with self._session.put(url, json={"status": "resolved"},
                                         headers=headers) as response:
                await response.content.read(_REPLY_CAP)  # rule 3: never the whole reply
                status = response.status
        except TimeoutError:
            raise SentryAPIError(None, "timed out", True) from None
        except aiohttp.ClientError as exc:
            raise SentryAPIError(None, f"connection error: {type(exc).__name__}", True) from None
        if 200 <= status < 300:
            return
        retryable = status >= 500 or status == 429
        raise SentryAPIError(status, f"Sentry answered {status}", retryable)
