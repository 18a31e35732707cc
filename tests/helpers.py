"""Helpers shared by the tests: the interpreter, the test programs, waiting with a deadline."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import psutil

from supervisor import Event, RunningTopology

PROGRAMS = Path(__file__).parent / "programs"
PYTHON = sys.executable


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.01) -> None:
    """Poll ``predicate`` until true; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {predicate}")
        time.sleep(interval)


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


SLEEPER = [PYTHON, "-c", "import time; print('service ready', flush=True); time.sleep(60)"]


async def wait_for(group: RunningTopology, predicate: Callable[[list[Event]], bool], timeout: float = 8) -> None:
    """Wait until ``predicate(group.event_history)`` holds, woken by each event; fail at the deadline."""
    with anyio.fail_after(timeout):
        if predicate(group.event_history):
            return
        async for _ in group.events():
            if predicate(group.event_history):
                return
