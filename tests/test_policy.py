"""decide() and apply(): every row of docs/reference.md §5, in order, at its boundaries."""

from __future__ import annotations

from datetime import timedelta

from obsv.core.events import LinkedIssue, Suppressed
from obsv.core.policy import EVENT_ID_WINDOW, orphaned_intents, ready_intents

from .records import T0, Log, seconds


def test_first_alert_opens_then_cooldown_then_recurrence() -> None:
    log = Log()
    log.config(cooldown_seconds=600)
    first = log.alert(issue="1")
    assert (first.action, first.reason) == ("open", "new_issue")
    log.opened(first.alert_seq, 12)
    held = [log.alert(seconds(60), issue="1"), log.alert(seconds(60), issue="1")]
    assert [(d.action, d.reason) for d in held] == [("suppress", "cooldown")] * 2
    assert held[0].linked_issue == LinkedIssue(first.alert_seq, 12)
    comment = log.alert(seconds(480), issue="1")
    assert (comment.action, comment.reason) == ("comment", "recurrence")
    assert comment.linked_issue == LinkedIssue(first.alert_seq, 12)
    assert comment.suppressed == Suppressed(2, T0 + seconds(60), T0 + seconds(120))
    # The comment is a notification: the cooldown starts again from it.
    again = log.alert(seconds(599), issue="1")
    assert again.reason == "cooldown"
    after = log.alert(seconds(1), issue="1")
    assert after.reason == "recurrence" and after.suppressed == Suppressed(
        1, T0 + seconds(1199), T0 + seconds(1199))


def test_cooldown_boundary_is_exact() -> None:
    log = Log()
    log.config(cooldown_seconds=100)
    log.alert(issue="1")
    assert log.alert(seconds(100) - timedelta(microseconds=1), issue="1").reason == "cooldown"
    assert log.alert(timedelta(microseconds=1), issue="1").reason == "recurrence"


def test_duplicate_wins_over_every_other_row() -> None:
    log = Log()
    log.config(min_level="error")
    first = log.alert(issue="1", level="warning", event_id="same")
    assert first.reason == "below_min_level"
    assert log.alert(issue="1", level="warning", event_id="same").reason == "duplicate"
    assert log.alert(issue="2", level="fatal", event_id="same").reason == "duplicate"


def test_levels_and_unknown_levels() -> None:
    log = Log()
    log.config(min_level="error", cooldown_seconds=0)
    assert log.alert(issue="1", level="warning").reason == "below_min_level"
    assert log.alert(issue="2", level="info").reason == "below_min_level"
    assert log.alert(issue="3", level="fatal").reason == "new_issue"
    assert log.alert(issue="4", level="mystery").reason == "new_issue"


def test_environment_filter_applies_before_a_linked_issue() -> None:
    log = Log()
    log.config(environments=("prod",), cooldown_seconds=0)
    assert log.alert(issue="1", environment="prod").reason == "new_issue"
    assert log.alert(issue="1", environment="staging").reason == "environment_filtered"
    assert log.alert(issue="1", environment=None).reason == "environment_filtered"
    assert log.alert(issue="1", environment="prod").reason == "recurrence"


def test_storm_budget_slides_over_the_hour() -> None:
    log = Log()
    log.config(max_issues_per_hour=2)
    assert log.alert(issue="a").reason == "new_issue"
    assert log.alert(timedelta(minutes=10), issue="b").reason == "new_issue"
    assert log.alert(timedelta(minutes=10), issue="c").reason == "storm_budget"
    # 'a' opened exactly an hour before: no longer "in the hour before".
    assert log.alert(timedelta(minutes=40), issue="c").reason == "new_issue"
    assert log.alert(timedelta(minutes=1), issue="d").reason == "storm_budget"


def test_storm_budget_spares_linked_issues() -> None:
    log = Log()
    log.config(max_issues_per_hour=1, cooldown_seconds=60)
    log.alert(issue="a")
    assert log.alert(seconds(1), issue="b").reason == "storm_budget"
    assert log.alert(seconds(120), issue="a").reason == "recurrence"


def test_filtered_alert_is_decided_afresh_later() -> None:
    log = Log()
    log.config(max_issues_per_hour=1)
    log.alert(issue="a")
    assert log.alert(issue="b").reason == "storm_budget"
    assert log.alert(timedelta(hours=1), issue="b").reason == "new_issue"


def test_literal_default_fingerprint_does_not_link_unrelated_issues() -> None:
    log = Log()
    log.config()
    assert log.alert(issue="1", key="p:hash:aaa").reason == "new_issue"
    assert log.alert(issue="2", key="p:hash:bbb").reason == "new_issue"


def test_shared_custom_fingerprint_links_by_key() -> None:
    log = Log()
    log.config(cooldown_seconds=600)
    first = log.alert(issue="1", key="p:fp:db-timeout")
    second = log.alert(seconds(5), issue="2", key="p:fp:db-timeout")
    assert second.reason == "cooldown"
    assert second.linked_issue is not None
    assert second.linked_issue.alert_seq == first.alert_seq


def test_pending_open_counts_as_linked() -> None:
    log = Log()
    log.config(cooldown_seconds=600)
    log.alert(issue="1")  # decided open, no outcome yet
    assert log.alert(seconds(1), issue="1").reason == "cooldown"


def test_permanent_failure_unlinks_but_still_counts_for_the_storm_budget() -> None:
    log = Log()
    log.config(max_issues_per_hour=2, cooldown_seconds=600)
    first = log.alert(issue="1")
    log.failed(first.alert_seq, retryable=False)
    assert log.alert(seconds(1), issue="1").reason == "new_issue"
    assert log.alert(seconds(1), issue="2").reason == "storm_budget"


def test_retryable_failure_keeps_the_link_and_the_intent() -> None:
    log = Log()
    log.config(cooldown_seconds=600)
    first = log.alert(issue="1")
    log.failed(first.alert_seq, retryable=True)
    assert log.alert(seconds(1), issue="1").reason == "cooldown"
    intent = log.state.intents[first.alert_seq]
    assert intent.attempts == 3 and intent.next_attempt_at == T0 + seconds(30)


def test_comment_waits_for_its_issue_and_fails_with_it() -> None:
    log = Log()
    log.config(cooldown_seconds=0)
    first = log.alert(issue="1")
    comment = log.alert(seconds(1), issue="1")
    assert comment.action == "comment"
    assert [i.alert_seq for i in ready_intents(log.state)] == [first.alert_seq]
    log.failed(first.alert_seq, retryable=False)
    assert [i.alert_seq for i in orphaned_intents(log.state)] == [comment.alert_seq]


def test_comment_is_ready_once_the_issue_is_opened() -> None:
    log = Log()
    log.config(cooldown_seconds=0)
    first = log.alert(issue="1")
    comment = log.alert(seconds(1), issue="1")
    log.opened(first.alert_seq, 7)
    assert [i.alert_seq for i in ready_intents(log.state)] == [comment.alert_seq]


def test_intents_wait_for_their_decision_record() -> None:
    log = Log()
    log.config()
    decision = log.alert(issue="1", record=False)
    assert ready_intents(log.state) == []
    log.add(decision)
    assert [i.alert_seq for i in ready_intents(log.state)] == [decision.alert_seq]


def test_policy_of_the_last_config_before_the_alert() -> None:
    log = Log()
    log.config(min_level="error")
    assert log.alert(issue="1", level="warning").reason == "below_min_level"
    log.config(min_level="warning")
    assert log.alert(issue="2", level="warning").reason == "new_issue"


def test_no_config_applied_uses_contract_defaults() -> None:
    log = Log()
    assert log.alert(issue="1", level="warning").reason == "below_min_level"
    assert log.alert(issue="2").reason == "new_issue"


def test_event_ids_are_forgotten_after_the_window() -> None:
    log = Log()
    log.config(min_level="fatal")
    log.alert(issue="1", event_id="x")
    assert log.alert(EVENT_ID_WINDOW, issue="1", event_id="x").reason == "duplicate"
    assert log.alert(seconds(1), issue="1", event_id="x").reason == "below_min_level"
    assert len(log.state.event_ids) == 1


def test_sentry_event_ids_kept_as_numbers_are_duplicates_of_their_own_text_only() -> None:
    # Rule 7 keeps a 32-lowercase-hex id as the number it spells: no id of another form
    # (upper case, shorter, the decimal of that number) may become its duplicate.
    log = Log()
    log.config(min_level="fatal")
    sentry = "0" * 30 + "1a"
    others = ["0" * 30 + "1A", "1a", "26", "0" * 31 + "1a", "0x" + "0" * 28 + "1a"]
    assert log.alert(issue="1", event_id=sentry).reason == "below_min_level"
    for other in others:
        assert log.alert(issue="1", event_id=other).reason == "below_min_level", other
    for event_id in [sentry, *others]:
        assert log.alert(issue="1", event_id=event_id).reason == "duplicate", event_id
    assert log.alert(EVENT_ID_WINDOW, issue="1", event_id="x").reason == "below_min_level"
    assert log.alert(seconds(1), issue="1", event_id=sentry).reason == "below_min_level"


def test_state_stays_bounded_by_distinct_issues() -> None:
    log = Log()
    log.config(min_level="fatal")
    for n in range(2000):
        log.alert(timedelta(minutes=10), issue=str(n % 5))
    assert len(log.state.event_ids) <= 24 * 6 + 1
    assert len(log.state.links) == 0 and len(log.state.unrecorded) == 0
