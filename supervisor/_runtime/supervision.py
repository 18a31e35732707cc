"""Supervision: each replica's life (ready, live, exit), the restart policy, strategies, liveness, quorum.

Functions over the running group (``SupervisedGroup``), which keeps the state; this module decides what
happens after a replica becomes ready or ends. A failure that cannot be absorbed records the first error
and cancels the start or the caller's body (``fail``); the group's shielded teardown follows.
"""

from __future__ import annotations

import time
from typing import Protocol

import anyio
import anyio.abc
import attrs

from .._errors import ReadinessTimeout, ServiceFailed
from .._events import Completed, Degraded, Event, Failed, Ready, Restarting
from .._host.probes import describe_check
from .._host.process import describe_exit
from .._plan.plan import Plan
from . import group_stop
from .conditions import StartConditions
from .group_stop import StoppingGroup
from .policy import Decision, decide
from .replica import Incarnation, Replica, ReplicaState, ServiceHandle


class SupervisedGroup(StoppingGroup, Protocol):
    """What supervision reads and drives on the running group (``_runtime.group.RunningTopology`` is the one);
    a protocol, so that this module and the group import each other at no time, not even for types."""

    plan: Plan
    failure: ServiceFailed | None
    _services: dict[str, ServiceHandle]
    _conditions: StartConditions
    _tg: anyio.abc.TaskGroup | None
    _body_scope: anyio.CancelScope | None
    _restart_lock: anyio.Lock
    _stopping: bool
    _all_done: anyio.Event

    @property
    def replicas(self) -> list[Replica]: ...

    def emit(self, event: Event) -> None: ...

    def _order(self, replica: Replica) -> tuple[int, int]: ...

    def _write_manifest(self) -> None: ...

    async def _start_service(self, name: str, replicas: list[Replica] | None) -> None: ...


__all__ = ["check_completed", "check_done", "fail", "replica_failed", "restart_set", "supervise"]


@attrs.frozen
class _Ending:
    """How an incarnation ended on its own (not because we stopped it)."""

    why: str
    exit_code: int | None
    timed_out: bool = False


async def supervise(group: SupervisedGroup, replica: Replica, scope: anyio.CancelScope, first: Incarnation) -> None:
    """One replica's life: become ready, run; after each end the restart policy decides, and the next
    incarnation is spawned here."""
    incarnation = first
    with scope:
        while await run_incarnation(group, replica, incarnation):
            if group._stopping:  # once teardown began, nothing new is spawned
                return
            try:
                incarnation = replica.spawn(group)
            except ServiceFailed as error:
                replica_failed(group, replica, error)
                return


async def run_incarnation(group: SupervisedGroup, replica: Replica, incarnation: Incarnation) -> bool:
    """Live through one incarnation and apply the restart policy; True: spawn the next one here."""
    if incarnation.number > 0:
        group._write_manifest()
    ending = await live(group, replica, incarnation)
    if ending is None or group._stopping:
        return False  # we stopped it: teardown, an explicit stop, or a strategy restart
    await group_stop.stop_leftovers(group, replica)  # e.g. an engine core outliving its crashed parent
    await incarnation.stream.wait_closed(0.5)  # read its last words before judging them
    if group._stopping:  # teardown began meanwhile (the scan above runs in a thread a cancel cannot
        return False  # interrupt) and has stopped this replica: its exit is no longer ours to judge
    incarnation.fatal_line = replica.find_fatal_line(incarnation)
    if replica.trial:  # the operation that started it judges, at once: no restart, no backoff
        replica_failed(group, replica, _trial_error(replica, ending))
        return False
    decision = decide(
        replica.service_plan.restart,
        replica.budget,
        exit_code=ending.exit_code,
        now=time.monotonic(),
        uptime_seconds=incarnation.uptime_seconds if incarnation.ready_at else 0.0,
        fatal_line=incarnation.fatal_line,
        why=ending.why,
    )
    if decision.action == "complete":
        replica.transition(ReplicaState.COMPLETED, Completed(replica=replica.name, service=replica.service), group.emit)
        replica.settle()
        check_completed(group, replica.service)
        return False
    if decision.action == "fail":
        error_type = ReadinessTimeout if ending.timed_out and not incarnation.fatal_line else ServiceFailed
        error = error_type(
            replica.name,
            decision.reason,
            log_tail=replica.log_tail(),
            log_path=str(replica.log_path),
            exit_code=ending.exit_code,
        )
        replica_failed(group, replica, error)
        return False
    replica.count_restart()
    strategy = replica.service_plan.strategy
    if strategy != "one_for_one" or replica.service_plan.restart.group:
        if replica.restart_pending:  # a restart that includes this replica is already under way
            return False
        targets = restart_targets(group, replica, strategy)
        for target in targets:
            target.join_strategy_restart()
        assert group._tg is not None
        group._tg.start_soon(restart_for, group, replica, decision, strategy, targets)
        return False
    replica.transition(ReplicaState.RESTARTING, restarting_event(replica, decision), group.emit)
    await anyio.sleep(decision.delay_seconds)
    return True


async def live(group: SupervisedGroup, replica: Replica, incarnation: Incarnation) -> _Ending | None:
    """Until this incarnation ends. None when we stopped it; otherwise why it ended."""
    runner = incarnation.runner
    if runner is not None:
        outcome = "exited"
        try:
            with incarnation.until_exit():  # the process's exit cancels the probing
                try:
                    await runner.wait_passed()
                    outcome = "ready"
                except TimeoutError:
                    outcome = "timeout"
        finally:
            phases = incarnation.phases
            where = phases.describe(time.monotonic()) if phases is not None else None
            if phases is not None and outcome != "ready":  # exited, timed out, stopped or cancelled
                phases.close(time.monotonic(), finished=False)
        probe_text = f"probe {describe_check(runner.probe.check)}"
        if outcome == "exited":
            if incarnation.stop_reason is not None:
                return None
            code = incarnation.returncode if incarnation.returncode is not None else -1
            place = f", {where}" if where else ""
            return _Ending(
                f"{describe_exit(code)} before it was ready{place} ({probe_text}, last: {runner.last.detail})", code
            )
        if outcome == "timeout":
            stuck = f", stuck {where}" if where else ""
            why = (
                f"not ready after {runner.probe.ready_timeout:g}s{stuck}: {probe_text} failed {runner.attempts} "
                f"times, last: {runner.last.detail}"
            )
            if runner.probe.progress_timeout_seconds is not None:
                why = (
                    f"not ready: no progress for {runner.probe.progress_timeout_seconds:g}s{stuck} "
                    f"({probe_text}, last: {runner.last.detail})"
                )
            await group_stop.stop_one(group, replica, reason="readiness timeout")
            return _Ending(why, None, timed_out=True)
    became_ready(group, replica, incarnation)
    liveness = replica.liveness_runner(group, incarnation)
    if liveness is None:
        await incarnation.exited.wait()
    else:
        reason = await replica.watch_liveness(group, incarnation, liveness)
        if reason is not None:
            if not incarnation.exited.is_set():  # where it hangs, before the kill erases it
                from .._host.stackdump import dump_python_stacks

                with incarnation.until_exit():
                    await dump_python_stacks(incarnation.process.pid, "liveness failed", replica.annotate)
            await group_stop.stop_one(group, replica, reason="liveness")
            return _Ending(reason, None)
    if incarnation.stop_reason is not None:
        return None
    code = incarnation.returncode if incarnation.returncode is not None else -1
    return _Ending(f"{describe_exit(code)} while running", code)


def became_ready(group: SupervisedGroup, replica: Replica, incarnation: Incarnation) -> None:
    incarnation.ready_at = time.monotonic()
    if incarnation.phases is not None:  # the last phase ends here; later output is not read for phases
        incarnation.phases.close(incarnation.ready_at, finished=True)
    ready = Ready(
        replica=replica.name,
        service=replica.service,
        pid=incarnation.process.pid,
        seconds=incarnation.ready_at - incarnation.spawned_at,
    )
    replica.transition(ReplicaState.READY, ready, group.emit)
    replica.settle()


def restarting_event(replica: Replica, decision: Decision) -> Restarting:
    return Restarting(
        replica=replica.name,
        service=replica.service,
        reason=decision.reason,
        delay_seconds=decision.delay_seconds,
        attempt=decision.attempt,
        restarts=replica.restarts,
    )


def restart_targets(group: SupervisedGroup, failed: Replica, strategy: str) -> list[Replica]:
    """What a failed replica takes with it: its group, its dependents, or everything."""
    own = group._services[failed.service].replicas if failed.service_plan.restart.group else [failed]
    if strategy == "one_for_all":
        return group.replicas
    if strategy == "rest_for_one":
        dependents = group.plan.dependents_closure(failed.service)[1:]
        return [*own, *(r for name in dependents for r in group._services[name].replicas)]
    return list(own)


async def restart_for(
    group: SupervisedGroup, failed: Replica, decision: Decision, strategy: str, targets: list[Replica]
) -> None:
    targets = [t for t in targets if not t.held]
    group.emit(restarting_event(failed, decision))
    for replica in targets:
        if replica is not failed:
            replica.count_restart()
    await restart_set(
        group,
        sorted(set(targets), key=group._order),
        delay_seconds=decision.delay_seconds,
        reason=f"{strategy} restart after {failed.name}: {decision.reason}",
        wait=False,
    )


async def restart_set(
    group: SupervisedGroup, targets: list[Replica], *, delay_seconds: float, reason: str, wait: bool
) -> None:
    """Stop ``targets`` in reverse dependency order, wait ``delay_seconds``, start them again in order;
    their services' dependents wait for readiness again."""
    async with group._restart_lock:
        if group._stopping:
            return
        for replica in targets:
            if replica.loop_scope is not None:
                replica.loop_scope.cancel()
        services = [s.name for s in group.plan.services if any(r.service == s.name for r in targets)]
        group._conditions.reset(services)
        await group_stop.stop_in_order(group, targets, reason=reason)
        for replica in targets:
            replica.transition(ReplicaState.RESTARTING)
        await anyio.sleep(delay_seconds)
        if group._stopping:
            return
        assert group._tg is not None
        async with anyio.create_task_group() as starts:
            for name in services:
                subset = [r for r in targets if r.service == name]
                if wait:
                    starts.start_soon(group._start_service, name, subset)
                else:
                    group._tg.start_soon(group._start_service, name, subset)


def _trial_error(replica: Replica, ending: _Ending) -> ServiceFailed:
    error_type = ReadinessTimeout if ending.timed_out else ServiceFailed
    return error_type(
        replica.name,
        ending.why,
        log_tail=replica.log_tail(),
        log_path=str(replica.log_path),
        exit_code=ending.exit_code,
    )


def replica_failed(group: SupervisedGroup, replica: Replica, error: ServiceFailed) -> None:
    """A replica is lost for good: degrade if the service keeps its quorum, else fail the run. A replica
    on trial only records why: the operation that started it decides what follows."""
    failed = Failed(replica=replica.name, service=replica.service, reason=error.reason)
    replica.failure = error
    replica.transition(ReplicaState.FAILED, failed, group.emit)
    replica.settle()
    if replica.trial:
        return
    service = group._services[replica.service]
    min_ready = replica.service_plan.min_ready
    if min_ready is not None:
        viable = sum(r.state.active for r in service.replicas)
        if viable >= min_ready:
            group.emit(
                Degraded(
                    replica=replica.name,
                    service=replica.service,
                    ready=service.ready_count,
                    total=len(service.replicas),
                    min_ready=min_ready,
                )
            )
            check_done(group)
            return
    fail(group, error)


def fail(group: SupervisedGroup, error: ServiceFailed) -> None:
    """Record the first fatal failure and cancel the start or the caller's body; teardown follows."""
    if group.failure is None:
        group.failure = error
    if group._body_scope is not None:
        group._body_scope.cancel()


def check_completed(group: SupervisedGroup, service: str) -> None:
    replicas = group._services[service].replicas
    if replicas and all(r.state is ReplicaState.COMPLETED for r in replicas):
        group._conditions.set(service, "completed")
    check_done(group)


def check_done(group: SupervisedGroup) -> None:
    if not any(r.state.active for r in group.replicas):
        group._all_done.set()
