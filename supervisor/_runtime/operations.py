"""What the live operations (scale, rolling restart, dependents following a change) share: the group as
they see it, the check that the run is up, and the wait for started replicas to settle."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import anyio

from .._errors import NotRunning
from .._host.gpu_inventory import GpuInventory
from .._plan.ports import PortAllocator
from .group_start import StartingGroup
from .replica import Replica, ServiceHandle
from .run_phase import RunPhase

if TYPE_CHECKING:
    from .._host.slurm_alloc import SlurmAllocation

__all__ = ["LiveGroup", "run_operation", "wait_settled"]


class LiveGroup(StartingGroup, Protocol):
    """What a live operation reads and drives on the running group (``_runtime.group.RunningTopology``)."""

    gpus: GpuInventory | None
    allocation: SlurmAllocation | None  #: the Slurm job placed replicas run in
    logs_dir: Path

    @property
    def phase(self) -> RunPhase: ...

    _operation_lock: anyio.Lock
    _ports: PortAllocator | None
    _retired: list[Replica]

    def service(self, name: str) -> ServiceHandle: ...

    async def wait_torn_down(self) -> None: ...

    _replicas: dict[str, Replica]


def run_operation(group: LiveGroup, what: str) -> None:
    """Refuse an operation on a run that is not up (starting, or being torn down)."""
    if group._stopping or group.phase is not RunPhase.RUNNING:
        raise NotRunning(f"run {group.run_id} is {group.phase}: cannot {what} now")


async def wait_settled(group: LiveGroup, replicas: Sequence[Replica]) -> None:
    """Until each of ``replicas`` is ready once, or given up on; ``NotRunning`` if the run is torn
    down meanwhile (a teardown stops them without settling them)."""
    torn_down = False
    async with anyio.create_task_group() as tg:

        async def settle() -> None:
            for replica in replicas:
                await replica.settled.wait()
            tg.cancel_scope.cancel()

        async def watch() -> None:
            nonlocal torn_down
            await group.wait_torn_down()
            torn_down = True
            tg.cancel_scope.cancel()

        tg.start_soon(settle)
        tg.start_soon(watch)
    if torn_down and not all(r.settled.is_set() for r in replicas):
        raise NotRunning(f"run {group.run_id} was torn down before {', '.join(r.name for r in replicas)} were ready")
