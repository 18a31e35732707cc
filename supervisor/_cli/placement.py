"""What ``supervisor validate`` shows of a placement plan: where each replica runs, per node what lands there.

Text only, from a ``Plan``; nothing is started and no cluster is needed (``validate FILE --nodes 4`` plans
on placeholder nodes ``node0..node3``).
"""

from __future__ import annotations

import argparse

from .._plan.plan import Plan, ReplicaPlan
from .._spec.cluster import MAX_NODES

__all__ = ["node_count", "placement_lines", "where_it_runs"]


def node_count(text: str) -> int:
    """``--nodes N``: a whole number of nodes, checked by argparse (exit 2 with its message)."""
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of nodes, got {text!r}") from None
    if not 1 <= count <= MAX_NODES:
        raise argparse.ArgumentTypeError(f"must be from 1 to {MAX_NODES}, got {count}")
    return count


def where_it_runs(replica: ReplicaPlan) -> str:
    """``on: node2,node3 (2 tasks)  gpus/node: 4`` or ``on: this machine``."""
    placement = replica.placement
    if placement is None:
        return "on: this machine"
    names = ",".join(node.name for node in placement.nodes)
    tasks = f" ({len(placement.nodes)} tasks)" if len(placement.nodes) > 1 else ""
    gpus = f"  gpus/node: {placement.gpus_per_node}" if placement.gpus_per_node else ""
    return f"on: {names}{tasks}{gpus}"


def placement_lines(plan: Plan) -> list[str]:
    """The plan seen from the nodes: each node's replicas (rank of a multi-node one) and GPUs asked there."""
    if not plan.nodes:
        return []
    slurm = plan.cluster.slurm if plan.cluster is not None else None
    settings = []
    if slurm is not None:
        for name in ("partition", "account", "time", "qos", "constraint"):
            value = getattr(slurm, name)
            if value is not None:
                settings.append(f"{name} {value}")
        if slurm.extra:
            settings.append("extra " + " ".join(slurm.extra))
    head = f"placement on {len(plan.nodes)} Slurm nodes" + (f" ({', '.join(settings)})" if settings else "")
    lines = [head + ":"]
    on_node: dict[str, list[str]] = {node.name: [] for node in plan.nodes}
    gpus: dict[str, int] = dict.fromkeys(on_node, 0)
    here: list[str] = []
    for service in plan.services:
        for replica in service.replicas:
            if replica.placement is None:
                here.append(replica.name)
                continue
            several = len(replica.placement.nodes) > 1
            for rank, node in enumerate(replica.placement.nodes):
                on_node[node.name].append(f"{replica.name} (rank {rank})" if several else replica.name)
                gpus[node.name] += replica.placement.gpus_per_node
    width = max(len(name) for name in [*on_node, "this machine"])
    for name, replicas in on_node.items():
        asked = f"  [{gpus[name]} GPUs]" if gpus[name] else ""
        lines.append(f"  {name:<{width}}  {', '.join(replicas) or '-'}{asked}")
    if here:
        lines.append(f"  {'this machine':<{width}}  {', '.join(here)}")
    return lines
