"""Checks of a service's ``autoscale:`` (the spec is ``_spec.model.Autoscale``): bounds that can be met, one
source of the count (a metric with its target, or a Python policy), and a ``metrics:`` endpoint to read."""

from __future__ import annotations

import math
from collections.abc import Callable

from .model import Service

__all__ = ["check_autoscale", "metric_names"]

_MAX_SECONDS = 365 * 24 * 3600.0


def metric_names(metric: str) -> list[str]:
    """The Prometheus names a ``metric:`` sums: one, or several joined by ``+``
    (``vllm:num_requests_running + vllm:num_requests_waiting``)."""
    return [name.strip() for name in metric.split("+")]


def check_autoscale(service: Service, where: str, report: Callable[[str], None], *, max_replicas: int) -> None:
    """One problem per call of ``report``; ``where`` names the service."""
    spec = service.autoscale
    if spec is None:
        return
    field = f"{where}, field 'autoscale"
    bounds_ok = True
    for name, value in (("min", spec.min), ("max", spec.max)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= max_replicas:
            report(f"{field}.{name}': expected a whole number from 0 to {max_replicas}, got {value!r}")
            bounds_ok = False
    if bounds_ok and spec.min > spec.max:
        report(f"{field}.max': {spec.max} is below min ({spec.min})")
    if bounds_ok and isinstance(service.min_ready, int) and service.min_ready > spec.max:
        report(f"{field}.max': {spec.max} is below the service's min_ready ({service.min_ready})")
    if spec.policy is not None:
        if spec.metric is not None or spec.target is not None:
            report(f"{field}': give either a policy or metric: and target:, not both")
        elif not callable(spec.policy):
            report(f"{field}.policy': expected a callable (metrics, replicas) -> count, got {spec.policy!r}")
    elif spec.metric is None or spec.target is None:
        missing = "metric" if spec.metric is None else "target"
        report(f"{field}.{missing}': missing (the metric to read, and its value per replica to aim at)")
    else:
        names = metric_names(spec.metric) if isinstance(spec.metric, str) else [""]
        if not all(name and not any(c.isspace() or c in "{}\0" for c in name) for name in names):
            report(f"{field}.metric': expected a Prometheus metric name, or names joined by +, got {spec.metric!r}")
        target = spec.target
        if isinstance(target, bool) or not isinstance(target, (int, float)) or not math.isfinite(target) or target <= 0:
            report(f"{field}.target': expected a number more than 0, got {target!r}")
        if service.metrics is None:
            report(f"{field}.metric': the service has no metrics: endpoint to read it from (add metrics: URL)")
    for name in ("up_after", "down_after", "cooldown", "period"):
        value = getattr(spec, f"{name}_seconds")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= _MAX_SECONDS:
            report(f"{field}.{name}': expected a duration from 0 to a year, got {value!r}")
        elif name == "period" and value == 0:
            report(f"{field}.period': must be more than 0")
