"""Typed state-change events, kept in memory, streamed to subscribers and appended to ``events.jsonl``."""

from __future__ import annotations

import json
import math
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, ClassVar

import anyio
import attrs
from anyio.streams.memory import MemoryObjectSendStream

__all__ = [
    "Completed",
    "Degraded",
    "Event",
    "EventLog",
    "Exited",
    "Failed",
    "Ready",
    "Restarting",
    "Spawned",
    "Stopped",
    "Stopping",
    "Unready",
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


class EventLog:
    """History + live fan-out + ``events.jsonl``. Emitting never blocks."""

    def __init__(self, path: Path | None, *, hook: Callable[[Event], None] | None = None) -> None:
        self.history: list[Event] = []
        self._hook = hook
        self._subscribers: list[MemoryObjectSendStream[Event]] = []
        self._file = path.open("a", buffering=1) if path is not None else None
        self.closed = False

    def emit(self, event: Event) -> None:
        self.history.append(event)
        if self._file is not None:
            self._file.write(json.dumps(event.to_json()) + "\n")
        if self._hook is not None:
            self._hook(event)
        for stream in list(self._subscribers):
            try:
                stream.send_nowait(event)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._subscribers.remove(stream)

    async def subscribe(self, *, history: bool = False) -> AsyncIterator[Event]:
        """Events from now on (and past ones first with ``history``), until the run is over."""
        send, receive = anyio.create_memory_object_stream[Event](math.inf)
        for event in self.history if history else ():
            send.send_nowait(event)
        if self.closed:
            send.close()
        else:
            self._subscribers.append(send)
        try:
            async with receive:
                async for event in receive:
                    yield event
        finally:
            send.close()
            if send in self._subscribers:
                self._subscribers.remove(send)

    def close(self) -> None:
        self.closed = True
        for stream in self._subscribers:
            stream.close()
        self._subscribers.clear()
        if self._file is not None:
            self._file.close()
            self._file = None
