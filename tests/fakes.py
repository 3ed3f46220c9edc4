"""A fake GitHub over real HTTP on 127.0.0.1, for the real gidgethub client.

It implements the few endpoints obsv uses, keeps a journal of every request, checks
every create-issue and create-comment body against GitHub's own JSON schemas
(tests/samples/issues-create*.schema.json), and plays scripted faults: a status
with headers, a delay, "created but answered 502", a request held open until
the test releases it, an answer of hundreds of megabytes or one that trickles in
forever. It can also misbehave as a whole: drop the labels of new issues (what
GitHub does for a token without push access) or put a ``next`` link on every page.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import jsonschema
import jwt
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from obsv.github import GitHubSink, RetryPolicy
from obsv.metrics import Metrics
from obsv.server import create_app
from obsv.settings import Settings

from .conftest import SAMPLES, FakeClock, alert_body, post_signed, records_of, wait_ready

T = TypeVar("T")

SCHEMAS = {
    "create_issue": json.loads((SAMPLES / "issues-create.schema.json").read_text())[
        "request_body_schema"],
    "create_comment": json.loads((SAMPLES / "issues-create-comment.schema.json").read_text())[
        "request_body_schema"],
}


@dataclass
class Fault:
    """What the next request to an endpoint gets instead of (or after) the real answer."""

    status: int = 502
    headers: dict[str, str] = field(default_factory=dict)
    message: str = "Server Error"
    delay: float = 0.0
    apply_anyway: bool = False  # do the write, then answer with the fault
    hold: asyncio.Event | None = None  # wait for the test to release the request
    body_bytes: int | None = None  # stream a body this long (declared in Content-Length)
    endless: bool = False  # stream a body without end (chunked), as fast as it goes
    trickle: float | None = None  # send one byte every this many seconds, forever


@dataclass
class Request:
    """One request the fake received."""

    method: str
    path: str
    endpoint: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    at: float  # monotonic, for spacing
    wall: float  # epoch seconds, for reset times


class FakeGitHub:
    """The fake; ``base_url`` is valid between ``start()`` and ``close()``."""

    def __init__(self, repo: str = "acme/shop", tokens: tuple[str, ...] = ("test-token",),
                 app_id: str | None = None, app_public_key: str | None = None,
                 token_lifetime: timedelta = timedelta(hours=1)) -> None:
        self.repo = repo
        self.tokens: dict[str, datetime | None] = dict.fromkeys(tokens)
        self.app_id = app_id
        self.app_public_key = app_public_key
        self.token_lifetime = token_lifetime
        self.issues: list[dict[str, Any]] = []
        self.comments: dict[int, list[dict[str, Any]]] = defaultdict(list)
        self.labels: dict[str, dict[str, Any]] = {}
        self.journal: list[Request] = []
        self.schema_errors: list[str] = []
        self.faults: dict[str, deque[Fault]] = defaultdict(deque)
        self.arrived: dict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self.drop_labels = False  # labels on new issues silently dropped (no push access)
        self.endless_pages = False  # every list page links a next page, empty or not
        self.next_host: str | None = None  # next links point to this host instead
        self.streamed_bytes = 0  # body bytes of streamed faults written to the client
        self._server: TestServer | None = None
        self._comment_ids = 9000
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- scripting ---------------------------------------------------------------

    def fail(self, endpoint: str, *faults: Fault) -> None:
        """Queue faults for the next requests to ``endpoint``."""
        self.faults[endpoint].extend(faults)

    def requests(self, endpoint: str) -> list[Request]:
        """Journal entries of one endpoint."""
        return [r for r in self.journal if r.endpoint == endpoint]

    # -- lifecycle ---------------------------------------------------------------

    async def start(self, port: int | None = None) -> str:
        app = web.Application(middlewares=[self._middleware])
        owner, name = self.repo.split("/")
        base = f"/repos/{owner}/{name}"
        app.router.add_post(base + "/issues", self._create_issue)
        app.router.add_get(base + "/issues", self._list_issues)
        app.router.add_post(base + "/issues/{number}/comments", self._create_comment)
        app.router.add_get(base + "/issues/{number}/comments", self._list_comments)
        app.router.add_get(base + "/labels/{name}", self._get_label)
        app.router.add_post(base + "/labels", self._create_label)
        app.router.add_post("/app/installations/{id}/access_tokens", self._access_token)
        self._server = TestServer(app, host="127.0.0.1", port=port)
        await self._server.start_server()
        return self.base_url

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return str(self._server.make_url("")).rstrip("/")

    async def close(self) -> None:
        if self._server is not None:
            await self._server.close()

    # -- plumbing ----------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request,
                          handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                          ) -> web.StreamResponse:
        endpoint = _endpoint_of(request)
        raw = await request.read()
        body = json.loads(raw) if raw else None
        self.journal.append(Request(request.method, request.path, endpoint,
                                    dict(request.query), dict(request.headers), body,
                                    time.monotonic(), time.time()))
        self.arrived[endpoint].set()
        if (denied := self._check_auth(request, endpoint)) is not None:
            return denied
        if endpoint in SCHEMAS:
            try:
                jsonschema.validate(body, SCHEMAS[endpoint])
            except jsonschema.ValidationError as exc:
                self.schema_errors.append(f"{endpoint}: {exc.message}")
                return _error(422, f"Invalid request: {exc.message}")
        fault = self.faults[endpoint].popleft() if self.faults[endpoint] else None
        if fault is None:
            return await handler(request)
        # Like GitHub, finish the write even if the client hangs up meanwhile.
        written = await asyncio.shield(self._background(self._held_write(fault, handler,
                                                                         request)))
        if fault.delay:
            await asyncio.sleep(fault.delay)
        if fault.body_bytes is not None or fault.endless or fault.trickle is not None:
            return await self._stream(request, fault)
        if written is not None and 200 <= fault.status < 300:  # the real answer, odd headers
            written.headers.update(fault.headers)
            return written
        return _error(fault.status, fault.message, fault.headers)

    async def _stream(self, request: web.Request, fault: Fault) -> web.StreamResponse:
        """A hostile answer: huge, endless or trickling, until the client hangs up."""
        response = web.StreamResponse(status=fault.status, headers={
            "Content-Type": "application/json", **fault.headers})
        if fault.body_bytes is not None:
            response.content_length = fault.body_bytes
        await response.prepare(request)
        chunk = b" " * (1 if fault.trickle is not None else 1 << 16)
        left = fault.body_bytes if fault.body_bytes is not None else 1 << 40
        try:
            while left > 0:
                piece = chunk[:left]
                await response.write(piece)
                self.streamed_bytes += len(piece)
                left -= len(piece)
                await asyncio.sleep(fault.trickle or 0)
            await response.write_eof()
        except (ConnectionError, asyncio.CancelledError):
            pass  # the client hung up: what a bounded client does
        return response

    async def _held_write(self, fault: Fault,
                          handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
                          request: web.Request) -> web.StreamResponse | None:
        if fault.hold is not None:
            await fault.hold.wait()
        if fault.apply_anyway:  # the write happens; only the answer goes wrong
            return await handler(request)
        return None

    def _background(self, work: Awaitable[T]) -> asyncio.Task[T]:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _check_auth(self, request: web.Request, endpoint: str) -> web.Response | None:
        scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
        if endpoint == "token":
            try:
                claims = jwt.decode(credential, self.app_public_key, algorithms=["RS256"])
            except jwt.PyJWTError as exc:
                return _error(401, f"A JSON web token could not be decoded: {exc}")
            return None if str(claims.get("iss")) == self.app_id else _error(401, "wrong iss")
        if scheme.lower() not in ("token", "bearer") or credential not in self.tokens:
            return _error(401, "Bad credentials")
        expires = self.tokens[credential]
        if expires is not None and datetime.now(UTC) >= expires:
            return _error(401, "Bad credentials")
        return None

    # -- endpoints ---------------------------------------------------------------

    async def _create_issue(self, request: web.Request) -> web.Response:
        data = await request.json()
        number = len(self.issues) + 1
        issue = {
            "id": 1000 + number, "number": number, "title": data["title"],
            "body": data.get("body"), "state": "open",
            "labels": [{"name": name} for name in data.get("labels", [])],
            "html_url": f"https://github.com/{self.repo}/issues/{number}",
            "url": f"https://api.github.com/repos/{self.repo}/issues/{number}",
            "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        issue["updated_at"] = issue["created_at"]
        if self.drop_labels:
            issue["labels"] = []
        self.issues.append(issue)
        return web.json_response(issue, status=201)

    async def _list_issues(self, request: web.Request) -> web.Response:
        label = request.query.get("labels")
        since = request.query.get("since")  # GitHub: updated at or after
        found = [i for i in self.issues
                 if (label is None or label in {lb["name"] for lb in i["labels"]})
                 and (since is None or i.get("updated_at", i["created_at"]) >= since)]
        if request.query.get("direction", "desc") == "desc":
            found = list(reversed(found))
        return self._page(request, found)

    async def _create_comment(self, request: web.Request) -> web.Response:
        number = int(request.match_info["number"])
        if not any(i["number"] == number for i in self.issues):
            return _error(404, "Not Found")
        self._comment_ids += 1
        comment = {
            "id": self._comment_ids, "body": (await request.json())["body"],
            "html_url": f"https://github.com/{self.repo}/issues/{number}"
                        f"#issuecomment-{self._comment_ids}",
            "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        self.comments[number].append(comment)
        return web.json_response(comment, status=201)

    async def _list_comments(self, request: web.Request) -> web.Response:
        return self._page(request, self.comments[int(request.match_info["number"])])

    async def _get_label(self, request: web.Request) -> web.Response:
        label = self.labels.get(request.match_info["name"])
        return web.json_response(label) if label else _error(404, "Not Found")

    async def _create_label(self, request: web.Request) -> web.Response:
        data = await request.json()
        if data["name"] in self.labels:
            return web.json_response({"message": "Validation Failed", "errors": [
                {"resource": "Label", "code": "already_exists", "field": "name"}]}, status=422)
        self.labels[data["name"]] = data
        return web.json_response(data, status=201)

    async def _access_token(self, request: web.Request) -> web.Response:
        token = f"ghs_installation_{len(self.tokens)}"
        expires = datetime.now(UTC) + self.token_lifetime
        self.tokens[token] = expires
        return web.json_response({"token": token,
                                  "expires_at": expires.strftime("%Y-%m-%dT%H:%M:%SZ")},
                                 status=201)

    def _page(self, request: web.Request, items: list[dict[str, Any]]) -> web.Response:
        per_page = int(request.query.get("per_page", "30"))
        page = int(request.query.get("page", "1"))
        chunk = items[(page - 1) * per_page: page * per_page]
        headers = {}
        if page * per_page < len(items) or self.endless_pages:
            url = request.url.update_query(page=str(page + 1))
            if self.next_host is not None:
                url = url.with_host(self.next_host)
            headers["Link"] = f'<{url}>; rel="next"'
        return web.json_response(chunk, headers=headers)


def _endpoint_of(request: web.Request) -> str:
    path = request.path
    if path.endswith("/access_tokens"):
        return "token"
    if "/labels" in path:
        return "get_label" if request.method == "GET" else "create_label"
    if path.endswith("/comments"):
        return "create_comment" if request.method == "POST" else "list_comments"
    return "create_issue" if request.method == "POST" else "list_issues"


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"message": message}, status=status, headers=headers)


# Retry timings shrunk for tests: the rules stay, the waits are short.
FAST = RetryPolicy(waits=(0.05, 0.1), write_interval=0.02, max_inline_wait=3.0,
                   request_timeout=1.0)


class Service:
    """The real app with the real GitHub sink, against the fake."""

    def __init__(self, client: TestClient[Any, Any], settings: Settings,
                 metrics: Metrics) -> None:
        self.client, self.settings, self.metrics = client, settings, metrics

    @property
    def log(self) -> Path:
        return self.settings.event_log

    def records(self, kind: str) -> list[dict[str, Any]]:
        return records_of(self.log, kind)

    async def alert(self, event_id: str, **fields: Any) -> int:
        response = await post_signed(self.client, alert_body(event_id=event_id, **fields))
        assert response.status == 202
        seq: int = (await response.json())["seq"]
        return seq


async def start_service_against(github: FakeGitHub, aiohttp_client: Any, settings: Settings,
                                clock: FakeClock | None = None, retry: RetryPolicy = FAST,
                                **overrides: Any) -> Service:
    """The real app on loopback, posting to ``github`` through the real GitHub sink."""
    settings = replace(settings, **{"github_token": "test-token", "github_repo": github.repo,
                                    "github_api_url": github.base_url, "dry_run": False,
                                    **overrides})
    clock = clock or FakeClock(datetime.now(UTC))
    metrics = Metrics()
    sink = GitHubSink(settings, clock, metrics, retry)
    app = create_app(settings, clock=clock, sink=sink, metrics=metrics)
    client = await aiohttp_client(app)
    await wait_ready(client)
    return Service(client, settings, metrics)
