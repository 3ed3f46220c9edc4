"""GitHub sink (gidgethub): not built yet; see the GitHub sink issue."""

from __future__ import annotations

from obsv.core.events import CommentPosted, IssueFailed, IssueOpened
from obsv.eventlog import Clock
from obsv.settings import Settings
from obsv.sink import CommentJob, OpenJob


class GitHubSink:
    """Placeholder that refuses to start, so a real token never silently does nothing."""

    dry_run = False

    def __init__(self, settings: Settings, clock: Clock) -> None:
        from obsv.settings import ConfigError
        raise ConfigError("posting to GitHub is not available in this build; "
                          "set OBSV_DRY_RUN=true to render issues into OBSV_OUTBOX_DIR")

    async def open_issue(self, job: OpenJob) -> IssueOpened | IssueFailed:
        raise NotImplementedError

    async def post_comment(self, job: CommentJob) -> CommentPosted | IssueFailed:
        raise NotImplementedError
