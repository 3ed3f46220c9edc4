"""Hostile input through the real app: never a 5xx, never an unsigned record,
and the log always parses."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from obsv.settings import Settings

from .conftest import (
    ClientFactory,
    alert_body,
    assert_contiguous,
    deliveries,
    sentry_bytes,
    signed_headers,
)

PROPERTY_SETTINGS = settings(
    max_examples=60, deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text()
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)

# Each field Sentry documents, with values of any type (mostly wrong ones).
event_fields = st.fixed_dictionaries({}, optional={
    "event_id": json_values, "level": json_values, "issue_id": json_values,
    "hashes": json_values, "fingerprint": json_values, "tags": json_values,
    "issue_url": json_values, "web_url": json_values, "project": json_values,
    "environment": json_values, "title": json_values,
})

resources = st.sampled_from(["event_alert", "installation", "issue", "", "ev\u00e9nt"])


def check_log(settings_: Settings, accepted: int) -> None:
    assert_contiguous(settings_.event_log)
    assert len(deliveries(settings_.event_log)) == accepted




@PROPERTY_SETTINGS
@given(raw=st.binary(max_size=2048))
async def test_unsigned_bytes_are_rejected_and_never_recorded(
        make_client: ClientFactory, settings: Settings, raw: bytes) -> None:
    client = await make_client()
    response = await client.post("/webhooks/sentry", data=raw,
                                 headers={"Sentry-Hook-Resource": "event_alert",
                                          "Sentry-Hook-Signature": "0" * 64})
    assert response.status == 401
    await client.close()
    check_log(settings, 0)


@PROPERTY_SETTINGS
@given(raw=st.binary(max_size=2048), resource=resources)
async def test_signed_bytes_never_5xx(make_client: ClientFactory, settings: Settings,
                                      raw: bytes, resource: str) -> None:
    client = await make_client()
    before = len(deliveries(settings.event_log))
    response = await client.post("/webhooks/sentry", data=raw,
                                 headers=signed_headers(raw, resource))
    assert response.status in (200, 202, 400, 422)
    await client.close()
    check_log(settings, before + (response.status in (200, 202)))


@PROPERTY_SETTINGS
@given(body=json_values, resource=resources)
async def test_signed_json_never_5xx(make_client: ClientFactory, settings: Settings,
                                     body: Any, resource: str) -> None:
    client = await make_client()
    before = len(deliveries(settings.event_log))
    raw = sentry_bytes(body)
    response = await client.post("/webhooks/sentry", data=raw,
                                 headers=signed_headers(raw, resource))
    assert response.status in (200, 202, 422), await response.text()
    if response.status == 422:
        answer = await response.json()
        assert answer["error"] == "invalid_payload" and (answer["missing"] or answer["invalid"])
    await client.close()
    check_log(settings, before + (response.status in (200, 202)))


@PROPERTY_SETTINGS
@given(fields=event_fields)
async def test_sentry_shaped_payloads_with_wrong_types(
        make_client: ClientFactory, settings: Settings, fields: dict[str, Any]) -> None:
    client = await make_client()
    before = len(deliveries(settings.event_log))
    body = alert_body()
    body["data"]["event"] = fields
    raw = sentry_bytes(body)
    response = await client.post("/webhooks/sentry", data=raw, headers=signed_headers(raw))
    assert response.status in (202, 422), await response.text()
    await client.close()
    records = deliveries(settings.event_log)
    check_log(settings, before + (response.status == 202))
    if response.status == 202:
        assert records[-1]["raw"].encode() == raw
        assert isinstance(records[-1]["alert"]["sentry_issue_id"], str)
