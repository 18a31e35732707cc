"""The live operations of a run for its summary: each scale and rolling restart, paired from its started and
ended events (``ScaleStarted``/``ScaleEnded``, ``RolloutStarted``/``RolloutEnded``), and each autoscale
decision (``AutoscaleDecided``) with the outcome of the scale that carried it out, and each outside planner's
decision (``PlannerDecided``/``PlannerDone``), one record per service it scaled. Pure, like
``_records.summary``: events in, records out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from .._events import (
    AutoscaleDecided,
    Event,
    PlannerDecided,
    PlannerDone,
    RolloutEnded,
    RolloutStarted,
    ScaleEnded,
    ScaleStarted,
)
from .schema import OperationOutcome

__all__ = ["operations_of"]


def operations_of(
    events: Iterable[Event], *, started_at: float, redact: Callable[[str], str] = str
) -> list[OperationOutcome]:
    """Every scale, rollout and autoscale decision, in the order they began; one without its end is still
    under way (no ``seconds``), one refused before it began (a rollout's bad settings) has only its end. A
    decision ends with the scale that follows it (its error: the scale refused or undone)."""
    operations: list[OperationOutcome] = []
    open_ones: dict[tuple[str, str], OperationOutcome] = {}  #: (kind, service) -> under way
    for event in events:
        at = event.monotonic - started_at
        if isinstance(event, (PlannerDecided, PlannerDone)):
            operations += _planner(event, open_ones, at, redact)
        elif isinstance(event, AutoscaleDecided):
            decision = OperationOutcome(
                kind="autoscale",
                service=event.service,
                at_seconds=at,
                replicas_before=event.replicas_before,
                replicas_after=event.replicas_after,
                reason=redact(event.why),
            )
            open_ones[("autoscale", event.service)] = decision
            operations.append(decision)
        elif isinstance(event, ScaleStarted):
            operation = OperationOutcome(
                kind="scale",
                service=event.service,
                at_seconds=at,
                replicas_before=event.replicas_before,
                replicas_after=event.replicas_after,
            )
            open_ones[("scale", event.service)] = operation
            operations.append(operation)
        elif isinstance(event, RolloutStarted):
            operation = OperationOutcome(
                kind="rolling_restart", service=event.service, at_seconds=at, replicas_after=event.replicas
            )
            open_ones[("rolling_restart", event.service)] = operation
            operations.append(operation)
        elif isinstance(event, (ScaleEnded, RolloutEnded)):
            kind = "scale" if isinstance(event, ScaleEnded) else "rolling_restart"
            decided = open_ones.pop(("autoscale", event.service), None) if kind == "scale" else None
            if decided is not None:
                _ended(decided, event, redact)
                decided.seconds = event.monotonic - started_at - (decided.at_seconds or 0.0)
            began = open_ones.pop((kind, event.service), None)
            if began is None:  # refused before it began: only its end tells
                began = OperationOutcome(kind=kind, service=event.service, at_seconds=at - event.seconds)
                operations.append(began)
            _ended(began, event, redact)
    return operations


def _planner(
    event: PlannerDecided | PlannerDone,
    open_ones: dict[tuple[str, str], OperationOutcome],
    at: float,
    redact: Callable[[str], str],
) -> list[OperationOutcome]:
    """A decision opens one record per service (returned); its end closes them, with each one's shortfall."""
    if isinstance(event, PlannerDecided):
        why = f"decision {event.decision} of {event.source}" + (", again" if event.again else "")
        began = []
        for service, count in event.replicas_after.items():
            record = OperationOutcome(
                kind="planner",
                service=service,
                at_seconds=at,
                replicas_before=event.replicas_before.get(service),
                replicas_after=count,
                reason=redact(why),
                decision=event.decision,
            )
            open_ones[("planner", service)] = record
            began.append(record)
        return began
    for service, count in event.replicas.items():
        ended = open_ones.get(("planner", service))
        if ended is not None and ended.decision == event.decision:
            del open_ones[("planner", service)]
            ended.seconds, ended.replicas_after = event.seconds, count
            shortfall = event.shortfall.get(service)
            ended.error = None if shortfall is None else redact(shortfall)
    return []


def _ended(operation: OperationOutcome, event: ScaleEnded | RolloutEnded, redact: Callable[[str], str]) -> None:
    operation.seconds = event.seconds
    operation.error = None if event.error is None else redact(event.error)
    if isinstance(event, ScaleEnded):
        operation.replicas_after = event.replicas
        operation.added, operation.removed = list(event.added), list(event.removed)
    else:
        operation.rolled, operation.rolled_back = list(event.rolled), list(event.rolled_back)
        operation.left_failed = list(event.left_failed)
