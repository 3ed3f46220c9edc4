"""The issue lifecycle end to end: the real server, the real GitHub sink against the fake
GitHub over HTTP, GitHub's webhooks (or polls) and Sentry's issue deliveries coming back,
and what obsv then does on GitHub and records in the log (docs/reference.md §5 and §7)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from obsv.github import GitHubSink
from obsv.metrics import Metrics
from obsv.sentryapi import SentrySink
from obsv.server import CONSUMER, EVENTLOG, create_app
from obsv.settings import Settings

from .conftest import (
    FakeClock,
    alert_body,
    post_signed,
    records_of,
    sample,
    wait_ready,
    wait_until,
)
from .fake_sentry import FakeSentry
from .fakes import FAST, FakeGitHub, Service, settings_against

HOOK_SECRET = "gh-webhook-secret"
SENTRY_TOKEN = "sentry-api-token"
ISSUE_ID = "1117540176"  # the Sentry issue of alert_body()


@pytest.fixture
async def sentry() -> AsyncIterator[FakeSentry]:
    fake = FakeSentry(SENTRY_TOKEN)
    await fake.start()
    yield fake
    await fake.close()


class Story(Service):
    """The service, plus what comes back from GitHub and Sentry."""

    def __init__(self, service: Service, github: FakeGitHub, clock: FakeClock) -> None:
        super().__init__(service.client, service.settings, service.metrics)
        self.github, self.clock = github, clock

    async def github_hook(self, action: str, number: int, delivery_id: str | None = None,
                          status: int = 202) -> None:
        body, headers = self.github.webhook(action, number, HOOK_SECRET, delivery_id)
        response = await self.client.post("/webhooks/github", data=body, headers=headers)
        assert response.status == status, await response.text()
        await self.settled()

    async def sentry_issue(self, fixture: str, **issue: Any) -> None:
        body = sample(fixture)
        body["data"]["issue"].update({"id": ISSUE_ID, **issue})
        response = await post_signed(self.client, body, resource="issue")
        assert response.status == 202, await response.text()
        await self.settled()

    async def settled(self) -> None:
        """Every record folded, every decision recorded and carried out (or failed for
        good): what the running consumer itself knows, so nothing can race it."""
        app = self.client.server.app
        consumer, eventlog = app[CONSUMER], app[EVENTLOG]

        def done() -> bool:
            state = consumer.state
            return (state.last_seq == eventlog.last_seq and not state.unrecorded
                    and not state.intents)
        await wait_until(done, timeout=20)

    def decisions(self) -> list[tuple[str, str]]:
        return [(r["action"], r["reason"]) for r in self.records("alert.decided")]


@pytest.fixture
def start_story(aiohttp_client: Any, settings: Settings, github: FakeGitHub) -> Any:
    async def start(clock: FakeClock | None = None, sentry: FakeSentry | None = None,
                    **overrides: Any) -> Story:
        clock = clock or FakeClock(datetime.now(UTC))
        options: dict[str, Any] = {"github_webhook_secret": HOOK_SECRET,
                                   "github_poll_seconds": 0, "cooldown_seconds": 3600}
        if sentry is not None:
            options.update(resolve_in_sentry=True, sentry_api_token=SENTRY_TOKEN,
                           sentry_api_url=sentry.base_url)
        app_settings = settings_against(github, settings, **{**options, **overrides})
        metrics = Metrics()
        sink = GitHubSink(app_settings, clock, metrics, FAST)
        sentry_sink = (SentrySink(app_settings.sentry_api_url, SENTRY_TOKEN, clock, FAST)
                       if sentry is not None else None)
        app = create_app(app_settings, clock=clock, sink=sink, metrics=metrics,
                         sentry=sentry_sink)
        client = await aiohttp_client(app)
        await wait_ready(client)
        return Story(Service(client, app_settings, metrics), github, clock)
    return start


async def opened_issue(story: Story, event_id: str = "a" * 32) -> int:
    await story.alert(event_id)
    await story.settled()
    [opened] = story.records("issue.opened")
    number: int = opened["number"]
    return number


# -- the webhook receiver ------------------------------------------------------------

def _vectors() -> list[dict[str, Any]]:
    path = Path(__file__).parent / "samples" / "github" / "webhooks" / "signature-vectors.json"
    vectors: list[dict[str, Any]] = json.loads(path.read_text())
    return vectors


@pytest.mark.parametrize("vector", _vectors(), ids=lambda v: str(v["name"]))
async def test_github_signature_vectors_are_accepted(start_story: Any,
                                                     vector: dict[str, Any]) -> None:
    story = await start_story(github_webhook_secret=vector["secret"])
    headers = {**vector["headers"], "X-Hub-Signature-256": vector["x_hub_signature_256"]}
    response = await story.client.post("/webhooks/github", data=vector["body"].encode(),
                                       headers=headers)
    assert response.status == 202, await response.text()
    [record] = story.records("github.issue")
    body = json.loads(vector["body"])
    assert (record["repo"], record["number"], record["action"], record["source"]) == (
        "acme/shop", body["issue"]["number"], body["action"], "webhook")
    assert record["sentry_issue_id"] == "4509912345"
    assert record["delivery_id"] == vector["headers"]["X-GitHub-Delivery"]
    assert record["raw"] == vector["body"]


async def test_github_hook_answers(start_story: Any, github: FakeGitHub) -> None:
    story = await start_story()
    number = await opened_issue(story)
    github.close_by_human(number)
    body, headers = github.webhook("closed", number, HOOK_SECRET, "d-1")

    wrong = {**headers, "X-Hub-Signature-256": "sha256=" + "0" * 64}
    assert (await story.client.post("/webhooks/github", data=body, headers=wrong)).status == 401
    sha1 = {**headers, "X-Hub-Signature-256": "sha1=" + "0" * 40}
    assert (await story.client.post("/webhooks/github", data=body, headers=sha1)).status == 401
    ping = {**headers, "X-GitHub-Event": "ping"}
    assert (await story.client.post("/webhooks/github", data=body, headers=ping)).status == 200
    push = {**headers, "X-GitHub-Event": "push"}
    answer = await story.client.post("/webhooks/github", data=body, headers=push)
    assert (answer.status, await answer.json()) == (200, {"status": "ignored"})
    assert story.records("github.issue") == []

    first = await story.client.post("/webhooks/github", data=body, headers=headers)
    again = await story.client.post("/webhooks/github", data=body, headers=headers)
    assert (first.status, again.status) == (202, 200)
    assert (await again.json()) == {"status": "duplicate"}
    assert len(story.records("github.issue")) == 1


async def test_an_issue_obsv_did_not_open_is_ignored(start_story: Any,
                                                     github: FakeGitHub) -> None:
    story = await start_story()
    number = await opened_issue(story)
    github.issue(number)["body"] = "written by a human, no marker"
    body, headers = github.webhook("closed", number, HOOK_SECRET)
    answer = await story.client.post("/webhooks/github", data=body, headers=headers)
    assert (answer.status, await answer.json()) == (200, {"status": "ignored"})
    assert story.records("github.issue") == []


@pytest.mark.parametrize(("body", "status", "error"), [
    (b"not json", 400, "invalid_json"),
    (b"[1, 2]", 422, "invalid_payload"),
    (b'{"action": "closed", "repository": {"full_name": "acme/shop"}, "issue": {}}',
     422, "invalid_payload"),
])
async def test_a_bad_github_body_is_4xx_and_records_nothing(
        start_story: Any, github: FakeGitHub, body: bytes, status: int, error: str) -> None:
    story = await start_story()
    signature = "sha256=" + hmac.new(HOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
    headers = {"X-GitHub-Event": "issues", "X-GitHub-Delivery": "d",
               "X-Hub-Signature-256": signature, "Content-Type": "application/json"}
    answer = await story.client.post("/webhooks/github", data=body, headers=headers)
    assert answer.status == status
    assert (await answer.json())["error"] == error
    assert story.records("github.issue") == []


async def test_without_a_webhook_secret_the_route_is_404(start_story: Any) -> None:
    story = await start_story(github_webhook_secret=None)
    answer = await story.client.post("/webhooks/github", data=b"{}",
                                     headers={"X-GitHub-Event": "ping"})
    assert answer.status == 404


# -- the stories -----------------------------------------------------------------------

async def test_closed_completed_then_alert_reopens_once_and_comments(
        start_story: Any, github: FakeGitHub) -> None:
    story = await start_story()
    number = await opened_issue(story)
    github.close_by_human(number, "completed")
    await story.github_hook("closed", number)
    story.clock.advance(minutes=5)

    await story.alert("b" * 32)
    await story.settled()

    assert story.decisions()[-1] == ("reopen", "regression")
    [patch] = github.requests("update_issue")
    assert patch.body["state"] == "open" and patch.body["state_reason"] == "reopened"
    assert "agent:builder" in patch.body["labels"]
    assert github.issue(number)["state"] == "open"
    [comment] = github.comments[number]
    assert "regress" in comment["body"].lower()
    assert len(story.records("issue.reopened")) == 1
    # The next alert within the cooldown is held back: the issue is open again.
    await story.alert("c" * 32)
    await story.settled()
    assert story.decisions()[-1] == ("suppress", "cooldown")
    assert len(github.requests("update_issue")) == 1


async def test_closed_not_planned_then_alert_posts_nothing(start_story: Any,
                                                           github: FakeGitHub) -> None:
    story = await start_story()
    number = await opened_issue(story)
    github.close_by_human(number, "not_planned")
    await story.github_hook("closed", number)
    writes_before = len(github.writes())
    story.clock.advance(hours=7)

    await story.alert("b" * 32)
    await story.settled()

    assert story.decisions()[-1] == ("suppress", "wont_fix")
    assert len(github.writes()) == writes_before
    assert github.issue(number)["state"] == "closed"


async def test_a_muted_open_issue_gets_no_more_comments(start_story: Any,
                                                        github: FakeGitHub) -> None:
    story = await start_story()
    number = await opened_issue(story)
    github.add_label(number, "obsv:mute")
    await story.github_hook("labeled", number)
    story.clock.advance(hours=7)
    await story.alert("b" * 32)
    await story.settled()
    assert story.decisions()[-1] == ("suppress", "wont_fix")
    assert github.comments[number] == []


async def test_closed_long_ago_opens_a_new_issue_naming_the_old(start_story: Any,
                                                                github: FakeGitHub) -> None:
    story = await start_story()
    number = await opened_issue(story)
    github.close_by_human(number, "completed")
    await story.github_hook("closed", number)
    story.clock.advance(days=15)

    await story.alert("b" * 32)
    await story.settled()

    assert story.decisions()[-1] == ("open", "regression")
    assert len(github.issues) == 2
    new = github.issues[-1]
    assert f"#{number}" in new["body"] and new["state"] == "open"
    assert github.requests("update_issue") == []  # the old one stays closed
    # The link moved: the next alert after the cooldown comments on the new issue.
    story.clock.advance(hours=2)
    await story.alert("c" * 32)
    await story.settled()
    assert story.decisions()[-1] == ("comment", "recurrence")
    assert len(github.comments[new["number"]]) == 1


async def test_a_deleted_issue_is_unlinked(start_story: Any, github: FakeGitHub) -> None:
    story = await start_story()
    number = await opened_issue(story)
    github.delete_issue(number)
    await story.github_hook("deleted", number)
    await story.alert("b" * 32)
    await story.settled()
    assert story.decisions()[-1] == ("open", "new_issue")
    assert len(github.issues) == 1 and github.issues[0]["number"] != number


async def test_the_same_story_by_polling_only(start_story: Any, github: FakeGitHub) -> None:
    story = await start_story(github_webhook_secret=None, github_poll_seconds=1)
    number = await opened_issue(story)
    github.close_by_human(number, "completed")
    await wait_until(lambda: bool(story.records("github.issue")), timeout=20)
    [observed] = story.records("github.issue")
    assert (observed["source"], observed["state"], observed["state_reason"]) == (
        "poll", "closed", "completed")

    await story.alert("b" * 32)
    await story.settled()
    assert story.decisions()[-1] == ("reopen", "regression")
    assert len(github.requests("update_issue")) == 1
    # Polls keep going; an unchanged repository is a 304 and records nothing more.
    await wait_until(lambda: any(r.status == 304 for r in github.requests("poll_issues")),
                     timeout=20)
    # The reopen obsv made itself is already in the log (issue.reopened): not recorded.
    assert len(story.records("github.issue")) == 1


async def test_webhook_and_poll_never_record_the_same_change_twice(
        start_story: Any, github: FakeGitHub) -> None:
    story = await start_story(github_poll_seconds=1)
    number = await opened_issue(story)
    github.close_by_human(number, "not_planned")
    await story.github_hook("closed", number)
    polls = len(github.requests("poll_issues"))
    await wait_until(lambda: len(github.requests("poll_issues")) >= polls + 2, timeout=20)
    assert len(story.records("github.issue")) == 1


async def test_close_on_resolve_and_resolve_in_sentry_never_echo(
        start_story: Any, github: FakeGitHub, sentry: FakeSentry) -> None:
    story = await start_story(sentry=sentry, close_on_resolve=True)
    number = await opened_issue(story)

    # Sentry resolves: obsv comments why and closes the GitHub issue as completed.
    await story.sentry_issue("issue-resolved.json")
    [sync] = story.records("sync.decided")
    assert (sync["action"], sync["reason"]) == ("close", "resolved_in_sentry")
    assert github.issue(number)["state"] == "closed"
    assert github.issue(number)["state_reason"] == "completed"
    assert len(github.comments[number]) == 1
    # GitHub tells obsv of that close: Sentry is already resolved, nothing is sent.
    await story.github_hook("closed", number)
    assert sentry.updates() == []
    assert len(story.records("sync.decided")) == 1

    # A human reopens and closes it as completed: obsv resolves the Sentry issue once.
    # (GitHub's times have whole seconds: a human a second after obsv's own close.)
    await asyncio.sleep(1.1)
    github.reopen_by_human(number)
    await story.github_hook("reopened", number)
    await story.sentry_issue("issue-unresolved-regressed.json", status="unresolved",
                             substatus="regressed")
    github.close_by_human(number, "completed")
    await story.github_hook("closed", number)
    [update] = sentry.updates()
    assert (update.org, update.issue_id, update.body) == (
        "test-org", ISSUE_ID, {"status": "resolved"})
    # Sentry's own webhook about that resolve closes nothing (the issue is closed).
    await story.sentry_issue("issue-resolved.json")
    assert [s["action"] for s in story.records("sync.decided")] == ["close", "resolve_sentry"]
    assert len(github.requests("update_issue")) == 1
    assert len(story.records("sentry.resolved")) == 1


async def test_a_regression_on_an_open_issue_comments_at_once(start_story: Any,
                                                              github: FakeGitHub) -> None:
    story = await start_story()
    number = await opened_issue(story)
    await story.sentry_issue("issue-resolved.json")  # close_on_resolve is off
    story.clock.advance(minutes=1)  # well inside the hour of cooldown
    await story.alert("b" * 32)
    await story.settled()
    assert story.decisions()[-1] == ("comment", "regression")
    assert len(github.comments[number]) == 1


async def test_replay_verify_passes_after_a_whole_story(start_story: Any, github: FakeGitHub,
                                                       sentry: FakeSentry) -> None:
    story = await start_story(sentry=sentry, close_on_resolve=True)
    number = await opened_issue(story)
    await story.sentry_issue("issue-resolved.json")
    await story.github_hook("closed", number)
    story.clock.advance(minutes=5)
    await story.alert("b" * 32)
    await story.settled()
    assert story.decisions() == [("open", "new_issue"), ("reopen", "regression")]

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "obsv", "replay", str(story.log), "--verify",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 0, (out + err).decode()
    assert b"ok" in out



async def test_dry_run_shows_the_close_and_the_reopen_in_the_outbox(
        make_client: Any, settings: Settings) -> None:
    """``make run``: Sentry resolves (close on resolve), the error comes back: the outbox
    file of the issue gets a Closed section, then a Reopened one and the comment."""
    clock = FakeClock(datetime.now(UTC))
    client = await make_client(clock=clock, close_on_resolve=True)
    assert (await post_signed(client, alert_body(event_id="a" * 32))).status == 202
    outbox = settings.outbox_dir / f"{ISSUE_ID}.md"
    await wait_until(outbox.exists)
    resolved = sample("issue-resolved.json")
    resolved["data"]["issue"]["id"] = ISSUE_ID
    assert (await post_signed(client, resolved, resource="issue")).status == 202
    await wait_until(lambda: "## Closed" in outbox.read_text())
    clock.advance(minutes=5)
    assert (await post_signed(client, alert_body(event_id="b" * 32))).status == 202
    await wait_until(lambda: "## Comment" in outbox.read_text())
    text = outbox.read_text()
    assert text.index("## Closed") < text.index("## Reopened") < text.index("## Comment")
    assert text.count("## Closed") == text.count("## Reopened") == 1
    records = records_of(settings.event_log, "issue.reopened")
    assert len(records) == 1 and records[0]["dry_run"] is True


async def test_a_change_polled_first_is_not_recorded_again_by_its_webhook(
        start_story: Any, github: FakeGitHub) -> None:
    story = await start_story(github_poll_seconds=1)
    number = await opened_issue(story)
    github.close_by_human(number, "completed")
    await wait_until(lambda: bool(story.records("github.issue")), timeout=20)
    [polled] = story.records("github.issue")
    assert polled["source"] == "poll"

    body, headers = github.webhook("closed", number, HOOK_SECRET)  # GitHub's, a bit late
    answer = await story.client.post("/webhooks/github", data=body, headers=headers)

    assert (answer.status, await answer.json()) == (200, {"status": "known"})
    assert len(story.records("github.issue")) == 1
