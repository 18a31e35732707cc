"""What the live status shows, one row per replica, kept up to date from events and output.

Pure state with no terminal in it (``_cli.console`` draws it): events set the state, pid, restarts and
phase; output lines of a replica that is still loading set its log progress. A lock guards it because
the drawing happens on rich's refresh thread while the event loop updates it.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from .._events import (
    Completed,
    Event,
    Exited,
    Failed,
    PhaseStarted,
    Ready,
    ReplicaAdded,
    ReplicaRemoved,
    Restarting,
    Spawned,
    Stopped,
    Stopping,
    Unready,
)
from .._plan.plan import Plan
from .progress import find_progress

__all__ = ["Progress", "ReplicaStatus", "StatusBoard", "duration"]

#: states in which the replica has a live process
_RUNNING = frozenset({"loading", "ready", "unready", "stopping"})


@attrs.frozen
class Progress:
    """A loading replica's progress: the bar's fraction and the words beside it."""

    fraction: float
    label: str


def duration(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    if seconds < 60:
        return f"{seconds:.0f}s" if seconds >= 10 else f"{seconds:.1f}s"
    minutes, seconds = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s" if seconds else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


@attrs.define
class ReplicaStatus:
    """One replica's row. ``state``: waiting, loading, ready, unready, restarting, stopping, stopped,
    exited, done or failed."""

    name: str
    service: str
    ports: str  #: ``8000`` or ``http=8000 grpc=9000``; "" when it has none
    gpus: tuple[int, ...]
    deadline_seconds: float | None  #: readiness deadline from spawn; None without a readiness probe
    phases: tuple[str, ...]  #: its service's declared startup phases
    state: str = "waiting"
    pid: int | None = None
    spawned_at: float | None = None  #: monotonic time of the current incarnation's spawn
    ready_seconds: float | None = None  #: the current incarnation's time to ready
    restarts: int = 0
    phase_index: int = -1  #: the phase under way (index into ``phases``); -1 before the first
    log_fraction: float | None = None  #: the last progress its log printed (in the current phase)
    exit_text: str | None = None  #: how it last ended: ``code 3``, ``SIGKILL``
    #: the last block of output read while loading, and where in it the progress line starts (None: none);
    #: a phase that this block began keeps that progress only if the progress line comes at or after it
    last_block: str = attrs.field(default="", repr=False)
    progress_at: int | None = None
    #: CPU, memory and GPU memory at the latest sample (``ResourceUsage.to_json``); None before one
    resources: Mapping[str, Any] | None = None

    @property
    def loading(self) -> bool:
        return self.state == "loading"

    def uptime(self, now: float) -> float | None:
        return now - self.spawned_at if self.spawned_at is not None and self.state in _RUNNING else None

    def progress(self, now: float) -> Progress | None:
        """While loading: the log's progress within the declared phases (phase k of n), else the time
        spent against the readiness deadline; the label spells out the percentage and both sources."""
        if not self.loading or self.spawned_at is None:
            return None
        elapsed = now - self.spawned_at
        timed = min(elapsed / self.deadline_seconds, 1.0) if self.deadline_seconds else None
        clock = duration(elapsed) + (f" of {duration(self.deadline_seconds)}" if self.deadline_seconds else "")
        if self.phases and self.phase_index >= 0:
            within = self.log_fraction or 0.0
            fraction = (self.phase_index + within) / len(self.phases)
            phase = f"{self.phases[self.phase_index]} {self.phase_index + 1}/{len(self.phases)}"
            if self.log_fraction is not None:
                phase += f" {self.log_fraction:.0%}"
            parts = [f"{fraction:.0%}", phase, clock]
        elif self.log_fraction is not None:
            fraction = self.log_fraction
            parts = [f"{fraction:.0%}", clock]
        elif timed is not None:  # nothing from the log: the bar is the time spent against the deadline
            return Progress(timed, f"{timed:.0%} of deadline · {clock}")
        else:
            return Progress(0.0, clock)
        if timed is not None:
            parts[-1] += f" deadline ({timed:.0%})"
        return Progress(fraction, " · ".join(parts))


class StatusBoard:
    """Rows for every replica of a plan, in start order; ``on_event``/``on_output`` keep them current."""

    def __init__(self, plan: Plan) -> None:
        self.title = f"{plan.name} · run {plan.run_id}"
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._rows: dict[str, ReplicaStatus] = {}
        self._patterns: dict[tuple[str, str], re.Pattern[str]] = {}  #: (service, phase) -> its pattern
        self._resources: Callable[[], Mapping[str, Mapping[str, Any] | None]] | None = None
        for service in plan.services:
            for phase in service.phases:
                self._patterns[service.name, phase.name] = re.compile(phase.pattern, re.MULTILINE)
            phases = tuple(phase.name for phase in service.phases)
            for replica in service.replicas:
                shown = _shown_ports(replica.ports)
                deadline = replica.ready.ready_timeout + replica.ready.initial_delay_seconds if replica.ready else None
                self._rows[replica.name] = ReplicaStatus(
                    name=replica.name,
                    service=service.name,
                    ports=shown,
                    gpus=replica.gpus,
                    deadline_seconds=deadline,
                    phases=phases,
                )

    def follow_resources(self, source: Callable[[], Mapping[str, Mapping[str, Any] | None]]) -> None:
        """Where each row's resources come from (replica name -> its latest sample), read at each draw."""
        self._resources = source

    def rows(self) -> list[ReplicaStatus]:
        """A copy, safe to draw while the event loop goes on."""
        resources = self._resources() if self._resources is not None else {}
        with self._lock:
            return [attrs.evolve(row, resources=resources.get(row.name)) for row in self._rows.values()]

    def counts(self) -> tuple[int, int]:
        """(ready, total) replicas."""
        with self._lock:
            return sum(row.state == "ready" for row in self._rows.values()), len(self._rows)

    def on_output(self, replica: str, block: bytes) -> None:
        row = self._rows.get(replica)
        if row is None or row.state != "loading":  # only loading replicas are read: ready ones cost nothing
            return
        text = block.decode("utf-8", "replace")
        found = find_progress(text)
        with self._lock:
            row.last_block, row.progress_at = text, None if found is None else found[1]
            if found is not None:
                row.log_fraction = found[0]

    def on_event(self, event: Event) -> None:
        if isinstance(event, (ReplicaAdded, ReplicaRemoved)):
            with self._lock:
                self._resize(event)
            return
        row = self._rows.get(event.replica)
        if row is None:
            return
        with self._lock:
            if isinstance(event, PhaseStarted):
                self._begin_phase(row, event.phase)
            else:
                _apply(row, event)

    def _resize(self, event: ReplicaAdded | ReplicaRemoved) -> None:
        """A scale added a replica (a row after its service's others, shaped like them) or removed one."""
        if isinstance(event, ReplicaRemoved):
            self._rows.pop(event.replica, None)
            return
        siblings = [row for row in self._rows.values() if row.service == event.service]
        like = siblings[0] if siblings else None
        row = ReplicaStatus(
            name=event.replica,
            service=event.service,
            ports=_shown_ports(event.ports),
            gpus=tuple(event.gpus),
            deadline_seconds=like.deadline_seconds if like is not None else None,
            phases=like.phases if like is not None else (),
        )
        rows = list(self._rows.values())
        at = rows.index(siblings[-1]) + 1 if siblings else len(rows)
        rows.insert(at, row)
        self._rows = {r.name: r for r in rows}

    def _begin_phase(self, row: ReplicaStatus, phase: str) -> None:
        """The phase watch reads a block just after us: the block's progress counts for the new phase
        only when its progress line is not before the line that began the phase (``Capturing CUDA graphs``
        then ``45%|...``), else it was the end of the phase before (``100% 8/8`` then ``Loading took``)."""
        if phase not in row.phases:
            return
        keep = False
        pattern = self._patterns.get((row.service, phase))
        if row.progress_at is not None and pattern is not None:
            match = pattern.search(row.last_block)
            keep = match is not None and row.last_block.rfind("\n", 0, match.start()) + 1 <= row.progress_at
        row.phase_index = row.phases.index(phase)
        if not keep:
            row.log_fraction = None


def _shown_ports(ports: Mapping[str, int]) -> str:
    """The first port bare (the one ``{port}`` and ``url`` use), the others by name."""
    return " ".join(str(port) if i == 0 else f"{name}={port}" for i, (name, port) in enumerate(ports.items()))


def _apply(row: ReplicaStatus, event: Event) -> None:
    if isinstance(event, Spawned):
        row.state, row.pid, row.spawned_at = "loading", event.pid, event.monotonic
        row.ready_seconds, row.phase_index, row.log_fraction, row.exit_text = None, -1, None, None
        row.last_block, row.progress_at = "", None
    elif isinstance(event, Ready):
        row.state, row.ready_seconds, row.last_block, row.progress_at = "ready", event.seconds, "", None
    elif isinstance(event, Unready):
        row.state = "unready"
    elif isinstance(event, Restarting):
        row.state, row.restarts = "restarting", event.restarts
    elif isinstance(event, Stopping):
        if row.state in _RUNNING:
            row.state = "stopping"
    elif isinstance(event, Stopped):
        row.state, row.pid = "stopped", None
    elif isinstance(event, Exited):
        row.pid = None
        row.exit_text = (
            "OOM killed" if event.reason and "OOM" in event.reason else event.signal or f"code {event.exit_code}"
        )
        if row.state not in ("stopping", "stopped", "failed", "restarting"):
            row.state = "stopped" if event.expected else "exited"
    elif isinstance(event, Completed):
        row.state = "done"
    elif isinstance(event, Failed):
        row.state = "failed"
