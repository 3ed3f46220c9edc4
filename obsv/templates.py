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
   Only regular files are read (a FIFO named ``body.md.j2`` would block the start).
5. jinja2 is imported only when a template directory is configured: the built-in
   rendering costs nothing more.
6. A template cannot hang obsv or fill its memory (the render runs on the event loop):
   one render stops after ``RENDER_SECONDS`` (loops are Python code, traced), its
   output is read only up to ``OUTPUT_MAX`` characters, and an operation that would
   build a huge value in one C call (``'x' * 10**9``, ``2 ** 10**9``, ``center(10**9)``,
   ``'{:>999999999}'.format``) is refused. Each is ``TemplateTooCostly``: at start a
   ``StartupError``, later a permanent failure of that one alert (obsv/sink.py).
"""

from __future__ import annotations

import functools
import html
import json
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from pathlib import Path
from types import FrameType, TracebackType
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
RENDER_SECONDS = 2.0  # one render; the built-in sections render in about a millisecond
OUTPUT_MAX = 4 * BODY_MAX  # characters read from a template; the rest would be cut anyway
# A %-style or {}-style width or precision of a million or more.
_WIDE_FORMAT = re.compile(r"%[-+ #0]*\d*\.?\d{6,}|\{[^{}]*:[^{}]*\d{6,}")
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
                title = clip(" ".join(_unmarked(_render(title_t, context)).split()), TITLE_MAX)
            finally:
                _IN_TITLE.reset(token)
        text = assemble(sections, marker)
        if body_t is not None:
            rendered = _unmarked(_render(body_t, context)).strip("\n")
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
        rendered = _unmarked(_render(template, context)).strip("\n")
        return assemble(_cut(rendered, marker), marker)


class TemplateTooCostly(Exception):
    """A template that took too long, or asked for too large a value (rule 6)."""


def _render(template: Any, context: Mapping[str, Any], limit: int = OUTPUT_MAX) -> str:
    """``template.render(context)``, within rule 6's time and size."""
    deadline = time.monotonic() + RENDER_SECONDS
    filename = template.root_render_func.__code__.co_filename

    def in_template(frame: FrameType, event: str, arg: object) -> Any:
        if time.monotonic() > deadline:
            raise TemplateTooCostly(f"still rendering after {RENDER_SECONDS:g} s")
        return in_template

    def on_call(frame: FrameType, event: str, arg: object) -> Any:
        return in_template if frame.f_code.co_filename == filename else None

    chunks: list[str] = []
    size = 0
    previous = sys.gettrace()
    sys.settrace(on_call)
    try:
        for chunk in template.generate(context):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:  # the rest would be cut: stop the template here
                break
    finally:
        sys.settrace(previous)
    return "".join(chunks)


def _too_large(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) > OUTPUT_MAX


# Filters and ``str`` methods whose numbers are widths or counts of what they build.
_SIZING = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs", "indent", "wordwrap",
                     "truncate", "batch", "slice", "do_center", "do_indent", "do_wordwrap",
                     "do_truncate", "do_batch", "do_slice", "safe_range"})


def _check_arguments(args: Sequence[object], kwargs: Mapping[str, object]) -> None:
    """Rule 6: no width or count over ``OUTPUT_MAX`` (``center(10**9)``)."""
    for value in (*args, *kwargs.values()):
        if _too_large(value):
            raise TemplateTooCostly(f"a value too large for a template ({str(value)[:20]}…)")


def _check_format(text: object) -> None:
    if isinstance(text, str) and _WIDE_FORMAT.search(text):
        raise TemplateTooCostly("a format width too large for a template")


def _bounded_filter(function: Callable[..., Any]) -> Callable[..., Any]:
    """A Jinja filter that refuses rule 6's arguments (Jinja's pass_context marks are
    copied by ``functools.wraps``, so the filter is called as before)."""
    @functools.wraps(function)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        if function.__name__ in _SIZING:
            _check_arguments(args, kwargs)
        if function.__name__ == "do_format" and args:  # ``'%09999999d'|format(1)``
            _check_format(args[0])
        return function(*args, **kwargs)
    return bounded


def _environment(directory: Path) -> Any:
    """The sandbox of rule 1, bounded as rule 6 says."""
    from jinja2 import FileSystemLoader, StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    class Bounded(SandboxedEnvironment):
        # Intercepted operators are also never folded at compile time: a constant
        # ``10 ** 10 ** 9`` would otherwise hang the start in Jinja's optimiser.
        intercepted_binops = frozenset({"*", "**", "%", "+"})

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            """Refuse what would build a huge value in one C call."""
            if operator == "**" and (_too_large(right) or (
                    isinstance(right, int) and abs(right) > 4096 and left not in (0, 1, -1))):
                raise TemplateTooCostly("an exponent too large for a template")
            if operator == "*" and (_sized(left) or _sized(right)):
                size, count = (left, right) if _sized(left) else (right, left)
                if isinstance(count, int) and len(size) * count > OUTPUT_MAX:
                    raise TemplateTooCostly("a repetition too large for a template")
            if operator == "+" and _sized(left) and _sized(right) and (
                    len(left) + len(right) > OUTPUT_MAX):
                raise TemplateTooCostly("a value too large for a template")
            if operator == "%":
                _check_format(left)
            return super().call_binop(context, operator, left, right)

        def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
            """Every call a template makes (methods, ``range``) with rule 6's limits."""
            if getattr(__obj, "__name__", None) in _SIZING:
                _check_arguments(args, kwargs)
            return super().call(__context, __obj, *args, **kwargs)

        def getattr(self, obj: Any, attribute: str) -> Any:
            """``'{:>999999999}'.format``: refused when the format is read."""
            if attribute in ("format", "format_map"):
                _check_format(obj)
            return super().getattr(obj, attribute)

    env = Bounded(loader=FileSystemLoader(directory), autoescape=True,
                  undefined=StrictUndefined, keep_trailing_newline=True)
    env.filters = {name: _bounded_filter(f) for name, f in env.filters.items()}
    env.filters.update(code=_code, fence=_fence, link=_linked)
    env.globals.pop("lipsum", None)  # megabytes of prose, in plain Python loops
    return env


def _sized(value: object) -> bool:
    return isinstance(value, str | list | tuple)


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
    from jinja2 import TemplateSyntaxError

    env = _environment(directory)
    templates = {}
    for name in FILES:
        path = directory / name
        if not path.exists() and not path.is_symlink():
            continue
        if not path.is_file():  # a FIFO would block the start; a dangling link is a typo
            raise StartupError(f"template {path}: not a regular file; replace it with the "
                               "template or remove it")
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
