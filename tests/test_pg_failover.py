"""Three real ``obsv serve`` replicas on one PostgreSQL database, posting to the fake
GitHub, with deliveries spread over all three (docs/reference.md §12, docs/replicas.md).

Under load the leader is SIGKILLed, then the next leader is SIGSTOPped and, after a
third replica has taken over, SIGCONTed. Each time the leader has a GitHub create in
flight, which GitHub carries out after the leader is gone. Afterwards: no acknowledged
delivery is lost, no alert is decided twice, no outcome is recorded twice (a former
leader's late write would be a second one: the database refuses it), the woken leader
has stepped down, at most one duplicate issue per failover, and the export of the
database passes ``obsv replay --verify``."""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

from obsv.cli import main

from .conftest import SECRET
from .fakes import FakeGitHub, Fault
from .process import ServeProcess
from .replicas import (
    Records,
    delivery,
    freeze,
    leader_of,
    stop_quietly,
    thaw,
    wait_records,
    wait_role,
)

WORKERS = 6
FAILOVERS = 2
_MARKER = re.compile(r"<!-- obsv:sentry-issue=([A-Za-z0-9._%-]*) -->")


class Load:
    """Deliveries sent round robin to every replica until stopped; remembers each 202."""

    def __init__(self, replicas: list[ServeProcess]) -> None:
        self.replicas = replicas
        self.acked: dict[str, int] = {}
        self.by_replica: Counter[int] = Counter()  # 202s per replica's port
        self._stop = asyncio.Event()
        self._task: asyncio.Future[Any] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        self._stop.set()
        assert self._task is not None
        await self._task

    async def until(self, more: int, timeout: float = 30.0) -> None:
        """Wait until ``more`` deliveries beyond the current count were acknowledged."""
        target = len(self.acked) + more
        deadline = asyncio.get_running_loop().time() + timeout
        while len(self.acked) < target:
            assert asyncio.get_running_loop().time() < deadline, f"only {len(self.acked)} acked"
            await asyncio.sleep(0.02)

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=2)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            await asyncio.gather(*(self._worker(session, w) for w in range(WORKERS)))

    async def _worker(self, session: aiohttp.ClientSession, w: int) -> None:
        n = 0
        while not self._stop.is_set():
            replica = self.replicas[(w + n) % len(self.replicas)]
            event_id = f"{w:02x}{n:06x}".ljust(32, "0")
            # One in twenty opens an issue of its own; the rest recur on two hot issues
            # (suppressed by the cooldown): obsv spaces GitHub writes a second apart, so
            # the leader keeps up and always has an open to post.
            raw, headers = delivery(event_id, f"new{w}x{n}" if n % 20 == 0 else f"hot{w % 2}")
            n += 1
            # A dead or frozen replica does not answer: Sentry would retry elsewhere.
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.post(replica.url + "/webhooks/sentry", data=raw,
                                        headers=headers) as answer:
                    if answer.status == 202:
                        self.acked[event_id] = (await answer.json())["seq"]
                        self.by_replica[replica.port] += 1
                    else:
                        assert answer.status == 503, await answer.text()
            await asyncio.sleep(0.05)


async def _hold_a_create(github: FakeGitHub) -> asyncio.Event:
    """The next issue creation is held until the returned event is set (then GitHub
    carries it out whether or not anyone still waits for the answer)."""
    hold = asyncio.Event()
    github.fail("create_issue", Fault(201, apply_anyway=True, hold=hold))
    for _ in range(1500):
        if not github.faults["create_issue"]:  # taken: a request is held
            return hold
        await asyncio.sleep(0.02)
    raise AssertionError("no issue creation arrived within 30 s")


def _settled(acked: dict[str, int]) -> Any:
    """Every acknowledged alert decided, every open decision carried out."""
    def check(records: Records) -> bool:
        received = {r["alert"]["event_id"] for r in records if r["type"] == "alert.received"}
        decided = {r["alert_seq"]: r["action"] for r in records if r["type"] == "alert.decided"}
        opened = {r["alert_seq"] for r in records if r["type"] == "issue.opened"}
        alerts = {r["seq"] for r in records if r["type"] == "alert.received"}
        opens = {s for s, a in decided.items() if a == "open"}
        check.missing = (f"{len(set(acked) - received)} acked not received, "  # type: ignore[attr-defined]
                         f"{len(alerts - set(decided))} undecided, "
                         f"{len(opens - opened)} of {len(opens)} opens not carried out")
        return not (set(acked) - received or alerts - set(decided) or opens - opened)
    return check


async def test_three_replicas_survive_a_killed_and_a_frozen_leader(
        tmp_path: Path, pg_url: str) -> None:
    github = FakeGitHub()
    await github.start()
    env = {"OBSV_SENTRY_CLIENT_SECRET": SECRET, "OBSV_DATABASE_URL": pg_url,
           "OBSV_GITHUB_TOKEN": "test-token", "OBSV_GITHUB_REPO": "acme/shop",
           "OBSV_GITHUB_API_URL": github.base_url, "OBSV_DRY_RUN": "false",
           "OBSV_MAX_ISSUES_PER_HOUR": "100000"}
    replicas = [ServeProcess(tmp_path, env) for _ in range(3)]
    load = Load(replicas)
    try:
        await asyncio.gather(*(replica.start() for replica in replicas))
        first = await leader_of(replicas)
        load.start()
        await load.until(40)

        # 1. SIGKILL the leader while GitHub holds one of its creates.
        hold = await _hold_a_create(github)
        first.kill()
        hold.set()
        rest = [r for r in replicas if r is not first]
        second = await leader_of(rest)
        await load.until(40)

        # 2. SIGSTOP the next leader while GitHub holds one of its creates; GitHub
        # answers while it sleeps; SIGCONT it once the third has taken over.
        hold = await _hold_a_create(github)
        freeze(second)
        hold.set()
        [third] = [r for r in rest if r is not second]
        await wait_role(third, "leader", timeout=30)
        thaw(second)
        await wait_role(second, "follower")
        await load.until(30)
        await load.stop()

        records = await wait_records(pg_url, _settled(load.acked), timeout=60)
        assert second.stop() == 0 and third.stop() == 0
    finally:
        if not load._stop.is_set() and load._task is not None:
            await load.stop()
        for replica in replicas:
            stop_quietly(replica)
        await github.close()

    # Every replica took deliveries, leader or follower.
    assert all(load.by_replica[replica.port] > 0 for replica in replicas)
    # No acknowledged delivery lost: each is in the log with the seq it was answered.
    logged = {r["alert"]["event_id"]: r["seq"] for r in records if r["type"] == "alert.received"}
    assert {e: s for e, s in load.acked.items() if logged.get(e) != s} == {}
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))

    # No alert decided twice, no outcome recorded twice (a former leader's late write
    # would be a second one).
    decisions = Counter(r["alert_seq"] for r in records if r["type"] == "alert.decided")
    assert set(decisions) == set(logged.values()) and set(decisions.values()) == {1}
    outcomes = Counter(r["alert_seq"] for r in records if r["type"] == "issue.opened")
    assert set(outcomes.values()) == {1}

    # The lead moved twice, each time to a new epoch; the woken leader stepped down.
    elected = [r for r in records if r["type"] == "leader.elected"]
    assert [r["epoch"] for r in elected] == list(range(1, len(elected) + 1))
    assert len(elected) >= 1 + FAILOVERS
    assert len({r["replica"] for r in elected}) == 3
    assert "leader.lost" in second.stderr_path.read_text()

    # At most one duplicate issue per failover; every issue is recorded.
    markers = Counter(m.group(1) for i in github.issues if (m := _MARKER.search(i["body"])))
    assert sum(count - 1 for count in markers.values()) <= FAILOVERS
    assert len(markers) == len(outcomes)
    assert github.schema_errors == []

    # The database's export is a log that replays to the recorded decisions.
    exported = tmp_path / "export.jsonl"
    with open(exported, "wb") as out:
        subprocess.run([sys.executable, "-m", "obsv", "export", "--database-url", pg_url],
                       stdout=out, check=True, timeout=60)
    assert main(["replay", str(exported), "--verify"]) == 0
