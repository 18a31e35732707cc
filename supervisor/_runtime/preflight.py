"""Checks of the machine, made before anything starts: a failure here is bad input (exit 2), never a spawn."""

from __future__ import annotations

import os
import resource
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING

from .._errors import ConfigError
from .._marks import CONTAINMENT_CHOICES, CONTAINMENT_ENV
from .._records.paths import private_dirs

if TYPE_CHECKING:
    from .._host.containment import RunContainment
    from .._host.gpu_inventory import GpuInventory
    from .._plan.plan import Plan, ReplicaPlan
    from .._spec.model import Topology

__all__ = [
    "FDS_PER_REPLICA",
    "open_containment",
    "preflight",
    "prepare_run_dir",
    "raise_open_files_limit",
    "refuse_taken_ports",
    "warm_cgroup_moves",
]

#: A replica holds its output pipe, its log file and a pidfd, and a probe's socket while it polls.
FDS_PER_REPLICA = 4
_FDS_BASE = 64  # the interpreter, the watchdog pipe, event and record files, the CLI's own


def preflight(plan: Plan, gpus: GpuInventory | None) -> GpuInventory | None:
    """Every check made before the first spawn, in order; returns the GPU inventory the run checks
    against (``gpus``, else NVML when the plan assigned GPUs; None when it uses none)."""
    inventory = gpus
    if gpus is not None or any(r.gpus for s in plan.services for r in s.replicas):  # NVML only when asked
        from .gpu_checks import check_free_memory, runtime_inventory

        inventory = runtime_inventory(plan, gpus)
        if inventory is not None:
            check_free_memory(plan, inventory)
    raise_open_files_limit(plan)
    refuse_taken_ports(plan)
    prepare_run_dir(plan)
    return inventory


def _asked_containment(request: str) -> str:
    """The mode asked for: the topology's, or where it says auto, ``TOPOVISOR_CONTAINMENT``'s (an
    administrator may say more than the file); not checked here."""
    if request == "auto":
        return os.environ.get(CONTAINMENT_ENV, "").strip() or "auto"
    return request


def warm_cgroup_moves(topology: Topology | Plan) -> Callable[[], None]:
    """While a launch plans, the kernel gets ready for its replicas' cgroup moves (``warm_moves``: the
    first move after a quiet spell waits for an RCU grace period, 5-25 ms on the first replica's way to its
    first instruction); returns what stops it. Nothing for a run that moves nothing: marks or Slurm."""
    if topology.cluster is not None or _asked_containment(topology.containment) == "marks":
        return lambda: None
    from .._host.containment import warm_moves

    return warm_moves()


def open_containment(plan: Plan) -> RunContainment:
    """The run's cgroup, made before the first spawn (the last check: a failure after it removes it);
    ``ConfigError`` naming why and how when the topology requires a mode this host cannot give, or limits
    (``resources:``) whose controllers it cannot give. A run on Slurm nodes is contained on each node by
    Slurm's own cgroup (the step's), not by ours."""
    from .._host.containment import ContainmentUnavailable, LimitUnavailable, RunContainment
    from .._spec.model import LIMIT_CONTROLLERS

    request = _asked_containment(plan.containment)
    if plan.containment == "auto" and request not in CONTAINMENT_CHOICES:  # a topology's was checked with it
        choices = ", ".join(CONTAINMENT_CHOICES)
        raise ConfigError(f"environment variable {CONTAINMENT_ENV}: must be one of {choices}, got {request!r}")
    limits = {s.name: s.resources for s in plan.services if s.resources is not None and s.resources.asked()}
    asked = {LIMIT_CONTROLLERS[field]: (service, field) for service, given in limits.items() for field in given.asked()}
    if plan.cluster is not None and asked:
        service, field = next(iter(asked.values()))
        problem = (
            f"service '{service}', field 'resources.{field}': limits are set on this machine's cgroups; on a "
            "Slurm cluster each replica runs in its step's cgroup (ask Slurm: --mem, --cpus-per-task in "
            "cluster.slurm.extra)"
        )
        raise ConfigError(problem, source=plan.source)
    if plan.cluster is not None and request in ("auto", "marks"):
        return RunContainment("marks")
    if plan.cluster is not None:
        problem = (
            f"field 'containment': {request} applies to processes on this machine; on a Slurm cluster each "
            "replica runs in its step's cgroup, which Slurm makes and kills (use auto or marks)"
        )
        raise ConfigError(problem, source=plan.source)
    try:
        containment = RunContainment.open(plan.run_id, request, limited=list(asked))
    except ContainmentUnavailable as exc:
        raise ConfigError(f"field 'containment': {exc}", source=plan.source) from None
    except LimitUnavailable as exc:
        named = ", ".join(f"service '{service}' resources.{field}" for service, field in asked.values())
        raise ConfigError(f"{named}: cannot be set here: {exc}", source=plan.source) from None
    containment.limits = limits
    return containment


def refuse_taken_ports(plan: Plan) -> None:
    """A port already bound (a stale server from an earlier run, say) is reported before anything
    starts, with its owner, instead of surfacing later as a crash."""
    wanted = {
        port: replica.name
        for service in plan.services
        for replica in service.replicas
        if _on_this_machine(replica)
        for port in replica.ports.values()
    }
    if not wanted or not _maybe_listening(wanted):
        return
    from .._records.record import port_owners  # names the owner: psutil walks every process's sockets

    owners = port_owners(list(wanted))
    if owners:
        raise ConfigError(
            [f"service '{wanted[port].split('.')[0]}': {owner.describe()}" for port, owner in sorted(owners.items())],
            source=plan.source,
        )


def _on_this_machine(replica: ReplicaPlan) -> bool:
    """A replica whose ports are this machine's: not placed, or on a node at one of our addresses (an
    emulated one); a port on another node is not ours to check."""
    if replica.placement is None:
        return True
    from .._plan.placement import LOCAL_HOST, _is_own_address

    return any(node.address == LOCAL_HOST or _is_own_address(node.address) for node in replica.placement.nodes)


_TCP_TABLES = ("/proc/net/tcp", "/proc/net/tcp6")
_TCP_LISTEN = "0A"


def _maybe_listening(ports: Collection[int]) -> bool:
    """Whether a TCP socket listens on one of ``ports`` (any address). True when unsure: the caller then
    names the owner (``port_owners`` scans every process). A free port is known free from a wildcard bind
    (microseconds; a listener on any address of the port refuses it even with ``SO_REUSEADDR``); only a
    refused bind reads the kernel's socket tables, which cost 3-5 ms each on some kernels (measured on a
    2-core VM) and do not exist off Linux."""
    if all(_bindable(port) for port in ports):
        return False
    return _listed_listening(ports)


def _bindable(port: int) -> bool:
    """Whether a socket with ``SO_REUSEADDR`` binds the wildcard address at ``port`` in IPv4 and IPv6."""
    import socket  # only a plan with fixed ports gets here: a plain one spawns its first replica without it

    for family, host in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError:
            if family == socket.AF_INET6:
                continue  # no IPv6 here: nothing can listen on it
            return False
        with sock:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind((host, port))
            except OSError:
                return False
    return True


def _listed_listening(ports: Collection[int]) -> bool:
    """Whether ``/proc/net/tcp{,6}`` list a listener on one of ``ports``; True when unsure."""
    wanted = set(ports)
    try:
        for table in _TCP_TABLES:
            with open(table) as file:
                next(file, None)  # the header
                for line in file:
                    fields = line.split(None, 4)
                    if len(fields) > 3 and fields[3] == _TCP_LISTEN and int(fields[1].rpartition(":")[2], 16) in wanted:
                        return True
    except (OSError, ValueError):
        return True
    return False


def raise_open_files_limit(plan: Plan) -> int:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit (400 replicas do not fit the usual 1024), and
    refuse a plan that cannot fit even then. Returns the soft limit in force."""
    return open_files_for(sum(len(service.replicas) for service in plan.services), source=plan.source)


def open_files_for(replicas: int, *, source: str | None, doing: str = "") -> int:
    """``raise_open_files_limit`` for a run of ``replicas`` replicas in all (a scale checks its new total
    before it starts anything); ``doing`` begins the refusal (``scale 'web' to 10000: ``)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = _FDS_BASE + FDS_PER_REPLICA * replicas
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):  # some platforms cap below the hard limit (macOS: OPEN_MAX)
            pass
    if soft != resource.RLIM_INFINITY and soft < needed:
        raise ConfigError(
            f"{doing}{replicas} replicas need about {needed} open files, but the open-files limit "
            f"(RLIMIT_NOFILE, ulimit -n) is {soft} (hard limit {hard}): raise it, e.g. `ulimit -n {needed}` "
            "or LimitNOFILE= in a systemd unit",
            source=source,
        )
    return int(soft)


def prepare_run_dir(plan: Plan) -> None:
    """Create the run's directory and prove it writable, so a read-only or full filesystem is a clear
    error before anything starts, not a traceback from the first log file."""
    logs = plan.run_dir / "logs"
    probe = plan.run_dir / ".writable"
    try:
        private_dirs(logs)
        os.chmod(plan.run_dir, 0o700)
        with open(probe, "wb") as file:
            file.write(b"\0" * 4096)
            file.flush()
            os.fsync(file.fileno())
        probe.unlink()
    except OSError as error:
        with_reason = error.strerror or str(error)
        raise ConfigError(
            f"run directory {plan.run_dir}: cannot write there ({with_reason}); "
            "free some space or choose another place with run_dir: or --runs-dir",
            source=plan.source,
        ) from None
