"""The GitHub sink: gidgethub over one aiohttp session, retried in rounds (obsv/retry.py).

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
   limit never holds the poster. (``obsv.retry.Rounds`` runs the rounds, shared with
   the Sentry sink; ``classify`` below is GitHub's part.)
3. Other 4xx (404, 410, 422 …) are permanent: ``retryable: false``. A 401 first
   refreshes the credentials once (an App's installation token may have expired).
4. Never posted twice: when an earlier attempt may have reached GitHub (a timeout,
   a 5xx, a connection dropped after sending, a crash between sending and
   recording), the repo's issues are listed newest first — the list endpoint, not
   search, whose index lags; no label filter, since labels may not have stuck or
   been removed by hand — back to ``RECONCILE_MARGIN`` before the alert, and a body
   holding the marker is taken as the issue instead of posting again. Comments
   likewise. That bound is in GitHub's time: when our clock runs ahead of GitHub's
   ``Date`` header (a host clock set wrong, a step obsv adopted, obsv/clock.py rule
   3), the bound moves back by as much, or GitHub would list nothing "since" a time
   it has not reached and the post would be made twice.
5. Every peer is bounded (``Limits``): an answer is read up to
   ``max_response_bytes`` and no further; a reconciliation reads at most
   ``max_pages`` pages and follows ``next`` links only on the API's own origin.
   Running out is a retryable failure that says so, never "not found, post
   again". A request, including reading its answer, ends after ``request_timeout``.
6. An issue's fate (docs/reference.md §5 row 7, §7): a reopen is one PATCH (state,
   ``state_reason: reopened``, labels back), made only when a read of the issue shows
   it is not already open with those labels, so a reopen is never done twice across
   crashes. A close is one comment (found again by its marker, like any comment),
   then one PATCH (``closed``, ``completed``), neither made when a read shows the
   issue already closed: a human who closed it first keeps their reason. A deleted
   (410) or vanished (404) issue is a permanent failure.
7. Polling reads the list endpoint with the previous answer's ``ETag`` as
   ``If-None-Match``: an unchanged answer is a 304 that costs no rate limit.
8. Routes (docs/reference.md §8): every operation goes to the repository of its job
   (the decision's route, or the linked issue's), through the one client and the one
   write spacing; labels are ensured once per repository (and set of labels).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import re
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import gidgethub
import gidgethub.aiohttp
import gidgethub.apps
import gidgethub.sansio
import structlog
from multidict import CIMultiDict

from obsv.core.codec import parse_time
from obsv.core.events import CommentPosted, IssueClosed, IssueFailed, IssueOpened, IssueReopened
from obsv.core.render import (
    close_marker_for,
    comment_marker_for,
    render_storm_comment,
    render_storm_digest,
    storm_marker_for,
)
from obsv.eventlog import Clock
from obsv.metrics import Metrics
from obsv.retry import Failure, RetryPolicy, Rounds, wait_hint
from obsv.settings import Settings
from obsv.sink import (
    CloseJob,
    CommentJob,
    DigestJob,
    OpenJob,
    ReopenJob,
    render_close_job,
    render_comment_job,
    render_job,
    reopen_labels,
)
from obsv.templates import load_renderer

log = structlog.get_logger("obsv.github")

USER_AGENT = "obsv (Sentry alerts to GitHub issues)"
LABEL_COLOR = "5319e7"
# Issues created this long before the alert are not looked at when reconciling.
RECONCILE_MARGIN = timedelta(minutes=10)
# An installation token is replaced this long before GitHub says it expires.
TOKEN_REFRESH_MARGIN = timedelta(minutes=5)
_ONE_ISSUE = re.compile(r"/issues/[0-9]+$")
DEFAULT_RETRY = RetryPolicy()


@dataclass(frozen=True, slots=True)
class Limits:
    """Rule 5: how much one answer, one reconciliation and one poll may read.

    A page of 30 issues (GitHub's default) whose bodies are at GitHub's limit of
    65,536 characters of 4-byte UTF-8 is under 8 MiB, so a real answer always fits;
    40 pages look back over 1,200 issues and pull requests.
    """

    max_response_bytes: int = 8 << 20
    max_pages: int = 40
    per_page: int = 30
    # A poll asks for GitHub's largest page. 100 issues at the body limit in 4-byte
    # characters could pass ``max_response_bytes``; such a poll fails (and says so).
    poll_per_page: int = 100


@dataclass(frozen=True, slots=True)
class Page:
    """One answer of a list endpoint: its items and ``next`` link, or ``unchanged`` (a 304
    to ``If-None-Match``), and the answer's ``ETag``."""

    items: list[Any]
    next_url: str | None
    etag: str | None
    unchanged: bool = False


@dataclass(frozen=True, slots=True)
class IssuePoll:
    """What one poll of the repository's issues found (rule 7).

    ``issues`` are the REST issue objects updated at or after ``since``, newest update
    first (pull requests included: GitHub lists them as issues). ``unchanged`` means
    GitHub answered 304: nothing changed since the answer whose ``etag`` was sent.
    Keep the poll and pass it back as ``previous`` for the same ``since``: its
    ``etag`` is only sent again for that query. ``complete`` is false when the walk
    stopped at ``Limits.max_pages``; such a poll carries no ``etag``, so the next one
    reads again instead of being told "unchanged".
    """

    repo: str
    since: datetime | None
    etag: str | None
    unchanged: bool
    issues: tuple[Mapping[str, Any], ...] = ()
    complete: bool = True


class PollFailed(Exception):
    """A poll could not read GitHub; ``failure`` says why and how long GitHub asked to
    wait (``wait_hint``). Nothing was recorded: the next poll simply tries again."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


class ResponseTooLarge(Exception):
    """GitHub's answer was longer than ``Limits.max_response_bytes``; not read further."""

    def __init__(self, status: int, limit: int) -> None:
        super().__init__(f"GitHub answered {status} with a body larger than {limit} bytes")
        self.status = status


class Inconclusive(Exception):
    """A reconciliation ran out of pages (or was sent to another host) before it could
    tell whether the post exists; posting again could make a duplicate."""


def classify(exc: BaseException, now: float) -> Failure:
    """Rule 2, 3 and 5 for one exception (``now`` is epoch seconds, for reset headers)."""
    if isinstance(exc, gidgethub.HTTPException):
        status = int(exc.status_code)
        message = f"{status} {exc}"
        hint = wait_hint(exc.headers, now)
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
    if _ONE_ISSUE.search(path):
        return "update_issue" if method == "PATCH" else "get_issue"
    return "other"


class GitHubAPI(gidgethub.aiohttp.GitHubAPI):
    """gidgethub's aiohttp client, one request at a time, writes spaced, requests counted,
    answers read up to a bound (rule 5)."""

    def __init__(self, session: aiohttp.ClientSession, *, base_url: str, metrics: Metrics,
                 write_interval: float, limits: Limits, clock: Clock) -> None:
        super().__init__(session, USER_AGENT, base_url=base_url)
        self._http = session
        self._clock = clock
        self._ahead = timedelta(0)
        self._metrics = metrics
        self._write_interval = write_interval
        self._limits = limits
        self._last_write = float("-inf")
        self._one_at_a_time = asyncio.Lock()

    @property
    def ahead_of_github(self) -> timedelta:
        """How far our clock ran ahead of GitHub's at its last answer (never negative:
        a clock behind GitHub's only makes a reconciliation look further back)."""
        return self._ahead

    def _note_date(self, value: str | None) -> None:
        """Rule 4: GitHub's ``Date`` header (RFC 9110 §6.6.1), against our clock."""
        try:
            date = email.utils.parsedate_to_datetime(value) if value else None
        except (TypeError, ValueError, IndexError, OverflowError):
            return
        if date is not None and date.tzinfo is not None:
            self._ahead = max(timedelta(0), self._clock() - date)

    async def pages(self, url: str, url_vars: Mapping[str, str], *, oauth_token: str,
                    etag: str | None = None) -> AsyncIterator[Page]:
        """The pages of a list endpoint, at most ``max_pages`` of them (rule 5); with
        ``etag``, the first page may come back ``unchanged`` and the walk ends there.

        gidgethub's ``getiter`` follows ``next`` links for as long as the server sends
        them; this walk raises ``Inconclusive`` instead of reading one more page.
        """
        origin = urllib.parse.urlsplit(self.base_url)[:2]
        for _ in range(self._limits.max_pages):
            page = await self.page(url, url_vars, oauth_token=oauth_token, etag=etag)
            yield page
            next_url = page.next_url
            if page.unchanged or not next_url:
                return
            if urllib.parse.urlsplit(next_url)[:2] != origin:  # our token goes nowhere else
                raise Inconclusive(f"GitHub's next page is on another host ({next_url[:100]})"
                                   "; the walk stopped there")
            url, url_vars, etag = next_url, {}, None
        raise Inconclusive(f"read {self._limits.max_pages} pages without reaching the end; "
                           "not posting again blind")

    async def page(self, url: str, url_vars: Mapping[str, str], *, oauth_token: str,
                   etag: str | None = None) -> Page:
        """One GET of a list endpoint, conditional when ``etag`` is given (rule 7).

        gidgethub's request-and-decode step (``_make_request``) neither sends
        ``If-None-Match`` per call nor returns the answer's headers, so this is that
        step with both: its own headers and URL filling, gidgethub's decoding.
        """
        filled = gidgethub.sansio.format_url(url, url_vars, base_url=self.base_url)
        headers = gidgethub.sansio.create_headers(
            self.requester, accept=gidgethub.sansio.accept_format(), oauth_token=oauth_token)
        if etag is not None:
            headers["if-none-match"] = etag
        status, response_headers, body = await self._request("GET", filled, headers)
        if status == 304:
            return Page([], None, response_headers.get("etag") or etag, unchanged=True)
        data, self.rate_limit, next_url = gidgethub.sansio.decipher_response(
            status, response_headers, body)
        return Page(data if isinstance(data, list) else [], next_url,
                    response_headers.get("etag"))

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
            self._note_date(response.headers.get("date"))
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

    def invalidate(self, token: str) -> None:
        """A fixed token cannot be refreshed."""


class AppAuth:
    """A GitHub App: a JWT buys an installation token, cached until shortly before expiry."""

    def __init__(self, app_id: str, private_key: str, installation_id: str, clock: Clock) -> None:
        self._app_id = app_id
        self._private_key = private_key
        self._installation_id = installation_id
        self._clock = clock
        self._cached: tuple[str, datetime] | None = None
        # The poster, the poller and the label task may all need a token at once (at
        # start, or at expiry): one of them fetches it, the others wait and reuse it.
        self._fetching = asyncio.Lock()

    async def token(self, gh: GitHubAPI) -> str:
        """The installation token, fetched again only when (nearly) expired."""
        async with self._fetching:
            if self._cached is not None and self._clock() < self._cached[1]:
                return self._cached[0]
            response = await gidgethub.apps.get_installation_access_token(
                gh, installation_id=self._installation_id, app_id=self._app_id,
                private_key=self._private_key)
            expires = parse_time(response["expires_at"]) - TOKEN_REFRESH_MARGIN
            self._cached = (str(response["token"]), expires)
            return self._cached[0]

    def invalidate(self, token: str) -> None:
        """Forget ``token`` after GitHub refused it (401). Only that token: a request that
        was sent with an older one (the poller's, beside the poster's) must not throw
        away the fresh token another request just fetched."""
        if self._cached is not None and self._cached[0] == token:
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
    """Carries out decisions on GitHub, exactly once each: opens issues, comments on
    them, reopens and closes them; and lists them for the poller."""

    dry_run = False

    def __init__(self, settings: Settings, clock: Clock, metrics: Metrics,
                 retry: RetryPolicy = DEFAULT_RETRY, limits: Limits = Limits()) -> None:
        # The default repository (None when only routes name repositories): every
        # operation posts to the repo of its job, docs/reference.md §8.
        self.repo = settings.github_repo
        self._settings = settings
        self._clock = clock
        self._metrics = metrics
        self._retry = retry
        self._limits = limits
        self._auth = auth_from(settings, clock)
        self._renderer = load_renderer(settings.template_dir, settings.redact_pii)
        self._session: aiohttp.ClientSession | None = None
        self._gh: GitHubAPI | None = None
        # Rule 8: the (repo, labels) already ensured, so each repository gets its labels.
        self._labels_ready: set[tuple[str, tuple[str, ...]]] = set()
        self._labels_task: asyncio.Task[None] | None = None
        self._rounds = Rounds(retry, classify, clock, peer="github", on_retry=self._count_retry)

    async def start(self) -> None:
        """Open the one shared HTTP session, and create missing labels in the background.

        Startup never waits for GitHub: if it is down, the labels are created before
        the first issue instead.
        """
        timeout = aiohttp.ClientTimeout(total=self._retry.request_timeout)
        self._session = aiohttp.ClientSession(timeout=timeout)
        self._gh = GitHubAPI(self._session, base_url=self._settings.github_api_url,
                             metrics=self._metrics, write_interval=self._retry.write_interval,
                             limits=self._limits, clock=self._clock)
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
        for repo, labels in self._wanted_labels():
            try:
                await self._ensure_labels(repo, labels)
            except Exception as exc:  # retried before the first issue; never fatal here
                log.warning("github.labels_not_ready", repo=repo,
                            error=classify(exc, time.time()).message)

    def _wanted_labels(self) -> list[tuple[str, tuple[str, ...]]]:
        """The labels each configured repository needs: the default labels in the default
        repo, each route's labels (else the default ones) in its repo."""
        wanted: list[tuple[str, tuple[str, ...]]] = []
        if self.repo is not None:
            wanted.append((self.repo, self._settings.github_labels))
        for route in self._settings.routes:
            pair = (route.repo, route.labels or self._settings.github_labels)
            if pair not in wanted:
                wanted.append(pair)
        return wanted

    def _repo_of(self, job_repo: str | None) -> str | None:
        return job_repo or self.repo

    # -- the operations ---------------------------------------------------------

    async def open_issue(self, job: OpenJob) -> IssueOpened | IssueFailed:
        """Open the issue for an ``open`` decision (or find the one already opened)."""
        draft = render_job(job, self._renderer)
        if isinstance(draft, IssueFailed):
            return draft
        repo = self._repo_of(job.repo)
        if repo is None:
            return _no_repo(job.alert_seq, job.attempts)

        async def once(maybe_sent: bool) -> IssueOpened:
            if maybe_sent and (found := await self._find_issue(draft.marker, job, repo)):
                log.info("github.reconciled", alert_seq=job.alert_seq, number=found["number"])
                return self._opened(job, found, repo)
            await self._ensure_labels(repo, job.labels)
            created = await self._call(lambda token: self._api.post(
                f"/repos/{repo}/issues", oauth_token=token,
                data={"title": draft.title, "body": draft.body, "labels": list(draft.labels)}))
            return self._opened(job, created, repo)

        return await self._rounds.run(job.alert_seq, job.attempts, job.maybe_sent, once)

    async def post_comment(self, job: CommentJob) -> CommentPosted | IssueFailed:
        """Post the recurrence or regression comment (or find the one already posted)."""
        if job.issue_number is None:
            return _no_issue(job.alert_seq, job.attempts, "comment on")
        text = render_comment_job(job, self._renderer)
        if isinstance(text, IssueFailed):
            return text
        marker = comment_marker_for(job.alert_seq)
        repo = self._repo_of(job.repo)
        if repo is None:
            return _no_repo(job.alert_seq, job.attempts)
        comments = f"/repos/{repo}/issues/{job.issue_number}/comments"

        async def once(maybe_sent: bool) -> CommentPosted:
            if maybe_sent and (found := await self._find_comment(comments, marker, job.at)):
                return self._commented(job, found, repo)
            created = await self._call(lambda token: self._api.post(
                comments, oauth_token=token, data={"body": text}))
            return self._commented(job, created, repo)

        return await self._rounds.run(job.alert_seq, job.attempts, job.maybe_sent, once)

    async def reopen_issue(self, job: ReopenJob) -> IssueReopened | IssueFailed:
        """Reopen the issue of a ``reopen`` decision, labels back, in one PATCH (rule 6).

        The issue is read first, for its labels (a PATCH replaces them all) and to see
        whether an earlier attempt already reopened it: then nothing is sent.
        """
        if job.issue_number is None:
            return _no_issue(job.alert_seq, job.attempts, "reopen")
        repo = self._repo_of(job.repo)
        if repo is None:
            return _no_repo(job.alert_seq, job.attempts)
        url = f"/repos/{repo}/issues/{job.issue_number}"
        done = IssueReopened(job.alert_seq, repo, job.issue_number, False)

        async def once(maybe_sent: bool) -> IssueReopened:
            issue = await self._get_issue(url)
            current = _label_names(issue)
            labels = reopen_labels(current, job.labels, job.mute_label)
            if issue.get("state") == "open" and set(labels) <= set(current):
                log.info("github.reconciled", alert_seq=job.alert_seq, number=job.issue_number,
                         action="reopen")
                return done
            await self._ensure_labels(repo, job.labels)
            await self._call(lambda token: self._api.patch(url, oauth_token=token, data={
                "state": "open", "state_reason": "reopened", "labels": list(labels)}))
            return done

        return await self._rounds.run(job.alert_seq, job.attempts, job.maybe_sent, once)

    async def close_issue(self, job: CloseJob) -> IssueClosed | IssueFailed:
        """Comment why, then close the issue as completed (rule 6): one outcome for both.

        The issue is read first: already closed (by an earlier attempt, or by a human,
        whose reason then stands), nothing is sent. The comment is posted once per
        decision, found again by its marker when an attempt may have posted it.
        """
        if job.issue_number is None:
            return _no_issue(job.cause_seq, job.attempts, "close")
        text = render_close_job(job)
        if isinstance(text, IssueFailed):
            return text
        repo = self._repo_of(job.repo)
        if repo is None:
            return _no_repo(job.cause_seq, job.attempts)
        url = f"/repos/{repo}/issues/{job.issue_number}"
        marker = close_marker_for(job.cause_seq)
        done = IssueClosed(job.cause_seq, repo, job.issue_number, False)
        commented = False  # by an attempt of this round, whatever came after it

        async def once(maybe_sent: bool) -> IssueClosed:
            nonlocal commented
            if (await self._get_issue(url)).get("state") == "closed":
                log.info("github.reconciled", alert_seq=job.cause_seq, number=job.issue_number,
                         action="close")
                return done
            if not commented and not (
                    maybe_sent and await self._find_comment(url + "/comments", marker, job.at)):
                await self._call(lambda token: self._api.post(
                    url + "/comments", oauth_token=token, data={"body": text}))
            commented = True
            await self._call(lambda token: self._api.patch(url, oauth_token=token, data={
                "state": "closed", "state_reason": "completed"}))
            return done

        return await self._rounds.run(job.cause_seq, job.attempts, job.maybe_sent, once)

    async def poll_issues(self, since: datetime | None, previous: IssuePoll | None = None,
                          repo: str | None = None) -> IssuePoll:
        """The issues of ``repo`` (default: the default repository) updated at or after
        ``since``, or "unchanged" (rule 7).

        ``previous`` is the last poll of that repo: its ETag is sent when it answered the
        same ``since``. Raises ``PollFailed`` when GitHub cannot be read; a poll is not a
        decision, so nothing is retried here: the next poll is the retry.
        """
        repo = self._repo_of(repo)
        assert repo is not None, "poll_issues needs a repository"
        etag = (previous.etag if previous is not None and previous.since == since
                and previous.repo == repo else None)
        url = f"/repos/{repo}/issues{{?state,sort,direction,since,per_page}}"
        query = {"state": "all", "sort": "updated", "direction": "desc",
                 "per_page": str(self._limits.poll_per_page)}
        if since is not None:
            query["since"] = _github_time(since)
        issues: list[Mapping[str, Any]] = []
        first_etag: str | None = None
        token = ""
        try:
            token = await self._auth.token(self._api)
            async for page in self._api.pages(url, query, oauth_token=token, etag=etag):
                if page.unchanged:
                    return IssuePoll(repo, since, page.etag, True)
                first_etag = page.etag if not issues and first_etag is None else first_etag
                issues.extend(issue for issue in page.items if isinstance(issue, dict))
        except Inconclusive:  # more pages than the bound: the newest updates, no ETag
            return IssuePoll(repo, since, None, False, tuple(issues), complete=False)
        except Exception as exc:
            if isinstance(exc, gidgethub.BadRequest) and int(exc.status_code) == 401:
                self._auth.invalidate(token)  # the next poll fetches a new installation token
            raise PollFailed(classify(exc, time.time())) from None
        return IssuePoll(repo, since, first_etag, False, tuple(issues))

    def _count_retry(self, failure: Failure) -> None:
        self._metrics.github_retries.labels(str(failure.status or "error")).inc()

    async def post_digest(self, job: DigestJob) -> IssueOpened | CommentPosted | IssueFailed:
        """Open the storm digest (labels ``OBSV_STORM_LABELS``), or comment on it; like
        every write, found again by its marker before a re-post."""
        repo = self._repo_of(job.decision.repo)
        if repo is None:
            return _no_repo(job.storm_seq, job.attempts)
        if job.decision.action == "open":
            return await self._open_digest(job, repo)
        if job.issue_number is None:
            return _no_issue(job.storm_seq, job.attempts, "comment on")
        text = render_storm_comment(job.decision, job.storm_seq)
        marker = storm_marker_for(job.storm_seq)
        comments = f"/repos/{repo}/issues/{job.issue_number}/comments"
        number = job.issue_number

        async def once(maybe_sent: bool) -> CommentPosted:
            found = maybe_sent and await self._find_comment(comments, marker, job.at)
            comment = found or await self._call(lambda token: self._api.post(
                comments, oauth_token=token, data={"body": text}))
            return CommentPosted(job.storm_seq, "", repo, number, int(comment["id"]),
                                 _url_of(comment), False)

        return await self._rounds.run(job.storm_seq, job.attempts, job.maybe_sent, once)

    async def _open_digest(self, job: DigestJob, repo: str) -> IssueOpened | IssueFailed:
        draft = render_storm_digest(job.decision, job.labels, job.storm_seq)

        async def once(maybe_sent: bool) -> IssueOpened:
            found = maybe_sent and await self._in_github_time(
                job.at, lambda bound: self._walk_issues(repo, draft.marker, bound))
            if not found:
                await self._ensure_labels(repo, job.labels)
                found = await self._call(lambda token: self._api.post(
                    f"/repos/{repo}/issues", oauth_token=token,
                    data={"title": draft.title, "body": draft.body,
                          "labels": list(draft.labels)}))
            return IssueOpened(job.storm_seq, "", repo, int(found["number"]), _url_of(found),
                               False)

        return await self._rounds.run(job.storm_seq, job.attempts, job.maybe_sent, once)

    # -- requests ---------------------------------------------------------------

    @property
    def _api(self) -> GitHubAPI:
        assert self._gh is not None, "GitHubSink.start() was not called"
        return self._gh

    async def _call(self, request: Callable[[str], Awaitable[Any]]) -> Any:
        """One request with the current token; a 401 refreshes the token once (rule 3)."""
        token = await self._auth.token(self._api)
        try:
            return await request(token)
        except gidgethub.BadRequest as exc:
            if int(exc.status_code) != 401:
                raise
            self._auth.invalidate(token)
            return await request(await self._auth.token(self._api))

    async def _ensure_labels(self, repo: str, labels: tuple[str, ...]) -> None:
        """Create missing labels in ``repo``, once per repo and set of labels. A refusal
        (4xx: e.g. a token that may create issues but not labels) is logged and not
        retried: GitHub still applies labels that exist, and a missing label must not
        stop the issue. Outages propagate."""
        if (repo, labels) in self._labels_ready:
            return
        for name in labels:
            try:
                await self._ensure_label(repo, name)
            except gidgethub.BadRequest as exc:
                if classify(exc, time.time()).retryable:
                    raise
                log.warning("github.label_not_created", repo=repo, label=name,
                            error=f"{exc.status_code} {exc}")
        self._labels_ready.add((repo, labels))

    async def _ensure_label(self, repo: str, name: str) -> None:
        async def get(token: str) -> Any:
            return await self._api.getitem(f"/repos/{repo}/labels/{{name}}",
                                           {"name": name}, oauth_token=token)

        async def create(token: str) -> Any:
            return await self._api.post(f"/repos/{repo}/labels", oauth_token=token, data={
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

    async def _find_issue(self, marker: str, job: OpenJob, repo: str) -> dict[str, Any] | None:
        """Rule 4: the issue holding ``marker``, newest first, back to the alert's time.

        No label filter: a token without push access has its labels dropped, and a
        label can be removed by hand. ``since`` (updated at or after) never hides an
        issue created after the bound, and keeps old, quiet issues out of the pages.
        """
        return await self._in_github_time(job.at, lambda bound: self._walk_issues(
            repo, marker, bound))

    async def _in_github_time(self, at: datetime,
                              walk: Callable[[datetime], Awaitable[dict[str, Any] | None]]
                              ) -> dict[str, Any] | None:
        """Rule 4's bound, ``RECONCILE_MARGIN`` before ``at``, in GitHub's time. The first
        answer of a walk may be the one that shows our clock ahead: then the walk is made
        once more from the earlier bound."""
        used: datetime | None = None
        for _ in range(2):
            bound = at - RECONCILE_MARGIN - self._api.ahead_of_github
            if used is not None and bound >= used:
                return None
            used = bound
            if (found := await walk(bound)) is not None:
                return found
        return None

    async def _walk_issues(self, repo: str, marker: str, not_before: datetime
                           ) -> dict[str, Any] | None:
        token = await self._auth.token(self._api)
        url = f"/repos/{repo}/issues{{?state,sort,direction,since,per_page}}"
        query = {"state": "all", "sort": "created", "direction": "desc",
                 "since": _github_time(not_before), "per_page": str(self._limits.per_page)}
        async for page in self._api.pages(url, query, oauth_token=token):
            for issue in page.items:
                if not isinstance(issue, dict):
                    continue
                if marker in str(issue.get("body") or "") and "pull_request" not in issue:
                    return dict(issue)
                if _created_before(issue, not_before):
                    return None
        return None

    async def _find_comment(self, url: str, marker: str, at: datetime) -> dict[str, Any] | None:
        """Rule 4 for a comment: the one holding ``marker``, updated since the decision."""
        return await self._in_github_time(at, lambda bound: self._walk_comments(
            url, marker, bound))

    async def _walk_comments(self, url: str, marker: str, not_before: datetime
                             ) -> dict[str, Any] | None:
        token = await self._auth.token(self._api)
        query = {"since": _github_time(not_before),
                 "per_page": str(self._limits.per_page)}
        async for page in self._api.pages(url + "{?since,per_page}", query, oauth_token=token):
            for comment in page.items:
                if isinstance(comment, dict) and marker in str(comment.get("body") or ""):
                    return dict(comment)
        return None

    async def _get_issue(self, url: str) -> Mapping[str, Any]:
        """One issue as GitHub has it now (a read: no write spacing, never reconciled)."""
        issue = await self._call(lambda token: self._api.getitem(url, oauth_token=token))
        if not isinstance(issue, dict):
            raise ValueError(f"GitHub's answer for {url} is not an issue")
        return issue

    def _opened(self, job: OpenJob, issue: Mapping[str, Any], repo: str) -> IssueOpened:
        return IssueOpened(job.alert_seq, job.received.alert.sentry_issue_id, repo,
                           int(issue["number"]), _url_of(issue), False)

    def _commented(self, job: CommentJob, comment: Mapping[str, Any], repo: str
                   ) -> CommentPosted:
        return CommentPosted(job.alert_seq, job.received.alert.sentry_issue_id, repo,
                             job.issue_number, int(comment["id"]), _url_of(comment), False)


def _no_repo(seq: int, attempts: int) -> IssueFailed:
    """The permanent failure of a decision that names no repository (a log written by a
    dry run without one, carried out by a GitHub sink without a default repository)."""
    return IssueFailed(seq, attempts + 1, None, "the decision names no repository and "
                       "OBSV_GITHUB_REPO is not set", False, None)


def _no_issue(seq: int, attempts: int, what: str) -> IssueFailed:
    """The permanent failure of a write on a linked issue that was opened in a dry run."""
    return IssueFailed(seq, attempts + 1, None, f"the linked issue was opened in dry run; "
                       f"there is no GitHub issue to {what}", False, None)


def _label_names(issue: Mapping[str, Any]) -> tuple[str, ...]:
    """The names of an issue's labels (GitHub sends label objects; strings are taken too)."""
    labels = issue.get("labels")
    names = []
    for label in labels if isinstance(labels, list) else ():
        name = label.get("name") if isinstance(label, dict) else label
        if isinstance(name, str):
            names.append(name)
    return tuple(names)


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
