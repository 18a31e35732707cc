"""The order trials run in: arms interleaved, so that a drift over time (thermal, a neighbour's load) falls
on every arm alike and no arm runs all its trials first."""

from __future__ import annotations

import random
import string

from .._errors import ConfigError

__all__ = ["ORDERS", "trial_order"]

ORDERS = ("ABBA", "ABAB", "random")  #: the named orders; any other string of arm letters is a pattern


def trial_order(arms: int, trials: int, order: str, seed: int | None = None) -> list[int]:
    """Arm indexes, one per trial, each arm ``trials`` times.

    ``ABBA``: every arm forward then backward (A B C C B A for three), repeated; ``ABAB``: forward each
    time; ``random``: shuffled with ``seed``; any other string of letters (``AABB``) is a pattern of arms
    (A the first) repeated, an arm that has run its trials skipped. ``ConfigError`` for a letter that names
    no arm, or a pattern that leaves an arm out."""
    if trials < 1:
        raise ConfigError(f"--trials {trials}: expected 1 or more")
    forward = list(range(arms))
    if order == "ABBA":
        return [i for r in range(trials) for i in (forward if r % 2 == 0 else forward[::-1])]
    if order == "ABAB":
        return forward * trials
    if order == "random":
        shuffled = forward * trials
        random.Random(seed).shuffle(shuffled)
        return shuffled
    return _pattern(arms, trials, order)


def _pattern(arms: int, trials: int, order: str) -> list[int]:
    letters = string.ascii_uppercase[:arms]
    named = ", ".join(letters)
    if not order or any(c not in string.ascii_uppercase for c in order.upper()):
        raise ConfigError(f"--order {order!r}: expected ABBA, ABAB, random, or a pattern of arm letters ({named})")
    problems = [
        f"--order {order}: names arm {c}, and there are {arms} arms ({named})"
        for c in dict.fromkeys(order.upper())
        if c not in letters
    ]
    problems += [f"--order {order}: arm {c} never runs" for c in letters if c not in order.upper()]
    if problems:
        raise ConfigError(problems)
    pattern = [letters.index(c) for c in order.upper()]
    counts = [0] * arms
    chosen: list[int] = []
    while len(chosen) < arms * trials:  # every arm is in the pattern: each pass adds at least one
        for index in pattern:
            if counts[index] < trials:
                counts[index] += 1
                chosen.append(index)
    return chosen
