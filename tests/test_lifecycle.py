"""Sentry ``issue`` and GitHub ``issues`` payloads -> sentry.issue / github.issue records,
with the samples in tests/samples (docs/reference.md §4 and §7)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from msgspec.structs import replace

from obsv.core.alert import InvalidPayload, sentry_org
from obsv.core.events import Delivery
from obsv.core.lifecycle import (
    InvalidGitHubPayload,
    github_issue_from_event,
    github_issue_from_rest,
    github_issue_from_webhook,
    sentry_issue_from_delivery,
    sentry_issue_id_from_marker,
)
from obsv.core.render import marker_for

from .conftest import SAMPLES, sample

DELIVERY = Delivery("req-1", "issue", "1764232201", "ab" * 32)
WEBHOOKS = SAMPLES / "github" / "webhooks"
VECTORS: list[dict[str, Any]] = json.loads((WEBHOOKS / "signature-vectors.json").read_text())


def webhook(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((WEBHOOKS / f"{name}.json").read_text("utf-8"))
    return data


# -- Sentry ----------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "fields"), [
    ("issue-resolved.json", ("resolved", "resolved", None, "now", None)),
    ("issue-resolved-in_next_release.json",
     ("resolved", "resolved", None, "in_next_release", None)),
    ("issue-unresolved-regressed.json", ("unresolved", "unresolved", "regressed", None, None)),
    ("issue-ignored.json", ("ignored", "ignored", "archived_forever", None, None)),
    ("issue-created.json", ("created", "unresolved", "escalating", None, None)),
])
def test_sentry_issue_samples(name: str, fields: tuple[object, ...]) -> None:
    raw = (SAMPLES / name).read_text("utf-8")
    record = sentry_issue_from_delivery(DELIVERY, json.loads(raw), raw)
    assert (record.action, record.status, record.substatus, record.resolution_type,
            record.release) == fields
    assert record.sentry_issue_id == ("1170820242" if name == "issue-created.json"
                                      else "4509912345")
    assert (record.delivery, record.raw) == (DELIVERY, raw)


def test_sentry_release_named_by_in_release() -> None:
    body = sample("issue-resolved.json")
    body["data"]["resolution_type"] = "in_release"
    body["data"]["issue"]["statusDetails"] = {"inRelease": "shop@2.3.1"}
    body["data"]["issue"]["id"] = 4509912345  # an integer id is read as its text
    record = sentry_issue_from_delivery(DELIVERY, body, "{}")
    assert (record.release, record.sentry_issue_id) == ("shop@2.3.1", "4509912345")


@pytest.mark.parametrize(("change", "missing", "invalid"), [
    (lambda b: b.pop("action"), ["action"], []),
    (lambda b: b.pop("data"), ["data"], []),
    (lambda b: b.update(data=[]), [], ["data"]),
    (lambda b: b["data"].pop("issue"), ["data.issue"], []),
    (lambda b: b["data"]["issue"].pop("id"), ["data.issue.id"], []),
    (lambda b: b["data"]["issue"].update(id=True), [], ["data.issue.id"]),
    (lambda b: (b.update(action=3), b["data"]["issue"].update(status=["resolved"]),
                b["data"].update(resolution_type=1)),
     [], ["action", "data.issue.status", "data.resolution_type"]),
])
def test_unusable_sentry_issue_names_its_fields(change: Any, missing: list[str],
                                                invalid: list[str]) -> None:
    body = sample("issue-resolved.json")
    change(body)
    with pytest.raises(InvalidPayload) as caught:
        sentry_issue_from_delivery(DELIVERY, body, "{}")
    assert (caught.value.missing, caught.value.invalid, caught.value.status) == (
        missing, invalid, 422)


def test_sentry_issue_body_must_be_an_object() -> None:
    with pytest.raises(InvalidPayload) as caught:
        sentry_issue_from_delivery(DELIVERY, ["resolved"], "[]")
    assert caught.value.invalid == ["body"]


# -- GitHub webhooks ------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "fields"), [
    ("issues-closed-completed",
     ("closed", "closed", "completed", datetime(2026, 11, 22, 16, 40, 11, tzinfo=UTC),
      ("agent:builder",))),
    ("issues-closed-not_planned",
     ("closed", "closed", "not_planned", datetime(2026, 11, 22, 16, 41, tzinfo=UTC),
      ("agent:builder",))),
    ("issues-reopened", ("reopened", "open", "reopened", None, ("agent:builder",))),
    ("issues-labeled-mute", ("labeled", "open", None, None, ("agent:builder", "obsv:mute"))),
    ("issues-deleted", ("deleted", "open", None, None, ("agent:builder",))),
])
def test_github_webhook_samples(name: str, fields: tuple[object, ...]) -> None:
    vector = next(v for v in VECTORS if v["name"] == name)
    raw = vector["body"].encode("utf-8")
    delivery_id = vector["headers"]["X-GitHub-Delivery"]
    record = github_issue_from_webhook(raw, delivery_id=delivery_id)
    assert record is not None
    assert (record.action, record.state, record.state_reason, record.closed_at,
            record.labels) == fields
    assert (record.repo, record.number, record.sentry_issue_id) == ("acme/shop", 12,
                                                                    "4509912345")
    assert (record.source, record.delivery_id, record.raw) == ("webhook", delivery_id,
                                                               vector["body"])
    assert record.updated_at == datetime.fromisoformat(webhook(name)["issue"]["updated_at"])
    # The same body already parsed by the shell gives the same record.
    assert github_issue_from_event(webhook(name), raw=None, delivery_id=None) == replace(
        record, delivery_id=None, raw=None)


def test_issue_without_obsvs_marker_is_not_ours() -> None:
    body = webhook("issues-closed-completed")
    body["issue"]["body"] = "Found by hand. <!-- a comment -->"
    assert github_issue_from_event(body, raw=None, delivery_id="d") is None
    body["issue"]["body"] = None
    assert github_issue_from_event(body, raw=None, delivery_id="d") is None


@pytest.mark.parametrize("raw", [b"\xff\xfe{}", b"{not json", b""])
def test_github_body_that_is_not_json_is_400(raw: bytes) -> None:
    with pytest.raises(InvalidGitHubPayload) as caught:
        github_issue_from_webhook(raw, delivery_id="d")
    assert (caught.value.status, caught.value.answer()) == (400, {"error": "invalid_json"})


@pytest.mark.parametrize(("change", "missing", "invalid"), [
    (lambda b: b.pop("issue"), ["issue"], []),
    (lambda b: b.pop("repository"), ["repository"], []),
    (lambda b: b["repository"].pop("full_name"), ["repository.full_name"], []),
    (lambda b: b.pop("action"), ["action"], []),
    (lambda b: b["issue"].pop("number"), ["issue.number"], []),
    (lambda b: b["issue"].update(number="12"), [], ["issue.number"]),
    (lambda b: b["issue"].update(number=True), [], ["issue.number"]),
    (lambda b: b["issue"].update(number=2**64), [], ["issue.number"]),
    (lambda b: b["issue"].update(state="merged"), [], ["issue.state"]),
    (lambda b: b["issue"].pop("state"), ["issue.state"], []),
    (lambda b: b["issue"].update(closed_at="yesterday"), [], ["issue.closed_at"]),
    (lambda b: b["issue"].update(closed_at="2026-11-22T16:40:11"), [], ["issue.closed_at"]),
    (lambda b: b["issue"].pop("updated_at"), ["issue.updated_at"], []),
    (lambda b: b["issue"].update(updated_at=1764232201), [], ["issue.updated_at"]),
    (lambda b: b["issue"].update(labels=["agent:builder"]), [], ["issue.labels"]),
    (lambda b: b["issue"].update(body=7, state_reason=1), [],
     ["issue.state_reason", "issue.body"]),
])
def test_unusable_github_webhook_is_422_naming_fields(change: Any, missing: list[str],
                                                      invalid: list[str]) -> None:
    body = webhook("issues-closed-completed")
    change(body)
    with pytest.raises(InvalidGitHubPayload) as caught:
        github_issue_from_webhook(json.dumps(body).encode(), delivery_id="d")
    assert caught.value.status == 422
    assert caught.value.answer() == {"error": "invalid_payload", "missing": missing,
                                     "invalid": invalid}


def test_github_body_must_be_an_object() -> None:
    with pytest.raises(InvalidGitHubPayload) as caught:
        github_issue_from_webhook(b"[1]", delivery_id="d")
    assert (caught.value.status, caught.value.invalid) == (422, ["body"])


# -- GitHub REST issue objects (the poller) ---------------------------------------------

def test_rest_issue_object_is_an_observation() -> None:
    issue = webhook("issues-closed-not_planned")["issue"]
    record = github_issue_from_rest(issue, repo="acme/shop")
    assert record is not None
    assert (record.action, record.source, record.delivery_id, record.raw) == (
        "observed", "poll", None, None)
    assert (record.repo, record.number, record.sentry_issue_id, record.state,
            record.state_reason) == ("acme/shop", 12, "4509912345", "closed", "not_planned")


def test_pull_requests_and_foreign_issues_are_not_observed() -> None:
    issue = webhook("issues-reopened")["issue"]
    assert github_issue_from_rest({**issue, "pull_request": {"url": "x"}}, repo="a/b") is None
    assert github_issue_from_rest({**issue, "body": "by hand"}, repo="a/b") is None


def test_unusable_rest_issue_names_fields_of_the_object() -> None:
    issue = {**webhook("issues-reopened")["issue"], "state": None, "labels": "bug"}
    with pytest.raises(InvalidGitHubPayload) as caught:
        github_issue_from_rest(issue, repo="a/b")
    assert (caught.value.status, caught.value.missing, caught.value.invalid) == (
        422, ["state"], ["labels"])
    with pytest.raises(InvalidGitHubPayload):
        github_issue_from_rest("issue", repo="a/b")


# -- the marker and the Sentry organization ------------------------------------------

@pytest.mark.parametrize("sentry_issue_id", ["4509912345", "1", "abc.DEF-12_x"])
def test_marker_parsing_is_the_inverse_of_marker_for(sentry_issue_id: str) -> None:
    body = f"# title\n\ntext\n\n{marker_for(sentry_issue_id)}\n"
    assert sentry_issue_id_from_marker(body) == sentry_issue_id


def test_obsvs_own_marker_is_the_last_one() -> None:
    quoted = marker_for("111")
    body = f"a human pasted {quoted} here\n\n{marker_for('222')}\n\nand wrote after it"
    assert sentry_issue_id_from_marker(body) == "222"
    assert sentry_issue_id_from_marker("<!-- obsv:sentry-issue= -->") is None
    assert sentry_issue_id_from_marker("<!-- obsv:sentry-issue=a b -->") is None


@pytest.mark.parametrize(("url", "org"), [
    ("https://sentry.io/organizations/test-org/issues/1117540176/events/e48/", "test-org"),
    ("https://acme.sentry.io/issues/4509912345/", "acme"),
    ("https://acme.us.sentry.io/issues/4509912345/?project=1", "acme"),
    ("https://sentry.example.com/organizations/shop/issues/9/", "shop"),
    ("https://sentry.example.com/issues/9/", None),
    (None, None),
])
def test_sentry_org_from_the_alerts_link(url: str | None, org: str | None) -> None:
    assert sentry_org(url) == org
