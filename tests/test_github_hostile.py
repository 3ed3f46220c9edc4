"""A hostile GitHub, through the real gidgethub client over loopback: absurd waits,
labels that never stick, colliding markers, giant, endless and trickling answers.
Whatever it does, every wait is capped, nothing is posted twice, and what cannot
work is recorded as a failure instead of looping (docs/reference.md §6)."""

from __future__ import annotations

import email.utils
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from obsv.core.codec import parse_time
from obsv.github import Limits
from obsv.settings import Settings

from .conftest import FakeClock, post_signed, wait_until
from .fakes import FakeGitHub, Fault, Service, start_service_against
from .hostile import deep_breadcrumb_body

NOW = datetime(2026, 6, 1, tzinfo=UTC)
AN_HOUR_LATER = "2026-06-01T01:00:00.000000Z"
MiB = 1 << 20


@pytest.fixture
def start_service(aiohttp_client: Any, settings: Settings, github: FakeGitHub) -> Any:
    async def start(**options: Any) -> Service:
        return await start_service_against(github, aiohttp_client, settings, **options)
    return start


def http_date(epoch: float) -> str:
    return email.utils.formatdate(epoch, usegmt=True)


# -- item 2: every wait capped at an hour ------------------------------------------

@pytest.mark.parametrize("headers", [
    {"retry-after": "1e10"},
    {"retry-after": "inf"},
    {"retry-after": "99999999999999999999999"},
    {"retry-after": "Fri, 01 Jun 2343 00:00:00 GMT"},
    {"x-ratelimit-remaining": "0", "x-ratelimit-limit": "5000",
     "x-ratelimit-reset": str(int(time.time() + 1e10))},
], ids=["1e10", "inf", "huge-int", "http-date-2343", "reset-far-future"])
async def test_a_huge_wait_is_capped_at_an_hour(start_service: Any, github: FakeGitHub,
                                                headers: dict[str, str]) -> None:
    github.fail("create_issue", Fault(403, headers, "You have exceeded a rate limit"))
    service = await start_service(clock=FakeClock(NOW))
    await service.alert("a" * 32)
    await wait_until(lambda: len(service.records("issue.failed")) == 1)
    [failed] = service.records("issue.failed")
    assert (failed["retryable"], failed["status"]) == (True, 403)
    assert failed["next_attempt_at"] == AN_HOUR_LATER
    assert len(github.requests("create_issue")) == 1


@pytest.mark.parametrize("retry_after", ["soon", "nan", "-5", ""])
async def test_a_malformed_retry_after_means_the_default_backoff(
        start_service: Any, github: FakeGitHub, retry_after: str) -> None:
    # A 403 carrying Retry-After is a rate limit even when the value makes no sense.
    github.fail("create_issue", Fault(403, {"retry-after": retry_after}, "slow down"))
    service = await start_service()
    await service.alert("a" * 32)
    await wait_until(lambda: len(service.records("issue.opened")) == 1)
    assert len(github.requests("create_issue")) == 2 and len(github.issues) == 1
    assert service.records("issue.failed") == []


async def test_a_403_with_an_http_date_is_a_rate_limit(start_service: Any,
                                                      github: FakeGitHub) -> None:
    until = int(time.time()) + 2
    github.fail("create_issue", Fault(403, {"retry-after": http_date(until)}, "slow down"))
    service = await start_service()
    await service.alert("a" * 32)
    await wait_until(lambda: len(service.records("issue.opened")) == 1)
    first, second = github.requests("create_issue")
    assert first.wall < until <= second.wall + 0.01  # not before the date GitHub gave
    assert service.records("issue.failed") == [] and len(github.issues) == 1


@pytest.mark.parametrize("reset", ["nan", "inf", "1e30", "soon", "-1"])
async def test_a_bad_ratelimit_reset_is_still_a_rate_limit(start_service: Any,
                                                           github: FakeGitHub,
                                                           reset: str) -> None:
    github.fail("create_issue", Fault(403, {"x-ratelimit-remaining": "0",
                                            "x-ratelimit-limit": "5000",
                                            "x-ratelimit-reset": reset},
                                      "API rate limit exceeded"))
    service = await start_service()
    await service.alert("a" * 32)
    await wait_until(lambda: len(service.records("issue.opened")) == 1)
    assert len(github.requests("create_issue")) == 2 and len(github.issues) == 1
    # A rate limit never reached GitHub's data: nothing to reconcile.
    assert github.requests("list_issues") == []


async def test_a_bad_ratelimit_header_on_success_is_not_a_failure(
        start_service: Any, github: FakeGitHub) -> None:
    github.fail("create_issue", Fault(201, {"x-ratelimit-remaining": "4999",
                                            "x-ratelimit-limit": "5000",
                                            "x-ratelimit-reset": "nan"},
                                      apply_anyway=True))
    service = await start_service()
    await service.alert("a" * 32)
    await wait_until(lambda: len(service.records("issue.opened")) == 1
                     or len(service.records("issue.failed")) == 1)
    assert len(github.issues) == 1
    assert service.records("issue.opened")[0]["number"] == 1
    assert github.requests("list_issues") == []  # a success needs no reconciling


# -- item 3: reconciliation without labels ----------------------------------------

async def test_created_but_502_is_found_when_labels_did_not_stick(
        start_service: Any, github: FakeGitHub) -> None:
    github.drop_labels = True  # a token without push access: GitHub drops the labels
    github.fail("create_issue", Fault(502, apply_anyway=True))
    service = await start_service()
    await service.alert("a" * 32)
    await wait_until(lambda: len(service.records("issue.opened")) == 1)
    assert len(github.issues) == 1 and len(github.requests("create_issue")) == 1
    assert service.records("issue.opened")[0]["number"] == 1
    [listing] = github.requests("list_issues")
    assert "labels" not in listing.query
    assert (listing.query["sort"], listing.query["direction"]) == ("created", "desc")
    assert parse_time(listing.query["since"]) <= datetime.now(UTC)


async def test_reconciliation_looks_no_further_back_than_the_alert(
        start_service: Any, github: FakeGitHub) -> None:
    # Older issues of the same Sentry issue are history, not this decision's post.
    clock = FakeClock(datetime.now(UTC) + timedelta(hours=2))
    service = await start_service(clock=clock)
    github.issues.append({
        "id": 1, "number": 1, "title": "old", "state": "closed", "labels": [],
        "body": "<!-- obsv:sentry-issue=1117540176 -->", "html_url": "x", "url": "x",
        "created_at": "2020-01-01T00:00:00Z", "updated_at": "2020-01-01T00:00:00Z"})
    github.fail("create_issue", Fault(502))
    await service.alert("a" * 32)
    await wait_until(lambda: len(service.records("issue.opened")) == 1)
    assert service.records("issue.opened")[0]["number"] == 2


# -- item 4: markers that cannot collide ------------------------------------------

async def test_a_similar_sentry_id_is_not_adopted_after_a_500(start_service: Any,
                                                              github: FakeGitHub) -> None:
    service = await start_service()
    await service.alert("a" * 32, issue_id="web/checkout", hashes=["h1"])
    await wait_until(lambda: len(service.records("issue.opened")) == 1)
    github.fail("create_issue", Fault(500))
    await service.alert("b" * 32, issue_id="web:checkout", hashes=["h2"])
    await wait_until(lambda: len(service.records("issue.opened")) == 2)
    opened = {r["sentry_issue_id"]: r["number"] for r in service.records("issue.opened")}
    assert opened == {"web/checkout": 1, "web:checkout": 2}
    assert len(github.issues) == 2


# -- item 5: an event that cannot be rendered today --------------------------------

async def test_a_thousand_deep_breadcrumb_opens_one_issue(start_service: Any,
                                                          github: FakeGitHub) -> None:
    service = await start_service()
    response = await post_signed(service.client, deep_breadcrumb_body("a" * 32))
    assert response.status == 202
    seq = (await response.json())["seq"]
    await wait_until(lambda: service.records("issue.opened") != []
                     or service.records("issue.failed") != [])
    assert [r["alert_seq"] for r in service.records("issue.opened")] == [seq]
    assert "### Breadcrumbs" in github.issues[0]["body"]


# -- item 9: answers too big, pages without end, replies that trickle --------------

async def test_a_giant_answer_to_a_create_is_not_read_and_is_reconciled(
        start_service: Any, github: FakeGitHub) -> None:
    github.fail("create_issue", Fault(201, body_bytes=400 * MiB, apply_anyway=True))
    service = await start_service()
    await service.alert("a" * 32)
    await wait_until(lambda: len(service.records("issue.opened")) == 1)
    assert len(github.issues) == 1 and len(github.requests("create_issue")) == 1
    assert service.records("issue.opened")[0]["number"] == 1
    assert github.streamed_bytes < 64 * MiB  # the rest was never read (nor sent)


async def test_an_endless_list_answer_is_cut_and_recorded(start_service: Any,
                                                          github: FakeGitHub) -> None:
    github.fail("create_issue", Fault(502, apply_anyway=True))
    github.fail("list_issues", *[Fault(200, endless=True) for _ in range(3)])
    service = await start_service()
    await service.alert("a" * 32)
    await wait_until(lambda: len(service.records("issue.failed")) == 1, timeout=20)
    [failed] = service.records("issue.failed")
    assert failed["retryable"] is True and failed["next_attempt_at"] is not None
    assert "larger than" in failed["error"]
    assert len(github.requests("create_issue")) == 1  # never posted again blind
    assert github.streamed_bytes < 3 * 64 * MiB


async def test_a_list_without_end_is_bounded_and_recorded(start_service: Any,
                                                          github: FakeGitHub) -> None:
    github.endless_pages = True
    github.fail("create_issue", Fault(502))  # maybe sent: look before posting again
    service = await start_service()
    await service.alert("a" * 32)
    await wait_until(lambda: len(service.records("issue.failed")) == 1)
    [failed] = service.records("issue.failed")
    assert failed["retryable"] is True and failed["next_attempt_at"] is not None
    assert "pages" in failed["error"]
    assert len(github.requests("create_issue")) == 1  # "not found" is not "post again"
    # One walk of the bounded length, and no second walk in the same round.
    assert len(github.requests("list_issues")) == Limits().max_pages


async def test_a_next_link_to_another_host_is_not_followed(start_service: Any,
                                                            github: FakeGitHub) -> None:
    github.endless_pages, github.next_host = True, "198.51.100.7"  # would get our token
    github.fail("create_issue", Fault(502))
    service = await start_service()
    await service.alert("a" * 32)
    await wait_until(lambda: len(service.records("issue.failed")) == 1)
    [failed] = service.records("issue.failed")
    assert failed["retryable"] is True and "another host" in failed["error"]
    assert len(github.requests("list_issues")) == 1
    assert len(github.requests("create_issue")) == 1


async def test_a_reply_that_trickles_forever_is_cut_by_the_request_timeout(
        start_service: Any, github: FakeGitHub) -> None:
    github.fail("create_issue", Fault(201, trickle=0.05))
    service = await start_service()
    await service.alert("a" * 32)
    await wait_until(lambda: len(service.records("issue.opened")) == 1, timeout=20)
    assert len(github.issues) == 1 and len(github.requests("create_issue")) == 2
    assert len(github.requests("list_issues")) == 1  # a timeout may have posted: looked
