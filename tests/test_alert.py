"""Field extraction and validation of Sentry payloads (pure core)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from obsv.core.alert import (
    InvalidPayload,
    alert_from_delivery,
    alert_from_json,
    level_rank,
    validate_delivery,
)
from obsv.settings import Settings

from .conftest import ClientFactory, alert_body, post_signed, sample


def event_of(**fields: Any) -> dict[str, Any]:
    return alert_body(**fields)


def test_documented_sample() -> None:
    alert = alert_from_delivery(sample("event_alert-triggered.json"))
    assert alert.sentry_issue_id == "1117540176"
    assert alert.event_id == "e4874d664c3540c1a32eab185f12c5ab"
    assert alert.level == "error"
    assert alert.project == "1"
    assert alert.title == "ReferenceError: heck is not defined"
    assert alert.culprit == "?(<anonymous>)"
    assert alert.web_url is not None
    assert alert.web_url.endswith("/events/e4874d664c3540c1a32eab185f12c5ab/")
    # The literal default fingerprint is never the key: the first hash is.
    assert alert.fingerprint_key == "1:hash:29f7ffc4903a8a990408b80a3b4c95a2"


def test_issue_id_from_issue_url_when_missing() -> None:
    body = event_of(issue_id=None, issue_url="https://sentry.io/api/0/issues/42/")
    assert alert_from_delivery(body).sentry_issue_id == "42"


def test_issue_id_from_web_url_when_no_issue_url() -> None:
    body = event_of(issue_id=None, issue_url=None,
                    web_url="https://sentry.io/organizations/o/issues/77/events/abc/")
    assert alert_from_delivery(body).sentry_issue_id == "77"


def test_issue_id_from_first_hash_as_last_resort() -> None:
    body = event_of(issue_id=None, issue_url=None, web_url=None, hashes=["h1", "h2"])
    assert alert_from_delivery(body).sentry_issue_id == "h1"


def test_no_issue_id_at_all_is_invalid() -> None:
    body = event_of(issue_id=None, issue_url=None, web_url=None, hashes=[])
    with pytest.raises(InvalidPayload) as caught:
        alert_from_delivery(body)
    assert caught.value.missing == ["data.event.issue_id"]


def test_integer_issue_id_is_accepted_as_text() -> None:
    assert alert_from_delivery(event_of(issue_id=99)).sentry_issue_id == "99"


@pytest.mark.parametrize(
    ("fingerprint", "expected"),
    [
        (["{{ default }}"], "1:hash:h0"),
        (["{{default}}"], "1:hash:h0"),
        (["payment-timeout"], "1:fp:payment-timeout"),
        (["{{ default }}", "db"], "1:fp:h0|db"),
        (None, "1:hash:h0"),
        ([], "1:hash:h0"),
    ],
)
def test_fingerprint_key(fingerprint: list[str] | None, expected: str) -> None:
    body = event_of(fingerprint=fingerprint, hashes=["h0"])
    assert alert_from_delivery(body).fingerprint_key == expected


def test_fingerprint_key_falls_back_to_issue_id() -> None:
    body = event_of(fingerprint=["{{ default }}"], hashes=None)
    assert alert_from_delivery(body).fingerprint_key == "issue:1117540176"


def test_same_custom_fingerprint_in_two_projects_differs() -> None:
    a = alert_from_delivery(event_of(fingerprint=["x"], project=1))
    b = alert_from_delivery(event_of(fingerprint=["x"], project=2))
    assert a.fingerprint_key != b.fingerprint_key


def test_environment_from_field_or_tag() -> None:
    assert alert_from_delivery(event_of(environment="prod")).environment == "prod"
    tagged = event_of(tags=[["environment", "staging"], ["level", "error"]])
    assert alert_from_delivery(tagged).environment == "staging"
    assert alert_from_delivery(event_of()).environment is None


def test_level_missing_defaults_to_tag_then_error() -> None:
    assert alert_from_delivery(event_of(level=None, tags=[["level", "warning"]])).level == "warning"
    assert alert_from_delivery(event_of(level=None, tags=[])).level == "error"


def test_level_ranks_and_unknown_levels_count_as_error() -> None:
    assert level_rank("debug") < level_rank("info") < level_rank("warning")
    assert level_rank("warning") < level_rank("error") < level_rank("fatal")
    assert level_rank("WARN") == level_rank("warning")
    assert level_rank("bizarre") == level_rank("error")


@pytest.mark.parametrize(
    ("body", "resource", "missing", "invalid"),
    [
        ([], "event_alert", [], ["body"]),
        ("text", "event_alert", [], ["body"]),
        ({}, None, ["Sentry-Hook-Resource"], []),
        ({}, "event_alert", ["data.event"], []),
        ({"data": []}, "event_alert", [], ["data"]),
        ({"data": {"event": "x"}}, "event_alert", [], ["data.event"]),
        ({"data": {"event": {}}}, "event_alert",
         ["data.event.event_id", "data.event.issue_id"], []),
        ({"data": {"event": {"event_id": 5, "issue_id": "1"}}}, "event_alert", [],
         ["data.event.event_id"]),
        ({"data": {"event": {"event_id": "a", "issue_id": "1", "level": 3}}}, "event_alert",
         [], ["data.event.level"]),
        ({"data": {"event": {"event_id": "a", "issue_id": True}}}, "event_alert", [],
         ["data.event.issue_id"]),
        ({"data": {"event": {"event_id": "a", "issue_id": "1", "hashes": "h"}}}, "event_alert",
         [], ["data.event.hashes"]),
        ({"data": {"event": {"event_id": "a", "issue_id": "1", "fingerprint": [1]}}},
         "event_alert", [], ["data.event.fingerprint"]),
        ({"data": {"event": {"event_id": "a", "issue_id": "1", "tags": [["k"]]}}}, "event_alert",
         [], ["data.event.tags"]),
        ({"anything": 1}, "installation", [], []),
    ],
)
def test_validation_names_fields(body: object, resource: str | None, missing: list[str],
                                 invalid: list[str]) -> None:
    if not missing and not invalid:
        validate_delivery(resource, body)
        return
    with pytest.raises(InvalidPayload) as caught:
        validate_delivery(resource, body)
    assert caught.value.missing == missing
    assert caught.value.invalid == invalid


# An id longer than this bound is refused at the door (docs/reference.md §3 step 4): it
# becomes a marker in GitHub and a file name in the outbox, and no Sentry id is close.
LONG = 129


@pytest.mark.parametrize("fields", [
    {"issue_id": "x" * LONG},
    {"issue_id": int("9" * 19), "hashes": ["h" * LONG]},  # a long hash is fine unused
    {"issue_id": None, "issue_url": f"https://sentry.io/api/0/issues/{'1' * LONG}/"},
    {"issue_id": None, "issue_url": None,
     "web_url": f"https://sentry.io/organizations/o/issues/{'7' * LONG}/"},
    {"issue_id": None, "issue_url": None, "web_url": None, "hashes": ["漢" * LONG]},
], ids=["issue_id", "unused-hash", "issue_url", "web_url", "first-hash"])
def test_a_too_long_sentry_issue_id_is_invalid(fields: dict[str, Any]) -> None:
    body = event_of(**fields)
    if fields.get("issue_id") is not None and len(str(fields["issue_id"])) < LONG:
        assert alert_from_delivery(body).sentry_issue_id == str(fields["issue_id"])
        return
    with pytest.raises(InvalidPayload) as caught:
        alert_from_delivery(body)
    assert (caught.value.missing, caught.value.invalid) == ([], ["data.event.issue_id"])


def test_an_id_at_the_bound_is_accepted() -> None:
    body = event_of(issue_id=None, issue_url=None, web_url=None, hashes=["漢" * (LONG - 1)])
    assert alert_from_delivery(body).sentry_issue_id == "漢" * (LONG - 1)


async def test_a_too_long_id_is_422_and_nothing_is_recorded(make_client: ClientFactory,
                                                            settings: Settings) -> None:
    client = await make_client()
    before = settings.event_log.read_bytes()
    response = await post_signed(client, event_of(issue_id="x" * LONG))
    assert response.status == 422
    assert await response.json() == {"error": "invalid_payload", "missing": [],
                                      "invalid": ["data.event.issue_id"]}
    assert settings.event_log.read_bytes() == before


# -- alert_from_json: the typed decode of the bytes agrees with the dict path ------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.text()
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
# Tags of the documented shapes, with what the kept tags cut and drop: no value, empty
# values, keys and values over TAG_VALUE_KEPT, more than TAGS_KEPT of them.
_tag_keys = st.sampled_from(["level", "environment", "os", "k" * 201])
_tag_values = st.none() | st.sampled_from(["", "Fatal", "prod", "v" * 201])
_tag_pairs = st.tuples(_tag_keys, _tag_values).map(list)
_many_tags = st.lists(st.tuples(_tag_keys, st.sampled_from(["v", "v" * 201])).map(list),
                      min_size=62, max_size=68)
_tags = (st.lists(_tag_pairs, max_size=4) | _many_tags
         | st.dictionaries(_tag_keys, _tag_values, max_size=4))
_fields = st.fixed_dictionaries({}, optional={
    name: _json | good for name, good in {
        "event_id": st.sampled_from(["e" * 32, ""]),
        "level": st.sampled_from(["error", "Warn", ""]),
        "issue_id": st.sampled_from(["42", "", "9" * 129]) | st.integers(-3, 2**63 - 1),
        "hashes": st.sampled_from([["h1", "h2"], [], [""]]),
        "fingerprint": st.sampled_from([["{{ default }}", "x"], ["{{ default }}"],
                                        ["{{default}}"], ["a", "b"], []]),
        "tags": st.just([["level", "fatal"]]) | st.just({"environment": "prod"}) | _tags,
        "issue_url": st.just("https://s/issues/7/"),
        "web_url": st.just("https://s/organizations/o/issues/8/events/x/"),
        "url": st.just("https://s/api/0/projects/o/shop/events/x/"), "project": st.just(1),
        "environment": st.just("prod"), "title": st.just("T"), "culprit": st.just("c"),
        "release": st.just("1.2"), "exception": st.just({"values": [{"type": "E"}]}),
    }.items()})
_bodies = st.one_of(
    _json,
    st.builds(lambda event: {"data": {"event": event}}, _fields | _json),
    st.builds(lambda data: {"data": data}, _json),
)


def _outcome(call: Any) -> tuple[str, Any]:
    try:
        return "alert", call()
    except InvalidPayload as problem:
        return "invalid", (problem.missing, problem.invalid)


@given(body=_bodies)
def test_the_bytes_of_a_body_give_what_its_parsed_json_gives(body: Any) -> None:
    """The 422 still names every missing and invalid field, whichever way is taken."""
    raw = orjson.dumps(body)
    assert _outcome(lambda: alert_from_json(raw)) == _outcome(
        lambda: alert_from_delivery(body))


@settings(max_examples=300)
@given(tags=_tags, level=st.sampled_from([None, "Warn"]),
       environment=st.sampled_from([None, "", "staging"]),
       fingerprint=st.sampled_from([None, ["{{ default }}"], ["{{default}}", "x"], ["a"]]))
def test_a_usable_event_from_bytes_keeps_the_same_tags_level_and_key(
        tags: Any, level: str | None, environment: str | None,
        fingerprint: list[str] | None) -> None:
    """Usable events, as nearly all are: the typed decode's own tags, level, environment
    and fingerprint key agree with the dict path's (cut, dropped and looked up alike)."""
    event = {"event_id": "e" * 32, "issue_id": "42", "hashes": ["h1"], "tags": tags,
             "level": level, "environment": environment, "fingerprint": fingerprint}
    body = {"data": {"event": {k: v for k, v in event.items() if v is not None}}}
    assert alert_from_json(orjson.dumps(body)) == alert_from_delivery(body)


def test_the_documented_sample_from_bytes() -> None:
    raw = orjson.dumps(sample("event_alert-triggered.json"))
    assert alert_from_json(raw) == alert_from_delivery(sample("event_alert-triggered.json"))


def test_bytes_that_are_not_json_are_a_value_error() -> None:
    with pytest.raises(ValueError):
        alert_from_json(b'{"data": ')


@pytest.mark.parametrize("raw", [
    b'{"data":{"event":{"event_id":"e","x":' + b"[" * 100_000 + b"]" * 100_000 + b"}}}",
    b'{"data":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    b'{"data":{"event":{"event_id":"\xff"}}}',
], ids=["deep-skipped", "deep-data", "not-utf8"])
def test_hostile_bytes_are_a_value_error_never_a_crash(raw: bytes) -> None:
    """What the ingress answers 400 invalid_json for, as it does for orjson's refusals."""
    with pytest.raises(ValueError):
        alert_from_json(raw)


def test_a_fingerprint_too_long_to_be_a_key_is_keyed_by_its_sha256() -> None:
    """docs/reference.md §5: a key stays small whatever the body spells; a thousand
    defaults over a long hash would otherwise make a key a thousand hashes long."""
    from obsv.core.alert import FINGERPRINT_KEY_MAX, fingerprint_key

    short = fingerprint_key(["checkout", "{{ default }}"], ["ab" * 16], "1", "9")
    assert short == "1:fp:checkout|" + "ab" * 16  # as before: spelled out
    hashes = ["h" * 10_000]
    many = ["checkout"] + ["{{ default }}"] * 1000
    key = fingerprint_key(many, hashes, "1", "9")
    assert key.startswith("1:fp:sha256:") and len(key) == len("1:fp:sha256:") + 64
    assert key == fingerprint_key(list(many), list(hashes), "1", "9")  # the same error
    assert key != fingerprint_key(many[:-1], hashes, "1", "9")  # another fingerprint
    assert key != fingerprint_key(many, ["g" * 10_000], "1", "9")  # another grouping
    long_hash = fingerprint_key(["{{ default }}"], ["x" * (FINGERPRINT_KEY_MAX + 1)], "1", "9")
    assert long_hash.startswith("1:hash:sha256:") and len(long_hash) < 100
    edge = "y" * (FINGERPRINT_KEY_MAX - 1)
    assert fingerprint_key([edge], [], "1", "9") == f"1:fp:{edge}"


async def test_free_text_is_kept_bounded_and_the_body_whole(
        make_client: ClientFactory, settings: Settings) -> None:
    """Rule 5: what the alert record and the state keep of a huge title, culprit, URL,
    level and environment is cut; the raw body, stored as it came, keeps everything."""
    from obsv.core.alert import TAG_VALUE_KEPT, TEXT_KEPT, URL_KEPT

    from .conftest import read_log

    client = await make_client()
    body = alert_body(title="T" * 100_000, culprit="C" * 100_000,
                      web_url="https://sentry.io/" + "u" * 100_000,
                      level="Q" * 10_000, environment="E" * 10_000)
    response = await post_signed(client, body)
    assert response.status == 202
    record = next(r for r in read_log(settings.event_log) if r["type"] == "alert.received")
    alert = record["alert"]
    assert (alert["title"], alert["culprit"]) == ("T" * TEXT_KEPT, "C" * TEXT_KEPT)
    assert len(alert["web_url"]) == URL_KEPT
    assert (alert["level"], alert["environment"]) == ("q" * TAG_VALUE_KEPT,
                                                     "E" * TAG_VALUE_KEPT)
    assert orjson.loads(record["raw"]) == body


@pytest.mark.parametrize(("length", "status"), [(128, 202), (129, 422)])
async def test_an_event_id_longer_than_any_sentry_sends_is_refused(
        make_client: ClientFactory, length: int, status: int) -> None:
    """Rule 3: an event id is remembered for redeliveries; cut, two events would be one."""
    client = await make_client()
    response = await post_signed(client, alert_body(event_id="e" * length))
    assert response.status == status
    if status == 422:
        assert (await response.json())["invalid"] == ["data.event.event_id"]
