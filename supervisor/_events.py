"""Typed state-change events, kept in memory, streamed to subscribers and appended to ``events.jsonl``."""

from __future__ import annotations

import os
import time
import weakref
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import anyio
import attrs

from ._records.eventfile import EventFile
from ._redact import Redactor

__all__ = [
    "AutoscaleDecided",
    "AutoscaleSwitched",
    "Completed",
    "ControlRequest",
    "Degraded",
    "EndpointsChanged",
    "Event",
    "EventLog",
    "EventSubscription",
    "Exited",
    "Failed",
    "GpuNotReleased",
    "Marked",
    "PhaseEnded",
    "PhaseStarted",
    "PlannerDecided",
    "PlannerDone",
    "Ready",
    "ReplicaAdded",
    "ReplicaRemoved",
    "Restarting",
    "RolloutEnded",
    "RolloutStarted",
    "RolloutStepped",
    "ScaleEnded",
    "ScaleStarted",
    "Spawned",
    "Stopped",
    "Stopping",
    "Unready",
    "event_from_json",
]


@attrs.frozen(kw_only=True)
class Event:
    """Something happened to one replica. ``monotonic`` orders events; ``wall_time`` is for people."""

    kind: ClassVar[str] = "event"
    replica: str
    service: str
    monotonic: float = attrs.field(factory=time.monotonic)
    wall_time: float = attrs.field(factory=time.time)

    def to_json(self) -> dict[str, Any]:
        return {"event": self.kind, **attrs.asdict(self)}


@attrs.frozen(kw_only=True)
class Spawned(Event):
    kind: ClassVar[str] = "spawned"
    pid: int


@attrs.frozen(kw_only=True)
class PhaseStarted(Event):
    """A starting replica printed the line that begins one of its service's startup ``phases``."""

    kind: ClassVar[str] = "phase_started"
    phase: str
    seconds: float  #: from spawn to the phase's first line


@attrs.frozen(kw_only=True)
class PhaseEnded(Event):
    """A startup phase is over: the next one began, the replica became ready, or it never will be."""

    kind: ClassVar[str] = "phase_ended"
    phase: str
    seconds: float  #: time spent in the phase
    finished: bool  #: False when the replica exited, timed out or was stopped during the phase


@attrs.frozen(kw_only=True)
class Ready(Event):
    kind: ClassVar[str] = "ready"
    pid: int
    seconds: float  #: from spawn to ready


@attrs.frozen(kw_only=True)
class Exited(Event):
    kind: ClassVar[str] = "exited"
    pid: int
    exit_code: int | None  #: None when killed by a signal
    signal: str | None
    expected: bool  #: we asked it to stop, or it was a job that finished with 0
    #: why, when not its own doing: ``killed by the OOM killer (memory_max 64MB)``
    reason: str | None = None


@attrs.frozen(kw_only=True)
class Completed(Event):
    kind: ClassVar[str] = "completed"


@attrs.frozen(kw_only=True)
class Failed(Event):
    kind: ClassVar[str] = "failed"
    reason: str


@attrs.frozen(kw_only=True)
class Unready(Event):
    """A ready replica missed a liveness check; it is replaced only after ``failures`` misses in a row."""

    kind: ClassVar[str] = "unready"
    reason: str


@attrs.frozen(kw_only=True)
class Restarting(Event):
    kind: ClassVar[str] = "restarting"
    reason: str
    delay_seconds: float
    attempt: int  #: backoff attempt (starts over after a stable uptime)
    restarts: int  #: restarts of this replica so far, this one included


@attrs.frozen(kw_only=True)
class Degraded(Event):
    """A replica is lost for good but the service keeps its quorum (``min_ready``)."""

    kind: ClassVar[str] = "degraded"
    ready: int
    total: int
    min_ready: int


@attrs.frozen(kw_only=True)
class Stopping(Event):
    kind: ClassVar[str] = "stopping"
    signal: str
    reason: str = "teardown"


@attrs.frozen(kw_only=True)
class Stopped(Event):
    kind: ClassVar[str] = "stopped"
    seconds: float  #: from the stop signal until every process of the replica was gone
    killed: bool  #: needed SIGKILL after the grace


@attrs.frozen(kw_only=True)
class GpuNotReleased(Event):
    """After teardown, a GPU still lists a process of the run (a driver still freeing it, or a survivor)."""

    kind: ClassVar[str] = "gpu_not_released"
    pid: int
    gpu: int
    process_name: str | None
    used_memory_bytes: int | None
    waited_seconds: float


@attrs.frozen(kw_only=True)
class Marked(Event):
    """A bookmark the caller set with ``group.mark(label)``; it is about the whole run, so ``replica`` and
    ``service`` are empty. Every replica's log has the same line (``--- topovisor mark: <label> <time> ---``)."""

    kind: ClassVar[str] = "mark"
    label: str


@attrs.frozen(kw_only=True)
class ScaleStarted(Event):
    """``group.scale(service, n)`` began; about the whole service, so ``replica`` is empty."""

    kind: ClassVar[str] = "scale_started"
    replicas_before: int
    replicas_after: int  #: asked for


@attrs.frozen(kw_only=True)
class ScaleEnded(Event):
    """A scale is over: the new replicas are ready, or the removed ones stopped; or it was refused or
    undone (``error``), and the service has the replicas it had before."""

    kind: ClassVar[str] = "scale_ended"
    replicas: int  #: the service's replicas now
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    seconds: float
    error: str | None = None


@attrs.frozen(kw_only=True)
class AutoscaleDecided(Event):
    """A service's autoscaler (its ``autoscale:`` policy, or a planner it follows) decided a new count; the
    scale follows (``ScaleStarted``/``ScaleEnded``: its outcome). About the service, so ``replica`` is empty."""

    kind: ClassVar[str] = "autoscale_decided"
    replicas_before: int
    replicas_after: int
    why: str  #: what decided it: the metric and its value, or the policy's answer
    value: float | None = None  #: the metric summed over the replicas, when a metric decided


@attrs.frozen(kw_only=True)
class AutoscaleSwitched(Event):
    """A service's autoscaler was paused (``enabled`` false: the count stays as it is) or resumed."""

    kind: ClassVar[str] = "autoscale_switched"
    enabled: bool


@attrs.frozen(kw_only=True)
class PlannerDecided(Event):
    """A planner outside the run (Dynamo's, through the preset's follower) asked for new counts of several
    services; they are scaled one after another (``ScaleStarted``/``ScaleEnded``), then ``PlannerDone``
    says how it went. ``service`` lists the services, comma-separated; ``replica`` is empty."""

    kind: ClassVar[str] = "planner_decided"
    decision: str  #: the planner's id for it
    source: str  #: who decided (``dynamo-planner``)
    replicas_before: dict[str, int] = attrs.field(factory=dict, hash=False)
    replicas_after: dict[str, int] = attrs.field(factory=dict, hash=False)  #: asked, within the bounds
    asked: dict[str, int] = attrs.field(factory=dict, hash=False)  #: as the planner asked, before the bounds
    again: bool = False  #: the decision before this one, taken again (its follower restarted before acknowledging)


@attrs.frozen(kw_only=True)
class PlannerDone(Event):
    """A planner's decision is carried out as far as it could be; the planner may now be told so.
    ``shortfall`` says, per service, what was not done as asked (capped to the bounds, refused, undone)."""

    kind: ClassVar[str] = "planner_done"
    decision: str
    replicas: dict[str, int] = attrs.field(factory=dict, hash=False)  #: each service's replicas now
    seconds: float
    shortfall: dict[str, str] = attrs.field(factory=dict, hash=False)


@attrs.frozen(kw_only=True)
class ReplicaAdded(Event):
    """A scale-up planned a new replica (before it spawns): its ports and GPUs."""

    kind: ClassVar[str] = "replica_added"
    ports: dict[str, int] = attrs.field(factory=dict, hash=False)
    gpus: tuple[int, ...] = ()
    url: str | None = None


@attrs.frozen(kw_only=True)
class ReplicaRemoved(Event):
    """A replica left the service (scaled down, or an undone scale-up) once nothing of it was left."""

    kind: ClassVar[str] = "replica_removed"


@attrs.frozen(kw_only=True)
class RolloutStarted(Event):
    """``group.rolling_restart(service)`` began; about the whole service, so ``replica`` is empty."""

    kind: ClassVar[str] = "rollout_started"
    replicas: int
    max_unavailable: int
    min_ready: int  #: the floor it keeps: ready replicas never fewer than this
    respecified: bool  #: onto a new plan (a new spec, or templates filled anew after a scale), not just restarts


@attrs.frozen(kw_only=True)
class RolloutStepped(Event):
    """One replica of a rollout was restarted and is ready again (on the new spec, if any)."""

    kind: ClassVar[str] = "rollout_stepped"
    step: int  #: 1-based: how many replicas are done, this one included
    of: int
    seconds: float  #: from its stop signal until it was ready again


@attrs.frozen(kw_only=True)
class RolloutEnded(Event):
    """A rollout is over: every replica rolled, or it stopped at a replica that failed (``error``); that
    replica was put back on its previous spec (``rolled_back``), or left failed (``left_failed``)."""

    kind: ClassVar[str] = "rollout_ended"
    rolled: tuple[str, ...] = ()
    seconds: float
    error: str | None = None
    rolled_back: tuple[str, ...] = ()
    left_failed: tuple[str, ...] = ()


@attrs.frozen(kw_only=True)
class EndpointsChanged(Event):
    """A scale of ``source`` changed what ``service``'s templates fill to (``{source.urls}``, ...); it did
    what its ``on_change`` says: ``none``, ``restart`` (a rolling restart follows) or ``signal``."""

    kind: ClassVar[str] = "endpoints_changed"
    source: str
    action: str
    error: str | None = None  #: its templates no longer fill (e.g. ``{decode.3.url}`` after a scale-down)


@attrs.frozen(kw_only=True)
class ControlRequest(Event):
    """An operation asked through the run's control socket (``supervisor restart``, ``attach``); about the
    whole run, so ``replica`` and ``service`` are empty. ``args`` are the request's fields, secrets
    redacted; ``error`` says why a request was refused (then nothing was done)."""

    kind: ClassVar[str] = "control_request"
    op: str
    client_pid: int | None  #: the process on the other end of the socket (SO_PEERCRED)
    request_id: str | int | float | None = None
    args: dict[str, Any] = attrs.field(factory=dict)
    error: str | None = None


def _event_classes() -> dict[str, type[Event]]:
    classes: dict[str, type[Event]] = {}
    pending: list[type[Event]] = [Event]
    while pending:
        cls = pending.pop()
        classes.setdefault(cls.kind, cls)
        pending.extend(cls.__subclasses__())
    return classes


def event_from_json(data: object) -> Event | None:
    """An event back from its ``to_json`` form (a line of ``events.jsonl``, or the control socket's
    stream); None for a kind this version does not know, or fields that do not fit it."""
    if not isinstance(data, dict):
        return None
    cls = _event_classes().get(str(data.get("event")))
    if cls is None or cls is Event:
        return None
    names = {field.name for field in attrs.fields(cls)}
    try:
        return cls(**{k: v for k, v in data.items() if k in names})
    except TypeError:
        return None


class EventSubscription:
    """An async iterator of events. A plain object, not an async generator: leaving an ``async for`` early
    needs no ``aclose`` (trio warns about unfinished generators), and an abandoned one is forgotten."""

    def __init__(self, backlog: list[Event], *, ended: bool) -> None:
        self._queue: deque[Event] = deque(backlog)
        self._wakeup: anyio.Event | None = None
        self._ended = ended

    def push(self, event: Event) -> None:
        self._queue.append(event)
        self._wake()

    def end(self) -> None:
        self._ended = True
        self._wake()

    def _wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()
            self._wakeup = None

    def __aiter__(self) -> EventSubscription:
        return self

    async def __anext__(self) -> Event:
        while not self._queue:
            if self._ended:
                raise StopAsyncIteration
            self._wakeup = anyio.Event()
            await self._wakeup.wait()
        return self._queue.popleft()


class EventLog:
    """History + live fan-out + ``events.jsonl``. Emitting never blocks, and never raises for the file.

    What goes to the file passes ``redactor`` first (by default the secrets of the caller's environment;
    the group adds its services' once it knows them); history and subscribers get the events as they are.
    """

    def __init__(
        self,
        path: Path | None,
        *,
        hook: Callable[[Event], None] | None = None,
        redactor: Redactor | None = None,
    ) -> None:
        self.redactor = redactor if redactor is not None else Redactor.from_environments(os.environ)
        self.history: list[Event] = []
        self._hook = hook
        self._subscribers: weakref.WeakSet[EventSubscription] = weakref.WeakSet()
        self._file = EventFile(path) if path is not None else None
        self.closed = False

    def emit(self, event: Event) -> None:
        self.history.append(event)
        if self._file is not None:
            self._file.write(self.redactor.data(event.to_json()))
        if self._hook is not None:
            self._hook(event)
        for subscription in list(self._subscribers):
            subscription.push(event)

    def subscribe(self, *, history: bool = False) -> EventSubscription:
        """Events from now on (and past ones first with ``history``), until the run is over."""
        subscription = EventSubscription(list(self.history) if history else [], ended=self.closed)
        if not self.closed:
            self._subscribers.add(subscription)
        return subscription

    def close(self) -> None:
        self.closed = True
        for subscription in list(self._subscribers):
            subscription.end()
        self._subscribers = weakref.WeakSet()
        if self._file is not None:
            self._file.close()
            self._file = None
