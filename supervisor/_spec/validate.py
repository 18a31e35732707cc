"""Every semantic check of a ``Topology``, whether it came from YAML or from Python code.

``config`` only gives YAML its shape; the same mistakes made in code or in a file meet the same checks
here and read the same. Checks that need resolved templates (URLs, addresses, paths, executables) run
on each replica once ``plan`` has filled them in (``check_replica``).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from .._errors import suggest
from .._marks import CONTAINMENT_CHOICES
from .autoscale import check_autoscale
from .cluster import check_cluster
from .model import (
    CONDITIONS,
    ON_CHANGE_ACTIONS,
    STRATEGIES,
    AllOf,
    AnyOf,
    Backoff,
    CallableCheck,
    Check,
    ExecCheck,
    GpuRequest,
    HttpCheck,
    LogCheck,
    Probe,
    RestartPolicy,
    Service,
    StopPolicy,
    TcpCheck,
    Topology,
)
from .profile import check_profile

__all__ = [
    "MAX_REPLICAS",
    "check_gpu_request",
    "check_replica",
    "check_run_dir",
    "check_topology",
    "dependency_graph",
    "find_cycle",
]

MAX_REPLICAS = 10_000  #: per service; more is almost surely a typo, and planning stays fast below it
MAX_SECONDS = 366 * 24 * 3600.0  #: any duration longer than a year is a mistake (and overflows timers)
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")
_RESERVED_PORT_NAMES = (
    "url", "host", "replica", "replicas", "name", "service", "run_dir", "python", "profile_dir",
    "node_rank", "nnodes", "leader_host",
)  # fmt: skip
_POLICIES = ("no", "on-failure", "always")

Report = Callable[[str], None]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _whole(value: object, where: str, report: Report, low: int, high: int | None = None) -> None:
    if not _is_int(value):
        report(f"{where}: expected a whole number, got {value!r}")
    elif value < low:  # type: ignore[operator]
        report(f"{where}: must be {low} or more, got {value}")
    elif high is not None and value > high:  # type: ignore[operator]
        report(f"{where}: must be at most {high}, got {value}")


def _seconds(value: object, where: str, report: Report, *, positive: bool = False) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        report(f"{where}: expected a duration, got {value!r}")
    elif not math.isfinite(value) or value > MAX_SECONDS:
        report(f"{where}: must be a finite duration of at most a year, got {value!r}")
    elif value < 0 or (positive and value == 0):
        report(f"{where}: must be {'more than 0' if positive else '0 or more'}, got {value!r}")


def _text(value: object, where: str, report: Report) -> None:
    """Strings reach argv, env and paths: a NUL byte there is a crash at spawn time."""
    if not isinstance(value, str):
        report(f"{where}: expected a string, got {value!r}")
    elif "\0" in value:
        report(f"{where}: contains a NUL byte")


def _regex(pattern: object, where: str, report: Report) -> None:
    if pattern is None:
        return
    _text(pattern, where, report)
    if isinstance(pattern, str):
        try:
            re.compile(pattern)
        except re.error as exc:
            report(f"{where}: bad regex {pattern!r}: {exc}")


def check_topology(topology: Topology, report: Report) -> int:
    """Shape-independent checks of the whole topology, reported one problem per call, the dependency cycle
    included; returns how many checks could not run (the cycle check when a name is defined twice)."""
    if topology.strategy not in STRATEGIES:
        report(f"field 'strategy': must be one of {', '.join(STRATEGIES)}")
    if topology.containment not in CONTAINMENT_CHOICES:
        report(f"field 'containment': must be one of {', '.join(CONTAINMENT_CHOICES)}, got {topology.containment!r}")
    if not isinstance(topology.name, str) or not _NAME.fullmatch(topology.name):
        report(f"field 'name': {topology.name!r} must be letters, digits, '_' or '-'")
    if topology.run_dir is not None:
        _text(topology.run_dir, "field 'run_dir'", report)
    if not topology.services:
        report("field 'services': no services (a topology needs at least one)")
    names = [s.name for s in topology.services]
    seen: set[str] = set()
    for service in topology.services:
        if not isinstance(service.name, str) or not _NAME.fullmatch(service.name):
            report(f"service {service.name!r}: a name must be letters, digits, '_' or '-'")
        if service.name in seen:
            report(f"service '{service.name}': defined twice")
        seen.add(service.name)
    by_name = {s.name: s for s in topology.services}
    for service in topology.services:
        _check_service(service, f"service '{service.name}'", names, by_name, report)
    check_cluster(topology, report)
    if len(seen) < len(topology.services):  # which of the two does a dependency mean?
        return 1
    cycle = find_cycle(dependency_graph(topology.services))
    if cycle:
        report("dependency cycle: " + " -> ".join(cycle))
    return 0


def dependency_graph(services: Iterable[Service]) -> dict[str, list[str]]:
    """Service -> the services it waits for; unknown ones and itself left out (reported on their own)."""
    listed = list(services)
    names = {s.name for s in listed}
    return {s.name: [d.service for d in s.depends_on if d.service in names and d.service != s.name] for s in listed}


def find_cycle(graph: Mapping[str, list[str]]) -> list[str]:
    """A cycle of ``graph`` as a path that ends where it starts (``a -> b -> a``), or [] when there is none."""
    path: list[str] = []
    state: dict[str, int] = {}  # 1: on the path, 2: done (no cycle through it)

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
    return []


def _check_on_change(service: Service, where: str, report: Report) -> None:
    on_change = service.on_change
    field = f"{where}, field 'on_change'"
    if on_change.action not in ON_CHANGE_ACTIONS:
        hint = suggest(str(on_change.action), list(ON_CHANGE_ACTIONS))
        report(f"{field}: must be none, restart or {{signal: SIGHUP}}, got {on_change.action!r}{hint}")
    elif on_change.action == "signal" and on_change.signal is None:
        report(f"{field}: signal needs the signal to send, e.g. {{signal: SIGHUP}}")
    elif on_change.action != "signal" and on_change.signal is not None:
        report(f"{field}: a signal ({on_change.signal}) goes with the action signal, not {on_change.action}")


def _check_service(
    service: Service, where: str, names: list[str], by_name: Mapping[str, Service], report: Report
) -> None:
    _whole(service.replicas, f"{where}, field 'replicas'", report, 0, MAX_REPLICAS)
    if not service.command and not service.shell:
        report(f"{where}, field 'command': missing (give command: [program, args...] or shell:)")
    if service.command and service.shell:
        report(f"{where}: give either command: or shell:, not both")
    # NUL bytes in command, env and cwd are reported once templates are filled (check_replica)
    if not all(isinstance(arg, str) for arg in service.command):
        report(f"{where}, field 'command': expected strings, got {list(service.command)!r}")
    if service.shell is not None and not isinstance(service.shell, str):
        report(f"{where}, field 'shell': expected a string, got {service.shell!r}")
    if service.cwd is not None and (not isinstance(service.cwd, str) or not service.cwd):
        report(f"{where}, field 'cwd': expected a directory, got {service.cwd!r}")
    for key, value in service.env.items():
        if not isinstance(key, str) or not key or "=" in key or "\0" in key:
            report(f"{where}, field 'env': bad variable name {key!r} (no '=', no NUL, not empty)")
        if not isinstance(value, str):
            report(f"{where}, field 'env.{key}': expected a string, got {value!r}")
    _whole(service.log.backups, f"{where}, field 'log.backups'", report, 0, 1000)
    if _is_int(service.log.max_bytes) and service.log.max_bytes <= 0:
        report(f"{where}, field 'log.max_bytes': must be more than 0")
    for dep in service.depends_on:
        _check_dependency(service, dep.service, dep.condition, where, names, by_name, report)
    seen_ports: set[str] = set()
    for port in service.ports:
        field = f"{where}, field 'ports'"
        if not isinstance(port.name, str) or not _NAME.fullmatch(port.name):
            report(f"{field}: port name {port.name!r} must be letters, digits, '_' or '-'")
        elif port.name.isdigit():  # ``ports: [8000]`` reads as port 8000, but names a free port "8000"
            report(
                f"{field}: {port.name} is a port name here, not a port number: write {{http: {port.name}}} for "
                f"port {port.name}, or a name ([http]) for a free port"
            )
        if port.name in seen_ports:
            report(f"{field}: port '{port.name}' named twice")
        if port.name in _RESERVED_PORT_NAMES:
            report(f"{field}: '{port.name}' is a reserved template name")
        seen_ports.add(port.name)
        if port.number is not None:
            _whole(port.number, f"{field}: port {port.name}", report, 1, 65535)
        if port.below is not None:
            _whole(port.below, f"{field}: port {port.name}: below", report, 2049, 65536)
    for field, probe in (("ready", service.ready), ("alive", service.alive)):
        if probe is not None:
            _check_probe(probe, f"{where}, field '{field}", report)
    if service.metrics is not None:
        _text(service.metrics, f"{where}, field 'metrics'", report)
    _check_routes(service.api, where, report)
    for pattern in service.fatal:
        _regex(pattern, f"{where}, field 'fatal'", report)
    phase_names: set[str] = set()
    for phase in service.phases:
        _text(phase.name, f"{where}, field 'phases'", report)
        if phase.name in phase_names:
            report(f"{where}, field 'phases': phase '{phase.name}' named twice")
        phase_names.add(phase.name)
        _regex(phase.pattern, f"{where}, field 'phases.{phase.name}'", report)
    if service.gpus is not None:
        check_gpu_request(service.gpus, where, report)
    if service.profile is not None:
        check_profile(service.profile, where, report)
    check_autoscale(service, where, report, max_replicas=MAX_REPLICAS)
    if service.phases and service.ready is None:
        report(f"{where}, field 'phases': needs a readiness probe (ready:); without one the service is ready at spawn")
    if not isinstance(service.builtin_fatal, bool):
        report(f"{where}, field 'builtin_fatal': expected true or false")
    if service.strategy is not None and service.strategy not in STRATEGIES:
        report(f"{where}, field 'strategy': must be one of {', '.join(STRATEGIES)}")
    _check_on_change(service, where, report)
    _check_limits(service, where, report)
    _check_restart(service.restart, f"{where}, field 'restart", report)
    _check_stop(service.stop, f"{where}, field 'stop", report)
    if (
        service.min_ready is not None
        and _is_int(service.replicas)
        and (not _is_int(service.min_ready) or not 0 <= service.min_ready <= service.replicas)
    ):
        report(f"{where}, field 'min_ready': must be between 0 and replicas ({service.replicas})")


def _check_limits(service: Service, where: str, report: Report) -> None:
    limits = service.resources
    if limits is None:
        return
    memory, cpu, pids = limits.memory_max_bytes, limits.cpu_max, limits.pids_max
    if memory is not None and (not _is_int(memory) or memory < 1 << 20):
        report(f"{where}, field 'resources.memory_max': must be at least 1MiB, got {memory!r} bytes")
    if cpu is not None and (isinstance(cpu, bool) or not isinstance(cpu, (int, float)) or not cpu >= 0.01):
        report(f"{where}, field 'resources.cpu_max': must be at least 0.01 cores, got {cpu!r}")
    if pids is not None and (not _is_int(pids) or pids < 1):
        report(f"{where}, field 'resources.pids_max': must be 1 or more, got {pids!r}")


def _check_dependency(
    service: Service,
    target: str,
    condition: str,
    where: str,
    names: list[str],
    by_name: Mapping[str, Service],
    report: Report,
) -> None:
    field = f"{where}, field 'depends_on'"
    if condition not in CONDITIONS:
        report(f"{field}: {target}: condition must be one of {', '.join(CONDITIONS)}, got {condition!r}")
    if target == service.name:
        report(f"{field}: a service cannot depend on itself")
    elif target not in names:
        report(f"{field}: unknown service '{target}'" + suggest(target, names))
    elif condition == "completed" and _looks_like_a_server(by_name[target]):
        report(
            f"{field}: '{target}' is a server (it has ports, a probe or restart: always), so waiting for it "
            "to complete would wait forever; use ready or started"
        )


def _looks_like_a_server(service: Service) -> bool:
    return (
        bool(service.ports)
        or service.ready is not None
        or service.alive is not None
        or (service.restart.policy == "always")
    )


def _check_probe(probe: Probe, where: str, report: Report) -> None:
    """``where`` ends in the field name without its closing quote, e.g. ``service 'a', field 'ready``."""
    _check_check(probe.check, f"{where}", report)
    for setting in ("period_seconds", "attempt_timeout_seconds"):
        _seconds(getattr(probe, setting), f"{where}.{setting.removesuffix('_seconds')}'", report, positive=True)
    for setting in ("timeout_seconds", "initial_delay_seconds", "progress_timeout_seconds"):
        _seconds(getattr(probe, setting), f"{where}.{setting.removesuffix('_seconds')}'", report)
    _whole(probe.failures, f"{where}.failures'", report, 1, 1_000_000)
    _regex(probe.progress, f"{where}.progress'", report)


def _check_check(check: Check, where: str, report: Report) -> None:
    if isinstance(check, HttpCheck):
        _text(check.url, f"{where}.http'", report)
        if check.status is not None:
            _whole(check.status, f"{where}.status'", report, 100, 599)
        _regex(check.body, f"{where}.body'", report)
        _check_headers(check.headers, f"{where}.headers'", report)
    elif isinstance(check, TcpCheck):
        _text(check.address, f"{where}.tcp'", report)
    elif isinstance(check, LogCheck):
        _regex(check.pattern, f"{where}.log'", report)
    elif isinstance(check, ExecCheck):
        if not check.command:
            report(f"{where}.exec': needs a command")
        for arg in check.command:
            _text(arg, f"{where}.exec'", report)
    elif isinstance(check, (AllOf, AnyOf)):
        if not check.checks:
            report(f"{where}': all:/any: needs at least one check")
        for inner in check.checks:
            _check_check(inner, where, report)
    elif not isinstance(check, CallableCheck):
        report(f"{where}': not a check: {check!r}")


def _check_restart(restart: RestartPolicy, where: str, report: Report) -> None:
    if restart.policy not in _POLICIES:
        report(f"{where}.policy': must be one of {', '.join(_POLICIES)}")
    _whole(restart.max_restarts, f"{where}.max_restarts'", report, 0)
    for code in restart.success_codes:
        _whole(code, f"{where}.success_codes'", report, 0, 255)
    _seconds(restart.window_seconds, f"{where}.window'", report)
    _seconds(restart.reset_after_seconds, f"{where}.reset_after'", report)
    _check_backoff(restart.backoff, f"{where}.backoff", report)


def _check_backoff(backoff: Backoff, where: str, report: Report) -> None:
    _seconds(backoff.initial_seconds, f"{where}.initial'", report)
    _seconds(backoff.max_seconds, f"{where}.max'", report)
    factor, jitter = backoff.factor, backoff.jitter
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not 1 <= factor <= 100:
        report(f"{where}.factor': must be a number from 1 to 100, got {factor!r}")
    if isinstance(jitter, bool) or not isinstance(jitter, (int, float)) or not 0 <= jitter <= 1:
        report(f"{where}.jitter': must be a fraction from 0 to 1, got {jitter!r}")


def _check_stop(stop: StopPolicy, where: str, report: Report) -> None:
    _seconds(stop.grace_seconds, f"{where}.grace'", report)


def check_run_dir(path: Path, where: str, report: Report) -> None:
    """The run directory will be created under ``path``: nothing on the way may be a file."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            if not candidate.is_dir():
                report(f"{where}: {candidate} is not a directory")
            elif not os.access(candidate, os.W_OK | os.X_OK):
                report(f"{where}: {candidate} is not writable (the run directory is created there)")
            return


def check_replica(
    service: Service,
    replica: ReplicaView,
    where: str,
    report: Report,
    which: Callable[[str, str | None], str | None],
    check_files: bool,
) -> None:
    """Checks of one replica's resolved values; files and executables only for the first replica."""
    for field, value in _texts(replica, "shell" if service.shell else "command"):
        if "\0" in value:
            report(f"{where}, field '{field}': contains a NUL byte")
    for field, probe in (("ready", replica.ready), ("alive", replica.alive)):
        if probe is not None:
            _check_target(probe.check, f"{where}, field '{field}", report)
    if replica.metrics is not None:
        _check_url(replica.metrics, f"{where}, field 'metrics'", report)
    if not check_files or replica.index != 0:
        return
    cwd = replica.cwd
    if cwd is not None:
        path = Path(cwd)  # used as written: the runtime does not expand ~ either
        if not path.exists():
            report(f"{where}, field 'cwd': {cwd} does not exist")
            return
        if not path.is_dir():
            report(f"{where}, field 'cwd': {cwd} is not a directory")
            return
    if replica.argv and replica.argv[0]:
        field = "shell" if service.shell else "command"
        check_executable(replica.argv[0], cwd, replica.env, f"{where}, field '{field}'", report, which)
    for field, probe in (("ready", replica.ready), ("alive", replica.alive)):
        if probe is not None:
            for command in _exec_commands(probe.check):
                if command and command[0]:
                    check_executable(command[0], cwd, replica.env, f"{where}, field '{field}.exec'", report, which)


class ReplicaView(Protocol):
    """What ``check_replica`` reads of a resolved replica (``plan.ReplicaPlan`` has these)."""

    @property
    def index(self) -> int: ...
    @property
    def argv(self) -> tuple[str, ...]: ...
    @property
    def env(self) -> Mapping[str, str]: ...
    @property
    def cwd(self) -> str | None: ...
    @property
    def ready(self) -> Probe | None: ...
    @property
    def alive(self) -> Probe | None: ...
    @property
    def metrics(self) -> str | None: ...


def _texts(replica: ReplicaView, field: str) -> Iterable[tuple[str, str]]:
    yield from ((field, arg) for arg in replica.argv)
    yield from ((f"env.{key}", value) for key, value in replica.env.items())
    if replica.cwd is not None:
        yield "cwd", replica.cwd


#: an HTTP header name (RFC 9110 token)
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
#: set by the probe itself: a second one would make the request ambiguous
_OWN_HEADERS = ("host", "content-length", "transfer-encoding", "connection")


def _check_routes(routes: object, where: str, report: Report) -> None:
    """``api``: each name a plain name, each route a path on the server (``/v1/models``), one line long."""
    if not isinstance(routes, Mapping):
        report(f"{where}, field 'api': expected a mapping NAME: path (models: /v1/models)")
        return
    for name, path in routes.items():
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            report(f"{where}, field 'api': route name {name!r} must be letters, digits, '_' or '-'")
        elif not isinstance(path, str) or not path.startswith("/") or any(c.isspace() or c == "\0" for c in path):
            report(f"{where}, field 'api.{name}': expected a path starting with '/' (/v1/models), got {path!r}")


def _check_headers(headers: object, where: str, report: Report) -> None:
    """Names are tokens and values one line of text, checked at load; a value is never quoted back (an
    ``Authorization`` value is a key)."""
    if headers is None:
        return
    if not isinstance(headers, Mapping):
        report(f"{where}: expected a mapping of header names to strings")
        return
    for name, value in headers.items():
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
            report(f"{where}: {name!r} is not a header name (letters, digits and !#$%&'*+.^_`|~-)")
        elif name.lower() in _OWN_HEADERS:
            report(f"{where}: {name!r} is set by the probe itself")
        elif not isinstance(value, str) or any(c in value for c in "\r\n\0"):
            report(f"{where}: the value of {name!r} must be one line of text")


def _exec_commands(check: Check) -> Iterable[tuple[str, ...]]:
    if isinstance(check, ExecCheck):
        yield check.command
    elif isinstance(check, (AllOf, AnyOf)):
        for inner in check.checks:
            yield from _exec_commands(inner)


def _check_target(check: Check, where: str, report: Report) -> None:
    """Probe targets parsed after templating, so a typo fails now and not at the ready timeout."""
    if isinstance(check, HttpCheck):
        _check_url(check.url, f"{where}.http'", report)
    elif isinstance(check, TcpCheck):
        host, _, number = check.address.rpartition(":")
        if not host or not number.isdigit() or not 1 <= int(number) <= 65535:
            report(f"{where}.tcp': expected host:port or a port (1..65535), got {check.address!r}")
    elif isinstance(check, (AllOf, AnyOf)):
        for inner in check.checks:
            _check_target(inner, where, report)


def _check_url(url: str, where: str, report: Report) -> None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        report(f"{where}: not a URL {url!r}: {exc}")
        return
    if parts.scheme not in ("http", "https") or not parts.hostname:
        report(f"{where}: not an http(s) URL with a host: {url!r}")
    elif port == 0:
        report(f"{where}: port 0 in {url!r}")


def check_executable(
    program: str,
    cwd: str | None,
    env: Mapping[str, str],
    where: str,
    report: Report,
    which: Callable[[str, str | None], str | None],
) -> None:
    if os.sep in program:
        path = Path(cwd or ".") / program
        if not path.is_file():
            report(f"{where}: {program} does not exist")
        elif not os.access(path, os.X_OK):
            report(f"{where}: {program} is not executable (chmod +x?)")
    elif which(program, env.get("PATH", os.environ.get("PATH"))) is None:
        report(f"{where}: executable '{program}' not found on PATH")


def check_gpu_request(request: GpuRequest, where: str, report: Callable[[str], object]) -> None:
    """Field checks that need no node: whole numbers, no GPU named twice, count agreeing with ids."""
    field = f"{where}, field 'gpus'"
    if not isinstance(request.count, int) or isinstance(request.count, bool) or request.count < 0:
        report(f"{field}: count must be a whole number of GPUs (0 or more), got {request.count!r}")
    if request.ids is not None:
        if any(not isinstance(i, int) or isinstance(i, bool) or i < 0 for i in request.ids):
            report(f"{field}: ids must be GPU indices (0 or more), got {list(request.ids)}")
        elif len(set(request.ids)) != len(request.ids):
            report(f"{field}: ids name a GPU twice: {list(request.ids)}")
        if request.count and request.count != len(request.ids):
            report(f"{field}: count {request.count} disagrees with ids {list(request.ids)}; give one of them")
    if not isinstance(request.contiguous, bool):
        report(f"{field}: contiguous must be true or false, got {request.contiguous!r}")
    if request.vendor not in (None, "nvidia", "amd"):
        report(f"{field}: vendor must be nvidia or amd, got {request.vendor!r}")
