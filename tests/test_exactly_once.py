"""Exactly once, whatever happens: random alerts, GitHub faults and restarts, then
every decision ends in exactly one issue or comment on the (fake) GitHub, each one
recorded in the log, and the log still replays without a mismatch."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from obsv.cli import main
from obsv.github import GitHubSink, RetryPolicy
from obsv.metrics import Metrics
from obsv.server import create_app
from obsv.settings import Settings

from .conftest import FakeClock, alert_body, post_signed, read_log, wait_ready, wait_until
from .fakes import FakeGitHub, Fault

# The fake GitHub, the app and the test share one event loop. The client's timeout must
# be long enough that a loaded machine never lets it fire before the fake has even read a
# request it then writes anyway (a write obsv could not have seen in its listing: an
# issue with no issue.opened); 0.3 s was not, once in a few dozen loaded runs.
FAST = RetryPolicy(waits=(0.01, 0.01), write_interval=0.0, max_inline_wait=0.5,
                   request_timeout=1.0)
FAULTS = {
    "502": lambda: Fault(502),
    "502_after_write": lambda: Fault(502, apply_anyway=True),
    "timeout_after_write": lambda: Fault(201, apply_anyway=True, delay=1.5),
    "rate_limited": lambda: Fault(429, {"retry-after": "0"}, "secondary rate limit"),
    "422": lambda: Fault(422, message="Validation Failed"),
}

def marker(pattern: str, body: str) -> str:
    found = re.search(pattern, body)
    assert found, f"no marker in {body[-120:]!r}"
    return found.group(1)


steps = st.lists(st.one_of(
    st.tuples(st.just("alert"), st.sampled_from(["1", "2", "3"])),
    st.tuples(st.just("fault"), st.sampled_from(["create_issue", "create_comment"]),
              st.sampled_from(sorted(FAULTS))),
    st.tuples(st.just("restart")),
), min_size=1, max_size=10)


class Run:
    def __init__(self, aiohttp_client: Any, settings: Settings, github: FakeGitHub) -> None:
        self.aiohttp_client, self.github = aiohttp_client, github
        self.settings = replace(settings, github_token="test-token", github_repo="acme/shop",
                                github_api_url=github.base_url, dry_run=False,
                                cooldown_seconds=0)
        self.clock = FakeClock(datetime.now(UTC))
        self.client: Any = None
        self.sent = 0

    async def start(self) -> None:
        metrics = Metrics()
        sink = GitHubSink(self.settings, self.clock, metrics, FAST)
        app = create_app(self.settings, clock=self.clock, sink=sink, metrics=metrics)
        self.client = await self.aiohttp_client(app)
        await wait_ready(self.client)

    async def alert(self, issue: str) -> None:
        self.sent += 1
        response = await post_signed(self.client, alert_body(
            event_id=f"{self.sent:032x}", issue_id=issue, hashes=[f"h{issue}"]))
        assert response.status == 202

    def records(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in read_log(self.settings.event_log) if r["type"] == kind]

    async def settle(self) -> None:
        """Wait until every decision has its final outcome; a failed round waits for
        its next_attempt_at, so move the clock past it (the poster looks every second)."""
        for _ in range(30):
            try:
                await wait_until(lambda: self.unresolved() == 0, timeout=1.5)
                return
            except AssertionError:
                self.clock.advance(hours=1)
        raise AssertionError(f"{self.unresolved()} decisions never reached an outcome")

    def unresolved(self) -> int:
        """Alerts not decided yet, and decisions to open or comment without a final
        outcome yet (an alert whose decision is still to come counts: without it, a
        slow consumer let the run stop while it was posting that decision's comment)."""
        undecided = ({r["seq"] for r in self.records("alert.received")}
                     - {r["alert_seq"] for r in self.records("alert.decided")})
        final = {r["alert_seq"] for r in self.records("issue.opened")}
        final |= {r["alert_seq"] for r in self.records("comment.posted")}
        final |= {r["alert_seq"] for r in self.records("issue.failed") if not r["retryable"]}
        wanted = {r["alert_seq"] for r in self.records("alert.decided")
                  if r["action"] in ("open", "comment")}
        return len(undecided) + len(wanted - final)


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(script=steps)
async def test_every_decision_posts_exactly_once(aiohttp_client: Any, tmp_path_factory: Any,
                                                 script: list[tuple[str, ...]]) -> None:
    from .conftest import SECRET

    github = FakeGitHub()
    await github.start()
    tmp = tmp_path_factory.mktemp("exactly-once")
    run = Run(aiohttp_client, Settings(sentry_client_secret=SECRET,
                                       event_log=tmp / "events.jsonl",
                                       outbox_dir=tmp / "outbox"), github)
    try:
        await run.start()
        for step in script:
            if step[0] == "alert":
                await run.alert(step[1])
            elif step[0] == "fault":
                github.fail(step[1], FAULTS[step[2]]())
            else:
                await run.client.close()
                await run.start()
        await run.settle()
        await run.client.close()
    finally:
        await github.close()

    opened = run.records("issue.opened")
    posted = run.records("comment.posted")
    markers = Counter(marker(r"obsv:sentry-issue=(\w+)", i["body"]) for i in github.issues)
    # Each open decision that succeeded is exactly one issue, and nothing else exists
    # (a permanently failed open created nothing, so a Sentry issue never has two).
    assert len(github.issues) == len(opened)
    assert sorted(i["number"] for i in github.issues) == sorted(r["number"] for r in opened)
    assert set(markers.values()) <= {1}
    comments = Counter(marker(r"comment-for-alert=(\d+)", c["body"])
                       for cs in github.comments.values() for c in cs)
    assert sorted(comments.values()) == [1] * len(comments)
    assert sorted(int(k) for k in comments) == sorted(r["alert_seq"] for r in posted)
    assert main(["replay", str(run.settings.event_log), "--verify"]) == 0
