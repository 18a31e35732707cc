"""Validate a ``Topology`` and resolve it into a ``Plan``: start order, ports, templates, commands.

Everything here happens before any process starts; every problem found is reported at once, each
naming the service and the field. Pure apart from the two injected look-ups (free ports, executables).
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
from collections import ChainMap
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from .._errors import ConfigError, suggest
from .._host.gpu_vendors import NVIDIA
from .._records.paths import default_runs_dir
from .._spec.fatal import BUILTIN_FATAL_PATTERNS
from .._spec.model import (
    AllOf,
    AnyOf,
    CallableCheck,
    Check,
    Cluster,
    Dependency,
    ExecCheck,
    GpuRequest,
    HttpCheck,
    LogCheck,
    LogPolicy,
    Phase,
    Probe,
    Profile,
    ResourceLimits,
    RestartPolicy,
    Service,
    StopPolicy,
    TcpCheck,
    Topology,
)
from .._spec.placement import ClusterNode, ReplicaPlacement
from .._spec.profile import PlannedProfile, plan_profile, profile_tool_hint
from .._spec.validate import (
    check_executable,
    check_replica,
    check_run_dir,
    check_topology,
    dependency_graph,
    find_cycle,
)
from .api_routes import api_routes
from .placement import PortBook, assign_nodes, replica_placement, task_templates

if TYPE_CHECKING:  # GPUs and clusters load when a topology uses them: a plain plan is on the CLI's fast path
    from .._host.gpu_inventory import GpuInventory
    from .._host.slurm_alloc import SlurmAllocation

__all__ = [
    "Plan",
    "ReplicaPlan",
    "ServicePlan",
    "fill_command",
    "make_plan",
    "plan_in",
]

HOST = "127.0.0.1"
_TEMPLATE = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+)*)\}")
_SHARED_NAMES = ("run_dir", "python", "host", "endpoints")  #: templates that mean the same outside any service


@attrs.frozen
class ReplicaPlan:
    """One process to run, fully resolved."""

    service: str
    index: int
    name: str  #: ``svc`` for a single replica, ``svc.<n>`` otherwise
    argv: tuple[str, ...]
    env: Mapping[str, str] = attrs.field(hash=False)  #: added to the caller's environment
    cwd: str | None
    ports: Mapping[str, int] = attrs.field(hash=False)
    ready: Probe | None
    stop: StopPolicy
    log: LogPolicy
    host: str = HOST
    alive: Probe | None = None
    gpus: tuple[int, ...] = ()  #: assigned GPU indices (NVML's / HIP's); CUDA_ or HIP_VISIBLE_DEVICES
    profile: PlannedProfile | None = None  #: the profiler (``argv`` is already wrapped) and its output
    metrics: str | None = None  #: this replica's Prometheus endpoint, templates filled
    #: its routes, NAME -> URL: the service's ``api`` paths on ``url``, then its probes' and ``metrics``
    api: Mapping[str, str] = attrs.field(factory=dict, hash=False)
    placement: ReplicaPlacement | None = None  #: its nodes on a cluster; None = this machine
    #: inherited variables the process must not get (on AMD GPUs: ``CUDA_VISIBLE_DEVICES`` and
    #: ``ROCR_VISIBLE_DEVICES``, which would disagree with its ``HIP_VISIBLE_DEVICES``)
    unset_env: tuple[str, ...] = ()

    def environment(self, inherited: Mapping[str, str]) -> dict[str, str]:
        """``inherited`` with ``env`` added and ``unset_env`` taken out: what the process starts with."""
        merged = {**inherited, **self.env}
        for name in self.unset_env:
            merged.pop(name, None)
        return merged

    @property
    def port(self) -> int | None:
        return next(iter(self.ports.values()), None)

    @property
    def url(self) -> str | None:
        port = self.port
        return None if port is None else f"http://{self.host}:{port}"


@attrs.frozen
class ServicePlan:
    """One service, resolved: everything the runtime needs without reading the ``Service`` again."""

    name: str
    replicas: tuple[ReplicaPlan, ...]
    depends_on: tuple[Dependency, ...]
    restart: RestartPolicy = attrs.field(factory=RestartPolicy)
    fatal: tuple[str, ...] = ()  #: regexes: the user's, then the built-in ones unless builtin_fatal is false
    min_ready: int | None = None  #: stay up, degraded, while at least this many replicas are ready
    strategy: str = "one_for_one"  #: the service's own strategy, else the topology's
    gpus: GpuRequest | None = None  #: what each replica asked for (the assignment is on the replicas)
    phases: tuple[Phase, ...] = ()  #: startup phases, in order
    resources: ResourceLimits | None = None  #: limits set on each replica's cgroup


@attrs.frozen
class Plan:
    """A validated topology: services in start order (dependencies first, ties in file order)."""

    name: str
    run_id: str
    run_dir: Path
    services: tuple[ServicePlan, ...]
    source: str | None = None
    strategy: str = "one_for_one"
    cluster: Cluster | None = None  #: the topology's ``cluster:``; None = this machine only
    nodes: tuple[ClusterNode, ...] = ()  #: the allocation's nodes the replicas were placed on (rank order)
    #: the spec it was planned from: a scale or a rollout plans new replicas from it (``_plan.replan``)
    topology: Topology | None = attrs.field(default=None, eq=False, repr=False)
    gpu_vendor: str = "nvidia"  #: whose GPUs were assigned (``gpu_inventory.NVIDIA`` / ``AMD``): their variables
    containment: str = "auto"  #: the topology's ``containment`` (``_host.containment.CHOICES``)

    def service(self, name: str) -> ServicePlan:
        for service in self.services:
            if service.name == name:
                return service
        raise KeyError(name)

    def dependents(self, name: str) -> list[str]:
        return [s.name for s in self.services if any(d.service == name for d in s.depends_on)]

    def dependents_closure(self, name: str) -> list[str]:
        """``name`` and everything that depends on it, transitively, in start order."""
        found = {name}
        for service in self.services:  # start order: dependencies come before dependents
            if any(d.service in found for d in service.depends_on):
                found.add(service.name)
        return [s.name for s in self.services if s.name in found]

    def context(self) -> dict[str, str]:
        """Templates usable outside any service (e.g. the CLI's ``-- CMD``): ``{svc.url}``, ``{run_dir}``."""
        return _shared_context(self.services, self.run_dir)

    def client_env(self) -> dict[str, str]:
        """What a client finds in its environment: ``TOPOVISOR_<SERVICE>_URL``/``_URLS``/``_PORT`` and
        ``TOPOVISOR_RUN_DIR`` (see ``supervisor run FILE -- CMD``); ``ConfigError`` on a name collision."""
        from .client_env import client_environment

        return client_environment(self)


def make_plan(
    topology: Topology,
    *,
    runs_dir: str | os.PathLike[str] | None = None,
    allocate_port: Callable[[], int] | None = None,
    reserve_port: Callable[[int], None] | None = None,
    which: Callable[[str, str | None], str | None] | None = None,
    check_executables: bool = True,
    gpus: GpuInventory | str | None = None,
    nodes: Sequence[ClusterNode] | None = None,
) -> Plan:
    """Validate ``topology`` and resolve it; raises one ``ConfigError`` listing every problem.

    ``gpus`` is the node to assign GPUs on: an inventory, a simulated node such as ``"8x80GB"``, or None
    for NVML (opened only when a service asks for GPUs; without it that is a ``ConfigError``).
    ``nodes``: the allocation's nodes when the topology has a ``cluster:``; each replica then gets its
    nodes (``ReplicaPlan.placement``, see ``_plan.placement``). Without them everything runs here."""
    from .ports import PortAllocator

    low_ports = PortAllocator(HOST)  # ports that must stay below a limit (PortSpec.below)
    if allocate_port is None or reserve_port is None:
        allocate_port, reserve_port = low_ports.allocate, low_ports.reserve
    which = which or (lambda name, path: shutil.which(name, path=path))
    problems: list[str] = []
    report = problems.append
    waiting = check_topology(topology, report)
    base_field = "field 'run_dir'" if runs_dir is None and topology.run_dir else "runs dir"
    try:
        base = Path(runs_dir or topology.run_dir or default_runs_dir()).expanduser().absolute()
    except RuntimeError as exc:  # ~user of an unknown user
        report(f"{base_field}: {exc}")
    else:
        check_run_dir(base, base_field, report)
    if problems:  # what follows relies on well-typed fields
        raise ConfigError(list(dict.fromkeys(problems)), source=topology.source, waiting=waiting)
    services = {s.name: s for s in topology.services}
    order = _start_order(topology, problems)
    fixed = _check_ports(topology, problems)
    on_nodes = tuple(nodes) if topology.cluster is not None and nodes is not None else None
    where = assign_nodes(topology, order, on_nodes, problems.append) if on_nodes is not None else {}
    if problems:
        raise ConfigError(problems, source=topology.source)

    run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{topology.name}-{os.urandom(3).hex()}"
    run_dir = base / run_id
    book = PortBook(allocate_port, reserve_port, low_ports, fixed)
    ports: dict[str, list[dict[str, int]]] = {}
    for name in order:
        service = services[name]
        placed = where.get(name) or [None] * service.replicas
        ports[name] = [
            {p.name: book.pick(p, [n.address for n in placed[i] or ()]) for p in service.ports}
            for i in range(service.replicas)
        ]
    here = [services[name] for name in order if not any(where.get(name) or ())]  # Slurm assigns the others
    assigned, vendor = _assign_gpus(here, gpus, problems)  # reported with the rest
    _check_placed_vendor([s for s in services.values() if s not in here], gpus, problems)
    skeletons = tuple(
        _service_plan(services[name], ports[name], topology.strategy, assigned, where.get(name), vendor)
        for name in order
    )
    shared = _shared_context(skeletons, run_dir)
    resolved = []
    for plan in skeletons:
        service = services[plan.name]
        replicas = tuple(
            _resolve_replica(service, replica, shared, problems, which, check_executables) for replica in plan.replicas
        )
        resolved.append(attrs.evolve(plan, replicas=replicas))
    if problems:
        raise ConfigError(list(dict.fromkeys(problems)), source=topology.source)
    return Plan(
        topology.name, run_id, run_dir, tuple(resolved), topology.source, topology.strategy, topology.cluster,
        on_nodes or (), topology, vendor, topology.containment,
    )  # fmt: skip


def _assign_gpus(
    services: Sequence[Service], gpus: GpuInventory | str | None, problems: list[str]
) -> tuple[dict[str, tuple[int, ...]], str]:
    """Replica name -> GPU indices, and the node's vendor; the node is read only when some replica asks for
    a GPU (NVIDIA's variables otherwise: nothing is assigned)."""
    if all(service.gpus is None for service in services):
        return {}, NVIDIA
    from .._host.gpu_inventory import GpuUnavailable
    from .._host.gpu_visible import open_inventory
    from .gpu_assign import GpuNode, GpuWant, assign_gpus

    wants = [
        GpuWant(service.name, _replica_name(service, index), _all_nodes_here(service.gpus, service))
        for service in services
        if service.gpus is not None
        for index in range(service.replicas)
    ]
    if not any(want.request.per_replica for want in wants):
        return {}, NVIDIA
    try:
        node = GpuNode.read(open_inventory(gpus))
    except GpuUnavailable as exc:
        needing = list(dict.fromkeys(f"'{w.service}'" for w in wants if w.request.per_replica))
        who = f"service {needing[0]} needs" if len(needing) == 1 else f"services {', '.join(needing)} need"
        problems.append(f"{who} GPUs but {exc}; {exc.hint}")
        return {}, NVIDIA
    given, problem = assign_gpus(wants, node)
    if problem is not None:
        problems.append(problem)
    return given, node.vendor


def _check_placed_vendor(services: Sequence[Service], gpus: GpuInventory | str | None, problems: list[str]) -> None:
    """On a cluster Slurm gives the GPUs, so the nodes' are not read; a node given as ``gpus`` (``--gpus
    8xMI300X``) stands for them, and a program for the other vendor's GPUs (TensorRT-LLM on AMD) is refused."""
    wanting = [s for s in services if s.gpus is not None and s.gpus.vendor is not None and s.gpus.per_replica]
    if gpus is None or not wanting:
        return
    from .._host.gpu_inventory import gpu_vendor
    from .._host.gpu_visible import open_inventory

    node = open_inventory(gpus)
    vendor = gpu_vendor(node)
    for service in wanting:
        if service.gpus is not None and service.gpus.vendor != vendor:
            problems.append(
                f"service '{service.name}', field 'gpus': runs on {service.gpus.vendor} GPUs only "
                f"(gpus: vendor: {service.gpus.vendor}); the nodes ({node.description}) have {vendor} GPUs"
            )


def _all_nodes_here(request: GpuRequest, service: Service) -> GpuRequest:
    """``gpus`` is per node; a replica placed on n nodes that runs here instead (no cluster: its placement is
    ignored, one process, e.g. SGLang with ``--nnodes 1`` and ``--tp-size`` counting every node's GPUs)
    needs the n nodes' GPUs on this machine."""
    nodes = service.placement.nodes if service.placement is not None else 1
    if nodes <= 1 or request.ids is not None:
        return request
    return attrs.evolve(request, count=request.count * nodes)


def _service_plan(
    service: Service,
    ports: list[dict[str, int]],
    strategy: str,
    gpus: Mapping[str, tuple[int, ...]],
    nodes: Sequence[tuple[ClusterNode, ...] | None] | None = None,
    vendor: str = "nvidia",
) -> ServicePlan:
    fatal = service.fatal + (tuple(BUILTIN_FATAL_PATTERNS.values()) if service.builtin_fatal else ())
    per_node = service.gpus.per_replica if service.gpus is not None else 0
    placements = [replica_placement(nodes[i] if nodes else None, per_node) for i in range(service.replicas)]
    return ServicePlan(
        service.name,
        tuple(
            _skeleton(service, i, ports[i], gpus.get(_replica_name(service, i), ()), placements[i], vendor)
            for i in range(service.replicas)
        ),
        service.depends_on,
        restart=service.restart,
        fatal=fatal,
        min_ready=service.min_ready,
        strategy=service.strategy or strategy,
        gpus=service.gpus,
        phases=service.phases,
        resources=service.resources,
    )


def _start_order(topology: Topology, problems: list[str]) -> list[str]:
    """Kahn's algorithm, ties broken by file order; a cycle (``check_topology`` reports it first) stops it."""
    names = [s.name for s in topology.services]
    deps = dependency_graph(topology.services)
    order: list[str] = []
    placed: set[str] = set()
    while len(order) < len(names):
        ready = [n for n in names if n not in placed and all(d in placed for d in deps[n])]
        if not ready:
            cycle = find_cycle({n: deps[n] for n in names if n not in placed}) or [n for n in names if n not in placed]
            problems.append("dependency cycle: " + " -> ".join(cycle))
            return order + [n for n in names if n not in placed]
        order.extend(ready)
        placed.update(ready)
    return order


def _check_ports(topology: Topology, problems: list[str]) -> list[int]:
    owners: dict[int, str] = {}
    for service in topology.services:
        for port in service.ports:
            if port.number is None:
                continue
            if service.replicas > 1:
                problems.append(
                    f"service '{service.name}', field 'ports': fixed port {port.name}: {port.number} would be "
                    f"bound by all {service.replicas} replicas; leave it empty to get one free port each"
                )
            where = f"{service.name}.{port.name}"
            if port.number in owners:
                problems.append(
                    f"service '{service.name}', field 'ports': port {port.number} is also {owners[port.number]}"
                )
            owners.setdefault(port.number, where)
    return list(owners)


def _replica_name(service: Service, index: int) -> str:
    return service.name if service.replicas == 1 else f"{service.name}.{index}"


def _skeleton(
    service: Service,
    index: int,
    ports: dict[str, int],
    gpus: tuple[int, ...],
    placement: ReplicaPlacement | None,
    vendor: str = "nvidia",
) -> ReplicaPlan:
    argv = service.command if service.command else ("/bin/sh", "-c", service.shell or "")
    env = dict(service.env)
    unset: tuple[str, ...] = ()
    if gpus:  # a replica without GPUs gets no variables for them: gpu_visible is not even imported
        from .._host.gpu_visible import replica_gpu_env

        # NVIDIA: CUDA_VISIBLE_DEVICES and CUDA_DEVICE_ORDER=PCI_BUS_ID (CUDA's numbering = NVML's); AMD:
        # HIP_VISIBLE_DEVICES. The user's own value, if any, wins (e.g. an engine that maps devices itself)
        added, unset = replica_gpu_env(vendor, gpus, service.env)
        for name, value in added.items():
            env.setdefault(name, value)
    return ReplicaPlan(
        service=service.name,
        index=index,
        name=_replica_name(service, index),
        argv=argv,
        env=env,
        cwd=service.cwd,
        ports=ports,
        ready=service.ready,
        stop=service.stop,
        log=service.log,
        alive=service.alive,
        gpus=gpus,
        metrics=service.metrics,
        host=placement.leader.address if placement is not None else HOST,
        placement=placement,
        unset_env=unset,
    )


def _shared_context(services: Sequence[ServicePlan], run_dir: Path) -> dict[str, str]:
    context = {"run_dir": str(run_dir), "python": sys.executable, "host": HOST}
    context["endpoints"] = str(run_dir / "endpoints.json")  # every service's replicas and URLs (_endpoints)
    for service in services:
        urls = [r.url for r in service.replicas if r.url]
        for replica in service.replicas:
            prefixes = [f"{service.name}.{replica.index}"] + ([service.name] if replica.index == 0 else [])
            for prefix in prefixes:
                context[f"{prefix}.host"] = replica.host
                context[f"{prefix}.name"] = replica.name
                if replica.url:
                    context[f"{prefix}.url"] = replica.url
                    context[f"{prefix}.port"] = str(replica.port)
                for port_name, number in replica.ports.items():
                    context[f"{prefix}.{port_name}"] = str(number)
        context[f"{service.name}.urls"] = ",".join(urls)
        context[f"{service.name}.replicas"] = str(len(service.replicas))
    return context


def _resolve_replica(
    service: Service,
    replica: ReplicaPlan,
    shared: dict[str, str],
    problems: list[str],
    which: Callable[[str, str | None], str | None],
    check_files: bool,
) -> ReplicaPlan:
    tasks = list(task_templates(replica.placement, replica.host))
    own = {"replica": str(replica.index), "replicas": str(service.replicas), "name": replica.name, **tasks[0]}
    own["service"] = service.name
    if service.gpus is not None:
        own["gpus"] = ",".join(map(str, replica.gpus))
        # each assigned GPU on its own, ``{gpus.0}``...: for an engine that takes ids inside a structure
        # (Vajra's resource-mapping JSON) rather than a list
        own.update({f"gpus.{position}": str(index) for position, index in enumerate(replica.gpus)})
    if replica.url:
        own.update(port=str(replica.port), url=replica.url)
    if service.profile is not None and service.profile.tool == "torch":  # for --profiler-config (vLLM >= 0.13)
        own["profile_dir"] = os.path.join(shared["run_dir"], "profiles", replica.name)
    own.update({name: str(number) for name, number in replica.ports.items()})
    context = ChainMap(own, shared)  # no copy of the shared table per replica: planning stays linear
    where = f"service '{service.name}'"
    known_problems = len(problems)

    def fill(text: str, field: str) -> str:
        return fill_templates(text, context, lambda msg: problems.append(f"{where}, field '{field}': {msg}"))

    argv = tuple(fill(arg, "shell" if service.shell else "command") for arg in replica.argv)
    env = {key: fill(value, f"env.{key}") for key, value in replica.env.items()}
    cwd = fill(replica.cwd, "cwd") if replica.cwd else None
    ready = alive = None
    if replica.ready is not None:
        ready = attrs.evolve(replica.ready, check=_resolve_check(replica.ready.check, fill, "ready", replica.host))
    if replica.alive is not None:
        alive = attrs.evolve(replica.alive, check=_resolve_check(replica.alive.check, fill, "alive", replica.host))
    metrics = fill(replica.metrics, "metrics") if replica.metrics is not None else None
    if service.api and replica.url is None:
        problems.append(f"{where}, field 'api': its paths are served on the service's port, and it has none (ports:)")
    api = api_routes(service.api, replica.url, fill, ready=ready, alive=alive, metrics=metrics)
    resolved = attrs.evolve(replica, argv=argv, env=env, cwd=cwd, ready=ready, alive=alive, metrics=metrics, api=api)
    if len(problems) == known_problems:  # a template left unfilled would only repeat the same problem
        check_replica(service, resolved, where, problems.append, which, check_files)
    if service.profile is not None:
        args = tuple(fill(arg, "profile.args") for arg in service.profile.args)
        resolved = _profiled(resolved, attrs.evolve(service.profile, args=args), shared["run_dir"])
        tool = resolved.argv[0]
        wraps = resolved.profile is not None and resolved.profile.wraps
        if check_files and replica.index == 0 and wraps and which(tool, resolved.env.get("PATH", _path())) is None:
            problems.append(f"{where}, field 'profile.tool': '{tool}' not found on PATH; {profile_tool_hint(tool)}")
    if replica.placement is not None:  # each task's command, with {host} and {node_rank} of its own node
        later = [  # rank 0 already reported any template problem: the others have the same ones
            tuple(fill_templates(arg, ChainMap(task, context), lambda _: None) for arg in replica.argv)
            for task in tasks[1:]
        ]
        placement = attrs.evolve(replica.placement, argvs=(resolved.argv, *later))
        resolved = attrs.evolve(resolved, placement=placement)
    return resolved


def _path() -> str | None:
    return os.environ.get("PATH")


def _profiled(replica: ReplicaPlan, profile: Profile, run_dir: str) -> ReplicaPlan:
    """The replica with its command wrapped by the profiler (or the torch profiler's env set), and a stop
    grace long enough for the profiler to write its report after the program exited."""
    argv, env, grace, planned = plan_profile(profile, replica.argv, run_dir, replica.name)
    stop = replica.stop
    if grace > stop.grace_seconds:
        stop = attrs.evolve(stop, grace_seconds=grace)
    return attrs.evolve(replica, argv=argv, env={**env, **replica.env}, stop=stop, profile=planned)


def _resolve_check(check: Check, fill: Callable[[str, str], str], field: str, host: str = HOST) -> Check:
    if isinstance(check, HttpCheck):
        headers = check.headers
        if headers:
            headers = {name: fill(value, f"{field}.headers") for name, value in headers.items()}
        return attrs.evolve(check, url=fill(check.url, f"{field}.http"), headers=headers)
    if isinstance(check, TcpCheck):
        address = fill(check.address, f"{field}.tcp")
        return TcpCheck(address if ":" in address else f"{host}:{address}")
    if isinstance(check, LogCheck):
        return LogCheck(fill(check.pattern, f"{field}.log"))
    if isinstance(check, ExecCheck):
        return ExecCheck(tuple(fill(arg, f"{field}.exec") for arg in check.command))
    if isinstance(check, (AllOf, AnyOf)):
        return type(check)(tuple(_resolve_check(inner, fill, field, host) for inner in check.checks))
    assert isinstance(check, CallableCheck)
    return check


def fill_templates(text: str, context: Mapping[str, str], report: Callable[[str], Any]) -> str:
    """Replace ``{name}`` / ``{svc.field}``; ``{{`` is a literal brace, and so is the ``}}`` that closes
    it; other braces are kept. A ``}}`` that closes no ``{{`` stays as written: JSON nests (``{"a":{"b":1}}``)
    and never holds ``{{``, so raw JSON passes unchanged, while ``awk '{{print $1}}'`` still works."""
    opened = 0  #: ``{{`` escapes not yet closed

    def replace(match: re.Match[str]) -> str:
        nonlocal opened
        whole, name = match.group(0), match.group(1)
        if whole == "{{":
            opened += 1
            return "{"
        if whole == "}}":
            if not opened:
                return whole
            opened -= 1
            return "}"
        if name in context:
            return context[name]
        report(f"unknown template {whole}" + suggest(name, list(context)))
        return whole

    return _TEMPLATE.sub(replace, text)


def fill_command(
    argv: Sequence[str], plan: Plan, which: Callable[[str, str | None], str | None] | None = None
) -> list[str]:
    """Fill our templates in the CLI's ``-- CMD`` and check it can run, before anything starts.

    Only templates that are ours are filled: ``{run_dir}``, ``{python}``, ``{host}`` and ``{svc.field}``
    of a service of the plan. Any other braces (``awk '{print $1}'``, f-strings, JSON) pass through;
    ``{svc.typo}`` of a known service is an error. Raises ``ConfigError`` naming the problem.
    """
    context = plan.context()
    services = {s.name for s in plan.services}
    problems: list[str] = []

    def ours(name: str) -> bool:
        return name in _SHARED_NAMES or (name.split(".", 1)[0] in services and "." in name)

    def replace(match: re.Match[str]) -> str:
        whole, name = match.group(0), match.group(1)
        if name is None or not ours(name):
            return whole  # {{ and }} are not ours either: CMD gets its text as written
        if name in context:
            return context[name]
        problems.append(f"unknown template {whole}" + suggest(name, list(context)))
        return whole

    filled = [_TEMPLATE.sub(replace, arg) for arg in argv]
    if not filled or not filled[0]:
        problems.append("no command after --")
    elif any("\0" in arg for arg in filled):
        problems.append("contains a NUL byte")
    else:
        lookup = which or (lambda name, path: shutil.which(name, path=path))
        check_executable(filled[0], None, {}, "program", problems.append, lookup)
    if problems:
        raise ConfigError([f"-- {' '.join(argv)}: {p}" for p in dict.fromkeys(problems)], source=plan.source)
    return filled


def plan_in(topology: Topology, allocation: SlurmAllocation | None, **options: Any) -> Plan:
    """``make_plan`` with the allocation's nodes (which node each replica gets, ``{host}``...)."""
    return make_plan(topology, nodes=allocation.nodes if allocation is not None else None, **options)
