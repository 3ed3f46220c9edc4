"""Resolve in Sentry (docs/reference.md §7): the Sentry sink against the fake Sentry API
over HTTP. One PUT with the bearer token; 5xx, 429 and timeouts retried in rounds like
GitHub writes; other 4xx, a missing token or an unknown organization fail for good."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from obsv.core.events import IssueFailed, SentryResolved, SyncDecided
from obsv.retry import RetryPolicy
from obsv.sentryapi import SentrySink, sentry_org
from obsv.sink import ResolveJob

from .fake_sentry import FakeSentry, SentryFault

NOW = datetime(2026, 6, 1, tzinfo=UTC)
# A generous timeout, so a busy machine never turns one request into two; the test of
# timeouts shortens it.
RETRY = RetryPolicy(waits=(0.01, 0.01), max_inline_wait=3.0, request_timeout=10.0)
WEB_URL = "https://sentry.io/organizations/test-org/issues/1117540176/events/e48/"
ORG = "test-org"

SinkFactory = Callable[..., Awaitable[SentrySink]]


@pytest.fixture
async def sentry() -> AsyncIterator[FakeSentry]:
    fake = FakeSentry()
    await fake.start()
    yield fake
    await fake.close()


@pytest.fixture
async def make_sink(sentry: FakeSentry) -> AsyncIterator[SinkFactory]:
    sinks: list[SentrySink] = []

    async def make(token: str | None = "sentry-api-token",
                   retry: RetryPolicy = RETRY) -> SentrySink:
        sink = SentrySink(sentry.base_url, token, lambda: NOW, retry)
        await sink.start()
        sinks.append(sink)
        return sink

    yield make
    for sink in sinks:
        await sink.close()


def job(issue_id: str = "1117540176", **changes: Any) -> ResolveJob:
    decision = SyncDecided(30, issue_id, "resolve_sentry", "closed_on_github")
    return replace(ResolveJob(30, decision, ORG, 0, False), **changes)


async def test_one_put_with_the_bearer_token(make_sink: SinkFactory,
                                             sentry: FakeSentry) -> None:
    sink = await make_sink()
    assert await sink.resolve(job()) == SentryResolved(30, "1117540176")
    [put] = sentry.updates()
    assert (put.org, put.issue_id, put.body) == ("test-org", "1117540176",
                                                 {"status": "resolved"})
    assert put.authorization == "Bearer sentry-api-token"
    assert sentry.status == {"1117540176": "resolved"}


async def test_5xx_is_retried_within_the_round(make_sink: SinkFactory,
                                               sentry: FakeSentry) -> None:
    sentry.faults.extend([SentryFault(502), SentryFault(503)])
    sink = await make_sink()
    assert isinstance(await sink.resolve(job()), SentryResolved)
    assert len(sentry.updates()) == 3 and sentry.status["1117540176"] == "resolved"


async def test_a_repeat_after_a_lost_answer_is_harmless(make_sink: SinkFactory,
                                                        sentry: FakeSentry) -> None:
    # Resolved, but the answer was a 502: the repeat sets the same status again
    # (rule 2), and the decision still gets exactly one outcome.
    sentry.faults.append(SentryFault(502, apply_anyway=True))
    sink = await make_sink()
    assert isinstance(await sink.resolve(job(maybe_sent=True)), SentryResolved)
    assert [u.body for u in sentry.updates()] == [{"status": "resolved"}] * 2


async def test_a_failed_round_is_retryable_with_the_next_round_time(
        make_sink: SinkFactory, sentry: FakeSentry) -> None:
    sentry.faults.extend([SentryFault(503)] * 3)
    sink = await make_sink()
    failed = await sink.resolve(job())
    assert isinstance(failed, IssueFailed)
    assert (failed.alert_seq, failed.attempt, failed.status, failed.retryable) == (30, 3, 503,
                                                                                  True)
    assert failed.next_attempt_at == NOW + timedelta(seconds=30)
    assert "1117540176" not in sentry.status


async def test_a_long_retry_after_ends_the_round_with_its_time(
        make_sink: SinkFactory, sentry: FakeSentry) -> None:
    sentry.faults.append(SentryFault(429, headers={"Retry-After": "600"}))
    sink = await make_sink()
    failed = await sink.resolve(job())
    assert isinstance(failed, IssueFailed) and failed.retryable and failed.status == 429
    assert failed.next_attempt_at == NOW + timedelta(seconds=600)
    assert len(sentry.updates()) == 1


async def test_a_slow_sentry_times_out_and_is_retryable(make_sink: SinkFactory,
                                                        sentry: FakeSentry) -> None:
    sentry.faults.extend([SentryFault(200, apply_anyway=True, delay=2.0)] * 3)
    sink = await make_sink(retry=replace(RETRY, request_timeout=0.3))
    failed = await sink.resolve(job())
    assert isinstance(failed, IssueFailed)
    assert (failed.retryable, failed.error, failed.attempt) == (True, "timed out", 3)


@pytest.mark.parametrize("status", [400, 403, 404])
async def test_other_4xx_are_permanent(make_sink: SinkFactory, sentry: FakeSentry,
                                       status: int) -> None:
    sentry.faults.append(SentryFault(status))
    sink = await make_sink()
    failed = await sink.resolve(job())
    assert isinstance(failed, IssueFailed)
    assert (failed.retryable, failed.status, failed.next_attempt_at, failed.attempt) == (
        False, status, None, 1)
    assert len(sentry.updates()) == 1


async def test_a_wrong_token_is_permanent_and_never_logged(
        make_sink: SinkFactory, sentry: FakeSentry, capfd: pytest.CaptureFixture[str]) -> None:
    sink = await make_sink(token="wrong-token-123")
    failed = await sink.resolve(job())
    assert isinstance(failed, IssueFailed) and (failed.status, failed.retryable) == (401, False)
    out, err = capfd.readouterr()
    assert "wrong-token-123" not in out + err + failed.error


async def test_no_token_is_permanent_and_names_the_setting(make_sink: SinkFactory,
                                                           sentry: FakeSentry) -> None:
    sink = await make_sink(token=None)
    failed = await sink.resolve(job())
    assert isinstance(failed, IssueFailed) and failed.retryable is False
    assert "OBSV_SENTRY_API_TOKEN" in failed.error and sentry.journal == []


async def test_an_issue_without_an_organization_is_permanent(make_sink: SinkFactory,
                                                             sentry: FakeSentry) -> None:
    sink = await make_sink()
    failed = await sink.resolve(job(org=None))
    assert isinstance(failed, IssueFailed)
    assert (failed.retryable, failed.status, failed.attempt) == (False, None, 1)
    assert "organization" in failed.error and sentry.journal == []


async def test_the_api_url_names_the_organization_when_the_link_does_not(
        make_sink: SinkFactory, sentry: FakeSentry) -> None:
    sink = await make_sink()
    resolved = await sink.resolve(job(
        org=None, api_url="https://sentry.io/api/0/projects/acme/web/events/e48/"))
    assert isinstance(resolved, SentryResolved)
    assert sentry.updates()[0].org == "acme"


async def test_ids_from_payloads_cannot_reach_another_path(make_sink: SinkFactory,
                                                           sentry: FakeSentry) -> None:
    sink = await make_sink()
    await sink.resolve(job("../../../projects/x?status=ignored#"))
    # Quoted whole, the id stays one path segment of the issue's URL, whatever Sentry
    # then answers.
    [put] = sentry.journal
    assert put.path == ("/api/0/organizations/test-org/issues/"
                        "..%2F..%2F..%2Fprojects%2Fx%3Fstatus=ignored%23/")


@pytest.mark.parametrize(("web_url", "api_url", "org"), [
    (WEB_URL, None, "test-org"),
    ("https://acme.sentry.io/issues/4509912345/", None, "acme"),
    ("https://acme.us.sentry.io/issues/4509912345/?project=1", None, "acme"),
    (None, "https://sentry.io/api/0/projects/shop/web/events/e/", "shop"),
    ("https://sentry.example.com/issues/9/", "https://x/api/0/projects/shop/web/", "shop"),
    ("https://sentry.example.com/issues/9/", None, None),
    (None, None, None),
])
def test_the_organization_of_an_issue(web_url: str | None, api_url: str | None,
                                      org: str | None) -> None:
    assert sentry_org(web_url, api_url) == org
