"""Stopping the running group: one replica, a set in reverse dependency order, the whole run (the
teardown, with its final sweep and the checks that nothing is left), and the kill of the second Ctrl-C.

Functions over the running group (``_runtime.group.RunningTopology``), which keeps the state and calls them; the
stop order itself and the sweep's SIGKILL rounds live in ``_host.teardown``.
"""

from __future__ import annotations

import contextlib
import functools
import signal
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

import anyio
import anyio.to_thread
import psutil

from .._events import EventLog, GpuNotReleased
from .._host import teardown as _teardown
from .._host.process import alive, signal_processes
from .._host.proctable import marked_processes, run_members
from .._plan.plan import Plan
from .._records.record import unregister_run
from .replica import Replica, ReplicaHost, ReplicaState
from .run_phase import RunPhase

if TYPE_CHECKING:
    from pathlib import Path

    import httpx

    from .._control.server import ControlServer
    from .._host.gpu_inventory import GpuInventory
    from .._host.slurm_alloc import SlurmAllocation
    from .._host.watchdog import Watchdog

__all__ = ["kill_now", "members_by_replica", "stop_in_order", "stop_leftovers", "stop_one", "teardown"]


class StoppingGroup(ReplicaHost, Protocol):
    """What stopping reads and drives on the running group (``_runtime.group.RunningTopology`` is the one); a
    protocol, so that this module and the group import each other at no time, not even for types."""

    plan: Plan
    gpus: GpuInventory | None
    gpus_before: frozenset[tuple[int, int]] | None
    allocation: SlurmAllocation | None
    control_socket: Path | None
    teardown_started_at: float | None

    @property
    def phase(self) -> RunPhase: ...
    def enter_phase(self, phase: RunPhase) -> None: ...

    leftovers: list[int]
    _replicas: dict[str, Replica]
    _retired: list[Replica]
    _seen_pids: dict[int, str]
    _events: EventLog
    _task_scopes: set[anyio.CancelScope]
    _http: httpx.AsyncClient | None
    _watchdog: Watchdog | None
    _control: ControlServer | None
    _stopping: bool
    _kill_now: bool
    _torn_down: anyio.Event
    _all_done: anyio.Event

    @property
    def replicas(self) -> list[Replica]: ...

    def _write_manifest(self) -> None: ...

    def _write_summary(self) -> None: ...


def _pinned_groups(group: StoppingGroup) -> dict[int, str]:
    """Process groups that are surely ours: their leader is not reaped, so its pid is not reused."""
    return {
        r.incarnation.process.pid: r.name
        for r in [*group.replicas, *group._retired]
        if r.incarnation is not None and not r.incarnation.process.reaped
    }


async def members_by_replica(group: StoppingGroup) -> dict[str, list[psutil.Process]]:
    """Every live process of the run, by replica: marked ones, and members of our process groups
    (an ``env -i`` child carries no mark)."""
    groups = _pinned_groups(group)
    members = await anyio.to_thread.run_sync(functools.partial(run_members, group.run_id, groups))
    by_replica: dict[str, list[psutil.Process]] = {}
    for member in members.values():
        name = groups.get(member.pgid) or member.replica or ""
        group._seen_pids.setdefault(member.pid, name)
        with contextlib.suppress(psutil.Error):
            by_replica.setdefault(name, []).append(psutil.Process(member.pid))
    return by_replica


async def stop_one(group: StoppingGroup, replica: Replica, *, reason: str) -> None:
    marked = await members_by_replica(group)
    await replica.stop(group, marked.get(replica.name, []), reason=reason, kill_now=group._kill_now)


async def stop_leftovers(group: StoppingGroup, replica: Replica) -> None:
    """After an incarnation ended by itself: what it left (marked, or in its process group) is stopped,
    then its pid is released."""
    others = [p for p in (await members_by_replica(group)).get(replica.name, []) if alive(p)]
    await replica.stop(group, others, reason="leftovers of an ended incarnation", kill_now=group._kill_now)


async def stop_in_order(group: StoppingGroup, targets: Iterable[Replica], *, reason: str) -> None:
    """Stop replicas in reverse dependency order: a service stops once its dependents among the
    targets have stopped."""
    targets = list(targets)
    members = await members_by_replica(group)
    by_service = {
        s.name: [r for r in targets if r.service == s.name]
        for s in group.plan.services
        if any(r.service == s.name for r in targets)
    }

    def depends_on(service: str) -> list[str]:
        return [d.service for d in group.plan.service(service).depends_on]

    before = _teardown.stop_prerequisites(list(by_service), depends_on)

    async def stop(replica: Replica) -> None:
        await replica.stop(group, members.get(replica.name, []), reason=reason, kill_now=group._kill_now)
        if replica.state.active:
            replica.transition(ReplicaState.STOPPED)

    await _teardown.stop_in_order(by_service, before, stop)


async def teardown(group: StoppingGroup) -> None:
    """Reverse dependency order, stop signal, grace, SIGKILL; then verify nothing of the run is left."""
    if group._stopping:
        await group._torn_down.wait()
        return
    group._stopping = True
    group.teardown_started_at = time.monotonic()
    group.enter_phase(RunPhase.STOPPING)
    if group._control is not None:  # no new clients; those connected see the teardown's events
        group._control.close()
        group.control_socket = None
    for replica in group.replicas:
        if replica.loop_scope is not None:
            replica.loop_scope.cancel()
    group._write_manifest()
    try:
        await stop_in_order(group, group.replicas, reason="teardown")
        await _sweep(group)
        await _wait_gpus_released(group)
        if group._http is not None:
            await group._http.aclose()
        for replica in group.replicas:  # output ends once every writer is gone; give the pumps a moment
            stream = replica.stream
            if stream is not None and not stream.closed:
                with anyio.move_on_after(0.5):
                    while not stream.closed:
                        await stream.wait_activity()
                stream.close()
        group.enter_phase(RunPhase.STOPPED)
        group._write_manifest()
        group._write_summary()
    finally:
        await _release_allocation(group)
        await _close_watchdog(group)
        for scope in list(group._task_scopes):
            scope.cancel()
        group._events.close()
        group._torn_down.set()
        group._all_done.set()  # nothing is active any more: a waiter (``stop()`` then ``wait()``) returns


def kill_now(group: StoppingGroup) -> None:
    """SIGKILL every process of the run at once (the second Ctrl-C)."""
    group._kill_now = True
    for replica in [*group.replicas, *group._retired]:
        replica.kill_now()
    signal_processes([p for _, p in marked_processes(group.run_id).values()], signal.SIGKILL)


async def _release_allocation(group: StoppingGroup) -> None:
    """Cancel the allocation we made (every step is stopped by now); the caller's own stays."""
    if group.allocation is not None and group.allocation.owned:
        await anyio.to_thread.run_sync(group.allocation.release)


async def _close_watchdog(group: StoppingGroup) -> None:
    """Our teardown verified the run is empty: the watchdog may go without sweeping. If it did not
    (leftovers), the watchdog sweeps once more and the run stays in the index for ``gc``."""
    if group._watchdog is None:
        return
    clean = not group.leftovers and group.phase is RunPhase.STOPPED
    await anyio.to_thread.run_sync(functools.partial(group._watchdog.close, clean=clean))
    if clean:
        unregister_run(group.run_id)


async def _sweep(group: StoppingGroup) -> None:
    """Whatever is still of the run (marked, spawned mid-teardown, re-parented, or in one of our
    process groups) gets SIGKILL; then the leaders' pids are released."""

    async def find() -> list[psutil.Process]:
        return [p for ps in (await members_by_replica(group)).values() for p in ps]

    group.leftovers = await _teardown.sweep(find)
    for replica in [*group.replicas, *group._retired]:
        if replica.incarnation is not None:
            replica.incarnation.process.reap()


async def _wait_gpus_released(group: StoppingGroup) -> None:
    """The GPUs may list a process a moment after it is gone; wait (bounded) until they list none of
    ours, so the next run finds the memory free, and name any survivor."""
    if group.gpus is None or not any(r.plan.gpus for r in group.replicas):
        return
    from .gpu_checks import describe_holders, wait_released

    started = time.monotonic()
    # a second Ctrl-C asks for an exit now: look once, name what is left, do not wait
    replicas = [*group.replicas, *group._retired]
    on_gpu = {index: r.name for r in reversed(replicas) for index in r.plan.gpus}  # the first replica on each
    survivors = await wait_released(
        group.gpus,
        group._seen_pids,
        seconds=0.0 if group._kill_now else None,
        gpus=set(on_gpu),
        before=group.gpus_before,
    )
    for holder in describe_holders(survivors):
        # a pid of another namespace (``wait_released``) is named after the replica that had its GPU
        name = group._seen_pids.get(holder.process.pid) or on_gpu.get(holder.process.gpu, "")
        replica = group._replicas.get(name)
        group.emit(
            GpuNotReleased(
                replica=name,
                service=replica.service if replica is not None else name.split(".")[0],
                pid=holder.process.pid,
                gpu=holder.process.gpu,
                process_name=holder.name,
                used_memory_bytes=holder.process.used_memory_bytes,
                waited_seconds=time.monotonic() - started,
            )
        )
