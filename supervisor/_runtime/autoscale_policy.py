"""The autoscaler's decisions, pure: from the latest metrics to the count a service should have, and when.

Each reading gives a *recommendation* (the metric summed over the replicas, over ``target`` per replica,
rounded up; or a Python policy's answer), bounded by ``min``/``max`` and ``min_ready``. As Kubernetes' HPA
does, the service grows to the *lowest* recommendation of the last ``up_after`` and shrinks to the
*highest* of the last ``down_after``, only once it has watched that long, and never within ``cooldown`` of
its last change: a metric that jumps around its target moves nothing. A count that could not be reached
(the GPUs do not fit, a new replica failed) is not asked for again until the service's count changes or
the autoscaler is switched off and on: refused once, reported once.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping

import attrs

from .._spec.autoscale import metric_names
from .._spec.model import Autoscale
from .._units import counted

__all__ = ["AutoscaleState", "Decision", "recommend"]

#: a metric within this fraction of its target keeps the count (the HPA's tolerance)
TOLERANCE = 0.1


@attrs.frozen
class Decision:
    """Scale from ``before`` to ``after`` replicas, because of ``why`` (the metric's value)."""

    before: int
    after: int
    why: str
    value: float | None = None  #: the metric summed over the replicas, when a metric decided


def recommend(
    spec: Autoscale, metrics: Mapping[str, Mapping[str, float]], replicas: int, *, floor: int
) -> tuple[int, float | None, str] | None:
    """The count one reading asks for, the metric's value, and why; None when no replica's metrics answered
    (a Python policy is asked all the same: it may need no metrics)."""
    if spec.policy is not None:
        wanted = int(spec.policy(metrics, replicas))
        value, why = None, f"policy asked for {wanted}"
    else:
        assert spec.metric is not None and spec.target is not None
        if not metrics:
            return None
        names = metric_names(spec.metric)
        value = sum(sample.get(name, 0.0) for sample in metrics.values() for name in names)
        target = float(spec.target)
        ratio = value / (target * replicas) if replicas else math.inf
        wanted = replicas if replicas and abs(ratio - 1) <= TOLERANCE else math.ceil(value / target - 1e-9)
        per = value / replicas if replicas else value
        why = f"{spec.metric} = {value:g} over {counted(len(metrics), 'replica')} ({per:g} each, target {target:g})"
    return max(floor, min(spec.max, wanted)), value, why


@attrs.define
class AutoscaleState:
    """One service's autoscaler: its readings, its last change, whether it is on, and what was refused."""

    spec: Autoscale
    enabled: bool = True
    #: (monotonic time, recommended count, metric value, why), oldest first
    readings: deque[tuple[float, int, float | None, str]] = attrs.field(factory=deque)
    last_change_at: float | None = None  #: monotonic, when the last scale ended
    refused: int | None = None  #: a count refused (GPUs, a failed start): not asked for again
    refused_why: str | None = None
    refused_at_replicas: int | None = None  #: the count the service had then; a change clears ``refused``
    last: Decision | None = None  #: the last decision

    def observe(self, now: float, wanted: int, value: float | None, why: str) -> None:
        self.readings.append((now, wanted, value, why))
        keep = max(self.spec.up_after_seconds, self.spec.down_after_seconds)
        while len(self.readings) > 1 and self.readings[1][0] <= now - keep:  # the oldest still covers the window
            self.readings.popleft()

    def decide(self, now: float, replicas: int) -> Decision | None:
        """The scale to do now, if any (see the module's docstring)."""
        if not self.enabled or not self.readings:
            return None
        if self.refused is not None and replicas != self.refused_at_replicas:
            self.refused = self.refused_why = self.refused_at_replicas = None  # the set changed: try again
        if self.last_change_at is not None and now - self.last_change_at < self.spec.cooldown_seconds:
            return None
        up = self._stable(now, self.spec.up_after_seconds, rising=True)
        if up is not None and up[0] > replicas:
            if self.refused is not None and up[0] >= self.refused:
                return None
            return Decision(replicas, up[0], up[2], up[1])
        down = self._stable(now, self.spec.down_after_seconds, rising=False)
        if down is not None and down[0] < replicas:
            return Decision(replicas, down[0], down[2], down[1])
        return None

    def _stable(self, now: float, window: float, *, rising: bool) -> tuple[int, float | None, str] | None:
        """The lowest (rising) or highest (falling) recommendation of the last ``window``, once watched that long."""
        if self.readings[0][0] > now - window:
            return None
        inside = [r for r in self.readings if r[0] >= now - window] or [self.readings[-1]]
        pick = min(inside, key=lambda r: r[1]) if rising else max(inside, key=lambda r: r[1])
        newest = self.readings[-1]
        return pick[1], newest[2], newest[3]

    def refuse(self, count: int, replicas: int, why: str) -> None:
        self.refused, self.refused_why, self.refused_at_replicas = count, why, replicas

    def switch(self, enabled: bool) -> None:
        """Off keeps the count as it is (the metric is still read); on watches afresh (the windows start
        over) and may ask again for what was refused."""
        self.enabled = enabled
        if enabled:
            self.readings.clear()
            self.refused = self.refused_why = self.refused_at_replicas = None

    def to_json(self) -> dict[str, object]:
        last = self.last
        return {
            "enabled": self.enabled,
            "min": self.spec.min,
            "max": self.spec.max,
            "metric": self.spec.metric,
            "target": self.spec.target,
            "value": self.readings[-1][2] if self.readings else None,
            "wanted": self.readings[-1][1] if self.readings else None,
            "last": None if last is None else {"from": last.before, "to": last.after, "why": last.why},
            "refused": None if self.refused is None else {"to": self.refused, "why": self.refused_why},
        }
