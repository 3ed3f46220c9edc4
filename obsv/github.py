"""The GitHub sink: gidgethub over one aiohttp session, retried with tenacity.

Rules (docs/reference.md §6):
1. One request at a time, and at least ``write_interval`` (1 s) between writes
   (every POST, PATCH, PUT or DELETE), as GitHub asks of integrators; content
   creation is also capped by GitHub at 80 a minute and 500 an hour.
2. A round is 3 attempts, 2 s then 8 s apart, longer when ``retry-after`` says so.
   Retried: 5xx, timeouts, connection errors, and rate limits (403/429 with
   ``retry-after``, or ``x-ratelimit-remaining: 0`` until ``x-ratelimit-reset``).
   After a failed round: ``issue.failed`` with ``retryable: true`` and the next
   round 30 s later, doubling up to an hour. A wait longer than a minute ends the
   round at once with that time, so one rate limit never holds the poster.
3. Other 4xx (404, 410, 422 …) are permanent: ``retryable: false``. A 401 first
   refreshes the credentials once (an App's installation token may have expired).
4. Never posted twice: when an earlier attempt may have reached GitHub (a timeout,
   a 5xx, a connection dropped after sending, a crash between sending and
   recording), the repo's issues with the label are listed newest first — the
   list endpoint, not search, whose index lags — and a body holding the marker
   is taken as the issue instead of posting again. Comments likewise.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import gidgethub
import gidgethub.aiohttp
import gidgethub.apps
import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from obsv.core.codec import parse_time
from obsv.core.events import CommentPosted, IssueFailed, IssueOpened
from obsv.core.render import comment_marker_for, render_comment, render_issue
from obsv.eventlog import Clock
from obsv.metrics import Metrics
from obsv.settings import Settings
from obsv.sink import CommentJob, OpenJob, body_of, retry_time

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
class Failure:
    """What went wrong with one request, classified by rule 2 and 3."""

    status: int | None
    message: str
    retryable: bool
    maybe_sent: bool
    wait_hint: float | None = None


def classify(exc: BaseException, now: float) -> Failure:
    """Rule 2 and 3 for one exception (``now`` is epoch seconds, for reset headers)."""
    if isinstance(exc, gidgethub.HTTPException):
        status = int(exc.status_code)
        message = f"{status} {exc}"
        hint = _wait_hint(exc.headers, now)
        if status >= 500:
            return Failure(status, message, True, True, hint)
        if status in (403, 429) and (hint is not None or status == 429
                                     or "rate limit" in str(exc).lower()):
            return Failure(status, message, True, False, hint)
        return Failure(status, message, False, False)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return Failure(None, f"cannot connect: {exc.os_error}", True, False)
    if isinstance(exc, TimeoutError):
        return Failure(None, "timed out", True, True)
    if isinstance(exc, aiohttp.ClientError):
        return Failure(None, f"connection error: {type(exc).__name__}", True, True)
    return Failure(None, f"unexpected error: {exc!r}", True, True)


def _wait_hint(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds GitHub asks us to wait: ``retry-after``, else the primary limit's reset."""
    retry_after = headers.get("retry-after")
    if retry_after is not None:
        try:
            return max(0.0, float(retry_after))
        except ValueError:
            return None
    if headers.get("x-ratelimit-remaining") == "0" and "x-ratelimit-reset" in headers:
        try:
            return max(0.0, float(headers["x-ratelimit-reset"]) - now)
        except ValueError:
            return None
    return None


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
    """gidgethub's aiohttp client, one request at a time, writes spaced, requests counted."""

    def __init__(self, session: aiohttp.ClientSession, *, base_url: str, metrics: Metrics,
                 write_interval: float) -> None:
        super().__init__(session, USER_AGENT, base_url=base_url)
        self._metrics = metrics
        self._write_interval = write_interval
        self._last_write = float("-inf")
        self._one_at_a_time = asyncio.Lock()

    async def _request(self, method: str, url: str, headers: Mapping[str, str],
                       body: bytes = b"") -> tuple[int, Mapping[str, str], bytes]:
        async with self._one_at_a_time:
            if method != "GET":
                await asyncio.sleep(max(0.0, self._last_write + self._write_interval
                                        - time.monotonic()))
                self._last_write = time.monotonic()
            endpoint = _endpoint(method, url)
            try:
                status, response_headers, data = await super()._request(method, url, headers,
                                                                        body)
            except (aiohttp.ClientError, TimeoutError):
                self._metrics.github_requests.labels(endpoint, "error").inc()
                raise
            if method != "GET":
                self._last_write = time.monotonic()
            self._metrics.github_requests.labels(endpoint, str(status)).inc()
            return status, response_headers, data


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
                 retry: RetryPolicy = RetryPolicy()) -> None:
        assert settings.github_repo is not None
        self.repo = settings.github_repo
        self._settings = settings
        self._clock = clock
        self._metrics = metrics
        self._retry = retry
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
                             metrics=self._metrics, write_interval=self._retry.write_interval)
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
        alert = job.received.alert
        draft = render_issue(alert, body_of(job.received), job.labels)

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
        alert = job.received.alert
        if job.issue_number is None:
            return IssueFailed(job.alert_seq, job.attempts + 1, None,
                               "the linked issue was opened in dry run; there is no GitHub "
                               "issue to comment on", False, None)
        text = render_comment(alert, job.decision)
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
        return failure.retryable and (failure.wait_hint or 0) <= self._retry.max_inline_wait

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
        """Rule 4: the issue holding ``marker`` among the labelled issues, newest first."""
        not_before = job.at - RECONCILE_MARGIN
        token = await self._auth.token(self._api)
        url = f"/repos/{self.repo}/issues{{?labels,state,sort,direction,per_page}}"
        query = {"labels": job.labels[0], "state": "all", "sort": "created",
                 "direction": "desc", "per_page": "100"}
        async for issue in self._api.getiter(url, query, oauth_token=token):
            if marker in (issue.get("body") or "") and "pull_request" not in issue:
                return dict(issue)
            created = issue.get("created_at")
            if isinstance(created, str) and parse_time(created) < not_before:
                return None
        return None

    async def _find_comment(self, url: str, marker: str, job: CommentJob) -> dict[str, Any] | None:
        since = (job.at - RECONCILE_MARGIN).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        token = await self._auth.token(self._api)
        async for comment in self._api.getiter(url + "{?since,per_page}",
                                               {"since": since, "per_page": "100"},
                                               oauth_token=token):
            if marker in (comment.get("body") or ""):
                return dict(comment)
        return None

    def _opened(self, job: OpenJob, issue: Mapping[str, Any]) -> IssueOpened:
        return IssueOpened(job.alert_seq, job.received.alert.sentry_issue_id, self.repo,
                           int(issue["number"]), str(issue.get("html_url") or issue.get("url")),
                           False)

    def _commented(self, job: CommentJob, comment: Mapping[str, Any]) -> CommentPosted:
        return CommentPosted(job.alert_seq, job.received.alert.sentry_issue_id, self.repo,
                             job.issue_number, int(comment["id"]),
                             str(comment.get("html_url") or comment.get("url")), False)
