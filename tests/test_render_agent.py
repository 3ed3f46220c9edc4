"""The agent-ready body (docs/reference.md §6): the exception chain, source context and
local variables, columns, the request, masking of secrets and personal data, and code
shown byte for byte."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from obsv.core.alert import alert_from_delivery
from obsv.core.events import AlertDecided, Suppressed
from obsv.core.render import BODY_MAX, marker_for, render_comment, render_issue

from .conftest import alert_body, sample
from .test_render import assert_inert, code_texts

CHAINED = "event_alert-triggered.python-django-chained.json"
# Every secret and personal value of the chained sample.
HIDDEN = ("sk_live_51Habc", "eyJhbGciOiJIUzI1NiJ9", "abc123", "Zq9x2Lw", "tok_8c1d77",
          "jane.doe@example.com", "203.0.113.24", "janed")


def body_of(body: dict[str, Any], redact_pii: bool = True) -> str:
    return render_issue(alert_from_delivery(body), body, (), redact_pii=redact_pii).body


def test_the_chain_is_shown_outermost_first_with_the_cause_labelled() -> None:
    text = body_of(sample(CHAINED))
    assert text.index("`KeyError` (unhandled, mechanism `django`)") < text.index(
        "### Cause of the exception above (2 of 2)\n`ConnectionError` (handled")


def test_in_app_frames_carry_source_context_and_variables() -> None:
    text = body_of(sample(CHAINED))
    assert "```python\n  84      def add_item(self, item):" in text
    assert "> 88          sku = item['sku']" in text
    assert "- `sku` = `'A-1009'`" in text and "- `password` = `[masked]`" in text
    # The library frame has context in the payload but is not in app: not shown.
    assert "raise ConnectionError(e, request=request)" not in text


def test_columns_tell_minified_frames_apart() -> None:
    text = body_of(sample("event_alert-triggered.json"))
    assert "`/js/prod/runner-4.1.7.min.js:1:10866`" in text
    assert "`/js/prod/runner-4.1.7.min.js:1:13924`" in text


def test_the_request_shows_names_not_values() -> None:
    text = body_of(sample(CHAINED))
    assert "- `POST https://shop.example.com/checkout/?coupon=SPRING&api_key=[masked]`" in text
    assert "Headers (names only): `Authorization`, `User-Agent`, `Cookie`" in text
    assert "Cookies (names only): `sessionid`" in text


def test_secrets_and_personal_data_never_appear() -> None:
    body = sample(CHAINED)
    alert = alert_from_delivery(body)
    decision = AlertDecided(9, alert.sentry_issue_id, "k", "comment", "recurrence", None,
                            Suppressed(0, None, None))
    for text in (body_of(body), render_comment(alert, decision, body),
                 render_issue(alert, body, ()).title):
        for value in HIDDEN:
            assert value not in text, value


def test_personal_data_is_shown_when_redaction_is_off() -> None:
    text = body_of(sample(CHAINED), redact_pii=False)
    assert "jane.doe@example.com" in text
    assert "sk_live_51Habc" not in text  # secrets are masked regardless


def test_summary_says_not_set_and_drops_repeated_tags() -> None:
    text = body_of(sample("event_alert-triggered.json"))
    assert "**Environment:** not set" in text and "none" not in text
    tags = text.split("### Tags")[1]
    assert "`level`" not in tags and "`browser`" in tags


def test_code_is_shown_byte_for_byte() -> None:
    body = alert_body(release="shop@2.3.1", tags=[["cmd", "a `b` c"]])
    body["data"]["event"]["exception"]["values"][0]["value"] = "x\n```\n# not a heading\n````"
    text = body_of(body)
    assert "`shop@2.3.1`" in text and "\u200b" not in text
    assert "``a `b` c``" in text
    assert "`````text\nx\n```\n# not a heading\n````\n`````" in text


def test_the_marker_cannot_be_forged_from_event_text() -> None:
    body = alert_body(tags=[["x", "<!-- obsv:sentry-issue=999 -->"]])
    text = body_of(body)
    assert text.count("<!-- obsv:") == 1 and text.rstrip().endswith(marker_for("1117540176"))


ZERO_WIDTH = ("\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u02cb", "\u02dc")
text_values = st.text(max_size=200) | st.sampled_from(
    ["@admin", "#1", "GH-2", "-->", "<!--", "```", "~~~", "<img src=x>", "shop@2.3.1", "`"])
SECRET = "s3cr3t-V4lue"
EMAIL = "victim@example.org"


@settings(max_examples=150, deadline=None)
@given(value=text_values, kind=text_values, tag=text_values, crumb=text_values,
       var=text_values, line=text_values, where=st.integers(0, 5))
def test_any_event_text_renders_inert_masked_and_unaltered_in_code(
        value: str, kind: str, tag: str, crumb: str, var: str, line: str, where: int) -> None:
    secret_places = [f"password={SECRET}", f"Authorization: Bearer {SECRET}",
                     f"token={SECRET}", EMAIL, f"?api_key={SECRET}", f"user {EMAIL} x"]
    planted = secret_places[where]
    body = copy.deepcopy(alert_body(tags=[[tag, tag], ["user", f"email:{EMAIL}"]],
                                    breadcrumbs=[{"message": crumb + " " + planted}],
                                    user={"email": EMAIL}))
    event = body["data"]["event"]
    exception = event["exception"]["values"][0]
    exception.update(type=kind, value=value + " " + planted)
    frame = exception["stacktrace"]["frames"][-1]
    frame.update(in_app=True, context_line=line + planted, pre_context=[line],
                 vars={"v": var + planted, "session_id": SECRET})
    event["request"] = {"url": "https://x.test/p", "query_string": f"q=1&token={SECRET}",
                        "headers": [["Cookie", f"s={SECRET}"]]}
    alert = alert_from_delivery(body)
    text = body_of(body)
    comment = render_comment(alert, AlertDecided(3, alert.sentry_issue_id, "k", "comment",
                                                 "recurrence", None, None), body)
    for out in (text, comment):
        assert len(out) <= BODY_MAX
        assert SECRET not in out and EMAIL not in out
        assert_inert("", out)
        inserted = [z for z in ZERO_WIDTH if z not in value + kind + tag + crumb + var + line]
        for shown in code_texts(out):
            assert not any(z in shown for z in inserted), shown
    assert text.count("<!-- obsv:") == 1 and text.endswith(marker_for(alert.sentry_issue_id)
                                                            + "\n")
