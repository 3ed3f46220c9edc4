"""Reconciliation in GitHub's time: a clock ahead of GitHub's (a host clock set wrong,
a step obsv adopted and that was later undone) must not make a post twice
(obsv/github.py rule 4)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from obsv.core.codec import parse_time
from obsv.settings import Settings

from .conftest import FakeClock, wait_until
from .fakes import FakeGitHub, Fault, start_service_against


@pytest.fixture
async def github() -> AsyncIterator[FakeGitHub]:
    fake = FakeGitHub()
    await fake.start()
    yield fake
    await fake.close()


def ahead_by(hours: float) -> FakeClock:
    """Our wall clock, ``hours`` ahead of GitHub's (the fake's own answers carry the real
    time in ``Date``, like GitHub's)."""
    return FakeClock(datetime.now(UTC) + timedelta(hours=hours))


async def test_an_issue_created_before_a_502_is_found_with_our_clock_hours_ahead(
        aiohttp_client: Any, settings: Settings, github: FakeGitHub) -> None:
    service = await start_service_against(github, aiohttp_client, settings,
                                          clock=ahead_by(2))
    github.fail("create_issue", Fault(502, apply_anyway=True))
    await service.alert("a" * 32)
    await wait_until(lambda: len(service.records("issue.opened")) == 1)
    assert len(github.issues) == 1 and len(github.requests("create_issue")) == 1
    assert service.records("issue.opened")[0]["number"] == 1
    since = parse_time(github.requests("list_issues")[-1].query["since"])
    assert since <= datetime.now(UTC)  # in GitHub's time, not ours


async def test_a_comment_posted_before_a_502_is_found_with_our_clock_hours_ahead(
        aiohttp_client: Any, settings: Settings, github: FakeGitHub) -> None:
    clock = ahead_by(2)
    service = await start_service_against(github, aiohttp_client, settings, clock=clock,
                                          cooldown_seconds=60)
    await service.alert("a" * 32)
    await wait_until(lambda: len(service.records("issue.opened")) == 1)
    clock.advance(minutes=2)
    github.fail("create_comment", Fault(502, apply_anyway=True))
    await service.alert("b" * 32)
    await wait_until(lambda: len(service.records("comment.posted")) == 1)
    assert len(github.requests("create_comment")) == 1
