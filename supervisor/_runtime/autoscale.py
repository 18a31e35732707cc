"""Autoscaling a running service from its own load: each service with ``autoscale:`` gets a loop that reads
its ready replicas' ``metrics:`` endpoints every ``period``, asks the pure policy (``autoscale_policy``)
whether to change the count, and carries a decision out through the run's own ``scale``: new replicas on
trial, GPUs planned beside the run's, dependents following. Each decision is an ``AutoscaleDecided`` event
before its scale; a scale that is refused (the GPUs do not fit) or undone (a new replica failed) is not
asked again until the service's count changes or the autoscaler is switched off and on
(``group.autoscale(service, enabled)``, ``supervisor autoscale RUN SERVICE off|on``).

The loops start once the run is ready and end when its teardown begins; a scale under way then is cut
short as any scale is (``NotRunning``), and the teardown stops what it started.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import anyio

from .._errors import NotRunning, SupervisorError
from .._events import AutoscaleDecided, AutoscaleSwitched
from .._host.promtext import sample_sums
from .autoscale_policy import AutoscaleState, recommend
from .metrics import METRICS_TIMEOUT_SECONDS, fetch_metrics
from .replica import Replica, ReplicaState
from .state import RunState

__all__ = ["autoscale_status", "follow_all", "switch"]

_log = logging.getLogger("supervisor.autoscale")


async def follow_all(run: RunState) -> None:
    """One loop per service with ``autoscale:``, until the teardown begins."""
    if run.plan.topology is None:
        return
    async with anyio.create_task_group() as tg:
        for service in run.plan.topology.services:
            if service.autoscale is not None:
                run.autoscaling[service.name] = AutoscaleState(service.autoscale)
                tg.start_soon(_follow, run, service.name, name=f"autoscale {service.name}")


def switch(run: RunState, service: str, enabled: bool) -> dict[str, Any]:
    """Pause (the count stays) or resume a service's autoscaler; its state as ``status`` shows it."""
    state = _state(run, service)
    if state.enabled != enabled:
        state.switch(enabled)
        run.emit(AutoscaleSwitched(replica="", service=service, enabled=enabled))
    return state.to_json()


def autoscale_status(run: RunState) -> dict[str, dict[str, Any]]:
    """Per autoscaled service: on or off, bounds, the metric's last value, the last decision, a refusal."""
    return {name: state.to_json() for name, state in run.autoscaling.items()}


def _state(run: RunState, service: str) -> AutoscaleState:
    run.service(service)  # KeyError naming the services
    if service not in run.autoscaling:
        raise KeyError(f"service {service!r} has no autoscale: (add autoscale: {{min, max, metric, target}})")
    return run.autoscaling[service]


async def _follow(run: RunState, service: str) -> None:
    state = run.autoscaling[service]
    while not run.stopping:
        with anyio.move_on_after(state.spec.period_seconds):
            await run.teardown_began.wait()
        if run.stopping:
            return
        if service not in run.service_map:
            continue
        handle = run.service_map[service]
        replicas = len(handle.replicas)
        metrics = await _read_metrics(run, handle.replicas)
        floor = max(state.spec.min, handle.plan.min_ready or 0)
        try:
            reading = recommend(state.spec, metrics, replicas, floor=floor)
        except Exception as exc:  # the user's policy raised: said once per reading, the count stays
            _log.warning("autoscale %s: the policy failed: %s", service, exc)
            continue
        now = time.monotonic()
        if reading is not None:  # read while paused too: ``status`` shows the load
            state.observe(now, *reading)
        decision = state.decide(now, replicas)
        if decision is None or run.operation_lock.locked() or not state.enabled:
            continue  # another operation under way: read again next period
        state.last = decision
        run.emit(
            AutoscaleDecided(
                replica="",
                service=service,
                replicas_before=decision.before,
                replicas_after=decision.after,
                why=decision.why,
                value=decision.value,
            )
        )
        from .scaling import scale

        try:
            await scale(run, service, decision.after)
        except NotRunning:
            return
        except (SupervisorError, ValueError) as exc:  # refused or undone: ScaleEnded said why; asked once
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            state.refuse(decision.after, len(handle.replicas), reason)
            _log.warning("autoscale %s: %d -> %d not done: %s", service, decision.before, decision.after, reason)
        state.last_change_at = time.monotonic()


async def _read_metrics(run: RunState, replicas: list[Replica]) -> dict[str, dict[str, float]]:
    """Each ready replica's metrics (name -> value summed over labels); one that does not answer is left out."""
    client = run.http_client()
    results: dict[str, dict[str, float]] = {}

    async def read(replica: Replica, url: str) -> None:
        try:
            with anyio.fail_after(METRICS_TIMEOUT_SECONDS):
                status, body = await fetch_metrics(client, url)
        except Exception:  # a replica that cannot answer is not counted this time
            return
        if 200 <= status < 300:
            results[replica.name] = sample_sums(body.decode(errors="replace"))

    async with anyio.create_task_group() as tg:
        for replica in list(replicas):
            if replica.state is ReplicaState.READY and replica.plan.metrics is not None:
                tg.start_soon(read, replica, replica.plan.metrics)
    return results
