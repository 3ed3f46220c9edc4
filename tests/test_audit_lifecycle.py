"""`obsv replay`, `replay --verify` and `obsv why` over an issue's fate (docs/reference.md
§1, §4, §7): a replay yields exactly the recorded decisions, sync decisions included,
with webhooks, polls, reopens and closes interleaved.

The logs are made the way the service makes them: the reports come from the real
extractors run on the sample webhooks in tests/samples, every record is folded with the
real ``apply``, and the decisions it derives are appended after their cause as the live
consumer appends them (some only after later deliveries). The commands run as a user
runs them: a real process on a log on disk.
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from msgspec.structs import replace

from obsv.audit import Audit, audit
from obsv.core.codec import format_time
from obsv.core.events import (
    AlertDecided,
    CommentPosted,
    Delivery,
    Envelope,
    GitHubIssueObserved,
    IssueClosed,
    IssueOpened,
    IssueReopened,
    SentryIssueChanged,
    SyncDecided,
)
from obsv.core.lifecycle import (
    github_issue_from_event,
    github_issue_from_rest,
    sentry_issue_from_delivery,
)
from obsv.eventlog import encode_line

from .conftest import SAMPLES
from .lifecycle_records import LifeLog
from .test_audit_cli import obsv, write
from .test_lifecycle_properties import build as build_lifecycle
from .test_lifecycle_properties import steps as lifecycle_steps

ISSUE = "4509912345"  # the Sentry issue of every sample in tests/samples
REPO = "acme/shop"
T0 = datetime(2026, 11, 22, 16, 0, tzinfo=UTC)
WINDOW = 3600


def github_report(name: str, *, number: int = 12, closed_at: datetime | None = None,
                  updated_at: datetime | None = None, sender: str | None = None,
                  labels: tuple[str, ...] | None = None, delivery: str | None = None,
                  poll: bool = False) -> GitHubIssueObserved:
    """A sample ``issues`` webhook of tests/samples, edited, through the real extractor
    (as a poll reads the same issue object when ``poll``). GitHub's ``updated_at`` is
    ``updated_at``, else ``closed_at``."""
    body: dict[str, Any] = json.loads(
        (SAMPLES / "github" / "webhooks" / f"{name}.json").read_text("utf-8"))
    issue = body["issue"]
    issue["number"] = number
    if closed_at is not None:
        issue["closed_at"] = github_time(closed_at)
    if updated_at or closed_at:
        issue["updated_at"] = github_time(updated_at or closed_at)
    if labels is not None:
        issue["labels"] = [{"name": label} for label in labels]
    if sender is not None:
        body["sender"]["login"] = sender
    record = (github_issue_from_rest(issue, repo=REPO) if poll else
              github_issue_from_event(body, raw=json.dumps(body), delivery_id=delivery))
    assert record is not None
    return record


def github_time(at: datetime | None) -> str | None:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ") if at else None


def sentry_report(name: str) -> SentryIssueChanged:
    """A sample Sentry ``issue`` delivery through the real extractor."""
    raw = (SAMPLES / name).read_text("utf-8")
    return sentry_issue_from_delivery(Delivery("req", "issue", None, "ab" * 32),
                                      json.loads(raw), raw)


@dataclass
class Story:
    log: LifeLog
    first: int  # the alert that opened #12
    resolve_cause: int  # the github.issue whose close resolved the Sentry issue
    echo: int  # Sentry's webhook for that resolve
    reopen: int  # the alert that reopened #12
    close_cause: int  # the sentry.issue whose resolve closed #12
    regression: int  # the alert that opened #13 in place of #12
    not_planned: int  # the poll that saw #13 closed as not planned
    wont_fix: int  # the alert suppressed for it


def seq_of(log: LifeLog) -> int:
    return len(log.records)


def story() -> Story:
    """One Sentry issue's whole fate, with both sync settings on and a one-hour window."""
    log = LifeLog(now=T0)
    log.config(cooldown_seconds=600, reopen_window_seconds=WINDOW, close_on_resolve=True,
               resolve_in_sentry=True, repo=REPO)
    first = log.alert(issue=ISSUE).alert_seq
    log.opened(first, 12, repo=REPO)

    # A human closes #12 as completed: obsv resolves the Sentry issue, and Sentry's
    # webhook for that change is its echo (no close decided on it).
    closed_at = T0 + timedelta(minutes=40, seconds=11)
    log.now = closed_at
    resolve = log.report(github_report("issues-closed-completed", closed_at=closed_at,
                                       delivery="gh-1"))
    assert resolve is not None and resolve.action == "resolve_sentry"
    resolve_cause = resolve.cause_seq
    log.resolved(resolve_cause, issue=ISSUE)
    assert log.report(sentry_report("issue-resolved.json"), seconds_(2)) is None
    echo = seq_of(log)

    # It comes back within the hour: reopen. Sentry's "unresolved" lands between the
    # alert and its recorded decision, as it does when both arrive together.
    log.now = T0 + timedelta(hours=1)
    reopen = log.alert(issue=ISSUE, record=False)
    assert (reopen.action, reopen.reason) == ("reopen", "regression")
    assert log.report(sentry_report("issue-unresolved-regressed.json"), record=False) is None
    assert log.record_pending() == [reopen.alert_seq]
    log.reopened(reopen.alert_seq, 12, repo=REPO)
    assert log.report(github_report("issues-reopened", delivery="gh-2",
                                    updated_at=log.now + seconds_(1), sender="obsv-bot[bot]"),
                      seconds_(1)) is None
    log.commented(reopen.alert_seq, 12, repo=REPO, issue=ISSUE,
                  url=f"https://github.com/{REPO}/issues/12#issuecomment-7")

    # Sentry resolves it in the next release: obsv closes #12; GitHub's webhook for that
    # close is its echo (no resolve decided on it).
    close = log.report(sentry_report("issue-resolved-in_next_release.json"),
                       timedelta(minutes=10), record=False)
    assert close is not None and close.action == "close"
    log.record_pending()
    log.closed(close.cause_seq, 12, repo=REPO)
    closed_again = log.now + seconds_(2)
    assert log.report(github_report("issues-closed-completed", closed_at=closed_again,
                                    delivery="gh-3", sender="obsv-bot[bot]"),
                      seconds_(2)) is None

    # Hours later: the window has passed, so a new issue names the old one.
    log.now = T0 + timedelta(hours=4)
    regression = log.alert(issue=ISSUE)
    assert (regression.action, regression.reason) == ("open", "regression")
    log.opened(regression.alert_seq, 13, repo=REPO)

    # A poll sees #13 closed as not planned: the next alert is left alone.
    log.now += timedelta(minutes=5)
    assert log.report(github_report("issues-closed-not_planned", number=13, poll=True,
                                    closed_at=log.now)) is None
    not_planned = seq_of(log)
    wont_fix = log.alert(seconds_(60), issue=ISSUE)
    assert (wont_fix.action, wont_fix.reason) == ("suppress", "wont_fix")
    return Story(log, first, resolve_cause, echo, reopen.alert_seq, close.cause_seq,
                 regression.alert_seq, not_planned, wont_fix.alert_seq)


def seconds_(n: float) -> timedelta:
    return timedelta(seconds=n)


def lines_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def rewrite(path: Path, seq: int, **fields: Any) -> None:
    """Tamper with one record, as a hand edit would."""
    records = lines_of(path)
    records[seq - 1].update(fields)
    path.write_text("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records))


# -- replay --verify -------------------------------------------------------------------

def test_verify_re_derives_every_decision_of_the_story(tmp_path: Path) -> None:
    s = story()
    path = write(tmp_path / "events.jsonl", s.log)
    recorded = [(r["type"], r["action"], r["reason"]) for r in lines_of(path)
                if r["type"] in ("alert.decided", "sync.decided")]
    assert recorded == [
        ("alert.decided", "open", "new_issue"),
        ("sync.decided", "resolve_sentry", "closed_on_github"),
        ("alert.decided", "reopen", "regression"),
        ("sync.decided", "close", "resolved_in_sentry"),
        ("alert.decided", "open", "regression"),
        ("alert.decided", "suppress", "wont_fix")]

    result = obsv("replay", str(path), "--verify")

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == (
        f"{path}: ok: {len(s.log.records)} records, seq contiguous, 4 alerts, 2 sync "
        "decisions, every decision re-derived with the policies recorded in the log\n")
    assert result.stderr == ""


def test_a_tampered_sync_decision_is_a_finding_naming_its_seq(tmp_path: Path) -> None:
    s = story()
    path = write(tmp_path / "events.jsonl", s.log)
    decided = s.close_cause + 1
    assert lines_of(path)[decided - 1]["type"] == "sync.decided"
    rewrite(path, decided, action="resolve_sentry", reason="closed_on_github")

    result = obsv("replay", str(path), "--verify")

    assert result.returncode == 1
    assert result.stdout.splitlines()[0] == (
        f"MISMATCH seq {decided}: sync decision on seq {s.close_cause}: recorded "
        "resolve_sentry (closed_on_github), derived close (resolved_in_sentry)")
    assert "1 finding(s)" in result.stdout.splitlines()[-1]


def test_a_sync_decision_on_a_record_that_derives_none_is_a_finding(tmp_path: Path) -> None:
    s = story()
    path = write(tmp_path / "events.jsonl", s.log)
    decided = s.close_cause + 1
    rewrite(path, decided, cause_seq=s.echo)  # as if Sentry's echo had closed the issue

    result = obsv("replay", str(path), "--verify")

    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"MISMATCH seq {decided}: sync decision on seq {s.echo}: recorded close "
        "(resolved_in_sentry), but that record derives none (or it was decided already)",
        f"note: 1 sync decision(s) derived but not recorded yet (on seq {s.close_cause})",
        f"{path}: 1 finding(s) in {len(s.log.records)} records (4 alerts, 2 sync decisions), "
        "decisions checked against the policies recorded in the log"]


def test_a_tampered_reopen_is_a_finding_naming_its_seq(tmp_path: Path) -> None:
    s = story()
    path = write(tmp_path / "events.jsonl", s.log)
    decided = next(r["seq"] for r in lines_of(path)
                   if r["type"] == "alert.decided" and r["alert_seq"] == s.reopen)
    rewrite(path, decided, action="comment")

    result = obsv("replay", str(path), "--verify")

    assert result.returncode == 1
    assert result.stdout.splitlines()[0] == (
        f"MISMATCH seq {decided}: alert {s.reopen}: recorded comment (regression), "
        "derived reopen (regression)")


def test_verify_checks_since_and_the_issue_a_regression_replaces(tmp_path: Path) -> None:
    s = story()
    path = write(tmp_path / "events.jsonl", s.log)
    decisions = {r["alert_seq"]: r for r in lines_of(path) if r["type"] == "alert.decided"}
    reopen, regression = decisions[s.reopen], decisions[s.regression]
    rewrite(path, reopen["seq"], since="2026-11-22T16:00:00.000000Z")
    rewrite(path, regression["seq"], linked_issue={"alert_seq": s.first, "number": 11})

    result = obsv("replay", str(path), "--verify")

    assert result.returncode == 1
    findings = result.stdout.splitlines()[:2]
    assert findings[0] == (
        f"MISMATCH seq {reopen['seq']}: alert {s.reopen}: recorded reopen (regression), "
        "derived reopen (regression); since recorded 2026-11-22T16:00:00.000000Z, derived "
        f"{reopen['since']}")
    assert findings[1].startswith(f"MISMATCH seq {regression['seq']}: alert {s.regression}: "
                                  "recorded open (regression), derived open (regression); "
                                  "linked issue recorded")
    assert "number=11" in findings[1] and "number=12" in findings[1]


def test_a_sync_decision_not_recorded_yet_is_a_note(tmp_path: Path) -> None:
    log = LifeLog(now=T0)
    log.config(close_on_resolve=True)
    log.opened(log.alert(issue=ISSUE).alert_seq, 12, repo=REPO)
    close = log.report(sentry_report("issue-resolved.json"), seconds_(60), record=False)
    assert close is not None
    path = write(tmp_path / "events.jsonl", log)

    verify = obsv("replay", str(path), "--verify")
    why = obsv("why", ISSUE, "--log", str(path))

    assert verify.returncode == 0, verify.stdout
    assert verify.stdout.splitlines()[0] == (
        f"note: 1 sync decision(s) derived but not recorded yet (on seq {close.cause_seq})")
    assert why.returncode == 0
    assert "    decision: close* (resolved_in_sentry: Sentry reported the issue resolved and " \
        "OBSV_CLOSE_ON_RESOLVE is on: comment why and close the linked issue as completed; " \
        "#12)" in why.stdout.splitlines()


def test_policy_current_re_derives_sync_decisions_too(tmp_path: Path) -> None:
    s = story()
    path = write(tmp_path / "events.jsonl", s.log)

    # Today neither sync setting is on: the two recorded sync decisions differ.
    result = obsv("replay", str(path), "--verify", "--policy", "current",
                  env={"OBSV_REOPEN_WINDOW_SECONDS": str(WINDOW),
                       "OBSV_COOLDOWN_SECONDS": "600"})

    assert result.returncode == 1
    mismatches = [line for line in result.stdout.splitlines() if line.startswith("MISMATCH")]
    assert mismatches == [
        f"MISMATCH seq {s.resolve_cause + 1}: sync decision on seq {s.resolve_cause}: "
        "recorded resolve_sentry (closed_on_github), but that record derives none (or it "
        "was decided already)",
        f"MISMATCH seq {s.close_cause + 1}: sync decision on seq {s.close_cause}: recorded "
        "close (resolved_in_sentry), but that record derives none (or it was decided "
        "already)"]


# -- replay ------------------------------------------------------------------------------

def test_replay_rows_show_reopen_regression_and_wont_fix(tmp_path: Path) -> None:
    s = story()
    path = write(tmp_path / "events.jsonl", s.log)

    table = obsv("replay", str(path))
    as_json = obsv("replay", str(path), "--json")

    assert table.returncode == 0 and as_json.returncode == 0, table.stderr + as_json.stderr
    rows = [re.split(r"\s{2,}", line) for line in table.stdout.splitlines()]
    assert [row[0] for row in rows] == ["SEQ", str(s.first), str(s.reopen),
                                        str(s.regression), str(s.wont_fix)]
    assert [row[4:] for row in rows[1:]] == [
        ["open", "new_issue", "#12"],
        ["reopen", "regression",
         f"#12 reopened, https://github.com/{REPO}/issues/12#issuecomment-7"],
        ["open", "regression", "#13 (replaces #12)"],
        ["suppress", "wont_fix", "(linked: #13, closed as not_planned)"]]

    keys = {"seq", "at", "sentry_issue_id", "event_id", "level", "environment", "title",
            "action", "reason", "repo", "github"}
    lines = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert all(keys <= line.keys() for line in lines)
    assert [(r["action"], r["reason"], r["repo"], r["github"], r["replaces"]) for r in lines] == [
        ("open", "new_issue", REPO, "#12", None),
        ("reopen", "regression", REPO,
         f"#12 reopened, https://github.com/{REPO}/issues/12#issuecomment-7", None),
        ("open", "regression", REPO, "#13", "#12"),
        ("suppress", "wont_fix", REPO, None, None)]
    assert lines[1]["since"] == "2026-11-22T16:40:11.000000Z"  # #12's close


def test_a_reopen_not_yet_carried_out_is_pending(tmp_path: Path) -> None:
    log = LifeLog(now=T0)
    log.config(reopen_window_seconds=WINDOW)
    log.opened(log.alert(issue=ISSUE).alert_seq, 12, repo=REPO)
    log.report(github_report("issues-closed-completed", closed_at=T0 + seconds_(60),
                             delivery="gh-1"), seconds_(60))
    log.alert(seconds_(60), issue=ISSUE)
    path = write(tmp_path / "events.jsonl", log)

    table = obsv("replay", str(path))

    last = re.split(r"\s{2,}", table.stdout.splitlines()[-1])
    assert last[4:] == ["reopen", "regression", "pending reopen (linked: #12)"]


# -- why ---------------------------------------------------------------------------------

def test_why_tells_the_whole_story_in_log_order(tmp_path: Path) -> None:
    s = story()
    path = write(tmp_path / "events.jsonl", s.log)

    result = obsv("why", ISSUE, "--log", str(path))

    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line]
    assert lines[0] == f"Sentry issue {ISSUE}: 4 alert(s), 7 report(s) from GitHub and " \
        f"Sentry in {path}"
    # Every line a user reads, in log order (times dropped: they are the records' own).
    said = [line.split("  ", 1)[1] if line[:4].isdigit() else line for line in lines[1:-1]]
    assert said == [
        f"alert seq {s.first}  error in prod  event ev1",
        "    Boom",
        f"    decision: open (new_issue: no linked GitHub issue yet) in {REPO}",
        f"issue opened: {REPO}#12 https://gh/{REPO}/issues/12  "
        f"(seq {s.first + 2}, for alert seq {s.first})",
        f"GitHub (webhook, by @octo-dev): {REPO}#12 closed; state closed (completed) since "
        "2026-11-22T16:40:11.000000Z; labels agent:builder  "
        f"(github.issue seq {s.resolve_cause})",
        "    decision: resolve_sentry (closed_on_github: the GitHub issue was closed as "
        "completed and OBSV_RESOLVE_IN_SENTRY is on: resolve the Sentry issue; Sentry issue "
        f"{ISSUE})",
        f"Sentry issue {ISSUE} resolved by obsv  (seq {s.resolve_cause + 2}, for the sync "
        f"decision on seq {s.resolve_cause})",
        "Sentry: resolved; status resolved, substatus -, resolution now  "
        f"(sentry.issue seq {s.echo})",
        f"alert seq {s.reopen}  error in prod  event ev2",
        "    Boom",
        "    decision: reopen (regression: the linked issue was closed at most "
        "OBSV_REOPEN_WINDOW_SECONDS before: reopen it, then comment; reopens #12, closed "
        "(completed) since 2026-11-22T16:40:11.000000Z (github.issue seq "
        f"{s.resolve_cause}, webhook, by @octo-dev), within the reopen window (1h)) in {REPO}",
        "Sentry: unresolved; status unresolved, substatus regressed, resolution -  "
        f"(sentry.issue seq {s.reopen + 1})",
        f"issue reopened: {REPO}#12  (seq {s.reopen + 3}, for alert seq {s.reopen})",
        f"GitHub (webhook, by @obsv-bot[bot]): {REPO}#12 reopened; state open (reopened); "
        f"labels agent:builder  (github.issue seq {s.reopen + 4})",
        f"comment posted: https://github.com/{REPO}/issues/12#issuecomment-7 on {REPO}#12  "
        f"(seq {s.reopen + 5}, for alert seq {s.reopen})",
        "Sentry: resolved; status resolved, substatus -, resolution in_next_release  "
        f"(sentry.issue seq {s.close_cause})",
        "    decision: close (resolved_in_sentry: Sentry reported the issue resolved and "
        "OBSV_CLOSE_ON_RESOLVE is on: comment why and close the linked issue as completed; "
        "#12)",
        f"issue closed: {REPO}#12 as completed  (seq {s.close_cause + 2}, for the sync "
        f"decision on seq {s.close_cause})",
        f"GitHub (webhook, by @obsv-bot[bot]): {REPO}#12 closed; state closed (completed) "
        "since 2026-11-22T17:10:03.000000Z; labels agent:builder  "
        f"(github.issue seq {s.close_cause + 3})",
        f"alert seq {s.regression}  error in prod  event ev3",
        "    Boom",
        "    decision: open (regression: the linked issue was closed longer than "
        "OBSV_REOPEN_WINDOW_SECONDS before: a new issue that names the old one; replaces "
        "#12, closed (completed) since 2026-11-22T17:10:03.000000Z (github.issue seq "
        f"{s.close_cause + 3}, webhook, by @obsv-bot[bot]), longer ago than the reopen "
        f"window (1h)) in {REPO}",
        f"issue opened: {REPO}#13 https://gh/{REPO}/issues/13  "
        f"(seq {s.regression + 2}, for alert seq {s.regression})",
        f"GitHub (poll): {REPO}#13 observed; state closed (not_planned) since "
        f"2026-11-22T20:05:00.000000Z; labels agent:builder  (github.issue seq {s.not_planned})",
        f"alert seq {s.wont_fix}  error in prod  event ev4",
        "    Boom",
        "    decision: suppress (wont_fix: a human closed the linked issue as not planned or a "
        "duplicate, or muted it with OBSV_MUTE_LABEL: never reopened, never commented; #13 "
        f"was closed as not_planned (github.issue seq {s.not_planned}, poll)) in {REPO}",
    ]
    assert re.fullmatch(
        r"Another alert now \(.*\) would be: suppress \(wont_fix\), #13 was closed as "
        rf"not_planned \(github\.issue seq {s.not_planned}, poll\)", lines[-1])


def test_why_shows_failures_of_sync_decisions(tmp_path: Path) -> None:
    log = LifeLog(now=T0)
    log.config(resolve_in_sentry=True)
    log.opened(log.alert(issue=ISSUE).alert_seq, 12, repo=REPO)
    resolve = log.report(github_report("issues-closed-completed", closed_at=T0 + seconds_(9),
                                       delivery="gh-1"), seconds_(10))
    assert resolve is not None
    log.failed(resolve.cause_seq, retryable=False)
    path = write(tmp_path / "events.jsonl", log)

    result = obsv("why", ISSUE, "--log", str(path))

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-3].endswith(
        f"  attempt 3 failed (permanent, status 422): boom  (seq {resolve.cause_seq + 2}, "
        f"for the sync decision on seq {resolve.cause_seq})")


def now_log(closed_ago: timedelta, reason: str) -> LifeLog:
    """An issue opened an hour before its close, ``closed_ago`` before now (the real
    clock: "another alert now" is asked at the time `why` runs)."""
    closed_at = datetime.now(UTC).replace(microsecond=0) - closed_ago
    log = LifeLog(now=closed_at - timedelta(hours=1))
    log.config()  # the default reopen window: 14 days
    log.opened(log.alert(issue=ISSUE).alert_seq, 12, repo=REPO)
    name = f"issues-closed-{reason}"
    log.report(github_report(name, closed_at=closed_at, delivery="gh-1"), timedelta(hours=1))
    return log


def another_alert_now(tmp_path: Path, log: LifeLog) -> str:
    result = obsv("why", ISSUE, "--log", str(write(tmp_path / "events.jsonl", log)))
    assert result.returncode == 0, result.stderr
    last = result.stdout.splitlines()[-1]
    assert last.startswith("Another alert now (")
    return last.split(" would be: ", 1)[1]


def test_another_alert_now_reopens_an_issue_closed_inside_the_window(tmp_path: Path) -> None:
    log = now_log(timedelta(days=1), "completed")
    closed = format_time(log.now)
    assert another_alert_now(tmp_path, log) == (
        f"reopen (regression), reopens #12, closed (completed) since {closed} (github.issue "
        "seq 5, webhook, by @octo-dev), within the reopen window (14d)")


def test_another_alert_now_opens_a_new_issue_after_the_window(tmp_path: Path) -> None:
    log = now_log(timedelta(days=30), "completed")
    assert another_alert_now(tmp_path, log).startswith(
        f"open (regression), replaces #12, closed (completed) since {format_time(log.now)}")


def test_another_alert_now_leaves_a_not_planned_issue_alone(tmp_path: Path) -> None:
    log = now_log(timedelta(days=1), "not_planned")
    assert another_alert_now(tmp_path, log) == (
        "suppress (wont_fix), #12 was closed as not_planned (github.issue seq 5, webhook, "
        "by @octo-dev)")


def test_another_alert_now_leaves_a_muted_issue_alone(tmp_path: Path) -> None:
    log = LifeLog(now=datetime.now(UTC) - timedelta(hours=1))
    log.config()
    log.opened(log.alert(issue=ISSUE).alert_seq, 12, repo=REPO)
    event = github_report("issues-labeled-mute", delivery="gh-1", sender="lead",
                          updated_at=log.now + seconds_(60))
    log.report(event, seconds_(60))
    assert another_alert_now(tmp_path, log) == (
        "suppress (wont_fix), #12 carries the mute label obsv:mute (github.issue seq 5, "
        "webhook, by @lead)")


def test_why_escapes_hostile_labels_senders_and_titles(tmp_path: Path) -> None:
    log = LifeLog(now=T0)
    log.config()
    log.opened(log.alert(issue=ISSUE, title="Boom\x1b[2J\n2026-01-01  FAKE alert").alert_seq,
               12, repo=REPO)
    hostile = github_report("issues-labeled-mute", delivery="gh-1",
                            updated_at=T0 + seconds_(60), sender="mallory\x1b]0;pwned\x07",
                            labels=("obsv:mute", "evil\x1b[31m\r\nFAKE label\u202e"))
    log.report(hostile, seconds_(60))
    log.alert(seconds_(60), issue=ISSUE)
    path = write(tmp_path / "events.jsonl", log)

    result = obsv("why", ISSUE, "--log", str(path))

    assert result.returncode == 0, result.stderr
    out = result.stdout
    for char in ("\x1b", "\x07", "\r", "\u202e"):
        assert char not in out
    assert not any(line.startswith(("FAKE", "2026-01-01")) for line in out.splitlines())
    assert "labels obsv:mute, evil\\x1b[31m\\r\\nFAKE label\\u202e" in out
    assert "by @mallory\\x1b]0;pwned\\x07" in out
    assert "    Boom\\x1b[2J\\n2026-01-01  FAKE alert" in out.splitlines()


def test_a_dry_run_names_the_outbox_file_it_closed_and_reopened(tmp_path: Path) -> None:
    outbox = f"var/outbox/{ISSUE}.md"
    log = LifeLog(now=T0)
    log.config(close_on_resolve=True)
    first = log.alert(issue=ISSUE).alert_seq
    log.add(IssueOpened(first, ISSUE, None, None, outbox, True))
    close = log.report(sentry_report("issue-resolved.json"), seconds_(60))
    assert close is not None
    log.add(IssueClosed(close.cause_seq, None, None, True))
    reopen = log.alert(seconds_(60), issue=ISSUE)
    assert reopen.action == "reopen"
    log.add(IssueReopened(reopen.alert_seq, None, None, True))
    log.add(CommentPosted(reopen.alert_seq, ISSUE, None, None, None, outbox, True))
    path = write(tmp_path / "events.jsonl", log)

    why = obsv("why", ISSUE, "--log", str(path))
    table = obsv("replay", str(path))

    assert why.returncode == 0 and table.returncode == 0, why.stderr + table.stderr
    outcomes = [line.split("  ", 1)[1] for line in why.stdout.splitlines()
                if line[:4].isdigit() and "alert seq" not in line.split("  ")[1]]
    assert outcomes == [
        f"issue opened: {outbox} (dry run)  (seq {first + 2}, for alert seq {first})",
        "Sentry: resolved; status resolved, substatus -, resolution now  "
        f"(sentry.issue seq {close.cause_seq})",
        f"issue closed: {outbox} as completed (dry run)  (seq {close.cause_seq + 2}, for the "
        f"sync decision on seq {close.cause_seq})",
        f"issue reopened: {outbox} (dry run)  (seq {reopen.alert_seq + 2}, for alert seq "
        f"{reopen.alert_seq})",
        f"comment posted: {outbox} (dry run)  (seq {reopen.alert_seq + 3}, for alert seq "
        f"{reopen.alert_seq})"]
    assert re.split(r"\s{2,}", table.stdout.splitlines()[-1])[4:] == [
        "reopen", "regression", f"{outbox} reopened"]


def test_why_says_since_when_sentry_had_the_issue_resolved(tmp_path: Path) -> None:
    log = LifeLog(now=T0)
    log.config()  # close_on_resolve off: the issue stays open
    log.opened(log.alert(issue=ISSUE).alert_seq, 12, repo=REPO)
    log.report(sentry_report("issue-resolved.json"), seconds_(60))
    resolved = len(log.records)
    regression = log.alert(seconds_(60), issue=ISSUE)
    assert (regression.action, regression.reason) == ("comment", "regression")
    path = write(tmp_path / "events.jsonl", log)

    result = obsv("why", ISSUE, "--log", str(path))

    assert result.returncode == 0, result.stderr
    assert (
        "    decision: comment (regression: Sentry reported the issue resolved since the last "
        "notification: comment at once, whatever the cooldown; linked issue #12, its Sentry "
        f"issue resolved since {format_time(T0 + seconds_(60))} (sentry.issue seq {resolved}, "
        f"resolved)) in {REPO}") in result.stdout.splitlines()


# -- any interleaving ---------------------------------------------------------------------

def audit_of(records: list[Envelope], issue: str | None = None) -> Audit:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "events.jsonl"
        path.write_bytes(b"".join(encode_line(envelope) for envelope in records))
        return audit(path, issue=issue)


def tampered(event: AlertDecided | SyncDecided) -> AlertDecided | SyncDecided:
    """Another decision a hand edit could put in its place."""
    if isinstance(event, SyncDecided):
        other = {"close": ("resolve_sentry", "closed_on_github"),
                 "resolve_sentry": ("close", "resolved_in_sentry")}[event.action]
        return replace(event, action=other[0], reason=other[1])  # type: ignore[arg-type]
    if event.action == "reopen":
        return replace(event, action="comment")
    if event.reason == "duplicate":
        return replace(event, action="open", reason="new_issue")
    return replace(event, action="suppress", reason="duplicate")


@settings(max_examples=60, deadline=None)
@given(script=lifecycle_steps, data=st.data())
def test_any_interleaving_verifies_and_any_edited_decision_is_named(
        script: list[tuple[object, ...]], data: st.DataObject) -> None:
    records = build_lifecycle(script).records
    result = audit_of(records)
    assert result.findings == [] and result.unrecorded == [] and result.unrecorded_sync == []
    assert all(row.recorded == row.derived for row in result.rows.values())
    decisions = [e for e in records if isinstance(e.event, AlertDecided | SyncDecided)]
    assert result.sync_decisions == sum(isinstance(e.event, SyncDecided) for e in decisions)

    # The timeline of each Sentry issue holds every report and sync decision about it.
    for issue in ("1", "2"):
        timeline = audit_of(records, issue).timeline
        seqs = {entry.envelope.seq for entry in timeline}
        assert {e.seq for e in records if isinstance(e.event, SentryIssueChanged)
                and e.event.sentry_issue_id == issue} <= seqs
        assert {e.event.cause_seq for e in decisions if isinstance(e.event, SyncDecided)
                and e.event.sentry_issue_id == issue} <= seqs

    if not decisions:
        return
    edited = data.draw(st.sampled_from(decisions))
    changed = [replace(e, event=tampered(e.event)) if e is edited else e  # type: ignore[arg-type]
               for e in records]
    assert [f.seq for f in audit_of(changed).of_kind("decision")] == [edited.seq]
