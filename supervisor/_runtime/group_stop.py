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
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread
import psutil

from .._events import GpuNotReleased
from .._host import teardown as _teardown
from .._host.process import alive, signal_processes
from .._host.proctable import marked_processes, run_members
from .._records.record import unregister_run
from .replica import Replica, ReplicaState
from .run_phase import RunPhase
from .state import RunState

if TYPE_CHECKING:
    pass

__all__ = [
    "check_done",
    "kill_now",
    "members_by_replica",
    "stop_in_order",
    "stop_leftovers",
    "stop_named",
    "stop_one",
    "teardown",
]

_OPERATIONS_END_SECONDS = 10.0  #: how long the teardown waits for a scale or rollout it cut short to end


def _pinned_groups(run: RunState) -> dict[int, str]:
    """Process groups that are surely ours: their leader is not reaped, so its pid is not reused."""
    return {
        r.incarnation.process.pid: r.name
        for r in [*run.replicas, *run.retired]
        if r.incarnation is not None and not r.incarnation.process.reaped
    }


async def members_by_replica(run: RunState) -> dict[str, list[psutil.Process]]:
    """Every live process of the run, by replica. A replica started in its cgroup: the cgroup's members,
    whatever their environment or process group (the cost of the run, not of the host). Any other (marks
    mode, a Slurm step): marked processes and members of our process groups (an ``env -i`` child carries
    no mark), from one scan of the process table."""
    by_replica: dict[str, list[psutil.Process]] = {}
    replicas = [*run.replicas, *run.retired]
    scanned = [r for r in replicas if run.containment.holding(r.name) is None]
    for replica in replicas:
        cgroup = run.containment.holding(replica.name)
        if cgroup is not None:
            for pid in cgroup.pids():
                _add(run, by_replica, replica.name, pid)
    if not scanned:
        return by_replica
    groups = {pgid: name for pgid, name in _pinned_groups(run).items() if name in {r.name for r in scanned}}
    members = await anyio.to_thread.run_sync(functools.partial(run_members, run.run_id, groups))
    contained = {r.name for r in replicas} - {r.name for r in scanned}
    for member in members.values():
        name = groups.get(member.pgid) or member.replica or ""
        if name not in contained:
            _add(run, by_replica, name, member.pid)
    return by_replica


def _add(run: RunState, by_replica: dict[str, list[psutil.Process]], name: str, pid: int) -> None:
    run.seen_pids.setdefault(pid, name)
    with contextlib.suppress(psutil.Error):
        by_replica.setdefault(name, []).append(psutil.Process(pid))


async def stop_one(run: RunState, replica: Replica, *, reason: str) -> None:
    marked = await members_by_replica(run)
    await replica.stop(run, marked.get(replica.name, []), reason=reason, kill_now=run.kill_requested)


async def stop_leftovers(run: RunState, replica: Replica) -> None:
    """After an incarnation ended by itself: what it left (marked, or in its process group) is stopped,
    then its pid is released."""
    others = [p for p in (await members_by_replica(run)).get(replica.name, []) if alive(p)]
    await replica.stop(run, others, reason="leftovers of an ended incarnation", kill_now=run.kill_requested)


async def stop_in_order(run: RunState, targets: Iterable[Replica], *, reason: str) -> None:
    """Stop replicas in reverse dependency order: a service stops once its dependents among the
    targets have stopped."""
    targets = list(targets)
    members = await members_by_replica(run)
    by_service = {
        s.name: [r for r in targets if r.service == s.name]
        for s in run.plan.services
        if any(r.service == s.name for r in targets)
    }

    def depends_on(service: str) -> list[str]:
        return [d.service for d in run.plan.service(service).depends_on]

    before = _teardown.stop_prerequisites(list(by_service), depends_on)

    async def stop(replica: Replica) -> None:
        await replica.stop(run, members.get(replica.name, []), reason=reason, kill_now=run.kill_requested)
        if replica.state.active:
            replica.transition(ReplicaState.STOPPED)

    await _teardown.stop_in_order(by_service, before, stop)


async def teardown(run: RunState) -> None:
    """Reverse dependency order, stop signal, grace, SIGKILL; then verify nothing of the run is left."""
    if run.stopping:
        await run.torn_down.wait()
        return
    run.stopping = True
    run.teardown_began.set()
    run.teardown_started_at = time.monotonic()
    run.enter_phase(RunPhase.STOPPING)
    if run.control is not None:  # no new clients; those connected see the teardown's events
        run.control.close()
        run.control_socket = None
    for replica in run.replicas:
        if replica.loop_scope is not None:
            replica.loop_scope.cancel()
    run.write_manifest()
    try:
        await stop_in_order(run, run.replicas, reason="teardown")
        if run.control is not None:  # a scale or rollout cut short records its end, and its client hears why
            await run.control.wait_answered(_OPERATIONS_END_SECONDS)
        await _sweep(run)
        await _wait_gpus_released(run)
        if run.http is not None:
            await run.http.aclose()
        for replica in run.replicas:  # output ends once every writer is gone; give the pumps a moment
            stream = replica.stream
            if stream is not None and not stream.closed:
                with anyio.move_on_after(0.5):
                    while not stream.closed:
                        await stream.wait_activity()
                stream.close()
        run.enter_phase(RunPhase.STOPPED)
        run.write_manifest()
        run.write_summary()
    finally:
        await _release_allocation(run)
        await _close_watchdog(run)
        for scope in list(run.task_scopes):
            scope.cancel()
        run.event_log.close()
        run.torn_down.set()
        run.all_done.set()  # nothing is active any more: a waiter (``stop()`` then ``wait()``) returns


def kill_now(run: RunState) -> None:
    """SIGKILL every process of the run at once (the second Ctrl-C)."""
    run.kill_requested = True
    for replica in [*run.replicas, *run.retired]:
        replica.kill_now()
    run.containment.kill()
    if any(run.containment.holding(r.name) is None for r in [*run.replicas, *run.retired]):
        signal_processes([p for _, p in marked_processes(run.run_id).values()], signal.SIGKILL)


async def _release_allocation(run: RunState) -> None:
    """Cancel the allocation we made (every step is stopped by now); the caller's own stays."""
    if run.allocation is not None and run.allocation.owned:
        await anyio.to_thread.run_sync(run.allocation.release)


async def _close_watchdog(run: RunState) -> None:
    """Our teardown verified the run is empty: the watchdog may go without sweeping. If it did not
    (leftovers), the watchdog sweeps once more and the run stays in the index for ``gc``."""
    if run.watchdog is None:
        return
    clean = not run.leftovers and run.phase is RunPhase.STOPPED
    await anyio.to_thread.run_sync(functools.partial(run.watchdog.close, clean=clean))
    if clean:
        unregister_run(run.run_id)


async def _sweep(run: RunState) -> None:
    """Whatever is still of the run (marked, spawned mid-teardown, re-parented, or in one of our
    process groups) gets SIGKILL; then the leaders' pids are released."""

    async def find() -> list[psutil.Process]:
        return [p for ps in (await members_by_replica(run)).values() for p in ps]

    run.leftovers = await _teardown.sweep(find)
    # "nothing is left" means: the run's cgroups are empty and removed
    if run.containment.contained and not await anyio.to_thread.run_sync(run.containment.empty_and_remove):
        run.leftovers = sorted({*run.leftovers, *run.containment.pids()})
    for replica in [*run.replicas, *run.retired]:
        if replica.incarnation is not None:
            replica.incarnation.process.reap()


async def _wait_gpus_released(run: RunState) -> None:
    """The GPUs may list a process a moment after it is gone; wait (bounded) until they list none of
    ours, so the next run finds the memory free, and name any survivor."""
    if run.gpus is None or not any(r.plan.gpus for r in run.replicas):
        return
    from .gpu_checks import describe_holders, wait_released

    started = time.monotonic()
    # a second Ctrl-C asks for an exit now: look once, name what is left, do not wait
    replicas = [*run.replicas, *run.retired]
    on_gpu = {index: r.name for r in reversed(replicas) for index in r.plan.gpus}  # the first replica on each
    survivors = await wait_released(
        run.gpus,
        run.seen_pids,
        seconds=0.0 if run.kill_requested else None,
        gpus=set(on_gpu),
        before=run.gpus_before,
    )
    for holder in describe_holders(survivors):
        # a pid of another namespace (``wait_released``) is named after the replica that had its GPU
        name = run.seen_pids.get(holder.process.pid) or on_gpu.get(holder.process.gpu, "")
        replica = run.replica_map.get(name)
        run.emit(
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


async def stop_named(run: RunState, name: str) -> None:
    """Stop one service or replica for good (``group.stop(name)``): no restart follows, and a start or
    strategy restart still pending leaves it alone."""
    run.targets(name)  # KeyError naming the services, at once
    async with run.operation_lock:  # after a scale or rollout under way (it would start it again)
        targets = run.targets(name)
        for replica in targets:
            replica.hold()
        async with run.restart_lock:
            for replica in targets:
                if replica.loop_scope is not None:
                    replica.loop_scope.cancel()
            await stop_in_order(run, targets, reason="stop requested")
            for replica in targets:
                if replica.state.active:
                    replica.transition(ReplicaState.STOPPED)
    check_done(run)


def check_done(run: RunState) -> None:
    """Nothing is active any more (stopped, completed, failed): a waiter on ``all_done`` returns."""
    if not any(r.state.active for r in run.replicas):
        run.all_done.set()
