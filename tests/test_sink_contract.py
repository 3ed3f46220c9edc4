"""One contract, every sink: the dry-run outbox and the GitHub sink behave alike."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import pytest

from obsv.core.alert import alert_from_delivery
from obsv.core.events import (
    AlertDecided,
    AlertReceived,
    CommentPosted,
    Delivery,
    IssueFailed,
    IssueOpened,
    LinkedIssue,
    Suppressed,
)
from obsv.github import GitHubSink, RetryPolicy
from obsv.metrics import Metrics
from obsv.settings import Settings
from obsv.sink import CommentJob, DryRunSink, OpenJob, Sink

from .conftest import alert_body, sentry_bytes
from .fakes import FakeGitHub

AT = datetime.now(UTC)


def received(event_id: str = "a" * 32) -> AlertReceived:
    body = alert_body(event_id=event_id)
    return AlertReceived(Delivery("r", "event_alert", None, "s"), alert_from_delivery(body),
                         sentry_bytes(body).decode())


class Harness:
    def __init__(self, sink: Sink, count_issues: Any, count_comments: Any) -> None:
        self.sink, self.count_issues, self.count_comments = sink, count_issues, count_comments


@pytest.fixture(params=["dry_run", "github"])
async def harness(request: pytest.FixtureRequest, settings: Settings,
                  tmp_path: Path) -> AsyncIterator[Harness]:
    if request.param == "dry_run":
        outbox = tmp_path / "outbox"
        sink: Sink = DryRunSink(outbox, None, lambda: AT)
        await sink.start()
        yield Harness(
            sink, lambda: len(list(outbox.glob("*.md"))),
            lambda: sum(p.read_text().count("obsv:comment-for-alert=") for p in outbox.glob("*")))
        await sink.close()
        return
    github = FakeGitHub()
    await github.start()
    gh_settings = replace(settings, github_token="test-token", github_repo="acme/shop",
                          github_api_url=github.base_url, dry_run=False)
    sink = GitHubSink(gh_settings, lambda: AT, Metrics(),
                      RetryPolicy(waits=(0.01, 0.01), write_interval=0.0))
    await sink.start()
    yield Harness(sink, lambda: len(github.issues),
                  lambda: sum(len(c) for c in github.comments.values()))
    await sink.close()
    await github.close()


async def test_open_is_idempotent_when_maybe_sent(harness: Harness) -> None:
    job = OpenJob(7, AT, received(), ("agent:builder",), 0, False)
    first = await harness.sink.open_issue(job)
    assert isinstance(first, IssueOpened) and first.alert_seq == 7
    assert first.dry_run == harness.sink.dry_run
    again = await harness.sink.open_issue(replace(job, attempts=1, maybe_sent=True))
    assert isinstance(again, IssueOpened)
    assert (again.number, again.url) == (first.number, first.url)
    assert harness.count_issues() == 1


async def test_comment_is_posted_once_per_decision(harness: Harness) -> None:
    opened = await harness.sink.open_issue(
        OpenJob(7, AT, received(), ("agent:builder",), 0, False))
    assert isinstance(opened, IssueOpened)
    decision = AlertDecided(9, "1117540176", "k", "comment", "recurrence",
                            LinkedIssue(7, opened.number), Suppressed(2, AT, AT))
    job = CommentJob(9, AT, received("b" * 32), decision, opened.number, 0, False)
    posted = await harness.sink.post_comment(job)
    assert isinstance(posted, CommentPosted) and posted.alert_seq == 9
    again = await harness.sink.post_comment(replace(job, attempts=1, maybe_sent=True))
    assert isinstance(again, CommentPosted) and again.comment_id == posted.comment_id
    assert harness.count_comments() == 1


async def test_a_payload_that_cannot_be_rendered_fails_for_good(
        harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    # The renderer is total (tests/test_render.py); this is the net below it, for a bug
    # it may still have: the same payload would raise again, so retrying cannot help.
    def broken(*_args: object, **_kwargs: object) -> NoReturn:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr("obsv.templates.render_issue", broken)
    monkeypatch.setattr("obsv.templates.render_comment", broken)
    failed = await harness.sink.open_issue(OpenJob(7, AT, received(), ("agent:builder",), 0,
                                                   False))
    assert isinstance(failed, IssueFailed)
    assert (failed.retryable, failed.next_attempt_at, failed.attempt) == (False, None, 1)
    assert "RecursionError" in failed.error
    decision = AlertDecided(9, "1117540176", "k", "comment", "recurrence", LinkedIssue(7, 1),
                            Suppressed(2, AT, AT))
    failed = await harness.sink.post_comment(CommentJob(9, AT, received("b" * 32), decision, 1,
                                                        0, False))
    assert isinstance(failed, IssueFailed) and failed.retryable is False
    assert harness.count_issues() == 0 and harness.count_comments() == 0
