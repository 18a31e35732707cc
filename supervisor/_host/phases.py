"""Startup phases: which declared phase a starting replica is in, told by its output lines.

A phase begins when its pattern matches a line. Phases only move forward: a later phase's line ends every
earlier one, a line of the current or an earlier phase is ignored, and a phase may be skipped. The last
phase ends when the replica is ready, or unfinished when it exits, times out or is stopped first. Output is
read only until then (the watch unsubscribes), and a service without phases has no watch at all, so a
running service pays nothing for this.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence

from .._events import Event, PhaseEnded, PhaseStarted
from .._spec.model import Phase
from .logs import LineStream

__all__ = ["CompiledPhase", "PhaseWatch", "compile_phases"]

CompiledPhase = tuple[str, "re.Pattern[str]"]


def compile_phases(phases: Sequence[Phase]) -> tuple[CompiledPhase, ...]:
    """Once per replica, not per start (the plan checked that every pattern compiles)."""
    return tuple((phase.name, re.compile(phase.pattern, re.MULTILINE)) for phase in phases)


class PhaseWatch:
    """One incarnation's phases, from spawn until ready (or its end); emits ``PhaseStarted``/``PhaseEnded``."""

    def __init__(
        self,
        phases: tuple[CompiledPhase, ...],
        stream: LineStream,
        *,
        replica: str,
        service: str,
        spawned_at: float,
        emit: Callable[[Event], None],
    ) -> None:
        self._phases = phases
        self._replica, self._service = replica, service
        self._spawned_at = spawned_at
        self._emit = emit
        self._current = -1  #: index of the phase under way (or the last one, once closed); -1: none yet
        self._began = spawned_at  #: when the current phase began
        self._ended_at: float | None = None  #: set once the current phase has ended
        self.seconds: dict[str, float] = {}  #: time spent in each phase that has ended, in order
        self._unsubscribe: Callable[[], None] | None = stream.subscribe(self._on_lines)

    @property
    def current(self) -> str | None:
        """The phase under way; None before the first one and once the watch is closed."""
        if self._current < 0 or self._ended_at is not None:
            return None
        return self._phases[self._current][0]

    @property
    def reading(self) -> bool:
        """Still reading output: until ready (or the end), or until the last phase has begun."""
        return self._unsubscribe is not None

    def so_far(self, now: float | None = None) -> dict[str, float]:
        """Seconds in each phase: those that ended, and the current one until ``now``."""
        seconds = dict(self.seconds)
        current = self.current
        if current is not None:
            seconds[current] = (time.monotonic() if now is None else now) - self._began
        return seconds

    def describe(self, now: float) -> str:
        """Where the start is, for an error message: ``in phase 'graphs' for 12.3s``."""
        current = self.current
        if current is not None:
            return f"in phase {current!r} for {now - self._began:.1f}s"
        if self._current < 0:
            return f"before its first phase ({self._phases[0][0]!r})"
        return f"after phase {self._phases[self._current][0]!r}"

    def close(self, now: float, *, finished: bool) -> None:
        """Stop reading output; the current phase ends (``finished``: the replica became ready)."""
        self._stop_reading()
        if self.current is not None:
            self._end(now, finished=finished)

    def _stop_reading(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def _on_lines(self, block: bytes) -> None:
        now = time.monotonic()
        text = block.decode("utf-8", "replace")
        phases = self._phases
        position = 0
        # Each round begins the phase whose line comes first (on one line: the later phase); only phases
        # after the current one are searched, so this costs one search per phase still ahead. (Separate
        # searches, not one alternation: CPython finds a pattern's literal prefix fast, an alternation's not.)
        while self._current + 1 < len(phases):
            found, found_at, found_end = -1, len(text), 0
            for index in range(self._current + 1, len(phases)):
                match = phases[index][1].search(text, position)
                if match is not None and match.start() <= found_at:
                    found, found_at, found_end = index, match.start(), match.end()
            if found < 0:
                return
            self._begin(found, now)
            line_end = text.find("\n", found_end)
            position = len(text) if line_end < 0 else line_end + 1

    def _begin(self, index: int, now: float) -> None:
        if self.current is not None:
            self._end(now, finished=True)
        self._current, self._began, self._ended_at = index, now, None
        name = self._phases[index][0]
        if index == len(self._phases) - 1:  # nothing left to look for: the rest of the start costs nothing
            self._stop_reading()
        self._emit(
            PhaseStarted(replica=self._replica, service=self._service, phase=name, seconds=now - self._spawned_at)
        )

    def _end(self, now: float, *, finished: bool) -> None:
        name = self._phases[self._current][0]
        seconds = max(now - self._began, 0.0)
        self.seconds[name] = seconds
        self._ended_at = now
        self._emit(
            PhaseEnded(replica=self._replica, service=self._service, phase=name, seconds=seconds, finished=finished)
        )
