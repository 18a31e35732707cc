"""What the user asked for: frozen attrs classes, built from YAML by ``config`` or directly in code.

Specs hold no runtime state and import no runtime module. Durations are seconds (strings such as
``"500ms"`` are accepted), sizes are bytes (``"50MB"`` accepted).
"""

from __future__ import annotations

import signal as _signal
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Literal

import attrs

from .._units import parse_duration, parse_size, slurm_time

__all__ = [
    "AllOf",
    "AnyOf",
    "Autoscale",
    "AutoscalePolicy",
    "Backoff",
    "CallableCheck",
    "Check",
    "Cluster",
    "Condition",
    "Dependency",
    "ExecCheck",
    "GpuRequest",
    "HttpCheck",
    "LogCheck",
    "LogPolicy",
    "Phase",
    "Placement",
    "PortSpec",
    "Probe",
    "ProbeTarget",
    "Profile",
    "ResourceLimits",
    "RestartPolicy",
    "Service",
    "SlurmCluster",
    "StopPolicy",
    "Strategy",
    "TcpCheck",
    "Topology",
]

Condition = Literal["started", "ready", "completed"]
CONDITIONS: tuple[str, ...] = ("started", "ready", "completed")


# Converters are plain functions, never builtins such as ``tuple`` or ``str``: attrs reads each converter's
# signature, and a builtin's costs the first caller ~5 ms of tokenizer set-up (on ``supervisor run``'s path).
def _text(value: object) -> str:
    return str(value)


def _ints(value: Iterable[int]) -> tuple[int, ...]:
    return tuple(value)


def _texts(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


def _strings(value: Iterable[object] | str) -> tuple[str, ...]:
    if isinstance(value, str):
        import shlex  # only a command given as one string: a list (the usual form) needs no shell rules

        return tuple(shlex.split(value))
    return tuple(str(item) for item in value)


def _signal_name(value: str | int) -> str:
    if isinstance(value, int):
        return _signal.Signals(value).name
    name = value.upper()
    name = name if name.startswith("SIG") else "SIG" + name
    if name not in _signal.Signals.__members__:
        raise ValueError(f"unknown signal {value!r} (e.g. SIGTERM, SIGINT, SIGKILL)")
    return name


@attrs.frozen
class HttpCheck:
    """Passes when a GET answers with ``status`` (any 2xx when unset) and the optional body predicates."""

    url: str  #: a template such as ``http://127.0.0.1:{port}/health``
    status: int | None = None  #: the status that passes (default: any 2xx)
    body: str | None = None  #: regex that must match somewhere in the response body
    json: Mapping[str, Any] | None = None  #: a subset of the parsed body (a list: some item holds each)
    #: request headers (``Authorization: Bearer KEY`` for a server that guards its routes with a key); the
    #: value of a secret-named header (Authorization, X-Api-Key...) is a secret of the run, hidden in records,
    #: and no repr shows the headers (a probe's repr lands in messages)
    headers: Mapping[str, str] | None = attrs.field(default=None, repr=False)


@attrs.frozen
class TcpCheck:
    """Passes when a TCP connection to ``address`` (``host:port`` or a port) is accepted."""

    address: str = attrs.field(converter=_text)


@attrs.frozen
class LogCheck:
    """Passes when a line of the service's output matches ``pattern``; fires on the line, no polling."""

    pattern: str


@attrs.frozen
class ExecCheck:
    """Passes when ``command`` exits 0 (run without a shell)."""

    command: tuple[str, ...] = attrs.field(converter=_strings)


@attrs.frozen
class ProbeTarget:
    """What a python callable check is told about the replica it checks."""

    name: str
    service: str
    index: int
    pid: int
    host: str
    ports: Mapping[str, int] = attrs.field(hash=False)

    @property
    def port(self) -> int | None:
        return next(iter(self.ports.values()), None)

    @property
    def url(self) -> str | None:
        return None if self.port is None else f"http://{self.host}:{self.port}"


@attrs.frozen
class CallableCheck:
    """Passes when the async callable returns true; it receives the replica as a ``ProbeTarget``."""

    function: Callable[[ProbeTarget], Awaitable[bool]]


def _checks(value: Iterable[Check]) -> tuple[Check, ...]:
    return tuple(_as_check(item) for item in value)


@attrs.frozen
class AllOf:
    """Passes when every inner check passes."""

    checks: tuple[Check, ...] = attrs.field(converter=_checks)


@attrs.frozen
class AnyOf:
    """Passes when at least one inner check passes."""

    checks: tuple[Check, ...] = attrs.field(converter=_checks)


Check = HttpCheck | TcpCheck | LogCheck | ExecCheck | CallableCheck | AllOf | AnyOf
_CHECK_TYPES = (HttpCheck, TcpCheck, LogCheck, ExecCheck, CallableCheck, AllOf, AnyOf)


def _as_check(value: object) -> Check:
    if isinstance(value, _CHECK_TYPES):
        return value
    if callable(value):
        return CallableCheck(value)
    raise TypeError(f"expected a check (HttpCheck, TcpCheck, LogCheck, ...), got {value!r}")


def _optional_duration(value: object) -> float | None:
    return None if value is None else parse_duration(value)


READY_PERIOD_SECONDS = 0.1  #: slowest readiness poll; polls start at a few ms
READY_TIMEOUT_SECONDS = 600.0  #: model loads are slow; progress_timeout lets a stalled one fail sooner
ATTEMPT_TIMEOUT_SECONDS = 2.0
ALIVE_PERIOD_SECONDS = 5.0
ALIVE_FAILURES = 3


@attrs.frozen
class Probe:
    """A check plus its timing. Unset timings take the defaults above, which differ for readiness and
    liveness: readiness polls fast (a few ms, backing off to ``period``; output pulls attempts forward),
    liveness checks every ``period`` (5 s) and acts after ``failures`` misses in a row.

    For readiness ``timeout`` is the deadline to pass, extended while the service shows progress when
    ``progress_timeout`` is set (like systemd's EXTEND_TIMEOUT): any output line, or lines matching
    ``progress``. For liveness ``timeout`` bounds one attempt.
    """

    check: Check = attrs.field(converter=_as_check)
    #: slowest poll (readiness: 100ms, starting at a few ms; liveness: every 5s)
    period_seconds: float | None = attrs.field(default=None, converter=_optional_duration)
    #: readiness: the deadline to pass (10m); liveness: the limit of one attempt
    timeout_seconds: float | None = attrs.field(default=None, converter=_optional_duration)
    #: one attempt's limit (2s)
    attempt_timeout_seconds: float | None = attrs.field(default=None, converter=_optional_duration)
    initial_delay_seconds: float = attrs.field(default=0.0, converter=parse_duration)  #: wait before the first attempt
    failures: int = ALIVE_FAILURES  #: liveness: consecutive misses before the replica is replaced
    #: readiness: the deadline moves on while the service prints (a silent, stuck load fails after this)
    progress_timeout_seconds: float | None = attrs.field(default=None, converter=_optional_duration)
    progress: str | None = None  #: regex: only matching lines count as progress (default: any line)

    @property
    def ready_period(self) -> float:
        return self.period_seconds if self.period_seconds is not None else READY_PERIOD_SECONDS

    @property
    def ready_timeout(self) -> float:
        return self.timeout_seconds if self.timeout_seconds is not None else READY_TIMEOUT_SECONDS

    @property
    def attempt_timeout(self) -> float:
        return self.attempt_timeout_seconds if self.attempt_timeout_seconds is not None else ATTEMPT_TIMEOUT_SECONDS

    @property
    def alive_period(self) -> float:
        return self.period_seconds if self.period_seconds is not None else ALIVE_PERIOD_SECONDS

    @property
    def alive_attempt_timeout(self) -> float:
        for value in (self.attempt_timeout_seconds, self.timeout_seconds):
            if value is not None:
                return value
        return ATTEMPT_TIMEOUT_SECONDS


def _as_probe(value: object) -> Probe | None:
    if value is None or isinstance(value, Probe):
        return value
    return Probe(_as_check(value))


@attrs.frozen
class Dependency:
    """Start after ``service`` reached ``condition``: started, ready (default) or completed (exit 0)."""

    service: str
    condition: Condition = "ready"  #: started, ready, or completed (a job that exited 0)


def _dependencies(value: object) -> tuple[Dependency, ...]:
    if isinstance(value, Mapping):
        return tuple(Dependency(str(name), condition) for name, condition in value.items())
    if isinstance(value, (str, Dependency)):
        value = [value]
    return tuple(item if isinstance(item, Dependency) else Dependency(str(item)) for item in value)  # type: ignore[attr-defined]


@attrs.frozen
class PortSpec:
    """A named port: a fixed ``number``, or a free loopback port picked at plan time when unset."""

    name: str
    number: int | None = None  #: a fixed port; null (default): a free loopback port picked at start
    #: pick the free port below this number, for programs that cannot take one in the kernel's ephemeral
    #: range (Dynamo reads DYN_SYSTEM_PORT as a signed 16-bit number: 32768 and up fail)
    below: int | None = None


def _ports(value: object) -> tuple[PortSpec, ...]:
    if isinstance(value, Mapping):
        return tuple(PortSpec(str(name), number) for name, number in value.items())
    ports: list[PortSpec] = []
    for item in value:  # type: ignore[attr-defined]
        if isinstance(item, PortSpec):
            ports.append(item)
        elif isinstance(item, Mapping):
            ports.extend(PortSpec(str(name), number) for name, number in item.items())
        else:
            ports.append(PortSpec(str(item)))
    return tuple(ports)


@attrs.frozen
class StopPolicy:
    """How a replica is asked to stop: ``signal`` to its process group, SIGKILL after ``grace_seconds``."""

    signal: str = attrs.field(default="SIGTERM", converter=_signal_name)  #: sent to the replica's process group
    #: time to exit after the signal; then SIGKILL to the group and every process of the replica
    grace_seconds: float = attrs.field(default=10.0, converter=parse_duration)


@attrs.frozen
class LogPolicy:
    """Size rotation of ``<run_dir>/logs/<service>[.<n>].log``: keep ``backups`` old files."""

    max_bytes: int = attrs.field(default=50_000_000, converter=parse_size)  #: rotate past this size
    backups: int = 5  #: rotated files kept (``.1``, ``.2``, ...)


def _routes(value: Mapping[str, str] | None) -> Mapping[str, str]:
    """Kept as given (no ``str()``): a route that is no path is reported by validation, naming it."""
    return dict(value or {})


def _env(value: Mapping[str, object] | None) -> Mapping[str, str]:
    return {str(key): "" if item is None else str(item) for key, item in (value or {}).items()}


Strategy = Literal["one_for_one", "one_for_all", "rest_for_one"]
STRATEGIES: tuple[str, ...] = ("one_for_one", "one_for_all", "rest_for_one")


@attrs.frozen
class Backoff:
    """Delay before restart n: ``initial * factor**(n-1)``, at most ``max``, varied by +-``jitter`` (a fraction)."""

    initial_seconds: float = attrs.field(default=0.5, converter=parse_duration)  #: delay before the first restart
    max_seconds: float = attrs.field(default=30.0, converter=parse_duration)  #: the longest delay
    factor: float = 2.0  #: each delay is the last one times this (1 or more)
    jitter: float = 0.1  #: each delay varies by up to this fraction (0 to 1)


@attrs.frozen
class RestartPolicy:
    """When a replica that ended is started again.

    ``no``: never (an exit with a success code completes a job, anything else fails the service);
    ``on-failure``: unless it exited with one of ``success_codes``; ``always``: whatever the exit (Dynamo's
    frontend exits 0 when it loses etcd). More than ``max_restarts`` within ``window`` gives up; the
    backoff starts over after ``reset_after`` of uptime. ``group``: all replicas restart together (a
    tensor-parallel set).
    """

    policy: Literal["no", "on-failure", "always"] = "no"  #: no: never; on-failure: unless a success code; always
    success_codes: tuple[int, ...] = attrs.field(default=(0,), converter=_ints)  #: exits that are no failure
    max_restarts: int = 5  #: more restarts than this within ``window`` give up: the replica fails
    window_seconds: float = attrs.field(default=60.0, converter=parse_duration)  #: the span ``max_restarts`` counts in
    #: uptime after which the backoff starts over
    reset_after_seconds: float = attrs.field(default=60.0, converter=parse_duration)
    backoff: Backoff = attrs.field(factory=Backoff)
    group: bool = False  #: restart every replica of the service together (a tensor-parallel set)


def _restart_policy(value: object) -> RestartPolicy:
    if isinstance(value, RestartPolicy):
        return value
    if isinstance(value, str):
        return RestartPolicy(policy=value)  # type: ignore[arg-type]
    raise TypeError(f"expected a RestartPolicy or one of no, on-failure, always; got {value!r}")


def _optional_ids(value: Iterable[int] | None) -> tuple[int, ...] | None:
    return None if value is None else tuple(value)


@attrs.frozen
class GpuRequest:
    """GPUs for each replica of a service: a count, or explicit ids; planned before anything starts."""

    count: int = 0  #: GPUs per replica (taken from ``ids`` when those are given)
    ids: tuple[int, ...] | None = attrs.field(default=None, converter=_optional_ids)  #: exactly these GPUs
    contiguous: bool = False  #: neighbouring indices only (e.g. one NVLink island on 8-GPU boxes)
    #: refuse to start unless each assigned GPU has this much free memory
    min_free_memory_bytes: int | None = attrs.field(default=None, converter=attrs.converters.optional(parse_size))
    #: ``nvidia`` or ``amd``: the only GPUs the program runs on (TensorRT-LLM: NVIDIA's); a node of the other
    #: vendor's GPUs refuses the plan. None: either
    vendor: str | None = None

    @property
    def per_replica(self) -> int:
        return len(self.ids) if self.ids is not None else self.count


def _gpus(value: object) -> GpuRequest | None:
    if value is None or isinstance(value, GpuRequest):
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected a GpuRequest or a number of GPUs per replica, got {value!r}")
    return GpuRequest(count=value)


#: what each limit needs of the host: the cgroup controller that enforces it
LIMIT_CONTROLLERS = {"memory_max": "memory", "cpu_max": "cpu", "pids_max": "pids"}


@attrs.frozen
class ResourceLimits:
    """Limits on each replica of a service, set on its cgroup (``resources: {memory_max: 64GB, cpu_max: 4,
    pids_max: 4096}``): a replica past ``memory_max`` is killed by the kernel's OOM killer (and reported as
    such), one past ``cpu_max`` is throttled, one at ``pids_max`` cannot fork. None: no limit."""

    #: memory (resident and page cache) of all its processes together
    memory_max_bytes: int | None = attrs.field(default=None, converter=attrs.converters.optional(parse_size))
    cpu_max: float | None = None  #: cores' worth of CPU time (``2.5``: two and a half cores)
    pids_max: int | None = None  #: processes and threads at once

    def asked(self) -> dict[str, object]:
        """The limits set, by their YAML name (``memory_max``, ...), in that order."""
        given = {"memory_max": self.memory_max_bytes, "cpu_max": self.cpu_max, "pids_max": self.pids_max}
        return {name: value for name, value in given.items() if value is not None}


def _resources(value: object) -> ResourceLimits | None:
    if value is None or isinstance(value, ResourceLimits):
        return value
    if isinstance(value, Mapping) and set(value) <= set(LIMIT_CONTROLLERS):
        memory = value.get("memory_max")
        return ResourceLimits(memory_max_bytes=memory, cpu_max=value.get("cpu_max"), pids_max=value.get("pids_max"))
    raise TypeError(f"expected ResourceLimits or {{memory_max: 64GB, cpu_max: 4, pids_max: 4096}}, got {value!r}")


@attrs.frozen
class Phase:
    """A startup phase: it begins when ``pattern`` (a regex) matches an output line; it ends when the next
    phase begins or the replica is ready. Recorded as events with durations, so a slow start says where."""

    name: str
    pattern: str


def _phases(value: Iterable[Phase] | Mapping[str, str]) -> tuple[Phase, ...]:
    if isinstance(value, Mapping):
        return tuple(Phase(str(name), str(pattern)) for name, pattern in value.items())
    return tuple(value)


PROFILE_TOOLS: tuple[str, ...] = ("nsys", "py-spy", "rocprof", "torch")


@attrs.frozen
class Profile:
    """Profile every replica of a service; the output goes to ``<run_dir>/profiles/<replica>...``.

    ``nsys`` and ``py-spy`` wrap the command (``nsys profile ... <command>``, ``py-spy record ... --
    <command>``): the profiler becomes the replica's leader, the program its child. Both write their
    report when the program exits, so a stop signals the program only and gives the profiler a longer
    grace (``grace_seconds``, default 60 s for nsys, 15 s for py-spy, or the service's if longer). ``rocprof``
    wraps it with AMD's ``rocprofv3`` the same way (60 s), writing ``<replica>/<pid>_results.db`` per process.
    ``torch`` wraps nothing: it sets ``SGLANG_TORCH_PROFILER_DIR`` and ``VLLM_TORCH_PROFILER_DIR`` (vLLM up
    to 0.15; later ones take ``--profiler-config.torch_profiler_dir={profile_dir}`` in the command), where
    the engine writes torch traces between ``/start_profile`` and ``/stop_profile``; others ignore them.
    While nsys or py-spy profiles, the replica's pid is the profiler's, and py-spy exits 0 whatever the
    program's exit code.
    """

    tool: str  #: nsys, py-spy, rocprof (rocprofv3) or torch
    args: tuple[str, ...] = attrs.field(default=(), converter=_strings)  #: extra profiler options
    #: the stop's grace while profiling (default: 60s with nsys and rocprof, 15s with py-spy, or the service's)
    grace_seconds: float | None = attrs.field(default=None, converter=_optional_duration)


def _profile(value: object) -> Profile | None:
    if value is None or isinstance(value, Profile):
        return value
    if isinstance(value, str):
        return Profile(value)
    raise TypeError(f"expected a Profile or a tool name ({', '.join(PROFILE_TOOLS)}), got {value!r}")


@attrs.frozen
class Placement:
    """Where a service's replicas run in a cluster allocation (``placement:`` in YAML).

    ``node`` with ``nodes`` > 1 pins each replica to nodes ``node .. node + nodes - 1``. Without a
    ``cluster:`` a placement is ignored: the topology runs on this machine as written.
    """

    node: int | None = None  #: pin every replica to this node index of the allocation
    nodes: int = 1  #: nodes per replica: one ``srun`` step with one task per node
    local: bool = False  #: run on the supervisor's own machine (``placement: local``)


def _placement(value: object) -> Placement | None:
    """``Service(placement="local")`` as in YAML; anything else is checked by plan."""
    if isinstance(value, str) and value == "local":
        return Placement(local=True)
    return value  # type: ignore[return-value]


def _lenient_slurm_time(value: object) -> str | None:
    """``2h`` -> ``2:00:00`` in code as in YAML; a value that is no time limit is kept for plan to report."""
    if value is None:
        return None
    try:
        return slurm_time(value)
    except ValueError:
        return value  # type: ignore[return-value]


@attrs.frozen
class SlurmCluster:
    """``cluster: {slurm: ...}``: the allocation to run in (an existing one when ``SLURM_JOB_ID`` is set)."""

    nodes: int = 1  #: nodes of the allocation
    partition: str | None = None  #: ``salloc --partition``
    account: str | None = None  #: ``salloc --account``
    #: Slurm's own time format (``2:00:00``); ours (``2h``, ``90m``) is converted
    time: str | None = attrs.field(default=None, converter=_lenient_slurm_time)
    qos: str | None = None  #: ``salloc --qos``
    constraint: str | None = None  #: ``salloc --constraint`` (node features)
    extra: tuple[str, ...] = attrs.field(default=(), converter=_texts)  #: more ``salloc`` arguments, verbatim


@attrs.frozen
class Cluster:
    """Where the topology runs beyond this machine; today only Slurm."""

    slurm: SlurmCluster | None = None


def _cluster(value: object) -> Cluster | None:
    """``Topology(cluster=SlurmCluster(nodes=4))`` or ``cluster="slurm"`` as shorthands of ``Cluster``."""
    if isinstance(value, SlurmCluster):
        return Cluster(slurm=value)
    if isinstance(value, str) and value == "slurm":
        return Cluster(slurm=SlurmCluster())
    return value  # type: ignore[return-value]


ON_CHANGE_ACTIONS: tuple[str, ...] = ("none", "restart", "signal")


@attrs.frozen
class OnChange:
    """What a running service does when the endpoints of another service change (a scale added or removed
    replicas) and it follows them: its templates (``{decode.urls}``, ...) would now be filled differently,
    or it depends on that service (and may read ``endpoints.json``).

    ``none`` (the default): it keeps what it was started with (a restart would drop its in-flight work; opt
    in). ``restart``: its replicas are restarted one at a time (a rolling restart) with the templates filled
    again. ``signal``: ``signal`` (e.g. SIGHUP) goes to each replica's main process once
    ``<run_dir>/endpoints.json`` (``{endpoints}``) lists the new set, for a program that re-reads it.
    """

    action: str = "none"  #: none, restart or signal
    #: the signal sent to each replica's main process once ``endpoints.json`` is new
    signal: str | None = attrs.field(default=None, converter=attrs.converters.optional(_signal_name))


def _on_change(value: object) -> OnChange:
    if isinstance(value, OnChange):
        return value
    if value is None:
        return OnChange()
    if isinstance(value, str):
        return OnChange(action=value)
    if isinstance(value, Mapping) and set(value) == {"signal"}:
        return OnChange(action="signal", signal=value["signal"])
    raise TypeError(f"expected none, restart or {{signal: SIGHUP}} (an OnChange), got {value!r}")


#: a Python autoscale policy: (latest metrics per replica, name -> value summed over labels; replicas now)
#: -> the count it wants (bounded by ``min``/``max`` and smoothed as a metric's count is)
AutoscalePolicy = Callable[[Mapping[str, Mapping[str, float]], int], int]


@attrs.frozen
class Autoscale:
    """Scale a service from its own load (``autoscale:``): the ``metric`` summed over the replicas' ``metrics:``
    endpoints, over ``target`` per replica, gives the count wanted; or ``policy`` gives it. A rise must last
    ``up_after`` and a fall ``down_after`` before the service follows (the lowest, resp. highest, count wanted
    over that window: a noisy metric does not flap), and no change comes within ``cooldown`` of the last."""

    min: int = 1  #: never fewer replicas (nor fewer than the service's ``min_ready``)
    max: int = 1  #: never more replicas
    #: a Prometheus metric name (``vllm:num_requests_waiting``), summed over labels; or names joined by ``+``,
    #: summed (``vllm:num_requests_running + vllm:num_requests_waiting``: the requests a replica holds)
    metric: str | None = None
    target: float | None = None  #: the metric's value per replica to aim at
    up_after_seconds: float = attrs.field(default=30.0, converter=parse_duration)  #: a rise must last this long
    down_after_seconds: float = attrs.field(default=300.0, converter=parse_duration)  #: a fall must last this long
    cooldown_seconds: float = attrs.field(default=60.0, converter=parse_duration)  #: quiet time after a scale
    period_seconds: float = attrs.field(default=5.0, converter=parse_duration)  #: how often the metric is read
    #: in Python instead of ``metric``/``target``: what the count should be, from the latest metrics
    policy: AutoscalePolicy | None = attrs.field(default=None, eq=False, repr=False)


@attrs.frozen
class Service:
    """One program of the topology, run as ``replicas`` OS processes."""

    name: str  #: in YAML, the key under ``services:`` (a ``name:`` in the service replaces it)
    command: tuple[str, ...] = attrs.field(default=(), converter=_strings)  #: the argv, run without a shell
    shell: str | None = None  #: a shell command line, run with /bin/sh -c; only when asked for
    ports: tuple[PortSpec, ...] = attrs.field(default=(), converter=_ports)  #: named ports, each replica its own
    replicas: int = 1  #: OS processes of this service: ``svc.0``, ``svc.1``, ...
    #: services to wait for before starting, each until a condition (default: ready)
    depends_on: tuple[Dependency, ...] = attrs.field(default=(), converter=_dependencies)
    #: readiness: dependents start, and ``launch`` returns, once it passes (none: ready once spawned)
    ready: Probe | None = attrs.field(default=None, converter=_as_probe)
    stop: StopPolicy = attrs.field(factory=StopPolicy)
    #: added to the inherited environment
    env: Mapping[str, str] = attrs.field(factory=dict, converter=_env, hash=False)
    cwd: str | None = None  #: working directory (relative: to the file's directory)
    log: LogPolicy = attrs.field(factory=LogPolicy)
    alive: Probe | None = attrs.field(default=None, converter=_as_probe)  #: liveness, checked once ready
    restart: RestartPolicy = attrs.field(factory=RestartPolicy, converter=_restart_policy)
    strategy: Strategy | None = None  #: overrides the topology's strategy for this service's failures
    fatal: tuple[str, ...] = attrs.field(default=(), converter=_texts)  #: regexes: such a line = no restart
    builtin_fatal: bool = True  #: also treat CUDA OOM, address in use, model not found, NCCL errors as fatal
    min_ready: int | None = None  #: stay up, degraded, while at least this many replicas are ready
    gpus: GpuRequest | None = attrs.field(default=None, converter=_gpus)  #: per replica; ``gpus: 2`` = 2 each
    phases: tuple[Phase, ...] = attrs.field(default=(), converter=_phases)  #: startup phases, in order
    profile: Profile | None = attrs.field(default=None, converter=_profile)  #: nsys, py-spy or torch
    #: a Prometheus endpoint (a template such as ``http://127.0.0.1:{port}/metrics``) that
    #: ``group.snapshot_metrics(label)`` saves for each running replica
    metrics: str | None = None
    #: on a cluster: where each replica runs (None = spread round-robin over the allocation's nodes)
    placement: Placement | None = attrs.field(default=None, converter=_placement)
    #: when another service's endpoints that its templates use change (a scale): none, restart or a signal
    on_change: OnChange = attrs.field(factory=OnChange, converter=_on_change)
    #: limits on each replica's memory, CPU and processes, set on its cgroup (``ResourceLimits``)
    resources: ResourceLimits | None = attrs.field(default=None, converter=_resources)
    #: the server's routes, NAME: path (``models: /v1/models``) on its ``url``; ``group[svc].api`` lists them as
    #: URLs with the routes its probes and ``metrics`` name
    api: Mapping[str, str] = attrs.field(factory=dict, converter=_routes, hash=False)
    #: scale by the service's own load (a metric of its ``metrics:`` endpoints, or a Python policy)
    autoscale: Autoscale | None = None


def _services(value: Iterable[Service] | Mapping[str, Service]) -> tuple[Service, ...]:
    if isinstance(value, Mapping):
        return tuple(value.values())
    return tuple(value)


@attrs.frozen
class Topology:
    """A named graph of services. ``source`` (the YAML path, if any) only labels error messages."""

    name: str  #: names the run (``<ts>-<name>-<id>``) and its records
    services: tuple[Service, ...] = attrs.field(converter=_services)  #: the services, by name
    run_dir: str | None = None  #: parent of the per-run directories; default: the user's state dir
    strategy: Strategy = "one_for_one"  #: what else restarts with a failed replica
    source: str | None = attrs.field(default=None, eq=False)
    cluster: Cluster | None = attrs.field(default=None, converter=_cluster)  #: absent: all runs on this machine
    #: the ``--set`` overrides it was loaded with (a rolling restart re-loads ``source`` with them and its own)
    overrides: Mapping[str, str] = attrs.field(factory=dict, eq=False, repr=False, hash=False)
    #: how the run's processes are kept together: auto (the best this host allows), or require cgroup2,
    #: freezer or marks (``_host.containment``)
    containment: str = "auto"
