"""The storm digest end to end (docs/reference.md §5): the real server and GitHub sink
against the fake GitHub over HTTP, alert time driven by a FakeClock."""

from __future__ import annotations

import itertools
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from obsv.core.codec import parse_time
from obsv.settings import Settings

from .conftest import (
    SECRET,
    FakeClock,
    alert_body,
    post_signed,
    records_of,
    sentry_bytes,
    signed_headers,
    wait_until,
)
from .fakes import FakeGitHub, Fault, Service, label_names, start_service_against
from .process import ServeProcess

T0 = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
STORM = 100
BUDGET = 5
SPACING = 20  # seconds of alert time between alerts: the storm lasts 33 minutes


@pytest.fixture
async def github() -> AsyncIterator[FakeGitHub]:
    fake = FakeGitHub()
    await fake.start()
    yield fake
    await fake.close()


def fields(n: int) -> dict[str, Any]:
    """A distinct Sentry issue."""
    return {"issue_id": str(1000 + n), "hashes": [f"{n:032x}"],
            "web_url": f"https://sentry.io/organizations/acme/issues/{1000 + n}/"}


def replay(service: Service, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "obsv", "replay", str(service.log), *args],
                          capture_output=True, text=True, timeout=60, check=False,
                          env={"PATH": "/usr/bin:/bin"})


def obsv_cli(service: Service, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "obsv", *args, "--log", str(service.log)],
                          capture_output=True, text=True, timeout=60, check=False,
                          env={"PATH": "/usr/bin:/bin"})


def storm_done(service: Service) -> bool:
    """Every storm decision is recorded and posted."""
    storms = {r["seq"] for r in service.records("storm.decided")}
    posted = {r["alert_seq"] for kind in ("issue.opened", "comment.posted")
              for r in service.records(kind)}
    return bool(storms) and storms <= posted


async def test_a_storm_of_100_new_issues_opens_5_issues_and_one_digest(
        aiohttp_client: Any, settings: Settings, github: FakeGitHub) -> None:
    clock = FakeClock(T0)
    service = await start_service_against(github, aiohttp_client, settings, clock=clock,
                                          max_issues_per_hour=BUDGET, github_poll_seconds=0)
    # The first digest comment reaches GitHub but is answered 502: the retry must find
    # it by its marker instead of posting it twice.
    github.fail("create_comment", Fault(502, apply_anyway=True))
    for n in range(STORM):
        await service.alert(f"{n:032x}", **fields(n))
        clock.advance(seconds=SPACING)
    await wait_until(lambda: len(service.records("alert.decided")) == STORM)
    await wait_until(lambda: storm_done(service), timeout=30)

    decided = service.records("alert.decided")
    assert [r["reason"] for r in decided].count("new_issue") == BUDGET
    assert [r["reason"] for r in decided].count("storm_budget") == STORM - BUDGET
    # GitHub: the 5 issues, and one digest with the storm labels, never the agent label.
    assert len(github.issues) == BUDGET + 1
    [digest] = [i for i in github.issues if "storm" in i["title"]]
    assert label_names(digest) == ["obsv:storm"]
    assert all(label_names(i) == ["agent:builder"] for i in github.issues if i is not digest)

    storms = service.records("storm.decided")
    assert [r["action"] for r in storms] == ["open"] + ["comment"] * (len(storms) - 1)
    assert len(storms) >= 3  # 33 minutes of storm: a comment every 10 minutes
    # Comments at least 10 minutes of alert time apart, the clock starting at the open.
    at_of = {r["seq"]: parse_time(r["at"]) for r in service.records("alert.received")}
    times = [at_of[r["alert_seq"]] for r in storms]
    assert all((b - a).total_seconds() >= 600 for a, b in itertools.pairwise(times))
    # Each suppressed Sentry issue listed once, in the digest or one of its comments.
    suppressed = [r["sentry_issue_id"] for r in decided if r["reason"] == "storm_budget"]
    listed = [i for r in storms for i in r["sentry_issue_ids"]]
    pending = suppressed[len(listed):]  # suppressed after the last digest post
    assert listed + pending == suppressed and len(pending) < 30
    comments = github.comments[digest["number"]]
    assert len(comments) == len(storms) - 1  # nothing posted twice despite the 502
    assert next(r.status for r in github.requests("create_comment")) == 502
    posted = digest["body"] + "".join(c["body"] for c in comments)
    for sentry_issue_id in listed:
        assert f"https://sentry.io/organizations/acme/issues/{sentry_issue_id}/" in posted
        assert posted.count(f"[Sentry issue {sentry_issue_id}]") == 1
    # The digest's posts name their storm.decided records.
    opened = [r for r in service.records("issue.opened") if r["alert_seq"] == storms[0]["seq"]]
    assert [(r["number"], r["url"]) for r in opened] == [(digest["number"], digest["html_url"])]
    assert sorted(r["alert_seq"] for r in service.records("comment.posted")) == [
        r["seq"] for r in storms[1:]]

    verified = replay(service, "--verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert f"{len(storms)} storm decisions" in verified.stdout + verified.stderr
    # replay and why say where a suppressed alert went: the digest that listed it.
    rows = [orjson.loads(line) for line in replay(service, "--json").stdout.splitlines()]
    digest_name = f"{digest['number']}"
    in_digest = [r for r in rows if r["reason"] == "storm_budget"
                 and r["github"] == f"(in the storm digest: #{digest_name})"]
    assert {r["sentry_issue_id"] for r in in_digest} == set(storms[0]["sentry_issue_ids"])
    why = obsv_cli(service, "why", storms[0]["sentry_issue_ids"][0])
    assert f"    listed in the storm digest: #{digest_name}  (storm.decided seq " \
        f"{storms[0]['seq']})" in why.stdout

    # A restart on the same log posts nothing again.
    writes = len(github.writes())
    await service.client.close()
    service = await start_service_against(github, aiohttp_client, settings, clock=clock,
                                          max_issues_per_hour=BUDGET, github_poll_seconds=0)
    await service.alert("f" * 32, **fields(STORM))  # one more suppression, within 10 min
    await wait_until(lambda: len(service.records("alert.decided")) == STORM + 1)
    assert len(github.writes()) == writes


async def test_a_digest_posted_when_the_process_was_killed_is_not_posted_again(
        tmp_path: Path, github: FakeGitHub) -> None:
    log_path = tmp_path / "events.jsonl"
    server = ServeProcess(tmp_path, {
        "OBSV_SENTRY_CLIENT_SECRET": SECRET, "OBSV_EVENT_LOG": str(log_path),
        "OBSV_GITHUB_TOKEN": "test-token", "OBSV_GITHUB_REPO": github.repo,
        "OBSV_GITHUB_API_URL": github.base_url, "OBSV_DRY_RUN": "false",
        "OBSV_MAX_ISSUES_PER_HOUR": "1", "OBSV_GITHUB_POLL_SECONDS": "0"})
    await server.start()
    try:
        async with aiohttp.ClientSession() as session:
            async def alert(n: int) -> None:
                raw = sentry_bytes(alert_body(event_id=f"{n:032x}", **fields(n)))
                async with session.post(server.url + "/webhooks/sentry", data=raw,
                                        headers=signed_headers(raw)) as response:
                    assert response.status == 202

            await alert(0)
            await wait_until(lambda: len(records_of(log_path, "issue.opened")) == 1, 20)
            # The digest is created on GitHub, but its answer never comes: killed meanwhile.
            github.fail("create_issue", Fault(502, apply_anyway=True, delay=30))
            await alert(1)
            await wait_until(lambda: len(github.issues) == 2, 20)
            server.kill()
            assert records_of(log_path, "storm.decided") != []
            assert len(records_of(log_path, "issue.opened")) == 1

            await server.start()
            await alert(2)  # in the same storm, within 10 minutes: no comment
            await wait_until(lambda: len(records_of(log_path, "issue.opened")) == 2, 20)
            await wait_until(lambda: len(records_of(log_path, "alert.decided")) == 3, 20)
    finally:
        server.stop()
    [storm] = records_of(log_path, "storm.decided")
    [_, digest] = github.issues
    assert "storm" in digest["title"] and len(github.requests("create_issue")) == 2
    assert [(r["alert_seq"], r["number"]) for r in records_of(log_path, "issue.opened")][1] == (
        storm["seq"], digest["number"])
    verified = subprocess.run([sys.executable, "-m", "obsv", "replay", str(log_path),
                               "--verify"], capture_output=True, text=True, timeout=60,
                              check=False, env={"PATH": "/usr/bin:/bin"})
    assert verified.returncode == 0, verified.stdout + verified.stderr


async def test_a_dry_run_writes_the_digest_and_its_comments_to_the_outbox(
        make_client: Any, settings: Settings) -> None:
    clock = FakeClock(T0)
    client = await make_client(clock=clock, max_issues_per_hour=1)
    for n in range(4):
        raw = alert_body(event_id=f"{n:032x}", **fields(n))
        assert (await post_signed(client, raw)).status == 202
        clock.advance(minutes=6)  # issue 1 opens the digest at 6 min, issue 3 comments at 18
    log = settings.event_log
    await wait_until(lambda: len(records_of(log, "storm.decided")) == 2
                     and len(records_of(log, "comment.posted")) == 1)
    storms = records_of(log, "storm.decided")
    assert [(r["action"], r["sentry_issue_ids"]) for r in storms] == [
        ("open", ["1001"]), ("comment", ["1002", "1003"])]
    [opened] = [r for r in records_of(log, "issue.opened") if r["alert_seq"] == storms[0]["seq"]]
    digest = Path(opened["url"])
    assert opened["dry_run"] is True and digest.parent == settings.outbox_dir
    text = digest.read_text()
    assert text.startswith("# [storm]") and "Labels: obsv:storm" in text
    assert [text.count(f"[Sentry issue {n}]") for n in (1001, 1002, 1003)] == [1, 1, 1]
    assert "1000" not in text  # the issue that was opened is no part of the storm
    [comment] = records_of(log, "comment.posted")
    assert comment["alert_seq"] == storms[1]["seq"] and comment["url"] == str(digest)


def test_replay_verify_catches_a_storm_decision_that_was_changed(tmp_path: Path) -> None:
    from obsv.audit import audit
    from obsv.core.codec import encode
    from obsv.core.events import ConfigApplied, Policy

    from .records import Log
    built = Log()
    built.add(ConfigApplied(Policy(max_issues_per_hour=1)))
    built.alert(issue="1")
    built.alert(issue="2")
    [(storm, _)] = built.state.storm_unrecorded.values()
    built.add(storm)
    path = tmp_path / "events.jsonl"
    lines = [orjson.dumps(encode(envelope)) for envelope in built.records]
    path.write_bytes(b"\n".join(lines) + b"\n")
    assert audit(path).findings == []
    tampered = orjson.loads(lines[-1])
    tampered["sentry_issue_ids"], tampered["issues"][0]["sentry_issue_id"] = ["9"], "9"
    path.write_bytes(b"\n".join([*lines[:-1], orjson.dumps(tampered)]) + b"\n")
    [finding] = audit(path).findings
    assert "storm decision on alert" in str(finding)
