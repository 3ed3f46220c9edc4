"""The GitHub sink on an issue's fate, through the real gidgethub client against the
fake GitHub over HTTP: reopen (one PATCH, labels back, then the regression comment),
close (one comment, then one PATCH), never twice across faults and crashes, a deleted
issue failing for good, and the poll with its ETag (docs/reference.md §5 row 7-8,
§6, §7)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from obsv.core.alert import alert_from_delivery
from obsv.core.codec import parse_time
from obsv.core.events import (
    AlertDecided,
    AlertReceived,
    CommentPosted,
    Delivery,
    IssueClosed,
    IssueFailed,
    IssueOpened,
    IssueReopened,
    LinkedIssue,
    SentryIssueChanged,
    Suppressed,
    SyncDecided,
)
from obsv.core.render import code
from obsv.github import GitHubSink, IssuePoll, Limits, PollFailed, RetryPolicy
from obsv.metrics import Metrics
from obsv.settings import Settings
from obsv.sink import CloseJob, CommentJob, OpenJob, ReopenJob

from .conftest import alert_body, sentry_bytes
from .fakes import FakeGitHub, Fault, label_names, sink_against

AT = datetime.now(UTC)
CLOSED_AT = AT - timedelta(days=2)
# A generous timeout: on a busy machine a slow answer must not become a second attempt.
RETRY = RetryPolicy(waits=(0.01, 0.01), write_interval=0.0, max_inline_wait=3.0,
                    request_timeout=10.0)
LABELS = ("agent:builder",)
MUTE = "obsv:mute"
LIMITS = Limits()

SinkFactory = Callable[..., Awaitable[GitHubSink]]


@pytest.fixture
async def make_sink(settings: Settings, github: FakeGitHub) -> AsyncIterator[SinkFactory]:
    """A GitHub sink against the fake; several may be made, like process restarts."""
    sinks: list[GitHubSink] = []

    async def make(retry: RetryPolicy = RETRY, limits: Limits = LIMITS,
                   metrics: Metrics | None = None) -> GitHubSink:
        sink = await sink_against(github, settings, lambda: AT, retry, limits, metrics)
        sinks.append(sink)
        return sink

    yield make
    for sink in sinks:
        await sink.close()


def received(event_id: str = "a" * 32, **fields: Any) -> AlertReceived:
    body = alert_body(event_id=event_id, release="shop@2.3.1", environment="production",
                      **fields)
    return AlertReceived(Delivery("r", "event_alert", None, "s"), alert_from_delivery(body),
                         sentry_bytes(body).decode())


def reopen_decision(number: int) -> AlertDecided:
    return AlertDecided(9, "1117540176", "k", "reopen", "regression", LinkedIssue(2, number),
                        Suppressed(0, None, None), CLOSED_AT)


def reopen_job(number: int, **changes: Any) -> ReopenJob:
    return replace(ReopenJob(9, reopen_decision(number), number, LABELS, MUTE, 0, False),
                   **changes)


def close_job(number: int, resolution: str = "in_next_release", **changes: Any) -> CloseJob:
    cause = SentryIssueChanged(Delivery("r", "issue", None, "s"), "resolved", "1117540176",
                               "resolved", None, resolution, "{}")
    decision = SyncDecided(12, "1117540176", "close", "resolved_in_sentry")
    return replace(CloseJob(12, AT, cause, decision, number, 0, False), **changes)


async def opened_issue(sink: GitHubSink) -> int:
    """An issue obsv opened, as the open decision of alert 2 left it."""
    opened = await sink.open_issue(OpenJob(2, AT, received(), LABELS, 0, False))
    assert isinstance(opened, IssueOpened) and opened.number is not None
    return opened.number


async def closed_issue(sink: GitHubSink, github: FakeGitHub) -> int:
    number = await opened_issue(sink)
    github.close_by_human(number)
    github.journal.clear()
    return number


# -- reopen -------------------------------------------------------------------------

async def test_reopen_sends_one_patch_with_the_labels_back_then_the_comment(
        make_sink: SinkFactory, github: FakeGitHub) -> None:
    metrics = Metrics()
    sink = await make_sink(metrics=metrics)
    number = await opened_issue(sink)
    github.remove_label(number, "agent:builder")  # a human took it off, added another
    github.add_label(number, "needs-triage")
    github.close_by_human(number)
    github.journal.clear()

    reopened = await sink.reopen_issue(reopen_job(number))
    assert reopened == IssueReopened(9, "acme/shop", number, False)
    [patch] = github.requests("update_issue")
    assert patch.body == {"state": "open", "state_reason": "reopened",
                          "labels": ["needs-triage", "agent:builder"]}
    issue = github.issue(number)
    assert (issue["state"], issue["state_reason"], issue["closed_at"]) == ("open", "reopened",
                                                                           None)
    assert label_names(issue) == ["needs-triage", "agent:builder"]

    # The consumer's next step: the regression comment of the same decision.
    posted = await sink.post_comment(CommentJob(9, AT, received(), reopen_decision(number),
                                                number, 0, False))
    assert isinstance(posted, CommentPosted)
    [comment] = github.comments[number]
    text = comment["body"]
    assert "**Regressed**" in text and f"closed since {code(CLOSED_AT.isoformat())}" in text
    assert f"**Release:** {code('shop@2.3.1')}" in text and "`production`" in text
    assert "`" + "a" * 32 + "`" in text and "open the event in Sentry" in text
    assert [r.endpoint for r in github.writes()] == ["update_issue", "create_comment"]
    assert github.schema_errors == []
    assert metrics.registry.get_sample_value(
        "obsv_github_requests_total", {"endpoint": "update_issue", "status": "200"}) == 1
    assert metrics.registry.get_sample_value(
        "obsv_github_requests_total", {"endpoint": "get_issue", "status": "200"}) == 1


async def test_a_patch_is_a_write_spaced_from_the_writes_around_it(
        make_sink: SinkFactory, github: FakeGitHub) -> None:
    sink = await make_sink(retry=replace(RETRY, write_interval=0.3))
    number = await opened_issue(sink)
    await sink.close_issue(close_job(number))  # its comment, then its PATCH
    await asyncio.sleep(0.35)  # nothing written lately
    github.reopen_by_human(number)
    github.close_by_human(number)
    await sink.reopen_issue(reopen_job(number))  # a PATCH, then at once a comment
    await sink.post_comment(CommentJob(9, AT, received(), reopen_decision(number), number, 0,
                                       False))
    close_comment, close_patch, reopen_patch, comment = github.writes()[-4:]
    assert [w.endpoint for w in (close_comment, close_patch, reopen_patch, comment)] == [
        "create_comment", "update_issue", "update_issue", "create_comment"]
    assert close_patch.at - close_comment.at >= 0.29  # a PATCH waits for the last write
    assert comment.at - reopen_patch.at >= 0.29  # and the next write waits for it


async def test_reopen_never_puts_the_mute_label_back(make_sink: SinkFactory,
                                                     github: FakeGitHub) -> None:
    sink = await make_sink()
    number = await closed_issue(sink, github)
    github.add_label(number, MUTE)
    await sink.reopen_issue(reopen_job(number, labels=(*LABELS, MUTE)))
    [patch] = github.requests("update_issue")
    assert patch.body["labels"] == ["agent:builder"]


async def test_reopen_after_a_502_that_applied_is_not_patched_again(
        make_sink: SinkFactory, github: FakeGitHub) -> None:
    sink = await make_sink()
    number = await closed_issue(sink, github)
    github.fail("update_issue", Fault(502, apply_anyway=True))
    reopened = await sink.reopen_issue(reopen_job(number))
    assert isinstance(reopened, IssueReopened)
    assert len(github.requests("update_issue")) == 1  # the second attempt read, saw, stopped
    assert len(github.requests("get_issue")) == 2
    assert github.issue(number)["state"] == "open"


async def test_a_held_reopen_released_after_a_crash_is_not_patched_twice(
        make_sink: SinkFactory, github: FakeGitHub) -> None:
    first = await make_sink()
    number = await closed_issue(first, github)
    hold = asyncio.Event()
    github.fail("update_issue", Fault(200, apply_anyway=True, hold=hold))
    attempt = asyncio.create_task(first.reopen_issue(reopen_job(number)))
    await asyncio.wait_for(github.arrived["update_issue"].wait(), 10)
    attempt.cancel()  # the process dies mid-request: no answer, nothing recorded
    await first.close()
    hold.set()  # ... but GitHub did reopen it
    for _ in range(500):
        if github.issue(number)["state"] == "open":
            break
        await asyncio.sleep(0.01)

    restarted = await make_sink()
    reopened = await restarted.reopen_issue(reopen_job(number, attempts=1, maybe_sent=True))
    assert reopened == IssueReopened(9, "acme/shop", number, False)
    assert len(github.requests("update_issue")) == 1


async def test_reopen_of_an_issue_opened_in_dry_run_fails_for_good(
        make_sink: SinkFactory, github: FakeGitHub) -> None:
    sink = await make_sink()
    failed = await sink.reopen_issue(reopen_job(1, issue_number=None))
    assert isinstance(failed, IssueFailed) and failed.retryable is False
    assert "dry run" in failed.error and github.journal == []


# -- close --------------------------------------------------------------------------

async def test_close_posts_one_comment_then_one_patch(make_sink: SinkFactory,
                                                      github: FakeGitHub) -> None:
    sink = await make_sink()
    number = await opened_issue(sink)
    github.journal.clear()
    closed = await sink.close_issue(close_job(number))
    assert closed == IssueClosed(12, "acme/shop", number, False)
    assert [r.endpoint for r in github.writes()] == ["create_comment", "update_issue"]
    [comment] = github.comments[number]
    assert comment["body"].startswith("Resolved in Sentry (resolution type `in_next_release`, "
                                      "in the next release); closing.")
    assert "<!-- obsv:close-for-record=12 -->" in comment["body"]
    assert github.requests("update_issue")[0].body == {"state": "closed",
                                                       "state_reason": "completed"}
    issue = github.issue(number)
    assert (issue["state"], issue["state_reason"]) == ("closed", "completed")
    assert parse_time(issue["closed_at"]) >= parse_time(issue["created_at"])
    assert github.schema_errors == []


async def test_close_reconciles_its_comment_and_its_patch(make_sink: SinkFactory,
                                                          github: FakeGitHub) -> None:
    sink = await make_sink()
    number = await opened_issue(sink)
    github.fail("create_comment", Fault(502, apply_anyway=True))
    github.fail("update_issue", Fault(502, apply_anyway=True))
    closed = await sink.close_issue(close_job(number))
    assert isinstance(closed, IssueClosed)
    assert len(github.comments[number]) == 1
    assert len(github.requests("create_comment")) == 1  # found by its marker instead
    assert len(github.requests("update_issue")) == 1  # read closed instead
    assert github.issue(number)["state"] == "closed"


async def test_close_after_a_failed_round_finds_its_comment(make_sink: SinkFactory,
                                                            github: FakeGitHub) -> None:
    sink = await make_sink()
    number = await opened_issue(sink)
    github.fail("update_issue", Fault(503), Fault(503), Fault(503))
    failed = await sink.close_issue(close_job(number))
    assert isinstance(failed, IssueFailed) and failed.retryable and failed.attempt == 3
    assert len(github.comments[number]) == 1  # posted once, not once per attempt

    restarted = await make_sink()
    closed = await restarted.close_issue(close_job(number, attempts=3, maybe_sent=True))
    assert isinstance(closed, IssueClosed)
    assert len(github.comments[number]) == 1 and len(github.requests("create_comment")) == 1
    assert github.issue(number)["state"] == "closed"


async def test_a_rate_limited_patch_does_not_post_the_comment_again(
        make_sink: SinkFactory, github: FakeGitHub) -> None:
    # A 429 never reached GitHub's data, so it does not make the attempt "maybe sent";
    # the comment this round already posted must still not be posted again.
    sink = await make_sink()
    number = await opened_issue(sink)
    github.fail("update_issue", Fault(429, {"retry-after": "0"}, "slow down"))
    assert isinstance(await sink.close_issue(close_job(number)), IssueClosed)
    assert len(github.comments[number]) == 1


async def test_close_leaves_an_issue_a_human_closed_alone(make_sink: SinkFactory,
                                                          github: FakeGitHub) -> None:
    sink = await make_sink()
    number = await closed_issue(sink, github)
    github.reopen_by_human(number)
    github.close_by_human(number, "not_planned")
    closed = await sink.close_issue(close_job(number))
    assert isinstance(closed, IssueClosed)
    assert github.writes() == [] and github.issue(number)["state_reason"] == "not_planned"


# -- an issue that is gone ------------------------------------------------------------

def _ops(number: int) -> dict[str, Callable[[GitHubSink], Awaitable[Any]]]:
    comment = CommentJob(9, AT, received(), reopen_decision(number), number, 0, False)
    return {"reopen": lambda sink: sink.reopen_issue(reopen_job(number)),
            "close": lambda sink: sink.close_issue(close_job(number)),
            "comment": lambda sink: sink.post_comment(comment)}


@pytest.mark.parametrize("op", ["reopen", "close", "comment"])
@pytest.mark.parametrize(("gone", "status"), [("delete_issue", 410),
                                              ("transfer_issue", 404)])
async def test_an_issue_deleted_or_moved_away_is_a_permanent_failure(
        make_sink: SinkFactory, github: FakeGitHub, op: str, gone: str, status: int) -> None:
    sink = await make_sink()
    number = await closed_issue(sink, github)
    getattr(github, gone)(number)
    failed = await _ops(number)[op](sink)
    assert isinstance(failed, IssueFailed)
    assert (failed.retryable, failed.status, failed.next_attempt_at) == (False, status, None)
    assert failed.attempt == 1  # not retried: it cannot heal
    assert github.requests("update_issue") == [] and github.comments[number] == []


# -- the regression issue (row 8) -------------------------------------------------------

async def test_a_regression_issue_names_the_old_one(make_sink: SinkFactory,
                                                    github: FakeGitHub) -> None:
    sink = await make_sink()
    old = await closed_issue(sink, github)
    decision = AlertDecided(20, "1117540176", "k", "open", "regression", LinkedIssue(2, old),
                            None, CLOSED_AT)
    opened = await sink.open_issue(OpenJob(20, AT, received("b" * 32), LABELS, 0, False,
                                           decision))
    assert isinstance(opened, IssueOpened) and opened.number != old
    body = github.issue(opened.number or 0)["body"]
    assert body.startswith(f"### Regression\nRegression of #{old}, closed since ")


# -- the poll ---------------------------------------------------------------------------

async def test_the_poll_lists_then_answers_unchanged_then_sees_a_human_change(
        make_sink: SinkFactory, github: FakeGitHub) -> None:
    metrics = Metrics()
    sink = await make_sink(metrics=metrics)
    github.issues.append({  # updated long before ``since``: not listed
        "id": 1, "number": 1, "title": "old", "state": "closed", "labels": [], "body": "",
        "html_url": "x", "url": "x", "created_at": "2020-01-01T00:00:00Z",
        "updated_at": "2020-01-01T00:00:00Z"})
    first = await opened_issue(sink)
    second = await sink.open_issue(OpenJob(3, AT, received("b" * 32, issue_id="77",
                                                           hashes=["h77"]), LABELS, 0, False))
    assert isinstance(second, IssueOpened)
    since = AT - timedelta(minutes=5)

    listed = await sink.poll_issues(since)
    assert (listed.repo, listed.since, listed.unchanged, listed.complete) == (
        "acme/shop", since, False, True)
    assert [i["number"] for i in listed.issues] == [second.number, first]  # newest first
    assert listed.etag is not None
    [request] = github.requests("poll_issues")
    assert request.query == {"state": "all", "sort": "updated", "direction": "desc",
                             "since": since.strftime("%Y-%m-%dT%H:%M:%SZ"), "per_page": "100"}
    assert "If-None-Match" not in request.headers

    again = await sink.poll_issues(since, listed)
    assert again.unchanged and again.issues == () and again.etag == listed.etag
    assert github.requests("poll_issues")[-1].headers["If-None-Match"] == listed.etag
    assert github.requests("poll_issues")[-1].status == 304
    assert metrics.registry.get_sample_value(
        "obsv_github_requests_total", {"endpoint": "list_issues", "status": "304"}) == 1

    github.close_by_human(first, "not_planned")
    changed = await sink.poll_issues(since, again)
    assert not changed.unchanged and changed.etag != listed.etag
    top = changed.issues[0]
    assert (top["number"], top["state"], top["state_reason"]) == (first, "closed",
                                                                  "not_planned")


async def test_the_etag_is_only_sent_for_the_same_since(make_sink: SinkFactory,
                                                        github: FakeGitHub) -> None:
    sink = await make_sink()
    await opened_issue(sink)
    listed = await sink.poll_issues(AT - timedelta(minutes=5))
    later = await sink.poll_issues(AT - timedelta(minutes=1), listed)
    assert not later.unchanged and len(later.issues) == 1
    assert "If-None-Match" not in github.requests("poll_issues")[-1].headers


async def test_the_poll_reads_a_bounded_number_of_pages(make_sink: SinkFactory,
                                                        github: FakeGitHub) -> None:
    sink = await make_sink(limits=Limits(max_pages=2, poll_per_page=1))
    for n in range(3):
        await sink.open_issue(OpenJob(n + 2, AT, received(f"{n:032x}", issue_id=str(n),
                                                          hashes=[f"h{n}"]), LABELS, 0, False))
    poll = await sink.poll_issues(None)
    assert (poll.complete, poll.etag, len(poll.issues)) == (False, None, 2)
    assert [i["number"] for i in poll.issues] == [3, 2]  # the newest updates
    assert len(github.requests("poll_issues")) == 2
    again = await sink.poll_issues(None, poll)
    assert not again.unchanged  # no ETag: read again, never "unchanged" on a partial read


@pytest.mark.parametrize(("fault", "retryable", "hint"), [
    (Fault(503), True, None),
    (Fault(429, {"retry-after": "120"}, "slow down"), True, 120.0),
    (Fault(404), False, None),
])
async def test_a_failed_poll_says_why(make_sink: SinkFactory, github: FakeGitHub,
                                      fault: Fault, retryable: bool,
                                      hint: float | None) -> None:
    sink = await make_sink()
    github.fail("poll_issues", fault)
    with pytest.raises(PollFailed) as raised:
        await sink.poll_issues(None)
    failure = raised.value.failure
    assert (failure.status, failure.retryable) == (fault.status, retryable)
    assert failure.wait_hint == hint
    assert len(github.requests("poll_issues")) == 1  # a poll is not retried in place
    assert isinstance(await sink.poll_issues(None), IssuePoll)  # the next poll works


# -- the fake checks what it is sent ------------------------------------------------------

@pytest.mark.parametrize("body", [
    {"state": "closed", "state_reason": "reopened"},
    {"state": "open", "state_reason": "completed"},
    {"state": "shut"},
    {"state_reasons": "completed"},
    {"labels": "agent:builder"},
])
async def test_the_fake_refuses_an_update_github_documents_no_such_way(
        github: FakeGitHub, body: dict[str, Any]) -> None:
    # Without this, the "no schema errors" checks above could never fail.
    github.issues.append({"id": 1, "number": 1, "title": "t", "state": "open", "labels": [],
                          "body": "", "created_at": "2026-01-01T00:00:00Z",
                          "updated_at": "2026-01-01T00:00:00Z"})
    async with aiohttp.ClientSession() as session, session.patch(
            f"{github.base_url}/repos/acme/shop/issues/1", json=body,
            headers={"Authorization": "token test-token"}) as answer:
        assert answer.status == 422
    assert len(github.schema_errors) == 1 and github.issues[0]["state"] == "open"
