"""Start conditions of each service (``started``, ``ready``, ``completed``): what ``depends_on`` waits for.

They are resettable: a strategy restart (``rest_for_one``, ``one_for_all``) makes a service not ready
again, redoes its start in progress, and every waiter then waits for the new condition instead of the old
one, which will never be set.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Literal

import anyio

__all__ = ["CONDITIONS", "Condition", "StartConditions"]

Condition = Literal["started", "ready", "completed"]
CONDITIONS: tuple[Condition, ...] = ("started", "ready", "completed")


class StartConditions:
    """One event per service and condition, plus the cancel scopes of starts in progress."""

    def __init__(self, services: Iterable[str]) -> None:
        names = list(services)
        self._events = {name: self._fresh() for name in names}
        self._starts: dict[str, set[anyio.CancelScope]] = {name: set() for name in names}
        self._waits: set[anyio.CancelScope] = set()

    @staticmethod
    def _fresh() -> dict[Condition, anyio.Event]:
        return {c: anyio.Event() for c in CONDITIONS}

    def set(self, service: str, *conditions: Condition) -> None:
        """Mark ``conditions`` (all of them when none is named) as reached."""
        for condition in conditions or CONDITIONS:
            self._events[service][condition].set()

    def is_set(self, service: str, condition: Condition) -> bool:
        return self._events[service][condition].is_set()

    async def wait(self, service: str, condition: str) -> None:
        """Until ``service`` reached ``condition``, following resets."""
        while True:
            event = self._events[service][condition]  # type: ignore[index]
            with anyio.CancelScope() as scope:
                self._waits.add(scope)
                try:
                    await event.wait()
                    return
                finally:
                    self._waits.discard(scope)

    @contextlib.contextmanager
    def starting(self, service: str) -> Iterator[anyio.CancelScope]:
        """Scope of one start of ``service``: a reset cancels it, so that start is redone from scratch."""
        with anyio.CancelScope() as scope:
            self._starts[service].add(scope)
            try:
                yield scope
            finally:
                self._starts[service].discard(scope)

    def reset(self, services: Iterable[str]) -> None:
        """``services`` must reach their conditions again; starts in progress are cancelled."""
        for name in services:
            for scope in list(self._starts[name]):
                scope.cancel()
            self._events[name] = self._fresh()
        for scope in list(self._waits):
            scope.cancel()
