"""Every answer of docs/reference.md §3 through the real app, and what each leaves in the log."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from typing import Any

import pytest

from obsv.core.signature import sign
from obsv.settings import Settings

from .conftest import (
    SAMPLES,
    ClientFactory,
    alert_body,
    assert_contiguous,
    deliveries,
    post_signed,
    sample,
    sentry_bytes,
    signed_headers,
)

VECTORS = json.loads((SAMPLES / "signature-vectors.json").read_text("utf-8"))


async def test_event_alert_is_recorded_then_answered_202(
        make_client: ClientFactory, settings: Settings) -> None:
    client = await make_client()
    body = alert_body()
    raw = sentry_bytes(body)
    response = await client.post("/webhooks/sentry", data=raw, headers={
        **signed_headers(raw), "Request-ID": "abc", "Sentry-Hook-Timestamp": "1700000000"})
    assert response.status == 202
    answer = await response.json()
    [record] = deliveries(settings.event_log)
    assert answer == {"status": "accepted", "seq": record["seq"]}
    assert record["type"] == "alert.received" and record["v"] == 1
    assert record["at"].endswith("Z") and len(record["at"]) == len("2026-01-01T00:00:00.000000Z")
    assert record["delivery"] == {"request_id": "abc", "resource": "event_alert",
                                  "hook_timestamp": "1700000000", "signature": sign(
                                      "test-secret-0123456789", raw)}
    assert record["raw"].encode("utf-8") == raw
    assert record["alert"] == {
        "sentry_issue_id": "1117540176", "event_id": "e" * 32, "level": "error",
        "fingerprint_key": "1:hash:29f7ffc4903a8a990408b80a3b4c95a2", "project": "1",
        "environment": None, "title": "ReferenceError: heck is not defined",
        "culprit": "?(<anonymous>)",
        "web_url": "https://sentry.io/organizations/test-org/issues/1117540176/events/"
                   "e4874d664c3540c1a32eab185f12c5ab/",
        # What routes and silences match on (docs/reference.md §8, §9).
        "project_slug": "front-end",
        "tags": [["browser", "Chrome 75.0.3770"], ["browser.name", "Chrome"],
                 ["handled", "no"], ["level", "error"], ["mechanism", "onerror"],
                 ["os", "Mac OS X 10.14.0"], ["os.name", "Mac OS X"],
                 ["user", "ip:162.217.75.90"], ["url", "https://null.jsbin.com/runner"]],
    }
    assert stat.S_IMODE(os.stat(settings.event_log).st_mode) == 0o600


async def test_signature_vector_bodies_are_accepted_byte_for_byte(
        make_client: ClientFactory, settings: Settings) -> None:
    client = await make_client(sentry_client_secret=VECTORS["client_secret"])
    answers = []
    for vector in VECTORS["vectors"]:
        response = await client.post("/webhooks/sentry", data=vector["raw_body"].encode(),
                                     headers=vector["headers"])
        answers.append(response.status)
    assert answers == [202, 200]
    records = deliveries(settings.event_log)
    assert [r["raw"] for r in records] == [v["raw_body"] for v in VECTORS["vectors"]]
    assert records[1]["type"] == "hook.received" and records[1]["action"] == "created"


@pytest.mark.parametrize("fixture", ["installation-created.json", "metric_alert-resolved.json",
                                     "error-created.json", "comment-created.json"])
async def test_other_resources_are_recorded_as_hooks_with_200(
        make_client: ClientFactory, settings: Settings, fixture: str) -> None:
    client = await make_client()
    resource = fixture.split("-")[0]
    response = await post_signed(client, sample(fixture), resource=resource)
    assert response.status == 200
    [record] = deliveries(settings.event_log)
    assert record["type"] == "hook.received"
    assert record["delivery"]["resource"] == resource


@pytest.mark.parametrize(("fixture", "action", "status", "substatus", "resolution"), [
    ("issue-created.json", "created", "unresolved", "escalating", None),
    ("issue-resolved.json", "resolved", "resolved", None, "now"),
    ("issue-resolved-in_next_release.json", "resolved", "resolved", None, "in_next_release"),
    ("issue-unresolved-regressed.json", "unresolved", "unresolved", "regressed", None),
    ("issue-ignored.json", "ignored", "ignored", "archived_forever", None),
])
async def test_sentry_issue_deliveries_are_recorded_as_sentry_issue_with_202(
        make_client: ClientFactory, settings: Settings, fixture: str, action: str, status: str,
        substatus: str | None, resolution: str | None) -> None:
    client = await make_client()
    body = sample(fixture)
    response = await post_signed(client, body, resource="issue")
    assert response.status == 202
    [record] = deliveries(settings.event_log)
    assert (await response.json()) == {"status": "accepted", "seq": record["seq"]}
    assert record["type"] == "sentry.issue"
    assert (record["action"], record["status"], record["substatus"],
            record["resolution_type"]) == (action, status, substatus, resolution)
    assert record["sentry_issue_id"] == str(body["data"]["issue"]["id"])
    assert record["raw"] == sentry_bytes(body).decode()


async def test_a_sentry_issue_delivery_without_an_issue_id_is_422(
        make_client: ClientFactory, settings: Settings) -> None:
    client = await make_client()
    body = sample("issue-resolved.json")
    del body["data"]["issue"]["id"]
    response = await post_signed(client, body, resource="issue")
    assert response.status == 422
    assert (await response.json())["missing"] == ["data.issue.id"]
    assert deliveries(settings.event_log) == []


async def test_unknown_resource_is_recorded_with_200(
        make_client: ClientFactory, settings: Settings) -> None:
    client = await make_client()
    response = await post_signed(client, {"action": "x"}, resource="seer")
    assert response.status == 200
    assert deliveries(settings.event_log)[0]["delivery"]["resource"] == "seer"


@pytest.mark.parametrize("signature", [None, "", "0" * 64, "not-hex"])
async def test_bad_signature_is_401_and_records_nothing(
        make_client: ClientFactory, settings: Settings, signature: str | None) -> None:
    client = await make_client()
    raw = sentry_bytes(alert_body())
    headers = signed_headers(raw)
    if signature is None:
        del headers["Sentry-Hook-Signature"]
    else:
        headers["Sentry-Hook-Signature"] = signature
    response = await client.post("/webhooks/sentry", data=raw, headers=headers)
    assert response.status == 401
    assert await response.json() == {"error": "invalid_signature"}
    assert deliveries(settings.event_log) == []


async def test_signature_is_checked_before_json(make_client: ClientFactory) -> None:
    client = await make_client()
    response = await client.post("/webhooks/sentry", data=b"{not json",
                                 headers={"Sentry-Hook-Resource": "event_alert",
                                          "Sentry-Hook-Signature": "00"})
    assert response.status == 401


async def test_wrong_secret_is_401(make_client: ClientFactory, settings: Settings) -> None:
    client = await make_client()
    raw = sentry_bytes(alert_body())
    headers = signed_headers(raw, secret="another-secret")
    response = await client.post("/webhooks/sentry", data=raw, headers=headers)
    assert response.status == 401
    assert deliveries(settings.event_log) == []


@pytest.mark.parametrize("raw", [b"{not json", b"\xff\xfe{}", b"", b'{"a":1} trailing'])
async def test_signed_garbage_is_400(make_client: ClientFactory, settings: Settings,
                                     raw: bytes) -> None:
    client = await make_client()
    response = await client.post("/webhooks/sentry", data=raw, headers=signed_headers(raw))
    assert response.status == 400
    assert await response.json() == {"error": "invalid_json"}
    assert deliveries(settings.event_log) == []


async def test_unusable_payload_is_422_naming_fields(
        make_client: ClientFactory, settings: Settings) -> None:
    client = await make_client()
    body = alert_body(level=7, hashes="nope")
    del body["data"]["event"]["event_id"]
    response = await post_signed(client, body)
    assert response.status == 422
    assert await response.json() == {
        "error": "invalid_payload",
        "missing": ["data.event.event_id"],
        "invalid": ["data.event.level", "data.event.hashes"],
    }
    assert deliveries(settings.event_log) == []


async def test_missing_resource_header_is_422(make_client: ClientFactory) -> None:
    client = await make_client()
    raw = sentry_bytes(alert_body())
    headers = signed_headers(raw)
    del headers["Sentry-Hook-Resource"]
    response = await client.post("/webhooks/sentry", data=raw, headers=headers)
    assert response.status == 422
    assert (await response.json())["missing"] == ["Sentry-Hook-Resource"]


async def test_non_object_body_is_422_body(make_client: ClientFactory) -> None:
    client = await make_client()
    response = await post_signed(client, [1, 2, 3])
    assert response.status == 422
    assert (await response.json())["invalid"] == ["body"]


async def test_oversized_body_is_413_from_content_length(
        make_client: ClientFactory, settings: Settings) -> None:
    client = await make_client(max_body_bytes=1000)
    raw = sentry_bytes(alert_body(title="x" * 2000))
    response = await client.post("/webhooks/sentry", data=raw, headers=signed_headers(raw))
    assert response.status == 413
    assert deliveries(settings.event_log) == []


async def test_oversized_chunked_body_is_413(make_client: ClientFactory,
                                             settings: Settings) -> None:
    client = await make_client(max_body_bytes=1000)
    raw = sentry_bytes(alert_body(title="x" * 5000))

    async def chunks() -> Any:
        for start in range(0, len(raw), 256):
            yield raw[start:start + 256]

    response = await client.post("/webhooks/sentry", data=chunks(), headers=signed_headers(raw))
    assert response.status == 413
    assert deliveries(settings.event_log) == []


async def test_body_exactly_at_limit_is_accepted(make_client: ClientFactory) -> None:
    raw = sentry_bytes(alert_body())
    client = await make_client(max_body_bytes=len(raw))
    response = await client.post("/webhooks/sentry", data=raw, headers=signed_headers(raw))
    assert response.status == 202


async def test_concurrent_deliveries_get_contiguous_seqs(
        make_client: ClientFactory, settings: Settings) -> None:
    client = await make_client()
    bodies = [alert_body(event_id=f"{i:032x}") for i in range(200)]
    responses = await asyncio.gather(*(post_signed(client, b) for b in bodies))
    assert [r.status for r in responses] == [202] * 200
    seq_by_event = {}
    for body, response in zip(bodies, responses, strict=True):
        seq_by_event[body["data"]["event"]["event_id"]] = (await response.json())["seq"]
    assert_contiguous(settings.event_log)
    records = deliveries(settings.event_log)
    assert len(records) == 200
    assert {r["alert"]["event_id"]: r["seq"] for r in records} == seq_by_event


async def test_health_and_readiness(make_client: ClientFactory) -> None:
    client = await make_client()
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/readyz")).status == 200


async def test_metrics_count_deliveries_by_status(make_client: ClientFactory) -> None:
    client = await make_client()
    await post_signed(client, alert_body())
    await client.post("/webhooks/sentry", data=b"{}", headers={"Sentry-Hook-Resource": "x"})
    text = await (await client.get("/metrics")).text()
    assert 'obsv_deliveries_total{resource="event_alert",status="202"} 1.0' in text
    assert 'obsv_deliveries_total{resource="other",status="401"} 1.0' in text


async def test_get_on_webhook_is_405(make_client: ClientFactory) -> None:
    client = await make_client()
    assert (await client.get("/webhooks/sentry")).status == 405


async def test_undecodable_header_bytes_are_recorded_safely(
        make_client: ClientFactory, settings: Settings) -> None:
    """Headers with bytes that are not UTF-8 must not break the delivery or its batch."""
    client = await make_client()
    raw = sentry_bytes(alert_body())
    good = sentry_bytes(alert_body(event_id="f" * 32))
    # aiohttp's client would refuse such a header, so write the request by hand.
    reader, writer = await asyncio.open_connection(client.host, client.port)
    head = (f"POST /webhooks/sentry HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Sentry-Hook-Resource: event_alert\r\n"
            f"Sentry-Hook-Signature: {sign('test-secret-0123456789', raw)}\r\n"
            f"Content-Length: {len(raw)}\r\nConnection: close\r\n").encode()
    writer.write(head + b"Request-ID: caf\xe9-\xff\r\n\r\n" + raw)
    other = post_signed(client, good, request_id="plain")
    answer, other_response = await asyncio.gather(reader.read(), other)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 202"), answer[:200]
    assert other_response.status == 202
    records = deliveries(settings.event_log)
    assert {r["delivery"]["request_id"] for r in records} == {"caf\ufffd-\ufffd", "plain"}


@pytest.mark.parametrize("encoding", ["deflate", "gzip"])
async def test_a_body_that_does_not_decode_is_400(make_client: ClientFactory, settings: Settings,
                                                  encoding: str) -> None:
    client = await make_client()
    raw = b"this is not " + encoding.encode() + b" data" * 50
    response = await client.post("/webhooks/sentry", data=raw, headers={
        **signed_headers(raw), "Content-Encoding": encoding})
    assert response.status == 400
    assert await response.json() == {"error": "invalid_json"}
    assert response.headers["Connection"] == "close"  # the rest of that body is never read
    assert deliveries(settings.event_log) == []
    assert (await post_signed(client, alert_body())).status == 202  # the server is fine
