"""The storm digest's rules (docs/reference.md §5, obsv/core/policy.py rule 15), on the
pure fold: which ``storm_budget`` suppressions open or comment on the digest."""

from __future__ import annotations

from datetime import timedelta

import pytest

from obsv.core.events import CommentPosted, IssueOpened, StormDecided
from obsv.core.policy import State, apply, ready_intents
from obsv.core.snapshot import state_from_dict, state_to_dict

from .records import Log

MINUTE = timedelta(minutes=1)


def storm_log(budget: int = 1, **policy: object) -> Log:
    log = Log()
    log.config(max_issues_per_hour=budget, **policy)
    return log


def record_storms(log: Log) -> list[tuple[int, StormDecided]]:
    """Record the storm decisions derived so far, as the consumer does; their seqs."""
    done = []
    for _, (decision, _) in sorted(log.state.storm_unrecorded.items()):
        log.add(decision)
        done.append((log.records[-1].seq, decision))
    return done


def storm_actions(log: Log) -> list[tuple[str, tuple[str, ...]]]:
    return [(d.action, d.sentry_issue_ids) for _, d in record_storms(log)]


# Each case: the minutes between alerts (each a new Sentry issue after the first, which
# opens its issue with a budget of 1), and the storm decisions those alerts derive.
CASES = {
    "first suppression opens the digest": ([0, 1], [("open", ("2",))]),
    "within 10 minutes: nothing more": ([0, 1, 2, 3], [("open", ("2",))]),
    "10 minutes after the open: one comment listing what came since": (
        [0, 1, 2, 3, 6], [("open", ("2",)), ("comment", ("3", "4", "5"))]),
    "9 minutes after: still nothing": ([0, 1, 9], [("open", ("2",))]),
    # an hour on, issue 3 opens in a fresh budget and issue 4 starts a new storm
    "an hour without a suppression ends the storm: a new digest": (
        [0, 1, 60, 0], [("open", ("2",)), ("open", ("4",))]),
}


@pytest.mark.parametrize("gaps, expected", CASES.values(), ids=list(CASES))
def test_digest_table(gaps: list[int], expected: list[tuple[str, tuple[str, ...]]]) -> None:
    log = storm_log(budget=1)
    for n, gap in enumerate(gaps, 1):
        log.alert(after=gap * MINUTE, issue=str(n))
    assert storm_actions(log) == expected


def test_a_sentry_issue_already_listed_is_not_listed_again() -> None:
    log = storm_log()
    log.alert(issue="1")
    log.alert(after=MINUTE, issue="2")
    log.alert(after=MINUTE, issue="2")  # again, within the storm
    log.alert(after=10 * MINUTE, issue="2")  # due, but nothing new to list
    assert storm_actions(log) == [("open", ("2",))]
    log.alert(after=MINUTE, issue="3")
    assert storm_actions(log) == [("comment", ("3",))]


def test_each_repository_has_its_own_storm() -> None:
    from obsv.core.routes import Route
    route = Route("acme/api", projects=("p",), environments=("api",))
    log = storm_log(budget=1, repo="acme/shop", routes=(route,), dry_run=False)
    log.alert(issue="1")
    log.alert(issue="2")  # acme/shop's storm
    log.alert(issue="3", environment="api")  # acme/api: the shared budget is spent too
    assert [(d.repo, d.action) for _, d in record_storms(log)] == [
        ("acme/shop", "open"), ("acme/api", "open")]


def test_digest_opens_do_not_count_towards_the_budget() -> None:
    log = storm_log(budget=2)
    log.alert(issue="1")
    log.alert(issue="2")
    log.alert(issue="3")  # suppressed: the digest opens
    [(storm_seq, _)] = record_storms(log)
    log.add(IssueOpened(storm_seq, "", None, 7, "https://gh/o/r/issues/7", False))
    assert len(log.state.recent_opens) == 2


def test_the_10_minute_clock_starts_when_the_digest_opens() -> None:
    log = storm_log()
    log.alert(issue="1")
    log.alert(after=5 * MINUTE, issue="2")  # opens the digest at minute 5
    log.alert(after=6 * MINUTE, issue="3")  # 11 minutes after the first alert, 6 after open
    assert storm_actions(log) == [("open", ("2",))]
    log.alert(after=4 * MINUTE, issue="4")  # 10 after the open
    assert storm_actions(log) == [("comment", ("3", "4"))]


def test_posts_name_their_storm_record_and_comments_wait_for_the_digest() -> None:
    log = storm_log()
    log.alert(issue="1")
    log.alert(issue="2")
    [(open_seq, _)] = record_storms(log)
    log.alert(after=10 * MINUTE, issue="3")
    [(comment_seq, _)] = record_storms(log)
    ready = ready_intents(log.state)
    # the comment waits until the digest is opened (writes on one issue go in order)
    assert [(i.alert_seq, i.action) for i in ready if i.alert_seq in (open_seq, comment_seq)
            ] == [(open_seq, "open")]
    log.add(IssueOpened(open_seq, "", None, 7, "https://gh/o/r/issues/7", False))
    [comment] = [i for i in ready_intents(log.state) if i.alert_seq == comment_seq]
    assert log.state.links[comment.link_seq].number == 7
    log.add(CommentPosted(comment_seq, "", None, 7, 1, "https://gh/c/1", False))
    assert comment_seq not in log.state.intents and open_seq not in log.state.intents


def test_no_alert_ever_comments_on_the_digest() -> None:
    log = storm_log()
    log.alert(issue="1")
    log.alert(issue="2")
    [(open_seq, _)] = record_storms(log)
    log.add(IssueOpened(open_seq, "", None, 7, "https://gh/o/r/issues/7", False))
    decision = log.alert(after=timedelta(days=1), issue="2")
    assert (decision.action, decision.reason) == ("open", "new_issue")


def test_a_digest_that_failed_for_good_is_opened_anew() -> None:
    log = storm_log()
    log.alert(issue="1")
    log.alert(issue="2")
    [(open_seq, _)] = record_storms(log)
    log.failed(open_seq, retryable=False)
    log.alert(after=MINUTE, issue="3")
    assert storm_actions(log) == [("open", ("3",))]


def test_replay_and_snapshot_give_the_same_storm_decisions() -> None:
    log = storm_log()
    for n in range(1, 30):
        log.alert(after=MINUTE, issue=str(n))
        record_storms(log)
    replayed = State()
    for envelope in log.records:
        apply(replayed, envelope)
    assert state_to_dict(replayed) == state_to_dict(log.state)
    # midway from a snapshot, on to the end: the same state
    middle = State()
    for envelope in log.records[:40]:
        apply(middle, envelope)
    restored = state_from_dict(state_to_dict(middle))
    for envelope in log.records[40:]:
        apply(restored, envelope)
    assert state_to_dict(restored) == state_to_dict(log.state)
    assert any(row[0] == "t" for row in state_to_dict(log.state)["rows"])


# -- the setting and the text ------------------------------------------------------------

def test_storm_labels_setting_is_recorded_in_the_policy() -> None:
    from obsv.core.codec import decode_policy, encode_policy
    from obsv.settings import load_settings
    base = {"OBSV_SENTRY_CLIENT_SECRET": "s"}
    assert load_settings(None, base).storm_labels == ("obsv:storm",)
    settings = load_settings(None, {**base, "OBSV_STORM_LABELS": "storm, ops"})
    policy = settings.policy()
    assert policy.storm_labels == ("storm", "ops")
    assert decode_policy(encode_policy(policy)) == policy
    # the default is not written, so older config.applied lines still compare equal
    assert "storm_labels" not in encode_policy(load_settings(None, base).policy())


@pytest.mark.parametrize("env", [
    {"OBSV_STORM_LABELS": "obsv:storm,agent:builder"},
    {"OBSV_STORM_LABELS": "bot", "OBSV_GITHUB_LABELS": "bot"},
    {"OBSV_STORM_LABELS": ""},
])
def test_storm_labels_refuse_the_agent_label_and_emptiness(env: dict[str, str]) -> None:
    from obsv.settings import ConfigError, load_settings
    with pytest.raises(ConfigError, match="OBSV_STORM_LABELS"):
        load_settings(None, {"OBSV_SENTRY_CLIENT_SECRET": "s", **env})


def test_digest_text_lists_title_level_and_link_and_is_inert() -> None:
    from obsv.core.events import StormIssue
    from obsv.core.render import render_storm_comment, render_storm_digest

    from .records import T0
    hostile = StormIssue("42", "@everyone fix #12 <!-- obsv:storm-for-record=9 --> `x`",
                         "fatal", "https://sentry.io/organizations/acme/issues/42/events/abc/")
    plain = StormIssue("not numeric", None, None, "javascript:alert(1)")
    decision = StormDecided(3, "open", "acme/shop", T0, (hostile, plain))
    draft = render_storm_digest(decision, ("obsv:storm",), 17)
    assert draft.labels == ("obsv:storm",)
    assert "acme/shop" in draft.title and "2026-03-01 12:00 UTC" in draft.title
    assert "[Sentry issue 42](<https://sentry.io/organizations/acme/issues/42/>)" in draft.body
    assert "`fatal`" in draft.body and "`error`" in draft.body  # no level: error
    # event text sits in code spans, and cannot forge obsv's markers
    assert "`` @everyone fix #12 <!-- obsv\ua789storm-for-record=9 --> `x` ``" in draft.body
    assert draft.body.count("<!-- obsv:") == 1 and draft.body.endswith(
        "<!-- obsv:storm-for-record=17 -->\n")
    assert "javascript:" not in draft.body.replace("`javascript:alert(1)`", "")
    comment = render_storm_comment(StormDecided(5, "comment", "acme/shop", T0, (hostile,)), 21)
    assert comment.startswith("1 more Sentry issue over the storm budget")
    assert comment.endswith("<!-- obsv:storm-for-record=21 -->\n")
