"""The run's record of an outside planner's decisions (``_runtime.decisions`` carries them out): the lock that
has them go one at a time, and the last one with its outcome, as ``status`` shows it."""

from __future__ import annotations

from typing import Any

import anyio
import attrs

from .._events import PlannerDecided, PlannerDone

__all__ = ["DecisionLog"]


@attrs.define
class DecisionLog:
    """The run's planner decisions: one at a time, and the last one for ``status``."""

    lock: anyio.Lock = attrs.field(factory=anyio.Lock)
    last: PlannerDecided | None = None
    done: PlannerDone | None = None  #: the last one's outcome; None while it is under way

    def to_json(self) -> dict[str, Any]:
        """What ``status`` shows: empty before the first decision."""
        if self.last is None:
            return {}
        done = self.done
        return {
            "decision": self.last.decision,
            "source": self.last.source,
            "from": self.last.replicas_before,
            "to": self.last.replicas_after,
            "asked": self.last.asked,
            "under_way": done is None,
            "replicas": None if done is None else done.replicas,
            "seconds": None if done is None else done.seconds,
            "shortfall": None if done is None else done.shortfall,
        }
