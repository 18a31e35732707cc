"""Restart decisions: a pure table of cases, and backoff that stays bounded however long a crash loop lasts."""

from __future__ import annotations

import math
import random
import re

import pytest

import supervisor as sv
from supervisor._runtime.policy import Decision, RestartBudget, backoff_delay, compile_fatal, decide
from supervisor._spec.fatal import BUILTIN_FATAL_PATTERNS


def policy(restart: str = "always", *, backoff: sv.Backoff | None = None, **kwargs: object) -> sv.RestartPolicy:
    return sv.RestartPolicy(policy=restart, backoff=backoff or sv.Backoff(), **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("restart", "exit_code", "fatal", "action"),
    [
        ("no", 0, None, "complete"),
        ("no", 1, None, "fail"),
        ("no", None, None, "fail"),  # never ran to an exit: a readiness timeout or liveness kill
        ("on-failure", 0, None, "complete"),
        ("on-failure", 3, None, "restart"),
        ("on-failure", None, None, "restart"),
        ("always", 0, None, "restart"),
        ("always", 1, None, "restart"),
        ("always", 1, "CUDA out of memory", "fail"),  # fatal output: a restart cannot help
        ("on-failure", 1, "NCCL error", "fail"),
    ],
)
def test_decide_table(restart: str, exit_code: int | None, fatal: str | None, action: str) -> None:
    rules = policy(restart)
    decision = decide(
        rules, RestartBudget(rules), exit_code=exit_code, now=0.0, uptime_seconds=1.0, fatal_line=fatal, why="exited"
    )
    assert decision.action == action
    if fatal:
        assert fatal in decision.reason


def test_gives_up_after_max_restarts_within_the_window() -> None:
    rules = policy(max_restarts=3, window_seconds=60)
    budget = RestartBudget(rules)
    actions = [
        decide(rules, budget, exit_code=1, now=float(i), uptime_seconds=0.1, why="exited").action for i in range(5)
    ]
    assert actions == ["restart", "restart", "restart", "fail", "fail"]
    later = decide(rules, budget, exit_code=1, now=200.0, uptime_seconds=0.1, why="exited")
    assert later.action == "restart"  # the window slid past the old restarts


def test_a_crash_loop_for_hours_keeps_a_bounded_backoff() -> None:
    """``factor ** attempt`` overflowed at attempt 1,025 and took the whole run down."""
    rules = policy(max_restarts=1_000_000, window_seconds=1, backoff=sv.Backoff(0.5, 30, 2.0, 0.1))
    budget = RestartBudget(rules)
    rng = random.Random(7)
    delays: list[float] = []
    for i in range(5_000):  # about a day of 15-second restarts, with the window long past each time
        decision = decide(rules, budget, exit_code=1, now=i * 15.0, uptime_seconds=0.5, why="exited")
        assert decision.restart
        delays.append(backoff_delay(rules, decision.attempt, rng))
    assert budget.attempt == 5_000
    assert all(math.isfinite(d) and 0 <= d <= 33.0 for d in delays)
    assert delays[-1] >= 27.0  # at the cap, give or take the jitter


@pytest.mark.parametrize(
    ("initial", "factor", "maximum", "attempt", "expected"),
    [
        (0.5, 2.0, 30.0, 1, 0.5),
        (0.5, 2.0, 30.0, 3, 2.0),
        (0.5, 2.0, 30.0, 10**9, 30.0),
        (0.5, 1e308, 30.0, 2, 30.0),
        (1.0, 1.0, 30.0, 10**9, 1.0),
        (0.0, 2.0, 30.0, 10**6, 0.0),
        (60.0, 2.0, 30.0, 1, 30.0),  # initial above the cap: the cap wins
        (1e-310, 2.0, 10.0, 3000, 10.0),  # cap / initial overflows to inf: compared in log space
        (1e-310, 2.0, 1e308, 3000, 1e308),
    ],
)
def test_backoff_without_jitter(initial: float, factor: float, maximum: float, attempt: int, expected: float) -> None:
    rules = policy(backoff=sv.Backoff(initial, maximum, factor, 0.0))
    assert backoff_delay(rules, attempt) == pytest.approx(expected)


def test_decision_action_is_one_of_three() -> None:
    assert Decision("restart").restart and not Decision("fail").restart


def test_fatal_patterns_keep_their_own_inline_flags() -> None:
    """A pattern valid alone (``(?i)``) stays valid beside others: joined into one regex it was refused."""
    fatal = compile_fatal(("(?i)cuda oom", "boom"))
    assert fatal is not None
    match = fatal.search("step 1\nRuntimeError: CUDA OOM on rank 0\n")
    assert match is not None and match.group() == "CUDA OOM"


def test_fatal_patterns_find_what_one_joined_regex_finds() -> None:
    """The leftmost match of any pattern, the earlier pattern's at a tie, for the built-ins split into their
    alternatives as for the user's patterns: the same match as ``(?:a)|(?:b)|...`` at every sample."""
    patterns = ("boom", "boo", "out of memory", *BUILTIN_FATAL_PATTERNS.values())
    joined = re.compile("|".join(f"(?:{pattern})" for pattern in patterns), re.MULTILINE)
    fatal = compile_fatal(patterns)
    assert fatal is not None and len(fatal.regexes) > len(patterns)  # the built-ins are split
    samples = [
        "all fine\nstill fine\n",
        "boom\n",  # "boom" and "boo" both match at 0: the earlier pattern's
        "x boo then boom\n",
        "OSError: [Errno 98] address already in use\nCUDA out of memory\n",
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB\n",
        "No such file or directory: '/models/x/tokenizer.json'\nNCCL error in: x\n",
        "ncclSystemError then EADDRINUSE then Repository Not Found\n",
    ]
    for text in samples:
        expected, got = joined.search(text), fatal.search(text)
        assert (got and (got.start(), got.end())) == (expected and (expected.start(), expected.end())), text
    assert compile_fatal(()) is None
