"""Restart decisions, as pure functions over a small config: should this exit restart, after how long,
and has the service used up its restarts?"""

from __future__ import annotations

import math
import random
import re
from collections import deque
from typing import Literal

import attrs

from .._spec.fatal import BUILTIN_FATAL_ALTERNATIVES
from .._spec.model import RestartPolicy

__all__ = ["Action", "Decision", "RestartBudget", "backoff_delay", "decide"]


def backoff_delay(policy: RestartPolicy, attempt: int, rng: random.Random | None = None) -> float:
    """Delay before restart number ``attempt`` (1-based): initial * factor^(attempt-1), capped, +-jitter."""
    backoff = policy.backoff
    delay = _capped_growth(backoff.initial_seconds, backoff.factor, max(attempt - 1, 0), backoff.max_seconds)
    if backoff.jitter:
        delay *= 1 + (rng or random).uniform(-backoff.jitter, backoff.jitter)
    return max(delay, 0.0)


def _capped_growth(initial: float, factor: float, exponent: int, cap: float) -> float:
    """``min(initial * factor**exponent, cap)`` without ever computing an unbounded power: a worker that
    crash-loops for hours reaches attempt 1,024 and more, where ``2.0 ** 1024`` overflows."""
    if initial <= 0 or cap <= 0:
        return max(min(initial, cap), 0.0)
    if initial >= cap:
        return cap
    if factor <= 1:
        return initial * factor**exponent if factor > 0 else (initial if exponent == 0 else 0.0)
    growth_log = exponent * math.log(factor)  # compared in log space: no overflow, whatever the inputs
    if math.log(initial) + growth_log >= math.log(cap):
        return cap
    if growth_log < 700:  # factor**exponent is a finite float: exact figures (0.05 * 4**0 is 0.05)
        return min(initial * factor**exponent, cap)
    return min(math.exp(math.log(initial) + growth_log), cap)


Action = Literal["restart", "complete", "fail"]


@attrs.frozen
class Decision:
    """``restart`` with ``delay_seconds``, or ``complete`` (a clean, expected end), or ``fail`` (``reason``)."""

    action: Action
    reason: str = ""
    delay_seconds: float = 0.0
    attempt: int = 0

    @property
    def restart(self) -> bool:
        return self.action == "restart"


class RestartBudget:
    """Counts restarts in the sliding ``window``; the backoff attempt resets after a stable uptime."""

    def __init__(self, policy: RestartPolicy) -> None:
        self.policy = policy
        self.restart_times: deque[float] = deque()
        self.attempt = 0
        self.total = 0

    def note_uptime(self, uptime_seconds: float) -> None:
        if uptime_seconds >= self.policy.reset_after_seconds:
            self.attempt = 0

    def exhausted(self, now: float) -> bool:
        while self.restart_times and now - self.restart_times[0] > self.policy.window_seconds:
            self.restart_times.popleft()
        return len(self.restart_times) >= self.policy.max_restarts

    def take(self, now: float) -> int:
        self.restart_times.append(now)
        self.attempt += 1
        self.total += 1
        return self.attempt


def decide(
    policy: RestartPolicy,
    budget: RestartBudget,
    *,
    exit_code: int | None,
    now: float,
    uptime_seconds: float,
    fatal_line: str | None = None,
    why: str,
) -> Decision:
    """What to do after an incarnation ended. ``exit_code`` is None when it never ran to an exit
    (a readiness timeout or a liveness kill); ``why`` describes the end for messages."""
    budget.note_uptime(uptime_seconds)
    if fatal_line is not None:
        return Decision("fail", f"{why}; not retried, the output says: {fatal_line.strip()!r}")
    success = exit_code is not None and exit_code in policy.success_codes
    if policy.policy == "no" or (policy.policy == "on-failure" and success):
        if success:
            return Decision("complete")
        return Decision("fail", f"{why} (restart policy: {policy.policy})")
    if budget.exhausted(now):
        return Decision(
            "fail",
            f"{why}; gave up after {len(budget.restart_times)} restarts within {policy.window_seconds:g}s "
            f"(max_restarts: {policy.max_restarts})",
        )
    attempt = budget.take(now)
    return Decision("restart", why, backoff_delay(policy, attempt), attempt)


@attrs.frozen
class FatalPatterns:
    """A service's fatal patterns, each compiled alone. One regex joined from them would refuse a pattern
    with its own inline flags (``(?i)cuda oom``: "global flags not at the start") and try its alternation
    at every position of the 64 KiB tail (about 3 ms at each exit, against 0.3 for the built-ins alone)."""

    regexes: tuple[re.Pattern[str], ...]

    def search(self, text: str) -> re.Match[str] | None:
        """The leftmost match of any pattern, the earlier pattern's at a tie: what ``a|b|...`` finds."""
        best: re.Match[str] | None = None
        for regex in self.regexes:
            match = regex.search(text)
            if match is not None and (best is None or match.start() < best.start()):
                best = match
        return best


#: a built-in pattern as the plan lists it -> its alternatives, compiled one by one
_BUILTIN_SPLIT = {"|".join(alternatives): alternatives for alternatives in BUILTIN_FATAL_ALTERNATIVES.values()}


def compile_fatal(patterns: tuple[str, ...]) -> FatalPatterns | None:
    """A plan's fatal patterns (the user's and the built-ins the plan added), matched line by line."""
    parts = [part for pattern in patterns for part in _BUILTIN_SPLIT.get(pattern, (pattern,))]
    if not parts:
        return None
    return FatalPatterns(tuple(re.compile(part, re.MULTILINE) for part in parts))
