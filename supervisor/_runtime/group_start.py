"""Starting the running group: the watchdog first, then each service once its dependencies hold, each
replica spawned and handed to its supervision loop; and a watchdog that dies is replaced.

Functions over the running group (``_runtime.group.RunningTopology``), which keeps the state and calls them;
what happens once a replica runs is ``_runtime.supervision``'s.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

import anyio
import anyio.abc

from .._host.watchdog import Watchdog
from .._records.record import register_run
from . import supervision as _supervision
from .endpoints import write_endpoints
from .resources import sample_resources
from .run_phase import RunPhase
from .state import RunState

if TYPE_CHECKING:
    pass

__all__ = ["start"]


async def start(run: RunState, tg: anyio.abc.TaskGroup) -> None:
    """Start every service (each once its dependencies hold); returns once all are ready."""
    run.tg = tg
    run.enter_phase(RunPhase.STARTING)
    # Before the first spawn: if we die from here on, even by SIGKILL, the watchdog sweeps the run.
    head_started = run.head_start.take_watchdog() if run.head_start is not None else None
    run.watchdog = head_started or Watchdog.spawn(run.run_id, run.run_dir)
    if head_started is None:
        run.watchdog.contain(run.containment)
    _tell_watchdog_allocation(run)
    run.write_manifest()
    write_endpoints(run.plan)
    _register(run)
    tg.start_soon(_keep_watchdog, run, name="keep watchdog")
    tg.start_soon(sample_resources, run.resource_sampler, lambda: run.replicas, run.cgroup_of, name="resources")
    for service in run.plan.services:
        tg.start_soon(_supervision.start_service, run, service.name, None, name=f"start {service.name}")
    for service in run.plan.services:  # a strategy restart while starting resets and re-runs starts
        await run.conditions.wait(service.name, "ready")
    run.ready_at = time.monotonic()
    run.enter_phase(RunPhase.RUNNING)

    async def write_manifest_soon() -> None:
        run.write_manifest()

    tg.start_soon(write_manifest_soon)  # off the path to "ready": the caller gets control first


async def _keep_watchdog(run: RunState) -> None:
    """A watchdog that dies (killed by someone) is replaced at once and told every live leader again,
    so the run stays covered against our own death."""
    while not run.stopping:
        watchdog = run.watchdog
        assert watchdog is not None
        await watchdog.wait_exit()
        if run.stopping or watchdog is not run.watchdog:
            return
        run.watchdog = Watchdog.spawn(run.run_id, run.run_dir)
        run.watchdog.contain(run.containment)
        _tell_watchdog_allocation(run)
        _register(run)
        for replica in run.replicas:
            if replica.incarnation is not None and not replica.incarnation.exited.is_set():
                run.track(replica, replica.incarnation)


def _register(run: RunState) -> None:
    assert run.watchdog is not None
    register_run(
        run.run_id,
        run.run_dir,
        supervisor_pid=os.getpid(),
        watchdog_pid=run.watchdog.pid,
        containment=run.containment.record(),
    )


def _tell_watchdog_allocation(run: RunState) -> None:
    """An allocation we made dies with us: the watchdog cancels it if we die before releasing it."""
    if run.allocation is not None and run.allocation.owned and run.watchdog is not None:
        run.watchdog.cancel_job_on_death(run.allocation.job_id, run.allocation.name)
