"""A node that goes down takes its replicas with it; their next start goes to a node that is still up.

Allocations we make are taken with ``salloc --no-kill``: when a node fails, Slurm kills only the steps
on it ("Node failure on n2") and drops the node from the job, which goes on with the others. A replica
whose step died so is restarted per its policy, and before that restart its placement is checked against
the job's node list now: a lost node is replaced by the node of the allocation that is up, not already
in this replica, and runs the fewest of our replicas (the allocation's order breaks ties). Its command
is planned again for the new nodes (``{host}``, ``{leader_host}``...; ports, GPUs and name stay). With
no such node left, the restart fails with a message that names the lost node. The services that follow
the moved one (its URL in their templates, or a dependency) then do what their ``on_change`` says, as after
a scale (``_runtime.dependents``).

Checked only before a restart (a first start uses the fresh plan): one ``scontrol`` call per restart.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

import attrs

from .._errors import ServiceFailed
from .._host.slurm_alloc import SlurmAllocation, SlurmError, job_nodelist
from .._plan.plan import Plan, ReplicaPlan, _resolve_replica, _shared_context, _skeleton
from .._plan.replan import service_spec, with_service
from .._spec.placement import ClusterNode, ReplicaPlacement

if TYPE_CHECKING:
    from .replica import Replica, ServiceHandle

__all__ = ["live_nodes", "moved_placement", "relocate", "replaced_replica"]


class _Group(Protocol):
    plan: Plan

    @property
    def replicas(self) -> list[Replica]: ...


def relocate(run: _Group, handle: ServiceHandle, replica: Replica, allocation: SlurmAllocation) -> None:
    """Before ``replica`` restarts: off lost nodes, onto the least loaded ones that are up; the group's
    plan and the service's follow, and the replica's log says where it went."""

    placement = replica.plan.placement
    if placement is None:
        return
    load: dict[str, int] = {}
    for other in run.replicas:
        if other is not replica and other.state.active and other.plan.placement is not None:
            for node in other.plan.placement.nodes:
                load[node.name] = load.get(node.name, 0) + 1
    moved = relocated(run.plan, replica.plan, allocation, load)
    if moved is None or moved.placement is None:
        return
    replica.plan = moved
    run.plan = with_service(run.plan, attrs.evolve(handle.plan, replicas=tuple(r.plan for r in handle.replicas)))
    handle.plan = run.plan.service(handle.name)
    before, after = (", ".join(n.name for n in p.nodes) for p in (placement, moved.placement))
    replica.annotate(
        f"--- topovisor: moved from {before} to {after}: a node left Slurm job {allocation.job_id} ---\n".encode()
    )


def live_nodes(allocation: SlurmAllocation) -> tuple[ClusterNode, ...]:
    """The allocation's nodes that are still in its job, in the allocation's order."""
    names = set(job_nodelist(allocation.job_id))
    return tuple(node for node in allocation.nodes if node.name in names)


def moved_placement(
    replica: str, job_id: str, placement: ReplicaPlacement, live: Sequence[ClusterNode], load: Mapping[str, int]
) -> ReplicaPlacement | None:
    """``placement`` with each lost node replaced (None: nothing was lost); ``ServiceFailed`` naming the
    lost nodes when not enough nodes are up. ``load``: how many of our replicas each node runs."""
    live_names = {node.name for node in live}
    lost = [node for node in placement.nodes if node.name not in live_names]
    if not lost:
        return None
    kept = {node.name for node in placement.nodes if node.name in live_names}
    order = {node.name: i for i, node in enumerate(live)}
    spare = sorted((n for n in live if n.name not in kept), key=lambda n: (load.get(n.name, 0), order[n.name]))
    names = ", ".join(node.name for node in lost)
    if len(spare) < len(lost):
        raise ServiceFailed(
            replica,
            f"node {names} went down (it left Slurm job {job_id}) and no other node of the allocation is up "
            f"to take its place ({len(live)} left: {', '.join(n.name for n in live) or 'none'})",
        )
    substitutes = iter(spare)
    nodes = tuple(node if node.name in live_names else next(substitutes) for node in placement.nodes)
    return attrs.evolve(placement, nodes=nodes, argvs=())


def replaced_replica(plan: Plan, replica: ReplicaPlan, placement: ReplicaPlacement) -> ReplicaPlan:
    """``replica`` planned again on ``placement``'s nodes: templates refilled; name, ports, GPUs kept."""
    spec = service_spec(plan, replica.service)
    skeleton = attrs.evolve(
        _skeleton(spec, replica.index, dict(replica.ports), replica.gpus, placement), name=replica.name
    )
    problems: list[str] = []
    resolved = _resolve_replica(
        spec, skeleton, _shared_context(plan.services, plan.run_dir), problems, lambda name, _: name, False
    )
    if problems:
        raise ServiceFailed(replica.name, f"cannot plan it on {placement.leader.name}: {'; '.join(problems)}")
    return resolved


def relocated(
    plan: Plan, replica: ReplicaPlan, allocation: SlurmAllocation, load: Mapping[str, int]
) -> ReplicaPlan | None:
    """The replica moved off lost nodes (None: its nodes are all up)."""
    assert replica.placement is not None
    try:
        live = live_nodes(allocation)
    except SlurmError as exc:
        raise ServiceFailed(replica.name, f"cannot read Slurm job {allocation.job_id}'s nodes: {exc}") from None
    moved = moved_placement(replica.name, allocation.job_id, replica.placement, live, load)
    return None if moved is None else replaced_replica(plan, replica, moved)
