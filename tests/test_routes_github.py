"""Routing end to end (docs/reference.md §8): the real server and the real GitHub sink
against fake repositories behind one API address (tests/fakes.py ``FakeGitHubs``)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from obsv.core.routes import Route
from obsv.settings import Settings

from .conftest import FakeClock, wait_until
from .fakes import FakeGitHubs, Service, start_service_against

WEB = Route("acme/web", projects=("web", "web-*"), labels=("agent:builder", "frontend"))
API = Route("acme/api", projects=("api",), max_issues_per_hour=1)
T0 = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)


@pytest.fixture
async def repos() -> AsyncIterator[FakeGitHubs]:
    fakes = FakeGitHubs("acme/shop", "acme/web", "acme/api")
    await fakes.start()
    yield fakes
    await fakes.close()


def fields(n: int, slug: str) -> dict[str, Any]:
    """A distinct Sentry issue of project ``slug`` (the slug comes from the API url)."""
    return {"issue_id": str(1000 + n), "hashes": [f"{n:032x}"],
            "url": f"https://sentry.io/api/0/projects/acme/{slug}/events/{n:032x}/",
            "web_url": f"https://sentry.io/organizations/acme/issues/{1000 + n}/"}


def replay(service: Service, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "obsv", "replay", str(service.log), *args],
                          capture_output=True, text=True, timeout=60, check=False,
                          env={"PATH": "/usr/bin:/bin"})


async def test_each_alert_lands_in_its_routes_repository_with_its_labels(
        aiohttp_client: Any, settings: Settings, repos: FakeGitHubs) -> None:
    clock = FakeClock(T0)
    service = await start_service_against(repos, aiohttp_client, settings, clock=clock,
                                          routes=(WEB, API), github_poll_seconds=0)
    await service.alert("a" * 32, **fields(1, "web-admin"))
    await service.alert("b" * 32, **fields(2, "api"))
    await service.alert("c" * 32, **fields(3, "billing"))  # no route: the default repo
    await wait_until(lambda: len(service.records("issue.opened")) == 3)

    opened = {r["sentry_issue_id"]: r["repo"] for r in service.records("issue.opened")}
    assert opened == {"1001": "acme/web", "1002": "acme/api", "1003": "acme/shop"}
    decided = {r["sentry_issue_id"]: r["repo"] for r in service.records("alert.decided")}
    assert decided == opened
    assert [len(repos[r].issues) for r in ("acme/web", "acme/api", "acme/shop")] == [1, 1, 1]
    [web] = repos["acme/web"].issues
    assert [label["name"] for label in web["labels"]] == ["agent:builder", "frontend"]
    # labels are ensured in each repository, the route's own ones where it has them
    assert set(repos["acme/web"].labels) == {"agent:builder", "frontend"}
    assert set(repos["acme/api"].labels) == {"agent:builder"}
    assert set(repos["acme/shop"].labels) == {"agent:builder"}
    [applied] = service.records("config.applied")
    assert [r["repo"] for r in applied["policy"]["routes"]] == ["acme/web", "acme/api"]

    verified = replay(service, "--verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    rows = [orjson.loads(line) for line in replay(service, "--json").stdout.splitlines()]
    assert {row["sentry_issue_id"]: row["repo"] for row in rows} == opened


async def test_a_linked_issue_keeps_its_repository_when_routes_change(
        aiohttp_client: Any, settings: Settings, repos: FakeGitHubs) -> None:
    clock = FakeClock(T0)
    service = await start_service_against(repos, aiohttp_client, settings, clock=clock,
                                          routes=(WEB,), cooldown_seconds=60,
                                          github_poll_seconds=0)
    await service.alert("a" * 32, **fields(1, "web"))
    await wait_until(lambda: len(service.records("issue.opened")) == 1)
    await service.client.close()

    # restarted with the web project routed elsewhere
    clock.advance(minutes=5)
    moved = Route("acme/api", projects=("web",))
    service = await start_service_against(repos, aiohttp_client, settings, clock=clock,
                                          routes=(moved,), cooldown_seconds=60,
                                          github_poll_seconds=0)
    await service.alert("b" * 32, **fields(1, "web"))  # the same Sentry issue again
    await service.alert("c" * 32, **fields(2, "web"))  # a new one follows the new route
    await wait_until(lambda: len(service.records("comment.posted")) == 1
                     and len(service.records("issue.opened")) == 2)

    [comment] = service.records("comment.posted")
    assert comment["repo"] == "acme/web" and comment["number"] == 1
    assert len(repos["acme/web"].comments[1]) == 1
    assert [r["repo"] for r in service.records("issue.opened")] == ["acme/web", "acme/api"]
    assert len(service.records("config.applied")) == 2
    verified = replay(service, "--verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr


async def test_a_routes_storm_budget_is_its_own(
        aiohttp_client: Any, settings: Settings, repos: FakeGitHubs) -> None:
    service = await start_service_against(repos, aiohttp_client, settings,
                                          clock=FakeClock(T0), routes=(WEB, API),
                                          max_issues_per_hour=2, github_poll_seconds=0)
    for n in range(3):  # the api route's budget is 1 an hour
        await service.alert(f"{n:032x}", **fields(n, "api"))
    for n in range(3, 6):  # everything else shares the global 2
        await service.alert(f"{n:032x}", **fields(n, "billing"))
    await wait_until(lambda: len(service.records("alert.decided")) == 6)
    await wait_until(lambda: len(service.records("issue.opened")) == 3)

    reasons = [(r["repo"], r["reason"]) for r in service.records("alert.decided")]
    assert reasons == [("acme/api", "new_issue"), ("acme/api", "storm_budget"),
                       ("acme/api", "storm_budget"), ("acme/shop", "new_issue"),
                       ("acme/shop", "new_issue"), ("acme/shop", "storm_budget")]
    # Each repository's storm opens its own digest (docs/reference.md §5), beside the
    # issues its budget allowed.
    await wait_until(lambda: len(service.records("issue.opened")) == 5)
    digests = {r["repo"] for r in service.records("storm.decided") if r["action"] == "open"}
    assert digests == {"acme/api", "acme/shop"}
    assert len(repos["acme/api"].issues) == 2 and len(repos["acme/shop"].issues) == 3


async def test_unrouted_alerts_are_suppressed_when_github_has_no_default_repo(
        aiohttp_client: Any, settings: Settings, repos: FakeGitHubs) -> None:
    service = await start_service_against(repos, aiohttp_client, settings,
                                          clock=FakeClock(T0), routes=(WEB,),
                                          github_repo=None, github_poll_seconds=0)
    await service.alert("a" * 32, **fields(1, "billing"))
    await service.alert("b" * 32, **fields(2, "web"))
    await wait_until(lambda: len(service.records("issue.opened")) == 1)
    assert [(r["reason"], r.get("repo")) for r in service.records("alert.decided")] == [
        ("unrouted", None), ("new_issue", "acme/web")]
    assert repos["acme/shop"].journal == []  # not even its labels
