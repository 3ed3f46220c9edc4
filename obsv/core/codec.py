"""Records <-> JSON-ready dicts, and upgrades of older schema versions.

The shell turns these dicts into bytes (orjson); the core never sees a file.
Rules:
1. Every record carries ``seq``, ``at`` (RFC 3339 UTC with microseconds), ``type``
   and ``v``. ``v`` is the schema version of that record type.
2. A reader upgrades older versions through ``_UPGRADES`` before decoding, so code
   downstream only ever sees the current shape.
3. Unknown types and missing fields are ``CodecError``: a log we cannot read is an
   error that names the record, never a silently skipped line.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, assert_never

from obsv.core.alert import Alert
from obsv.core.events import (
    AlertDecided,
    AlertReceived,
    CommentPosted,
    ConfigApplied,
    Delivery,
    Envelope,
    Event,
    GitHubIssueObserved,
    HookReceived,
    IssueClosed,
    IssueFailed,
    IssueOpened,
    IssueReopened,
    LeaderElected,
    LinkedIssue,
    LogCheckpoint,
    Policy,
    SentryIssueChanged,
    SentryResolved,
    SilenceAdded,
    SilenceExpired,
    StormDecided,
    StormIssue,
    Suppressed,
    SyncDecided,
)
from obsv.core.routes import Route

VERSION = 1
# The ``prev`` of the first line of a log (docs/reference.md §11).
GENESIS = "0" * 64
_HEX = frozenset("0123456789abcdef")
_DEFAULT_POLICY = Policy()

Json = dict[str, Any]

# type name -> {from_version: function that returns the dict at from_version + 1}
_UPGRADES: dict[str, dict[int, Callable[[Json], Json]]] = {}


class CodecError(ValueError):
    """A record that cannot be read: unknown type, newer version, or a bad field."""


def format_time(at: datetime) -> str:
    """RFC 3339 UTC with microseconds, the one time format of the log."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime:
    """Inverse of ``format_time``; accepts any RFC 3339 offset."""
    at = datetime.fromisoformat(text)
    if at.tzinfo is None:
        raise CodecError(f"time without a UTC offset: {text!r}")
    return at.astimezone(UTC)


def type_name(event: Event) -> str:
    """The ``type`` field of an event."""
    match event:
        case AlertReceived():
            return "alert.received"
        case HookReceived():
            return "hook.received"
        case AlertDecided():
            return "alert.decided"
        case ConfigApplied():
            return "config.applied"
        case IssueOpened():
            return "issue.opened"
        case CommentPosted():
            return "comment.posted"
        case IssueFailed():
            return "issue.failed"
        case SentryIssueChanged():
            return "sentry.issue"
        case GitHubIssueObserved():
            return "github.issue"
        case IssueReopened():
            return "issue.reopened"
        case IssueClosed():
            return "issue.closed"
        case SentryResolved():
            return "sentry.resolved"
        case SyncDecided():
            return "sync.decided"
        case StormDecided():
            return "storm.decided"
        case LogCheckpoint():
            return "log.checkpoint"
        case LeaderElected():
            return "leader.elected"
        case SilenceAdded():
            return "silence.added"
        case SilenceExpired():
            return "silence.expired"
        case _:
            assert_never(event)


def encode(envelope: Envelope) -> Json:
    """The JSON-ready dict of one record; ``prev`` comes first when there is one, as
    the log writer puts it (obsv/eventlog.py rule 9)."""
    record: Json = {} if envelope.prev is None else {"prev": envelope.prev}
    record |= {
        "seq": envelope.seq,
        "at": format_time(envelope.at),
        "type": type_name(envelope.event),
        "v": VERSION,
    }
    record.update(_event_fields(envelope.event))
    return record


def _event_fields(event: Event) -> Json:
    match event:
        case AlertReceived(delivery, alert, raw, raw_sha256):
            fields = {"delivery": _delivery(delivery), "alert": _alert(alert), "raw": raw}
            if raw_sha256 is not None:
                fields["raw_sha256"] = raw_sha256
            return fields
        case HookReceived(delivery, action, raw):
            return {"delivery": _delivery(delivery), "action": action, "raw": raw}
        case AlertDecided():
            return _decided(event)
        case ConfigApplied(policy):
            return {"policy": encode_policy(policy)}
        case IssueOpened():
            return {
                "alert_seq": event.alert_seq,
                "sentry_issue_id": event.sentry_issue_id,
                "repo": event.repo,
                "number": event.number,
                "url": event.url,
                "dry_run": event.dry_run,
            }
        case CommentPosted():
            return {
                "alert_seq": event.alert_seq,
                "sentry_issue_id": event.sentry_issue_id,
                "repo": event.repo,
                "number": event.number,
                "comment_id": event.comment_id,
                "url": event.url,
                "dry_run": event.dry_run,
            }
        case IssueFailed():
            return {
                "alert_seq": event.alert_seq,
                "attempt": event.attempt,
                "status": event.status,
                "error": event.error,
                "retryable": event.retryable,
                "next_attempt_at": _optional_time(event.next_attempt_at),
            }
        case SentryIssueChanged():
            return {
                "delivery": _delivery(event.delivery),
                "action": event.action,
                "sentry_issue_id": event.sentry_issue_id,
                "status": event.status,
                "substatus": event.substatus,
                "resolution_type": event.resolution_type,
                "release": event.release,
                "raw": event.raw,
            }
        case GitHubIssueObserved():
            return _observed(event)
        case IssueReopened() | IssueClosed():
            return {
                "alert_seq": event.alert_seq,
                "repo": event.repo,
                "number": event.number,
                "dry_run": event.dry_run,
            }
        case SentryResolved():
            return {"cause_seq": event.cause_seq, "sentry_issue_id": event.sentry_issue_id}
        case SyncDecided():
            return {
                "cause_seq": event.cause_seq,
                "sentry_issue_id": event.sentry_issue_id,
                "action": event.action,
                "reason": event.reason,
            }
        case StormDecided():
            return _storm(event)
        case LogCheckpoint():
            return {"head_seq": event.head_seq, "head_sha256": event.head_sha256}
        case LeaderElected():
            return {"epoch": event.epoch, "replica": event.replica}
        case SilenceAdded():
            return {"id": event.id, "matchers": list(event.matchers),
                    "starts_at": format_time(event.starts_at),
                    "ends_at": format_time(event.ends_at), "comment": event.comment,
                    "created_by": event.created_by}
        case SilenceExpired():
            return {"id": event.id, "by": event.by}
        case _:
            assert_never(event)


def _observed(event: GitHubIssueObserved) -> Json:
    return {
        "repo": event.repo,
        "number": event.number,
        "sentry_issue_id": event.sentry_issue_id,
        "action": event.action,
        "state": event.state,
        "state_reason": event.state_reason,
        "closed_at": _optional_time(event.closed_at),
        "updated_at": format_time(event.updated_at),
        "labels": list(event.labels),
        "source": event.source,
        "delivery_id": event.delivery_id,
        "raw": event.raw,
    }


def _delivery(delivery: Delivery) -> Json:
    return {
        "request_id": delivery.request_id,
        "resource": delivery.resource,
        "hook_timestamp": delivery.hook_timestamp,
        "signature": delivery.signature,
    }


def _alert(alert: Alert) -> Json:
    fields: Json = {
        "sentry_issue_id": alert.sentry_issue_id,
        "event_id": alert.event_id,
        "level": alert.level,
        "fingerprint_key": alert.fingerprint_key,
        "project": alert.project,
        "environment": alert.environment,
        "title": alert.title,
        "culprit": alert.culprit,
        "web_url": alert.web_url,
    }
    # Written only when present, so older lines re-encode as they were.
    if alert.project_slug is not None:
        fields["project_slug"] = alert.project_slug
    if alert.release is not None:
        fields["release"] = alert.release
    if alert.tags:
        fields["tags"] = [list(pair) for pair in alert.tags]
    return fields


def _decided(event: AlertDecided) -> Json:
    fields: Json = {
        "alert_seq": event.alert_seq,
        "sentry_issue_id": event.sentry_issue_id,
        "fingerprint_key": event.fingerprint_key,
        "action": event.action,
        "reason": event.reason,
    }
    if event.linked_issue is not None:
        fields["linked_issue"] = {
            "alert_seq": event.linked_issue.alert_seq,
            "number": event.linked_issue.number,
        }
    if event.suppressed is not None:
        fields["suppressed"] = {
            "count": event.suppressed.count,
            "first_at": _optional_time(event.suppressed.first_at),
            "last_at": _optional_time(event.suppressed.last_at),
        }
    if event.since is not None:
        fields["since"] = format_time(event.since)
    if event.silence_id is not None:  # written only when set: older lines re-encode as they were
        fields["silence_id"] = event.silence_id
    if event.repo is not None:
        fields["repo"] = event.repo
    return fields


def _storm(event: StormDecided) -> Json:
    return {
        "alert_seq": event.alert_seq,
        "action": event.action,
        "repo": event.repo,
        "window_start": format_time(event.window_start),
        "sentry_issue_ids": list(event.sentry_issue_ids),
        "issues": [{"sentry_issue_id": i.sentry_issue_id, "title": i.title, "level": i.level,
                    "web_url": i.web_url} for i in event.issues],
    }


def encode_policy(policy: Policy) -> Json:
    """The JSON-ready dict of a policy (also printed by the CLI)."""
    fields: Json = {
        "min_level": policy.min_level,
        "environments": list(policy.environments),
        "cooldown_seconds": policy.cooldown_seconds,
        "max_issues_per_hour": policy.max_issues_per_hour,
        "repo": policy.repo,
        "labels": list(policy.labels),
        "reopen_window_seconds": policy.reopen_window_seconds,
        "mute_label": policy.mute_label,
        "close_on_resolve": policy.close_on_resolve,
        "resolve_in_sentry": policy.resolve_in_sentry,
    }
    # Written only when set, so the lines of a policy without routes (all of them
    # before routing) re-encode byte for byte as they were.
    if policy.routes:
        fields["routes"] = [encode_route(route) for route in policy.routes]
    if not policy.dry_run:
        fields["dry_run"] = False
    if policy.storm_labels != _DEFAULT_POLICY.storm_labels:
        fields["storm_labels"] = list(policy.storm_labels)
    return fields


def encode_route(route: Route) -> Json:
    """A route as JSON: its repo, and only the conditions and overrides it sets."""
    fields: Json = {"repo": route.repo}
    if route.projects:
        fields["projects"] = list(route.projects)
    if route.environments:
        fields["environments"] = list(route.environments)
    if route.tags:
        fields["tags"] = dict(route.tags)
    for name in ("labels", "min_level", "cooldown_seconds", "max_issues_per_hour"):
        value = getattr(route, name)
        if value is not None:
            fields[name] = list(value) if isinstance(value, tuple) else value
    return fields


def decode_route(r: Json) -> Route:
    """Inverse of ``encode_route``."""
    labels = r.get("labels")
    return Route(
        repo=str(r["repo"]),
        projects=tuple(str(p) for p in r.get("projects") or ()),
        environments=tuple(str(e) for e in r.get("environments") or ()),
        tags=tuple((str(k), str(v)) for k, v in (r.get("tags") or {}).items()),
        labels=None if labels is None else tuple(str(label) for label in labels),
        min_level=_optional_str(r.get("min_level")),
        cooldown_seconds=_optional_int(r.get("cooldown_seconds")),
        max_issues_per_hour=_optional_int(r.get("max_issues_per_hour")),
    )


def _optional_time(at: datetime | None) -> str | None:
    return None if at is None else format_time(at)


def decode(record: Json) -> Envelope:
    """The record a JSON dict describes; ``CodecError`` if it is not one."""
    try:
        kind = record["type"]
        record = _upgrade(kind, record)
        return Envelope(
            seq=_int(record["seq"]),
            at=parse_time(record["at"]),
            event=_decode_event(kind, record),
            prev=_read_prev(record),
        )
    except CodecError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CodecError(f"malformed record: {exc!r}") from exc


def _upgrade(kind: str, record: Json) -> Json:
    version = record.get("v")
    if version == VERSION:
        return record
    if not isinstance(version, int) or version < 1:
        raise CodecError(f"bad schema version {version!r}")
    if version > VERSION:
        raise CodecError(f"record version {version} is newer than this obsv ({VERSION})")
    steps = _UPGRADES.get(kind, {})
    while version < VERSION:
        record = steps[version](record)
        version += 1
    return record


def _read_prev(record: Json) -> str | None:
    prev = record.get("prev")  # lines of an older log have none
    if prev is None:
        return None
    return _sha256_hex(prev, "prev")


def _sha256_hex(value: object, name: str) -> str:
    if not (isinstance(value, str) and len(value) == 64 and _HEX.issuperset(value)):
        raise CodecError(f"{name} must be 64 lowercase hex digits, got {value!r}")
    return value


def _decode_event(kind: str, r: Json) -> Event:
    reader = _READERS.get(kind)
    if reader is None:
        raise CodecError(f"unknown record type {kind!r}")
    return reader(r)


def _read_received(r: Json) -> AlertReceived:
    raw, raw_sha256 = r["raw"], r.get("raw_sha256")  # older lines have no raw_sha256
    if not isinstance(raw, str) and not (raw is None and isinstance(raw_sha256, str)):
        raise CodecError("an alert.received needs its raw body, or raw null and raw_sha256")
    return AlertReceived(_read_delivery(r["delivery"]), _read_alert(r["alert"]), raw,
                         raw_sha256)


def _read_hook(r: Json) -> HookReceived:
    return HookReceived(_read_delivery(r["delivery"]), r.get("action"), r["raw"])


def _read_opened(r: Json) -> IssueOpened:
    return IssueOpened(_int(r["alert_seq"]), str(r["sentry_issue_id"]), r["repo"],
                       _optional_int(r["number"]), r["url"], bool(r["dry_run"]))


def _read_commented(r: Json) -> CommentPosted:
    return CommentPosted(_int(r["alert_seq"]), str(r["sentry_issue_id"]), r["repo"],
                         _optional_int(r["number"]), _optional_int(r["comment_id"]), r["url"],
                         bool(r["dry_run"]))


def _read_failed(r: Json) -> IssueFailed:
    return IssueFailed(_int(r["alert_seq"]), _int(r["attempt"]), _optional_int(r["status"]),
                       str(r["error"]), bool(r["retryable"]),
                       _read_optional_time(r["next_attempt_at"]))


def _read_config(r: Json) -> ConfigApplied:
    return ConfigApplied(decode_policy(r["policy"]))


def _read_delivery(d: Json) -> Delivery:
    return Delivery(d["request_id"], d["resource"], d["hook_timestamp"], d["signature"])


def _read_alert(a: Json) -> Alert:
    return Alert(
        sentry_issue_id=a["sentry_issue_id"],
        event_id=a["event_id"],
        level=a["level"],
        fingerprint_key=a["fingerprint_key"],
        project=a["project"],
        environment=a["environment"],
        title=a["title"],
        culprit=a["culprit"],
        web_url=a["web_url"],
        project_slug=a.get("project_slug"),
        release=a.get("release"),
        tags=tuple((str(k), str(v)) for k, v in a.get("tags") or ()),
    )


def _read_decided(r: Json) -> AlertDecided:
    linked = r.get("linked_issue")
    suppressed = r.get("suppressed")
    return AlertDecided(
        alert_seq=_int(r["alert_seq"]),
        sentry_issue_id=str(r["sentry_issue_id"]),
        fingerprint_key=str(r["fingerprint_key"]),
        action=r["action"],
        reason=r["reason"],
        linked_issue=None if linked is None else LinkedIssue(
            _int(linked["alert_seq"]), _optional_int(linked["number"])
        ),
        suppressed=None if suppressed is None else Suppressed(
            _int(suppressed["count"]),
            _read_optional_time(suppressed["first_at"]),
            _read_optional_time(suppressed["last_at"]),
        ),
        since=_read_optional_time(r.get("since")),
        silence_id=_optional_str(r.get("silence_id")),
        repo=_optional_str(r.get("repo")),
    )


def decode_policy(p: Json) -> Policy:
    """Inverse of ``encode_policy``; settings an older obsv did not record get their defaults."""
    return Policy(
        min_level=str(p["min_level"]),
        environments=tuple(p["environments"]),
        cooldown_seconds=_int(p["cooldown_seconds"]),
        max_issues_per_hour=_int(p["max_issues_per_hour"]),
        repo=p["repo"],
        labels=tuple(p["labels"]),
        reopen_window_seconds=_int(p.get("reopen_window_seconds",
                                         _DEFAULT_POLICY.reopen_window_seconds)),
        mute_label=str(p.get("mute_label", _DEFAULT_POLICY.mute_label)),
        close_on_resolve=_bool(p.get("close_on_resolve", _DEFAULT_POLICY.close_on_resolve)),
        resolve_in_sentry=_bool(p.get("resolve_in_sentry", _DEFAULT_POLICY.resolve_in_sentry)),
        routes=tuple(decode_route(route) for route in p.get("routes") or ()),
        dry_run=_bool(p.get("dry_run", _DEFAULT_POLICY.dry_run)),
        storm_labels=tuple(str(label) for label in p.get("storm_labels")
                           or _DEFAULT_POLICY.storm_labels),
    )


def _read_sentry_issue(r: Json) -> SentryIssueChanged:
    return SentryIssueChanged(
        _read_delivery(r["delivery"]), str(r["action"]), str(r["sentry_issue_id"]),
        _optional_str(r["status"]), _optional_str(r["substatus"]),
        _optional_str(r["resolution_type"]), str(r["raw"]), _optional_str(r.get("release")))


def _read_observed(r: Json) -> GitHubIssueObserved:
    state, source = r["state"], r["source"]
    if state not in ("open", "closed") or source not in ("webhook", "poll"):
        raise CodecError(f"bad github.issue state {state!r} or source {source!r}")
    return GitHubIssueObserved(
        repo=str(r["repo"]), number=_int(r["number"]), sentry_issue_id=str(r["sentry_issue_id"]),
        action=str(r["action"]), state=state, state_reason=_optional_str(r["state_reason"]),
        closed_at=_read_optional_time(r["closed_at"]), updated_at=parse_time(r["updated_at"]),
        labels=tuple(map(str, r["labels"])),
        source=source, delivery_id=_optional_str(r["delivery_id"]),
        raw=_optional_str(r["raw"]))


def _read_reopened(r: Json) -> IssueReopened:
    return IssueReopened(_int(r["alert_seq"]), r["repo"], _optional_int(r["number"]),
                         _bool(r["dry_run"]))


def _read_closed(r: Json) -> IssueClosed:
    return IssueClosed(_int(r["alert_seq"]), r["repo"], _optional_int(r["number"]),
                       _bool(r["dry_run"]))


def _read_resolved(r: Json) -> SentryResolved:
    return SentryResolved(_int(r["cause_seq"]), str(r["sentry_issue_id"]))


def _read_sync(r: Json) -> SyncDecided:
    action, reason = r["action"], r["reason"]
    if (action, reason) not in (("close", "resolved_in_sentry"),
                                ("resolve_sentry", "closed_on_github")):
        raise CodecError(f"unknown sync decision {action!r} ({reason!r})")
    return SyncDecided(_int(r["cause_seq"]), str(r["sentry_issue_id"]), action, reason)


def _read_storm(r: Json) -> StormDecided:
    action, issues = r["action"], r["issues"]
    if action not in ("open", "comment"):
        raise CodecError(f"unknown storm decision {action!r}")
    if not isinstance(issues, list) or not all(isinstance(i, dict) for i in issues):
        raise CodecError("storm.decided issues must be a list of objects")
    return StormDecided(_int(r["alert_seq"]), action, _optional_str(r["repo"]),
                        parse_time(r["window_start"]), tuple(
                            StormIssue(str(i["sentry_issue_id"]), _optional_str(i["title"]),
                                       _optional_str(i["level"]), _optional_str(i["web_url"]))
                            for i in issues))


def _read_checkpoint(r: Json) -> LogCheckpoint:
    return LogCheckpoint(_int(r["head_seq"]), _sha256_hex(r["head_sha256"], "head_sha256"))


def _read_silence_added(r: Json) -> SilenceAdded:
    matchers = r["matchers"]
    if not isinstance(matchers, list) or not all(isinstance(m, str) for m in matchers):
        raise CodecError("silence.added matchers must be a list of strings")
    return SilenceAdded(str(r["id"]), tuple(matchers), parse_time(r["starts_at"]),
                        parse_time(r["ends_at"]), str(r["comment"]), str(r["created_by"]))


def _read_leader_elected(r: Json) -> LeaderElected:
    return LeaderElected(_int(r["epoch"]), str(r["replica"]))


def _read_silence_expired(r: Json) -> SilenceExpired:
    return SilenceExpired(str(r["id"]), str(r["by"]))


_READERS: dict[str, Callable[[Json], Event]] = {
    "alert.received": _read_received,
    "hook.received": _read_hook,
    "alert.decided": _read_decided,
    "config.applied": _read_config,
    "issue.opened": _read_opened,
    "comment.posted": _read_commented,
    "issue.failed": _read_failed,
    "sentry.issue": _read_sentry_issue,
    "github.issue": _read_observed,
    "issue.reopened": _read_reopened,
    "issue.closed": _read_closed,
    "sentry.resolved": _read_resolved,
    "sync.decided": _read_sync,
    "storm.decided": _read_storm,
    "log.checkpoint": _read_checkpoint,
    "leader.elected": _read_leader_elected,
    "silence.added": _read_silence_added,
    "silence.expired": _read_silence_expired,
}


def _int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise CodecError(f"expected an integer, got {value!r}")
    return value


def _optional_int(value: object) -> int | None:
    return None if value is None else _int(value)


def _bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise CodecError(f"expected true or false, got {value!r}")
    return value


def _optional_str(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise CodecError(f"expected a string, got {value!r}")


def _read_optional_time(value: object) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise CodecError(f"expected a time, got {value!r}")
    return parse_time(value)
