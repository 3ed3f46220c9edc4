"""Trusted time: the wall clock, checked against a monotonic clock.

Everything in the service that reads the time reads it here: the log writer's
``at``, and through it every decision (cooldowns, the storm hour and the event-id
window compare record times), and the retry times of the consumer and the sinks.
One bad wall reading must not become a record time that suppresses alerts for a
month, so the wall clock is believed only when it agrees with elapsed time.

Rules:
1. Readings never go backwards, and between two readings they advance by the
   monotonic time that passed, unless the wall clock agrees (rule 2) or a step is
   adopted (rule 3).
2. P, the projection, is the last reading plus the monotonic time since it. A wall
   reading W within ``TOLERANCE`` (1 s) of P is followed, never below the last
   reading: NTP slews far less than that between two readings.
3. A step forward (W more than ``TOLERANCE`` ahead of P) is not believed at once:
   readings stay P, ``clock.stepped`` is logged at error level once per step with
   its size, and ``obsv_clock_steps_total{direction="forward"}`` counts it. Only if
   the wall clock is still ahead by the same amount (within ``TOLERANCE``) at a
   reading ``CONFIRM_SECONDS`` (60 s) of monotonic time later, with no reading in
   between that disagreed, is the new time adopted (``clock.adopted``, error level:
   record times jump). A glitch that comes back sooner never reaches the log.
4. A step back (W more than ``TOLERANCE`` behind P) is never followed: readings stay
   P, so record times stay monotonic and elapsed times stay real; logged once per
   step (``clock.stepped``, direction ``back``) and counted. Readings then run ahead
   of the wall clock by the size of the step for as long as it lasts, across
   restarts too (the log's last ``at`` is a floor, rule 5);
   ``obsv_clock_offset_seconds`` (wall minus trusted) shows by how much.
5. At start nothing links the wall clock to the log's last ``at`` (the process was
   down for an unknown time), so the first reading is W, or that ``at`` when W is
   behind it (a step back, rule 4).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Literal, Protocol

import structlog

if TYPE_CHECKING:  # the offline commands import the log writer, not prometheus
    from obsv.metrics import Metrics

Clock = Callable[[], datetime]
Monotonic = Callable[[], float]
Direction = Literal["forward", "back"]

TOLERANCE = 1.0
CONFIRM_SECONDS = 60.0

log = structlog.get_logger("obsv.clock")


def utc_now() -> datetime:
    """The wall clock, in UTC."""
    return datetime.now(UTC)


class PairedClock(Protocol):
    """A wall clock that brings its own monotonic clock (the tests' ``FakeClock``)."""

    def __call__(self) -> datetime:
        """The wall time."""

    def monotonic(self) -> float:
        """Seconds of elapsed time, from any origin."""


def monotonic_of(wall: Clock) -> Monotonic:
    """The elapsed-time source that belongs with ``wall``: its own, else the system's."""
    paired = getattr(wall, "monotonic", None)
    return paired if callable(paired) else time.monotonic


@dataclass(slots=True)
class _Step:
    """A disagreement of the wall clock being watched (rule 3 or 4)."""

    direction: Direction
    offset: float  # wall minus projection, in seconds
    since: float  # monotonic time it was first seen


class TrustedClock:
    """The one clock of the service: see the rules above."""

    def __init__(self, wall: Clock = utc_now, monotonic: Monotonic | None = None, *,
                 metrics: Metrics | None = None, tolerance: float = TOLERANCE,
                 confirm_seconds: float = CONFIRM_SECONDS) -> None:
        self._wall = wall
        self._monotonic = monotonic or monotonic_of(wall)
        self._metrics = metrics
        self._tolerance = tolerance
        self._confirm = confirm_seconds
        self._last: datetime | None = None
        self._last_mono = 0.0
        self._floor: datetime | None = None
        self._step: _Step | None = None
        self._offset_shown: float | None = None  # what obsv_clock_offset_seconds says

    def not_before(self, at: datetime) -> None:
        """No reading is earlier than ``at`` (the last record time of the log)."""
        if self._floor is None or at > self._floor:
            self._floor = at

    def __call__(self) -> datetime:
        """The trusted time now."""
        wall, mono = self._wall(), self._monotonic()
        if self._last is None:
            reading = self._first(wall, mono)
        else:
            projected = self._last + timedelta(seconds=mono - self._last_mono)
            reading = self._judge(wall, projected, mono)
            reading = max(reading, self._last)
        if self._floor is not None and reading < self._floor:
            reading = self._floor
        self._last, self._last_mono = reading, mono
        if self._metrics is not None:
            # Read on every batch and redelivery: the gauge (a lock) only when it moves.
            offset = 0.0 if reading is wall else (wall - reading).total_seconds()
            if offset != self._offset_shown:
                self._offset_shown = offset
                self._metrics.clock_offset.set(offset)
        return reading

    def _first(self, wall: datetime, mono: float) -> datetime:
        """Rule 5: the log's last time is the only reference."""
        if self._floor is not None and (self._floor - wall).total_seconds() > self._tolerance:
            self._watch("back", (wall - self._floor).total_seconds(), mono, self._floor, wall)
        return wall

    def _judge(self, wall: datetime, projected: datetime, mono: float) -> datetime:
        offset = (wall - projected).total_seconds()
        if abs(offset) <= self._tolerance:
            self._agreed(wall)
            return wall
        direction: Direction = "forward" if offset > 0 else "back"
        step = self._step
        if step is None or step.direction != direction or (
                abs(offset - step.offset) > self._tolerance):
            self._watch(direction, offset, mono, projected, wall)
            return projected
        if direction == "forward" and mono - step.since >= self._confirm:
            self._step = None
            log.error("clock.adopted", seconds=round(offset, 3), wall=wall.isoformat(),
                      was=projected.isoformat(), confirmed_after=round(mono - step.since, 3))
            return wall
        return projected

    def _watch(self, direction: Direction, offset: float, mono: float,
               trusted: datetime, wall: datetime) -> None:
        """A new step: log it loudly, once, and count it."""
        self._step = _Step(direction, offset, mono)
        if self._metrics is not None:
            self._metrics.clock_steps.labels(direction).inc()
        log.error("clock.stepped", direction=direction, seconds=round(offset, 3),
                  wall=wall.isoformat(), trusted=trusted.isoformat(),
                  rule=("record times keep to elapsed time; the new wall time is adopted "
                        f"if it holds for {self._confirm:g} s") if direction == "forward"
                  else "record times keep to elapsed time and never go back")

    def _agreed(self, wall: datetime) -> None:
        """The wall clock agrees with elapsed time again: a watched step is over."""
        if self._step is not None:
            log.warning("clock.step_over", direction=self._step.direction,
                        seconds=round(self._step.offset, 3), wall=wall.isoformat())
            self._step = None
