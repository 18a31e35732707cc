"""Rolling restart of a running service: ``group.rolling_restart("prefill", max_unavailable=1)``.

Replicas are restarted in index order, at most ``max_unavailable`` at a time, each stopped (its stop
signal and grace), started again on the same ports and GPUs (on a new spec, when ``overrides`` or
``service_spec`` give one) and waited for until ready, never leaving fewer than ``min_ready`` ready: the
argument, else the service's ``min_ready``, else ``replicas - max_unavailable``. A restart that would go
below it (other replicas not ready) stops the rollout with an error instead of waiting.

A replica that fails its start on the new spec (exit, readiness timeout) stops the rollout: it is put back
on its previous spec and started again (``rolled_back``), so the service keeps its size and every replica
not yet rolled never stopped; if that start fails too it is left failed (``left_failed``), and the run goes
on without it. Either way the error raised names the replica and why. Replicas rolled before the failure
keep the new spec (as a Kubernetes rollout that stops half way); run the rollout again once fixed.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, TypedDict

import attrs

from .._errors import ConfigError, NotRunning, ServiceFailed
from .._events import RolloutEnded, RolloutStarted, RolloutStepped
from .._plan.plan import ReplicaPlan, ServicePlan
from .._plan.replan import refilled, respecified, with_service
from .._spec.model import Service
from . import group_stop
from . import supervision as _supervision
from .operations import run_operation, wait_settled
from .replica import Replica, ReplicaState, ServiceHandle
from .state import RunState

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["RollingRestartOptions", "rolling_restart", "rollout", "rollout_floor"]


class RollingRestartOptions(TypedDict, total=False):
    """The options of a rolling restart, named once for every layer that passes them on (the blocking
    wrapper, the group); their defaults and meaning are ``RunningTopology.rolling_restart``'s."""

    max_unavailable: int
    min_ready: int | None
    overrides: Mapping[str, str] | None
    service_spec: Service | None


async def rolling_restart(run: RunState, service: str, **options: Unpack[RollingRestartOptions]) -> None:
    """``RunningTopology.rolling_restart``, which passes every option."""
    max_unavailable, min_ready = options["max_unavailable"], options["min_ready"]
    overrides, service_spec = options["overrides"], options["service_spec"]
    handle = run.service(service)  # KeyError naming the services
    run_operation(run, f"roll '{service}'")
    async with run.operation_lock:
        run_operation(run, f"roll '{service}'")
        try:
            spec = _new_spec(run, service, overrides, service_spec)
            new = respecified(run.plan, spec) if spec is not None else _refilled(run, handle)
            if new is not None:
                _check_limits(run, new)
            floor = rollout_floor(handle, max_unavailable, min_ready)
        except ConfigError as exc:  # refused: nothing stopped; still an event, as every operation is
            run.emit(RolloutEnded(replica="", service=service, seconds=0.0, error=str(exc).splitlines()[0]))
            raise
        await rollout(run, handle, new, spec, max_unavailable=max_unavailable, floor=floor)


async def rollout(
    run: RunState,
    handle: ServiceHandle,
    new: ServicePlan | None,
    spec: Service | None,
    *,
    max_unavailable: int,
    floor: int,
) -> None:
    """Roll every replica of ``handle`` onto ``new`` (None: restart on the plan each runs), ``spec`` being
    the service's new spec to record once all rolled (None: keep it); the caller holds the operation lock."""
    service = handle.name
    began = time.monotonic()
    replicas = list(handle.replicas)
    run.emit(
        RolloutStarted(
            replica="",
            service=service,
            replicas=len(replicas),
            max_unavailable=max_unavailable,
            min_ready=floor,
            respecified=new is not None,
        )
    )
    rolled: list[str] = []
    try:
        pending = list(replicas)
        while pending:
            batch = _next_batch(handle, pending, max_unavailable, floor)
            stepped = time.monotonic()
            before = {r.name: (r.plan, r.service_plan) for r in batch}
            failed = await _roll(run, batch, new, reason="rolling restart")
            for replica in batch:
                if replica not in failed:
                    rolled.append(replica.name)
                    seconds = time.monotonic() - stepped
                    step = RolloutStepped(
                        replica=replica.name, service=service, step=len(rolled), of=len(replicas), seconds=seconds
                    )
                    run.emit(step)
            if failed:
                await _give_up(run, handle, failed, rolled, began, before if new is not None else {})
            pending = pending[len(batch) :]
            if new is not None:
                _record_plan(run, handle, new, None)
    except BaseException as exc:
        if not isinstance(exc, _Stopped):
            error = str(exc).splitlines()[0] if isinstance(exc, Exception) and str(exc) else type(exc).__name__
            seconds = time.monotonic() - began
            run.emit(RolloutEnded(replica="", service=service, rolled=tuple(rolled), seconds=seconds, error=error))
        run.write_manifest()
        if isinstance(exc, _Stopped):
            raise exc.error from None
        raise
    if new is not None:
        _record_plan(run, handle, new, spec)
    run.emit(RolloutEnded(replica="", service=service, rolled=tuple(rolled), seconds=time.monotonic() - began))
    run.write_manifest()


class _Stopped(Exception):
    """The rollout stopped at a failed replica; its event is already out, ``error`` goes to the caller."""

    def __init__(self, error: ServiceFailed) -> None:
        super().__init__(str(error))
        self.error = error


def _refilled(run: RunState, handle: ServiceHandle) -> ServicePlan | None:
    """A plain rollout starts each replica with its templates filled with the run as it is now (a scale
    since its start changed ``{decode.urls}``); None when nothing would change, or nothing fills any more
    (then each restarts on what it ran)."""
    try:
        new = refilled(run.plan, handle.name)
    except ConfigError:
        return None
    return None if new.replicas == tuple(r.plan for r in handle.replicas) else new


def _new_spec(run: RunState, service: str, overrides: Mapping[str, str] | None, spec: Service | None) -> Service | None:
    """The service's new spec: given, or re-loaded from the topology's file with the run's overrides and
    these; None for a plain restart of every replica on the spec it runs."""
    if spec is not None:
        if overrides:
            raise ConfigError(f"service '{service}': give overrides or service_spec, not both")
        if spec.name != service:
            raise ConfigError(f"service '{service}': the new spec is for service '{spec.name}'")
        return spec
    if not overrides:
        return None
    topology = run.plan.topology
    source = topology.source if topology is not None else run.plan.source
    if topology is None or source is None:
        raise ConfigError(
            f"service '{service}': overrides need the topology's file, and this one was built in code; "
            "pass service_spec= instead"
        )
    from .._spec.load import load

    reloaded = load(source, overrides={**topology.overrides, **overrides})
    for candidate in reloaded.services:
        if candidate.name == service:
            return candidate
    raise ConfigError(f"service '{service}': not in {source} any more, with these overrides", source=source)


def rollout_floor(handle: ServiceHandle, max_unavailable: int, min_ready: int | None) -> int:
    """The fewest ready replicas the rollout may leave; ``ConfigError`` for settings that cannot roll."""
    count = len(handle.replicas)
    where = f"service '{handle.name}'"
    if isinstance(max_unavailable, bool) or not isinstance(max_unavailable, int) or max_unavailable < 1:
        raise ConfigError(f"{where}: max_unavailable must be 1 or more, got {max_unavailable!r}")
    if min_ready is not None and (isinstance(min_ready, bool) or not isinstance(min_ready, int) or min_ready < 0):
        raise ConfigError(f"{where}: min_ready must be a whole number, 0 or more, got {min_ready!r}")
    floor = min_ready if min_ready is not None else handle.plan.min_ready
    if floor is None:
        floor = max(count - max_unavailable, 0)
    if count and floor >= count:
        raise ConfigError(
            f"{where}: min_ready {floor} of {count} replicas leaves none to restart at a time; "
            "lower min_ready, or scale up first"
        )
    return floor


def _next_batch(handle: ServiceHandle, pending: list[Replica], max_unavailable: int, floor: int) -> list[Replica]:
    """The next replicas to restart together: at most ``max_unavailable``, and the others ready stay at
    least ``floor``. A replica not ready now costs nothing to restart."""
    batch: list[Replica] = []
    for replica in pending:
        if len(batch) >= max_unavailable:
            break
        serving = sum(r.state is ReplicaState.READY for r in handle.replicas if r not in batch and r is not replica)
        if serving < floor:
            break
        batch.append(replica)
    if not batch:
        ready = handle.ready_count
        raise ServiceFailed(
            pending[0].name,
            f"rolling restart of '{handle.name}' stopped before {pending[0].name}: only {ready} of "
            f"{len(handle.replicas)} replicas are ready, and restarting it would leave fewer than min_ready {floor}",
        )
    return batch


async def _roll(run: RunState, replicas: Sequence[Replica], new: ServicePlan | None, *, reason: str) -> list[Replica]:
    """Stop ``replicas``, start them again (on ``new``, if given), and wait until each is ready or failed;
    returns the failed ones (on trial: their failure is not the run's)."""
    for replica in replicas:
        replica.hold()  # a strategy restart under way must not spawn it meanwhile
        if replica.loop_scope is not None:
            replica.loop_scope.cancel()
    async with run.restart_lock:
        await group_stop.stop_in_order(run, replicas, reason=reason)
    if run.stopping:
        raise NotRunning(f"run {run.run_id} is being torn down: rollout stopped")
    plans = {r.name: r for r in new.replicas} if new is not None else {}
    for replica in replicas:
        replica.transition(ReplicaState.RESTARTING)
        if new is not None:
            replica.respec(plans[replica.name], new)
        run.containment.relimit(replica.name, replica.service_plan.resources)  # also a rollback's
    if new is not None:  # the new env's secrets are hidden from the first line the new replicas print
        run.learn_secrets()
    for replica in replicas:
        replica.begin_trial()
        replica.unhold()
        replica.count_restart()
        _supervision.launch(run, replica)
    run.write_manifest()
    try:
        await wait_settled(run, replicas)
    except BaseException:  # the caller gave up waiting: they go on under their ordinary supervision
        for replica in replicas:
            replica.end_trial()
        raise
    failed = [r for r in replicas if r.state is ReplicaState.FAILED]
    for replica in replicas:
        if replica not in failed:
            replica.end_trial()
    return failed


async def _give_up(
    run: RunState,
    handle: ServiceHandle,
    failed: list[Replica],
    rolled: list[str],
    began: float,
    previous: Mapping[str, tuple[ReplicaPlan, ServicePlan]],
) -> None:
    """A replica failed on the new spec: put it back on its ``previous`` one and start it again; then stop
    the rollout with an error naming it and why (raised as ``_Stopped`` to the caller's loop)."""
    first = failed[0]
    cause = first.failure or ServiceFailed(first.name, "failed to start")
    left = list(failed)
    if previous:
        for replica in failed:
            replica_plan, service_plan = previous[replica.name]
            replica.respec(replica_plan, service_plan)
        left = await _roll(run, failed, None, reason="rollback")
    for replica in left:
        replica.end_trial()  # from now on it is an ordinary failed replica: run.restart() brings it back
    back = [r.name for r in failed if r not in left]
    if back:
        outcome = f"{', '.join(back)} rolled back to the previous spec and ready again"
    elif previous:
        outcome = f"{', '.join(r.name for r in left)} failed on the previous spec too and is left stopped"
    else:
        outcome = f"{', '.join(r.name for r in left)} is left stopped"
    serving = handle.ready_count
    reason = (
        f"rolling restart of '{handle.name}' stopped at {first.name}: {cause.reason}; {outcome}; "
        f"{len(rolled)} of {len(handle.replicas)} replicas rolled, {serving} ready"
    )
    error = type(cause)(first.name, reason, log_tail=cause.log_tail, log_path=cause.log_path, exit_code=cause.exit_code)
    run.emit(
        RolloutEnded(
            replica="",
            service=handle.name,
            rolled=tuple(rolled),
            seconds=time.monotonic() - began,
            error=reason,
            rolled_back=tuple(back),
            left_failed=tuple(r.name for r in left),
        )
    )
    raise _Stopped(error)


def _check_limits(run: RunState, new: ServicePlan) -> None:
    """``ConfigError`` before anything stops, for limits the run's cgroups cannot take."""
    from .._host.limits import LimitUnavailable

    try:
        run.containment.check_limits(new.resources)
    except LimitUnavailable as exc:
        asked = new.resources.asked() if new.resources is not None else {}
        named = ", ".join(f"service '{new.name}' resources.{field}" for field in asked)
        raise ConfigError(f"{named}: cannot be set here: {exc}", source=run.plan.source) from None


def _record_plan(run: RunState, handle: ServiceHandle, new: ServicePlan, spec: Service | None) -> None:
    """The run's plan says what each replica runs now; once every replica rolled, the service's settings
    (restart policy, phases, ...) and its spec (for a later scale) are the new ones."""
    replicas = tuple(r.plan for r in handle.replicas)
    service = new if spec is not None or all(r.plan in new.replicas for r in handle.replicas) else handle.plan
    updated = with_service(run.plan, _with_replicas(service, replicas), spec)
    run.plan = updated
    handle.plan = updated.service(handle.name)
    limits = handle.plan.resources  # a later scale's new replicas start under the service's limits
    if limits is not None and limits.asked():
        run.containment.limits[handle.name] = limits
    else:
        run.containment.limits.pop(handle.name, None)
    run.learn_secrets()


def _with_replicas(service: ServicePlan, replicas: tuple[ReplicaPlan, ...]) -> ServicePlan:
    return attrs.evolve(service, replicas=replicas)
