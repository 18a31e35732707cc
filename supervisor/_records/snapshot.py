"""The running group, as the records see it: a ``Manifest`` and a ``Summary`` built from the live objects.

This is the runtime side of the records: the records package never imports the group or its replicas.
The group passes itself, typed here only by the few attributes read (``RunView``), and gets plain
records back, every string passed through the run's redactor.
"""

from __future__ import annotations

import os
import time
import weakref
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import attrs
import psutil

from .._redact import Redactor, argv_secrets, header_secrets
from .._spec.model import AllOf, AnyOf, Check, HttpCheck
from .schema import Manifest, ReplicaEntry, ResourceTotals, ServiceEntry, StopEntry, Summary
from .summary import ServiceShape, summarize
from .summary_ops import operations_of

__all__ = ["RunView", "forget_redactor", "manifest_of", "redactor_of", "summary_of"]


class _ReplicaView(Protocol):
    name: Any
    state: Any  #: a ``ReplicaState``: its ``value`` is written
    pid: Any
    process: Any  #: its ``create_time`` is written, when there is one
    returncode: Any
    restarts: Any
    plan: Any  #: a ``ReplicaPlan``: argv, env, stop
    ports: Any
    url: Any
    log_path: Any


class _ServiceView(Protocol):
    name: Any
    plan: Any  #: a ``ServicePlan``: depends_on
    replicas: Any


class RunView(Protocol):
    """What the records read from a running group."""

    run_id: str
    run_dir: Any
    plan: Any  #: name and source

    @property
    def phase(self) -> str: ...  #: pending, starting, running, stopping, stopped

    started_wall_time: float
    started_at: float
    ready_at: float | None
    teardown_started_at: float | None
    failure: Any
    leftovers: list[int]
    base_env: dict[str, str]
    control_socket: Any  #: a path, or None while no socket listens

    @property
    def services(self) -> Sequence[Any]: ...
    @property
    def replicas(self) -> Sequence[Any]: ...
    @property
    def event_history(self) -> list[Any]: ...


_REDACTORS: weakref.WeakKeyDictionary[Any, Redactor] = weakref.WeakKeyDictionary()


def redactor_of(group: RunView) -> Redactor:
    """The secrets of a run: those of the caller's environment and of every service's env."""
    redactor = _REDACTORS.get(group)
    if redactor is None:
        redactor = Redactor.from_environments(group.base_env, *(r.plan.env for r in group.replicas))
        redactor |= Redactor(value for r in group.replicas for value in _command_secrets(r.plan))
        _REDACTORS[group] = redactor
    return redactor


def _command_secrets(plan: Any) -> Iterator[str]:
    """A replica's secrets outside its env: the value of a secret flag in its command (``--api_key X``),
    and of a secret header its probes send (``Authorization: Bearer X``)."""
    yield from argv_secrets(plan.argv)
    for probe in (plan.ready, plan.alive):
        if probe is not None:
            yield from _header_secrets(probe.check)


def _header_secrets(check: Check) -> Iterator[str]:
    if isinstance(check, HttpCheck) and check.headers:
        yield from header_secrets(check.headers)
    elif isinstance(check, (AllOf, AnyOf)):
        for inner in check.checks:
            yield from _header_secrets(inner)


def forget_redactor(group: object) -> None:
    """The services' env changed (a rolling restart's new spec): the next ``redactor_of`` reads it again."""
    _REDACTORS.pop(group, None)


def manifest_of(group: RunView) -> Manifest:
    """``manifest.json``: resolved commands, redacted env, ports, and every pid with its create time."""
    redactor = redactor_of(group)
    text = redactor.text
    return Manifest(
        run_id=group.run_id,
        name=group.plan.name,
        source=None if group.plan.source is None else text(str(group.plan.source)),
        run_dir=str(group.run_dir),
        phase=str(group.phase),
        supervisor_pid=os.getpid(),
        supervisor_create_time=_own_create_time(),
        started_wall_time=group.started_wall_time,
        services={
            s.name: ServiceEntry(
                depends_on={d.service: d.condition for d in s.plan.depends_on},
                replicas=[_replica_entry(r, redactor) for r in s.replicas],
            )
            for s in group.services
        },
        leftovers=list(group.leftovers),
        control_socket=None if group.control_socket is None else str(group.control_socket),
        **_slurm_job(group),
        **_containment(group),
    )


def _containment(group: RunView) -> dict[str, Any]:
    containment = getattr(group, "containment", None)
    return {} if containment is None else containment.record()


def _slurm_job(group: RunView) -> dict[str, Any]:
    allocation = getattr(group, "allocation", None)
    if allocation is None:
        return {}
    return {"slurm_job": allocation.job_id, "slurm_job_name": allocation.name, "slurm_job_owned": allocation.owned}


def summary_of(group: RunView) -> Summary:
    """``summary.json`` (and ``group.summary()`` while the run goes on): timings from the events, each
    replica's state and restarts as the group sees them, how the run ended and whether anything survived."""
    replicas = group.replicas
    stopped = group.phase == "stopped"
    if group.failure is not None:
        outcome = "failed"
    elif not stopped:
        outcome = group.phase
    elif replicas and all(r.state.value == "completed" for r in replicas):
        outcome = "completed"
    else:
        outcome = "stopped"
    shapes = {
        s.name: ServiceShape(
            depends_on={d.service: d.condition for d in s.plan.depends_on}, replicas=[r.name for r in s.replicas]
        )
        for s in group.services
    }
    timings = summarize(
        shapes,
        group.event_history,
        started_at=group.started_at,
        teardown_started_at=group.teardown_started_at,
        ended_at=time.monotonic() if stopped else None,
        ready_at=group.ready_at,
    )
    for r in replicas:
        entry = timings.replicas[r.name]
        entry.state, entry.restarts, entry.returncode = r.state.value, r.restarts, r.returncode
        entry.resources = _replica_totals(getattr(r, "resources", None))
    _service_totals(group, timings)
    redact = redactor_of(group).text
    return attrs.evolve(
        timings,
        operations=operations_of(group.event_history, started_at=group.started_at, redact=redact),
        run_id=group.run_id,
        outcome=outcome,
        failure=None if group.failure is None else redact(str(group.failure)),
        started_wall_time=group.started_wall_time,
        ended_wall_time=time.time() if stopped else None,
        ready_seconds=None if group.ready_at is None else group.ready_at - group.started_at,
        verified_no_leftovers=stopped and not group.leftovers,
        leftovers=list(group.leftovers),
        containment=_containment(group).get("containment"),
    )


def _replica_totals(usage: Any) -> ResourceTotals | None:
    """A replica's totals from its latest sample (a ``ResourceUsage``: peaks and CPU are cumulative)."""
    if usage is None:
        return None
    return ResourceTotals(
        cpu_seconds=round(usage.cpu_seconds, 3),
        memory_peak_bytes=usage.memory_peak_bytes,
        gpu_memory_peak_bytes=usage.gpu_memory_peak_bytes,
    )


def _service_totals(group: RunView, timings: Summary) -> None:
    """Per service: its replicas' CPU summed, and the most memory they held together at one sample."""
    sampler = getattr(group, "resource_sampler", None)
    peaks = sampler.services if sampler is not None else {}
    for s in group.services:
        outcome = timings.services.get(s.name)
        replicas = [timings.replicas[r.name].resources for r in s.replicas if r.name in timings.replicas]
        sampled = [t for t in replicas if t is not None]
        if outcome is None or not sampled:
            continue
        peak = peaks.get(s.name)
        outcome.resources = ResourceTotals(
            cpu_seconds=round(sum(t.cpu_seconds or 0.0 for t in sampled), 3),
            memory_peak_bytes=peak.memory_bytes if peak is not None else None,
            gpu_memory_peak_bytes=peak.gpu_memory_bytes if peak is not None else None,
        )


def _replica_entry(replica: _ReplicaView, redactor: Redactor) -> ReplicaEntry:
    process = replica.process
    return ReplicaEntry(
        name=replica.name,
        state=replica.state.value,
        pid=replica.pid,
        pgid=replica.pid,
        create_time=process.create_time if process else None,
        returncode=replica.returncode,
        restarts=replica.restarts,
        command=redactor.argv(replica.plan.argv),
        env=redactor.env(replica.plan.env),
        ports=dict(replica.ports),
        url=None if replica.url is None else redactor.text(replica.url),
        log=str(replica.log_path),
        stop=StopEntry(signal=replica.plan.stop.signal, grace_seconds=replica.plan.stop.grace_seconds),
        gpus=list(replica.plan.gpus),
    )


_OWN_CREATE_TIME: list[float] = []


def _own_create_time() -> float:
    if not _OWN_CREATE_TIME:
        _OWN_CREATE_TIME.append(psutil.Process().create_time())
    return _OWN_CREATE_TIME[0]
