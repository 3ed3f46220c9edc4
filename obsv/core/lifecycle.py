"""What comes back after an issue opens: Sentry ``issue`` and GitHub ``issues`` payloads
-> the records ``sentry.issue`` and ``github.issue`` (docs/reference.md §4 and §7).

Rules:
1. Bad input is a typed error carrying its HTTP status, never a 5xx: bytes that are
   not UTF-8 JSON are 400 ``invalid_json``; JSON that is not a usable delivery is 422
   ``invalid_payload`` naming the fields by path, like ``alert_from_delivery`` does.
2. A GitHub issue is obsv's when its body holds obsv's marker (``render.marker_for``);
   any other issue gives ``None``: the receiver answers "ignored" and records nothing.
   Pull requests come through the issues list endpoint (and as ``issue`` in some
   ``issues`` events) too; they are never obsv's, even with a pasted marker.
3. Everything kept is what decisions or the shells need; the webhook body is kept
   whole as ``raw`` so that its signature can be checked again later.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from obsv.core.alert import ISSUE_ID_MAX, InvalidPayload
from obsv.core.events import (
    Delivery,
    GitHubIssueObserved,
    IssueState,
    ObservedBy,
    SentryIssueChanged,
)
from obsv.core.render import parse_marker

_STATES: tuple[IssueState, ...] = ("open", "closed")
# Larger numbers are no GitHub issue, and would not survive a JSON line (orjson: 64 bits).
_MAX_NUMBER = 2**53 - 1


# -- Sentry ``issue`` deliveries ---------------------------------------------------

def sentry_issue_from_delivery(delivery: Delivery, body: object, raw: str) -> SentryIssueChanged:
    """The ``sentry.issue`` record of a verified Sentry ``issue`` body; ``InvalidPayload``
    (422) naming every missing or ill-typed field otherwise."""
    problem = InvalidPayload()
    if not isinstance(body, Mapping):
        problem.invalid.append("body")
        raise problem
    action = _required_str(body, "action", "action", problem)
    data = _object(body, "data", "data", problem)
    issue = _object(data, "issue", "data.issue", problem) if data is not None else None
    issue_id = resolution = status = substatus = release = None
    if issue is not None:
        issue_id = _issue_id(issue.get("id"), problem)
        status = _optional_str(issue, "status", "data.issue.status", problem)
        substatus = _optional_str(issue, "substatus", "data.issue.substatus", problem)
        release = _release(issue.get("statusDetails"))
    if data is not None:
        resolution = _optional_str(data, "resolution_type", "data.resolution_type", problem)
    if problem.missing or problem.invalid:
        raise problem
    assert action is not None and issue_id is not None
    return SentryIssueChanged(delivery, action, issue_id, status, substatus, resolution, raw,
                              release)


def _issue_id(value: object, problem: InvalidPayload) -> str | None:
    if value is None:
        problem.missing.append("data.issue.id")
    elif isinstance(value, str) and 0 < len(value) <= ISSUE_ID_MAX:  # as for alerts (§6)
        return value
    elif isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return str(value)
    else:
        problem.invalid.append("data.issue.id")
    return None


def _release(details: object) -> str | None:
    """``statusDetails.inRelease``: the release a resolution is in, when Sentry names it
    (for "in next release" it only sends ``inNextRelease: true``)."""
    if isinstance(details, Mapping):
        release = details.get("inRelease")
        if isinstance(release, str) and release:
            return release
    return None


# -- GitHub ``issues`` webhooks and REST issue objects -------------------------------

@dataclass(slots=True)
class InvalidGitHubPayload(Exception):
    """A GitHub body obsv cannot use: 400 when it is not UTF-8 JSON, 422 when it is JSON
    but not a usable ``issues`` event or issue object (fields named by path)."""

    status: int = 422
    missing: list[str] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)

    @property
    def error(self) -> str:
        """The ``error`` of the JSON answer (docs/reference.md §3)."""
        return "invalid_json" if self.status == 400 else "invalid_payload"

    def answer(self) -> dict[str, Any]:
        """The JSON body to answer with."""
        if self.status == 400:
            return {"error": self.error}
        return {"error": self.error, "missing": self.missing, "invalid": self.invalid}

    def __str__(self) -> str:
        return f"{self.error}: missing={self.missing} invalid={self.invalid}"


def github_issue_from_webhook(raw: bytes, *, delivery_id: str | None
                              ) -> GitHubIssueObserved | None:
    """The ``github.issue`` record of a verified ``issues`` webhook body (raw bytes), or
    ``None`` for an issue obsv did not open; ``InvalidGitHubPayload`` (400/422) otherwise."""
    try:
        text = raw.decode("utf-8")
        body = json.loads(text)
    except (UnicodeDecodeError, ValueError):
        raise InvalidGitHubPayload(400) from None
    return github_issue_from_event(body, raw=text, delivery_id=delivery_id)


def github_issue_from_event(body: object, *, raw: str | None, delivery_id: str | None
                            ) -> GitHubIssueObserved | None:
    """Like ``github_issue_from_webhook``, for a body the shell has already parsed."""
    problem = InvalidGitHubPayload()
    if not isinstance(body, Mapping):
        problem.invalid.append("body")
        raise problem
    action = _required_str(body, "action", "action", problem)
    repository = _object(body, "repository", "repository", problem)
    repo = None
    if repository is not None:
        repo = _required_str(repository, "full_name", "repository.full_name", problem)
    issue = _object(body, "issue", "issue", problem)
    fields = _issue_fields(issue, "issue.", problem) if issue is not None else None
    if problem.missing or problem.invalid:
        raise problem
    assert action is not None and repo is not None and fields is not None and issue is not None
    if issue.get("pull_request") is not None:  # rule 2, as for the list endpoint
        return None
    return _observed(fields, repo=repo, action=action, source="webhook",
                     delivery_id=delivery_id, raw=raw)


def github_issue_from_rest(issue: object, *, repo: str) -> GitHubIssueObserved | None:
    """The ``github.issue`` record (``observed``, from a poll) of one object of the REST
    issues list, or ``None`` for a pull request or an issue obsv did not open;
    ``InvalidGitHubPayload`` (422, fields named from the issue object) otherwise."""
    problem = InvalidGitHubPayload()
    if not isinstance(issue, Mapping):
        problem.invalid.append("issue")
        raise problem
    if issue.get("pull_request") is not None:
        return None
    fields = _issue_fields(issue, "", problem)
    if problem.missing or problem.invalid:
        raise problem
    assert fields is not None
    return _observed(fields, repo=repo, action="observed", source="poll", delivery_id=None,
                     raw=None)


@dataclass(frozen=True, slots=True)
class _IssueFields:
    number: int
    state: IssueState
    state_reason: str | None
    closed_at: datetime | None
    updated_at: datetime
    labels: tuple[str, ...]
    body: str | None


def _issue_fields(issue: Mapping[str, Any], at: str,
                  problem: InvalidGitHubPayload) -> _IssueFields | None:
    """Check and read the issue object's fields; ``at`` prefixes the paths named."""
    number = issue.get("number")
    if number is None:
        problem.missing.append(at + "number")
    elif isinstance(number, bool) or not isinstance(number, int) or not (
            1 <= number <= _MAX_NUMBER):
        problem.invalid.append(at + "number")
    state = issue.get("state")
    if state is None:
        problem.missing.append(at + "state")
    elif state not in _STATES:
        problem.invalid.append(at + "state")
    reason = _optional_str(issue, "state_reason", at + "state_reason", problem)
    closed_at = _time(issue.get("closed_at"), at + "closed_at", problem)
    updated_at = issue.get("updated_at")
    if updated_at is None:
        problem.missing.append(at + "updated_at")
    else:
        updated_at = _time(updated_at, at + "updated_at", problem)
    labels = _labels(issue.get("labels"), at + "labels", problem)
    body = _optional_str(issue, "body", at + "body", problem)
    if problem.missing or problem.invalid:
        return None
    assert isinstance(number, int) and labels is not None and updated_at is not None
    return _IssueFields(number, "open" if state == "open" else "closed", reason, closed_at,
                        updated_at, labels, body)


def _observed(fields: _IssueFields, *, repo: str, action: str, source: ObservedBy,
              delivery_id: str | None, raw: str | None) -> GitHubIssueObserved | None:
    sentry_issue_id = sentry_issue_id_from_marker(fields.body)
    if sentry_issue_id is None:
        return None
    return GitHubIssueObserved(
        repo=repo, number=fields.number, sentry_issue_id=sentry_issue_id, action=action,
        state=fields.state, state_reason=fields.state_reason, closed_at=fields.closed_at,
        updated_at=fields.updated_at, labels=fields.labels, source=source,
        delivery_id=delivery_id, raw=raw)


def sentry_issue_id_from_marker(body: str | None) -> str | None:
    """The Sentry issue id in obsv's marker, the inverse of ``render.marker_for``; the last
    marker counts, as obsv appends its own after everything else (docs/reference.md §6)."""
    if not body:
        return None
    sentry_issue_id = parse_marker(body)
    return sentry_issue_id if sentry_issue_id and len(sentry_issue_id) <= ISSUE_ID_MAX else None


def _time(value: object, path: str, problem: InvalidGitHubPayload) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            at = datetime.fromisoformat(value)
        except ValueError:
            at = None
        if at is not None and at.tzinfo is not None:
            return at.astimezone(UTC)
    problem.invalid.append(path)
    return None


def _labels(value: object, path: str, problem: InvalidGitHubPayload) -> tuple[str, ...] | None:
    """Label names; GitHub sends label objects (``name``), in webhooks and REST alike."""
    if value is None:
        return ()
    if isinstance(value, list):
        names = [item.get("name") if isinstance(item, Mapping) else None for item in value]
        if all(isinstance(name, str) for name in names):
            return tuple(str(name) for name in names)
    problem.invalid.append(path)
    return None


# -- small readers shared by both kinds of payload ---------------------------------

def _object(parent: Mapping[str, Any], key: str, path: str,
            problem: InvalidPayload | InvalidGitHubPayload) -> Mapping[str, Any] | None:
    value = parent.get(key)
    if value is None:
        problem.missing.append(path)
    elif not isinstance(value, Mapping):
        problem.invalid.append(path)
    else:
        return value
    return None


def _required_str(parent: Mapping[str, Any], key: str, path: str,
                  problem: InvalidPayload | InvalidGitHubPayload) -> str | None:
    value = parent.get(key)
    if value is None:
        problem.missing.append(path)
    elif not isinstance(value, str) or not value:
        problem.invalid.append(path)
    else:
        return value
    return None


def _optional_str(parent: Mapping[str, Any], key: str, path: str,
                  problem: InvalidPayload | InvalidGitHubPayload) -> str | None:
    value = parent.get(key)
    if value is None or isinstance(value, str):
        return value
    problem.invalid.append(path)
    return None
