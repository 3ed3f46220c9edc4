"""One contract, every sink, for an issue's fate: the dry-run outbox and the GitHub sink
reopen and close once per decision, however often they are asked (docs/reference.md
§6 "Dry run", §7)."""

from __future__ import annotations

import stat
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn

import pytest

from obsv.core.events import (
    AlertDecided,
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
from obsv.github import RetryPolicy
from obsv.settings import Settings
from obsv.sink import CloseJob, DryRunSink, OpenJob, ReopenJob, Sink

from .fakes import FakeGitHub, sink_against
from .test_sink_contract import received

AT = datetime.now(UTC)


@dataclass
class Harness:
    sink: Sink
    reopens: Callable[[], int]  # reopens carried out so far
    closes: Callable[[], int]  # closing comments posted so far
    human_closes: Callable[[int | None], None]  # a human closes the issue (no-op in dry run)
    outbox: Path | None = None


@pytest.fixture(params=["dry_run", "github"])
async def harness(request: pytest.FixtureRequest, settings: Settings,
                  tmp_path: Path) -> AsyncIterator[Harness]:
    if request.param == "dry_run":
        outbox = tmp_path / "outbox"
        sink: Sink = DryRunSink(outbox, None, lambda: AT)
        await sink.start()

        def count(heading: str) -> Callable[[], int]:
            return lambda: sum(p.read_text().count(f"## {heading}\n") for p in outbox.glob("*"))

        yield Harness(sink, count("Reopened"), count("Closed"), lambda _: None, outbox)
        await sink.close()
        return
    github = FakeGitHub()
    await github.start()
    sink = await sink_against(github, settings, lambda: AT,
                              RetryPolicy(waits=(0.01, 0.01), write_interval=0.0))

    def human_closes(number: int | None) -> None:
        assert number is not None
        github.close_by_human(number)

    yield Harness(
        sink, lambda: len(github.requests("update_issue")) - sum(
            1 for r in github.requests("update_issue") if r.body.get("state") == "closed"),
        lambda: sum(c["body"].count("obsv:close-for-record=") for cs in github.comments.values()
                    for c in cs),
        human_closes)
    await sink.close()
    await github.close()


async def opened(harness: Harness) -> int | None:
    result = await harness.sink.open_issue(OpenJob(7, AT, received(), ("agent:builder",), 0,
                                                   False))
    assert isinstance(result, IssueOpened)
    return result.number


def reopen_job(number: int | None) -> ReopenJob:
    decision = AlertDecided(9, "1117540176", "k", "reopen", "regression", LinkedIssue(7, number),
                            Suppressed(0, None, None), AT)
    return ReopenJob(9, decision, number, ("agent:builder",), "obsv:mute", 0, False)


def close_job(number: int | None) -> CloseJob:
    cause = SentryIssueChanged(Delivery("r", "issue", None, "s"), "resolved", "1117540176",
                               "resolved", None, "now", "{}")
    return CloseJob(12, AT, cause, SyncDecided(12, "1117540176", "close", "resolved_in_sentry"),
                    number, 0, False)


async def test_reopen_is_done_once_per_decision(harness: Harness) -> None:
    number = await opened(harness)
    harness.human_closes(number)
    job = reopen_job(number)
    first = await harness.sink.reopen_issue(job)
    assert first == IssueReopened(9, first.repo, number, harness.sink.dry_run)
    again = await harness.sink.reopen_issue(replace(job, attempts=1, maybe_sent=True))
    assert again == first
    assert harness.reopens() == 1


async def test_close_is_done_once_per_decision(harness: Harness) -> None:
    number = await opened(harness)
    job = close_job(number)
    first = await harness.sink.close_issue(job)
    assert first == IssueClosed(12, first.repo, number, harness.sink.dry_run)
    again = await harness.sink.close_issue(replace(job, attempts=1, maybe_sent=True))
    assert again == first
    assert harness.closes() == 1


async def test_a_close_that_cannot_be_rendered_fails_for_good(
        harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_args: object, **_kwargs: object) -> NoReturn:
        raise RecursionError("maximum recursion depth exceeded")

    number = await opened(harness)
    monkeypatch.setattr("obsv.sink.render_close_comment", broken)
    failed = await harness.sink.close_issue(close_job(number))
    assert isinstance(failed, IssueFailed)
    assert (failed.alert_seq, failed.retryable, failed.attempt) == (12, False, 1)
    assert harness.closes() == 0


# -- the outbox itself -------------------------------------------------------------

async def test_the_outbox_shows_the_reopen_and_the_close(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    sink = DryRunSink(outbox, "acme/shop", lambda: AT)
    await sink.start()
    await sink.open_issue(OpenJob(7, AT, received(), ("agent:builder",), 0, False))
    reopened = await sink.reopen_issue(replace(reopen_job(None),
                                               labels=("agent:builder", "obsv:mute")))
    closed = await sink.close_issue(close_job(None))
    assert reopened == IssueReopened(9, "acme/shop", None, True)
    assert closed == IssueClosed(12, "acme/shop", None, True)
    path = outbox / "1117540176.md"
    text = path.read_text()
    reopen_part = text.split("## Reopened\n\n")[1].split("\n---\n")[0]
    assert "labels `agent:builder`" in reopen_part and "obsv:mute" not in reopen_part
    assert "<!-- obsv:reopen-for-alert=9 -->" in reopen_part
    close_part = text.split("## Closed\n\n")[1]
    assert close_part.startswith("Resolved in Sentry (resolution type `now`); closing.")
    assert text.index("## Reopened") < text.index("## Closed")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_an_outbox_write_that_cannot_heal_fails_for_good(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    sink = DryRunSink(outbox, None, lambda: AT)
    await sink.start()
    (outbox / "1117540176.md").mkdir()  # a directory where the issue's file goes
    for outcome in (await sink.reopen_issue(reopen_job(None)),
                    await sink.close_issue(close_job(None))):
        assert isinstance(outcome, IssueFailed)
        assert (outcome.retryable, outcome.next_attempt_at) == (False, None)
        assert "outbox write failed" in outcome.error
