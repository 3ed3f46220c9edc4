"""A fake GitHub over real HTTP on 127.0.0.1, for the real gidgethub client.

It implements the few endpoints obsv uses, keeps a journal of every request, checks
every create-issue and create-comment body against GitHub's own JSON schemas
(tests/samples/issues-create*.schema.json) and every update-issue body against the
fields and values GitHub documents for it (``check_update``), and plays scripted
faults: a status with headers, a delay, "created but answered 502", a request held
open until the test releases it, an answer of hundreds of megabytes or one that
trickles in forever. It can also misbehave as a whole: drop the labels of new issues
(what GitHub does for a token without push access) or put a ``next`` link on every
page.

Like GitHub, it keeps each issue's ``state``, ``state_reason``, ``closed_at`` (set on
close, cleared on reopen) and ``updated_at`` (bumped by every change, comments and
labels included); it lists issues by ``state``, ``sort``, ``direction`` and ``since``
(updated at or after); every list answer carries an ``ETag`` and a request whose
``If-None-Match`` matches gets 304 without a body. Tests act as a human on GitHub
with ``close_by_human``, ``reopen_by_human``, ``add_label``, ``remove_label``,
``delete_issue`` (410 afterwards) and ``transfer_issue`` (301 to a repository this
token cannot see, so 404 in the end).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import jsonschema
import jwt
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from obsv.github import GitHubSink, Limits, RetryPolicy
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
# "Update an issue" (PATCH /repos/{owner}/{repo}/issues/{number}): the request body's
# fields and values as GitHub's REST reference gives them.
UPDATE_FIELDS = frozenset({"title", "body", "assignee", "state", "state_reason", "milestone",
                           "labels", "assignees", "type"})
STATE_REASONS = {"open": {"reopened", None}, "closed": {"completed", "not_planned", "duplicate",
                                                        None}}
_ONE_ISSUE = re.compile(r"/issues/[0-9]+$")


def check_update(body: Any) -> str | None:
    """What is wrong with an update-issue body, or None. Stricter than GitHub in one
    way: a state reason that contradicts the state sent (``reopened`` with ``closed``)
    is refused, where GitHub may quietly ignore it; obsv never means to send one."""
    if not isinstance(body, dict):
        return "body is not an object"
    if unknown := set(body) - UPDATE_FIELDS:
        return f"unknown fields {sorted(unknown)}"
    if not isinstance(body.get("title", ""), str | int) or not isinstance(
            body.get("body", ""), str | None):
        return "title or body has the wrong type"
    state = body.get("state", "open")
    if state not in STATE_REASONS:
        return f"state {state!r} is not open or closed"
    reason = body.get("state_reason")
    if reason not in STATE_REASONS["open"] | STATE_REASONS["closed"]:
        return f"state_reason {reason!r} is not a state reason"
    if "state" in body and reason not in STATE_REASONS[state]:
        return f"state_reason {reason!r} contradicts state {state!r}"
    labels = body.get("labels", [])
    if not isinstance(labels, list) or not all(
            isinstance(label, str) or (isinstance(label, dict) and isinstance(
                label.get("name"), str)) for label in labels):
        return "labels must be a list of names or label objects"
    return None


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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
    status: int | None = None  # what the fake answered (None: no answer finished)


class Loopback:
    """A fake peer's HTTP server on 127.0.0.1; ``base_url`` is valid between ``_serve()``
    and ``close()``. FakeGitHub, FakeGitHubs and FakeSentry share it."""

    _server: TestServer | None = None

    async def _serve(self, app: web.Application, port: int | None = None) -> str:
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


class FakeGitHub(Loopback):
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
        self.gone: dict[int, int] = {}  # deleted (410) or transferred (301) issues
        self._deleted_bodies: dict[int, str | None] = {}  # for the "deleted" webhook
        self._deliveries = 0
        self._numbers = 0
        self._changes = 0  # orders issues updated within the same second
        self._changed: dict[int, int] = {}
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
        self._comment_ids = 9000
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- scripting ---------------------------------------------------------------

    def fail(self, endpoint: str, *faults: Fault) -> None:
        """Queue faults for the next requests to ``endpoint``."""
        self.faults[endpoint].extend(faults)

    def requests(self, endpoint: str) -> list[Request]:
        """Journal entries of one endpoint."""
        return [r for r in self.journal if r.endpoint == endpoint]

    def writes(self) -> list[Request]:
        """Every POST, PATCH, PUT and DELETE received, in order."""
        return [r for r in self.journal if r.method != "GET"]

    # -- a human on GitHub -------------------------------------------------------

    def issue(self, number: int) -> dict[str, Any]:
        """The live issue ``number`` (KeyError when there is none)."""
        for issue in self.issues:
            if issue["number"] == number:
                return issue
        raise KeyError(number)

    def close_by_human(self, number: int, reason: str = "completed") -> None:
        """Close the issue with a reason, as the web UI does."""
        self._set_state(self.issue(number), "closed", reason)

    def reopen_by_human(self, number: int) -> None:
        """Reopen the issue, as the web UI does."""
        self._set_state(self.issue(number), "open", "reopened")

    def add_label(self, number: int, name: str) -> None:
        """Put a label on the issue."""
        issue = self.issue(number)
        if name not in label_names(issue):
            issue["labels"].append({"name": name})
            self._touch(issue)

    def remove_label(self, number: int, name: str) -> None:
        """Take a label off the issue."""
        issue = self.issue(number)
        issue["labels"] = [label for label in issue["labels"] if label["name"] != name]
        self._touch(issue)

    def delete_issue(self, number: int) -> None:
        """Delete the issue: 410 Gone for it from now on, and gone from every list."""
        self._deleted_bodies[number] = self.issue(number)["body"]
        self.issues.remove(self.issue(number))
        self.gone[number] = 410

    def transfer_issue(self, number: int) -> None:
        """Transfer the issue to a repository this token cannot read: 301 to it, then 404."""
        self._deleted_bodies[number] = self.issue(number)["body"]
        self.issues.remove(self.issue(number))
        self.gone[number] = 301

    def webhook(self, action: str, number: int, secret: str,
                delivery_id: str | None = None) -> tuple[bytes, dict[str, str]]:
        """The ``issues`` webhook GitHub would send now about issue ``number``: its raw
        body and headers, signed with ``secret`` (``X-Hub-Signature-256``)."""
        issue = self.issue(number) if number not in self.gone else {
            "number": number, "state": "open", "state_reason": None, "closed_at": None,
            "labels": [], "body": self._deleted_bodies.get(number), "title": "gone",
            "updated_at": _now()}
        self._deliveries += 1
        body = json.dumps({
            "action": action, "issue": issue,
            "repository": {"full_name": self.repo, "name": self.repo.split("/")[1]},
            "sender": {"login": "octo-dev", "type": "User"},
        }, separators=(",", ":")).encode()
        signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        return body, {"Content-Type": "application/json", "X-GitHub-Event": "issues",
                      "X-GitHub-Delivery": delivery_id or f"delivery-{self._deliveries}",
                      "X-Hub-Signature-256": signature}

    def _set_state(self, issue: dict[str, Any], state: str, reason: str | None) -> None:
        if issue["state"] != state:
            issue["state"], issue["state_reason"] = state, reason
            issue["closed_at"] = _now() if state == "closed" else None
        self._touch(issue)

    def _touch(self, issue: dict[str, Any]) -> None:
        issue["updated_at"] = _now()
        self._changes += 1
        self._changed[issue["number"]] = self._changes

    # -- lifecycle ---------------------------------------------------------------

    async def start(self, port: int | None = None) -> str:
        app = web.Application(middlewares=[self._middleware])
        owner, name = self.repo.split("/")
        base = f"/repos/{owner}/{name}"
        app.router.add_post(base + "/issues", self._create_issue)
        app.router.add_get(base + "/issues", self._list_issues)
        app.router.add_get(base + "/issues/{number:[0-9]+}", self._get_issue)
        app.router.add_patch(base + "/issues/{number:[0-9]+}", self._update_issue)
        app.router.add_post(base + "/issues/{number}/comments", self._create_comment)
        app.router.add_get(base + "/issues/{number}/comments", self._list_comments)
        app.router.add_get(base + "/labels/{name}", self._get_label)
        app.router.add_post(base + "/labels", self._create_label)
        app.router.add_post("/app/installations/{id}/access_tokens", self._access_token)
        return await self._serve(app, port)

    # -- plumbing ----------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request,
                          handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                          ) -> web.StreamResponse:
        endpoint = _endpoint_of(request)
        raw = await request.read()
        body = json.loads(raw) if raw else None
        entry = Request(request.method, request.path, endpoint, dict(request.query),
                        dict(request.headers), body, time.monotonic(), time.time())
        self.journal.append(entry)
        self.arrived[endpoint].set()
        response = await self._answer(request, endpoint, body, handler)
        entry.status = response.status
        return response

    async def _answer(self, request: web.Request, endpoint: str, body: Any,
                      handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                      ) -> web.StreamResponse:
        if (denied := self._check_auth(request, endpoint)) is not None:
            return denied
        if endpoint in SCHEMAS:
            try:
                jsonschema.validate(body, SCHEMAS[endpoint])
            except jsonschema.ValidationError as exc:
                self.schema_errors.append(f"{endpoint}: {exc.message}")
                return _error(422, f"Invalid request: {exc.message}")
        if endpoint == "update_issue" and (problem := check_update(body)) is not None:
            self.schema_errors.append(f"{endpoint}: {problem}")
            return _error(422, f"Invalid request: {problem}")
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
        # Tests may also put issues into ``issues`` by hand: never reuse their numbers.
        self._numbers = max([self._numbers, *(i["number"] for i in self.issues)]) + 1
        number = self._numbers
        issue = {
            "id": 1000 + number, "number": number, "title": data["title"],
            "body": data.get("body"), "state": "open", "state_reason": None,
            "labels": [{"name": name} for name in data.get("labels", [])],
            "html_url": f"https://github.com/{self.repo}/issues/{number}",
            "url": f"https://api.github.com/repos/{self.repo}/issues/{number}",
            "created_at": _now(), "closed_at": None,
        }
        if self.drop_labels:
            issue["labels"] = []
        self.issues.append(issue)
        self._touch(issue)
        return web.json_response(issue, status=201)

    async def _list_issues(self, request: web.Request) -> web.Response:
        query = request.query
        label = query.get("labels")
        since = query.get("since")  # GitHub: updated at or after
        state = query.get("state", "open")  # GitHub lists open issues unless asked
        found = [i for i in self.issues
                 if (label is None or label in label_names(i))
                 and (state == "all" or i["state"] == state)
                 and (since is None or i["updated_at"] >= since)]
        if query.get("sort", "created") == "updated":
            found.sort(key=lambda i: (i["updated_at"], self._changed.get(i["number"], 0)))
        else:
            found.sort(key=lambda i: i["number"])
        if query.get("direction", "desc") == "desc":
            found.reverse()
        return self._page(request, found)

    async def _get_issue(self, request: web.Request) -> web.Response:
        issue = self._find(request)
        return issue if isinstance(issue, web.Response) else web.json_response(issue)

    async def _update_issue(self, request: web.Request) -> web.Response:
        issue = self._find(request)
        if isinstance(issue, web.Response):
            return issue
        data = await request.json()
        for key in ("title", "body"):
            if key in data:
                issue[key] = data[key]
        if "labels" in data and not self.drop_labels:
            issue["labels"] = [{"name": label if isinstance(label, str) else label["name"]}
                               for label in data["labels"]]
        state = data.get("state", issue["state"])
        default_reason = "reopened" if state == "open" else "completed"
        self._set_state(issue, state, data.get("state_reason") or default_reason)
        return web.json_response(issue)

    def _find(self, request: web.Request) -> dict[str, Any] | web.Response:
        """The issue a request names, or GitHub's answer for one that is not there."""
        number = int(request.match_info["number"])
        gone = self.gone.get(number)
        if gone == 410:
            return _error(410, "This issue was deleted")
        if gone == 301:  # GitHub redirects; the new home is out of this token's reach
            moved = request.url.with_path(f"/repos/{self.repo}-elsewhere/issues/{number}")
            return web.json_response({"message": "Moved Permanently", "url": str(moved)},
                                     status=301, headers={"Location": str(moved)})
        try:
            return self.issue(number)
        except KeyError:
            return _error(404, "Not Found")

    async def _create_comment(self, request: web.Request) -> web.Response:
        issue = self._find(request)
        if isinstance(issue, web.Response):
            return issue
        number = issue["number"]
        self._comment_ids += 1
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        comment = {
            "id": self._comment_ids, "body": (await request.json())["body"],
            "html_url": f"https://github.com/{self.repo}/issues/{number}"
                        f"#issuecomment-{self._comment_ids}",
            "created_at": now, "updated_at": now,
        }
        self.comments[number].append(comment)
        self._touch(issue)  # a comment updates its issue, as on GitHub
        return web.json_response(comment, status=201)

    async def _list_comments(self, request: web.Request) -> web.Response:
        issue = self._find(request)
        if isinstance(issue, web.Response):
            return issue
        since = request.query.get("since")  # GitHub: updated at or after
        return self._page(request, [c for c in self.comments[issue["number"]]
                                    if since is None or c["updated_at"] >= since])

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
        text = json.dumps(chunk)
        # A weak ETag, as GitHub sends on lists: a hash of the answer, so any change of
        # what it lists (state, labels, updated_at, next link) changes it.
        headers["ETag"] = 'W/"' + hashlib.sha256(
            (text + headers.get("Link", "")).encode()).hexdigest()[:40] + '"'
        if request.headers.get("If-None-Match") == headers["ETag"]:
            return web.Response(status=304, headers={"ETag": headers["ETag"]})
        return web.json_response(text=text, headers=headers)


def _endpoint_of(request: web.Request) -> str:
    path = request.path
    if path.endswith("/access_tokens"):
        return "token"
    if "/labels" in path:
        return "get_label" if request.method == "GET" else "create_label"
    if path.endswith("/comments"):
        return "create_comment" if request.method == "POST" else "list_comments"
    if _ONE_ISSUE.search(path):
        return "update_issue" if request.method == "PATCH" else "get_issue"
    if request.method == "POST":
        return "create_issue"
    # Reconciliation lists by creation; the poller by update (obsv/poller.py).
    return "poll_issues" if request.query.get("sort") == "updated" else "list_issues"


def label_names(issue: dict[str, Any]) -> list[str]:
    """The names of an issue's labels, in order."""
    return [label["name"] for label in issue["labels"]]


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"message": message}, status=status, headers=headers)


# Retry timings shrunk for tests: the rules stay, the waits are short.
FAST = RetryPolicy(waits=(0.05, 0.1), write_interval=0.02, max_inline_wait=3.0,
                   request_timeout=1.0)
LIMITS = Limits()


class FakeGitHubs(Loopback):
    """Several fake repositories behind one GitHub API address (docs/reference.md §8:
    one client posts to every route's repository). Each repo is a whole ``FakeGitHub``
    with its own issues, labels and journal; this front passes every request on, as is,
    to the fake of the repo in its path (``/repos/<owner>/<name>/...``), and the answer
    back. Paging links keep the inner fake's address: fine for tests of a few issues."""

    _HOP = frozenset({"host", "content-length", "transfer-encoding", "connection"})

    def __init__(self, *repos: str) -> None:
        self.fakes = {repo: FakeGitHub(repo=repo) for repo in repos}
        self._session: aiohttp.ClientSession | None = None

    def __getitem__(self, repo: str) -> FakeGitHub:
        return self.fakes[repo]

    @property
    def repo(self) -> str:
        """The first repository: the default one of ``settings_against``."""
        return next(iter(self.fakes))

    async def start(self) -> str:
        for fake in self.fakes.values():
            await fake.start()
        self._session = aiohttp.ClientSession()
        app = web.Application()
        app.router.add_route("*", "/repos/{owner}/{name}/{rest:.*}", self._forward)
        return await self._serve(app)

    async def close(self) -> None:
        await super().close()
        if self._session is not None:
            await self._session.close()
        for fake in self.fakes.values():
            await fake.close()

    async def _forward(self, request: web.Request) -> web.Response:
        repo = f"{request.match_info['owner']}/{request.match_info['name']}"
        fake = self.fakes.get(repo)
        if fake is None:
            return web.json_response({"message": "Not Found"}, status=404)
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in self._HOP}
        async with self._session.request(request.method, fake.base_url + request.path_qs,
                                         headers=headers, data=await request.read(),
                                         allow_redirects=False) as answer:
            body = await answer.read()
            kept = {k: v for k, v in answer.headers.items() if k.lower() not in self._HOP
                    and k.lower() != "content-encoding"}
            return web.Response(status=answer.status, body=body, headers=kept)


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


def settings_against(github: FakeGitHub | FakeGitHubs, settings: Settings,
                     **overrides: Any) -> Settings:
    """``settings`` pointed at ``github`` with its token: the real GitHub sink's settings."""
    return replace(settings, **{"github_token": "test-token", "github_repo": github.repo,
                                "github_api_url": github.base_url, "dry_run": False,
                                **overrides})


async def sink_against(github: FakeGitHub, settings: Settings, clock: Callable[[], datetime],
                       retry: RetryPolicy = FAST, limits: Limits = LIMITS,
                       metrics: Metrics | None = None) -> GitHubSink:
    """A started GitHub sink (no app around it) posting to ``github``; close it after."""
    sink = GitHubSink(settings_against(github, settings), clock, metrics or Metrics(), retry,
                      limits)
    await sink.start()
    return sink


async def start_service_against(github: FakeGitHub | FakeGitHubs, aiohttp_client: Any,
                                settings: Settings,
                                clock: FakeClock | None = None, retry: RetryPolicy = FAST,
                                **overrides: Any) -> Service:
    """The real app on loopback, posting to ``github`` through the real GitHub sink."""
    settings = settings_against(github, settings, **overrides)
    clock = clock or FakeClock(datetime.now(UTC))
    metrics = Metrics()
    sink = GitHubSink(settings, clock, metrics, retry)
    app = create_app(settings, clock=clock, sink=sink, metrics=metrics)
    client = await aiohttp_client(app)
    await wait_ready(client)
    return Service(client, settings, metrics)
