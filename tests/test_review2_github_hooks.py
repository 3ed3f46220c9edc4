"""Adversarial pass over the issue lifecycle's doors: the real server, the real GitHub
sink against the fake GitHub over HTTP, and webhook or Sentry bodies that are valid
but odd (docs/reference.md §3, §6 marker rule, §7)."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from .conftest import post_signed, sample
from .fakes import FakeGitHub
from .test_lifecycle_story import HOOK_SECRET, opened_issue, start_story

__all__ = ["start_story"]  # the fixture, used by name below


def signed(body: bytes, delivery_id: str | None, event: str = "issues") -> dict[str, str]:
    headers = {"Content-Type": "application/json", "X-GitHub-Event": event,
               "X-Hub-Signature-256": "sha256=" + hmac.new(
                   HOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()}
    if delivery_id is not None:
        headers["X-GitHub-Delivery"] = delivery_id
    return headers


async def test_a_non_numeric_sentry_issue_id_is_found_again_in_its_marker(
        start_story: Any, github: FakeGitHub) -> None:
    """render.marker_for percent-encodes ``:`` and a second ``-``; the webhook must read
    such a marker back to the same id, or obsv never learns its issue was closed."""
    story = await start_story()
    await story.alert("a" * 32, issue_id="web:api--7")
    await story.settled()
    [opened] = story.records("issue.opened")
    number = opened["number"]
    assert "obsv:sentry-issue=web%3Aapi-%2D7 -->" in github.issue(number)["body"]
    github.close_by_human(number, "completed")
    await story.github_hook("closed", number)  # asserts 202
    [record] = story.records("github.issue")
    assert record["sentry_issue_id"] == "web:api--7"


async def test_a_template_marker_before_obsvs_own_does_not_win(
        start_story: Any, github: FakeGitHub) -> None:
    """A human (or an older template) may leave another marker above obsv's: obsv's own
    marker is the last one, and that one names the issue."""
    story = await start_story()
    number = await opened_issue(story)
    issue = github.issue(number)
    issue["body"] = "<!-- obsv:sentry-issue=999 -->\n" + issue["body"]
    github.close_by_human(number, "completed")
    await story.github_hook("closed", number)
    [record] = story.records("github.issue")
    assert record["sentry_issue_id"] == "1117540176"


async def test_an_empty_delivery_header_does_not_swallow_the_next_change(
        start_story: Any, github: FakeGitHub) -> None:
    """An empty ``X-GitHub-Delivery`` is no id: two different changes sent without one
    are both recorded, not the second answered as a duplicate of the first."""
    story = await start_story()
    number = await opened_issue(story)
    github.close_by_human(number, "completed")
    closed, _ = github.webhook("closed", number, HOOK_SECRET)
    first = await story.client.post("/webhooks/github", data=closed, headers=signed(closed, ""))
    github.reopen_by_human(number)
    reopened, _ = github.webhook("reopened", number, HOOK_SECRET)
    second = await story.client.post("/webhooks/github", data=reopened,
                                     headers=signed(reopened, ""))
    assert (first.status, second.status) == (202, 202), await second.text()
    assert [r["action"] for r in story.records("github.issue")] == ["closed", "reopened"]


async def test_an_overlong_delivery_id_is_refused_and_not_recorded(
        start_story: Any, github: FakeGitHub) -> None:
    """GitHub's delivery ids are GUIDs; a 5 KB one (aiohttp refuses a header line over
    8 KB) would be kept in memory and in every record. 400, nothing recorded; a normal
    id still gets through afterwards."""
    story = await start_story()
    number = await opened_issue(story)
    github.close_by_human(number, "completed")
    body, _ = github.webhook("closed", number, HOOK_SECRET)
    answer = await story.client.post("/webhooks/github", data=body,
                                     headers=signed(body, "d" * 5_000))
    assert answer.status == 400
    assert (await answer.json()) == {"error": "invalid_delivery_id"}
    assert story.records("github.issue") == []
    ok = await story.client.post("/webhooks/github", data=body,
                                 headers=signed(body, "72d3162e-cc78-11e3-81ab-4c9367dc0958"))
    assert ok.status == 202


async def test_odd_issue_numbers_and_labels_are_422(start_story: Any,
                                                   github: FakeGitHub) -> None:
    story = await start_story()
    number = await opened_issue(story)
    good, _ = github.webhook("closed", number, HOOK_SECRET)
    for change, path in ((("number", str(number)), "issue.number"),
                         (("number", -1), "issue.number"),
                         (("number", 2**63), "issue.number"),
                         (("labels", {"name": "x"}), "issue.labels"),
                         (("labels", ["bug"]), "issue.labels")):
        body = json.loads(good)
        body["issue"][change[0]] = change[1]
        raw = json.dumps(body).encode()
        answer = await story.client.post("/webhooks/github", data=raw,
                                         headers=signed(raw, f"d-{change}"))
        assert answer.status == 422, change
        assert path in (await answer.json())["invalid"]
    assert story.records("github.issue") == []


async def test_a_pull_request_in_an_issues_event_is_not_obsvs(start_story: Any,
                                                              github: FakeGitHub) -> None:
    """Pull requests are never obsv's (lifecycle rule 2), even when one carries a copy of a
    marker in its body (someone pasted the issue into the PR description)."""
    story = await start_story()
    number = await opened_issue(story)
    body = json.loads(github.webhook("closed", number, HOOK_SECRET)[0])
    body["issue"]["pull_request"] = {"url": "https://api.github.com/repos/acme/shop/pulls/9"}
    body["issue"]["number"] = 9
    raw = json.dumps(body).encode()
    answer = await story.client.post("/webhooks/github", data=raw, headers=signed(raw, "pr-9"))
    assert (answer.status, await answer.json()) == (200, {"status": "ignored"})
    assert story.records("github.issue") == []


async def test_a_sentry_issue_delivery_with_an_overlong_id_is_422(start_story: Any) -> None:
    """docs/reference.md §6: Sentry issue ids longer than 128 characters are refused with
    422 at the door, for ``issue`` deliveries as for alerts."""
    story = await start_story()
    body = sample("issue-resolved.json")
    body["data"]["issue"]["id"] = "9" * 200
    answer = await post_signed(story.client, body, resource="issue")
    assert answer.status == 422
    assert (await answer.json())["invalid"] == ["data.issue.id"]
    assert story.records("sentry.issue") == []


async def test_a_hand_made_marker_that_is_not_utf8_is_no_marker(start_story: Any,
                                                                github: FakeGitHub) -> None:
    """Anyone who can edit an issue can write ``%FF`` (not UTF-8) or ``%ED%A0%80`` (a lone
    surrogate, which no log line can hold) into a marker: not obsv's, 200 ignored."""
    story = await start_story()
    number = await opened_issue(story)
    for forged in ("%FF", "%ED%A0%80", "%41"):
        github.issue(number)["body"] = f"text\n\n<!-- obsv:sentry-issue={forged} -->\n"
        body, headers = github.webhook("edited", number, HOOK_SECRET, f"d-{forged}")
        answer = await story.client.post("/webhooks/github", data=body, headers=headers)
        assert (answer.status, await answer.json()) == (200, {"status": "ignored"}), forged
    assert story.records("github.issue") == []
