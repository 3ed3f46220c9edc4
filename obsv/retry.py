"""Rounds of attempts, shared by every sink that writes to a peer (GitHub, Sentry).

Rules (docs/reference.md §6 "Posting"; §7 gives Sentry the same rules):
1. A round is ``attempts`` tries, ``waits`` apart (2 s, then 8 s), longer when the
   peer asks for a longer wait. A wait longer than ``max_inline_wait`` (a minute)
   ends the round at once with that time, so one rate limit never holds the poster.
2. What to retry is the peer's business: each sink passes a ``classify`` that turns
   an exception into a ``Failure`` (retryable or not, whether the write may have
   reached the peer, how long the peer asked to wait).
3. After a failed round: ``issue.failed`` with ``retryable: true`` and the next round
   30 s later, doubling up to an hour (``retry_time``), or at the end of the peer's
   wait if later, never more than ``MAX_RETRY_SECONDS`` away. A permanent failure
   has no next time.
4. ``maybe_sent`` only grows within a round: once an attempt may have reached the
   peer, every later attempt looks before writing again.
5. Cancellation (shutdown) is never retried and never recorded: it propagates.
"""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from obsv.core.events import IssueFailed
from obsv.sink import MAX_RETRY_SECONDS, retry_time

log = structlog.get_logger("obsv.retry")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Timings of rule 1 (and GitHub's write spacing); tests shrink them, production keeps
    the defaults."""

    attempts: int = 3
    waits: tuple[float, ...] = (2.0, 8.0)
    write_interval: float = 1.0
    max_inline_wait: float = 60.0
    request_timeout: float = 30.0


@dataclass(frozen=True, slots=True)
class Failure:
    """What went wrong with one request, classified (rule 2)."""

    status: int | None
    message: str
    retryable: bool
    maybe_sent: bool
    wait_hint: float | None = None
    again_now: bool = True  # another attempt in this round may help


Classify = Callable[[BaseException, float], Failure]


class Rounds:
    """Runs one round of attempts of an operation and turns its end into an outcome."""

    def __init__(self, policy: RetryPolicy, classify: Classify, clock: Callable[[], datetime],
                 *, peer: str, on_retry: Callable[[Failure], None] | None = None) -> None:
        self._policy = policy
        self._classify = classify
        self._clock = clock
        self._peer = peer
        self._on_retry = on_retry

    def classify(self, exc: BaseException) -> Failure:
        """Rule 2 for one exception, now."""
        return self._classify(exc, time.time())

    async def run(self, seq: int, attempts_before: int, maybe_sent: bool,
                  once: Callable[[bool], Awaitable[T]]) -> T | IssueFailed:
        """Call ``once(maybe_sent)`` until it returns or the round ends; its result, or the
        ``issue.failed`` of the record decided at ``seq``."""
        tried = 0
        retry = AsyncRetrying(
            stop=stop_after_attempt(self._policy.attempts),
            wait=self._wait,
            retry=retry_if_exception(self._retry_now),
            before_sleep=self._count_retry,
            reraise=True,
        )
        try:
            async for attempt in retry:
                with attempt:
                    tried += 1
                    try:
                        return await once(maybe_sent)
                    except Exception as exc:
                        maybe_sent = maybe_sent or self.classify(exc).maybe_sent  # rule 4
                        raise
        except Exception as exc:
            return self.failed(seq, attempts_before + tried, exc)
        raise AssertionError("unreachable: tenacity either returns or raises")

    def failed(self, seq: int, attempts: int, exc: BaseException) -> IssueFailed:
        """Rule 3: the ``issue.failed`` record after ``attempts`` attempts in all."""
        failure = self.classify(exc)
        next_at = None
        if failure.retryable:
            next_at = retry_time(self._clock(), max(1, attempts // self._policy.attempts))
            if failure.wait_hint is not None:
                next_at = max(next_at, self._clock() + timedelta(seconds=failure.wait_hint))
        (log.warning if failure.retryable else log.error)(
            f"{self._peer}.failed", alert_seq=seq, status=failure.status,
            error=failure.message, retryable=failure.retryable, attempts=attempts)
        return IssueFailed(seq, attempts, failure.status, failure.message, failure.retryable,
                           next_at)

    def _retry_now(self, exc: BaseException) -> bool:
        if not isinstance(exc, Exception):  # rule 5
            return False
        failure = self.classify(exc)
        return (failure.retryable and failure.again_now
                and (failure.wait_hint or 0) <= self._policy.max_inline_wait)

    def _count_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        if exc is not None and self._on_retry is not None:
            self._on_retry(self.classify(exc))

    def _wait(self, state: RetryCallState) -> float:
        waits = self._policy.waits
        base = waits[min(state.attempt_number, len(waits)) - 1] if waits else 0.0
        exc = state.outcome.exception() if state.outcome else None
        hint = self.classify(exc).wait_hint if exc else None
        return max(base, hint or 0.0)


# -- waits a peer asks for ------------------------------------------------------------

def wait_hint(headers: Mapping[str, str] | None, now: float) -> float | None:
    """Seconds the peer asks us to wait (``retry-after``, else GitHub's primary limit's
    ``x-ratelimit-reset`` when ``x-ratelimit-remaining`` is 0), at most
    ``MAX_RETRY_SECONDS``; None when it asks nothing usable (``now``: epoch seconds)."""
    if headers is None:
        return None
    retry_after = headers.get("retry-after")
    if retry_after is not None:
        return _retry_after_seconds(retry_after, now)
    if headers.get("x-ratelimit-remaining") == "0":
        reset = _number(headers.get("x-ratelimit-reset"))
        return None if reset is None else _capped(reset - now)
    return None


def _retry_after_seconds(value: str, now: float) -> float | None:
    """``Retry-After`` as seconds to wait: delay-seconds or an HTTP date (RFC 9110
    §10.2.3); a value that is not a time (``soon``, NaN, negative) is None."""
    seconds = _number(value)
    if seconds is not None:
        return None if seconds < 0 else _capped(seconds)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000": UTC, says RFC 5322
        when = when.replace(tzinfo=UTC)
    return _capped(when.timestamp() - now)


def _number(value: str | None) -> float | None:
    """A header's number, or None when it is not one (NaN is not one)."""
    try:
        number = float(value) if value is not None else math.nan
    except ValueError:
        return None
    return None if math.isnan(number) else number


def _capped(seconds: float) -> float:
    """A wait between now and ``MAX_RETRY_SECONDS`` (a time already past: now)."""
    return min(float(MAX_RETRY_SECONDS), max(0.0, seconds))
