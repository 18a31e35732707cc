"""The stop signals, and holding them until the event loop takes over: a module with no dependency, so
that ``supervisor run`` can hold them from its first moment (before the runtime is even imported)."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

__all__ = ["STOP_SIGNALS", "hold_signals"]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def hold_signals() -> Iterator[list[int]]:
    """Record SIGINT/SIGTERM/SIGHUP from now until ``supervise`` takes them over (pass the list as its
    ``early_signals``). Without it, a Ctrl-C in the first moments of ``anyio.run`` goes to asyncio's own
    handler, which cancels the main task natively, and that cancellation could be absorbed: a lost signal
    and a run that goes on. Main thread only; the previous handlers come back on exit."""
    early: list[int] = []
    previous = {signum: signal.signal(signum, lambda number, _frame: early.append(number)) for signum in STOP_SIGNALS}
    try:
        yield early
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
