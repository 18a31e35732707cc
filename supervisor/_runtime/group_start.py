"""Starting the running group: the watchdog first, then each service once its dependencies hold, each
replica spawned and handed to its supervision loop; and a watchdog that dies is replaced.

Functions over the running group (``_runtime.group.RunningTopology``), which keeps the state and calls them;
what happens once a replica runs is ``_runtime.supervision``'s.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import anyio
import anyio.abc
import anyio.lowlevel

from .._errors import ServiceFailed
from .._host.watchdog import Watchdog
from .._records.record import register_run
from . import supervision as _supervision
from .endpoints import write_endpoints
from .replica import Replica, ReplicaState
from .run_phase import RunPhase

if TYPE_CHECKING:
    from .._host.slurm_alloc import SlurmAllocation
    from .headstart import HeadStart

__all__ = ["launch", "start", "start_service"]


class StartingGroup(_supervision.SupervisedGroup, Protocol):
    """What starting reads and drives on the running group (``_runtime.group.RunningTopology`` is the one); a
    protocol, so that this module and the group import each other at no time, not even for types."""

    run_dir: Path

    @property
    def phase(self) -> RunPhase: ...
    def enter_phase(self, phase: RunPhase) -> None: ...

    ready_at: float | None
    allocation: SlurmAllocation | None
    _head_start: HeadStart | None
    _watchdog: Watchdog | None

    async def _serve_control(self) -> None: ...


async def start(group: StartingGroup, tg: anyio.abc.TaskGroup) -> None:
    """Start every service (each once its dependencies hold); returns once all are ready."""
    group._tg = tg
    group.enter_phase(RunPhase.STARTING)
    # Before the first spawn: if we die from here on, even by SIGKILL, the watchdog sweeps the run.
    head_started = group._head_start.take_watchdog() if group._head_start is not None else None
    group._watchdog = head_started or Watchdog.spawn(group.run_id, group.run_dir)
    _tell_watchdog_allocation(group)
    group._write_manifest()
    write_endpoints(group.plan)
    register_run(group.run_id, group.run_dir, supervisor_pid=os.getpid(), watchdog_pid=group._watchdog.pid)
    tg.start_soon(_keep_watchdog, group, name="keep watchdog")
    for service in group.plan.services:
        tg.start_soon(group._start_service, service.name, None, name=f"start {service.name}")
    tg.start_soon(group._serve_control, name="control socket")
    for service in group.plan.services:  # a strategy restart while starting resets and re-runs starts
        await group._conditions.wait(service.name, "ready")
    group.ready_at = time.monotonic()
    group.enter_phase(RunPhase.RUNNING)

    async def write_manifest_soon() -> None:
        group._write_manifest()

    tg.start_soon(write_manifest_soon)  # off the path to "ready": the caller gets control first


async def start_service(group: StartingGroup, name: str, replicas: list[Replica] | None) -> None:
    """Wait for the dependencies, start the replicas' supervision loops, and wait until each is ready
    once (or completed, or failed with the quorum kept). A strategy restart redoes it from scratch."""
    with group._conditions.starting(name):
        await _start_service_now(group, name, replicas)


async def _start_service_now(group: StartingGroup, name: str, replicas: list[Replica] | None) -> None:
    service = group.plan.service(name)
    for dep in service.depends_on:
        await group._conditions.wait(dep.service, dep.condition)
    targets = replicas if replicas is not None else group._services[name].replicas
    assert group._tg is not None
    if group._stopping:
        return
    if not group._services[name].replicas:  # replicas: 0 -- nothing to wait for
        group._conditions.set(name)
        return
    targets = [r for r in targets if not r.held]
    for replica in targets:
        if group._stopping:  # teardown began while we were spawning
            return
        launch(group, replica)
        await anyio.lowlevel.checkpoint()  # 200 spawns in a row must not hold up other services' starts
    group._write_manifest()  # pids on disk before anything else can go wrong
    group._conditions.set(name, "started")
    for replica in targets:
        await replica.settled.wait()
    if any(r.state is not ReplicaState.FAILED for r in group._services[name].replicas):
        group._conditions.set(name, "ready")
    _supervision.check_completed(group, name)


def launch(group: StartingGroup, replica: Replica) -> None:
    """Spawn ``replica`` and hand it to its supervision loop; ``settled`` tells when it is ready once
    (or failed)."""
    assert group._tg is not None
    scope = replica.begin_supervision()
    try:
        first = replica.spawn(group)  # here, not in the loop's task: "started" means spawned
    except ServiceFailed as error:
        _supervision.replica_failed(group, replica, error)
        return
    group._tg.start_soon(_supervision.supervise, group, replica, scope, first, name=f"supervise {replica.name}")


async def _keep_watchdog(group: StartingGroup) -> None:
    """A watchdog that dies (killed by someone) is replaced at once and told every live leader again,
    so the run stays covered against our own death."""
    while not group._stopping:
        watchdog = group._watchdog
        assert watchdog is not None
        await watchdog.wait_exit()
        if group._stopping or watchdog is not group._watchdog:
            return
        group._watchdog = Watchdog.spawn(group.run_id, group.run_dir)
        _tell_watchdog_allocation(group)
        register_run(group.run_id, group.run_dir, supervisor_pid=os.getpid(), watchdog_pid=group._watchdog.pid)
        for replica in group.replicas:
            if replica.incarnation is not None and not replica.incarnation.exited.is_set():
                group.track(replica, replica.incarnation)


def _tell_watchdog_allocation(group: StartingGroup) -> None:
    """An allocation we made dies with us: the watchdog cancels it if we die before releasing it."""
    if group.allocation is not None and group.allocation.owned and group._watchdog is not None:
        group._watchdog.cancel_job_on_death(group.allocation.job_id, group.allocation.name)
