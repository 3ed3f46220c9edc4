"""Sentry's API, for ``OBSV_RESOLVE_IN_SENTRY``: resolve one issue, bounded, retried in
rounds, never duplicated.

Rules (docs/reference.md §7):
1. One call: ``PUT {OBSV_SENTRY_API_URL}/api/0/organizations/{org}/issues/{id}/`` with
   ``{"status": "resolved"}`` and ``Authorization: Bearer <OBSV_SENTRY_API_TOKEN>``
   (Sentry's "Update an Issue"; the token needs the ``event:write`` scope).
2. Never duplicated, by nature: the request is idempotent (it sets a status, it
   does not toggle one), so a repeat after a crash or a lost answer is harmless and
   needs no reconciliation; ``maybe_sent`` is not consulted.
3. Every wait and size is bounded: a total timeout per request and a cap on the reply
   read (only the status matters). 5xx, 429 (honouring ``Retry-After``), timeouts
   and connection errors are retryable; other 4xx (401 bad token, 403 missing scope,
   404 unknown issue) are permanent: they will not heal by retrying.
4. Retried like GitHub writes (obsv/retry.py): rounds of 3 attempts, 2 s then 8 s
   apart; then ``issue.failed`` with ``retryable: true`` and the next round later.
5. The organization is read from the linked alert's ``web_url``
   (``/organizations/<org>/``, ``<org>.sentry.io``), else its API ``url``
   (``/api/0/projects/<org>/…``). An issue whose organization cannot be found, or a
   missing token, is a permanent failure that names the fix.
"""

from __future__ import annotations

import re
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import aiohttp
import structlog

from obsv.core.alert import sentry_org as org_in_web_url
from obsv.core.events import IssueFailed, SentryResolved
from obsv.retry import Failure, RetryPolicy, Rounds, wait_hint
from obsv.sink import ResolveJob

log = structlog.get_logger("obsv.sentry")

_ORG_IN_API_PATH = re.compile(r"/api/0/projects/([A-Za-z0-9_.-]+)/")
_REPLY_CAP = 64 * 1024
DEFAULT_RETRY = RetryPolicy()


@dataclass(frozen=True, slots=True)
class SentryAPIError(Exception):
    """A failed call, classified by rule 3: ``retryable`` says whether another attempt
    may help, ``wait`` how long Sentry asked us to wait (seconds, capped)."""

    status: int | None
    message: str
    retryable: bool
    wait: float | None = None

    def __str__(self) -> str:
        return self.message


def sentry_org(web_url: str | None, api_url: str | None) -> str | None:
    """Rule 5: the organization slug of an issue, from the alert's ``web_url``, else its
    API ``url``."""
    org = org_in_web_url(web_url)
    if org is None and api_url and (match := _ORG_IN_API_PATH.search(api_url)):
        org = match.group(1)
    return org


def classify(exc: BaseException, now: float) -> Failure:
    """Rule 3 for one exception; a repeat is always safe (rule 2), so ``maybe_sent``
    is true and changes nothing."""
    if isinstance(exc, SentryAPIError):
        return Failure(exc.status, exc.message, exc.retryable, True, exc.wait)
    return Failure(None, f"unexpected error: {exc!r}", True, True)


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
        # Both come from payloads: quoted whole, neither can reach another path.
        url = (f"{self._base}/api/0/organizations/{urllib.parse.quote(org, safe='')}"
               f"/issues/{urllib.parse.quote(issue_id, safe='')}/")
        headers = {"Authorization": f"Bearer {self._token}"}
        try:
            async with self._session.put(url, json={"status": "resolved"}, headers=headers,
                                         allow_redirects=False) as response:
                await response.content.read(_REPLY_CAP)  # rule 3: never the whole reply
                status, answer_headers = response.status, response.headers
        except TimeoutError:
            raise SentryAPIError(None, "timed out", True) from None
        except aiohttp.ClientConnectorError as exc:
            raise SentryAPIError(None, f"cannot connect: {exc.os_error}", True) from None
        except aiohttp.ClientError as exc:
            raise SentryAPIError(None, f"connection error: {type(exc).__name__}", True) from None
        if 200 <= status < 300:
            return
        retryable = status >= 500 or status == 429
        hint = wait_hint(answer_headers, time.time()) if retryable else None
        raise SentryAPIError(status, f"Sentry answered {status}", retryable, hint)


class SentrySink:
    """Carries out ``resolve_sentry`` decisions (rules 1-5), one outcome record each."""

    def __init__(self, api_url: str, token: str | None, clock: Callable[[], datetime],
                 retry: RetryPolicy = DEFAULT_RETRY) -> None:
        self._token = token
        self._api = SentryAPI(api_url, token or "", retry.request_timeout)
        self._rounds = Rounds(retry, classify, clock, peer="sentry")

    async def start(self) -> None:
        """Open the HTTP session."""
        await self._api.start()

    async def close(self) -> None:
        """Close it."""
        await self._api.close()

    async def resolve(self, job: ResolveJob) -> SentryResolved | IssueFailed:
        """Resolve the Sentry issue of a ``resolve_sentry`` decision, or say why not."""
        issue_id = job.decision.sentry_issue_id
        if not self._token:
            return self._permanent(job, "no Sentry API token; set OBSV_SENTRY_API_TOKEN "
                                        "(scope event:write) to resolve issues in Sentry")
        org = job.org or sentry_org(None, job.api_url)
        if org is None:
            return self._permanent(job, f"cannot tell the Sentry organization of issue "
                                        f"{issue_id[:128]!r} from its alert's links")

        async def once(_maybe_sent: bool) -> SentryResolved:  # rule 2: a repeat is harmless
            await self._api.resolve(org, issue_id)
            log.info("sentry.resolved", cause_seq=job.cause_seq, sentry_issue_id=issue_id)
            return SentryResolved(job.cause_seq, issue_id)

        return await self._rounds.run(job.cause_seq, job.attempts, job.maybe_sent, once)

    def _permanent(self, job: ResolveJob, error: str) -> IssueFailed:
        log.error("sentry.failed", alert_seq=job.cause_seq, error=error, retryable=False)
        return IssueFailed(job.cause_seq, job.attempts + 1, None, error, False, None)
