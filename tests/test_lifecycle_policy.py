"""Rows 6-9 of docs/reference.md §5, unlinking, and the sync decisions of §7, at their
boundaries; each test reads the decisions and intents a user would see acted on."""

from __future__ import annotations

from datetime import timedelta

from obsv.core.events import (
    GitHubIssueObserved,
    IssueFailed,
    IssueOpened,
    LinkedIssue,
    Suppressed,
    SyncDecided,
)
from obsv.core.policy import (
    EVENT_ID_WINDOW,
    State,
    apply,
    delivery_recorded,
    differs_from_log,
    orphaned_intents,
    ready_intents,
)
from obsv.core.snapshot import state_to_dict

from .lifecycle_records import LifeLog
from .records import T0, seconds

WINDOW = 3600
US = timedelta(microseconds=1)


def opened_issue(**policy: object) -> tuple[LifeLog, int]:
    """A log whose Sentry issue "1" has GitHub issue #12, opened at T0."""
    log = LifeLog()
    policy.setdefault("cooldown_seconds", 600)
    policy.setdefault("reopen_window_seconds", WINDOW)
    log.config(**policy)
    first = log.alert(issue="1")
    log.opened(first.alert_seq, 12)
    return log, first.alert_seq


def ready(log: LifeLog) -> list[tuple[int, str]]:
    return [(i.alert_seq, i.action) for i in ready_intents(log.state)]


# -- row 6: wont_fix ------------------------------------------------------------------

def test_closed_as_not_planned_or_duplicate_is_never_reopened_or_commented() -> None:
    for reason in ("not_planned", "duplicate"):
        log, link_seq = opened_issue()
        log.github(12, reason=reason)
        for after in (seconds(1), seconds(WINDOW * 2), timedelta(days=30)):
            decision = log.alert(after, issue="1")
            assert (decision.action, decision.reason) == ("suppress", "wont_fix")
            assert decision.linked_issue == LinkedIssue(link_seq, 12)
        log.sentry("resolved")  # not even a Sentry resolve makes it a regression
        assert log.alert(seconds(1), issue="1").reason == "wont_fix"
        assert ready(log) == []


def test_mute_label_silences_an_open_or_closed_issue_until_it_is_removed() -> None:
    log, _ = opened_issue()
    log.github(12, "labeled", labels=("agent:builder", "obsv:mute"))
    assert log.alert(seconds(700), issue="1").reason == "wont_fix"
    log.sentry("resolved")
    assert log.alert(seconds(1), issue="1").reason == "wont_fix"
    log.github(12, "closed", labels=("obsv:mute",))
    assert log.alert(seconds(1), issue="1").reason == "wont_fix"
    log.github(12, "unlabeled", state="closed", reason="completed", labels=())
    decision = log.alert(seconds(1), issue="1")
    assert (decision.action, decision.reason) == ("reopen", "regression")


def test_the_mute_label_is_the_policys() -> None:
    log, _ = opened_issue(mute_label="quiet")
    log.github(12, "labeled", labels=("obsv:mute",))
    assert log.alert(seconds(700), issue="1").reason == "recurrence"
    log.github(12, "labeled", labels=("quiet",))
    assert log.alert(seconds(700), issue="1").reason == "wont_fix"


def test_filters_and_duplicates_still_come_first() -> None:
    log, _ = opened_issue(min_level="error")
    log.github(12, reason="not_planned")
    assert log.alert(seconds(1), issue="1", level="warning").reason == "below_min_level"
    log.alert(seconds(1), issue="1", event_id="dup")
    assert log.alert(seconds(1), issue="1", event_id="dup").reason == "duplicate"


# -- row 7: reopen ----------------------------------------------------------------------

def test_reopen_window_boundary_is_exact() -> None:
    for after, action in ((seconds(WINDOW), "reopen"), (seconds(WINDOW) + US, "open")):
        log, link_seq = opened_issue()
        closed_at = T0 + seconds(100)
        log.github(12, closed_at=closed_at, after=seconds(100))
        log.now = closed_at
        decision = log.alert(after, issue="1")
        assert (decision.action, decision.reason) == (action, "regression")
        assert decision.linked_issue == LinkedIssue(link_seq, 12)
        assert decision.since == closed_at


def test_a_close_reported_after_the_alert_counts_as_inside_the_window() -> None:
    log, _ = opened_issue()
    log.github(12, closed_at=T0 + timedelta(days=1), after=seconds(10))  # GitHub's clock ahead
    assert log.alert(seconds(1), issue="1").action == "reopen"


def test_closed_without_a_reason_is_reopened() -> None:
    log, _ = opened_issue()
    log.add(GitHubIssueObserved("o/r", 12, "1", "closed", "closed", None, T0, T0, (),
                                "webhook", None, None))
    assert log.alert(seconds(1), issue="1").action == "reopen"


def test_reopen_is_one_intent_marks_the_issue_open_and_restarts_the_cooldown() -> None:
    log, _ = opened_issue()
    log.alert(seconds(1), issue="1")  # held back by the cooldown
    log.github(12, after=seconds(10))
    reopen = log.alert(seconds(60), issue="1")
    assert (reopen.action, reopen.reason) == ("reopen", "regression")
    assert reopen.suppressed == Suppressed(1, T0 + seconds(1), T0 + seconds(1))
    assert ready(log) == [(reopen.alert_seq, "reopen")]
    # The link is open at once: the next alert is in cooldown, never a second reopen.
    assert log.alert(seconds(1), issue="1").reason == "cooldown"
    assert log.alert(seconds(598), issue="1").reason == "cooldown"
    log.reopened(reopen.alert_seq, 12)
    intent = log.state.intents[reopen.alert_seq]
    assert intent.reopened and ready(log) == [(reopen.alert_seq, "reopen")]
    log.commented(reopen.alert_seq, 12)
    assert ready(log) == []
    assert log.alert(seconds(1), issue="1").reason == "recurrence"


def test_stale_reports_of_the_reopened_close_are_ignored() -> None:
    log, _ = opened_issue()
    closed_at = T0 + seconds(10)
    log.github(12, closed_at=closed_at, after=seconds(10))
    reopen = log.alert(seconds(60), issue="1")
    # GitHub has not seen the PATCH yet: it still says closed (a label came and went).
    labelled_at = log.now
    log.github(12, "labeled", state="closed", reason="completed", closed_at=closed_at,
               labels=("agent:builder", "x"))
    assert log.alert(seconds(1), issue="1").reason == "cooldown"
    log.reopened(reopen.alert_seq, 12)
    # A poll read before the PATCH, recorded after it.
    log.github(12, "observed", state="closed", reason="completed", closed_at=closed_at,
               source="poll", updated_at=labelled_at, after=seconds(1))
    assert log.alert(seconds(1), issue="1").reason == "cooldown"
    # A human closing it again is news.
    log.github(12, closed_at=log.now + seconds(5), after=seconds(5))
    assert log.alert(seconds(1), issue="1").action == "reopen"


def test_reports_delivered_out_of_order_are_ordered_by_github_time() -> None:
    log, _ = opened_issue()
    closed_at = T0 + seconds(10)
    # A human closed it as not planned, then reopened it; GitHub delivers the other way.
    log.github(12, "reopened", reason="reopened", updated_at=T0 + seconds(20),
               after=seconds(30))
    log.github(12, reason="not_planned", closed_at=closed_at, updated_at=closed_at)
    assert log.alert(seconds(700), issue="1").reason == "recurrence"


def test_not_planned_counts_even_while_obsv_reopens() -> None:
    log, _ = opened_issue()
    closed_at = T0 + seconds(10)
    log.github(12, closed_at=closed_at, after=seconds(10))
    log.alert(seconds(60), issue="1")
    log.github(12, reason="not_planned", closed_at=closed_at)
    assert log.alert(seconds(1), issue="1").reason == "wont_fix"


def test_a_reopen_that_fails_for_good_unlinks() -> None:
    log, _ = opened_issue()
    log.github(12, after=seconds(10))
    reopen = log.alert(seconds(60), issue="1")
    log.failed(reopen.alert_seq, retryable=True)
    assert log.alert(seconds(1), issue="1").reason == "cooldown"
    log.failed(reopen.alert_seq, retryable=False)
    assert log.state.intents == {}
    assert log.alert(seconds(1), issue="1").reason == "new_issue"


def test_a_comment_failing_after_the_reopen_keeps_the_link() -> None:
    log, _ = opened_issue()
    log.github(12, after=seconds(10))
    reopen = log.alert(seconds(60), issue="1")
    log.reopened(reopen.alert_seq, 12)
    log.failed(reopen.alert_seq, retryable=False)
    assert log.state.intents == {}
    assert log.alert(seconds(1), issue="1").reason == "cooldown"


def test_writes_on_one_issue_go_in_decision_order() -> None:
    log, _ = opened_issue(cooldown_seconds=0)
    log.github(12, after=seconds(10))
    reopen = log.alert(seconds(1), issue="1")
    comment = log.alert(seconds(1), issue="1")
    other = log.alert(seconds(1), issue="2")
    assert comment.action == "comment"
    log.failed(reopen.alert_seq, retryable=True)
    # The comment waits behind the reopen still to be retried; other issues do not.
    assert ready(log) == [(reopen.alert_seq, "reopen"), (other.alert_seq, "open")]
    log.reopened(reopen.alert_seq, 12)
    log.commented(reopen.alert_seq, 12)
    assert ready(log) == [(comment.alert_seq, "comment"), (other.alert_seq, "open")]


# -- row 8: open a regression issue ------------------------------------------------------

def test_regression_after_the_window_opens_a_new_issue_and_moves_the_link() -> None:
    log, link_seq = opened_issue(max_issues_per_hour=1)
    log.github(12, after=seconds(10))
    log.alert(seconds(1), issue="9")  # spends the storm budget
    regression = log.alert(seconds(WINDOW + 1), issue="1")
    assert (regression.action, regression.reason) == ("open", "regression")
    assert regression.linked_issue == LinkedIssue(link_seq, 12)
    assert regression.since == T0 + seconds(10)
    # It counted towards the budget, though the budget did not block it.
    assert log.alert(seconds(1), issue="3").reason == "storm_budget"
    # The old issue is left alone from now on: news of it changes nothing.
    log.github(12, "reopened", reason="reopened")
    held = log.alert(seconds(1), issue="1")
    assert held.reason == "cooldown"
    assert held.linked_issue == LinkedIssue(regression.alert_seq, None)
    log.opened(regression.alert_seq, 30)
    log.github(12, reason="not_planned")
    assert log.alert(seconds(700), issue="1").linked_issue == LinkedIssue(
        regression.alert_seq, 30)


def test_news_of_the_replaced_issue_is_not_taken_for_the_pending_new_one() -> None:
    log, _ = opened_issue()
    log.github(12, after=seconds(10))
    regression = log.alert(seconds(WINDOW + 1), issue="1")
    log.github(12, reason="not_planned")  # about #12, before the new issue's issue.opened
    assert log.alert(seconds(1), issue="1").reason == "cooldown"
    log.opened(regression.alert_seq, 30)
    assert log.state.links[regression.alert_seq].state == "open"


def test_news_of_an_issue_left_behind_is_not_taken_for_a_new_pending_one() -> None:
    # Sentry issues 1 and 2 share a fingerprint; 2's regression moves the link away from
    # #12, so 1's next alert opens a new issue that also carries 1's marker.
    log = LifeLog()
    log.config(cooldown_seconds=600, reopen_window_seconds=WINDOW, resolve_in_sentry=True)
    log.opened(log.alert(issue="1", key="p:fp:shared").alert_seq, 12)
    log.github(12, after=seconds(10))
    log.alert(seconds(WINDOW + 1), issue="2", key="p:fp:shared")
    fresh = log.alert(seconds(1), issue="1")
    assert (fresh.action, fresh.reason) == ("open", "new_issue")
    # GitHub's late webhooks about #12 say nothing about the pending issue.
    assert log.github(12, reason="completed", after=seconds(1)) is None
    assert log.state.links[fresh.alert_seq].state == "open"
    # One about the new issue itself does, and tells its number.
    log.github(31, "labeled", labels=("obsv:mute",))
    assert log.state.links[fresh.alert_seq].number == 31
    assert log.alert(seconds(1), issue="1").reason == "wont_fix"


# -- row 9: a Sentry resolve, then the error again ------------------------------------------

def test_resolved_in_sentry_then_an_alert_comments_at_once_despite_the_cooldown() -> None:
    log, link_seq = opened_issue()
    resolved_at = T0 + seconds(5)
    log.sentry("resolved", after=seconds(5))
    log.sentry("unresolved", after=seconds(1))  # sent around the alert: does not cancel
    decision = log.alert(seconds(1), issue="1")
    assert (decision.action, decision.reason) == ("comment", "regression")
    assert decision.since == resolved_at
    assert decision.linked_issue == LinkedIssue(link_seq, 12)
    # The comment was a notification: the next alert is in cooldown again.
    assert log.alert(seconds(1), issue="1").reason == "cooldown"


def test_a_resolve_before_the_last_notification_is_not_a_regression() -> None:
    log, _ = opened_issue(cooldown_seconds=0)
    log.sentry("resolved", after=seconds(5))
    assert log.alert(seconds(1), issue="1").reason == "regression"
    assert log.alert(seconds(1), issue="1").reason == "recurrence"


def test_obsvs_own_resolve_counts_too() -> None:
    log, _ = opened_issue(resolve_in_sentry=True)
    sync = log.github(12, after=seconds(5))
    assert sync is not None
    log.resolved(sync.cause_seq)
    log.github(12, "reopened", reason="reopened", after=seconds(5))
    decision = log.alert(seconds(1), issue="1")
    assert (decision.action, decision.reason) == ("comment", "regression")
    assert decision.since == T0 + seconds(5)


def test_a_closed_issue_resolved_in_sentry_is_reopened_since_its_close() -> None:
    log, _ = opened_issue()
    log.github(12, after=seconds(5))
    log.sentry("resolved", after=seconds(5))
    decision = log.alert(seconds(1), issue="1")
    assert (decision.action, decision.since) == ("reopen", T0 + seconds(5))
    assert log.alert(seconds(1), issue="1").reason == "cooldown"


# -- unlinking, matching, deliveries -----------------------------------------------------

def test_deleted_or_transferred_issue_is_unlinked() -> None:
    for action in ("deleted", "transferred"):
        log, _ = opened_issue()
        comment_seq = log.alert(seconds(700), issue="1").alert_seq
        log.github(12, action)
        assert [i.alert_seq for i in orphaned_intents(log.state)] == [comment_seq]
        assert log.alert(seconds(1), issue="1").reason == "new_issue"
        assert len(log.state.links_by_number) == 0


def test_github_news_before_issue_opened_is_matched_by_the_marker() -> None:
    log = LifeLog()
    log.config(cooldown_seconds=600)
    first = log.alert(issue="1")
    log.github(12, after=seconds(10))  # the webhook beat the sink's issue.opened
    reopen = log.alert(seconds(1), issue="1")
    assert reopen.action == "reopen"
    assert ready(log) == [(first.alert_seq, "open")]  # the reopen waits for the issue
    log.opened(first.alert_seq, 12)
    assert ready(log) == [(reopen.alert_seq, "reopen")]


def test_deleted_before_issue_opened_drops_the_pending_open() -> None:
    log = LifeLog()
    log.config()
    first = log.alert(issue="1")
    log.github(12, "deleted")
    assert log.state.intents == {} and log.state.links == {}
    log.add(IssueOpened(first.alert_seq, "1", "o/r", 12, "u", False))  # the sink's late outcome
    assert log.state.links == {}
    assert log.alert(seconds(1), issue="1").reason == "new_issue"


def test_news_of_an_issue_obsv_does_not_link_changes_nothing() -> None:
    log, _ = opened_issue()
    before = state_to_dict(log.state)
    log.github(99, issue="7")  # another Sentry issue, unknown number
    log.github(98, issue="1", reason="not_planned")  # the marker's id is linked, but to #12
    after = state_to_dict(log.state)
    assert before["rows"][1:] == after["rows"][1:]  # only last_seq moved


def test_github_deliveries_are_remembered_for_a_day() -> None:
    log, _ = opened_issue()
    log.github(12, "labeled", labels=("obsv:mute",), delivery="d-1")
    assert delivery_recorded(log.state, "d-1") and not delivery_recorded(log.state, "d-2")
    # A redelivery is skipped: it cannot undo what came after it.
    log.github(12, "unlabeled", labels=(), delivery="d-2")
    log.github(12, "labeled", labels=("obsv:mute",), delivery="d-1")
    assert log.alert(seconds(700), issue="1").reason == "recurrence"
    log.github(12, "edited", labels=(), delivery="d-3", after=EVENT_ID_WINDOW + seconds(1))
    assert list(log.state.github_deliveries) == ["d-3"]


def test_differs_from_log_says_what_a_poll_should_record() -> None:
    log, _ = opened_issue()

    def poll(state: str, reason: str | None, labels: tuple[str, ...],
             number: int = 12) -> GitHubIssueObserved:
        closed = T0 + seconds(50) if state == "closed" else None
        return GitHubIssueObserved("o/r", number, "1", "observed", state,  # type: ignore[arg-type]
                                   reason, closed, log.now, labels, "poll", None, None)

    assert differs_from_log(log.state, poll("open", None, ("agent:builder",)))  # never seen
    log.add(poll("open", None, ("agent:builder",)))
    assert not differs_from_log(log.state, poll("open", None, ("agent:builder",)))
    assert not differs_from_log(log.state, poll("open", None, ("agent:builder",) * 2))
    assert differs_from_log(log.state, poll("open", None, ("agent:builder", "obsv:mute")))
    assert differs_from_log(log.state, poll("closed", "completed", ("agent:builder",)))
    assert not differs_from_log(log.state, poll("closed", "completed", (), number=13))
    log.add(poll("closed", "completed", ("agent:builder",)))
    assert not differs_from_log(log.state, poll("closed", "completed", ("agent:builder",)))
    # While obsv reopens it, GitHub saying "closed" is not news.
    log.alert(seconds(100), issue="1")
    assert not differs_from_log(log.state, poll("closed", "completed", ("agent:builder",)))
    assert differs_from_log(log.state, poll("closed", "not_planned", ("agent:builder",)))


# -- sync decisions (§7) -----------------------------------------------------------------

def test_close_on_resolve_closes_an_open_issue_once() -> None:
    log, link_seq = opened_issue(close_on_resolve=True)
    sync = log.sentry("resolved", resolution="in_next_release", after=seconds(5))
    assert sync == SyncDecided(len(log.records) - 1, "1", "close", "resolved_in_sentry")
    intent = log.state.intents[sync.cause_seq]
    assert (intent.action, intent.link_seq, intent.received.resolution_type) == (  # type: ignore[union-attr]
        "close", link_seq, "in_next_release")
    assert ready(log) == [(sync.cause_seq, "close")]
    # Sentry saying it again is not a second close.
    assert log.sentry("resolved", after=seconds(1)) is None
    log.closed(sync.cause_seq, 12)
    assert ready(log) == [] and log.state.links[link_seq].closed_at == log.now
    # Closed by obsv: a regression within the window reopens it.
    assert log.alert(seconds(1), issue="1").action == "reopen"


def test_close_on_resolve_needs_the_setting_an_open_unmuted_linked_issue() -> None:
    log, _ = opened_issue()
    assert log.sentry("resolved") is None  # setting off
    log, _ = opened_issue(close_on_resolve=True)
    assert log.sentry("resolved", issue="77") is None  # no linked issue
    log.github(12, "labeled", labels=("obsv:mute",))
    assert log.sentry("resolved") is None  # muted
    log, _ = opened_issue(close_on_resolve=True)
    log.github(12, reason="completed")
    assert log.sentry("resolved") is None  # already closed
    log, _ = opened_issue(close_on_resolve=True)
    assert log.sentry("ignored") is None and log.sentry("unresolved") is None


def test_an_alert_during_a_pending_close_reopens_after_it() -> None:
    log, _ = opened_issue(close_on_resolve=True)
    sync = log.sentry("resolved", after=seconds(5))
    assert sync is not None
    reopen = log.alert(seconds(1), issue="1")
    assert reopen.action == "reopen"
    assert ready(log) == [(sync.cause_seq, "close")]
    # GitHub saying "open" before the close is done is not news.
    log.github(12, "labeled", labels=("agent:builder",))
    log.closed(sync.cause_seq, 12)
    assert ready(log) == [(reopen.alert_seq, "reopen")]


def test_github_saying_open_before_obsvs_close_is_done_is_not_news() -> None:
    log, _ = opened_issue(close_on_resolve=True)
    sync = log.sentry("resolved", after=seconds(5))
    assert sync is not None
    log.github(12, "labeled", labels=("agent:builder", "bug"), after=seconds(1))
    # Still closed as far as decisions go: the error coming back reopens after the close.
    assert log.alert(seconds(1), issue="1").action == "reopen"


def test_the_echo_of_obsvs_close_during_a_reopen_is_stale() -> None:
    log, _ = opened_issue(close_on_resolve=True)
    sync = log.sentry("resolved", after=seconds(5))
    assert sync is not None
    reopen = log.alert(seconds(1), issue="1")
    log.closed(sync.cause_seq, 12)
    # GitHub's webhook for that close, stamped with GitHub's (later) time.
    log.github(12, closed_at=log.now + seconds(30), after=seconds(1))
    assert log.alert(seconds(1), issue="1").reason == "cooldown"
    log.reopened(reopen.alert_seq, 12)
    log.github(12, "reopened", reason="reopened", after=seconds(1))
    assert log.state.links[next(iter(log.state.links))].state == "open"


def test_a_late_echo_of_obsvs_close_after_the_reopen_is_stale() -> None:
    log, _ = opened_issue(close_on_resolve=True)
    sync = log.sentry("resolved", after=seconds(5))
    assert sync is not None
    reopen = log.alert(seconds(1), issue="1")
    log.closed(sync.cause_seq, 12)
    closed_on_github = log.now + seconds(1)
    log.now += seconds(2)
    log.reopened(reopen.alert_seq, 12)
    # GitHub's webhook of the close comes only now, after the reopen's PATCH.
    log.github(12, closed_at=closed_on_github, updated_at=closed_on_github, after=seconds(3))
    assert log.alert(seconds(1), issue="1").reason == "cooldown"


def test_the_echo_of_obsvs_resolve_after_a_new_alert_closes_nothing() -> None:
    log, _ = opened_issue(close_on_resolve=True, resolve_in_sentry=True)
    resolve = log.github(12, after=seconds(5))
    assert resolve is not None
    log.resolved(resolve.cause_seq)
    reopen = log.alert(seconds(1), issue="1")  # the error is back: reopen
    assert reopen.action == "reopen"
    # Sentry's webhooks come late, the older one first: neither is a reason to close.
    assert log.sentry("unresolved", after=seconds(1)) is None
    assert log.sentry("resolved", after=seconds(1)) is None
    # A human resolving it afterwards is.
    log.sentry("unresolved", after=seconds(1))
    assert log.sentry("resolved", after=seconds(1)) is not None


def test_the_echo_of_a_resolve_for_the_replaced_issue_closes_nothing() -> None:
    log, _ = opened_issue(close_on_resolve=True, resolve_in_sentry=True)
    resolve = log.github(12, after=seconds(5))
    assert resolve is not None
    log.resolved(resolve.cause_seq)
    regression = log.alert(seconds(WINDOW + 1), issue="1")
    assert (regression.action, regression.reason) == ("open", "regression")
    # Sentry's webhook for the resolve made for #12 must not close the new issue.
    assert log.sentry("resolved", after=seconds(1)) is None


def test_a_close_that_fails_for_good_leaves_the_issue_open() -> None:
    log, _ = opened_issue(close_on_resolve=True)
    sync = log.sentry("resolved", after=seconds(5))
    assert sync is not None
    log.add(IssueFailed(sync.cause_seq, 1, 403, "forbidden", False, None))
    assert log.state.intents == {}
    decision = log.alert(seconds(1), issue="1")
    assert (decision.action, decision.reason) == ("comment", "regression")


def test_resolve_in_sentry_when_github_closes_as_completed() -> None:
    log, link_seq = opened_issue(resolve_in_sentry=True)
    assert log.github(12, reason="not_planned", after=seconds(5)) is None
    log.github(12, "reopened", reason="reopened")
    sync = log.github(12, reason="completed", after=seconds(5))
    assert sync == SyncDecided(len(log.records) - 1, "1", "resolve_sentry", "closed_on_github")
    assert ready(log) == [(sync.cause_seq, "resolve_sentry")]
    # The same close seen again (a poll, a label) is not a second resolve.
    assert log.github(12, "labeled", labels=("x",)) is None
    log.resolved(sync.cause_seq)
    assert ready(log) == [] and log.state.links[link_seq].sentry_resolved
    # Reopened and closed again while Sentry is still resolved: nothing to do.
    log.github(12, "reopened", reason="reopened")
    assert log.github(12, after=seconds(1)) is None


def test_a_new_alert_means_sentry_is_no_longer_resolved() -> None:
    log, _ = opened_issue(resolve_in_sentry=True)
    log.sentry("resolved", after=seconds(5))
    assert log.github(12, after=seconds(5)) is None  # Sentry already resolved: no echo
    log.alert(seconds(1), issue="1")  # the error is back: Sentry regresses the issue
    log.reopened(len(log.records) - 1, 12)
    log.github(12, "reopened", reason="reopened")
    assert log.github(12, after=seconds(5)) is not None


def test_no_echo_between_close_on_resolve_and_resolve_in_sentry() -> None:
    log, _ = opened_issue(close_on_resolve=True, resolve_in_sentry=True)
    # Sentry resolves -> obsv closes -> GitHub's closed webhook comes back: nothing more.
    close = log.sentry("resolved", after=seconds(5))
    assert close is not None and close.action == "close"
    assert log.github(12, after=seconds(1)) is None  # before issue.closed
    log.closed(close.cause_seq, 12)
    assert log.github(12, "observed", source="poll", after=seconds(1)) is None
    # GitHub closes -> obsv resolves Sentry -> Sentry's resolved webhook comes back.
    log2, _ = opened_issue(close_on_resolve=True, resolve_in_sentry=True)
    resolve = log2.github(12, after=seconds(5))
    assert resolve is not None and resolve.action == "resolve_sentry"
    assert log2.github(12, "reopened", reason="reopened") is None  # a human reopens it
    # Sentry's webhook for obsv's own resolve, before sentry.resolved is recorded.
    assert log2.sentry("resolved", after=seconds(1)) is None


def test_no_echo_after_the_resolve_is_recorded() -> None:
    log, _ = opened_issue(close_on_resolve=True, resolve_in_sentry=True)
    resolve = log.github(12, after=seconds(5))
    assert resolve is not None and resolve.action == "resolve_sentry"
    log.resolved(resolve.cause_seq)
    log.github(12, "reopened", reason="reopened", after=seconds(1))
    assert log.sentry("resolved", after=seconds(1)) is None


def test_sync_intents_wait_for_their_record_and_replay_identically() -> None:
    log, _ = opened_issue(close_on_resolve=True)
    sync = log.sentry("resolved", after=seconds(5), record=False)
    assert sync is not None and ready(log) == []
    log.add(sync)
    assert ready(log) == [(sync.cause_seq, "close")]
    replayed = State()
    for envelope in log.records:
        apply(replayed, envelope)
    assert state_to_dict(replayed) == state_to_dict(log.state)
    assert replayed.unrecorded == {}
