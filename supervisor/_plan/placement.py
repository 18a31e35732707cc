"""Which nodes of an allocation each replica runs on, its ports there, and its per-task templates.

Pure planning (no event loop): ``make_plan`` calls it when the topology has a ``cluster:`` and the
allocation's nodes are known (the launcher's, or ``placeholder_nodes`` for ``validate`` and ``sbatch``).

- ``placement: {node: i}`` pins every replica to node i (``{node: i, nodes: n}``: nodes i..i+n-1);
- by default replicas spread round-robin over the nodes, one cursor for the whole topology, services in
  start order, so deterministic (``etcd`` pinned, ``prefill`` x2, ``decode`` x1: nodes 0, 1, 2);
- ``{nodes: n}`` gives each replica n consecutive nodes of its own (one task per node): the service's
  replicas take one run of nodes from the cursor, or from node 0 when they do not fit before the end;
- ``local`` runs on this machine, as does every service when there is no cluster.

Ports: a port is unique per node address. Emulated nodes share this host's address, so they share its
allocator with the local services; a replica on several nodes gets one port number free on all of them
(its tasks share it: the leader serves it; on emulated nodes, tasks that all bind must offset it by
``{node_rank}``). Only an address of this machine can be checked for being free; on other machines ports
come from ``REMOTE_PORTS``, below the usual ephemeral range.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

from .._spec.cluster import MAX_NODES, placed
from .._spec.model import PortSpec, Topology
from .._spec.placement import ClusterNode, ReplicaPlacement
from .ports import PortAllocator

__all__ = [
    "REMOTE_PORTS",
    "PortBook",
    "assign_nodes",
    "gpus_per_node_needed",
    "placeholder_nodes",
    "planning_nodes",
    "replica_placement",
    "task_templates",
]

#: where ports come from on an address we cannot check (another machine): below the usual ephemeral range
REMOTE_PORTS = (20000, 32768)
LOCAL_HOST = "127.0.0.1"

NodeSets = dict[str, list[tuple[ClusterNode, ...] | None]]  #: service -> per replica: its nodes, or None = here


def placeholder_nodes(count: int) -> tuple[ClusterNode, ...]:
    """Nodes ``node0 .. node{count-1}`` (each its own address): planning without an allocation."""
    return tuple(ClusterNode(f"node{i}", f"node{i}") for i in range(count))


def planning_nodes(topology: Topology) -> tuple[ClusterNode, ...] | None:
    """Placeholder nodes for planning without an allocation, when the topology has a cluster."""
    slurm = topology.cluster.slurm if topology.cluster is not None else None
    count = slurm.nodes if slurm is not None else None
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_NODES:
        return None  # no cluster, or a bad count that planning reports
    return placeholder_nodes(count)


def assign_nodes(
    topology: Topology, order: Sequence[str], nodes: Sequence[ClusterNode], report: Callable[[str], None]
) -> NodeSets:
    """Each replica's nodes (rank order), services in ``order``; problems against this allocation reported.

    ``check_cluster`` already checked the placements against ``cluster.slurm.nodes``; an allocation we
    run inside may have fewer nodes, so the same limits are checked here against the real one.
    """
    services = {s.name: s for s in topology.services}
    count = len(nodes)
    cursor = 0
    given: NodeSets = {}
    for name in order:
        service = services[name]
        if not placed(topology, service):
            given[name] = [None] * service.replicas
            continue
        placement = service.placement
        span = placement.nodes if placement is not None else 1
        pin = placement.node if placement is not None else None
        where = f"service '{name}', field 'placement"
        if count == 0:
            report(f"{where}': the allocation has no nodes")
            return given
        if pin is not None:
            if pin + span > count:
                which = f"node {pin} is" if span == 1 else f"nodes {pin}..{pin + span - 1} are"
                report(f"{where}.node': {which} beyond the allocation's {count} nodes ({_names(nodes)})")
                continue
            given[name] = [tuple(nodes[pin : pin + span])] * service.replicas
        elif span == 1:
            given[name] = [(nodes[(cursor + r) % count],) for r in range(service.replicas)]
            cursor = (cursor + service.replicas) % count
        else:
            total = span * service.replicas
            if span > count:
                have = f"the allocation has {count} ({_names(nodes)})"
                report(f"{where}.nodes': a replica on {span} nodes needs {span}, {have}")
                continue
            if total > count:
                report(
                    f"{where}.nodes': {service.replicas} replicas of {span} nodes each need {total} nodes, "
                    f"the allocation has {count} ({_names(nodes)})"
                )
                continue
            start = cursor if cursor + total <= count else 0
            given[name] = [tuple(nodes[start + r * span : start + (r + 1) * span]) for r in range(service.replicas)]
            cursor = (start + total) % count
    return given


def _names(nodes: Sequence[ClusterNode]) -> str:
    shown = ", ".join(node.name for node in nodes[:8])
    return shown + (f", ... {len(nodes) - 8} more" if len(nodes) > 8 else "")


def gpus_per_node_needed(placements: Iterable[ReplicaPlacement | None]) -> int:
    """The most GPUs the replicas placed on any one node ask for: what the allocation must hold per node
    (``--gpus-per-node`` of ``salloc`` / ``#SBATCH``)."""
    per_node: dict[str, int] = {}
    for placement in placements:
        if placement is not None:
            for node in placement.nodes:
                per_node[node.name] = per_node.get(node.name, 0) + placement.gpus_per_node
    return max(per_node.values(), default=0)


def replica_placement(nodes: tuple[ClusterNode, ...] | None, gpus_per_node: int) -> ReplicaPlacement | None:
    """The replica's placement before its commands are filled (``argvs`` come with the templates)."""
    return None if nodes is None else ReplicaPlacement(nodes, (), gpus_per_node)


def task_templates(placement: ReplicaPlacement | None, host: str) -> Iterator[dict[str, str]]:
    """``{host}``, ``{node_rank}``, ``{nnodes}``, ``{leader_host}`` for each task, rank 0 first.

    A replica on this machine is one task on ``host``: the same templates work with and without a cluster.
    """
    if placement is None:
        yield {"host": host, "node_rank": "0", "nnodes": "1", "leader_host": host}
        return
    leader = placement.nodes[0].address
    for rank, node in enumerate(placement.nodes):
        yield {"host": node.address, "node_rank": str(rank), "nnodes": str(len(placement.nodes)), "leader_host": leader}


class _Addressed:
    """The ports handed out on one node address; checked for being free only on this machine's addresses."""

    def __init__(self, address: str, fixed: Iterable[int]) -> None:
        self.checked = _is_own_address(address)
        self.allocator = PortAllocator(address)
        for port in fixed:
            self.allocator.reserve(port)

    def allocate(self, below: int | None) -> int:
        if self.checked:
            return self.allocator.allocate_below(below) if below is not None else self.allocator.allocate()
        low, high = (max(1024, below // 2), below) if below is not None else REMOTE_PORTS
        for _ in range(high - low):
            port = random.randrange(low, high)
            if self.is_free(port):
                self.allocator.reserve(port)
                return port
        raise RuntimeError(f"no port left in {low}..{high - 1} on {self.allocator.host}")

    def is_free(self, port: int) -> bool:
        if self.allocator.taken(port):
            return False
        return not self.checked or _bindable(self.allocator.host, port)

    def reserve(self, port: int) -> None:
        self.allocator.reserve(port)


class PortBook:
    """Ports per node address, never the same port twice on one address.

    This machine's loopback keeps the allocator ``make_plan`` was given (tests inject theirs), so local
    services and replicas on emulated nodes (which share it) never collide.
    """

    def __init__(
        self,
        allocate: Callable[[], int],
        reserve: Callable[[int], None],
        low_ports: PortAllocator,
        fixed: Sequence[int],
    ) -> None:
        self._allocate, self._reserve, self._low = allocate, reserve, low_ports
        self._fixed = tuple(fixed)
        for port in self._fixed:  # never handed out on this machine, nor on any node
            self._hold_here(port)
        self._others: dict[str, _Addressed] = {}

    def pick(self, port: PortSpec, addresses: Sequence[str] = ()) -> int:
        """``port``'s number for a replica on ``addresses`` (its nodes; none = this machine)."""
        if port.number is not None:
            return port.number
        wanted = list(dict.fromkeys(a for a in addresses if a != LOCAL_HOST))
        here = not addresses or len(wanted) < len(dict.fromkeys(addresses))
        if not wanted:
            return self._here(port.below)
        others = [self._other(address) for address in wanted]
        for _ in range(1000):
            number = self._here(port.below) if here else others[0].allocate(port.below)
            rest = others if here else others[1:]
            if all(other.is_free(number) for other in rest):
                for other in rest:
                    other.reserve(number)
                return number
        raise RuntimeError(f"no port free on all of {', '.join(addresses)} after 1000 tries")

    def hold(self, address: str, port: int) -> None:
        """``port`` is taken on ``address`` (a replica already holds it there): never handed out on it."""
        if address == LOCAL_HOST:
            self._hold_here(port)
        else:
            self._other(address).reserve(port)

    def _here(self, below: int | None) -> int:
        """A port on this machine. An injected allocator and the one for ports ``below`` a limit each learn
        what the other handed out: separate, they gave a ``below`` port the number of a plain one."""
        number = self._allocate() if below is None else self._low.allocate_below(below)
        self._hold_here(number)
        return number

    def _hold_here(self, port: int) -> None:
        """Taken on this machine, for both allocators."""
        self._reserve(port)
        self._low.reserve(port)

    def _other(self, address: str) -> _Addressed:
        if address not in self._others:
            self._others[address] = _Addressed(address, self._fixed)
        return self._others[address]

    def addresses(self) -> Mapping[str, bool]:
        """Each address ports were planned on, and whether it could be checked for free ports."""
        return {LOCAL_HOST: True, **{a: other.checked for a, other in self._others.items()}}


def _is_own_address(address: str) -> bool:
    """An IP address of this machine (we can bind it); a host name is taken as another machine's."""
    try:
        import ipaddress  # only for nodes' addresses: a plain plan is on the CLI's fast path

        ipaddress.ip_address(address)
    except ValueError:
        return False
    return _bindable(address, 0)


def _bindable(address: str, port: int) -> bool:
    import socket  # only for nodes' addresses, as ipaddress above

    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((address, port))
        except OSError:
            return False
    return True
