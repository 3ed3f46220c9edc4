"""Routing (docs/reference.md §8): which route takes an alert, what a decision names,
the per-route limits, and the settings errors that name the route."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from obsv.core.alert import Alert
from obsv.core.codec import decode, encode
from obsv.core.events import (
    AlertReceived,
    ConfigApplied,
    Delivery,
    Envelope,
    IssueOpened,
    Policy,
)
from obsv.core.policy import State, apply, decide
from obsv.core.routes import Route, route_for
from obsv.settings import ConfigError, load_settings

AT = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
WEB = Route("acme/web", projects=("web", "web-*"), environments=("production",),
            tags=(("team", "pay*"),), labels=("agent:builder", "frontend"),
            min_level="warning", cooldown_seconds=60, max_issues_per_hour=2)
BY_ID = Route("acme/ids", projects=("42",))
ANY_API = Route("acme/api", projects=("api",))


def alert(n: int = 1, *, slug: str | None = "web", project: str | None = "7",
          env: str | None = "production", level: str = "error",
          tags: tuple[tuple[str, str], ...] = (("team", "payments"),)) -> Alert:
    return Alert(f"issue-{n}", f"event-{n}", level, f"key-{n}", project, env, "Boom", None,
                 None, project_slug=slug, tags=tags)


@pytest.mark.parametrize(("case", "routed"), [
    (alert(), "acme/web"),
    (alert(slug="web-admin"), "acme/web"),                       # glob on the slug
    (alert(slug="webshop"), None),                               # "web" is not a prefix
    (alert(slug=None, project="42"), "acme/ids"),                # the project id
    (alert(slug="Web"), None),                                   # globs are case-sensitive
    (alert(env="staging"), None),                                # the route's environments
    (alert(env=None), None),                                     # no environment: not in it
    (alert(tags=(("team", "platform"),)), None),                 # the tag's value glob
    (alert(tags=()), None),                                      # a named tag must be there
    (alert(slug="api", tags=()), "acme/api"),                    # no conditions but project
])
def test_the_first_route_whose_every_condition_matches_takes_the_alert(
        case: Alert, routed: str | None) -> None:
    route = route_for(Policy(routes=(WEB, BY_ID, ANY_API)), case)
    assert (route.repo if route else None) == routed


def test_first_match_wins() -> None:
    catch_all = Route("acme/all")
    assert route_for(Policy(routes=(catch_all, WEB)), alert()) == catch_all
    assert route_for(Policy(routes=(WEB, catch_all)), alert()) == WEB


def decided(policy: Policy, case: Alert, state: State | None = None) -> tuple[str, str, str | None]:
    d = decide(state or State(), case, AT, 1, policy)
    return d.action, d.reason, d.repo


def test_every_decision_names_its_repo_route_then_default() -> None:
    policy = Policy(repo="acme/default", routes=(WEB,), dry_run=False)
    assert decided(policy, alert()) == ("open", "new_issue", "acme/web")
    assert decided(policy, alert(slug="other")) == ("open", "new_issue", "acme/default")
    # the route's min level replaces the global one for alerts it takes (warning here)
    assert decided(policy, alert(level="warning")) == ("open", "new_issue", "acme/web")
    assert decided(policy, alert(slug="other", level="warning")) == (
        "suppress", "below_min_level", "acme/default")
    assert decided(policy, alert(level="info")) == ("suppress", "below_min_level", "acme/web")


def test_unrouted_only_when_github_is_the_sink_and_nothing_takes_the_alert() -> None:
    github = Policy(routes=(WEB,), dry_run=False)
    assert decided(github, alert(slug="other")) == ("suppress", "unrouted", None)
    assert decided(github, alert()) == ("open", "new_issue", "acme/web")
    dry_run = Policy(routes=(WEB,), dry_run=True)  # the outbox takes it, as before routing
    assert decided(dry_run, alert(slug="other")) == ("open", "new_issue", None)
    with_default = Policy(repo="acme/default", routes=(WEB,), dry_run=False)
    assert decided(with_default, alert(slug="other"))[1] == "new_issue"


def fold(state: State, seq: int, at: datetime, event: object) -> object:
    return apply(state, Envelope(seq, at, event))  # type: ignore[arg-type]


def receive(state: State, seq: int, at: datetime, case: Alert) -> tuple[str, str, str | None]:
    d = fold(state, seq, at, AlertReceived(Delivery(None, "event_alert", None, "s"), case, "{}"))
    return d.action, d.reason, d.repo  # type: ignore[attr-defined]


def test_a_route_with_its_own_budget_counts_only_its_own_opens_in_its_own_hour() -> None:
    state = State()
    fold(state, 1, AT, ConfigApplied(Policy(repo="acme/default", max_issues_per_hour=1,
                                            routes=(WEB,), dry_run=False)))
    seq = 1
    reasons = []
    for n in range(4):  # the route's budget is 2
        seq += 1
        reasons.append(receive(state, seq, AT + timedelta(minutes=n), alert(n))[1])
    assert reasons == ["new_issue", "new_issue", "storm_budget", "storm_budget"]
    # the shared budget (1) is untouched by the route's opens
    assert receive(state, 10, AT + timedelta(minutes=5), alert(10, slug="other"))[1:] == (
        "new_issue", "acme/default")
    assert receive(state, 11, AT + timedelta(minutes=6), alert(11, slug="other"))[1] == \
        "storm_budget"
    # an hour after the route's first open, its hour has room again
    assert receive(state, 12, AT + timedelta(minutes=61), alert(12))[1] == "new_issue"


def test_a_linked_issue_keeps_its_repo_and_the_route_cooldown_applies() -> None:
    state = State()
    fold(state, 1, AT, ConfigApplied(Policy(repo="acme/default", routes=(WEB,),
                                            dry_run=False)))
    assert receive(state, 2, AT, alert(1)) == ("open", "new_issue", "acme/web")
    fold(state, 3, AT, IssueOpened(2, "issue-1", "acme/web", 5, "u", False))
    # routes change: the Sentry issue is linked, its decisions stay with acme/web
    fold(state, 4, AT, ConfigApplied(Policy(repo="acme/default", dry_run=False)))
    later = alert(1)
    assert receive(state, 5, AT + timedelta(seconds=90),
                   Alert(**{**_fields(later), "event_id": "e2"})) == (
        "suppress", "cooldown", "acme/web")  # the global 6 h cooldown now
    fold(state, 6, AT, ConfigApplied(Policy(repo="acme/default", routes=(WEB,),
                                            dry_run=False)))
    assert receive(state, 7, AT + timedelta(seconds=120),
                   Alert(**{**_fields(later), "event_id": "e3"})) == (
        "comment", "recurrence", "acme/web")  # the route's 60 s cooldown has passed
    # even with no route and no default left, a linked issue is not unrouted
    fold(state, 8, AT, ConfigApplied(Policy(dry_run=False)))
    assert receive(state, 9, AT + timedelta(hours=7),
                   Alert(**{**_fields(later), "event_id": "e4"})) == (
        "comment", "recurrence", "acme/web")


def _fields(a: Alert) -> dict[str, object]:
    return {name: getattr(a, name) for name in a.__slots__}  # type: ignore[attr-defined]


def test_routes_and_repo_round_trip_through_the_log_and_older_lines_decode() -> None:
    policy = Policy(repo=None, routes=(WEB, BY_ID), dry_run=False)
    line = encode(Envelope(1, AT, ConfigApplied(policy)))
    assert line["policy"]["routes"][0] == {
        "repo": "acme/web", "projects": ["web", "web-*"], "environments": ["production"],
        "tags": {"team": "pay*"}, "labels": ["agent:builder", "frontend"],
        "min_level": "warning", "cooldown_seconds": 60, "max_issues_per_hour": 2}
    assert decode(line).event == ConfigApplied(policy)
    old = encode(Envelope(1, AT, ConfigApplied(Policy())))
    assert "routes" not in old["policy"] and "dry_run" not in old["policy"]
    assert decode(old).event == ConfigApplied(Policy())


# -- settings -------------------------------------------------------------------------

def config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "obsv.toml"
    path.write_text('sentry_client_secret = "s"\n' + text)
    return str(path)


def test_settings_read_routes_in_order_and_pass_them_to_the_policy(tmp_path: Path) -> None:
    settings = load_settings(config(tmp_path, '''
github_token = "t"
[[routes]]
projects = ["web", "web-*", 42]
environments = ["production"]
tags = { team = "payments" }
repo = "acme/web"
labels = ["agent:builder", "frontend"]
min_level = "warning"
cooldown_seconds = 3600
max_issues_per_hour = 10
[[routes]]
repo = "acme/api"
'''), {})
    assert settings.policy().routes == (
        Route("acme/web", ("web", "web-*", "42"), ("production",), (("team", "payments"),),
              ("agent:builder", "frontend"), "warning", 3600, 10),
        Route("acme/api"))
    assert settings.policy().dry_run is False and settings.github_repo is None
    assert settings.repos == ("acme/web", "acme/api")


@pytest.mark.parametrize(("routes", "message"), [
    ('[[routes]]\nrepo = "acme/web"\nproject = ["web"]\n', "route 1"),
    ('[[routes]]\nrepo = "a/b"\n[[routes]]\nprojects = ["web"]\n', "route 2"),
    ('[[routes]]\nrepo = "not a repo"\n', "route 1: repo"),
    ('[[routes]]\nrepo = "a/b"\nprojects = ["web-["]\n', "route 1: projects"),
    ('[[routes]]\nrepo = "a/b"\ntags = { team = "[x" }\n', "route 1: tags.team"),
    ('[[routes]]\nrepo = "a/b"\nmin_level = "loud"\n', "route 1: min_level"),
    ('[[routes]]\nrepo = "a/b"\ncooldown_seconds = -1\n', "route 1: cooldown_seconds"),
    ('[[routes]]\nrepo = "a/b"\nmax_issues_per_hour = -5\n', "route 1: max_issues_per_hour"),
    ('[[routes]]\nrepo = "a/b"\nprojects = "web"\n', "route 1: projects"),
])
def test_a_bad_route_stops_startup_naming_the_route_and_the_key(
        tmp_path: Path, routes: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(config(tmp_path, routes), {})
    text = str(raised.value)
    route, _, key = message.partition(": ")
    assert f"{route} in " in text and key in text and "\n" not in text
    if "project =" in routes:
        assert "unknown key 'project'" in text
    if "projects = [\"web\"]" in routes and "route 2" in message:
        assert "repo is missing" in text


def test_github_credentials_without_a_default_repo_or_routes_are_still_refused(
        tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="OBSV_GITHUB_REPO is not set"):
        load_settings(config(tmp_path, 'github_token = "t"\n'), {})
