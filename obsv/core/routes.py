"""Routing: which repository (and which limits) take an alert (docs/reference.md §8).

Rules:
1. Routes are ordered; the first route whose every condition matches takes the alert.
   A condition left out matches anything.
2. ``projects`` match the project's slug (from the event's API url) or its id;
   ``environments`` the alert's environment (an alert without one matches no list);
   ``tags`` need every tag named to be present with a matching value. Every pattern
   is a case-sensitive glob (``fnmatch.fnmatchcase``: Sentry slugs and tags are case
   sensitive, and a route must not depend on the host's filesystem rules).
3. An alert no route takes goes to the policy's default repository; without one it is
   ``unrouted``, which only matters when GitHub is the sink (the policy decides that).
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING

from obsv.core.alert import Alert

if TYPE_CHECKING:
    from obsv.core.events import Policy


@dataclass(frozen=True, slots=True)
class Route:
    """One ``[[routes]]`` table: what it matches, where it sends, what it overrides."""

    repo: str
    projects: tuple[str, ...] = ()
    environments: tuple[str, ...] = ()
    tags: tuple[tuple[str, str], ...] = ()
    labels: tuple[str, ...] | None = None
    min_level: str | None = None
    cooldown_seconds: int | None = None
    max_issues_per_hour: int | None = None

    @property
    def key(self) -> str:
        """The route's identity for its own storm budget: its conditions and repo, so a
        restart with the same route keeps counting, and a changed route starts afresh."""
        return repr((self.repo, self.projects, self.environments, self.tags))


def matches(route: Route, alert: Alert) -> bool:
    """Whether every condition of ``route`` holds for ``alert`` (rule 2)."""
    if route.projects:
        names = [name for name in (alert.project_slug, alert.project) if name is not None]
        if not any(fnmatchcase(name, glob) for name in names for glob in route.projects):
            return False
    if route.environments and (alert.environment is None or not any(
            fnmatchcase(alert.environment, glob) for glob in route.environments)):
        return False
    return all(any(key == name and fnmatchcase(value, glob) for key, value in alert.tags)
               for name, glob in route.tags)


def route_for(policy: Policy, alert: Alert) -> Route | None:
    """The first route of ``policy`` that takes ``alert`` (rule 1), or None."""
    for route in policy.routes:  # a loop, not next(generator): called for every alert
        if matches(route, alert):
            return route
    return None


def repo_for(policy: Policy, alert: Alert) -> str | None:
    """The repository a new issue for ``alert`` goes to: its route's, else the default."""
    route = route_for(policy, alert)
    return route.repo if route is not None else policy.repo


def labels_for(policy: Policy, alert: Alert, repo: str | None) -> tuple[str, ...]:
    """The labels of an issue for ``alert`` in ``repo``: its route's when the route still
    sends to that repo and sets labels, else ``OBSV_GITHUB_LABELS``."""
    route = route_for(policy, alert)
    if route is not None and route.repo == repo and route.labels is not None:
        return route.labels
    return policy.labels


def is_glob(pattern: str) -> bool:
    """Whether ``pattern`` is a usable glob: not empty, every ``[`` closed (``fnmatch``
    silently reads an unclosed ``[`` as itself, which is never what a route meant)."""
    i = 0
    while (i := pattern.find("[", i)) >= 0:
        first = i + 2 if pattern[i + 1:i + 2] == "!" else i + 1
        end = pattern.find("]", first + 1)  # a "]" first in the class is literal
        if end < 0:
            return False
        i = end + 1
    return bool(pattern)
