"""An outside planner's decisions carried out on the run: the Dynamo preset's follower reads each decision of
Dynamo's Planner and hands it here (the control socket's ``planner_decision``), so that the run, not the
follower, records it: a ``PlannerDecided`` event, each service scaled through the run's own ``scale`` (one
after another, new replicas on trial), then ``PlannerDone`` with what fell short, a log line when anything
did, and the last decision in ``status``.

Decisions go one at a time, in the order they come. One that arrives while another is carried out waits for
it: a follower restarted mid-decision (SIGKILL, say) that hands the same decision in again finds the first
one finished, scales to the counts the services already have (which changes nothing) and can acknowledge it.
A decision whose caller goes away is carried out all the same: the control socket finishes every op it began.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .._errors import NotRunning, SupervisorError
from .._events import PlannerDecided, PlannerDone
from .scaling import scale

if TYPE_CHECKING:
    from .state import RunState

__all__ = ["carry_out"]

_log = logging.getLogger("supervisor.planner")


async def carry_out(
    run: RunState,
    *,
    decision: str | int,
    replicas: Mapping[str, object],
    asked: Mapping[str, object] | None = None,
    bounds: Mapping[str, object] | None = None,
    source: str = "planner",
) -> dict[str, Any]:
    """Scale each service of ``replicas`` to its count (``asked``: the planner's own counts, before the
    caller capped them to ``bounds``, a ``"1-2"`` per service); the outcome: counts now, and the shortfall
    per service. ``KeyError`` for an unknown service, ``ValueError`` for a count that is not one."""
    counts = _counts(replicas, "replicas")
    wanted = {**counts, **_counts(asked or {}, "asked")}
    for service in [*counts, *wanted]:
        run.service(service)  # KeyError naming the services, before anything is done
    log = run.planner_decisions
    async with log.lock:
        if run.stopping:
            raise NotRunning(f"run {run.run_id} is being torn down: decision {decision} not carried out")
        began = time.monotonic()
        before = {service: len(run.service(service).replicas) for service in counts}
        again = log.last is not None and log.last.decision == str(decision) and log.done is not None
        decided = PlannerDecided(
            replica="",
            service=",".join(counts),
            decision=str(decision),
            source=source,
            replicas_before=before,
            replicas_after=counts,
            asked={service: wanted[service] for service in counts},
            again=again,
        )
        log.last, log.done = decided, None
        run.emit(decided)
        shortfall = _capped(counts, wanted, bounds or {})
        for service, count in counts.items():
            try:
                await scale(run, service, count)
            except NotRunning:
                raise
            except (SupervisorError, ValueError) as exc:  # refused or undone: ScaleEnded has the details
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                shortfall[service] = "; ".join(filter(None, [shortfall.get(service), f"not scaled: {reason}"]))
        now = {service: len(run.service(service).replicas) for service in counts}
        done = PlannerDone(
            replica="",
            service=decided.service,
            decision=decided.decision,
            replicas=now,
            seconds=time.monotonic() - began,
            shortfall=shortfall,
        )
        log.done = done
        run.emit(done)
    if shortfall:
        said = "; ".join(f"{service}: {text}" for service, text in shortfall.items())
        _log.warning("planner decision %s (%s) fell short: %s", decision, source, said)
    return {"decision": done.decision, "replicas": now, "shortfall": shortfall, "seconds": done.seconds}


def _counts(values: Mapping[str, object], field: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for service, count in values.items():
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"{field}: the count of {service!r} must be a whole number of at least 0, got {count!r}")
        counts[service] = count
    return counts


def _capped(counts: Mapping[str, int], asked: Mapping[str, int], bounds: Mapping[str, object]) -> dict[str, str]:
    """Per service the planner asked more or fewer of than it gets: ``asked 5, capped to 2 (bounds 1-2)``."""
    shortfall = {}
    for service, count in counts.items():
        if asked[service] != count:
            within = f" (bounds {bounds[service]})" if service in bounds else ""
            shortfall[service] = f"asked {asked[service]}, capped to {count}{within}"
    return shortfall
