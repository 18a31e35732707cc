"""Planning on a running topology: a service scaled to a new number of replicas, or given a new spec.

Pure like ``_plan.plan`` (the port allocator and the GPU node are injected): the plan in, a new plan out, or one
``ConfigError`` listing every problem and nothing changed. Replicas that stay keep their plan untouched
(argv, ports, GPUs); new ones get free ports and GPUs beside those already given, and their templates are
filled with the new set (``{svc.urls}`` lists them all).

Names are fixed for a replica's life: a service planned with one replica calls it ``svc`` (also reachable
as ``svc.0``) and keeps that name when scaled up; every replica added later is ``svc.<index>``. Renaming a
running replica would break the addresses and log files clients and people already hold.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import attrs

from .._errors import ConfigError
from .._host.gpu_inventory import GpuUnavailable
from .._spec.cluster import placed
from .._spec.model import GpuRequest, PortSpec, Service, Topology
from .._spec.placement import ClusterNode, ReplicaPlacement
from .._spec.validate import MAX_REPLICAS, check_topology
from .._units import counted
from .gpu_assign import GpuNode, GpuWant, assign_gpus
from .placement import PortBook
from .plan import Plan, ReplicaPlan, ServicePlan, _resolve_replica, _service_plan, _shared_context, _skeleton
from .ports import PortAllocator
from .scale_placement import added_placements, port_book

__all__ = [
    "added_name",
    "refilled",
    "respecified",
    "scaled_plan",
    "service_spec",
    "topology_with",
    "with_service",
]


def added_name(service: str, index: int) -> str:
    """The name of a replica added to a running service (see the module's note on names)."""
    return f"{service}.{index}"


def service_spec(plan: Plan, name: str) -> Service:
    """The ``Service`` that ``name`` was planned from."""
    if plan.topology is None:
        raise ConfigError(f"service '{name}': the plan does not carry its topology; plan it with make_plan")
    for service in plan.topology.services:
        if service.name == name:
            return service
    raise KeyError(name)


def scaled_plan(
    plan: Plan,
    name: str,
    replicas: int,
    *,
    ports: PortAllocator,
    read_node: Callable[[], GpuNode],
    up: Sequence[ClusterNode] | None = None,
) -> Plan:
    """``plan`` with service ``name`` at ``replicas``: the highest-numbered removed, or new ones planned.

    On a cluster run the new replicas of a service placed on the nodes get nodes of the allocation
    (``_plan.scale_placement``; ``up``: its nodes still up, None = all) and ports unique on those nodes' addresses.

    ``ports`` hands out the new replicas' ports (it must know every port of the run); ``read_node`` gives
    the GPU node, read only when the new replicas need GPUs. ``ConfigError`` (nothing allocated on the
    node, nothing started) for a count that cannot be: negative, below ``min_ready``, a fixed port shared,
    GPUs that do not fit (the message shows the whole plan).
    """
    current = plan.service(name)
    spec = service_spec(plan, name)
    where = f"service '{name}'"
    problems: list[str] = []
    if isinstance(replicas, bool) or not isinstance(replicas, int) or not 0 <= replicas <= MAX_REPLICAS:
        problems.append(f"{where}: replicas must be a whole number from 0 to {MAX_REPLICAS}, got {replicas!r}")
    elif current.min_ready is not None and replicas < current.min_ready:
        problems.append(f"{where}: {counted(replicas, 'replica')} would be below its min_ready of {current.min_ready}")
    if problems:
        raise ConfigError([f"scale to {replicas}: {p}" for p in problems], source=plan.source)
    if replicas <= len(current.replicas):
        kept = current.replicas[:replicas]
        return _replaced(plan, attrs.evolve(current, replicas=kept), attrs.evolve(spec, replicas=replicas))
    for port in spec.ports:
        if port.number is not None and replicas > 1:
            problems.append(
                f"{where}, field 'ports': fixed port {port.name}: {port.number} would be bound by all {replicas} "
                "replicas; leave it empty to get one free port each"
            )
    indices = range(len(current.replicas), replicas)
    names = [added_name(name, index) for index in indices]
    on_nodes = plan.topology is not None and placed(plan.topology, spec)
    if on_nodes:  # Slurm gives the GPUs on the nodes (per node, as at the start)
        placements = added_placements(plan, spec, len(names), up, problems)
        gpus: dict[str, tuple[int, ...]] = {}
        vendor = plan.gpu_vendor
    else:
        placements = [None] * len(names)
        gpus, vendor = _assign_added(plan, name, spec.gpus, names, read_node, problems)
    if problems:
        raise ConfigError([f"scale to {replicas}: {p}" for p in problems], source=plan.source)
    spec = attrs.evolve(spec, replicas=replicas)
    book = port_book(plan, ports) if on_nodes else None
    skeletons = tuple(
        attrs.evolve(
            _skeleton(spec, index, _ports_on(spec.ports, ports, book, placement), gpus.get(new, ()), placement, vendor),
            name=new,
        )
        for index, new, placement in zip(indices, names, placements, strict=True)
    )
    grown = attrs.evolve(current, replicas=current.replicas + skeletons)
    shared = _shared_context(tuple(grown if s.name == name else s for s in plan.services), plan.run_dir)
    resolved = tuple(_resolve_replica(spec, s, shared, problems, _unused_which, False) for s in skeletons)
    if problems:
        raise ConfigError([f"scale to {replicas}: {p}" for p in dict.fromkeys(problems)], source=plan.source)
    grown_plan = _replaced(plan, attrs.evolve(current, replicas=current.replicas + resolved), spec)
    return attrs.evolve(grown_plan, gpu_vendor=vendor) if gpus else grown_plan


def _replaced(plan: Plan, service: ServicePlan, spec: Service) -> Plan:
    services = tuple(service if s.name == service.name else s for s in plan.services)
    topology = None if plan.topology is None else topology_with(plan.topology, spec)
    return attrs.evolve(plan, services=services, topology=topology)


def _unused_which(name: str, path: str | None) -> str | None:
    """Executables were checked when the run was planned; a scale does not look them up again."""
    return name


def _ports_on(
    specs: Sequence[PortSpec], ports: PortAllocator, book: PortBook | None, placement: ReplicaPlacement | None
) -> dict[str, int]:
    """The new replica's ports: free on this machine, or (``book``) on every address of its nodes."""
    if book is None or placement is None:
        return _pick_ports(specs, ports)
    return {port.name: book.pick(port, [node.address for node in placement.nodes]) for port in specs}


def _pick_ports(specs: Sequence[PortSpec], ports: PortAllocator) -> dict[str, int]:
    picked = {}
    for port in specs:
        if port.number is not None:
            picked[port.name] = port.number
        elif port.below is not None:
            picked[port.name] = ports.allocate_below(port.below)
        else:
            picked[port.name] = ports.allocate()
    return picked


def _assign_added(
    plan: Plan,
    name: str,
    request: GpuRequest | None,
    names: Sequence[str],
    read_node: Callable[[], GpuNode],
    problems: list[str],
) -> tuple[dict[str, tuple[int, ...]], str]:
    """GPUs for the new replicas, beside those the run's replicas hold (pinned as explicit ids), and the
    node's vendor (the plan's when no node is read)."""
    if request is None or not request.per_replica or not names:
        return {}, plan.gpu_vendor
    try:
        node = read_node()
    except GpuUnavailable as exc:
        problems.append(f"service '{name}' needs GPUs but {exc}; {exc.hint}")
        return {}, plan.gpu_vendor
    held = [
        GpuWant(replica.service, replica.name, GpuRequest(ids=replica.gpus))
        for service in plan.services
        for replica in service.replicas
        if replica.gpus
    ]
    given, problem = assign_gpus([*held, *(GpuWant(name, new, request) for new in names)], node)
    if problem is not None:
        problems.append(problem)
    return given, node.vendor


def topology_with(topology: Topology, service: Service) -> Topology:
    """``topology`` with ``service`` in place of the one of the same name."""
    return attrs.evolve(topology, services=tuple(service if s.name == service.name else s for s in topology.services))


def respecified(
    plan: Plan, spec: Service, *, which: Callable[[str, str | None], str | None] | None = None
) -> ServicePlan:
    """The service's plan from a new ``spec`` (a rolling restart's ``--set`` or new code): each replica
    keeps its name, index, ports and GPUs, so the addresses clients hold stay valid; templates are filled
    again with the run as it is. ``ConfigError`` (nothing stopped) for a spec that is invalid, or that would
    change what a rollout cannot: its ports, GPUs per replica or dependencies (those need a new run)."""
    import shutil

    current = plan.service(spec.name)
    old = service_spec(plan, spec.name)
    spec = attrs.evolve(spec, replicas=len(current.replicas))  # a rollout keeps the count: see scale
    problems: list[str] = []
    where = f"service '{spec.name}'"
    check_topology(topology_with(plan.topology or Topology(name=plan.name, services=(spec,)), spec), problems.append)
    if problems:
        raise ConfigError([f"rolling restart: {p}" for p in problems], source=plan.source)
    if spec.ports != old.ports:
        names = ", ".join(p.name for p in old.ports) or "none"
        problems.append(
            f"{where}, field 'ports': a rolling restart keeps each replica's ports ({names}); got other ports"
        )
    old_gpus = old.gpus.per_replica if old.gpus is not None else 0
    new_gpus = spec.gpus.per_replica if spec.gpus is not None else 0
    if new_gpus != old_gpus or (spec.gpus is not None and spec.gpus.ids != (old.gpus.ids if old.gpus else None)):
        problems.append(f"{where}, field 'gpus': a rolling restart keeps each replica's GPUs ({old_gpus} each)")
    if spec.depends_on != old.depends_on:
        problems.append(f"{where}, field 'depends_on': a rolling restart cannot change dependencies")
    if problems:
        raise ConfigError([f"rolling restart: {p}" for p in problems], source=plan.source)
    shaped = _service_plan(spec, [dict(r.ports) for r in current.replicas], plan.strategy, {})
    lookup = which or (lambda name, path: shutil.which(name, path=path))
    resolved = _filled(plan, spec, current, problems, lookup, check_files=True)
    if problems:
        raise ConfigError([f"rolling restart: {p}" for p in dict.fromkeys(problems)], source=plan.source)
    return attrs.evolve(shaped, replicas=resolved, depends_on=current.depends_on)


def refilled(plan: Plan, name: str) -> ServicePlan:
    """The service's replicas as planned now from its spec: templates filled with the run as it is (after
    a scale, ``{decode.urls}`` lists the new set); names, ports and GPUs as they are. ``ConfigError`` when
    a template no longer fills (``{decode.3.url}`` once decode.3 is gone)."""
    current = plan.service(name)
    spec = attrs.evolve(service_spec(plan, name), replicas=len(current.replicas))
    problems: list[str] = []
    resolved = _filled(plan, spec, current, problems, _unused_which, check_files=False)
    if problems:
        raise ConfigError(list(dict.fromkeys(problems)), source=plan.source)
    return attrs.evolve(current, replicas=resolved)


def _filled(
    plan: Plan,
    spec: Service,
    current: ServicePlan,
    problems: list[str],
    which: Callable[[str, str | None], str | None],
    *,
    check_files: bool,
) -> tuple[ReplicaPlan, ...]:
    """Each replica of ``current`` planned from ``spec`` again, keeping its name, index, ports and GPUs."""
    skeletons = tuple(
        attrs.evolve(_skeleton(spec, r.index, dict(r.ports), r.gpus, r.placement, plan.gpu_vendor), name=r.name)
        for r in current.replicas
    )
    shared = _shared_context(plan.services, plan.run_dir)
    return tuple(_resolve_replica(spec, s, shared, problems, which, check_files) for s in skeletons)


def with_service(plan: Plan, service: ServicePlan, spec: Service | None = None) -> Plan:
    """``plan`` with ``service`` (and its spec, when given) in place of those of the same name."""
    services = tuple(service if s.name == service.name else s for s in plan.services)
    topology = plan.topology if spec is None or plan.topology is None else topology_with(plan.topology, spec)
    return attrs.evolve(plan, services=services, topology=topology)
