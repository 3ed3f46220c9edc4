"""SIGKILL a real ``obsv serve`` under load, three times: every 202 survives."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from obsv.cli import main

from .conftest import (
    SECRET,
    alert_body,
    assert_contiguous,
    read_log,
    sentry_bytes,
    signed_headers,
)
from .process import ServeProcess

ROUNDS = 3
CONCURRENCY = 16


async def _load(url: str, prefix: str, acked: dict[str, int], stop: asyncio.Event, *,
                also: frozenset[int] = frozenset()) -> None:
    """Send deliveries until ``stop``; remember the seq of every 202. Any other status
    fails the test, but those in ``also`` (a 503 while the service stops)."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        async def worker(w: int) -> None:
            n = 0
            while not stop.is_set():
                event_id = f"{prefix}{w:04d}{n:08d}".ljust(32, "0")
                raw = sentry_bytes(alert_body(event_id=event_id, issue_id=f"{prefix}{w}",
                                              hashes=[f"h{prefix}{w}"]))
                n += 1
                with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                    async with session.post(url + "/webhooks/sentry", data=raw,
                                            headers=signed_headers(raw)) as response:
                        if response.status == 202:
                            acked[event_id] = (await response.json())["seq"]
                        elif response.status not in also:
                            raise AssertionError(f"unexpected {response.status}")
        await asyncio.gather(*(worker(w) for w in range(CONCURRENCY)))


async def kill_under_load(server: ServeProcess, rounds: int = ROUNDS) -> dict[str, int]:
    """Start ``server`` and SIGKILL it mid-load ``rounds`` times (requests and batches in
    flight), then start it once more; the seq of every delivery answered 202."""
    acked: dict[str, int] = {}
    for round_ in range(rounds):
        await server.start()
        stop = asyncio.Event()
        load = asyncio.ensure_future(_load(server.url, f"{round_:02x}", acked, stop))
        target = len(acked) + 40
        while len(acked) < target:
            await asyncio.sleep(0.01)
        server.kill()
        stop.set()
        await load
    await server.start()  # a torn tail, if any, is set aside on this open
    await asyncio.sleep(0.5)  # let the consumer decide what the last round left undecided
    return acked


def assert_acknowledged_and_decided_once(records: list[dict[str, Any]],
                                         acked: dict[str, int]) -> None:
    """Every 202 is in the log with its seq, and every alert is decided exactly once."""
    logged = {r["alert"]["event_id"]: r["seq"] for r in records if r["type"] == "alert.received"}
    missing = {e: s for e, s in acked.items() if logged.get(e) != s}
    assert not missing, f"acknowledged but not in the log with its seq: {missing}"
    assert len(acked) >= ROUNDS * 40
    decisions = Counter(r["alert_seq"] for r in records if r["type"] == "alert.decided")
    alerts = {r["seq"] for r in records if r["type"] == "alert.received"}
    assert set(decisions) == alerts and set(decisions.values()) == {1}


async def test_sigkill_under_load_loses_no_acknowledged_delivery(tmp_path: Path) -> None:
    log_path = tmp_path / "events.jsonl"
    server = ServeProcess(tmp_path, {"OBSV_SENTRY_CLIENT_SECRET": SECRET,
                                     "OBSV_EVENT_LOG": str(log_path),
                                     "OBSV_OUTBOX_DIR": str(tmp_path / "outbox")})
    acked = await kill_under_load(server)
    assert server.stop() == 0  # SIGTERM: a clean stop ...
    assert log_path.with_name(log_path.name + ".snapshot").exists()  # ... writes a snapshot

    records = assert_contiguous(log_path)
    # Every alert decided exactly once, every open posted at most once, and a
    # replay re-derives every decision.
    assert_acknowledged_and_decided_once(records, acked)
    opened = Counter(r["alert_seq"] for r in records if r["type"] == "issue.opened")
    assert set(opened.values()) <= {1}
    assert main(["replay", str(log_path), "--verify"]) == 0


async def test_sigkill_while_github_holds_a_create_request(tmp_path: Path) -> None:
    from .fakes import FakeGitHub, Fault

    github = FakeGitHub()
    await github.start()
    hold = asyncio.Event()
    github.fail("create_issue", Fault(201, apply_anyway=True, hold=hold))
    log_path = tmp_path / "events.jsonl"
    server = ServeProcess(tmp_path, {
        "OBSV_SENTRY_CLIENT_SECRET": SECRET, "OBSV_EVENT_LOG": str(log_path),
        "OBSV_GITHUB_TOKEN": "test-token", "OBSV_GITHUB_REPO": "acme/shop",
        "OBSV_GITHUB_API_URL": github.base_url, "OBSV_DRY_RUN": "false"})
    try:
        await server.start()
        raw = sentry_bytes(alert_body(event_id="a" * 32))
        async with aiohttp.ClientSession() as session, session.post(
                server.url + "/webhooks/sentry", data=raw, headers=signed_headers(raw)) as answer:
            assert answer.status == 202
        await asyncio.wait_for(github.arrived["create_issue"].wait(), 30)
        server.kill()  # obsv dies while GitHub is still working on the request
        hold.set()     # ... and GitHub does create the issue
        for _ in range(200):
            if github.issues:
                break
            await asyncio.sleep(0.02)
        assert len(github.issues) == 1
        assert not [r for r in read_log(log_path) if r["type"] == "issue.opened"]

        await server.start()
        for _ in range(500):
            if any(r["type"] == "issue.opened" for r in read_log(log_path)):
                break
            await asyncio.sleep(0.02)
        assert server.stop() == 0
    finally:
        if server.proc and server.proc.poll() is None:
            server.kill()
        await github.close()
    [opened] = [r for r in read_log(log_path) if r["type"] == "issue.opened"]
    assert (opened["number"], opened["dry_run"]) == (1, False)
    assert len(github.issues) == 1
    assert len(github.requests("create_issue")) == 1
    assert len(github.requests("list_issues")) == 1


async def test_sigkill_while_github_holds_the_reopen_patch(tmp_path: Path) -> None:
    """docs/reference.md §7: a reopen is never done twice across crashes. obsv dies while
    GitHub holds its PATCH (which then applies); after the restart it reads the issue's
    state instead of patching again, and posts the regression comment once."""
    from .fakes import FakeGitHub, Fault

    github = FakeGitHub()
    await github.start()
    log_path = tmp_path / "events.jsonl"
    hook_secret = "gh-webhook-secret"
    server = ServeProcess(tmp_path, {
        "OBSV_SENTRY_CLIENT_SECRET": SECRET, "OBSV_EVENT_LOG": str(log_path),
        "OBSV_GITHUB_TOKEN": "test-token", "OBSV_GITHUB_REPO": "acme/shop",
        "OBSV_GITHUB_API_URL": github.base_url, "OBSV_DRY_RUN": "false",
        "OBSV_GITHUB_WEBHOOK_SECRET": hook_secret, "OBSV_GITHUB_POLL_SECONDS": "0"})

    async def post(path: str, raw: bytes, headers: dict[str, str]) -> int:
        async with aiohttp.ClientSession() as session, session.post(
                server.url + path, data=raw, headers=headers) as answer:
            return answer.status

    async def until(predicate: Callable[[], bool]) -> None:
        for _ in range(1000):
            if predicate():
                return
            await asyncio.sleep(0.02)
        raise AssertionError("condition not met within 20 s")

    hold = asyncio.Event()
    try:
        await server.start()
        first = sentry_bytes(alert_body(event_id="a" * 32))
        assert await post("/webhooks/sentry", first, signed_headers(first)) == 202
        await until(lambda: any(r["type"] == "issue.opened" for r in read_log(log_path)))
        github.close_by_human(1, "completed")
        body, headers = github.webhook("closed", 1, hook_secret)
        assert await post("/webhooks/github", body, headers) == 202

        github.fail("update_issue", Fault(200, apply_anyway=True, hold=hold))
        second = sentry_bytes(alert_body(event_id="b" * 32))
        assert await post("/webhooks/sentry", second, signed_headers(second)) == 202
        await asyncio.wait_for(github.arrived["update_issue"].wait(), 30)
        server.kill()  # obsv dies while GitHub still works on the PATCH ...
        hold.set()     # ... which GitHub then applies
        await until(lambda: github.issue(1)["state"] == "open")
        assert not [r for r in read_log(log_path) if r["type"] == "issue.reopened"]

        await server.start()
        await until(lambda: any(r["type"] == "comment.posted" for r in read_log(log_path)))
        assert server.stop() == 0
    finally:
        hold.set()
        if server.proc and server.proc.poll() is None:
            server.kill()
        await github.close()
    records = read_log(log_path)
    assert len([r for r in records if r["type"] == "issue.reopened"]) == 1
    assert len([r for r in records if r["type"] == "comment.posted"]) == 1
    assert len(github.requests("update_issue")) == 1  # the held one; none after the restart
    assert len(github.comments[1]) == 1
    assert main(["replay", str(log_path), "--verify"]) == 0
