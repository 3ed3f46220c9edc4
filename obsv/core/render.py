"""Alert -> IssueDraft: the GitHub issue a coding agent works from, and the comments obsv
posts on it later (recurrence, regression, and why it closes an issue).

Rules (docs/reference.md §6):
1. Title ``[level] Type — file:line`` of the innermost in-app frame (else the
   innermost frame, else the culprit; Sentry's title when there is no exception).
   One line, at most 256 characters, never the exception message: it is volatile.
2. Body sections in the order of §6: summary, location, the exception chain outermost
   first with its frames (source context and local variables of in-app frames),
   request, breadcrumbs, tags, alert rule, marker. Everything is read once into
   ``IssueFacts`` (plain, masked, bounded strings); the built-in Markdown and the
   operator's templates (obsv/templates.py) both render from those facts.
3. Every string from the event is untrusted. Secrets are masked in every value (frame
   variables, query strings, breadcrumbs, tags; header and cookie values are never
   shown), and with ``redact_pii`` the user's e-mail, IP address and username too,
   wherever they appear. Then it is shown only as code: an inline span or a fenced
   block delimited by a backtick run longer than any inside, so the text is shown as
   it is (GitHub renders no mention, link or HTML in code; a zero-width space there
   would break copy-paste of ``shop@2.3.1``). Control and bidi characters are dropped
   and whitespace in a span collapses (a newline could end a paragraph); the one
   other change is the colon of a forged ``<!-- obsv:`` marker (rule 5). Outside code
   (the title) ``defuse`` breaks mentions, references and comment delimiters.
4. The body is at most 65,536 characters, cut at a section boundary with a note;
   the hidden marker ``<!-- obsv:sentry-issue=<id> -->`` always ends it, once.
5. The marker is injective: two Sentry issue ids never share one, so reconciliation
   never adopts another issue's post. Letters, digits, ``.``, ``_`` and a lone ``-``
   stand for themselves (a numeric id keeps exactly the documented marker, and every
   marker obsv wrote before for such ids is still found); every other character,
   ``%`` itself and the second ``-`` of a pair are percent-encoded (UTF-8). So the
   comment never holds ``--``, ``<`` or ``>``, and ``parse_marker`` gets the id back.
   Event text never holds a marker: ``<!-- obsv:`` in it gets a modifier-letter colon.
6. Rendering is total and bounded: nested event data is never turned into text by
   ``str()`` (a breadcrumb nested a thousand levels deep would raise RecursionError,
   and a payload that raises is retried forever), only by ``flat``, which stops at a
   depth and a length; every list is cut before it is walked (5,000 frames cost what 7 do).
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from obsv.core.alert import Alert, tag_pairs
from obsv.core.codec import format_time
from obsv.core.events import AlertDecided, SentryIssueChanged, StormDecided, StormIssue

TITLE_MAX = 256
BODY_MAX = 65_536
FRAMES_SHOWN = 7
EXCEPTIONS_SHOWN = 5  # of a chain; Sentry caps chains too, deeper ones are in Sentry
CONTEXT_LINES = 5  # source lines shown before and after the crashing line
CONTEXT_LINE_MAX = 300
VARS_SHOWN = 10
VAR_VALUE_MAX = 200
NAMES_SHOWN = 30  # header and cookie names
BREADCRUMBS_SHOWN = 8
BREADCRUMB_MAX = 160
VALUE_MAX = 2_000
TAGS_SHOWN = 60
FLAT_DEPTH = 4  # nesting shown by ``flat``; deeper containers become an ellipsis
COMMENT_VALUE_MAX = 1_000  # an exception message in a comment
URL_MAX = 2_000  # a longer link is shown as (clipped) code, never whole
PII_MAX = 20  # personal values collected from one event
MASK = "[masked]"
_ZWSP = "\u200b"
_TRUNCATION_NOTE = "\n\n> Some sections were left out to stay within GitHub's size limit; " \
                   "see the full event in Sentry.\n"
# Tags the summary already shows (docs/reference.md §6: tags without repeats).
_SUMMARY_TAGS = frozenset({"level", "environment", "release", "platform", "sdk", "sdk.name",
                           "sdk.version"})
# Sentry's platform -> the fence's language, for the source context.
_LANGUAGES = {"python": "python", "javascript": "javascript", "node": "javascript",
              "ruby": "ruby", "php": "php", "java": "java", "go": "go", "csharp": "csharp",
              "elixir": "elixir", "rust": "rust", "dart": "dart", "cocoa": "swift",
              "native": "c", "perl": "perl"}

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_LIVE = re.compile(r"(@|#(?=\d)|\bGH-(?=\d))", re.IGNORECASE)
_COMMENT_DELIMITERS = re.compile(r"<!--|-->|--!>")
_FORGED_MARKER = re.compile(r"(<!--\s*obsv):", re.IGNORECASE)
_BACKTICKS = re.compile(r"`+")
_MARKER_PLAIN = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._")
_MARKER = re.compile(r"<!-- obsv:sentry-issue=([A-Za-z0-9._%-]*) -->")
_EVENT_PART = re.compile(r"^(.*?/issues/[^/?#]+/)events/[^?#]*")
_EMAIL = re.compile(r"[\w.+-]{1,64}@[\w-]{1,63}(?:\.[\w-]{1,63})*\.[A-Za-z]{2,24}")
_SECRET_NAME = re.compile(r"(?i)secret|token|passw|pwd|key|auth|session|csrf|cookie|credential"
                          r"|signature|private")

# Secrets in free text: header values, key=value pairs, JSON pairs, URL userinfo.
_SECRET_PATTERNS = (
    re.compile(r"(?i)\b(authorization|proxy-authorization|cookie|set-cookie|x-api-key)"
               r"(\s*[:=]\s*)([\"']?)[^\"'\n,;]+"),
    re.compile(r"(?i)\b(bearer|basic|token)\s+[A-Za-z0-9._~+/=-]{6,}"),
    re.compile(r"(?i)([^\w.-]|^)([\w.-]*(?:token|secret|passw(?:or)?d|pwd|api[_-]?key|"
               r"access[_-]?key|private[_-]?key|signature|sig|auth|session|csrf\w*|"
               r"credential)s?)([\"']?\s*[:=]\s*[\"']?)([^\s&;,\"'}]+)"),
    re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^\s/@:]*:[^\s/@]+@"),
    re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|"
               r"xox[baprs]-[A-Za-z0-9-]{10,}|AKIA[0-9A-Z]{16}|sk_live_[A-Za-z0-9]{6,})"),
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
    """The Sentry issue id of the last marker in ``text`` (an issue body) that obsv could
    have written, if any.

    The last: obsv appends its own after everything else, and a human may have pasted
    another issue's marker above it. One obsv could have written: ``marker_for`` of the
    decoded id gives the marker back, so a hand-made ``%FF`` or ``%41`` (for ``A``) is no
    marker, and no id ever comes back as one that is not valid UTF-8 text.
    """
    found: str | None = None
    for match in _MARKER.finditer(text):
        try:
            sentry_issue_id = urllib.parse.unquote(match.group(1), errors="strict")
        except UnicodeDecodeError:
            continue
        if marker_for(sentry_issue_id) == match.group(0):
            found = sentry_issue_id
    return found


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


def storm_marker_for(storm_seq: int) -> str:
    """The hidden marker of a storm digest post (the digest issue, or a comment on it):
    one per ``storm.decided`` record, by its seq."""
    return f"<!-- obsv:storm-for-record={storm_seq} -->"


# -- neutralising untrusted text ------------------------------------------------

def defuse(text: str) -> str:
    """Untrusted text made inert outside code: no control characters, mentions,
    references or comment delimiters, whatever context it ends up in."""
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


def unforge(text: str) -> str:
    """Rule 5: event text never carries something that reads as obsv's marker."""
    return _FORGED_MARKER.sub("\\1\ua789", text)


def one_line(text: str, limit: int) -> str:
    """Code-span text: controls dropped, whitespace runs as one space, at most ``limit``."""
    return unforge(clip(" ".join(_CONTROL.sub("", text[: 4 * limit + 64]).split()), limit))


def span(text: str) -> str:
    """``text`` (one line, already masked) as an inline code span shown as it is: the
    delimiter is a backtick run longer than any inside, padded with a space when the
    text starts or ends with a backtick (CommonMark strips one space each side)."""
    if not text:
        return "` `"
    ticks = "`" * (max((len(run) for run in _BACKTICKS.findall(text)), default=0) + 1)
    pad = " " if text[0] == "`" or text[-1] == "`" or (text[0] == " " == text[-1]) else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"


def fence(text: str, language: str = "text") -> str:
    """``text`` (already masked) as a fenced block shown as it is: the fence is longer
    than any backtick run inside, so no line of the text can close it."""
    body = unforge(_CONTROL.sub("", text)).rstrip("\n")
    longest = max((len(run) for run in _BACKTICKS.findall(body)), default=0)
    ticks = "`" * max(3, longest + 1)
    return f"{ticks}{language}\n{body}\n{ticks}"


def code(value: object, limit: int = 300) -> str:
    """One untrusted value as inline code on one line (secrets masked)."""
    return span(one_line(mask_secrets(flat(value, 4 * limit + 64)), limit))


def block(text: str, limit: int = VALUE_MAX) -> str:
    """Untrusted multi-line text as a fenced block no value can close (secrets masked)."""
    return fence(clip(mask_secrets(text[: 4 * limit + 64]), limit))


def mask_secrets(text: str) -> str:
    """Obvious secrets in free text replaced by ``[masked]``."""
    text = _SECRET_PATTERNS[0].sub(lambda m: f"{m.group(1)}{m.group(2)}{m.group(3)}{MASK}",
                                   text)
    text = _SECRET_PATTERNS[1].sub(lambda m: f"{m.group(1)} {MASK}", text)
    text = _SECRET_PATTERNS[2].sub(lambda m: f"{m.group(1)}{m.group(2)}{m.group(3)}{MASK}",
                                   text)
    text = _SECRET_PATTERNS[3].sub(lambda m: f"{m.group(1)}{MASK}@", text)
    return _SECRET_PATTERNS[4].sub(MASK, text)


@dataclass(frozen=True, slots=True)
class Masker:
    """Masks secrets, and the personal values of one event when asked to (rule 3)."""

    personal: tuple[str, ...] = ()
    redact_pii: bool = False

    def __call__(self, text: str) -> str:
        """``text`` with every secret and personal value replaced by ``[masked]``."""
        text = mask_secrets(text)
        for value in self.personal:
            text = text.replace(value, MASK)
        return _EMAIL.sub(MASK, text) if self.redact_pii else text


def masker_for(event: Mapping[str, Any], redact_pii: bool) -> Masker:
    """The event's personal values (user e-mail, IP address, username, the client
    address of the request, and the same in the ``user`` tags), longest first."""
    if not redact_pii:
        return Masker()
    found: list[object] = []
    user = event.get("user")
    if isinstance(user, dict):
        found += [user.get(key) for key in ("email", "ip_address", "username")]
    request = event.get("request")
    env = request.get("env") if isinstance(request, dict) else None
    if isinstance(env, dict):
        found.append(env.get("REMOTE_ADDR"))
    for key, value in tag_pairs(event.get("tags"))[:TAGS_SHOWN * 2]:
        if value is None:
            continue
        if key in ("user.email", "user.ip", "user.username", "client_ip"):
            found.append(value)
        elif key == "user" and value.partition(":")[0] in ("email", "ip", "username"):
            found.append(value.partition(":")[2])
    values = {v[:200] for v in found if isinstance(v, str) and len(v.strip()) >= 3}
    return Masker(tuple(sorted(values, key=len, reverse=True))[:PII_MAX], True)


# -- the facts of an event: read once, masked and bounded -------------------------

@dataclass(frozen=True, slots=True)
class FrameFacts:
    """One stack frame; ``context`` and ``variables`` only where the body shows them."""

    where: str  # file:line[:column]
    file: str
    line: int | None
    column: int | None
    function: str
    in_app: bool
    # (line number or None, source line, True for the line that raised)
    context: tuple[tuple[int | None, str, bool], ...] = ()
    variables: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class ExceptionFacts:
    """One exception of the chain (outermost first)."""

    type: str
    value: str
    module: str
    mechanism: str
    handled: bool | None
    is_cause: bool  # a cause (or context) of the exception before it in the chain
    frames: tuple[FrameFacts, ...]  # the top ``FRAMES_SHOWN``, innermost last
    frames_total: int


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """The request: method, URL with secret query values masked, names only."""

    method: str
    url: str
    headers: tuple[str, ...]
    cookies: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class IssueFacts:
    """Everything the body and comments show, from ``data.event``: plain strings with
    secrets (and personal data, when asked) masked and every length bounded. Not yet
    inert: ``span``/``fence`` (here) or obsv/templates.py make them so."""

    sentry_issue_id: str
    title: str
    level: str
    environment: str | None
    release: str | None
    platform: str | None
    sdk: str | None
    language: str
    first_seen: str
    event_time: str
    event_id: str
    issue_url: str | None
    event_url: str | None
    culprit: str | None
    rule: str | None
    location: FrameFacts | None
    exceptions: tuple[ExceptionFacts, ...]
    request: RequestFacts | None
    breadcrumbs: tuple[str, ...]
    tags: tuple[tuple[str, str], ...]
    tags_total: int
    mask: Masker = field(default_factory=Masker)


def _event(body: Mapping[str, Any]) -> Mapping[str, Any]:
    data = body.get("data")
    event = data.get("event") if isinstance(data, dict) else None
    return event if isinstance(event, dict) else {}


def _exceptions(event: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The chain, outermost first (Sentry lists the primary exception last)."""
    exception = event.get("exception")
    values = exception.get("values") if isinstance(exception, dict) else None
    if not isinstance(values, list):
        return []
    return [v for v in reversed(values[-EXCEPTIONS_SHOWN:]) if isinstance(v, dict)]


def _exception(event: Mapping[str, Any]) -> Mapping[str, Any] | None:
    chain = _exceptions(event)
    return chain[0] if chain else None


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
    found: Mapping[str, Any]
    for found in reversed(frames):
        if found.get("in_app") is True:
            return found
    last: Mapping[str, Any] | None = frames[-1] if frames else None
    return last


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _where(frame: Mapping[str, Any] | None, column: bool = False) -> str | None:
    if frame is None:
        return None
    path = frame.get("filename") or frame.get("abs_path") or frame.get("module")
    if not isinstance(path, str) or not path:
        return None
    line, col = _int(frame.get("lineno")), _int(frame.get("colno"))
    if line is None:
        return path
    return f"{path}:{line}:{col}" if column and col is not None else f"{path}:{line}"


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _one(mask: Masker, value: object, limit: int = 300) -> str:
    """One value as masked one-line text (rule 3), at most ``limit`` characters."""
    return one_line(mask(flat(value, 4 * limit + 64)), limit)


def _frame_facts(frame: Mapping[str, Any], mask: Masker, detailed: bool) -> FrameFacts:
    where = _where(frame, column=True) or "?"
    path = frame.get("filename") or frame.get("abs_path") or frame.get("module")
    facts = FrameFacts(
        _one(mask, where, 200), _one(mask, path if isinstance(path, str) else "?", 200),
        _int(frame.get("lineno")), _int(frame.get("colno")),
        _one(mask, _text(frame.get("function")) or "?", 120), frame.get("in_app") is True)
    if not detailed:
        return facts
    return FrameFacts(facts.where, facts.file, facts.line, facts.column, facts.function,
                      facts.in_app, _context(frame, mask), _variables(frame, mask))


def _context(frame: Mapping[str, Any], mask: Masker) -> tuple[tuple[int | None, str, bool], ...]:
    """Rule 6: at most ``CONTEXT_LINES`` each side, each line clipped, secrets masked."""
    line = frame.get("context_line")
    if not isinstance(line, str):
        return ()
    pre, post = frame.get("pre_context"), frame.get("post_context")
    pre = [x for x in pre[-CONTEXT_LINES:] if isinstance(x, str)] if isinstance(pre, list) else []
    post = [x for x in post[:CONTEXT_LINES] if isinstance(x, str)] \
        if isinstance(post, list) else []
    lineno = _int(frame.get("lineno"))

    def number(offset: int) -> int | None:
        return None if lineno is None else lineno + offset

    def shown(text: str) -> str:
        return unforge(clip(mask(_CONTROL.sub("", text[:4 * CONTEXT_LINE_MAX])),
                             CONTEXT_LINE_MAX))

    return (*((number(i - len(pre)), shown(x), False) for i, x in enumerate(pre)),
            (lineno, shown(line), True),
            *((number(i + 1), shown(x), False) for i, x in enumerate(post)))


def _variables(frame: Mapping[str, Any], mask: Masker) -> tuple[tuple[str, str], ...]:
    """At most ``VARS_SHOWN``; a variable whose name says secret shows ``[masked]``."""
    found = frame.get("vars")
    if not isinstance(found, dict):
        return ()
    shown = []
    for name, value in list(found.items())[:VARS_SHOWN]:
        key = _one(mask, name, 80)
        text = MASK if _SECRET_NAME.search(str(name)[:200]) else _one(mask, value, VAR_VALUE_MAX)
        shown.append((key, text))
    return tuple(shown)


def _exception_facts(exception: Mapping[str, Any], event: Mapping[str, Any], mask: Masker,
                     is_cause: bool) -> ExceptionFacts:
    frames = _frames(exception, event) if not is_cause else _frames(exception, {})
    top = frames[-FRAMES_SHOWN:]
    detailed = {id(f) for f in top if f.get("in_app") is True} or ({id(top[-1])} if top else set())
    mechanism = exception.get("mechanism")
    mechanism = mechanism if isinstance(mechanism, dict) else {}
    handled = mechanism.get("handled")
    return ExceptionFacts(
        _one(mask, _text(exception.get("type")) or "Error", 200),
        clip(mask(flat(exception.get("value") or "", 4 * VALUE_MAX)), VALUE_MAX),
        _one(mask, _text(exception.get("module")) or "", 200),
        _one(mask, _text(mechanism.get("type")) or "", 80),
        handled if isinstance(handled, bool) else None, is_cause,
        tuple(_frame_facts(f, mask, id(f) in detailed) for f in top), len(frames))


def _request(event: Mapping[str, Any], mask: Masker) -> RequestFacts | None:
    request = event.get("request")
    if not isinstance(request, dict):
        return None
    url = _text(request.get("url")) or ""
    query = request.get("query_string")
    if isinstance(query, list):
        query = "&".join(f"{flat(p[0], 200)}={flat(p[1], 400)}" for p in query[:50]
                         if isinstance(p, list) and len(p) == 2)
    elif isinstance(query, dict):
        query = "&".join(f"{flat(k, 200)}={flat(v, 400)}" for k, v in list(query.items())[:50])
    if isinstance(query, str) and query:
        url = f"{url}?{query}" if "?" not in url else f"{url}&{query}"
    headers = _names(request.get("headers"))
    cookies = _names(request.get("cookies"))
    if not cookies:
        cookie = next((v for k, v in _pairs_of(request.get("headers")) if k.lower() == "cookie"),
                      None)
        if isinstance(cookie, str):
            cookies = tuple(c.partition("=")[0].strip() for c in cookie[:4000].split(";")
                            if c.strip())[:NAMES_SHOWN]
    method = _text(request.get("method")) or ""
    if not (url or method or headers or cookies):
        return None
    return RequestFacts(_one(mask, method, 20), _one(mask, _query_masked(url), 500),
                        tuple(_one(mask, h, 80) for h in headers),
                        tuple(_one(mask, c, 80) for c in cookies))


def _query_masked(url: str) -> str:
    """The URL with the values of secret-named query parameters masked."""
    base, _, query = url[:4000].partition("?")
    if not query:
        return base
    pairs = []
    for pair in query.split("&"):
        name, sep, _ = pair.partition("=")
        pairs.append(f"{name}{sep}{MASK}" if sep and _SECRET_NAME.search(name) else pair)
    return f"{base}?{'&'.join(pairs)}"


def _pairs_of(value: object) -> list[tuple[str, object]]:
    if isinstance(value, dict):
        return [(str(k)[:200], v) for k, v in list(value.items())[:NAMES_SHOWN]]
    if isinstance(value, list):
        return [(p[0][:200], p[1]) for p in value[:NAMES_SHOWN]
                if isinstance(p, list) and len(p) == 2 and isinstance(p[0], str)]
    return []


def _names(value: object) -> tuple[str, ...]:
    """Header or cookie names; their values are never shown (they hold credentials)."""
    return tuple(name for name, _ in _pairs_of(value))


def _breadcrumb_line(crumb: Mapping[str, Any], mask: Masker) -> str:
    # Read a few times the shown length (whitespace collapses; secrets get masked whole
    # within that window), and never more: masking costs time per character.
    window = 4 * BREADCRUMB_MAX
    stamp = crumb.get("timestamp")
    parts = [_timestamp(stamp) if isinstance(stamp, int | float) and not isinstance(stamp, bool)
             else flat(stamp, window)] if stamp is not None else []
    parts += [flat(crumb.get(key), window) for key in ("level", "category")
              if crumb.get(key) is not None]
    message = crumb.get("message")
    if isinstance(message, str) and message:
        message = message[:window]
    else:
        data = crumb.get("data")
        message = _pairs(data, window) if isinstance(data, dict) else ""
    line = " ".join(_CONTROL.sub("", mask(" ".join([*parts, message]))).split())
    return unforge(clip(line, BREADCRUMB_MAX))


def _timestamp(seconds: float) -> str:
    """A breadcrumb's Unix time as RFC 3339 UTC (an absurd one as the number)."""
    if not 0 <= seconds < 253402300800:  # datetime's year 9999
        return flat(seconds, 40)
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


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


def _breadcrumbs(event: Mapping[str, Any], mask: Masker) -> tuple[str, ...]:
    holder = event.get("breadcrumbs")
    values = holder.get("values") if isinstance(holder, dict) else holder
    if not isinstance(values, list):
        return ()
    crumbs: list[Mapping[str, Any]] = []
    for crumb in reversed(values):  # newest last: walk back only as far as needed
        if isinstance(crumb, dict) and crumb.get("level") != "debug":
            crumbs.append(crumb)
            if len(crumbs) == BREADCRUMBS_SHOWN:
                break
    return tuple(_breadcrumb_line(c, mask) for c in reversed(crumbs))


def _tags(event: Mapping[str, Any], mask: Masker) -> tuple[tuple[tuple[str, str], ...], int]:
    pairs = [(k, v) for k, v in tag_pairs(event.get("tags")) if k not in _SUMMARY_TAGS]
    shown = tuple((_one(mask, k, 80), _one(mask, v if v is not None else "", 200))
                  for k, v in pairs[:TAGS_SHOWN])
    return shown, len(pairs)


def _rule(body: Mapping[str, Any]) -> str | None:
    data = body.get("data")
    if not isinstance(data, dict):
        return None
    rule = _text(data.get("triggered_rule"))
    if rule is None and isinstance(data.get("issue_alert"), dict):
        rule = _text(data["issue_alert"].get("title"))
    return rule


def _sdk(event: Mapping[str, Any]) -> str | None:
    sdk = event.get("sdk")
    if not isinstance(sdk, dict):
        return None
    parts = [p for p in (_text(sdk.get("name")), _text(sdk.get("version"))) if p]
    return " ".join(parts) or None


def issue_facts(alert: Alert, body: Mapping[str, Any], first_seen: datetime | None = None,
                redact_pii: bool = True) -> IssueFacts:
    """Read the event once (rule 2): everything shown, masked (rule 3) and bounded."""
    event = _event(body)
    mask = masker_for(event, redact_pii)
    chain = _exceptions(event)
    exceptions = tuple(_exception_facts(e, event, mask, index > 0)
                       for index, e in enumerate(chain))
    location = None
    frame = _innermost(_frames(chain[0] if chain else None, event))
    if frame is not None and _where(frame) is not None:
        location = _frame_facts(frame, mask, False)
    platform = _text(event.get("platform"))
    event_time = _text(event.get("datetime"))
    tags, tags_total = _tags(event, mask)

    def optional(value: object, limit: int = 200) -> str | None:
        text = _text(value)
        return None if text is None else _one(mask, text, limit)

    return IssueFacts(
        sentry_issue_id=alert.sentry_issue_id,
        title=render_title(alert, body, mask),
        level=_one(mask, alert.level or "error", 40),
        environment=optional(alert.environment),
        release=optional(event.get("release")),
        platform=optional(platform, 40), sdk=optional(_sdk(event), 120),
        language=_LANGUAGES.get(platform or "", "text"),
        first_seen=format_time(first_seen) if first_seen else _one(mask, event_time or "unknown"),
        event_time=_one(mask, event_time or "unknown"),
        event_id=_one(mask, alert.event_id, 100),
        issue_url=_issue_url(alert.web_url), event_url=alert.web_url,
        culprit=optional(alert.culprit), rule=optional(_rule(body)),
        location=location, exceptions=exceptions, request=_request(event, mask),
        breadcrumbs=_breadcrumbs(event, mask), tags=tags, tags_total=tags_total, mask=mask)


def _issue_url(web_url: str | None) -> str | None:
    """Sentry's issue page: the event link without its ``/events/<id>/`` part."""
    if not web_url:
        return None
    found = _EVENT_PART.match(web_url[:URL_MAX + 1])
    return found.group(1) if found else web_url


# -- title ----------------------------------------------------------------------

def render_title(alert: Alert, body: Mapping[str, Any], mask: Masker | None = None) -> str:
    """Rule 1: one line, at most 256 characters, personal data masked like the body."""
    event = _event(body)
    mask = mask or masker_for(event, True)
    exception = _exception(event)
    level = alert.level or "error"
    if exception is None:
        subject = _text(alert.title) or _text(event.get("message")) or alert.sentry_issue_id
    else:
        kind = _text(exception.get("type")) or "Error"
        where = _where(_innermost(_frames(exception, event))) or _text(alert.culprit)
        subject = f"{kind} — {where}" if where else kind
    title = " ".join(defuse(mask(clip(f"[{level}] {subject}", 4 * TITLE_MAX))).split())
    return clip(title, TITLE_MAX)


# -- body -----------------------------------------------------------------------

def render_issue(alert: Alert, body: Mapping[str, Any], labels: Sequence[str],
                 first_seen: datetime | None = None,
                 decision: AlertDecided | None = None, *, redact_pii: bool = True) -> IssueDraft:
    """The GitHub issue for an ``open`` decision; a ``regression`` one names the old issue."""
    facts = issue_facts(alert, body, first_seen, redact_pii)
    sections = body_sections(facts, decision)
    marker = marker_for(alert.sentry_issue_id)
    return IssueDraft(facts.title, assemble(sections, marker), tuple(labels), marker)


def body_sections(facts: IssueFacts, decision: AlertDecided | None = None) -> list[str]:
    """The built-in body's sections, in the order of docs/reference.md §6 (rule 2)."""
    sections = [
        regression_of(decision),
        _summary(facts),
        _location(facts.location),
        *(_exception_section(e, i, len(facts.exceptions), facts.language)
          for i, e in enumerate(facts.exceptions)),
        _request_section(facts.request),
        _breadcrumbs_section(facts.breadcrumbs),
        _tags_section(facts),
        f"### Alert rule\n{span(facts.rule)}" if facts.rule else None,
    ]
    return [s for s in sections if s]


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


def regression_of(decision: AlertDecided | None) -> str | None:
    """Row 8: the issue this one replaces. ``#N`` is a live link on purpose: obsv wrote
    the number (from its own log), not the event."""
    if decision is None or decision.reason != "regression" or decision.linked_issue is None:
        return None
    number = decision.linked_issue.number
    old = f"#{number}" if number is not None else "the issue obsv rendered earlier (dry run)"
    since = f", closed since {code(_iso(decision.since))}" if decision.since else ""
    return (f"### Regression\nRegression of {old}{since}: the error came back after that "
            "issue was closed, longer ago than the reopen window.")


def _or_not_set(value: str | None) -> str:
    return span(value) if value else "not set"


def _summary(facts: IssueFacts) -> str:
    platform = _or_not_set(facts.platform)
    sdk = f", SDK {span(facts.sdk)}" if facts.sdk else ""
    links = sentry_link(facts.issue_url, "the issue in Sentry")
    if facts.event_url and facts.event_url != facts.issue_url:
        links += " · " + sentry_link(facts.event_url, "this event")
    lines = [
        "### Summary",
        f"- **Level:** {span(facts.level)}",
        f"- **Environment:** {_or_not_set(facts.environment)}",
        f"- **Release:** {_or_not_set(facts.release)}",
        f"- **Platform:** {platform}{sdk}",
        f"- **First seen:** {span(facts.first_seen)} (the first alert of this Sentry issue "
        "obsv received)",
        f"- **This event:** {span(facts.event_time)}, id {span(facts.event_id)}",
        f"- **Sentry:** {links}",
    ]
    return "\n".join(lines)


def sentry_link(url: str | None, label: str) -> str:
    """A Sentry link: only http(s), shown as a Markdown link with a fixed label."""
    if not url or len(url) > URL_MAX or not re.match(r"^https?://[^\s<>()\[\]`\"']+$", url):
        return span(one_line(url, 300)) if url else "no link"
    return f"[{label}](<{defuse(url).replace(_ZWSP, '%E2%80%8B')}>)"


def _frame_line(frame: FrameFacts) -> str:
    return f"{span(frame.where)} in {span(frame.function)}"


def _location(frame: FrameFacts | None) -> str | None:
    return None if frame is None else f"### Location\n{_frame_line(frame)}"


def _exception_section(exception: ExceptionFacts, index: int, count: int,
                       language: str) -> str:
    how = []
    if exception.handled is not None:
        how.append("handled" if exception.handled else "unhandled")
    if exception.mechanism:
        how.append(f"mechanism {span(exception.mechanism)}")
    said = f" ({', '.join(how)})" if how else ""
    if exception.is_cause:
        heading = f"### Cause of the exception above ({index + 1} of {count})"
    else:
        heading = "### Exception" + (f" (1 of {count}, outermost first)" if count > 1 else "")
    lines = [f"{heading}\n{span(exception.type)}{said}",
             fence(exception.value) if exception.value else "_no message_"]
    if exception.frames:
        lines.append(_frames_list(exception))
    lines += [_frame_detail(f, language) for f in exception.frames if f.context or f.variables]
    return "\n\n".join(lines)


def _frames_list(exception: ExceptionFacts) -> str:
    shown = len(exception.frames)
    lines = [f"Stack (top {shown} of {exception.frames_total}, innermost last):"]
    lines += [f"- {_frame_line(f)}{' **in app**' if f.in_app else ''}"
              for f in exception.frames]
    return "\n".join(lines)


def _frame_detail(frame: FrameFacts, language: str) -> str:
    """Rule 3: the source Sentry sent, the line that raised marked ``>``, then the
    frame's local variables."""
    parts = [f"{_frame_line(frame)}:"]
    if frame.context:
        width = max(len(str(n)) for n, _, _ in frame.context if n is not None) \
            if any(n is not None for n, _, _ in frame.context) else 0
        rows = [f"{'>' if here else ' '} {'' if n is None else n:>{width}}  {text}".rstrip()
                for n, text, here in frame.context]
        parts.append(fence("\n".join(rows), language))
    if frame.variables:
        parts.append("Local variables:\n" + "\n".join(
            f"- {span(name)} = {span(value)}" for name, value in frame.variables))
    return "\n\n".join(parts)


def _request_section(request: RequestFacts | None) -> str | None:
    if request is None:
        return None
    lines = ["### Request"]
    if request.method or request.url:
        lines.append(f"- {span(' '.join(p for p in (request.method, request.url) if p))}")
    if request.headers:
        lines.append("- Headers (names only): " + ", ".join(span(h) for h in request.headers))
    if request.cookies:
        lines.append("- Cookies (names only): " + ", ".join(span(c) for c in request.cookies))
    return "\n".join(lines)


def _breadcrumbs_section(crumbs: Sequence[str]) -> str | None:
    if not crumbs:
        return None
    return f"### Breadcrumbs (last {len(crumbs)}, newest last)\n" + fence("\n".join(crumbs))


def _tags_section(facts: IssueFacts) -> str | None:
    if not facts.tags:
        return None
    lines = ["### Tags"]
    lines += [f"- {span(key)}: {span(value)}" for key, value in facts.tags]
    if facts.tags_total > len(facts.tags):
        lines.append(f"- … and {facts.tags_total - len(facts.tags)} more in Sentry")
    return "\n".join(lines)


# -- comments -------------------------------------------------------------------

def render_comment(alert: Alert, decision: AlertDecided,
                   body: Mapping[str, Any] | None = None, first_seen: datetime | None = None,
                   *, redact_pii: bool = True) -> str:
    """A notification on a linked issue: a recurrence (what cooldown held back), or a
    regression (after a reopen, or on an open issue Sentry had resolved), then this
    event's facts from its payload ``body`` (docs/reference.md §6 "Comments")."""
    facts = issue_facts(alert, body or {}, first_seen, redact_pii)
    return "\n\n".join(comment_parts(facts, decision)) + "\n\n" \
        + comment_marker_for(decision.alert_seq) + "\n"


def comment_parts(facts: IssueFacts, decision: AlertDecided) -> list[str]:
    """The built-in comment's parts: headline, what cooldown held back, this event."""
    parts = [headline(facts, decision)]
    held = held_back(decision)
    if held:
        parts.append(held)
    parts.append(_this_event(facts))
    return parts


def headline(facts: IssueFacts, decision: AlertDecided) -> str:
    """What happened: still happening, or regressed (and since when)."""
    where = f"{span(facts.level)} in {span(facts.environment or 'no environment')}"
    since = code(_iso(decision.since))
    if decision.reason != "regression":
        return f"**Still happening** ({where})."
    if decision.action == "reopen":
        return f"**Regressed** ({where}): this issue was closed since {since}; obsv reopened it."
    return (f"**Regressed** ({where}): Sentry reported this issue resolved since {since}, "
            "and it happened again.")


def held_back(decision: AlertDecided) -> str | None:
    """How many alerts cooldown held back, and when (or that none did)."""
    held = decision.suppressed
    if held and held.count:
        count = held.count
        return (f"{count} more alert{'s' if count != 1 else ''} of this issue arrived during "
                f"the cooldown, from {code(_iso(held.first_at))} to "
                f"{code(_iso(held.last_at))}.")
    if decision.reason == "recurrence":
        return "No alerts of this issue arrived during the cooldown."
    return None


def _this_event(facts: IssueFacts) -> str:
    """Release, environment, event id and link, exception and location: each value
    masked and clipped, so the comment stays small whatever the event holds (rule 6)."""
    lines = [
        "### This event",
        f"- **Release:** {span(facts.release or 'not set')}",
        f"- **Environment:** {span(facts.environment or 'not set')}",
        f"- **Event:** {span(facts.event_id)} at {span(facts.event_time)}, "
        f"{sentry_link(facts.event_url, 'open the event in Sentry')}",
    ]
    if facts.location is not None:
        lines.append(f"- **Location:** {_frame_line(facts.location)}")
    if not facts.exceptions:
        return "\n".join(lines)
    exception = facts.exceptions[0]
    lines.append(f"- **Exception:** {span(exception.type)}")
    value = clip(exception.value, COMMENT_VALUE_MAX)
    return "\n".join(lines) + ("\n\n" + fence(value) if value else "")


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


# -- the storm digest (docs/reference.md §5) ----------------------------------------

DIGEST_LINE_TITLE_MAX = 200
# Lines listed in one post: about 250 characters each, so the list stays inside BODY_MAX.
DIGEST_LINES_MAX = 200


def render_storm_digest(decision: StormDecided, labels: Sequence[str],
                        storm_seq: int) -> IssueDraft:
    """The digest issue a storm opens: which repository, since when, and the Sentry issues
    its budget suppressed. Only obsv's own words are live; every listed value is inert."""
    where = decision.repo or "the outbox"
    title = clip(f"[storm] Sentry issues over the storm budget of {where} since "
                 f"{_storm_time(decision.window_start)}", TITLE_MAX)
    intro = (f"The storm budget of {where} is spent: these Sentry issues opened no GitHub "
             "issue of their own. Later ones in this storm are added as comments, at most "
             "one every 10 minutes; the storm ends after an hour without such a "
             "suppression.")
    marker = storm_marker_for(storm_seq)
    body = assemble([intro, _storm_list(decision)], marker)
    return IssueDraft(title, body, tuple(labels), marker)


def render_storm_comment(decision: StormDecided, storm_seq: int) -> str:
    """A comment adding the Sentry issues suppressed since the digest's last post."""
    intro = (f"{len(decision.issues)} more Sentry issue"
             f"{'' if len(decision.issues) == 1 else 's'} over the storm budget:")
    return assemble([intro, _storm_list(decision)], storm_marker_for(storm_seq))


def _storm_list(decision: StormDecided) -> str:
    shown = decision.issues[:DIGEST_LINES_MAX]
    lines = [f"- {code(issue.level or 'error', 20)} "
             f"{code(issue.title or issue.sentry_issue_id, DIGEST_LINE_TITLE_MAX)} · "
             f"{sentry_link(_issue_url(issue.web_url), _link_label(issue))}"
             for issue in shown]
    if len(decision.issues) > len(shown):
        lines.append(f"- … and {len(decision.issues) - len(shown)} more (see `obsv replay`)")
    return "\n".join(lines)


def _link_label(issue: StormIssue) -> str:
    """The link's label names the Sentry issue id only when it is a plain number."""
    plain = issue.sentry_issue_id.isdigit() and len(issue.sentry_issue_id) <= 32
    return f"Sentry issue {issue.sentry_issue_id}" if plain else "Sentry issue"


def _storm_time(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M UTC")
