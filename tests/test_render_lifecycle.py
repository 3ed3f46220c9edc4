"""Rendering what obsv writes on an issue after it opened: recurrence and regression
comments with this event's facts, the comment that explains a close, and the body of
a regression issue that names the old one (docs/reference.md §6 "Comments", §7)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from obsv.core.alert import alert_from_delivery
from obsv.core.events import AlertDecided, Delivery, LinkedIssue, SentryIssueChanged, Suppressed
from obsv.core.render import (
    BODY_MAX,
    code,
    render_close_comment,
    render_comment,
    render_issue,
    render_reopen_note,
)

from .conftest import alert_body, sample
from .test_render import (
    EVENT_PATHS,
    assert_inert,
    hostile_body,
    json_values,
    nested,
    place,
)

CLOSED = datetime(2026, 5, 20, 8, 30, tzinfo=UTC)
AT = datetime(2026, 6, 1, tzinfo=UTC)


def decision(action: str = "comment", reason: str = "recurrence", *, count: int = 0,
             number: int | None = 4, since: datetime | None = None) -> AlertDecided:
    return AlertDecided(42, "1117540176", "k", action, reason,  # type: ignore[arg-type]
                        LinkedIssue(3, number), Suppressed(count, AT if count else None,
                                                           AT if count else None), since)


def event_body(**fields: Any) -> dict[str, Any]:
    body = alert_body(release="shop@2.3.1", environment="production", **fields)
    frames = body["data"]["event"]["exception"]["values"][0]["stacktrace"]["frames"]
    frames[-1].update(filename="app/cart.py", lineno=41, function="total", in_app=True)
    return body


def comment(d: AlertDecided, body: dict[str, Any] | None = None) -> str:
    body = body or event_body()
    return render_comment(alert_from_delivery(body), d, body)


def test_a_recurrence_comment_gives_the_event_facts() -> None:
    text = comment(decision(count=2))
    assert text.startswith("**Still happening**")
    assert "2 more alerts of this issue arrived during the cooldown" in text
    exception = sample("event_alert-triggered.json")["data"]["event"]["exception"]["values"][0]
    for fact in (f"**Release:** {code('shop@2.3.1')}", "**Environment:** `production`",
                 "**Event:** `" + "e" * 32 + "`", "[open the event in Sentry](<https://sentry.io/",
                 "**Location:** `app/cart.py:41:5` in `total`",
                 f"**Exception:** `{exception['type']}`", exception["value"]):
        assert fact in text, fact
    assert text.rstrip().endswith("<!-- obsv:comment-for-alert=42 -->")


def test_a_release_not_set_is_said_so() -> None:
    body = alert_body(release=None)
    assert "**Release:** `not set`" in render_comment(alert_from_delivery(body), decision(),
                                                      body)


def test_a_reopen_comment_says_it_regressed_and_since_when_it_was_closed() -> None:
    text = comment(decision("reopen", "regression", since=CLOSED))
    assert text.startswith("**Regressed**")
    assert "closed since `2026-05-20T08:30:00+00:00`; obsv reopened it" in text
    assert "cooldown" not in text  # nothing was held back: no line about it
    assert f"**Release:** {code('shop@2.3.1')}" in text
    assert "**Location:** `app/cart.py:41:5`" in text


def test_a_regression_on_an_open_issue_says_since_when_it_was_resolved() -> None:
    text = comment(decision("comment", "regression", since=CLOSED, count=1))
    assert "Sentry reported this issue resolved since `2026-05-20T08:30:00+00:00`" in text
    assert "1 more alert of this issue arrived during the cooldown" in text


def test_comments_are_inert() -> None:
    body = hostile_body()
    for d in (decision(), decision("reopen", "regression", since=CLOSED)):
        text = render_comment(alert_from_delivery(body), d, body)
        assert_inert("", text)
        assert text.count("<!-- obsv:") == 1


def test_a_huge_event_link_is_not_copied_whole() -> None:
    body = event_body(web_url="https://sentry.io/" + "a" * 500_000)
    text = comment(decision(), body)
    assert len(text) < 10_000 and "open the event in Sentry" not in text


@settings(max_examples=150, deadline=None)
@given(placements=st.lists(st.tuples(st.sampled_from(EVENT_PATHS), json_values),
                           min_size=1, max_size=4))
def test_any_json_anywhere_renders_a_bounded_comment(
        placements: list[tuple[tuple[Any, ...], Any]]) -> None:
    body = copy.deepcopy(sample("event_alert-triggered.json"))
    for path, value in placements:
        place(body, path, value)
    alert = alert_from_delivery(sample("event_alert-triggered.json"))
    for d in (decision(count=3), decision("reopen", "regression", since=CLOSED)):
        assert len(render_comment(alert, d, body)) <= BODY_MAX


@pytest.mark.parametrize("path", [("exception", "values", 0, "value"), ("release",),
                                  ("exception", "values", 0, "stacktrace", "frames", 0)])
def test_a_thousand_levels_deep_renders_a_comment(path: tuple[Any, ...]) -> None:
    body = copy.deepcopy(sample("event_alert-triggered.json"))
    place(body, path, nested(1000))
    alert = alert_from_delivery(sample("event_alert-triggered.json"))
    assert len(render_comment(alert, decision(), body)) <= BODY_MAX


def resolved(resolution: str | None, release: str | None = None) -> SentryIssueChanged:
    return SentryIssueChanged(Delivery("r", "issue", None, "s"), "resolved", "1117540176",
                              "resolved", None, resolution, "{}", release)


@pytest.mark.parametrize(("resolution", "release", "said"), [
    ("now", None, "Resolved in Sentry (resolution type `now`); closing."),
    ("in_next_release", None,
     "Resolved in Sentry (resolution type `in_next_release`, in the next release); closing."),
    ("in_release", "shop@2.3.1", "Resolved in Sentry (resolution type `in_release`, in "
     f"release {code('shop@2.3.1')}); closing."),
    (None, None, "Resolved in Sentry; closing."),
])
def test_the_close_comment_says_why(resolution: str | None, release: str | None,
                                    said: str) -> None:
    text = render_close_comment(resolved(resolution, release), 17)
    assert text == f"{said}\n\n<!-- obsv:close-for-record=17 -->\n"


def test_the_close_comment_is_inert() -> None:
    hostile = "@octocat #12 <!-- x --> " + "y" * 10_000
    text = render_close_comment(resolved(hostile, hostile), 17)
    assert_inert("", text)
    assert len(text) < 1_000


def test_a_regression_issue_names_the_old_one() -> None:
    body = alert_body()
    d = AlertDecided(9, "1117540176", "k", "open", "regression", LinkedIssue(3, 12), None,
                     CLOSED)
    text = render_issue(alert_from_delivery(body), body, ("agent:builder",), decision=d).body
    assert text.startswith("### Regression\nRegression of #12, closed since "
                           "`2026-05-20T08:30:00+00:00`")
    assert text.index("Regression of #12") < text.index("### Summary")
    plain = render_issue(alert_from_delivery(body), body, ("agent:builder",)).body
    assert "Regression" not in plain
    new = AlertDecided(9, "1117540176", "k", "open", "new_issue")
    assert render_issue(alert_from_delivery(body), body, (), decision=new).body == plain


def test_the_reopen_note_lists_the_labels_and_its_marker() -> None:
    text = render_reopen_note(decision("reopen", "regression", since=CLOSED),
                              ("agent:builder", "triage"))
    assert "labels `agent:builder`, `triage`" in text
    assert text.rstrip().endswith("<!-- obsv:reopen-for-alert=42 -->")
