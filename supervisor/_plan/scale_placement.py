"""Where replicas that a scale adds to a service of a cluster run go: nodes, and ports on those nodes.

Pure like ``_plan.replan`` (the nodes that are up and the port allocator are injected). The service's
``placement:`` decides as in ``_plan.placement.assign_nodes``, but on a running allocation:

- ``{node: i}`` (``nodes: n``): nodes i..i+n-1 of the allocation, refused when one of them is down;
- by default each new replica goes to the up node running the fewest of the run's replicas (the
  allocation's order breaks ties), so a scale from 1 to 3 on 4 idle nodes lands on two other nodes;
- ``{nodes: n}``: the run of n consecutive up nodes (in the allocation's order) with the fewest replicas.

Nodes known down (no longer in the Slurm job, ``_runtime.node_loss``) are never chosen. Ports stay unique per node
address: a ``PortBook`` learns every port the run's replicas hold on each address first.
"""

from __future__ import annotations

from collections.abc import Sequence

from .._spec.model import Service
from .._spec.placement import ClusterNode, ReplicaPlacement
from .placement import LOCAL_HOST, PortBook, replica_placement
from .plan import Plan
from .ports import PortAllocator

__all__ = ["added_placements", "port_book"]


def added_placements(
    plan: Plan, spec: Service, count: int, up: Sequence[ClusterNode] | None, problems: list[str]
) -> list[ReplicaPlacement | None]:
    """Placements for ``count`` new replicas of ``spec``; ``up``: the allocation's nodes still up (None:
    all of ``plan.nodes``). Problems are appended; the list is then not to be used."""
    where = f"service '{spec.name}', field 'placement"
    allocation = tuple(plan.nodes)
    live = tuple(up) if up is not None else allocation
    per_node = spec.gpus.per_replica if spec.gpus is not None else 0
    if not allocation:
        problems.append(f"service '{spec.name}': the run has no Slurm allocation's nodes to place new replicas on")
        return []
    load = _load(plan)
    placement = spec.placement
    span = placement.nodes if placement is not None else 1
    pin = placement.node if placement is not None else None
    live_names = {node.name for node in live}
    if pin is not None:
        pinned = allocation[pin : pin + span]
        down = [node.name for node in pinned if node.name not in live_names]
        if len(pinned) < span:
            problems.append(f"{where}.node': node {pin + span - 1} is beyond the allocation's {len(allocation)} nodes")
        elif down:
            problems.append(f"{where}.node': pinned node {', '.join(down)} is down (it left the Slurm job)")
        return [replica_placement(pinned, per_node) for _ in range(count)]
    if len(live) < span:
        up_names = ", ".join(node.name for node in live) or "none"
        problems.append(
            f"{where}.nodes': a replica on {span} nodes needs {span} up nodes, {len(live)} are up ({up_names})"
        )
        return []
    given: list[ReplicaPlacement | None] = []
    for _ in range(count):
        start = min(range(len(live) - span + 1), key=lambda i: (_weight(load, live[i : i + span]), i))
        nodes = live[start : start + span]
        for node in nodes:
            load[node.name] = load.get(node.name, 0) + 1
        given.append(replica_placement(nodes, per_node))
    return given


def _weight(load: dict[str, int], nodes: Sequence[ClusterNode]) -> int:
    return sum(load.get(node.name, 0) for node in nodes)


def _load(plan: Plan) -> dict[str, int]:
    """How many of the run's replicas each node runs (one per task of a multi-node replica)."""
    load: dict[str, int] = {}
    for service in plan.services:
        for replica in service.replicas:
            if replica.placement is not None:
                for node in replica.placement.nodes:
                    load[node.name] = load.get(node.name, 0) + 1
    return load


def port_book(plan: Plan, ports: PortAllocator) -> PortBook:
    """A ``PortBook`` for new replicas: this machine's ports from ``ports`` (which knows every port the run
    used here, emulated nodes included); on other addresses, every port a replica holds there is taken."""
    book = PortBook(ports.allocate, ports.reserve, ports, ())
    for service in plan.services:
        for replica in service.replicas:
            if replica.placement is not None:
                for node in replica.placement.nodes:
                    if node.address != LOCAL_HOST:
                        for port in replica.ports.values():
                            book.hold(node.address, port)
    return book
