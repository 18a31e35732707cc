"""What a run writes on disk, as attrs classes: one schema for the writer, the readers and the tests.

``manifest.json`` (the resolved run: commands, redacted env, ports, every pid with its create time),
``summary.json`` (how it went and ended: timings, restarts, exits, the critical chain; computed by
``supervisor._records.summary``) and the index entry (who supervises it). ``to_json`` is ``attrs.asdict`` (the
records hold JSON types only, and the first manifest is written while a fresh ``supervisor run`` is
still starting, without cattrs); the ``*_from_json`` readers go through one cattrs converter, built on
first use. Reading is forgiving on purpose: a record may be half-written by a
crash, or come from an older version; a field of the wrong type reads as its default, never as an error,
so ``supervisor ps/stop/gc`` always work on what is there. A record of a newer topovisor is the one thing
refused (``records_version``: ``supervisor._records.version``), with a message that says who reads it.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, TypeVar, get_origin

import attrs

from .version import RECORDS_VERSION, check_records_version

if TYPE_CHECKING:
    import cattrs

__all__ = [
    "ACTIVE_STATES",
    "ChainLink",
    "ExitEntry",
    "IndexEntry",
    "Manifest",
    "OperationOutcome",
    "PhaseTiming",
    "ReplicaEntry",
    "ReplicaOutcome",
    "ResourceTotals",
    "ServiceEntry",
    "ServiceOutcome",
    "StopEntry",
    "Summary",
    "index_entry_from_json",
    "manifest_from_json",
    "summary_from_json",
    "to_json",
]

#: replica states in which its processes may still run (the rest are terminal)
ACTIVE_STATES = frozenset({"pending", "starting", "ready", "unready", "restarting", "stopping"})


@attrs.define
class StopEntry:
    signal: str = "SIGTERM"  #: sent to the process group first
    grace_seconds: float = 10.0  #: before SIGKILL


@attrs.define
class ReplicaEntry:
    """One replica as the supervisor last saw it."""

    name: str = ""
    state: str = "unknown"
    pid: int | None = None
    pgid: int | None = None
    create_time: float | None = None  #: of ``pid``; without it the pid is never trusted
    returncode: int | None = None
    restarts: int = 0
    command: list[str] = attrs.Factory(list)  #: redacted
    env: dict[str, str] = attrs.Factory(dict)  #: what the service adds to the caller's environment, redacted
    ports: dict[str, int] = attrs.Factory(dict)
    url: str | None = None
    log: str | None = None
    stop: StopEntry = attrs.Factory(StopEntry)
    gpus: list[int] = attrs.Factory(list)  #: assigned GPU indices (NVML / PCI bus order)


@attrs.define
class ServiceEntry:
    depends_on: dict[str, str] = attrs.Factory(dict)  #: service -> condition
    replicas: list[ReplicaEntry] = attrs.Factory(list)  #: in start order


@attrs.define
class Manifest:
    """``manifest.json``: rewritten after each spawn batch and at each phase change."""

    records_version: int = RECORDS_VERSION  #: of the file read; see ``supervisor._records.version``
    run_id: str = ""
    name: str = ""
    source: str | None = None
    run_dir: str = ""
    phase: str = "unknown"  #: pending, starting, running, stopping, stopped
    supervisor_pid: int | None = None
    supervisor_create_time: float | None = None
    started_wall_time: float | None = None
    services: dict[str, ServiceEntry] = attrs.Factory(dict)  #: in start order
    leftovers: list[int] = attrs.Factory(list)  #: pids alive after teardown
    control_socket: str | None = None  #: the run's control socket while it listens (``attach``, the CLI)
    slurm_job: str | None = None  #: the Slurm allocation the run's steps ran in
    slurm_job_name: str | None = None
    slurm_job_owned: bool = False  #: we made it: ``gc`` cancels it for a dead run
    containment: str | None = None  #: cgroup2, freezer or marks (None: written before containment existed)
    cgroup: str | None = None  #: the run's cgroup (each replica's is a child named after it)
    cgroup_extras: list[str] = attrs.Factory(list)  #: the run's cgroups in v1 hierarchies (limits, measures)

    def replicas(self) -> list[tuple[str, ReplicaEntry]]:
        return [(name, r) for name, service in self.services.items() for r in service.replicas]


@attrs.define
class PhaseTiming:
    """One startup phase of the incarnation that became ready (or of the last one, if none did)."""

    name: str = ""
    seconds: float = 0.0
    finished: bool = True  #: False when the incarnation ended (or the run stopped) during the phase


@attrs.define
class ExitEntry:
    """One exit of a replica's process: a crash before a restart, or the end at teardown."""

    at_seconds: float | None = None  #: from the run's start
    exit_code: int | None = None  #: None when killed by a signal
    signal: str | None = None
    expected: bool = False  #: we asked it to stop, or it was a job that finished with 0
    reason: str | None = None  #: ``killed by the OOM killer (memory_max 64MB)``; None: its own exit or a signal


@attrs.define
class ResourceTotals:
    """What a replica (or a service, its replicas together) used over the run, from the samples."""

    cpu_seconds: float | None = None  #: CPU time, all its processes and restarts included
    memory_peak_bytes: int | None = None  #: a service's: the largest sum of its replicas' memory at one sample
    gpu_memory_peak_bytes: int | None = None  #: None on a run without a GPU inventory


@attrs.define
class ReplicaOutcome:
    """One replica over the whole run. Every ``*_at_seconds`` counts from the run's start."""

    state: str = "unknown"
    restarts: int = 0
    returncode: int | None = None
    service: str = ""
    spawned_at_seconds: float | None = None  #: its first spawn
    ready_at_seconds: float | None = None  #: its first ready (or completion, for a job)
    ready_seconds: float | None = None  #: time to ready: from the spawn of the incarnation that got ready
    phases: list[PhaseTiming] = attrs.Factory(list)
    exits: list[ExitEntry] = attrs.Factory(list)
    stop_seconds: float | None = None  #: at teardown: from its stop signal until every process was gone
    killed: bool = False  #: needed SIGKILL after its grace at teardown
    removed_at_seconds: float | None = None  #: taken out of its service by a scale (its state is "removed")
    resources: ResourceTotals | None = None  #: None: never sampled (or a summary of an older topovisor)


@attrs.define
class ServiceOutcome:
    """One service: when it started, when all its replicas were ready, how long its teardown took."""

    depends_on: dict[str, str] = attrs.Factory(dict)  #: service -> condition
    replicas: list[str] = attrs.Factory(list)  #: those it has at the end
    removed: list[str] = attrs.Factory(list)  #: those scaled away (their keys in ``Summary.replicas``)
    started_at_seconds: float | None = None  #: its first replica's spawn, from the run's start
    ready_at_seconds: float | None = None  #: every replica ready once (``ready`` condition), from the start
    stop_seconds: float | None = None  #: at teardown: first stop signal until its last process was gone
    resources: ResourceTotals | None = None  #: its replicas' CPU summed, their memory at its peak together


@attrs.define
class ChainLink:
    """One link of the critical chain, first link first: the service started at ``started_at_seconds``
    once ``gated_by`` reached ``condition`` (the dependency whose condition was met last)."""

    service: str = ""
    replica: str = ""  #: the replica that became ready last, and so set the service's ready time
    started_at_seconds: float | None = None
    ready_at_seconds: float | None = None
    ready_seconds: float | None = None  #: from the service's start to its ready
    gated_by: str | None = None  #: the previous link's service; None for the first link
    condition: str | None = None  #: what this service waited for of ``gated_by``: started, ready, completed


@attrs.define
class OperationOutcome:
    """One live operation on the run, from its events: a scale or a rolling restart (also one that a
    dependent's ``on_change: restart`` ran), refused, undone or stopped when ``error`` is set."""

    #: scale | rolling_restart | autoscale (a decision, ended by the scale that carried it out) | planner (an
    #: outside planner's decision, one record per service it scaled; ``error``: its shortfall there)
    kind: str = ""
    service: str = ""
    at_seconds: float | None = None  #: when it began, from the run's start
    seconds: float | None = None  #: how long it took (None: still under way)
    error: str | None = None  #: redacted
    replicas_before: int | None = None
    replicas_after: int | None = None  #: a scale: the replicas it left; a rollout: how many it was to roll
    added: list[str] = attrs.Factory(list)
    removed: list[str] = attrs.Factory(list)
    rolled: list[str] = attrs.Factory(list)
    rolled_back: list[str] = attrs.Factory(list)
    left_failed: list[str] = attrs.Factory(list)
    reason: str | None = None  #: an autoscale decision: why (the metric and its value), redacted
    decision: str | None = None  #: a planner's decision: its id


@attrs.define
class Summary:
    """``summary.json``: how the run went (timings, restarts, exits, the critical chain), how it ended,
    and whether anything survived it."""

    records_version: int = RECORDS_VERSION  #: of the file read; see ``supervisor._records.version``
    run_id: str = ""
    outcome: str = "unknown"  #: completed, stopped, failed or supervisor-died (starting/running/stopping while it runs)
    failure: str | None = None  #: the failure with its log tail, redacted
    started_wall_time: float | None = None
    ended_wall_time: float | None = None
    ready_seconds: float | None = None  #: all ready, from the run's start
    teardown_seconds: float | None = None  #: from the start of the teardown until verified empty
    services: dict[str, ServiceOutcome] = attrs.Factory(dict)  #: in start order
    replicas: dict[str, ReplicaOutcome] = attrs.Factory(dict)  #: in start order
    critical_chain: list[ChainLink] = attrs.Factory(list)  #: what set ``ready_seconds``, first link first
    operations: list[OperationOutcome] = attrs.Factory(list)  #: scales and rolling restarts, in order
    verified_no_leftovers: bool = False
    leftovers: list[int] = attrs.Factory(list)
    #: how "no leftovers" was verified: cgroup2 or freezer (the run's cgroups emptied and removed) or marks
    containment: str | None = None
    #: outcome supervisor-died: who wrote this summary after the death (watchdog or gc), and what it killed
    ended_by: str | None = None
    killed: list[int] = attrs.Factory(list)


@attrs.define
class IndexEntry:
    """``<state dir>/index/<run_id>.json``: a run that may still own processes, and who supervises it."""

    run_id: str = ""
    run_dir: str = ""
    supervisor_pid: int | None = None
    supervisor_create_time: float | None = None
    watchdog_pid: int | None = None
    watchdog_create_time: float | None = None
    registered_wall_time: float | None = None
    containment: str | None = None  #: cgroup2, freezer or marks (None: written before containment existed)
    cgroup: str | None = None  #: the run's cgroup, when contained by one
    cgroup_extras: list[str] = attrs.Factory(list)  #: the run's cgroups in v1 hierarchies (limits, measures)


# ----- one forgiving converter ---------------------------------------------------------------------------
_T = TypeVar("_T")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


_RECORD_CLASSES = (
    StopEntry,
    ReplicaEntry,
    ServiceEntry,
    Manifest,
    PhaseTiming,
    ExitEntry,
    ResourceTotals,
    ReplicaOutcome,
    ServiceOutcome,
    ChainLink,
    OperationOutcome,
    Summary,
    IndexEntry,
)


class _Missing:
    pass


_MISSING: Any = _Missing()


def _forgiving(converter: cattrs.Converter, cls: type[_T]) -> Any:
    fields = attrs.fields(cls)  # type: ignore[arg-type]

    def structure(value: object, _: object) -> _T:
        data = value if isinstance(value, dict) else {}
        kwargs = {}
        for field in fields:
            if field.name in data:
                item = converter.structure(data[field.name], field.type)
                if item is not _MISSING:
                    kwargs[field.name] = item
        return cls(**kwargs)

    return structure


def _dict_of(converter: cattrs.Converter, value_type: type[_T]) -> Any:
    def structure(value: object, _: object) -> Any:
        if not isinstance(value, dict):
            return _MISSING
        return {str(k): converter.structure(v, value_type) for k, v in value.items() if isinstance(v, dict)}

    return structure


def _list_of(converter: cattrs.Converter, item_type: type[_T]) -> Any:
    def structure(value: object, _: object) -> Any:
        if not isinstance(value, list):
            return _MISSING
        return [converter.structure(v, item_type) for v in value if isinstance(v, dict)]

    return structure


@functools.cache
def _converter() -> cattrs.Converter:
    """The forgiving reader, generated on first use."""
    import cattrs

    converter = cattrs.Converter()

    def hook(kind: Any, function: Any) -> None:
        if isinstance(kind, type) and get_origin(kind) is None:
            converter.register_structure_hook(kind, function)  # a class: ahead of cattrs' own hooks
        else:
            converter.register_structure_hook_func(lambda t: t == kind, function)

    # scalars: the wrong type reads as "absent", and the attrs class then uses the field's default
    hook(int | None, lambda v, _: v if _is_int(v) else None)
    hook(float | None, lambda v, _: float(v) if _is_number(v) else None)
    hook(str | None, lambda v, _: v if isinstance(v, str) else None)
    hook(str, lambda v, _: v if isinstance(v, str) else _MISSING)
    hook(int, lambda v, _: v if _is_int(v) else _MISSING)
    hook(float, lambda v, _: float(v) if _is_number(v) else _MISSING)
    hook(bool, lambda v, _: v if isinstance(v, bool) else _MISSING)
    hook(list[str], lambda v, _: [x for x in v if isinstance(x, str)] if isinstance(v, list) else _MISSING)
    hook(list[int], lambda v, _: [x for x in v if _is_int(x)] if isinstance(v, list) else _MISSING)
    hook(
        dict[str, str],
        lambda v, _: {str(k): x for k, x in v.items() if isinstance(x, str)} if isinstance(v, dict) else _MISSING,
    )
    hook(
        dict[str, int],
        lambda v, _: {str(k): x for k, x in v.items() if _is_int(x)} if isinstance(v, dict) else _MISSING,
    )
    hook(ResourceTotals | None, lambda v, _: converter.structure(v, ResourceTotals) if isinstance(v, dict) else None)
    for cls in _RECORD_CLASSES:
        attrs.resolve_types(cls)
        hook(cls, _forgiving(converter, cls))
        hook(list[cls], _list_of(converter, cls))  # type: ignore[valid-type]
        hook(dict[str, cls], _dict_of(converter, cls))  # type: ignore[valid-type]
    return converter


def to_json(record: Manifest | Summary | IndexEntry) -> dict[str, Any]:
    """The record as JSON-ready data (field order kept: people read these files)."""
    return attrs.asdict(record)


def manifest_from_json(data: object) -> Manifest:
    """``IncompatibleVersion`` for a manifest of a newer topovisor; any older one reads."""
    version = check_records_version(data, "manifest.json") if isinstance(data, dict) else RECORDS_VERSION
    record = _converter().structure(data, Manifest)
    record.records_version = version
    return record


def summary_from_json(data: object) -> Summary:
    """``IncompatibleVersion`` for a summary of a newer topovisor; any older one reads."""
    version = check_records_version(data, "summary.json") if isinstance(data, dict) else RECORDS_VERSION
    record = _converter().structure(data, Summary)
    record.records_version = version
    return record


def index_entry_from_json(data: object) -> IndexEntry:
    return _converter().structure(data, IndexEntry)
