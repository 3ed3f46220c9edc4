"""Operator templates for the issue title, body and comments (docs/reference.md §10).

Rules:
1. Jinja2's ``SandboxedEnvironment``: a template reads the values it is given and
   calls the filters below, nothing else (no attribute starting with ``_``, no
   Python internals). ``StrictUndefined``: a misspelt variable is an error, not "".
2. Every value from the event reaches the template inert (``Text``): printed, it is
   one line, HTML-escaped, with Markdown punctuation backslash-escaped and mentions
   and references broken, whatever filter (``safe``, ``string``) the template adds.
   Only the filters ``code``, ``fence`` and ``link`` show the text itself, and only
   as code or as a Sentry link (obsv/core/render.py rule 3).
3. obsv appends the marker after rendering and removes anything in the output that
   reads as one, so a template can neither drop nor fake it; the title is one line of
   at most 256 characters, the body at most 65,536.
4. Templates are loaded and rendered once against the bundled sample at start: a
   syntax error or an undefined variable is a ``StartupError`` naming file and line.
5. jinja2 is imported only when a template directory is configured: the built-in
   rendering costs nothing more.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import Any

from obsv.core.alert import Alert, alert_from_delivery
from obsv.core.events import AlertDecided, LinkedIssue, Suppressed
from obsv.core.render import (
    BODY_MAX,
    TITLE_MAX,
    ExceptionFacts,
    FrameFacts,
    IssueDraft,
    IssueFacts,
    assemble,
    body_sections,
    clip,
    comment_marker_for,
    comment_parts,
    defuse,
    fence,
    issue_facts,
    marker_for,
    one_line,
    regression_of,
    render_comment,
    render_issue,
    sentry_link,
    span,
    unforge,
)
from obsv.errors import StartupError

_IN_TITLE: ContextVar[bool] = ContextVar("obsv_template_title", default=False)
FILES = ("title.j2", "body.md.j2", "comment.md.j2")
_MARKDOWN = re.compile(r"([\\`*_{}\[\]()#+\-.!|~>=])")


class Text:
    """An untrusted value as a template sees it (rule 2)."""

    __slots__ = ("_raw",)

    def __init__(self, raw: str) -> None:
        self._raw = raw

    def __str__(self) -> str:
        text = defuse(one_line(self._raw, 2000))
        if _IN_TITLE.get():  # a title is plain text on GitHub: no Markdown, no HTML
            return text
        return html.escape(_MARKDOWN.sub(r"\\\1", text), False)

    def __html__(self) -> str:
        return str(self)

    def __bool__(self) -> bool:
        return bool(self._raw)

    def __eq__(self, other: object) -> bool:
        return self._raw == (other._raw if isinstance(other, Text) else other)

    def __hash__(self) -> int:
        return hash(self._raw)


def _raw(value: object) -> str:
    return value._raw if isinstance(value, Text) else "" if value is None else str(value)


def _text(value: str | None) -> Text | None:
    return None if value is None else Text(value)


def _frame(frame: FrameFacts) -> dict[str, Any]:
    return {"where": Text(frame.where), "file": Text(frame.file), "line": frame.line,
            "column": frame.column, "function": Text(frame.function), "in_app": frame.in_app,
            "context": [{"number": n, "text": Text(t), "current": here}
                        for n, t, here in frame.context],
            "variables": [{"name": Text(k), "value": Text(v)} for k, v in frame.variables]}


def _exception(exception: ExceptionFacts) -> dict[str, Any]:
    return {"type": Text(exception.type), "value": Text(exception.value),
            "module": Text(exception.module), "mechanism": Text(exception.mechanism),
            "handled": exception.handled, "is_cause": exception.is_cause,
            "frames": [_frame(f) for f in exception.frames],
            "frames_total": exception.frames_total}


def variables(facts: IssueFacts) -> dict[str, Any]:
    """What every template sees (docs/templates.md lists it)."""
    exceptions = [_exception(e) for e in facts.exceptions]
    request = facts.request
    return {
        "title": Text(facts.title), "level": Text(facts.level),
        "environment": _text(facts.environment), "release": _text(facts.release),
        "platform": _text(facts.platform), "sdk": _text(facts.sdk), "language": facts.language,
        "first_seen": Text(facts.first_seen), "event_time": Text(facts.event_time),
        "event_id": Text(facts.event_id), "sentry_issue_id": Text(facts.sentry_issue_id),
        "issue_url": _text(facts.issue_url), "event_url": _text(facts.event_url),
        "culprit": _text(facts.culprit), "rule": _text(facts.rule),
        "location": None if facts.location is None else _frame(facts.location),
        "exceptions": exceptions, "exception": exceptions[0] if exceptions else None,
        "request": None if request is None else {
            "method": Text(request.method), "url": Text(request.url),
            "headers": [Text(h) for h in request.headers],
            "cookies": [Text(c) for c in request.cookies]},
        "breadcrumbs": [Text(b) for b in facts.breadcrumbs],
        "tags": [{"key": Text(k), "value": Text(v)} for k, v in facts.tags],
    }


def _code(value: object) -> Any:
    from markupsafe import Markup
    return Markup(span(one_line(_raw(value), 2000)))


def _fence(value: object, language: str = "text") -> Any:
    from markupsafe import Markup
    if isinstance(value, list | tuple):
        value = "\n".join(_raw(v) for v in value)
    return Markup(fence(_raw(value), re.sub(r"[^a-z0-9+#-]", "", str(language).lower())))


def _linked(value: object, label: str = "Sentry") -> Any:
    from markupsafe import Markup
    return Markup(sentry_link(_raw(value) or None, defuse(one_line(str(label), 80))))


@dataclass(frozen=True, slots=True)
class Renderer:
    """Renders issues and comments: the built-in way, or with the operator's templates."""

    redact_pii: bool = True
    directory: Path | None = None
    templates: Mapping[str, Any] | None = None  # file name -> jinja2.Template

    def _template(self, name: str) -> Any:
        return (self.templates or {}).get(name)

    def issue(self, alert: Alert, body: Mapping[str, Any], labels: Sequence[str],
              first_seen: datetime | None = None,
              decision: AlertDecided | None = None) -> IssueDraft:
        """The issue to open (docs/reference.md §6, §10)."""
        title_t, body_t = self._template("title.j2"), self._template("body.md.j2")
        if title_t is None and body_t is None:
            return render_issue(alert, body, labels, first_seen, decision,
                                redact_pii=self.redact_pii)
        from markupsafe import Markup
        facts = issue_facts(alert, body, first_seen, self.redact_pii)
        marker = marker_for(alert.sentry_issue_id)
        sections = body_sections(facts, decision)
        context = variables(facts) | {
            "builtin_body": Markup("\n\n".join(sections)),
            "regression_of": Markup(regression_of(decision) or "")}
        title = facts.title
        if title_t is not None:
            token = _IN_TITLE.set(True)
            try:
                title = clip(" ".join(_unmarked(title_t.render(context)).split()), TITLE_MAX)
            finally:
                _IN_TITLE.reset(token)
        text = assemble(sections, marker)
        if body_t is not None:
            rendered = _unmarked(body_t.render(context)).strip("\n")
            text = assemble(_cut(rendered, marker), marker)
        return IssueDraft(title, text, tuple(labels), marker)

    def comment(self, alert: Alert, decision: AlertDecided, body: Mapping[str, Any],
                first_seen: datetime | None = None) -> str:
        """A recurrence or regression comment (docs/reference.md §6, §10)."""
        template = self._template("comment.md.j2")
        if template is None:
            return render_comment(alert, decision, body, first_seen,
                                  redact_pii=self.redact_pii)
        from markupsafe import Markup
        facts = issue_facts(alert, body, first_seen, self.redact_pii)
        held = decision.suppressed or Suppressed(0, None, None)
        context = variables(facts) | {
            "builtin_comment": Markup("\n\n".join(comment_parts(facts, decision))),
            "reason": decision.reason, "action": decision.action,
            "suppressed_count": held.count,
            "suppressed_first": held.first_at.isoformat() if held.first_at else None,
            "suppressed_last": held.last_at.isoformat() if held.last_at else None,
            "since": decision.since.isoformat() if decision.since else None}
        marker = comment_marker_for(decision.alert_seq)
        rendered = _unmarked(template.render(context)).strip("\n")
        return assemble(_cut(rendered, marker), marker)


def _unmarked(text: str) -> str:
    """Rule 3: nothing in a template's output reads as obsv's marker."""
    return unforge(text)


def _cut(text: str, marker: str) -> list[str]:
    """A template's output as one section, cut to fit beside the note and the marker."""
    room = BODY_MAX - len(marker) - 200
    return [text if len(text) <= room else text[:room]]


BUILTIN = Renderer()


def load_renderer(directory: Path | None, redact_pii: bool = True) -> Renderer:
    """The renderer the settings ask for; templates compiled and test-rendered (rule 4)."""
    if directory is None:
        return Renderer(redact_pii)
    if not directory.is_dir():
        raise StartupError(f"OBSV_TEMPLATE_DIR {directory} is not a directory; create it "
                           "or unset OBSV_TEMPLATE_DIR")
    from jinja2 import FileSystemLoader, StrictUndefined, TemplateSyntaxError
    from jinja2.sandbox import SandboxedEnvironment

    env = SandboxedEnvironment(loader=FileSystemLoader(directory), autoescape=True,
                               undefined=StrictUndefined, keep_trailing_newline=True)
    env.filters.update(code=_code, fence=_fence, link=_linked)
    templates = {}
    for name in FILES:
        path = directory / name
        if not path.exists():
            continue
        try:
            templates[name] = env.get_template(name)
        except TemplateSyntaxError as exc:
            raise StartupError(f"template {path} line {exc.lineno}: {exc.message}; fix it "
                               "or remove the file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise StartupError(f"template {path}: cannot read it ({exc}); fix OBSV_TEMPLATE_DIR"
                               ) from None
    renderer = Renderer(redact_pii, directory, templates)
    _try(renderer, directory)
    return renderer


def _try(renderer: Renderer, directory: Path) -> None:
    """Render every template once against the bundled sample (rule 4)."""
    body = json.loads(resources.files("obsv.samples").joinpath("event_alert.json")
                      .read_text("utf-8"))
    alert = alert_from_delivery(body)
    decision = AlertDecided(1, alert.sentry_issue_id, "k", "comment", "recurrence",
                            LinkedIssue(1, 1), Suppressed(2, None, None))
    for name, run in (("title.j2", lambda: renderer.issue(alert, body, ())),
                      ("body.md.j2", lambda: renderer.issue(alert, body, ())),
                      ("comment.md.j2", lambda: renderer.comment(alert, decision, body))):
        if renderer._template(name) is None:
            continue
        try:
            run()
        except Exception as exc:
            line = _template_line(exc.__traceback__, name)
            where = f" line {line}" if line else ""
            message = " ".join(str(exc).split())[:200]
            raise StartupError(f"template {directory / name}{where}: {message}; fix it or "
                               "remove the file") from None


def _template_line(tb: TracebackType | None, name: str) -> int | None:
    """The line of the template in a Jinja2 traceback (Jinja rewrites its frames so
    that they name the template file)."""
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.endswith(name):
            line = tb.tb_lineno
        tb = tb.tb_next
    return line
