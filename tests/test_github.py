"""The real gidgethub client against the fake GitHub on loopback: every fault ends in
exactly one issue or comment per decision, all recorded in the log."""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from obsv.server import SINK
from obsv.settings import Settings

from .conftest import FakeClock, post_signed, wait_until
from .fakes import FAST, FakeGitHub, Fault, Service, start_service_against


@pytest.fixture
def start_service(aiohttp_client: Any, settings: Settings, github: FakeGitHub) -> Any:
    async def start(**options: Any) -> Service:
        return await start_service_against(github, aiohttp_client, settings, **options)
    return start


async def test_alert_opens_one_labelled_issue(start_service: Any, github: FakeGitHub) -> None:
    service = await start_service()
    seq = await service.alert("a" * 32)
    await wait_until(lambda: len(service.records("issue.opened")) == 1)
    [issue] = github.issues
    assert issue["title"] == "[error] ReferenceError — <anonymous>:3"
    assert [label["name"] for label in issue["labels"]] == ["agent:builder"]
    assert issue["body"].rstrip().endswith("<!-- obsv:sentry-issue=1117540176 -->")
    [record] = service.records("issue.opened")
    assert record == {**record, "alert_seq": seq, "repo": "acme/shop", "number": 1,
                      "url": "https://github.com/acme/shop/issues/1", "dry_run": False}
    assert "agent:builder" in github.labels
    assert github.schema_errors == []
    assert [r.headers["Authorization"] for r in github.requests("create_issue")] == [
        "token test-token"]
    counted = 'obsv_issues_opened_total{dry_run="false"} 1.0'
    text = ""
    for _ in range(100):  # the counter moves just after the record is durable
        text = await (await service.client.get("/metrics")).text()
        if counted in text:
            break
        await asyncio.sleep(0.02)
    assert counted in text
    assert 'obsv_github_requests_total{endpoint="create_issue",status="201"} 1.0' in text


async def test_labels_are_created_at_startup(start_service: Any, github: FakeGitHub) -> None:
    await start_service(github_labels=("agent:builder", "sentry"))
    await wait_until(lambda: set(github.labels) == {"agent:builder", "sentry"})
    assert github.issues == []
    assert [r.body["name"] for r in github.requests("create_label")] == ["agent:builder",
                                                                          "sentry"]


async def test_existing_labels_are_left_alone(start_service: Any, github: FakeGitHub) -> None:
    github.labels["agent:builder"] = {"name": "agent:builder", "color": "ffffff"}
    service = await start_service()
    await service.alert("a" * 32)
    await wait_until(lambda: len(service.records("issue.opened")) == 1)
    assert github.requests("create_label") == []
    assert github.labels["agent:builder"]["color"] == "ffffff"


async def test_a_refused_label_does_not_stop_the_issue(start_service: Any,
                                                       github: FakeGitHub) -> None:
    github.fail("create_label", Fault(403, message="Resource not accessible by integration"),
                Fault(403, message="Resource not accessible by integration"))
    service = await start_service()
    await service.alert("a" * 32)
    await wait_until(lambda: len(service.records("issue.opened")) == 1)
    assert len(github.issues) == 1 and service.records("issue.failed") == []


async def test_recurrence_posts_one_comment(start_service: Any, github: FakeGitHub) -> None:
    clock = FakeClock(datetime.now(UTC))
    service = await start_service(clock=clock, cooldown_seconds=60)
    await service.alert("a" * 32)
    await service.alert("b" * 32)  # cooldown
    await wait_until(lambda: len(service.records("issue.opened")) == 1)
    clock.advance(seconds=61)
    seq = await service.alert("c" * 32)
    await wait_until(lambda: len(service.records("comment.posted")) == 1)
    [comment] = github.comments[1]
    assert "1 more alert of this issue arrived during the cooldown" in comment["body"]
    assert f"<!-- obsv:comment-for-alert={seq} -->" in comment["body"]
    [record] = service.records("comment.posted")
    assert (record["number"], record["comment_id"]) == (1, comment["id"])
    assert github.schema_errors == []


async def test_5xx_then_success_opens_one_issue(start_service: Any, github: FakeGitHub) -> None:
    github.fail("create_issue", Fault(502))
    service = await start_service()
    await service.alert("a" * 32)
    await wait_until(lambda: len(service.records("issue.opened")) == 1)
    assert len(github.issues) == 1
    assert len(github.requests("create_issue")) == 2
    assert len(github.requests("list_issues")) == 1  # looked before posting again
    assert service.records("issue.failed") == []
    text = await (await service.client.get("/metrics")).text()
    assert 'obsv_github_retries_total{status="502"} 1.0' in text
    assert 'obsv_github_requests_total{endpoint="create_issue",status="502"} 1.0' in text


async def test_created_but_answered_502_is_reconciled(start_service: Any,
                                                      github: FakeGitHub) -> None:
    github.fail("create_issue", Fault(502, apply_anyway=True))
    service = await start_service()
    await service.alert("a" * 32)
    await wait_until(lambda: len(service.records("issue.opened")) == 1)
    assert len(github.issues) == 1
    assert len(github.requests("create_issue")) == 1
    assert service.records("issue.opened")[0]["number"] == 1


async def test_timeout_after_creation_is_reconciled(start_service: Any,
                                                    github: FakeGitHub) -> None:
    github.fail("create_issue", Fault(201, apply_anyway=True, delay=3.0))
    service = await start_service()
    await service.alert("a" * 32)
    await wait_until(lambda: len(service.records("issue.opened")) == 1)
    assert len(github.issues) == 1 and len(github.requests("create_issue")) == 1


async def test_secondary_rate_limit_honours_retry_after(start_service: Any,
                                                        github: FakeGitHub) -> None:
    github.fail("create_issue", Fault(403, {"retry-after": "1"},
                                      "You have exceeded a secondary rate limit"))
    service = await start_service()
    await service.alert("a" * 32)
    await wait_until(lambda: len(service.records("issue.opened")) == 1)
    first, second = github.requests("create_issue")
    assert second.at - first.at >= 1.0
    assert len(github.issues) == 1
    assert github.requests("list_issues") == []  # a rate limit never reached GitHub's data


async def test_primary_rate_limit_waits_for_reset(start_service: Any,
                                                  github: FakeGitHub) -> None:
    reset = int(time.time()) + 2
    github.fail("create_issue", Fault(403, {"x-ratelimit-remaining": "0",
                                            "x-ratelimit-limit": "5000",
                                            "x-ratelimit-reset": str(reset)},
                                      "API rate limit exceeded"))
    service = await start_service()
    await service.alert("a" * 32)
    await wait_until(lambda: len(service.records("issue.opened")) == 1)
    first, second = github.requests("create_issue")
    assert first.wall < reset <= second.wall + 0.01  # not before GitHub's reset time
    assert len(github.issues) == 1


async def test_long_rate_limit_ends_the_round_with_its_time(
        start_service: Any, github: FakeGitHub) -> None:
    github.fail("create_issue", Fault(429, {"retry-after": "600"}, "slow down"))
    clock = FakeClock(datetime(2026, 6, 1, tzinfo=UTC))
    service = await start_service(clock=clock)
    await service.alert("a" * 32)
    await wait_until(lambda: len(service.records("issue.failed")) == 1)
    [failed] = service.records("issue.failed")
    assert failed["retryable"] is True and failed["status"] == 429
    assert failed["next_attempt_at"] == "2026-06-01T00:10:00.000000Z"
    assert len(github.requests("create_issue")) == 1


async def test_422_is_permanent_and_unlinks(start_service: Any, github: FakeGitHub) -> None:
    github.fail("create_issue", Fault(422, message="Validation Failed"))
    service = await start_service(cooldown_seconds=3600)
    seq = await service.alert("a" * 32)
    await wait_until(lambda: len(service.records("issue.failed")) == 1)
    [failed] = service.records("issue.failed")
    assert (failed["alert_seq"], failed["retryable"], failed["status"]) == (seq, False, 422)
    assert failed["next_attempt_at"] is None and "Validation Failed" in failed["error"]
    assert len(github.requests("create_issue")) == 1
    # No linked issue is left, so the next alert opens afresh instead of cooling down.
    again = await service.alert("b" * 32)
    await wait_until(lambda: len(service.records("issue.opened")) == 1)
    decisions = {r["alert_seq"]: r["reason"] for r in service.records("alert.decided")}
    assert decisions[again] == "new_issue"


async def test_github_down_longer_than_a_round_then_back(start_service: Any,
                                                         github: FakeGitHub) -> None:
    github.fail("create_issue", Fault(503), Fault(503), Fault(503))
    clock = FakeClock(datetime(2026, 6, 1, tzinfo=UTC))
    service = await start_service(clock=clock)
    await service.alert("a" * 32)
    await wait_until(lambda: len(service.records("issue.failed")) == 1)
    [failed] = service.records("issue.failed")
    assert (failed["attempt"], failed["retryable"], failed["status"]) == (3, True, 503)
    assert failed["next_attempt_at"] == "2026-06-01T00:00:30.000000Z"
    assert github.issues == []
    clock.advance(seconds=31)
    await wait_until(lambda: len(service.records("issue.opened")) == 1)
    assert len(github.issues) == 1


async def test_nothing_listening_is_retryable(start_service: Any) -> None:
    from .process import free_port

    service = await start_service(github_api_url=f"http://127.0.0.1:{free_port()}")
    await service.alert("a" * 32)
    await wait_until(lambda: len(service.records("issue.failed")) == 1, timeout=15)
    [failed] = service.records("issue.failed")
    assert failed["retryable"] is True and failed["status"] is None
    assert "cannot connect" in failed["error"]


async def test_writes_are_spaced(start_service: Any, github: FakeGitHub) -> None:
    service = await start_service(retry=replace(FAST, write_interval=0.3))
    for n in range(3):
        await service.alert(f"{n:032x}", issue_id=str(n), hashes=[f"h{n}"])
    await wait_until(lambda: len(service.records("issue.opened")) == 3)
    writes = [r.at for r in github.journal if r.method == "POST"]
    assert len(writes) >= 4  # a label and three issues
    assert min(b - a for a, b in itertools.pairwise(writes)) >= 0.29


def _app_key(tmp_path: Path) -> tuple[Path, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    path = tmp_path / "app.pem"
    path.write_bytes(pem)
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return path, public.decode()


async def test_github_app_token_is_fetched_once_and_refreshed(
        tmp_path: Path, start_service: Any, github: FakeGitHub) -> None:
    key_path, public_key = _app_key(tmp_path)
    github.app_id, github.app_public_key = "4242", public_key
    clock = FakeClock(datetime.now(UTC))
    service = await start_service(
        clock=clock, github_token=None, github_app_id="4242",
        github_app_private_key_path=key_path, github_installation_id="77")
    for n in range(2):
        await service.alert(f"{n:032x}", issue_id=str(n), hashes=[f"h{n}"])
    await wait_until(lambda: len(service.records("issue.opened")) == 2)
    [token_request] = github.requests("token")
    assert token_request.path == "/app/installations/77/access_tokens"
    issued = {r.headers["Authorization"] for r in github.requests("create_issue")}
    assert len(issued) == 1 and next(iter(issued)).startswith("token ghs_installation_")

    clock.advance(hours=1)  # past expiry minus the margin: a new token
    await service.alert("f" * 32, issue_id="9", hashes=["h9"])
    await wait_until(lambda: len(service.records("issue.opened")) == 3)
    assert len(github.requests("token")) == 2


async def test_revoked_token_is_refreshed_once_on_401(
        tmp_path: Path, start_service: Any, github: FakeGitHub) -> None:
    key_path, public_key = _app_key(tmp_path)
    github.app_id, github.app_public_key = "4242", public_key
    service = await start_service(
        github_token=None, github_app_id="4242", github_app_private_key_path=key_path,
        github_installation_id="77")
    await service.alert("a" * 32, issue_id="1", hashes=["h1"])
    await wait_until(lambda: len(service.records("issue.opened")) == 1)
    github.tokens = {}  # GitHub forgets the installation token
    await service.alert("b" * 32, issue_id="2", hashes=["h2"])
    await wait_until(lambda: len(service.records("issue.opened")) == 2)
    assert len(github.requests("token")) == 2
    assert service.records("issue.failed") == []


async def test_secrets_never_reach_the_logs(start_service: Any, github: FakeGitHub,
                                            capfd: pytest.CaptureFixture[str]) -> None:
    github.fail("create_issue", Fault(401, message="Bad credentials"), Fault(401))
    service = await start_service()
    await service.alert("a" * 32)
    await wait_until(lambda: len(service.records("issue.failed")) == 1)
    out, err = capfd.readouterr()
    assert "test-token" not in out + err
    assert "test-token" not in service.log.read_text()
    assert service.records("issue.failed")[0]["retryable"] is False


async def test_restart_with_a_pending_open_looks_before_posting(
        start_service: Any, github: FakeGitHub) -> None:
    hold = asyncio.Event()
    github.fail("create_issue", Fault(201, apply_anyway=True, hold=hold))
    service = await start_service()
    await service.alert("a" * 32)
    await asyncio.wait_for(github.arrived["create_issue"].wait(), 10)
    await service.client.close()  # stopped mid-request: no answer, nothing recorded
    hold.set()  # ... but GitHub did create the issue
    await wait_until(lambda: len(github.issues) == 1)
    assert service.records("issue.opened") == []

    service = await start_service()
    await wait_until(lambda: len(service.records("issue.opened")) == 1)
    assert len(github.issues) == 1 and len(github.requests("create_issue")) == 1
    assert service.records("issue.opened")[0]["number"] == 1




async def test_metrics_after_a_scripted_sequence(start_service: Any, github: FakeGitHub) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    github.fail("create_issue", Fault(502))
    service = await start_service(cooldown_seconds=3600)
    await service.alert("a" * 32)
    await service.alert("b" * 32)
    bad = await service.client.post("/webhooks/sentry", data=b"{}", headers={
        "Sentry-Hook-Resource": "event_alert", "Sentry-Hook-Signature": "0" * 64})
    assert bad.status == 401
    hook = await post_signed(service.client, {"action": "created"}, resource="installation")
    assert hook.status == 200
    await wait_until(lambda: len(service.records("issue.opened")) == 1)

    def samples() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    for _ in range(100):
        text = await (await service.client.get("/metrics")).text()
        if samples().get(("obsv_pending_intents", ())) == 0:
            break
        await asyncio.sleep(0.02)
    values = samples()
    assert values[("obsv_deliveries_total", (("resource", "event_alert"), ("status", "202")))] == 2
    assert values[("obsv_deliveries_total", (("resource", "event_alert"), ("status", "401")))] == 1
    assert values[("obsv_deliveries_total", (("resource", "installation"), ("status", "200")))] == 1
    assert values[("obsv_alerts_decided_total", (("action", "open"), ("reason", "new_issue")))] == 1
    assert values[("obsv_alerts_decided_total",
                   (("action", "suppress"), ("reason", "cooldown")))] == 1
    assert values[("obsv_github_requests_total",
                   (("endpoint", "create_issue"), ("status", "502")))] == 1
    assert values[("obsv_github_requests_total",
                   (("endpoint", "create_issue"), ("status", "201")))] == 1
    assert values[("obsv_github_retries_total", (("status", "502"),))] == 1
    assert values[("obsv_issues_opened_total", (("dry_run", "false"),))] == 1
    assert values[("obsv_pending_intents", ())] == 0
    assert values[("obsv_consumer_lag_records", ())] == 0
    assert values[("obsv_log_bytes", ())] == service.log.stat().st_size
    assert values[("obsv_log_append_seconds_count", ())] == 3


async def test_a_stale_401_never_throws_away_a_fresh_app_token(
        tmp_path: Path, start_service: Any, github: FakeGitHub) -> None:
    """The poster and the poller may both hold the old installation token when GitHub
    revokes it: the first 401 fetches a new token; the second request's 401 (sent with
    the old one) must not discard that new token and fetch a third."""
    key_path, public_key = _app_key(tmp_path)
    github.app_id, github.app_public_key = "4242", public_key
    service = await start_service(
        github_token=None, github_app_id="4242", github_app_private_key_path=key_path,
        github_installation_id="77")
    await service.alert("a" * 32, issue_id="1", hashes=["h1"])
    await wait_until(lambda: len(service.records("issue.opened")) == 1)
    sink = service.client.server.app[SINK]
    old = await sink._auth.token(sink._api)
    github.tokens = {}  # GitHub revokes it
    sink._auth.invalidate(old)  # the first request's 401
    fresh = await sink._auth.token(sink._api)
    sink._auth.invalidate(old)  # a second request, sent with the old token, gets 401 too
    assert await sink._auth.token(sink._api) == fresh
    assert len(github.requests("token")) == 2
