"""Scale a running service: ``run.scale("decode", 4)``.

Up: the new replicas are planned (``_plan.replan``: their own free ports and GPUs beside the run's, templates
filled with the new set), join the service, spawn behind the service's probes and count once ready; the
call returns then. They are on trial until ready: one that fails its start (exit, readiness timeout) is
not restarted and does not fail the run; the whole scale is undone (every replica it added is stopped and
removed) and its ``ServiceFailed`` raised. Down: the highest-numbered replicas are stopped one after
another, each with its stop signal and grace, then removed; nothing of them is left.
On a Slurm run, new replicas of a service placed on the nodes go to the allocation's nodes still up
(``_plan.scale_placement``) and run as srun steps; a scale down ends those steps.

Each scale is a ``ScaleStarted`` and a ``ScaleEnded`` event (``error`` set when refused or undone), and a
``ReplicaAdded`` / ``ReplicaRemoved`` per replica; the manifest is rewritten once it is over. Then the
services whose templates use the scaled one's endpoints follow (``_runtime.dependents``), before the call returns.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import anyio

from .._errors import ConfigError, NotRunning, ServiceFailed
from .._events import ReplicaAdded, ReplicaRemoved, ScaleEnded, ScaleStarted
from .._host.gpu_inventory import GpuInventory, GpuUnavailable
from .._plan.gpu_assign import GpuNode
from .._plan.plan import HOST, Plan
from .._plan.ports import PortAllocator
from .._plan.replan import scaled_plan, service_spec
from .._spec.cluster import placed
from .._spec.placement import ClusterNode
from .._spec.validate import MAX_REPLICAS
from . import group_stop
from . import supervision as _supervision
from .dependents import follow_endpoints
from .operations import run_operation, wait_settled
from .preflight import open_files_for
from .replica import Replica, ReplicaState, ServiceHandle
from .state import RunState

__all__ = ["retire", "scale"]


async def scale(run: RunState, service: str, replicas: int) -> None:
    handle = run.service(service)  # KeyError naming the services
    run_operation(run, f"scale '{service}'")
    async with run.operation_lock:
        run_operation(run, f"scale '{service}'")
        before = len(handle.replicas)
        if replicas == before:
            return
        began = time.monotonic()
        run.emit(ScaleStarted(replica="", service=service, replicas_before=before, replicas_after=replicas))
        added: list[str] = []
        removed: list[str] = []
        try:
            if isinstance(replicas, int) and replicas > before:
                added = await _scale_up(run, handle, replicas)
            else:
                removed = await _scale_down(run, handle, replicas)
        except BaseException as exc:
            error = str(exc).splitlines()[0] if isinstance(exc, Exception) and str(exc) else type(exc).__name__
            ended = ScaleEnded(
                replica="",
                service=service,
                replicas=len(handle.replicas),
                seconds=time.monotonic() - began,
                error=error,
            )
            run.emit(ended)
            run.write_manifest()
            raise
        run.emit(
            ScaleEnded(
                replica="",
                service=service,
                replicas=len(handle.replicas),
                added=tuple(added),
                removed=tuple(removed),
                seconds=time.monotonic() - began,
            )
        )
        run.write_manifest()
        await follow_endpoints(run, service)


async def _scale_up(run: RunState, handle: ServiceHandle, replicas: int) -> list[str]:
    before = len(handle.replicas)
    old_plan = run.plan
    if 0 <= replicas <= MAX_REPLICAS:  # else scaled_plan says what is wrong with the count
        total = len(run.replicas) - before + replicas
        open_files_for(total, source=run.plan.source, doing=f"scale '{handle.name}' to {replicas}: the run's ")
    up = await _up_nodes(run, handle.name)
    plan = scaled_plan(
        old_plan, handle.name, replicas, ports=_ports(run), read_node=lambda: _read_node(run.gpus), up=up
    )
    service_plan = plan.service(handle.name)
    if run.gpus is not None:  # as at the start: the new replicas' GPUs have their min_free_memory now
        from .gpu_checks import check_free_memory

        check_free_memory(plan, run.gpus, replicas={r.name for r in service_plan.replicas[before:]})
    _set_plan(run, handle, plan)
    added = []
    for replica_plan in service_plan.replicas[before:]:
        replica = Replica(replica_plan, service_plan, run.logs_dir / f"{replica_plan.name}.log")
        replica.begin_trial()
        _add_replica(run, replica)
        added.append(replica)
        run.emit(
            ReplicaAdded(
                replica=replica.name,
                service=handle.name,
                ports=dict(replica_plan.ports),
                gpus=replica_plan.gpus,
                url=replica_plan.url,
            )
        )
    if run.all_done.is_set():  # everything had stopped; now something runs again
        run.all_done = anyio.Event()
    try:
        for replica in added:
            _supervision.launch(run, replica)
            await anyio.lowlevel.checkpoint()
        run.write_manifest()  # pids on disk before anything else can go wrong
        await wait_settled(run, added)
    except BaseException:
        if not run.stopping:  # else the teardown stops them
            with anyio.CancelScope(shield=True):
                await _undo(run, handle, added, old_plan)
        raise
    failed = [r for r in added if r.state is ReplicaState.FAILED]
    if failed:
        await _undo(run, handle, added, old_plan)
        first = failed[0]
        cause = first.failure or ServiceFailed(first.name, "failed to start")
        raise type(cause)(
            first.name,
            f"{cause.reason}; the scale of '{handle.name}' to {replicas} was undone "
            f"({len(added)} new replicas stopped, {before} serving as before)",
            log_tail=cause.log_tail,
            log_path=cause.log_path,
            exit_code=cause.exit_code,
        )
    for replica in added:
        replica.end_trial()
    return [r.name for r in added]


async def _undo(run: RunState, handle: ServiceHandle, added: list[Replica], plan: Plan) -> None:
    await retire(run, list(reversed(added)), reason="scale undone")
    _set_plan(run, handle, plan)


async def _scale_down(run: RunState, handle: ServiceHandle, replicas: int) -> list[str]:
    scaled_plan(run.plan, handle.name, replicas, ports=_ports(run), read_node=_no_node)  # checks the count
    gone = list(reversed(handle.replicas[replicas:]))
    try:
        await retire(run, gone, reason="scaled down")
    finally:  # also when interrupted: the plan says what is left
        left = len(handle.replicas)
        _set_plan(run, handle, scaled_plan(run.plan, handle.name, left, ports=_ports(run), read_node=_no_node))
        group_stop.check_done(run)
    if left > replicas:  # the teardown began: it stops the rest
        raise NotRunning(
            f"cut short: run {run.run_id} is being stopped, with {left - replicas} replicas of '{handle.name}' "
            "still to remove (the teardown stops them)"
        )
    return [r.name for r in gone]


async def retire(run: RunState, replicas: Sequence[Replica], *, reason: str) -> None:
    """Stop ``replicas`` one after another (stop signal, grace, SIGKILL, every process of each), then take
    each out of its service; once the run's teardown begins, the rest are left to it.

    The run's processes are scanned once for all of them (a scan per replica read the whole host's
    process table each time: retiring 1,000 took 20 s), and each leaves its service by position, not by a
    search of the list: the time is linear in their count. A process one of them starts after the scan is
    in its process group, which its stop signals; the final sweep finds anything else."""
    for replica in replicas:
        replica.hold()  # no pending start or restart may spawn it again
        if replica.loop_scope is not None:
            replica.loop_scope.cancel()
    members = await group_stop.members_by_replica(run)
    for replica in replicas:
        if run.stopping:
            return
        async with run.restart_lock:
            await replica.stop(run, members.pop(replica.name, []), reason=reason, kill_now=run.kill_requested)
        if replica.state.active:
            replica.transition(ReplicaState.STOPPED)
        _remove_replica(run, replica)
        run.emit(ReplicaRemoved(replica=replica.name, service=replica.service))


def _add_replica(run: RunState, replica: Replica) -> None:
    """A replica joins its service: addressable by name (and ``svc.<index>``), in the records from now on."""
    run.service_map[replica.service].replicas.append(replica)
    run.replica_map[replica.name] = replica
    run.replica_map.setdefault(f"{replica.service}.{replica.index}", replica)


def _remove_replica(run: RunState, replica: Replica) -> None:
    """A stopped replica leaves its service; kept aside for the final sweep and a kill."""
    replicas = run.service_map[replica.service].replicas
    if replicas and replicas[-1] is replica:  # a scale down retires from the end: no search of the list
        replicas.pop()
    else:
        replicas.remove(replica)
    for name in (replica.name, f"{replica.service}.{replica.index}"):
        if run.replica_map.get(name) is replica:
            del run.replica_map[name]
    run.retired.append(replica)
    cgroup = run.containment.holding(replica.name)
    if cgroup is not None and not cgroup.populated():  # else the final sweep still needs it
        cgroup.remove()  # (a later replica of the same name makes it again)


def _set_plan(run: RunState, handle: ServiceHandle, plan: Plan) -> None:
    run.plan = plan
    handle.plan = plan.service(handle.name)


def _ports(run: RunState) -> PortAllocator:
    """One allocator for the run's new replicas; it never hands out a port the run has used."""
    if run.ports is None:
        run.ports = PortAllocator(HOST)
        for replica in [*run.replicas, *run.retired]:
            for port in replica.ports.values():
                run.ports.reserve(port)
    return run.ports


async def _up_nodes(run: RunState, service: str) -> tuple[ClusterNode, ...] | None:
    """The allocation's nodes still in its job, for new replicas of a service placed on them (a node
    that went down is never chosen); None when the service runs here."""
    allocation = run.allocation
    topology = run.plan.topology
    if allocation is None or topology is None or not placed(topology, service_spec(run.plan, service)):
        return None
    from .._host.slurm_alloc import SlurmError
    from .node_loss import live_nodes

    try:
        return await anyio.to_thread.run_sync(live_nodes, allocation)
    except SlurmError as exc:
        raise ConfigError(
            f"scale '{service}': cannot read Slurm job {allocation.job_id}'s nodes: {exc}", source=run.plan.source
        ) from None


def _read_node(inventory: GpuInventory | None) -> GpuNode:
    if inventory is None:
        raise GpuUnavailable("the run was started without a GPU inventory")
    return GpuNode.read(inventory)


def _no_node() -> GpuNode:
    raise AssertionError("a scale down reads no GPU node")
