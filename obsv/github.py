"""The GitHub sink: gidgethub over one aiohttp session, retried with tenacity.

Rules (docs/reference.md §6):
1. One request at a time, and at least ``write_interval`` (1 s) between writes
   (every POST, PATCH, PUT or DELETE), as GitHub asks of integrators; content
   creation is also capped by GitHub at 80 a minute and 500 an hour.
2. A round is 3 attempts, 2 s then 8 s apart, longer when ``retry-after`` says so.
   Retried: 5xx, timeouts, connection errors, and rate limits (429; a 403 with a
   ``retry-after`` header, with ``x-ratelimit-remaining: 0``, or saying "rate
   limit"). ``retry-after`` is seconds or an HTTP date (RFC 9110 §10.2.3);
   ``x-ratelimit-reset`` an epoch time. Every wait a server asks for is capped at
   ``MAX_RETRY_SECONDS`` (an hour); a value that is not a time (``soon``, NaN,
   negative) means the default backoff. After a failed round: ``issue.failed``
   with ``retryable: true`` and the next round 30 s later, doubling up to an hour.
   A wait longer than a minute ends the round at once with that time, so one rate
   limit never holds the poster.
3. Other 4xx (404, 410, 422 …) are permanent: ``retryable: false``. A 401 first
   refreshes the credentials once (an App's installation token may have expired).
4. Never posted twice: when an earlier attempt may have reached GitHub (a timeout,
   a 5xx, a connection dropped after sending, a crash between sending and
   recording), the repo's issues are listed newest first — the list endpoint, not
   search, whose index lags; no label filter, since labels may not have stuck or
   been removed by hand — back to ``RECONCILE_MARGIN`` before the alert, and a body
   holding the marker is taken as the issue instead of posting again. Comments
   likewise.
5. Every peer is bounded (``Limits``): an answer is read up to
   ``max_response_bytes`` and no further; a reconciliation reads at most
   ``max_pages`` pages and follows ``next`` links only on the API's own origin.
   Running out is a retryable failure that says so, never "not found, post
   again". A request, including reading its answer, ends after ``request_timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import math
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import gidgethub
import gidgethub.aiohttp
import gidgethub.apps
import gidgethub.sansio
import structlog
from multidict import CIMultiDict
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from obsv.core.codec import parse_time
from obsv.core.events import CommentPosted, IssueFailed, IssueOpened
from obsv.core.render import comment_marker_for
from obsv.eventlog import Clock
from obsv.metrics import Metrics
from obsv.settings import Settings
from obsv.sink import (
    MAX_RETRY_SECONDS,
    CommentJob,
    OpenJob,
    render_comment_job,
    render_job,
    retry_time,
)

log = structlog.get_logger("obsv.github")
T = TypeVar("T")

USER_AGENT = "obsv (Sentry alerts to GitHub issues)"
LABEL_COLOR = "5319e7"
# Issues created this long before the alert are not looked at when reconciling.
RECONCILE_MARGIN = timedelta(minutes=10)
# An installation token is replaced this long before GitHub says it expires.
TOKEN_REFRESH_MARGIN = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Timings of rule 1 and 2; tests shrink them, production keeps the defaults."""

    attempts: int = 3
    waits: tuple[float, ...] = (2.0, 8.0)
    write_interval: float = 1.0
    max_inline_wait: float = 60.0
    request_timeout: float = 30.0


@dataclass(frozen=True, slots=True)
class Limits:
    """Rule 5: how much one answer and one reconciliation may read.

    A page of 30 issues (GitHub's default) whose bodies are at GitHub's limit of
    65,536 characters of 4-byte UTF-8 is under 8 MiB, so a real answer always fits;
    40 pages look back over 1,200 issues and pull requests.
    """

    max_response_bytes: int = 8 << 20
    max_pages: int = 40
    per_page: int = 30


class ResponseTooLarge(Exception):
    """GitHub's answer was longer than ``Limits.max_response_bytes``; not read further."""

    def __init__(self, status: int, limit: int) -> None:
        super().__init__(f"GitHub answered {status} with a body larger than {limit} bytes")
        self.status = status


class Inconclusive(Exception):
    """A reconciliation ran out of pages (or was sent to another host) before it could
    tell whether the post exists; posting again could make a duplicate."""


@dataclass(frozen=True, slots=True)
class Failure:
    """What went wrong with one request, classified by rule 2 and 3."""

    status: int | None
    message: str
    retryable: bool
    maybe_sent: bool
    wait_hint: float | None = None
    again_now: bool = True  # another attempt in this round may help


def classify(exc: BaseException, now: float) -> Failure:
    """Rule 2, 3 and 5 for one exception (``now`` is epoch seconds, for reset headers)."""
    if isinstance(exc, gidgethub.HTTPException):
        status = int(exc.status_code)
        message = f"{status} {exc}"
        hint = _wait_hint(exc.headers, now)
        if status >= 500:
            return Failure(status, message, True, True, hint)
        if status == 429 or (status == 403 and _rate_limited(exc)):
            return Failure(status, message, True, False, hint)
        return Failure(status, message, False, False)
    if isinstance(exc, ResponseTooLarge):  # a write may have been done before the answer
        return Failure(exc.status, str(exc), True, True)
    if isinstance(exc, Inconclusive):  # the same walk would run out again at once
        return Failure(None, str(exc), True, True, again_now=False)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return Failure(None, f"cannot connect: {exc.os_error}", True, False)
    if isinstance(exc, TimeoutError):
        return Failure(None, "timed out", True, True)
    if isinstance(exc, aiohttp.ClientError):
        return Failure(None, f"connection error: {type(exc).__name__}", True, True)
    return Failure(None, f"unexpected error: {exc!r}", True, True)


def _rate_limited(exc: gidgethub.HTTPException) -> bool:
    """A 403 that is a rate limit (GitHub's secondary limits answer 403, not 429)."""
    headers = exc.headers or {}
    return ("retry-after" in headers or headers.get("x-ratelimit-remaining") == "0"
            or "rate limit" in str(exc).lower())


def _wait_hint(headers: Mapping[str, str] | None, now: float) -> float | None:
    """Seconds GitHub asks us to wait (``retry-after``, else the primary limit's reset),
    at most ``MAX_RETRY_SECONDS``; None when it asks nothing usable (rule 2)."""
    if headers is None:
        return None
    retry_after = headers.get("retry-after")
    if retry_after is not None:
        return _retry_after_seconds(retry_after, now)
    if headers.get("x-ratelimit-remaining") == "0":
        reset = _number(headers.get("x-ratelimit-reset"))
        return None if reset is None else _capped(reset - now)
    return None


def _retry_after_seconds(value: str, now: float) -> float | None:
    """``Retry-After`` as seconds to wait: delay-seconds or an HTTP date."""
    seconds = _number(value)
    if seconds is not None:
        return None if seconds < 0 else _capped(seconds)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000": UTC, says RFC 5322
        when = when.replace(tzinfo=UTC)
    return _capped(when.timestamp() - now)


def _number(value: str | None) -> float | None:
    """A header's number, or None when it is not one (NaN is not one)."""
    try:
        number = float(value) if value is not None else math.nan
    except ValueError:
        return None
    return None if math.isnan(number) else number


def _capped(seconds: float) -> float:
    """A wait between now and ``MAX_RETRY_SECONDS`` (a time already past: now)."""
    return min(float(MAX_RETRY_SECONDS), max(0.0, seconds))


def _sane_rate_limit_headers(headers: Mapping[str, str]) -> Mapping[str, str]:
    """The answer's headers without ``x-ratelimit-*`` values gidgethub cannot take.

    gidgethub parses them on every answer (``RateLimit.from_http``) and raises
    ValueError on one that is not a number or an epoch ``datetime`` can hold (NaN,
    ``inf``, ``1e30``), even on a 201: the issue exists, but obsv would see a crash.
    Dropped, they are simply absent, which gidgethub and rule 2 both handle.
    """
    def bad(name: str, value: str) -> bool:
        try:
            if name == "x-ratelimit-reset":
                datetime.fromtimestamp(float(value), UTC)
            else:
                int(value)
        except (ValueError, OverflowError, OSError):
            return True
        return False

    names = ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset")
    if not any(name in headers and bad(name, headers[name]) for name in names):
        return headers
    kept: CIMultiDict[str] = CIMultiDict(headers)
    for name in names:
        if name in kept and bad(name, kept[name]):
            del kept[name]
    return kept


def _endpoint(method: str, url: str) -> str:
    """The metric label of a GitHub request."""
    path = urllib.parse.urlsplit(url).path
    if path.endswith("/access_tokens"):
        return "token"
    if "/labels" in path:
        return "label"
    if path.endswith("/comments"):
        return "create_comment" if method == "POST" else "list_comments"
    if path.endswith("/issues"):
        return "create_issue" if method == "POST" else "list_issues"
    return "other"


class GitHubAPI(gidgethub.aiohttp.GitHubAPI):
    """gidgethub's aiohttp client, one request at a time, writes spaced, requests counted,
    answers read up to a bound (rule 5)."""

    def __init__(self, session: aiohttp.ClientSession, *, base_url: str, metrics: Metrics,
                 write_interval: float, limits: Limits) -> None:
        super().__init__(session, USER_AGENT, base_url=base_url)
        self._http = session
        self._metrics = metrics
        self._write_interval = write_interval
        self._limits = limits
        self._last_write = float("-inf")
        self._one_at_a_time = asyncio.Lock()

    async def pages(self, url: str, url_vars: Mapping[str, str], *,
                    oauth_token: str) -> AsyncIterator[list[Any]]:
        """The pages of a list endpoint, at most ``max_pages`` of them (rule 5).

        gidgethub's ``getiter`` follows ``next`` links for as long as the server sends
        them; this walk raises ``Inconclusive`` instead of reading one more page.
        """
        origin = urllib.parse.urlsplit(self.base_url)[:2]
        for _ in range(self._limits.max_pages):
            # _make_request is gidgethub's one request-and-decode step (what getiter and
            # getitem call); it is the only way to see the next link of a page.
            data, next_url, _ = await self._make_request(
                "GET", url, url_vars, b"", gidgethub.sansio.accept_format(),
                oauth_token=oauth_token)
            yield data if isinstance(data, list) else []
            if not next_url:
                return
            if urllib.parse.urlsplit(next_url)[:2] != origin:  # our token goes nowhere else
                raise Inconclusive(f"GitHub's next page is on another host ({next_url[:100]})"
                                   "; reconciliation stopped there")
            url, url_vars = next_url, {}
        raise Inconclusive(f"reconciliation read {self._limits.max_pages} pages without "
                           "reaching the alert's time; not posting again blind")

    async def _request(self, method: str, url: str, headers: Mapping[str, str],
                       body: bytes = b"") -> tuple[int, Mapping[str, str], bytes]:
        async with self._one_at_a_time:
            if method != "GET":
                await asyncio.sleep(max(0.0, self._last_write + self._write_interval
                                        - time.monotonic()))
                self._last_write = time.monotonic()
            endpoint = _endpoint(method, url)
            try:
                status, response_headers, data = await self._bounded(method, url, headers,
                                                                     body)
            except ResponseTooLarge as exc:
                self._metrics.github_requests.labels(endpoint, str(exc.status)).inc()
                raise
            except (aiohttp.ClientError, TimeoutError):
                self._metrics.github_requests.labels(endpoint, "error").inc()
                raise
            finally:
                if method != "GET":
                    self._last_write = time.monotonic()
            self._metrics.github_requests.labels(endpoint, str(status)).inc()
            return status, response_headers, data

    async def _bounded(self, method: str, url: str, headers: Mapping[str, str],
                       body: bytes) -> tuple[int, Mapping[str, str], bytes]:
        """gidgethub's aiohttp ``_request``, which reads the whole answer, read up to
        ``max_response_bytes`` instead; the connection is dropped past that."""
        limit = self._limits.max_response_bytes
        async with self._http.request(method, url, headers=headers, data=body) as response:
            if (response.content_length or 0) > limit:
                response.close()
                raise ResponseTooLarge(response.status, limit)
            data = bytearray()
            async for chunk in response.content.iter_any():
                data += chunk
                if len(data) > limit:
                    response.close()
                    raise ResponseTooLarge(response.status, limit)
            return response.status, _sane_rate_limit_headers(response.headers), bytes(data)


class TokenAuth:
    """A fixed token (a fine-grained personal access token, or any bearer token)."""

    def __init__(self, token: str) -> None:
        self._token = token

    async def token(self, gh: GitHubAPI) -> str:
        """The token to send."""
        return self._token

    def invalidate(self) -> None:
        """A fixed token cannot be refreshed."""


class AppAuth:
    """A GitHub App: a JWT buys an installation token, cached until shortly before expiry."""

    def __init__(self, app_id: str, private_key: str, installation_id: str, clock: Clock) -> None:
        self._app_id = app_id
        self._private_key = private_key
        self._installation_id = installation_id
        self._clock = clock
        self._cached: tuple[str, datetime] | None = None

    async def token(self, gh: GitHubAPI) -> str:
        """The installation token, fetched again only when (nearly) expired."""
        if self._cached is not None and self._clock() < self._cached[1]:
            return self._cached[0]
        response = await gidgethub.apps.get_installation_access_token(
            gh, installation_id=self._installation_id, app_id=self._app_id,
            private_key=self._private_key)
        expires = parse_time(response["expires_at"]) - TOKEN_REFRESH_MARGIN
        self._cached = (str(response["token"]), expires)
        return self._cached[0]

    def invalidate(self) -> None:
        """Forget the token (after a 401)."""
        self._cached = None


Auth = TokenAuth | AppAuth


def auth_from(settings: Settings, clock: Clock) -> Auth:
    """The credentials the settings name (validated by ``settings.py``)."""
    if settings.github_token:
        return TokenAuth(settings.github_token)
    assert settings.github_app_id and settings.github_app_private_key_path
    assert settings.github_installation_id
    key = Path(settings.github_app_private_key_path).read_text("utf-8")
    return AppAuth(settings.github_app_id, key, settings.github_installation_id, clock)


class GitHubSink:
    """Posts decisions as GitHub issues and comments, exactly once each."""

    dry_run = False

    def __init__(self, settings: Settings, clock: Clock, metrics: Metrics,
                 retry: RetryPolicy = RetryPolicy(), limits: Limits = Limits()) -> None:
        assert settings.github_repo is not None
        self.repo = settings.github_repo
        self._settings = settings
        self._clock = clock
        self._metrics = metrics
        self._retry = retry
        self._limits = limits
        self._auth = auth_from(settings, clock)
        self._session: aiohttp.ClientSession | None = None
        self._gh: GitHubAPI | None = None
        self._labels_ready = False
        self._labels_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Open the one shared HTTP session, and create missing labels in the background.

        Startup never waits for GitHub: if it is down, the labels are created before
        the first issue instead.
        """
        timeout = aiohttp.ClientTimeout(total=self._retry.request_timeout)
        self._session = aiohttp.ClientSession(timeout=timeout)
        self._gh = GitHubAPI(self._session, base_url=self._settings.github_api_url,
                             metrics=self._metrics, write_interval=self._retry.write_interval,
                             limits=self._limits)
        self._labels_task = asyncio.create_task(self._labels_at_start())

    async def close(self) -> None:
        """Stop the label task and close the session."""
        if self._labels_task is not None and not self._labels_task.done():
            self._labels_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._labels_task
        if self._session is not None:
            await self._session.close()

    async def _labels_at_start(self) -> None:
        try:
            await self._ensure_labels(self._settings.github_labels)
        except Exception as exc:  # retried before the first issue; never fatal here
            log.warning("github.labels_not_ready", error=classify(exc, time.time()).message)

    # -- the two operations -----------------------------------------------------

    async def open_issue(self, job: OpenJob) -> IssueOpened | IssueFailed:
        """Open the issue for an ``open`` decision (or find the one already opened)."""
        draft = render_job(job)
        if isinstance(draft, IssueFailed):
            return draft

        async def once(maybe_sent: bool) -> IssueOpened:
            if maybe_sent and (found := await self._find_issue(draft.marker, job)):
                log.info("github.reconciled", alert_seq=job.alert_seq, number=found["number"])
                return self._opened(job, found)
            await self._ensure_labels(job.labels)
            created = await self._call(lambda token: self._api.post(
                f"/repos/{self.repo}/issues", oauth_token=token,
                data={"title": draft.title, "body": draft.body, "labels": list(draft.labels)}))
            return self._opened(job, created)

        return await self._round(job.alert_seq, job.attempts, job.maybe_sent, once)

    async def post_comment(self, job: CommentJob) -> CommentPosted | IssueFailed:
        """Post the recurrence comment (or find the one already posted)."""
        if job.issue_number is None:
            return IssueFailed(job.alert_seq, job.attempts + 1, None,
                               "the linked issue was opened in dry run; there is no GitHub "
                               "issue to comment on", False, None)
        text = render_comment_job(job)
        if isinstance(text, IssueFailed):
            return text
        marker = comment_marker_for(job.alert_seq)
        comments = f"/repos/{self.repo}/issues/{job.issue_number}/comments"

        async def once(maybe_sent: bool) -> CommentPosted:
            if maybe_sent and (found := await self._find_comment(comments, marker, job)):
                return self._commented(job, found)
            created = await self._call(lambda token: self._api.post(
                comments, oauth_token=token, data={"body": text}))
            return self._commented(job, created)

        return await self._round(job.alert_seq, job.attempts, job.maybe_sent, once)

    # -- rounds of attempts (rule 2) --------------------------------------------

    async def _round(self, alert_seq: int, attempts_before: int, maybe_sent: bool,
                     once: Callable[[bool], Awaitable[T]]) -> T | IssueFailed:
        tried = 0
        retry = AsyncRetrying(
            stop=stop_after_attempt(self._retry.attempts),
            wait=self._wait,
            retry=retry_if_exception(self._retry_now),
            before_sleep=self._count_retry,
            reraise=True,
        )
        try:
            async for attempt in retry:
                with attempt:
                    tried += 1
                    try:
                        return await once(maybe_sent)
                    except Exception as exc:
                        maybe_sent = maybe_sent or classify(exc, time.time()).maybe_sent
                        raise
        except Exception as exc:
            return self._failed(alert_seq, attempts_before + tried, exc)
        raise AssertionError("unreachable: tenacity either returns or raises")

    def _retry_now(self, exc: BaseException) -> bool:
        if not isinstance(exc, Exception):  # cancellation (shutdown) is never retried
            return False
        failure = classify(exc, time.time())
        return (failure.retryable and failure.again_now
                and (failure.wait_hint or 0) <= self._retry.max_inline_wait)

    def _count_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        status = classify(exc, time.time()).status if exc else None
        self._metrics.github_retries.labels(str(status or "error")).inc()

    def _wait(self, state: RetryCallState) -> float:
        waits = self._retry.waits
        base = waits[min(state.attempt_number, len(waits)) - 1] if waits else 0.0
        exc = state.outcome.exception() if state.outcome else None
        hint = classify(exc, time.time()).wait_hint if exc else None
        return max(base, hint or 0.0)

    def _failed(self, alert_seq: int, attempts: int, exc: BaseException) -> IssueFailed:
        failure = classify(exc, time.time())
        next_at = None
        if failure.retryable:
            next_at = retry_time(self._clock(), max(1, attempts // self._retry.attempts))
            if failure.wait_hint is not None:
                next_at = max(next_at, self._clock() + timedelta(seconds=failure.wait_hint))
        (log.warning if failure.retryable else log.error)(
            "github.failed", alert_seq=alert_seq, status=failure.status,
            error=failure.message, retryable=failure.retryable, attempts=attempts)
        return IssueFailed(alert_seq, attempts, failure.status, failure.message,
                           failure.retryable, next_at)

    # -- requests ---------------------------------------------------------------

    @property
    def _api(self) -> GitHubAPI:
        assert self._gh is not None, "GitHubSink.start() was not called"
        return self._gh

    async def _call(self, request: Callable[[str], Awaitable[Any]]) -> Any:
        """One request with the current token; a 401 refreshes the token once (rule 3)."""
        try:
            return await request(await self._auth.token(self._api))
        except gidgethub.BadRequest as exc:
            if int(exc.status_code) != 401:
                raise
            self._auth.invalidate()
            return await request(await self._auth.token(self._api))

    async def _ensure_labels(self, labels: tuple[str, ...]) -> None:
        """Create missing labels. A refusal (4xx: e.g. a token that may create issues
        but not labels) is logged and not retried: GitHub still applies labels that
        exist, and a missing label must not stop the issue. Outages propagate."""
        if self._labels_ready:
            return
        for name in labels:
            try:
                await self._ensure_label(name)
            except gidgethub.BadRequest as exc:
                if classify(exc, time.time()).retryable:
                    raise
                log.warning("github.label_not_created", label=name,
                            error=f"{exc.status_code} {exc}")
        self._labels_ready = True

    async def _ensure_label(self, name: str) -> None:
        async def get(token: str) -> Any:
            return await self._api.getitem(f"/repos/{self.repo}/labels/{{name}}",
                                           {"name": name}, oauth_token=token)

        async def create(token: str) -> Any:
            return await self._api.post(f"/repos/{self.repo}/labels", oauth_token=token, data={
                "name": name, "color": LABEL_COLOR,
                "description": "Opened by obsv from a Sentry alert"})

        try:
            await self._call(get)
            return
        except gidgethub.BadRequest as exc:
            if int(exc.status_code) != 404:
                raise
        try:
            await self._call(create)
        except gidgethub.BadRequest as exc:
            if int(exc.status_code) != 422:  # already_exists: created meanwhile
                raise

    async def _find_issue(self, marker: str, job: OpenJob) -> dict[str, Any] | None:
        """Rule 4: the issue holding ``marker``, newest first, back to the alert's time.

        No label filter: a token without push access has its labels dropped, and a
        label can be removed by hand. ``since`` (updated at or after) never hides an
        issue created after the bound, and keeps old, quiet issues out of the pages.
        """
        not_before = job.at - RECONCILE_MARGIN
        token = await self._auth.token(self._api)
        url = f"/repos/{self.repo}/issues{{?state,sort,direction,since,per_page}}"
        query = {"state": "all", "sort": "created", "direction": "desc",
                 "since": _github_time(not_before), "per_page": str(self._limits.per_page)}
        async for page in self._api.pages(url, query, oauth_token=token):
            for issue in page:
                if not isinstance(issue, dict):
                    continue
                if marker in str(issue.get("body") or "") and "pull_request" not in issue:
                    return dict(issue)
                if _created_before(issue, not_before):
                    return None
        return None

    async def _find_comment(self, url: str, marker: str, job: CommentJob) -> dict[str, Any] | None:
        token = await self._auth.token(self._api)
        query = {"since": _github_time(job.at - RECONCILE_MARGIN),
                 "per_page": str(self._limits.per_page)}
        async for page in self._api.pages(url + "{?since,per_page}", query, oauth_token=token):
            for comment in page:
                if isinstance(comment, dict) and marker in str(comment.get("body") or ""):
                    return dict(comment)
        return None

    def _opened(self, job: OpenJob, issue: Mapping[str, Any]) -> IssueOpened:
        return IssueOpened(job.alert_seq, job.received.alert.sentry_issue_id, self.repo,
                           int(issue["number"]), _url_of(issue), False)

    def _commented(self, job: CommentJob, comment: Mapping[str, Any]) -> CommentPosted:
        return CommentPosted(job.alert_seq, job.received.alert.sentry_issue_id, self.repo,
                             job.issue_number, int(comment["id"]), _url_of(comment), False)


def _url_of(item: Mapping[str, Any]) -> str:
    """The web address GitHub gave an issue or comment, as text of a sane length (it
    goes into the log; never ``str()`` of whatever nested value a server sent)."""
    for key in ("html_url", "url"):
        if isinstance(url := item.get(key), str) and url:
            return url[:2000]
    return ""


def _created_before(issue: Mapping[str, Any], bound: datetime) -> bool:
    """Whether GitHub says the issue was created before ``bound`` (unknown: no)."""
    created = issue.get("created_at")
    try:
        return isinstance(created, str) and parse_time(created) < bound
    except ValueError:
        return False


def _github_time(at: datetime) -> str:
    """A time as GitHub's ``since`` parameters take it (ISO 8601, UTC, seconds)."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
