"""Supervision: each replica's life (ready, live, exit), the restart policy, strategies, liveness, quorum.

Functions over the running group (``RunState``), which keeps the state; this module decides what
happens after a replica becomes ready or ends. A failure that cannot be absorbed records the first error
and cancels the start or the caller's body (``fail``); the group's shielded teardown follows.
"""

from __future__ import annotations

import time

import anyio
import anyio.abc
import anyio.lowlevel
import attrs

from .._errors import ReadinessTimeout, ServiceFailed
from .._events import Completed, Degraded, Failed, Ready, Restarting
from .._host.probes import describe_check
from .._host.process import describe_exit
from . import group_stop
from .group_stop import check_done
from .policy import Decision, decide
from .replica import Incarnation, Replica, ReplicaState
from .state import RunState

__all__ = [
    "check_completed",
    "fail",
    "launch",
    "replica_failed",
    "restart_named",
    "restart_set",
    "start_service",
    "supervise",
]


@attrs.frozen
class _Ending:
    """How an incarnation ended on its own (not because we stopped it)."""

    why: str
    exit_code: int | None
    timed_out: bool = False


async def start_service(run: RunState, name: str, replicas: list[Replica] | None) -> None:
    """Wait for the dependencies, start the replicas' supervision loops, and wait until each is ready
    once (or completed, or failed with the quorum kept). A strategy restart redoes it from scratch."""
    with run.conditions.starting(name):
        await _start_service_now(run, name, replicas)


async def _start_service_now(run: RunState, name: str, replicas: list[Replica] | None) -> None:
    service = run.plan.service(name)
    for dep in service.depends_on:
        await run.conditions.wait(dep.service, dep.condition)
    targets = replicas if replicas is not None else run.service_map[name].replicas
    assert run.tg is not None
    if run.stopping:
        return
    if not run.service_map[name].replicas:  # replicas: 0 -- nothing to wait for
        run.conditions.set(name)
        return
    targets = [r for r in targets if not r.held]
    for replica in targets:
        if run.stopping:  # teardown began while we were spawning
            return
        launch(run, replica)
        await anyio.lowlevel.checkpoint()  # 200 spawns in a row must not hold up other services' starts
    run.write_manifest()  # pids on disk before anything else can go wrong
    run.conditions.set(name, "started")
    for replica in targets:
        await replica.settled.wait()
    if any(r.state is not ReplicaState.FAILED for r in run.service_map[name].replicas):
        run.conditions.set(name, "ready")
    check_completed(run, name)


def launch(run: RunState, replica: Replica) -> None:
    """Spawn ``replica`` and hand it to its supervision loop; ``settled`` tells when it is ready once
    (or failed)."""
    assert run.tg is not None
    scope = replica.begin_supervision()
    try:
        first = replica.spawn(run)  # here, not in the loop's task: "started" means spawned
    except ServiceFailed as error:
        replica_failed(run, replica, error)
        return
    run.tg.start_soon(supervise, run, replica, scope, first, name=f"supervise {replica.name}")


async def supervise(run: RunState, replica: Replica, scope: anyio.CancelScope, first: Incarnation) -> None:
    """One replica's life: become ready, run; after each end the restart policy decides, and the next
    incarnation is spawned here."""
    incarnation = first
    with scope:
        while await run_incarnation(run, replica, incarnation):
            if run.stopping:  # once teardown began, nothing new is spawned
                return
            try:
                incarnation = replica.spawn(run)
            except ServiceFailed as error:
                replica_failed(run, replica, error)
                return


async def run_incarnation(run: RunState, replica: Replica, incarnation: Incarnation) -> bool:
    """Live through one incarnation and apply the restart policy; True: spawn the next one here."""
    if incarnation.number > 0:
        run.write_manifest()
    ending = await live(run, replica, incarnation)
    if ending is None or run.stopping:
        return False  # we stopped it: teardown, an explicit stop, or a strategy restart
    await group_stop.stop_leftovers(run, replica)  # e.g. an engine core outliving its crashed parent
    await incarnation.stream.wait_closed(0.5)  # read its last words before judging them
    if run.stopping:  # teardown began meanwhile (the scan above runs in a thread a cancel cannot
        return False  # interrupt) and has stopped this replica: its exit is no longer ours to judge
    incarnation.fatal_line = replica.find_fatal_line(incarnation)
    if replica.trial:  # the operation that started it judges, at once: no restart, no backoff
        replica_failed(run, replica, _trial_error(replica, ending))
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
        replica.transition(ReplicaState.COMPLETED, Completed(replica=replica.name, service=replica.service), run.emit)
        replica.settle()
        check_completed(run, replica.service)
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
        replica_failed(run, replica, error)
        return False
    replica.count_restart()
    strategy = replica.service_plan.strategy
    if strategy != "one_for_one" or replica.service_plan.restart.group:
        if replica.restart_pending:  # a restart that includes this replica is already under way
            return False
        targets = restart_targets(run, replica, strategy)
        for target in targets:
            target.join_strategy_restart()
        assert run.tg is not None
        run.tg.start_soon(restart_for, run, replica, decision, strategy, targets)
        return False
    replica.transition(ReplicaState.RESTARTING, restarting_event(replica, decision), run.emit)
    await anyio.sleep(decision.delay_seconds)
    return True


async def live(run: RunState, replica: Replica, incarnation: Incarnation) -> _Ending | None:
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
            how = incarnation.exit_reason or describe_exit(code)
            return _Ending(f"{how} before it was ready{place} ({probe_text}, last: {runner.last.detail})", code)
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
            await group_stop.stop_one(run, replica, reason="readiness timeout")
            return _Ending(why, None, timed_out=True)
    became_ready(run, replica, incarnation)
    liveness = replica.liveness_runner(run, incarnation)
    if liveness is None:
        await incarnation.exited.wait()
    else:
        reason = await replica.watch_liveness(run, incarnation, liveness)
        if reason is not None:
            if not incarnation.exited.is_set():  # where it hangs, before the kill erases it
                from .._host.stackdump import dump_python_stacks

                with incarnation.until_exit():
                    await dump_python_stacks(incarnation.process.pid, "liveness failed", replica.annotate)
            await group_stop.stop_one(run, replica, reason="liveness")
            return _Ending(reason, None)
    if incarnation.stop_reason is not None:
        return None
    code = incarnation.returncode if incarnation.returncode is not None else -1
    return _Ending(f"{incarnation.exit_reason or describe_exit(code)} while running", code)


def became_ready(run: RunState, replica: Replica, incarnation: Incarnation) -> None:
    incarnation.ready_at = time.monotonic()
    if incarnation.phases is not None:  # the last phase ends here; later output is not read for phases
        incarnation.phases.close(incarnation.ready_at, finished=True)
    ready = Ready(
        replica=replica.name,
        service=replica.service,
        pid=incarnation.process.pid,
        seconds=incarnation.ready_at - incarnation.spawned_at,
    )
    replica.transition(ReplicaState.READY, ready, run.emit)
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


def restart_targets(run: RunState, failed: Replica, strategy: str) -> list[Replica]:
    """What a failed replica takes with it: its group, its dependents, or everything."""
    own = run.service_map[failed.service].replicas if failed.service_plan.restart.group else [failed]
    if strategy == "one_for_all":
        return run.replicas
    if strategy == "rest_for_one":
        dependents = run.plan.dependents_closure(failed.service)[1:]
        return [*own, *(r for name in dependents for r in run.service_map[name].replicas)]
    return list(own)


async def restart_for(
    run: RunState, failed: Replica, decision: Decision, strategy: str, targets: list[Replica]
) -> None:
    targets = [t for t in targets if not t.held]
    run.emit(restarting_event(failed, decision))
    for replica in targets:
        if replica is not failed:
            replica.count_restart()
    await restart_set(
        run,
        sorted(set(targets), key=run.order),
        delay_seconds=decision.delay_seconds,
        reason=f"{strategy} restart after {failed.name}: {decision.reason}",
        wait=False,
    )


async def restart_set(run: RunState, targets: list[Replica], *, delay_seconds: float, reason: str, wait: bool) -> None:
    """Stop ``targets`` in reverse dependency order, wait ``delay_seconds``, start them again in order;
    their services' dependents wait for readiness again."""
    async with run.restart_lock:
        if run.stopping:
            return
        for replica in targets:
            if replica.loop_scope is not None:
                replica.loop_scope.cancel()
        services = [s.name for s in run.plan.services if any(r.service == s.name for r in targets)]
        run.conditions.reset(services)
        await group_stop.stop_in_order(run, targets, reason=reason)
        for replica in targets:
            replica.transition(ReplicaState.RESTARTING)
        await anyio.sleep(delay_seconds)
        if run.stopping:
            return
        assert run.tg is not None
        async with anyio.create_task_group() as starts:
            for name in services:
                subset = [r for r in targets if r.service == name]
                if wait:
                    starts.start_soon(start_service, run, name, subset)
                else:
                    run.tg.start_soon(start_service, run, name, subset)


def _trial_error(replica: Replica, ending: _Ending) -> ServiceFailed:
    error_type = ReadinessTimeout if ending.timed_out else ServiceFailed
    return error_type(
        replica.name,
        ending.why,
        log_tail=replica.log_tail(),
        log_path=str(replica.log_path),
        exit_code=ending.exit_code,
    )


def replica_failed(run: RunState, replica: Replica, error: ServiceFailed) -> None:
    """A replica is lost for good: degrade if the service keeps its quorum, else fail the run. A replica
    on trial only records why: the operation that started it decides what follows."""
    failed = Failed(replica=replica.name, service=replica.service, reason=error.reason)
    replica.failure = error
    replica.transition(ReplicaState.FAILED, failed, run.emit)
    replica.settle()
    if replica.trial:
        return
    service = run.service_map[replica.service]
    min_ready = replica.service_plan.min_ready
    if min_ready is not None:
        viable = sum(r.state.active for r in service.replicas)
        if viable >= min_ready:
            run.emit(
                Degraded(
                    replica=replica.name,
                    service=replica.service,
                    ready=service.ready_count,
                    total=len(service.replicas),
                    min_ready=min_ready,
                )
            )
            check_done(run)
            return
    fail(run, error)


def fail(run: RunState, error: ServiceFailed) -> None:
    """Record the first fatal failure and cancel the start or the caller's body; teardown follows."""
    if run.failure is None:
        run.failure = error
    if run.body_scope is not None:
        run.body_scope.cancel()


def check_completed(run: RunState, service: str) -> None:
    replicas = run.service_map[service].replicas
    if replicas and all(r.state is ReplicaState.COMPLETED for r in replicas):
        run.conditions.set(service, "completed")
    check_done(run)


async def restart_named(run: RunState, name: str) -> None:
    """Restart a service or one replica on request (``group.restart(name)``), with what its strategy takes
    along; returns once they are ready again. After any scale or rollout under way."""
    run.targets(name)  # KeyError naming the services, at once
    async with run.operation_lock:
        targets = run.targets(name)  # again: a scale just done may have removed or added replicas
        service = targets[0].service
        strategy = targets[0].service_plan.strategy
        if strategy == "rest_for_one":
            affected = run.plan.dependents_closure(service)
            targets = sorted({*targets, *(r for s in affected[1:] for r in run.service_map[s].replicas)}, key=run.order)
        elif strategy == "one_for_all":
            targets = run.replicas
        for replica in targets:
            replica.count_restart()
            replica.unhold()
        if run.all_done.is_set():  # everything had stopped; now something runs again
            run.all_done = anyio.Event()
        await restart_set(run, targets, delay_seconds=0.0, reason="restart requested", wait=True)
