"""Rendering: golden files for the shared samples, hostile values, and properties."""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from obsv.core.alert import InvalidPayload, alert_from_delivery
from obsv.core.events import AlertDecided, Suppressed
from obsv.core.render import (
    BODY_MAX,
    TITLE_MAX,
    marker_for,
    mask_secrets,
    parse_marker,
    render_comment,
    render_issue,
)

from .conftest import alert_body, sample

GOLDEN = Path(__file__).parent / "golden"
LABELS = ("agent:builder",)


def rendered(body: dict[str, Any]) -> tuple[str, str]:
    draft = render_issue(alert_from_delivery(body), body, LABELS)
    return draft.title, draft.body


def golden_check(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8"), f"{name} changed; review, then rerun " \
        "with UPDATE_GOLDEN=1"


def error_as_alert() -> dict[str, Any]:
    return {"action": "triggered", "data": {"event": sample("error-created.json")["data"]["error"],
                                            "triggered_rule": "Errors in checkout"}}


@pytest.mark.parametrize(("name", "body"), [
    ("event_alert-triggered.md", sample("event_alert-triggered.json")),
    ("error-created.md", error_as_alert()),
    ("event_alert-triggered.python-django-chained.md",
     sample("event_alert-triggered.python-django-chained.json")),
])
def test_golden_files(name: str, body: dict[str, Any]) -> None:
    title, text = rendered(body)
    golden_check(name, f"{title}\n\n{text}")


def test_sections_come_in_the_contract_order() -> None:
    _, text = rendered(sample("event_alert-triggered.json"))
    headings = re.findall(r"^### (\w+)", text, flags=re.M)
    assert headings == ["Summary", "Location", "Exception", "Request", "Tags", "Alert"]
    _, chained = rendered(sample("event_alert-triggered.python-django-chained.json"))
    headings = re.findall(r"^### (\w+)", chained, flags=re.M)
    assert headings == ["Summary", "Location", "Exception", "Cause", "Request", "Breadcrumbs",
                        "Tags", "Alert"]
    summary = text.split("### Location")[0]
    order = [summary.index(k) for k in ("Level", "Environment", "Release", "Platform",
                                        "First seen", "This event", "Sentry:")]
    assert order == sorted(order)


def test_title_uses_innermost_in_app_frame() -> None:
    body = alert_body()
    frames = body["data"]["event"]["exception"]["values"][0]["stacktrace"]["frames"]
    frames[0]["in_app"] = True
    title, _ = rendered(body)
    assert title == "[error] ReferenceError — /js/prod/runner-4.1.7.min.js:1"


def test_title_without_exception_is_sentrys_title() -> None:
    body = alert_body(title="Something odd: user 123 did a thing", exception=None)
    assert rendered(body)[0] == "[error] Something odd: user 123 did a thing"


def test_title_never_carries_the_message() -> None:
    body = alert_body()
    body["data"]["event"]["exception"]["values"][0]["value"] = "id 81723 not found"
    assert "81723" not in rendered(body)[0]


HOSTILE = "@octocat fixes #12 and GH-7 <script>alert(1)</script> <!-- x --> ```\n# Heading\n| a |"


def hostile_body() -> dict[str, Any]:
    body = alert_body(title=HOSTILE, culprit=HOSTILE, release=HOSTILE, environment=HOSTILE,
                      tags=[[HOSTILE, HOSTILE]] * 3)
    exception = body["data"]["event"]["exception"]["values"][0]
    exception["type"] = HOSTILE
    exception["value"] = HOSTILE * 3
    exception["stacktrace"]["frames"][-1].update(filename=HOSTILE, function=HOSTILE, in_app=True)
    body["data"]["event"]["breadcrumbs"] = {"values": [
        {"level": "info", "category": HOSTILE, "message": HOSTILE}]}
    body["data"]["triggered_rule"] = HOSTILE
    return body


FENCE = re.compile(r"^(`{3,})[a-z]*\n(.*?)\n\1$", re.S | re.M)
SPAN = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)")


def code_texts(text: str) -> list[str]:
    """What GitHub shows as code: fenced blocks' contents, then inline spans' (one
    space stripped each side when both sides have one, as CommonMark does)."""
    found = [m.group(2) for m in FENCE.finditer(text)]
    rest = FENCE.sub("", text)
    for m in SPAN.finditer(rest):
        inner = m.group(2)
        found.append(inner[1:-1] if len(inner) > 2 and inner[0] == inner[-1] == " " else inner)
    return found


def outside_code(text: str) -> str:
    """The body with code (fenced blocks and inline spans) and our own marker removed."""
    text = SPAN.sub("", FENCE.sub("", text))
    return re.sub(r"<!-- obsv:[a-z-]+=[A-Za-z0-9._%-]+ -->", "", text)


def assert_inert(title: str, text: str) -> None:
    """No live mention, reference or HTML: in the title anywhere, in the body outside
    code (GitHub renders none inside code, where text is shown as it is)."""
    for part in (title, outside_code(text)):
        assert not re.search(r"@[A-Za-z0-9]", part), "a live mention"
        assert not re.search(r"#\d", part), "a live issue reference"
        assert not re.search(r"(?i)\bGH-\d", part), "a live GH- reference"
    rest = outside_code(text)
    assert "<" not in rest.replace("(<https://", "(") and ">" not in rest.replace(">)", ")")
    assert "-->" not in rest and "<!--" not in rest
    assert not re.search(r"^#", rest.replace("### ", ""), flags=re.M), "a heading from the event"


def test_hostile_values_are_inert() -> None:
    title, text = rendered(hostile_body())
    assert_inert(title, text)
    assert "\n" not in title and len(title) <= TITLE_MAX
    assert text.count("<!-- obsv:sentry-issue=") == 1
    assert "<script>" in text  # shown, as code
    # A fence from the event cannot close ours: ours are longer than any run inside.
    assert HOSTILE.split("```")[0] in text and "````text" in text
    assert any(HOSTILE in c for c in code_texts(text)), "shown as it is, in code"


def test_huge_values_and_thousands_of_frames_are_capped() -> None:
    body = alert_body(title="x" * 200_000, culprit="y" * 200_000)
    exception = body["data"]["event"]["exception"]["values"][0]
    exception["value"] = "z" * 200_000
    exception["stacktrace"]["frames"] = [
        {"filename": f"f{n}.py", "lineno": n, "function": "g" * 5000, "in_app": n % 2 == 0}
        for n in range(5000)]
    body["data"]["event"]["tags"] = [[f"k{n}", "v" * 10_000] for n in range(10_000)]
    title, text = rendered(body)
    assert len(title) <= TITLE_MAX and len(text) <= BODY_MAX
    assert "Stack (top 7 of 5000, innermost last)" in text
    assert text.rstrip().endswith(marker_for("1117540176"))


def test_body_over_the_limit_is_cut_at_a_section_with_a_note() -> None:
    body = alert_body()
    body["data"]["event"]["tags"] = [[f"k{n}", "v" * 150] for n in range(60)]
    body["data"]["event"]["breadcrumbs"] = {"values": [
        {"level": "info", "message": "m" * 150} for _ in range(8)]}
    import obsv.core.render as render

    original = render.BODY_MAX
    render.BODY_MAX = 3000
    try:
        _, text = rendered(body)
    finally:
        render.BODY_MAX = original
    assert len(text) <= 3000
    assert "Some sections were left out" in text
    assert "### Summary" in text and "### Tags" not in text
    assert text.rstrip().endswith(marker_for("1117540176"))


def test_breadcrumbs_last_eight_without_debug_and_masked() -> None:
    crumbs = [{"level": "info", "category": "http", "message": f"GET /page/{n}"}
              for n in range(12)]
    crumbs.append({"level": "debug", "message": "noise"})
    crumbs.append({"level": "info", "category": "http", "message":
                   "GET https://api.example.com/v1?token=s3cr3tvalue&x=1 "
                   "Authorization: Bearer abcdef123456 password=hunter2 "
                   "https://user:pa55@db.example.com/ ghp_" + "a" * 36})
    body = alert_body(breadcrumbs={"values": crumbs})
    _, text = rendered(body)
    section = text.split("### Breadcrumbs")[1].split("###")[0]
    lines = [line for line in section.split("```text\n")[1].split("\n```")[0].splitlines()]
    assert len(lines) == 8 and "noise" not in section
    assert lines[0].endswith("GET /page/5") and "api.example.com" in lines[-1]
    for secret in ("s3cr3tvalue", "abcdef123456", "hunter2", "pa55", "ghp_aaaa"):
        assert secret not in text
    assert all(len(line) <= 160 for line in lines)


@pytest.mark.parametrize(("text", "hidden"), [
    ("Authorization: Basic dXNlcjpwYXNz", "dXNlcjpwYXNz"),
    ('{"api_key": "k-123456"}', "k-123456"),
    ("POST /login?user=bob&password=pw1", "pw1"),
    ("redis://:secretpw@cache:6379", "secretpw"),
    ("AWS AKIAABCDEFGHIJKLMNOP used", "AKIAABCDEFGHIJKLMNOP"),
])
def test_mask_secrets(text: str, hidden: str) -> None:
    assert hidden not in mask_secrets(text)


def test_comment_is_inert_and_marked() -> None:
    body = hostile_body()
    alert = alert_from_delivery(body)
    decision = AlertDecided(42, "1117540176", "k", "comment", "recurrence", None,
                            Suppressed(3, None, None))
    text = render_comment(alert, decision)
    assert_inert("", text)
    assert text.rstrip().endswith("<!-- obsv:comment-for-alert=42 -->")
    assert "3 more alerts" in text


def test_javascript_url_is_not_a_link() -> None:
    body = alert_body(web_url="javascript:alert(1)")
    _, text = rendered(body)
    assert "](<javascript" not in text and "`javascript:alert(1)`" in text


text_values = st.text(max_size=300) | st.sampled_from(
    ["@admin", "#1", "GH-2", "-->", "<!--", "```", "~~~", "\u202e", "<img src=x>", "\x00\x1b"])


@settings(max_examples=150, deadline=None)
@given(title=text_values, culprit=text_values, value=text_values, kind=text_values,
       filename=text_values, tag=text_values, crumb=text_values, env=text_values)
def test_any_event_renders_inert_and_bounded(title: str, culprit: str, value: str, kind: str,
                                             filename: str, tag: str, crumb: str,
                                             env: str) -> None:
    body = copy.deepcopy(alert_body(title=title, culprit=culprit, environment=env,
                                    tags=[[tag, tag]], breadcrumbs=[{"message": crumb}]))
    exception = body["data"]["event"]["exception"]["values"][0]
    exception.update(type=kind, value=value)
    exception["stacktrace"]["frames"][-1].update(filename=filename, in_app=True)
    title_out, text = rendered(body)
    assert "\n" not in title_out and "\r" not in title_out and len(title_out) <= TITLE_MAX
    assert len(text) <= BODY_MAX
    assert text.count(marker_for("1117540176")) == 1
    assert_inert(title_out, text)


# -- the marker: one per Sentry issue, never another's, always a valid comment ------

def marker_id(marker: str) -> str:
    assert marker.startswith("<!-- obsv:sentry-issue=") and marker.endswith(" -->"), marker
    return marker[len("<!-- obsv:sentry-issue="):-len(" -->")]


@pytest.mark.parametrize("ids", [
    ("web/checkout", "web:checkout", "web_checkout", "web checkout"),
    ("a" * 128 + "1", "a" * 128 + "2"),
    ("a--b", "a-%2Db", "a-_b"),
])
def test_similar_ids_get_different_markers(ids: tuple[str, ...]) -> None:
    assert len({marker_for(i) for i in ids}) == len(ids)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=150) | st.from_regex(r"[0-9a-f-]{1,40}", fullmatch=True),
                unique=True, max_size=8))
def test_markers_are_injective_and_valid_html_comments(ids: list[str]) -> None:
    markers = [marker_for(i) for i in ids]
    assert len(set(markers)) == len(ids)
    for sentry_id, marker in zip(ids, markers, strict=True):
        inside = marker[len("<!--"):-len("-->")]
        assert "--" not in inside and ">" not in inside and "<" not in inside
        assert "\n" not in marker and marker.isascii()
        assert parse_marker(f"text {marker}\n") == sentry_id
        # No marker is a prefix of another's text: a search for one never hits another.
        assert not any(marker in other for other in markers if other != marker)


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=0, max_value=2**63))
def test_numeric_ids_keep_the_documented_marker(number: int) -> None:
    assert marker_for(str(number)) == f"<!-- obsv:sentry-issue={number} -->"


# -- rendering is total and bounded, whatever JSON sits wherever -------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=50),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=25)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value[:3]):
            found += _paths(child, (*prefix, index))
    return found


# Every place in the documented sample, and the ones it lacks that the renderer reads.
EVENT_PATHS = [
    *_paths(sample("event_alert-triggered.json")["data"]["event"]),
    ("breadcrumbs",), ("breadcrumbs", "values"), ("breadcrumbs", "values", 0),
    ("breadcrumbs", "values", 0, "data"), ("breadcrumbs", "values", 0, "category"),
    ("breadcrumbs", "values", 0, "timestamp"), ("breadcrumbs", "values", 0, "message"),
    ("stacktrace",), ("stacktrace", "frames"), ("exception", "values", 0, "mechanism"),
]


def place(body: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    """Put ``value`` at ``path`` inside ``data.event``, making the containers on the way."""
    body["data"]["event"] = _put(body["data"]["event"], path, value)


def _put(node: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    step, rest = path[0], path[1:]
    if isinstance(step, int):
        node = node if isinstance(node, list) else []
        while len(node) <= step:
            node.append({})
        node[step] = _put(node[step], rest, value)
    else:
        node = node if isinstance(node, dict) else {}
        node[step] = _put(node.get(step), rest, value)
    return node


def render_everything(body: dict[str, Any]) -> None:
    """Render issue and comment; assert the limits. Validation may refuse the body;
    the renderer still has to cope with it (it renders from the stored raw body)."""
    try:
        alert = alert_from_delivery(body)
    except InvalidPayload:
        alert = alert_from_delivery(sample("event_alert-triggered.json"))
    draft = render_issue(alert, body, LABELS)
    assert "\n" not in draft.title and len(draft.title) <= TITLE_MAX
    assert len(draft.body) <= BODY_MAX
    assert draft.body.rstrip().endswith(draft.marker)
    decision = AlertDecided(9, alert.sentry_issue_id, "k", "comment", "recurrence", None,
                            Suppressed(2, None, None))
    assert len(render_comment(alert, decision)) <= BODY_MAX


@settings(max_examples=200, deadline=None)
@given(placements=st.lists(st.tuples(st.sampled_from(EVENT_PATHS), json_values),
                           min_size=1, max_size=4))
def test_any_json_anywhere_in_the_event_renders(
        placements: list[tuple[tuple[Any, ...], Any]]) -> None:
    body = copy.deepcopy(sample("event_alert-triggered.json"))
    for path, value in placements:
        place(body, path, value)
    render_everything(body)


def nested(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = [value] if depth % 2 else {"k": value}
    return value


@pytest.mark.parametrize("path", [
    ("breadcrumbs", "values", 0, "category"), ("breadcrumbs", "values", 0, "data", "x"),
    ("breadcrumbs", "values", 0, "timestamp"), ("breadcrumbs", "values", 0, "message"),
    ("exception", "values", 0, "value"), ("exception", "values", 0, "type"),
    ("exception", "values", 0, "stacktrace", "frames", 0, "filename"),
    ("exception", "values", 0, "stacktrace", "frames", 0, "lineno"),
    ("release",), ("datetime",), ("tags",), ("request",),
])
@pytest.mark.parametrize("depth", [999, 1000])
def test_a_thousand_levels_deep_anywhere_renders(path: tuple[Any, ...], depth: int) -> None:
    body = copy.deepcopy(sample("event_alert-triggered.json"))
    place(body, path, nested(depth))
    render_everything(body)


def test_a_breadcrumb_shows_nested_data_within_its_bound() -> None:
    body = alert_body(breadcrumbs={"values": [
        {"level": "info", "category": "db", "data": {"rows": [1, 2, {"a": None}], "ok": True,
                                                     "deep": nested(50)}}]})
    _, text = rendered(body)
    line = text.split("### Breadcrumbs")[1].split("```text\n")[1].splitlines()[0]
    assert line.startswith("info db rows=[1, 2, {'a': None}] ok=True deep=")
    assert len(line) <= 160
