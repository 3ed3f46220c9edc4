"""Alert -> IssueDraft: the GitHub issue an operator triages, and the comments obsv
posts on it later (recurrence, regression, and why it closes an issue).

Rules (docs/reference.md §6):
1. Title ``[level] Type — file:line`` of the innermost in-app frame (else the
   innermost frame, else the culprit; Sentry's title when there is no exception).
   One line, at most 256 characters, never the exception message: it is volatile.
2. Body sections in a fixed order, so triage takes 30 seconds without leaving GitHub.
3. Every string from the event is untrusted. It is shown only inside code (inline
   code with backticks swapped out, or fenced blocks no value can close), with
   ``@``, ``#<digit>`` and ``GH-<digit>`` broken by a zero-width space so nothing
   pings a user or links an issue even where GitHub would, comment delimiters
   removed, and control characters dropped.
4. The body is at most 65,536 characters, cut at a section boundary with a note;
   the hidden marker ``<!-- obsv:sentry-issue=<id> -->`` always ends it, once.
5. The marker is injective: two Sentry issue ids never share one, so reconciliation
   never adopts another issue's post. Letters, digits, ``.``, ``_`` and a lone ``-``
   stand for themselves (a numeric id keeps exactly the documented marker, and every
   marker obsv wrote before for such ids is still found); every other character,
   ``%`` itself and the second ``-`` of a pair are percent-encoded (UTF-8). So the
   comment never holds ``--``, ``<`` or ``>``, and ``parse_marker`` gets the id back.
6. Rendering is total and bounded: nested event data is never turned into text by
   ``str()`` (a breadcrumb nested a thousand levels deep would raise RecursionError,
   and a payload that raises is retried forever), only by ``flat``, which stops at a
   depth and a length.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from obsv.core.alert import Alert, tag_pairs
from obsv.core.codec import format_time
from obsv.core.events import AlertDecided, SentryIssueChanged

TITLE_MAX = 256
BODY_MAX = 65_536
FRAMES_SHOWN = 7
BREADCRUMBS_SHOWN = 8
BREADCRUMB_MAX = 160
VALUE_MAX = 2_000
TAGS_SHOWN = 60
FLAT_DEPTH = 4  # nesting shown by ``flat``; deeper containers become an ellipsis
COMMENT_VALUE_MAX = 1_000  # an exception message in a comment
URL_MAX = 2_000  # a longer link is shown as (clipped) code, never whole
_ZWSP = "\u200b"
_TRUNCATION_NOTE = "\n\n> Some sections were left out to stay within GitHub's size limit; " \
                   "see the full event in Sentry.\n"

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_LIVE = re.compile(r"(@|#(?=\d)|\bGH-(?=\d))", re.IGNORECASE)
_COMMENT_DELIMITERS = re.compile(r"<!--|-->|--!>")
_MARKER_PLAIN = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._")
_MARKER = re.compile(r"<!-- obsv:sentry-issue=([A-Za-z0-9._%-]*) -->")

# Secrets in breadcrumbs: header values, key=value pairs, JSON pairs, URL userinfo.
_SECRET_PATTERNS = (
    re.compile(r"(?i)\b(authorization|proxy-authorization|cookie|set-cookie|x-api-key)"
               r"(\s*[:=]\s*)(\"?)[^\"\n,;]+"),
    re.compile(r"(?i)\b(bearer|basic|token)\s+[A-Za-z0-9._~+/=-]{6,}"),
    re.compile(r"(?i)([?&;,\s\"']|^)([\w.-]*(?:token|secret|passw(?:or)?d|pwd|api[_-]?key|"
               r"access[_-]?key|private[_-]?key|signature|sig|auth|session|credential)s?)"
               r"(\"?\s*[:=]\s*\"?)([^\s&;,\"']+)"),
    re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^\s/@:]*:[^\s/@]+@"),
    re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|"
               r"xox[baprs]-[A-Za-z0-9-]{10,}|AKIA[0-9A-Z]{16}|sk_live_[A-Za-z0-9]{16,})"),
)


@dataclass(frozen=True, slots=True)
class IssueDraft:
    """What to post: title, Markdown body, labels, and the marker found again later."""

    title: str
    body: str
    labels: tuple[str, ...]
    marker: str


def marker_for(sentry_issue_id: str) -> str:
    """The hidden marker that ties a GitHub issue to its Sentry issue (rule 5)."""
    encoded: list[str] = []
    previous = ""
    for char in sentry_issue_id:
        if char in _MARKER_PLAIN or (char == "-" and previous != "-"):
            encoded.append(char)
        else:
            encoded.extend(f"%{byte:02X}" for byte in char.encode("utf-8", "surrogatepass"))
        previous = char
    return f"<!-- obsv:sentry-issue={''.join(encoded)} -->"


def parse_marker(text: str) -> str | None:
    """The Sentry issue id of the first obsv marker in ``text`` (an issue body), if any."""
    found = _MARKER.search(text)
    if found is None:
        return None
    return urllib.parse.unquote(found.group(1), errors="surrogatepass")


def comment_marker_for(alert_seq: int) -> str:
    """The hidden marker of a recurrence or regression comment: one per notification."""
    return f"<!-- obsv:comment-for-alert={alert_seq} -->"


def close_marker_for(cause_seq: int) -> str:
    """The hidden marker of the comment that explains a close: one per ``close`` decision
    (keyed by the seq of the ``sentry.issue`` it was taken on)."""
    return f"<!-- obsv:close-for-record={cause_seq} -->"


def reopen_marker_for(alert_seq: int) -> str:
    """The hidden marker of a reopen in the dry-run outbox (GitHub gets a PATCH, no text)."""
    return f"<!-- obsv:reopen-for-alert={alert_seq} -->"


# -- neutralising untrusted text ------------------------------------------------

def defuse(text: str) -> str:
    """Untrusted text made inert: no control characters, mentions, references or
    comment delimiters, whatever context it ends up in."""
    text = _CONTROL.sub("", text)
    text = _COMMENT_DELIMITERS.sub(lambda m: m.group(0)[0] + _ZWSP + m.group(0)[1:], text)
    return _LIVE.sub(lambda m: m.group(0) + _ZWSP, text)


def clip(text: str, limit: int) -> str:
    """At most ``limit`` characters, with an ellipsis when cut."""
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"


def flat(value: object, limit: int, depth: int = FLAT_DEPTH) -> str:
    """Any JSON value as text of at most ``limit`` characters (rule 6): strings as they
    are, containers like Python shows them, nesting below ``depth`` as ``…``. The work
    stops once ``limit`` is reached, so a value of any size or depth costs little."""
    out: list[str] = []
    _flat_into(value, depth, out, [limit + 1])
    return clip("".join(out), limit)


def _flat_into(value: object, depth: int, out: list[str], budget: list[int],
               quoted: bool = False) -> None:
    """Append ``value`` to ``out`` while ``budget[0]`` (characters still wanted) lasts."""
    if budget[0] <= 0:
        return
    if isinstance(value, str):
        text = repr(value[:budget[0]]) if quoted else value[:budget[0]]
    elif isinstance(value, bool) or value is None or isinstance(value, float):
        text = str(value)
    elif isinstance(value, int):  # str() of a huge int raises (sys.int_info digits limit)
        text = str(value) if value.bit_length() <= 256 else f"<{value.bit_length()}-bit number>"
    elif isinstance(value, list | tuple | dict):
        _flat_container(value, depth, out, budget)
        return
    else:
        text = f"<{type(value).__name__}>"
    out.append(text)
    budget[0] -= len(text)


def _flat_container(value: list[Any] | tuple[Any, ...] | dict[Any, Any], depth: int,
                    out: list[str], budget: list[int]) -> None:
    opening, closing = ("{", "}") if isinstance(value, dict) else ("[", "]")
    if depth <= 0:
        text = opening + "…" + closing if value else opening + closing
        out.append(text)
        budget[0] -= len(text)
        return
    out.append(opening)
    budget[0] -= 1
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for index, (key, item) in enumerate(items):
        if budget[0] <= 0:
            return
        if index:
            out.append(", ")
            budget[0] -= 2
        if isinstance(value, dict):
            _flat_into(key, 0, out, budget, quoted=True)
            out.append(": ")
            budget[0] -= 2
        _flat_into(item, depth - 1, out, budget, quoted=True)
    out.append(closing)
    budget[0] -= 1


def code(value: object, limit: int = 300) -> str:
    """One untrusted value as inline code on one line."""
    # Whitespace runs collapse below, so more than ``limit`` characters are read first.
    text = clip(" ".join(defuse(flat(value, 4 * limit + 64)).split()), limit)
    return "`" + (text.replace("`", "\u02cb") or " ") + "`"


def block(text: str, limit: int = VALUE_MAX) -> str:
    """Untrusted multi-line text as a fenced block no value can close."""
    body = clip(defuse(text).replace("`", "\u02cb").replace("~~~", "\u02dc\u02dc\u02dc"), limit)
    return "```text\n" + body.rstrip("\n") + "\n```"


# -- reading the event ----------------------------------------------------------

def _event(body: Mapping[str, Any]) -> Mapping[str, Any]:
    data = body.get("data")
    event = data.get("event") if isinstance(data, dict) else None
    return event if isinstance(event, dict) else {}


def _exception(event: Mapping[str, Any]) -> Mapping[str, Any] | None:
    exception = event.get("exception")
    values = exception.get("values") if isinstance(exception, dict) else None
    if isinstance(values, list):
        for value in reversed(values):  # Sentry lists the primary exception last
            if isinstance(value, dict):
                return value
    return None


def _frames(exception: Mapping[str, Any] | None, event: Mapping[str, Any]) -> list[dict[str, Any]]:
    holders: list[Any] = [exception.get("stacktrace") if exception else None,
                          event.get("stacktrace")]
    for holder in holders:
        frames = holder.get("frames") if isinstance(holder, dict) else None
        if isinstance(frames, list):
            return [f for f in frames if isinstance(f, dict)]
    return []


def _innermost(frames: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The innermost in-app frame, else the innermost frame (Sentry: innermost last)."""
    in_app = [frame for frame in frames if frame.get("in_app") is True]
    chosen = in_app or frames
    return chosen[-1] if chosen else None


def _where(frame: Mapping[str, Any] | None) -> str | None:
    if frame is None:
        return None
    path = frame.get("filename") or frame.get("abs_path") or frame.get("module")
    if not isinstance(path, str) or not path:
        return None
    line = frame.get("lineno")
    return f"{path}:{line}" if isinstance(line, int) and not isinstance(line, bool) else path


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


# -- title ----------------------------------------------------------------------

def render_title(alert: Alert, body: Mapping[str, Any]) -> str:
    """Rule 1: one line, at most 256 characters."""
    event = _event(body)
    exception = _exception(event)
    level = alert.level or "error"
    if exception is None:
        subject = _text(alert.title) or _text(event.get("message")) or alert.sentry_issue_id
    else:
        kind = _text(exception.get("type")) or "Error"
        where = _where(_innermost(_frames(exception, event))) or _text(alert.culprit)
        subject = f"{kind} — {where}" if where else kind
    title = " ".join(defuse(f"[{level}] {subject}").split())
    return clip(title, TITLE_MAX)


# -- body -----------------------------------------------------------------------

def render_issue(alert: Alert, body: Mapping[str, Any], labels: Sequence[str],
                 first_seen: datetime | None = None,
                 decision: AlertDecided | None = None) -> IssueDraft:
    """The GitHub issue for an ``open`` decision; a ``regression`` one names the old issue."""
    event = _event(body)
    exception = _exception(event)
    frames = _frames(exception, event)
    sections = [
        _regression_of(decision),
        _summary(alert, event, first_seen),
        _location(frames),
        _exception_section(exception),
        _frames_section(frames),
        _breadcrumbs(event),
        _tags(event),
        _rule(body),
    ]
    marker = marker_for(alert.sentry_issue_id)
    text = assemble([s for s in sections if s], marker)
    return IssueDraft(render_title(alert, body), text, tuple(labels), marker)


def assemble(sections: Sequence[str], marker: str) -> str:
    """Rule 4: sections in order while they fit, a note if any were cut, the marker last."""
    tail = "\n\n" + marker + "\n"
    budget = BODY_MAX - len(tail) - len(_TRUNCATION_NOTE)
    kept: list[str] = []
    used = 0
    for section in sections:
        cost = len(section) + (2 if kept else 0)
        if used + cost > budget:
            return "\n\n".join(kept) + _TRUNCATION_NOTE + tail.lstrip("\n")
        kept.append(section)
        used += cost
    return "\n\n".join(kept) + tail


def _regression_of(decision: AlertDecided | None) -> str | None:
    """Row 8: the issue this one replaces. ``#N`` is a live link on purpose: obsv wrote
    the number (from its own log), not the event."""
    if decision is None or decision.reason != "regression" or decision.linked_issue is None:
        return None
    number = decision.linked_issue.number
    old = f"#{number}" if number is not None else "the issue obsv rendered earlier (dry run)"
    since = f", closed since {code(_iso(decision.since))}" if decision.since else ""
    return (f"### Regression\nRegression of {old}{since}: the error came back after that "
            "issue was closed, longer ago than the reopen window.")


def _summary(alert: Alert, event: Mapping[str, Any], first_seen: datetime | None) -> str:
    seen = _text(event.get("datetime"))
    lines = [
        "### Summary",
        f"- **Level:** {code(alert.level)}",
        f"- **Environment:** {code(alert.environment or 'none')}",
        f"- **Release:** {code(_text(event.get('release')) or 'none')}",
        f"- **First seen:** {code(format_time(first_seen) if first_seen else seen or 'unknown')}",
        f"- **Last seen:** {code(seen or 'unknown')}",
        f"- **Sentry:** {_link(alert.web_url)}",
    ]
    return "\n".join(lines)


def _link(url: str | None, label: str = "open the issue in Sentry") -> str:
    """A Sentry link: only http(s), shown as a Markdown link with a fixed label."""
    if not url or not re.match(r"^https?://[^\s<>()\[\]`\"']+$", url):
        return code(url or "no link")
    return f"[{label}](<{defuse(url).replace(_ZWSP, '%E2%80%8B')}>)"


def _location(frames: Sequence[Mapping[str, Any]]) -> str | None:
    frame = _innermost(frames)
    where = _where(frame)
    if frame is None or where is None:
        return None
    function = _text(frame.get("function")) or "unknown function"
    return f"### Location\n{code(where)} in {code(function)}"


def _exception_section(exception: Mapping[str, Any] | None) -> str | None:
    if exception is None:
        return None
    kind = _text(exception.get("type")) or "Error"
    value = _text(exception.get("value")) or ""
    return f"### Exception\n{code(kind)}\n\n{block(value) if value else '_no message_'}"


def _frames_section(frames: Sequence[Mapping[str, Any]]) -> str | None:
    if not frames:
        return None
    shown = frames[-FRAMES_SHOWN:]
    lines = [f"### Stack (top {len(shown)} of {len(frames)}, innermost last)"]
    for frame in shown:
        where = _where(frame) or "?"
        function = _text(frame.get("function")) or "?"
        flag = " **in app**" if frame.get("in_app") is True else ""
        lines.append(f"- {code(where, 200)} in {code(function, 120)}{flag}")
    return "\n".join(lines)


def mask_secrets(text: str) -> str:
    """Obvious secrets in a breadcrumb replaced by ``[masked]``."""
    text = _SECRET_PATTERNS[0].sub(lambda m: f"{m.group(1)}{m.group(2)}{m.group(3)}[masked]",
                                   text)
    text = _SECRET_PATTERNS[1].sub(lambda m: f"{m.group(1)} [masked]", text)
    text = _SECRET_PATTERNS[2].sub(lambda m: f"{m.group(1)}{m.group(2)}{m.group(3)}[masked]",
                                   text)
    text = _SECRET_PATTERNS[3].sub(lambda m: f"{m.group(1)}[masked]@", text)
    return _SECRET_PATTERNS[4].sub("[masked]", text)


def _breadcrumb_line(crumb: Mapping[str, Any]) -> str:
    # Read a few times the shown length (whitespace collapses; secrets get masked whole
    # within that window), and never more: masking costs time per character.
    window = 4 * BREADCRUMB_MAX
    parts = [flat(crumb.get(key), window) for key in ("timestamp", "level", "category")
             if crumb.get(key) is not None]
    message = crumb.get("message")
    if isinstance(message, str) and message:
        message = message[:window]
    else:
        data = crumb.get("data")
        message = _pairs(data, window) if isinstance(data, dict) else ""
    return clip(" ".join(mask_secrets(" ".join([*parts, message])).split()), BREADCRUMB_MAX)


def _pairs(data: Mapping[Any, Any], limit: int) -> str:
    """``key=value`` pairs of a breadcrumb's data, at most about ``limit`` characters."""
    pairs: list[str] = []
    used = 0
    for key, value in data.items():
        if used >= limit:
            break
        pair = f"{flat(key, limit)}={flat(value, limit)}"
        pairs.append(pair)
        used += len(pair) + 1
    return " ".join(pairs)


def _breadcrumbs(event: Mapping[str, Any]) -> str | None:
    holder = event.get("breadcrumbs")
    values = holder.get("values") if isinstance(holder, dict) else holder
    if not isinstance(values, list):
        return None
    crumbs = [c for c in values if isinstance(c, dict) and c.get("level") != "debug"]
    if not crumbs:
        return None
    lines = "\n".join(_breadcrumb_line(c) for c in crumbs[-BREADCRUMBS_SHOWN:])
    return f"### Breadcrumbs (last {min(len(crumbs), BREADCRUMBS_SHOWN)}, newest last)\n" \
           + block(lines, BREADCRUMBS_SHOWN * (BREADCRUMB_MAX + 1))


def _tags(event: Mapping[str, Any]) -> str | None:
    pairs = tag_pairs(event.get("tags"))
    if not pairs:
        return None
    lines = ["### Tags"]
    lines += [f"- {code(key, 80)}: {code(value if value is not None else '', 200)}"
              for key, value in pairs[:TAGS_SHOWN]]
    if len(pairs) > TAGS_SHOWN:
        lines.append(f"- … and {len(pairs) - TAGS_SHOWN} more in Sentry")
    return "\n".join(lines)


def _rule(body: Mapping[str, Any]) -> str | None:
    data = body.get("data")
    if not isinstance(data, dict):
        return None
    rule = _text(data.get("triggered_rule"))
    if rule is None and isinstance(data.get("issue_alert"), dict):
        rule = _text(data["issue_alert"].get("title"))
    return f"### Alert rule\n{code(rule)}" if rule else None


def render_comment(alert: Alert, decision: AlertDecided,
                   body: Mapping[str, Any] | None = None) -> str:
    """A notification on a linked issue: a recurrence (what cooldown held back), or a
    regression (after a reopen, or on an open issue Sentry had resolved), then this
    event's facts from its payload ``body`` (docs/reference.md §6 "Comments")."""
    parts = [_headline(alert, decision)]
    held = _held_back(decision)
    if held:
        parts.append(held)
    parts.append(_this_event(alert, _event(body or {})))
    return "\n\n".join(parts) + "\n\n" + comment_marker_for(decision.alert_seq) + "\n"


def _headline(alert: Alert, decision: AlertDecided) -> str:
    where = f"{code(alert.level)} in {code(alert.environment or 'no environment')}"
    since = code(_iso(decision.since))
    if decision.reason != "regression":
        return f"**Still happening** ({where})."
    if decision.action == "reopen":
        return f"**Regressed** ({where}): this issue was closed since {since}; obsv reopened it."
    return (f"**Regressed** ({where}): Sentry reported this issue resolved since {since}, "
            "and it happened again.")


def _held_back(decision: AlertDecided) -> str | None:
    held_back = decision.suppressed
    if held_back and held_back.count:
        count = held_back.count
        return (f"{count} more alert{'s' if count != 1 else ''} of this issue arrived during "
                f"the cooldown, from {code(_iso(held_back.first_at))} to "
                f"{code(_iso(held_back.last_at))}.")
    if decision.reason == "recurrence":
        return "No alerts of this issue arrived during the cooldown."
    return None


def _this_event(alert: Alert, event: Mapping[str, Any]) -> str:
    """Release, environment, event id and link, exception and location: each value inert
    and clipped, so the comment stays small whatever the event holds (rule 6)."""
    link = code(alert.web_url) if alert.web_url and len(alert.web_url) > URL_MAX \
        else _link(alert.web_url, "open the event in Sentry")
    lines = [
        "### This event",
        f"- **Release:** {code(_text(event.get('release')) or 'not set')}",
        f"- **Environment:** {code(alert.environment or 'not set')}",
        f"- **Event:** {code(alert.event_id)}, {link}",
    ]
    exception = _exception(event)
    frame = _innermost(_frames(exception, event))
    where = _where(frame)
    if where is not None and frame is not None:
        function = _text(frame.get("function")) or "unknown function"
        lines.append(f"- **Location:** {code(where)} in {code(function)}")
    if exception is None:
        return "\n".join(lines)
    lines.append(f"- **Exception:** {code(_text(exception.get('type')) or 'Error')}")
    value = _text(exception.get("value"))
    return "\n".join(lines) + ("\n\n" + block(value, COMMENT_VALUE_MAX) if value else "")


def render_close_comment(cause: SentryIssueChanged, cause_seq: int) -> str:
    """Why obsv closes an issue (close on resolve, docs/reference.md §7): Sentry's
    resolution type, and its release when Sentry names one or says "in next release"."""
    details = []
    if cause.resolution_type:
        details.append(f"resolution type {code(cause.resolution_type, 80)}")
    if cause.release:
        details.append(f"in release {code(cause.release, 200)}")
    elif cause.resolution_type == "in_next_release":
        details.append("in the next release")
    said = f" ({', '.join(details)})" if details else ""
    return f"Resolved in Sentry{said}; closing.\n\n{close_marker_for(cause_seq)}\n"


def render_reopen_note(decision: AlertDecided, labels: Sequence[str]) -> str:
    """What a reopen did, for the dry-run outbox (on GitHub it is a PATCH, no text)."""
    shown = ", ".join(code(label, 100) for label in labels) or "none"
    return (f"Reopened: state {code('open')}, reason {code('reopened')}, labels {shown} "
            f"(closed since {code(_iso(decision.since))}).\n\n"
            f"{reopen_marker_for(decision.alert_seq)}\n")


def _iso(at: datetime | None) -> str:
    return at.isoformat() if at else "unknown"
