"""The running group's phase, and the one guarded way it changes (as ``Replica.transition`` guards a
replica's state): a teardown that found the group still pending, or a start after a stop, is a bug
that raises here instead of a manifest that says ``running`` after ``stopped``."""

from __future__ import annotations

import enum

__all__ = ["RunPhase", "check_phase_change"]


class RunPhase(str, enum.Enum):
    """pending -> starting -> running -> stopping -> stopped; a teardown may begin from any of the first
    three. A ``str``: the manifest, ``supervisor status`` and ``ps`` show its value."""

    PENDING = "pending"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"

    __str__ = str.__str__  # str() and f"{phase}" are "running" on every Python, not "RunPhase.RUNNING"


_ALLOWED: dict[RunPhase, frozenset[RunPhase]] = {
    RunPhase.PENDING: frozenset({RunPhase.STARTING, RunPhase.STOPPING}),
    RunPhase.STARTING: frozenset({RunPhase.RUNNING, RunPhase.STOPPING}),
    RunPhase.RUNNING: frozenset({RunPhase.STOPPING}),
    RunPhase.STOPPING: frozenset({RunPhase.STOPPED}),
    RunPhase.STOPPED: frozenset(),
}


def check_phase_change(run_id: str, current: RunPhase, new: RunPhase) -> RunPhase:
    """``new``, if the life cycle allows it after ``current``; a ``RuntimeError`` (a bug) otherwise."""
    if new not in _ALLOWED[current]:
        raise RuntimeError(f"run {run_id}: no phase change from {current.value} to {new.value}")
    return new
