"""What the live operations (scale, rolling restart, dependents following a change) share: the group as
they see it, the check that the run is up, and the wait for started replicas to settle."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import anyio

from .._errors import NotRunning
from .replica import Replica
from .run_phase import RunPhase
from .state import RunState

if TYPE_CHECKING:
    pass

__all__ = ["run_operation", "wait_settled"]


def run_operation(run: RunState, what: str) -> None:
    """Refuse an operation on a run that is not up (starting, or being torn down)."""
    if run.stopping or run.phase is not RunPhase.RUNNING:
        raise NotRunning(f"run {run.run_id} is {run.phase}: cannot {what} now")


async def wait_settled(run: RunState, replicas: Sequence[Replica]) -> None:
    """Until each of ``replicas`` is ready once, or given up on; ``NotRunning`` as soon as the run's
    teardown begins (it stops them without settling them: the operation is cut short, and says so)."""
    torn_down = False
    async with anyio.create_task_group() as tg:

        async def settle() -> None:
            for replica in replicas:
                await replica.settled.wait()
            tg.cancel_scope.cancel()

        async def watch() -> None:
            nonlocal torn_down
            await run.teardown_began.wait()
            torn_down = True
            tg.cancel_scope.cancel()

        tg.start_soon(settle)
        tg.start_soon(watch)
    if torn_down and not all(r.settled.is_set() for r in replicas):
        waiting = [r.name for r in replicas if not r.settled.is_set()]
        raise NotRunning(f"cut short: run {run.run_id} is being stopped, before {', '.join(waiting)} were ready")
