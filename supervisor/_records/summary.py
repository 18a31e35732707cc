"""The run summary, computed from events alone: per replica and service time to ready (and per startup
phase), restarts, exits and teardown time, the all-ready time and the critical chain that set it.

Pure: no event loop, no I/O, no running group. The same function serves ``summary.json`` at the end of a
run, ``group.summary()`` while it runs, and tests on constructed events. The critical chain works like
``systemd-analyze critical-chain``: from the service that became ready last, walk back through the
dependency that gated its start (the one whose condition, started, ready or completed, was met last
before it spawned), until a service that waited for nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import attrs

from .._events import (
    Completed,
    Event,
    Exited,
    Failed,
    PhaseEnded,
    Ready,
    ReplicaRemoved,
    Spawned,
    Stopped,
    Stopping,
)
from .paths import read_json
from .schema import (
    ChainLink,
    ExitEntry,
    PhaseTiming,
    ReplicaOutcome,
    ServiceOutcome,
    Summary,
    summary_from_json,
)

__all__ = ["ConditionTimes", "RunSummary", "ServiceShape", "critical_chain", "read_summary", "summarize"]

RunSummary = Summary  #: the public name of ``summary.json``'s record

#: (service, condition) -> when it was met, from the run's start (None: not met)
ConditionTimes = Mapping[tuple[str, str], "float | None"]

#: a condition met this long after a spawn still counts as met before it (monotonic clocks, one process)
_EPSILON_SECONDS = 1e-6


@attrs.frozen
class ServiceShape:
    """What the summary needs of a service: its dependencies and its replicas' names, in start order."""

    depends_on: Mapping[str, str] = attrs.field(factory=dict)  #: service -> started | ready | completed
    replicas: Sequence[str] = ()


def read_summary(run_dir: str | Path) -> Summary:
    """``<run_dir>/summary.json`` as a ``RunSummary``. It is written when a run has been torn down
    (a detached run's too); for a run whose supervisor died, by its watchdog after the sweep (or by
    ``supervisor gc``), outcome ``supervisor-died``. ``FileNotFoundError`` while the run goes on."""
    path = Path(run_dir) / "summary.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no summary (the run is still going, or was not collected yet)")
    return summary_from_json(read_json(path))


@attrs.define
class _Replica:
    """What the events told about one replica so far."""

    service: str
    spawns: int = 0
    spawned_at: float | None = None
    ready_at: float | None = None
    ready_seconds: float | None = None
    completed_at: float | None = None
    phases: list[PhaseTiming] = attrs.Factory(list)
    exits: list[ExitEntry] = attrs.Factory(list)
    failed: bool = False  #: given up on (its service may go on without it: ``min_ready``)
    stopping_at: float | None = None  #: at teardown
    stopped_at: float | None = None
    stop_seconds: float | None = None
    killed: bool = False
    removed_at: float | None = None  #: scaled away


def summarize(
    services: Mapping[str, ServiceShape],
    events: Iterable[Event],
    *,
    started_at: float,
    teardown_started_at: float | None = None,
    ended_at: float | None = None,
    ready_at: float | None = None,
) -> Summary:
    """The timing part of a ``Summary`` (services, replicas, critical chain, all-ready and teardown time).

    ``services`` in start order; ``started_at``, ``teardown_started_at``, ``ended_at`` and ``ready_at``
    (when all were ready, if known) on the events' monotonic clock. Offsets in the result count from
    ``started_at``. A replica first spawned after ``ready_at`` (added later) is not part of its service's
    start; one given up on (``Failed``) before it was ready does not hold its service's ready time back.
    A replica's state is "unknown": the caller, who sees the live replicas, fills it in. A replica a scale
    removed (``ReplicaRemoved``) is listed too, state "removed", under its name, or ``<name>~<n>`` (its
    n-th removal) when a later replica has the name.
    """
    events = list(events)
    replicas, removed = _track(services, events, started_at, teardown_started_at)
    outcomes = {name: _replica_outcome(r) for name, r in replicas.items()}
    cutoff = None if ready_at is None else ready_at - started_at + _EPSILON_SECONDS
    starting = {  # the replicas that were part of its start, scaled away since or not
        name: attrs.evolve(
            shape,
            replicas=[
                *(r for r in shape.replicas if _in_start(replicas[r], cutoff)),
                *(r for r in removed[name] if _spawned_in_start(replicas[r], cutoff)),
            ],
        )
        for name, shape in services.items()
    }
    service_outcomes = {
        name: _service_outcome(shape, starting[name], replicas, removed[name]) for name, shape in services.items()
    }
    conditions = {
        (name, condition): at
        for name, shape in starting.items()
        for condition, at in _conditions(shape, replicas).items()
    }
    all_ready = _last([s.ready_at_seconds for s in service_outcomes.values() if s.replicas])
    teardown = None
    if teardown_started_at is not None and ended_at is not None:
        teardown = max(0.0, ended_at - teardown_started_at)
    return Summary(
        ready_seconds=all_ready,
        teardown_seconds=teardown,
        services=service_outcomes,
        replicas=outcomes,
        critical_chain=critical_chain(service_outcomes, outcomes, conditions),
    )


def _track(
    services: Mapping[str, ServiceShape], events: Sequence[Event], started_at: float, teardown_started_at: float | None
) -> tuple[dict[str, _Replica], dict[str, list[str]]]:
    """Each replica's record from the events (the service's replicas at the end first, then the removed
    ones), and per service the keys of its removed ones."""
    final = {name: shape_name for shape_name, shape in services.items() for name in shape.replicas}
    current = {name: _Replica(service) for name, service in final.items()}  #: name -> its record now
    gone: list[tuple[str, _Replica]] = []
    scaled_away = {e.replica for e in events if isinstance(e, ReplicaRemoved)}
    for event in events:
        if isinstance(event, ReplicaRemoved):
            record = current.get(event.replica) or _Replica(event.service)
            record.removed_at = event.monotonic - started_at
            gone.append((event.replica, record))
            current[event.replica] = _Replica(event.service)  # a later replica of this name starts afresh
            continue
        replica = current.get(event.replica)
        if replica is None and event.replica in scaled_away:  # removed later: its life up to then
            replica = current[event.replica] = _Replica(event.service)
        if replica is not None:
            _apply(replica, event, started_at, teardown_started_at)
    replicas = {name: current[name] for name in final}
    removed: dict[str, list[str]] = {name: [] for name in services}
    removals: dict[str, int] = {}
    last = {name: n for n, (name, _) in enumerate(gone)}
    for n, (name, record) in enumerate(gone):
        removals[name] = removals.get(name, 0) + 1
        key = name if name not in final and last[name] == n else f"{name}~{removals[name]}"
        replicas[key] = record
        removed.setdefault(record.service, []).append(key)
    return replicas, removed


def _apply(replica: _Replica, event: Event, started_at: float, teardown_started_at: float | None) -> None:
    at = event.monotonic - started_at
    if isinstance(event, Spawned):
        replica.spawns += 1
        if replica.spawned_at is None:
            replica.spawned_at = at
        if replica.ready_at is None:
            replica.phases = []  # a restart before ready starts its phases over
    elif isinstance(event, PhaseEnded) and replica.ready_at is None:
        replica.phases.append(PhaseTiming(name=event.phase, seconds=event.seconds, finished=event.finished))
    elif isinstance(event, Ready) and replica.ready_at is None:
        replica.ready_at, replica.ready_seconds = at, event.seconds
    elif isinstance(event, Completed) and replica.completed_at is None:
        replica.completed_at = at
    elif isinstance(event, Failed):
        replica.failed = True
    elif isinstance(event, Exited):
        replica.exits.append(
            ExitEntry(
                at_seconds=at,
                exit_code=event.exit_code,
                signal=event.signal,
                expected=event.expected,
                reason=event.reason,
            )
        )
    elif isinstance(event, Stopping) and teardown_started_at is not None and event.monotonic >= teardown_started_at:
        replica.stopping_at = at
    elif isinstance(event, Stopped) and replica.stopping_at is not None:
        replica.stopped_at, replica.stop_seconds, replica.killed = at, event.seconds, event.killed


def _replica_outcome(replica: _Replica) -> ReplicaOutcome:
    ready_at = replica.ready_at
    if replica.completed_at is not None and (ready_at is None or replica.completed_at < ready_at):
        ready_at = replica.completed_at  # a job is "ready" for its dependents once it completed
    last_exit = replica.exits[-1] if replica.exits else None
    return ReplicaOutcome(
        restarts=max(0, replica.spawns - 1),
        returncode=None if last_exit is None else last_exit.exit_code,
        service=replica.service,
        spawned_at_seconds=replica.spawned_at,
        ready_at_seconds=ready_at,
        ready_seconds=replica.ready_seconds,
        phases=list(replica.phases),
        exits=list(replica.exits),
        stop_seconds=replica.stop_seconds,
        killed=replica.killed,
        state="removed" if replica.removed_at is not None else "unknown",
        removed_at_seconds=replica.removed_at,
    )


def _in_start(replica: _Replica, cutoff: float | None) -> bool:
    """Part of its service's start: not first spawned after everything was ready."""
    return cutoff is None or replica.spawned_at is None or replica.spawned_at <= cutoff


def _spawned_in_start(replica: _Replica, cutoff: float | None) -> bool:
    """A removed replica was part of its service's start: spawned before everything was ready."""
    return cutoff is not None and replica.spawned_at is not None and replica.spawned_at <= cutoff


def _service_outcome(
    shape: ServiceShape, start: ServiceShape, replicas: Mapping[str, _Replica], removed: Sequence[str]
) -> ServiceOutcome:
    """``start``: the same service, with only the replicas that were part of its start."""
    own = [replicas[name] for name in start.replicas]
    stops = [replicas[name] for name in shape.replicas]
    stopping = [r.stopping_at for r in stops if r.stopping_at is not None]
    stopped = [r.stopped_at for r in stops if r.stopped_at is not None]
    return ServiceOutcome(
        depends_on=dict(shape.depends_on),
        replicas=list(shape.replicas),
        removed=list(removed),
        started_at_seconds=min((r.spawned_at for r in own if r.spawned_at is not None), default=None),
        ready_at_seconds=_conditions(start, replicas)["ready"],
        stop_seconds=max(stopped) - min(stopping) if stopping and stopped else None,
    )


def _ready_at(replica: _Replica) -> float | None:
    times = [t for t in (replica.ready_at, replica.completed_at) if t is not None]
    return min(times, default=None)


def _conditions(shape: ServiceShape, replicas: Mapping[str, _Replica]) -> dict[str, float | None]:
    """When the service reached each start condition: every replica spawned (started), every replica
    ready once (ready; a job counts once completed), every replica completed (completed)."""
    own = [replicas[name] for name in shape.replicas]
    if not own:
        return {"started": None, "ready": None, "completed": None}
    return {
        "started": _last([r.spawned_at for r in own]),
        "ready": _last([_ready_at(r) for r in own if not (r.failed and _ready_at(r) is None)]),
        "completed": _last([r.completed_at for r in own]),
    }


def _last(times: Sequence[float | None]) -> float | None:
    """The latest of ``times``, or None when one of them has not happened."""
    known = [t for t in times if t is not None]
    return max(known) if known and len(known) == len(times) else None


def critical_chain(
    services: Mapping[str, ServiceOutcome], replicas: Mapping[str, ReplicaOutcome], conditions: ConditionTimes
) -> list[ChainLink]:
    """The chain of starts that set the last ready time, first link first (empty when nothing got ready).

    Ties go to the service later in start order for the last link, and to the dependency listed first
    for a gate: deterministic, whatever the clock's resolution.
    """
    ready = [
        (s.ready_at_seconds, i, name) for i, (name, s) in enumerate(services.items()) if s.ready_at_seconds is not None
    ]
    if not ready:
        return []
    _, _, name = max(ready)
    chain: list[ChainLink] = []
    seen: set[str] = set()
    while name not in seen:  # a dependency graph has no cycle; the guard bounds the walk anyway
        seen.add(name)
        service = services[name]
        gated = _gate(service, conditions)
        chain.append(_link(name, service, replicas, gated))
        if gated is None:
            break
        name = gated[0]
    chain.reverse()
    return chain


def _gate(service: ServiceOutcome, conditions: ConditionTimes) -> tuple[str, str] | None:
    """The dependency whose condition was met last before ``service`` started (None: it waited for none)."""
    met = []
    for order, (dep, condition) in enumerate(service.depends_on.items()):
        at = conditions.get((dep, condition))
        if at is not None:
            met.append((at, -order, dep, condition))
    if not met:
        return None
    started = service.started_at_seconds
    before = [m for m in met if started is None or m[0] <= started + _EPSILON_SECONDS]
    _, _, dep, condition = max(before or met)
    return dep, condition


def _link(
    name: str, service: ServiceOutcome, replicas: Mapping[str, ReplicaOutcome], gated: tuple[str, str] | None
) -> ChainLink:
    started, ready = service.started_at_seconds, service.ready_at_seconds
    names = [*service.replicas, *service.removed]
    own = [(r.ready_at_seconds, i, n) for i, n in enumerate(names) if (r := replicas.get(n)) is not None]
    last = max(((t, i, n) for t, i, n in own if t is not None and ready is not None and t <= ready), default=None)
    return ChainLink(
        service=name,
        replica=last[2] if last is not None else "",
        started_at_seconds=started,
        ready_at_seconds=ready,
        ready_seconds=ready - started if ready is not None and started is not None else None,
        gated_by=None if gated is None else gated[0],
        condition=None if gated is None else gated[1],
    )
