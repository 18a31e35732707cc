"""A sweep on Slurm (``--slurm``, or an arm's file has ``cluster: {slurm: ...}``): every trial runs in one
allocation, taken once before the first trial and released after the last (or on Ctrl-C), never queued
again per configuration.

Inside an allocation (the sweep runs under ``sbatch`` or ``salloc``) the trials use that one, and the sweep
leaves it to whoever made it. Otherwise ``salloc --no-shell`` takes one named ``topovisor-<sweep id>``, with
the first arm's ``cluster.slurm`` settings and as many nodes as the largest arm needs. Each trial is planned
on its nodes and launched with a borrowed view of it (``SlurmAllocation.borrowed``: the trial's teardown
leaves it), so a trial is placed as a run inside that allocation would be.

A sweep that dies without releasing it (``kill -9``, an OOM kill) leaves no allocation behind: a watchdog
of the sweep's own (the run watchdog's program, in ``<sweep>/allocation/``, told only the job) cancels it,
between trials as well as during one. Not covered: that watchdog killed together with the sweep; the job
then lasts until its ``time`` limit, or ``scancel --name topovisor-<sweep id>``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import attrs

if TYPE_CHECKING:
    from .._host.slurm_alloc import SlurmAllocation
    from .._host.watchdog import Watchdog
    from .._plan.plan import Plan
    from .._spec.model import SlurmCluster

__all__ = ["ALLOCATION_DIR", "sweep_allocation", "sweep_cluster"]

ALLOCATION_DIR = "allocation"  #: in the sweep's folder: the allocation watchdog's log (and its event, if it acted)


def sweep_cluster(plans: Sequence[Plan]) -> SlurmCluster | None:
    """The allocation a sweep on Slurm asks for: the first arm's ``cluster.slurm`` with the most nodes any
    arm is planned on (each trial is placed on all of them, as a run in that allocation would be); None
    for a sweep on this machine."""
    specs = [p.cluster.slurm for p in plans if p.cluster is not None and p.cluster.slurm is not None]
    if not specs:
        return None
    return attrs.evolve(specs[0], nodes=max(spec.nodes for spec in specs))


@contextlib.asynccontextmanager
async def sweep_allocation(
    spec: SlurmCluster | None, sweep_id: str, folder: Path
) -> AsyncIterator[SlurmAllocation | None]:
    """The allocation the sweep's trials borrow (None: no Slurm): the caller's own, left as it is, or one
    taken now and cancelled on the way out, however the sweep ends; its watchdog cancels it if we die."""
    if spec is None:
        yield None
        return
    from .._host.slurm_alloc import SlurmAllocation

    current = SlurmAllocation.current()
    if current is not None:
        yield current
        return
    taken = await anyio.to_thread.run_sync(SlurmAllocation.acquire, spec, f"topovisor-{sweep_id}")
    watchdog = None
    try:
        watchdog = _watchdog_of(taken, sweep_id, folder / ALLOCATION_DIR)
        yield taken.borrowed()
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(taken.release)
            if watchdog is not None:  # after the release: no moment uncovered
                await anyio.to_thread.run_sync(lambda: watchdog.close(clean=True))


def _watchdog_of(allocation: SlurmAllocation, sweep_id: str, records: Path) -> Watchdog:
    """A watchdog told only the job: EOF on its pipe (our death, even by SIGKILL) makes it ``scancel``
    it; nothing of a run carries the sweep's id, so its sweep of processes finds none."""
    from .._host.watchdog import Watchdog

    watchdog = Watchdog.spawn(sweep_id, records)
    watchdog.cancel_job_on_death(allocation.job_id, allocation.name)
    return watchdog
