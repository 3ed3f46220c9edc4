"""The GitHub poller: learns the fate of obsv's issues without a webhook (docs/reference.md §7).

Rules:
1. Every ``OBSV_GITHUB_POLL_SECONDS`` the repository's issues updated since ``since``
   are listed (``state=all&sort=updated&since=``), newest first, pages bounded by the
   GitHub client. The previous answer's ``ETag`` goes out as ``If-None-Match``, so an
   unchanged repository costs a 304, which GitHub does not count against the rate limit.
2. ``since`` stays put until an answer changes, so the same query (and its ETag) is
   asked again; after a changed answer it moves to the newest ``updated_at`` seen.
   GitHub's ``since`` is inclusive, so that newest issue is listed again and the next
   answer is unchanged. It starts from the time of the log's last record (less a
   margin): what changed while obsv was down is seen on the first poll.
3. Only obsv's issues count (their body holds the marker), and only an observation that
   tells the log something new (``differs_from_log``) is recorded, after the fold has
   caught up with the log: a change a webhook already recorded is not recorded again.
4. A failed poll (GitHub down, rate limited, a hostile answer) is logged and counted;
   the next poll comes at the next interval. Polling never stops the service.
5. Every repository obsv opens issues in is polled (docs/reference.md §8: the default
   one and each route's), one after the other, each with its own ``since``; one
   repository failing does not keep the others from being polled.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import structlog

from obsv.core.events import GitHubIssueObserved
from obsv.core.lifecycle import InvalidGitHubPayload, github_issue_from_rest
from obsv.core.policy import State, differs_from_log

log = structlog.get_logger("obsv.poller")

# How far before the log's last record the first poll looks: GitHub's updated_at and
# obsv's record times come from different clocks.
START_MARGIN = timedelta(minutes=10)

# The issues of a repository updated since a time, or None when GitHub answered 304.
Fetch = Callable[[str, datetime], Awaitable[Sequence[Mapping[str, Any]] | None]]


class PolledChanges:
    """The changes this process's polls recorded, so that their webhooks, arriving later,
    are not recorded again (rule 3). Bounded: GitHub delivers a webhook within seconds;
    an entry older than the last ``MAX_POLLED`` is forgotten (its webhook, if it ever
    comes, is recorded; the fold takes it as the same state again)."""

    MAX_POLLED = 10_000

    def __init__(self) -> None:
        self._seen: OrderedDict[tuple[object, ...], None] = OrderedDict()

    @staticmethod
    def _key(event: GitHubIssueObserved) -> tuple[object, ...]:
        return (event.repo, event.number, event.updated_at, event.state, event.state_reason,
                event.closed_at, tuple(sorted(event.labels)))

    def add(self, event: GitHubIssueObserved) -> None:
        """Remember a change a poll recorded."""
        self._seen[self._key(event)] = None
        while len(self._seen) > self.MAX_POLLED:
            self._seen.popitem(last=False)

    def recorded(self, event: GitHubIssueObserved) -> bool:
        """Whether a poll already recorded exactly this change (same ``updated_at``)."""
        return self._key(event) in self._seen


class Poller:
    """Polls each repository and records what changed on obsv's issues."""

    def __init__(self, repos: Sequence[str], fetch: Fetch, *, interval: float,
                 since: datetime, state: Callable[[], State],
                 caught_up: Callable[[], Awaitable[None]],
                 record: Callable[[Sequence[GitHubIssueObserved]], Awaitable[object]],
                 observations: asyncio.Lock | None = None,
                 polled: PolledChanges | None = None) -> None:
        self.repos = tuple(repos)
        # Shared with the webhook receiver: a webhook's record is appended and folded
        # before a poll compares with the log, never between the comparison and the
        # poll's own append (rule 3: never the same change twice).
        self._observations = observations or asyncio.Lock()
        self.polled = polled or PolledChanges()
        self._fetch = fetch
        self._interval = interval
        self._start = since - START_MARGIN
        self._since = {repo: self._start for repo in self.repos}
        self._state = state
        self._caught_up = caught_up
        self._record = record
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Poll in the background until ``stop``."""
        self._task = asyncio.create_task(self._run(), name="obsv-poll")

    async def stop(self) -> None:
        """Stop polling (a poll in flight is cancelled; it recorded nothing half-way)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            for repo in self.repos_now():
                try:
                    await self.poll_once(repo)
                except Exception as exc:  # rule 4: the next interval tries again
                    log.warning("poll.failed", repo=repo, error=f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(self._interval)

    def repos_now(self) -> list[str]:
        """The configured repositories, then any other one a link still lives in (a route
        removed since its issue opened: the issue stays linked, rule 5)."""
        linked = (link.repo for link in self._state().links.values() if link.repo is not None)
        return list(dict.fromkeys((*self.repos, *sorted(set(linked)))))

    async def poll_once(self, repo: str | None = None) -> int:
        """One poll of ``repo`` (default: the first); returns how many observations
        were recorded."""
        repo = repo or self.repos[0]
        issues = await self._fetch(repo, self._since.setdefault(repo, self._start))
        if issues is None:
            return 0
        async with self._observations:
            await self._caught_up()
            state = self._state()
            changed: list[GitHubIssueObserved] = []
            for issue in issues:
                observed = self._observed(repo, issue)
                if observed is not None and differs_from_log(state, observed):
                    changed.append(observed)
            if changed:
                await self._record(changed)
                for observed in changed:
                    self.polled.add(observed)
                log.info("poll.recorded", repo=repo, changes=len(changed))
        seen = (at for issue in issues if (at := _updated_at(issue)) is not None)
        self._since[repo] = max([self._since[repo], *seen])
        return len(changed)

    def _observed(self, repo: str, issue: Mapping[str, Any]) -> GitHubIssueObserved | None:
        try:
            return github_issue_from_rest(issue, repo=repo)
        except InvalidGitHubPayload as exc:
            log.warning("poll.unusable_issue", repo=repo, error=str(exc))
            return None


def _updated_at(issue: Mapping[str, Any]) -> datetime | None:
    """GitHub's ``updated_at`` of an issue; None when it is missing or not a UTC time."""
    text = issue.get("updated_at")
    if not isinstance(text, str):
        return None
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return at if at.tzinfo is not None else None
