"""Teardown: which service stops before which, stopping a set of replicas in that order, the final sweep.

``stop_prerequisites`` is the one definition of the stop order (a service stops once every service that
depends on it has stopped); ``stop_waves`` gives the same order in waves, for a run known only from its
record (``reclaim``). The running group stops each service as soon as its own dependents are gone,
rather than wave by wave.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import anyio
import psutil

from .process import alive, signal_processes

__all__ = ["SWEEP_SECONDS", "stop_in_order", "stop_prerequisites", "stop_waves", "sweep"]

T = TypeVar("T")

SWEEP_SECONDS = 30.0  #: SIGKILL rounds until nothing of the run is left; only a process stuck in the kernel lasts


def stop_prerequisites(services: Sequence[str], depends_on: Callable[[str], Iterable[str]]) -> dict[str, list[str]]:
    """For each of ``services``: those among them that must have stopped first (its dependents)."""
    wanted = set(services)
    before: dict[str, list[str]] = {name: [] for name in services}
    for name in services:
        for dependency in depends_on(name):
            if dependency in wanted and dependency != name and name not in before[dependency]:
                before[dependency].append(name)
    return before


def stop_waves(services: Sequence[str], depends_on: Callable[[str], Iterable[str]]) -> list[list[str]]:
    """The same order in waves: each wave only after the previous ones stopped. A cycle (a hand-edited
    record) stops together what is left, instead of never."""
    before = stop_prerequisites(services, depends_on)
    remaining = list(services)
    waves: list[list[str]] = []
    while remaining:
        wave = [s for s in reversed(remaining) if not any(d in remaining for d in before[s])]
        wave = wave or list(reversed(remaining))
        waves.append(wave)
        remaining = [s for s in remaining if s not in wave]
    return waves


async def stop_in_order(
    by_service: Mapping[str, Sequence[T]],
    before: Mapping[str, Sequence[str]],
    stop: Callable[[T], Coroutine[Any, Any, None]],
) -> None:
    """Stop every item of ``by_service`` concurrently within a service; a service starts stopping once
    the services listed in ``before`` for it have stopped (``stop_prerequisites``, acyclic)."""
    stopped = {name: anyio.Event() for name in by_service}

    async def stop_service(name: str) -> None:
        for first in before.get(name, ()):
            if first in stopped:
                await stopped[first].wait()
        async with anyio.create_task_group() as tg:
            for item in by_service[name]:
                tg.start_soon(stop, item)
        stopped[name].set()

    async with anyio.create_task_group() as tg:
        for name in reversed(list(by_service)):
            tg.start_soon(stop_service, name)


async def sweep(find: Callable[[], Awaitable[list[psutil.Process]]], *, seconds: float = SWEEP_SECONDS) -> list[int]:
    """SIGKILL whatever ``find`` still reports, until nothing is left or ``seconds`` passed; returns the
    pids that survived (should always be none)."""
    deadline = time.monotonic() + seconds
    left: list[psutil.Process] = []
    while time.monotonic() < deadline:
        left = [p for p in await find() if alive(p)]
        if not left:
            break
        signal_processes(left, signal.SIGKILL)
        with anyio.move_on_after(1.0):
            await wait_gone(left)
    return [p.pid for p in left if alive(p)]


async def wait_gone(processes: list[psutil.Process]) -> None:
    """Until none of ``processes`` is alive (zombies count as gone)."""
    delay = 0.001
    while any(alive(p) for p in processes):
        await anyio.sleep(delay)
        delay = min(delay * 2, 0.02)
