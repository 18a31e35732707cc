"""The ``cluster:`` block and each service's ``placement:``: checks, notes and the ``--slurm`` default.

Checked before anything starts, in YAML and in code alike (``_spec.validate.check_topology`` calls
``check_cluster``). A node index is checked against ``cluster.slurm.nodes`` here; against the real
allocation (which may differ when running inside one) when nodes are assigned (``_plan.placement``).

A ``placement:`` without a ``cluster:`` is ignored, with a note: the same file runs on this machine as
written, and on Slurm with ``--slurm`` (or ``--set cluster.slurm.nodes=N``).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import attrs

from .._units import slurm_time
from .model import Cluster, Placement, Service, SlurmCluster, Topology

__all__ = ["MAX_NODES", "check_cluster", "nodes_needed", "placed", "placement_notes", "with_slurm"]

MAX_NODES = 100_000  #: more nodes than any cluster has: a typo
#: salloc options topovisor sets itself (the node count, the job's name, no shell): not in ``extra``
_OWN_OPTIONS = {
    "-N": "cluster.slurm.nodes",
    "--nodes": "cluster.slurm.nodes",
    "-J": "the run's name",
    "--job-name": "the run's name",
    "--no-shell": "topovisor",
}
_WORD = re.compile(r"\S+")

Report = Callable[[str], None]


def placed(topology: Topology, service: Service) -> bool:
    """Whether ``service`` runs on the cluster's nodes (not on this machine)."""
    return topology.cluster is not None and not (service.placement is not None and service.placement.local)


def _int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_cluster(topology: Topology, report: Report) -> None:
    """Every problem of ``cluster:`` and of the services' ``placement:``, one per call of ``report``."""
    cluster = topology.cluster
    nodes: int | None = None
    if cluster is not None:
        if not isinstance(cluster, Cluster):
            report(f"field 'cluster': expected {{slurm: {{nodes: N, ...}}}}, got {cluster!r}")
            return
        if cluster.slurm is None:
            report("field 'cluster': needs slurm: (the only kind of cluster today), e.g. cluster: {slurm: {nodes: 2}}")
        elif not isinstance(cluster.slurm, SlurmCluster):
            report(f"field 'cluster.slurm': expected {{nodes: N, partition: P, ...}}, got {cluster.slurm!r}")
        else:
            nodes = _check_slurm(cluster.slurm, report)
    for service in topology.services:
        if service.placement is not None:
            _check_placement(service, nodes, cluster is not None, report)
        spans = service.placement is not None and _int(service.placement.nodes) and service.placement.nodes > 1
        if cluster is not None and spans and service.profile is not None:
            report(f"service '{service.name}', field 'profile': not supported for a replica on several nodes")
        if cluster is not None and placed(topology, service) and service.gpus is not None:
            where = f"service '{service.name}', field 'gpus"
            if service.gpus.ids is not None:
                report(f"{where}.ids': on a cluster Slurm picks the GPUs (--gpus-per-node); give a count instead")
            if service.gpus.min_free_memory_bytes is not None:
                report(f"{where}.min_free_memory': not checked on a cluster (Slurm assigns the GPUs); remove it")


def _check_slurm(slurm: SlurmCluster, report: Report) -> int | None:
    """Returns the node count when it is a usable number (for the placement checks)."""
    where = "field 'cluster.slurm"
    nodes: int | None = None
    if not _int(slurm.nodes):
        report(f"{where}.nodes': expected a whole number, got {slurm.nodes!r}")
    elif not 1 <= slurm.nodes <= MAX_NODES:
        report(f"{where}.nodes': must be from 1 to {MAX_NODES}, got {slurm.nodes}")
    else:
        nodes = slurm.nodes
    for name in ("partition", "account", "qos", "constraint"):
        value = getattr(slurm, name)
        if value is None:
            continue
        if not isinstance(value, str) or not value:
            report(f"{where}.{name}': expected a non-empty string, got {value!r}")
        elif "\0" in value or "\n" in value or (name != "constraint" and _WORD.fullmatch(value) is None):
            report(f"{where}.{name}': expected one word (no spaces, no newline), got {value!r}")
    if slurm.time is not None:
        try:
            slurm_time(slurm.time)
        except ValueError as exc:
            report(f"{where}.time': {exc}")
    for arg in slurm.extra:
        if not isinstance(arg, str) or "\0" in arg or "\n" in arg:
            report(f"{where}.extra': expected salloc arguments (strings, one line each), got {arg!r}")
            continue
        option = arg.split("=", 1)[0]
        if option in _OWN_OPTIONS:
            report(f"{where}.extra': {arg!r} is set by topovisor (from {_OWN_OPTIONS[option]}); remove it")
    return nodes


def _check_placement(service: Service, nodes: int | None, on_cluster: bool, report: Report) -> None:
    where = f"service '{service.name}', field 'placement"
    placement = service.placement
    if not isinstance(placement, Placement):
        report(f"{where}': expected local, {{node: i}} or {{nodes: n}}, got {placement!r}")
        return
    if not isinstance(placement.local, bool):
        report(f"{where}.local': expected true or false, got {placement.local!r}")
        return
    if placement.local:
        if placement.node is not None or placement.nodes != 1:
            report(f"{where}': local runs on this machine; it takes no node or nodes")
        return
    pin, span = placement.node, placement.nodes
    span_ok = _int(span) and span >= 1
    if not _int(span):
        report(f"{where}.nodes': expected a whole number, got {span!r}")
    elif span < 1:
        report(f"{where}.nodes': must be 1 or more, got {span}")
    if pin is not None and not _int(pin):
        report(f"{where}.node': expected a node index (0, 1, ...), got {pin!r}")
        return
    if pin is not None and pin < 0:
        report(f"{where}.node': must be 0 or more, got {pin}")
        return
    if not on_cluster or nodes is None or not span_ok:
        return
    if span > nodes:
        report(f"{where}.nodes': a replica on {span} nodes needs {span}, the allocation has {nodes}; {_fix()}")
    elif pin is not None and pin + span > nodes:
        which = f"node {pin} is" if span == 1 else f"nodes {pin}..{pin + span - 1} are"
        report(f"{where}.node': {which} beyond the allocation's {nodes} nodes (0..{nodes - 1}); {_fix()}")
    elif pin is None and span > 1 and _int(service.replicas) and service.replicas * span > nodes:
        report(
            f"{where}.nodes': {service.replicas} replicas of {span} nodes each need {service.replicas * span} "
            f"nodes (each multi-node replica gets nodes of its own), the allocation has {nodes}; {_fix()}, "
            "or run fewer replicas"
        )


def _fix() -> str:
    return "raise cluster.slurm.nodes (or --set cluster.slurm.nodes=N)"


def placement_notes(topology: Topology) -> list[str]:
    """What a reader should know that is not an error: placements ignored without a cluster.

    ``local`` and ``{node: 0}`` hold on one machine as they are (it is the first and only node), so they
    are no news: a preset pins its etcd, NATS and frontend to node 0 for when it runs on a cluster.
    """
    if topology.cluster is not None:
        return []
    ignored = [s.name for s in topology.services if s.placement is not None and not _holds_here(s.placement)]
    if not ignored:
        return []
    names = ", ".join(f"'{name}'" for name in ignored)
    return [
        f"placement of {names} ignored: no cluster: in the file, so everything runs on this machine "
        "(--slurm or --set cluster.slurm.nodes=N runs it on Slurm)"
    ]


def _holds_here(placement: Placement) -> bool:
    return isinstance(placement, Placement) and (
        placement.local or (placement.node in (None, 0) and placement.nodes == 1)
    )


def nodes_needed(topology: Topology) -> int:
    """The fewest nodes the placements fit on: the ``--slurm`` default when the file names no count."""
    needed = 1
    for service in topology.services:
        placement = service.placement
        if placement is None or placement.local or not _int(placement.nodes) or placement.nodes < 1:
            continue
        if _int(placement.node) and placement.node >= 0:  # type: ignore[operator]
            needed = max(needed, placement.node + placement.nodes)  # type: ignore[operator]
        elif placement.nodes > 1 and _int(service.replicas):
            needed = max(needed, service.replicas * placement.nodes)
    return min(needed, MAX_NODES)


def with_slurm(topology: Topology, nodes: int | None = None) -> Topology:
    """The topology on Slurm: ``cluster: {slurm: {}}`` if it has no cluster (as many nodes as its placements
    need), and ``nodes`` (``--nodes N``) as the node count when given."""
    cluster = topology.cluster
    if cluster is None or cluster.slurm is None:
        slurm = SlurmCluster(nodes=nodes_needed(topology) if nodes is None else nodes)
        return attrs.evolve(topology, cluster=Cluster(slurm=slurm))
    if nodes is None:
        return topology
    return attrs.evolve(topology, cluster=attrs.evolve(cluster, slurm=attrs.evolve(cluster.slurm, nodes=nodes)))
