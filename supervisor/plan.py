"""Validate a ``Topology`` and resolve it into a ``Plan``: start order, ports, templates, commands.

Everything here happens before any process starts; every problem found is reported at once, each
naming the service and the field. Pure apart from the two injected look-ups (free ports, executables).
"""

from __future__ import annotations

import difflib
import os
import re
import secrets
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from .errors import ConfigError
from .spec import (
    STRATEGIES,
    AllOf,
    AnyOf,
    CallableCheck,
    Check,
    Dependency,
    ExecCheck,
    HttpCheck,
    LogCheck,
    LogPolicy,
    Probe,
    Service,
    StopPolicy,
    TcpCheck,
    Topology,
)

__all__ = ["Plan", "ReplicaPlan", "ServicePlan", "default_runs_dir", "default_state_dir", "make_plan"]

HOST = "127.0.0.1"
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")
_TEMPLATE = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+)*)\}")
_OWN_NAMES = ("port", "url", "host", "replica", "replicas", "name", "service", "run_dir", "python")


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

    @property
    def port(self) -> int | None:
        return next(iter(self.ports.values()), None)

    @property
    def url(self) -> str | None:
        port = self.port
        return None if port is None else f"http://{self.host}:{port}"


@attrs.frozen
class ServicePlan:
    name: str
    replicas: tuple[ReplicaPlan, ...]
    depends_on: tuple[Dependency, ...]
    spec: Service = attrs.field(eq=False, repr=False)  #: restart policy, liveness, fatal patterns, quorum


@attrs.frozen
class Plan:
    """A validated topology: services in start order (dependencies first, ties in file order)."""

    name: str
    run_id: str
    run_dir: Path
    services: tuple[ServicePlan, ...]
    source: str | None = None
    strategy: str = "one_for_one"

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


def default_state_dir() -> Path:
    """``$XDG_STATE_HOME/topovisor`` (default ``~/.local/state/topovisor``): run records and runs."""
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(state) / "topovisor"


def default_runs_dir() -> Path:
    return default_state_dir() / "runs"


def make_plan(
    topology: Topology,
    *,
    runs_dir: str | os.PathLike[str] | None = None,
    allocate_port: Callable[[], int] | None = None,
    reserve_port: Callable[[int], None] | None = None,
    which: Callable[[str, str | None], str | None] | None = None,
    check_executables: bool = True,
) -> Plan:
    """Validate ``topology`` and resolve it; raises one ``ConfigError`` listing every problem."""
    if allocate_port is None or reserve_port is None:
        from .resources import PortAllocator

        allocator = PortAllocator(HOST)
        allocate_port, reserve_port = allocator.allocate, allocator.reserve
    which = which or (lambda name, path: shutil.which(name, path=path))
    problems: list[str] = []
    services = {s.name: s for s in topology.services}
    _check_names(topology, problems)
    _check_services(topology, problems)
    order = _start_order(topology, problems)
    fixed = _check_ports(topology, problems)
    if problems:
        raise ConfigError(problems, source=topology.source)

    base = Path(runs_dir or topology.run_dir or default_runs_dir())
    run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{topology.name}-{secrets.token_hex(3)}"
    run_dir = base.expanduser().absolute() / run_id
    for port in fixed:
        reserve_port(port)
    ports: dict[str, list[dict[str, int]]] = {}
    for name in order:
        service = services[name]
        ports[name] = [
            {p.name: p.number if p.number is not None else allocate_port() for p in service.ports}
            for _ in range(service.replicas)
        ]
    skeletons = tuple(
        ServicePlan(
            name,
            tuple(_skeleton(services[name], i, ports[name][i]) for i in range(services[name].replicas)),
            services[name].depends_on,
            services[name],
        )
        for name in order
    )
    shared = _shared_context(skeletons, run_dir)
    resolved = []
    for plan in skeletons:
        service = services[plan.name]
        replicas = tuple(
            _resolve_replica(service, replica, shared, run_dir, problems, which, check_executables)
            for replica in plan.replicas
        )
        resolved.append(attrs.evolve(plan, replicas=replicas))
    if problems:
        raise ConfigError(list(dict.fromkeys(problems)), source=topology.source)
    return Plan(topology.name, run_id, run_dir, tuple(resolved), topology.source, topology.strategy)


def _check_names(topology: Topology, problems: list[str]) -> None:
    if topology.strategy not in STRATEGIES:
        problems.append(f"field 'strategy': must be one of {', '.join(STRATEGIES)}")
    if not _NAME.match(topology.name):
        problems.append(f"field 'name': {topology.name!r} must be letters, digits, '_' or '-'")
    seen: set[str] = set()
    for service in topology.services:
        if not _NAME.match(service.name):
            problems.append(f"service {service.name!r}: a name must be letters, digits, '_' or '-'")
        if service.name in seen:
            problems.append(f"service '{service.name}': defined twice")
        seen.add(service.name)


def _check_services(topology: Topology, problems: list[str]) -> None:
    names = [s.name for s in topology.services]
    for service in topology.services:
        where = f"service '{service.name}'"
        if service.replicas < 0:
            problems.append(f"{where}, field 'replicas': must be 0 or more, got {service.replicas}")
        if not service.command and not service.shell:
            problems.append(f"{where}, field 'command': missing (give command: [program, args...] or shell:)")
        if service.command and service.shell:
            problems.append(f"{where}: give either command: or shell:, not both")
        if service.log.backups < 0:
            problems.append(f"{where}, field 'log.backups': must be 0 or more")
        if service.log.max_bytes <= 0:
            problems.append(f"{where}, field 'log.max_bytes': must be more than 0")
        for dep in service.depends_on:
            if dep.service == service.name:
                problems.append(f"{where}, field 'depends_on': a service cannot depend on itself")
            elif dep.service not in names:
                problems.append(
                    f"{where}, field 'depends_on': unknown service '{dep.service}'" + _suggest(dep.service, names)
                )
        seen_ports: set[str] = set()
        for port in service.ports:
            if port.name in seen_ports:
                problems.append(f"{where}, field 'ports': port '{port.name}' named twice")
            if port.name in _OWN_NAMES[1:]:
                problems.append(f"{where}, field 'ports': '{port.name}' is a reserved template name")
            seen_ports.add(port.name)
        for field, probe in (("ready", service.ready), ("alive", service.alive)):
            if probe is None:
                continue
            _check_probe(probe.check, f"{where}, field '{field}'", problems)
            for setting in ("period_seconds", "attempt_timeout_seconds"):
                if (getattr(probe, setting) or 1) <= 0:
                    problems.append(f"{where}, field '{field}.{setting.removesuffix('_seconds')}': must be > 0")
            if probe.failures < 1:
                problems.append(f"{where}, field '{field}.failures': must be 1 or more")
            _check_regex(probe.progress, f"{where}, field '{field}.progress'", problems)
        for pattern in service.fatal:
            _check_regex(pattern, f"{where}, field 'fatal'", problems)
        if service.strategy is not None and service.strategy not in STRATEGIES:
            problems.append(f"{where}, field 'strategy': must be one of {', '.join(STRATEGIES)}")
        if service.restart.policy not in ("no", "on-failure", "always"):
            problems.append(f"{where}, field 'restart.policy': must be one of no, on-failure, always")
        if service.restart.max_restarts < 0:
            problems.append(f"{where}, field 'restart.max_restarts': must be 0 or more")
        if service.min_ready is not None and not 0 <= service.min_ready <= service.replicas:
            problems.append(f"{where}, field 'min_ready': must be between 0 and replicas ({service.replicas})")


def _check_regex(pattern: str | None, where: str, problems: list[str]) -> None:
    if pattern is None:
        return
    try:
        re.compile(pattern)
    except re.error as exc:
        problems.append(f"{where}: bad regex {pattern!r}: {exc}")


def _check_probe(check: Check, where: str, problems: list[str]) -> None:
    pattern = check.pattern if isinstance(check, LogCheck) else check.body if isinstance(check, HttpCheck) else None
    if pattern is not None:
        try:
            re.compile(pattern)
        except re.error as exc:
            problems.append(f"{where}: bad regex {pattern!r}: {exc}")
    if isinstance(check, ExecCheck) and not check.command:
        problems.append(f"{where}: exec: needs a command")
    if isinstance(check, (AllOf, AnyOf)):
        for inner in check.checks:
            _check_probe(inner, where, problems)


def _start_order(topology: Topology, problems: list[str]) -> list[str]:
    """Kahn's algorithm, ties broken by file order; a cycle is reported with its path."""
    names = [s.name for s in topology.services]
    deps = {s.name: [d.service for d in s.depends_on if d.service in names and d.service != s.name]
            for s in topology.services}  # fmt: skip
    order: list[str] = []
    placed: set[str] = set()
    while len(order) < len(names):
        ready = [n for n in names if n not in placed and all(d in placed for d in deps[n])]
        if not ready:
            cycle = _find_cycle({n: deps[n] for n in names if n not in placed})
            problems.append("dependency cycle: " + " -> ".join(cycle))
            return order + [n for n in names if n not in placed]
        order.extend(ready)
        placed.update(ready)
    return order


def _find_cycle(graph: dict[str, list[str]]) -> list[str]:
    path: list[str] = []
    state: dict[str, int] = {}

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in graph.get(node, []):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in graph:
        if start not in state and (cycle := visit(start)):
            return cycle
    return list(graph)


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


def _suggest(word: str, known: list[str]) -> str:
    close = difflib.get_close_matches(word, known, n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _replica_name(service: Service, index: int) -> str:
    return service.name if service.replicas == 1 else f"{service.name}.{index}"


def _skeleton(service: Service, index: int, ports: dict[str, int]) -> ReplicaPlan:
    argv = service.command if service.command else ("/bin/sh", "-c", service.shell or "")
    return ReplicaPlan(
        service=service.name,
        index=index,
        name=_replica_name(service, index),
        argv=argv,
        env=dict(service.env),
        cwd=service.cwd,
        ports=ports,
        ready=service.ready,
        stop=service.stop,
        log=service.log,
        alive=service.alive,
    )


def _shared_context(services: tuple[ServicePlan, ...], run_dir: Path) -> dict[str, str]:
    context = {"run_dir": str(run_dir), "python": sys.executable, "host": HOST}
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
    run_dir: Path,
    problems: list[str],
    which: Callable[[str, str | None], str | None],
    check_executables: bool,
) -> ReplicaPlan:
    context = dict(shared)
    context.update(
        replica=str(replica.index),
        replicas=str(service.replicas),
        name=replica.name,
        service=service.name,
    )
    if replica.url:
        context.update(port=str(replica.port), url=replica.url)
    context.update({name: str(number) for name, number in replica.ports.items()})
    where = f"service '{service.name}'"

    def fill(text: str, field: str) -> str:
        return fill_templates(text, context, lambda msg: problems.append(f"{where}, field '{field}': {msg}"))

    argv = tuple(fill(arg, "shell" if service.shell else "command") for arg in replica.argv)
    env = {key: fill(value, f"env.{key}") for key, value in replica.env.items()}
    cwd = fill(replica.cwd, "cwd") if replica.cwd else None
    ready = alive = None
    if replica.ready is not None:
        ready = attrs.evolve(replica.ready, check=_resolve_check(replica.ready.check, fill))
    if replica.alive is not None:
        alive = attrs.evolve(replica.alive, check=_resolve_check(replica.alive.check, fill))
    if check_executables and argv and argv[0] and replica.index == 0:
        _check_executable(argv[0], cwd, env, where, problems, which)
    return attrs.evolve(replica, argv=argv, env=env, cwd=cwd, ready=ready, alive=alive)


def _resolve_check(check: Check, fill: Callable[[str, str], str]) -> Check:
    if isinstance(check, HttpCheck):
        return attrs.evolve(check, url=fill(check.url, "ready.http"))
    if isinstance(check, TcpCheck):
        address = fill(check.address, "ready.tcp")
        return TcpCheck(address if ":" in address else f"{HOST}:{address}")
    if isinstance(check, LogCheck):
        return LogCheck(fill(check.pattern, "ready.log"))
    if isinstance(check, ExecCheck):
        return ExecCheck(tuple(fill(arg, "ready.exec") for arg in check.command))
    if isinstance(check, (AllOf, AnyOf)):
        return type(check)(tuple(_resolve_check(inner, fill) for inner in check.checks))
    assert isinstance(check, CallableCheck)
    return check


def fill_templates(text: str, context: Mapping[str, str], report: Callable[[str], Any]) -> str:
    """Replace ``{name}`` / ``{svc.field}``; ``{{`` and ``}}`` are literal braces; other braces are kept."""

    def replace(match: re.Match[str]) -> str:
        whole, name = match.group(0), match.group(1)
        if name is None:
            return whole[0]
        if name in context:
            return context[name]
        report(f"unknown template {whole}" + _suggest(name, list(context)))
        return whole

    return _TEMPLATE.sub(replace, text)


def _check_executable(
    program: str,
    cwd: str | None,
    env: Mapping[str, str],
    where: str,
    problems: list[str],
    which: Callable[[str, str | None], str | None],
) -> None:
    if os.sep in program:
        path = Path(cwd or ".") / program
        if not path.is_file():
            problems.append(f"{where}, field 'command': {program} does not exist")
        elif not os.access(path, os.X_OK):
            problems.append(f"{where}, field 'command': {program} is not executable (chmod +x?)")
    elif which(program, env.get("PATH", os.environ.get("PATH"))) is None:
        problems.append(f"{where}, field 'command': executable '{program}' not found on PATH")
