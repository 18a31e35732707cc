"""guidellm's JSON report (``guidellm run --output kind=json,path=FILE``): ``benchmarks``, each with
``metrics`` whose entries hold statistics per request status (``successful``: ``mean``, ``median``,
``percentiles`` ``p50``/``p90``/``p99``...). Times are in ms but ``request_latency``, in seconds. A report
of several benchmarks (``--profile kind=sweep``) is read for its first."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import is_number

__all__ = ["figures", "is_guidellm"]

#: our percentile columns -> guidellm's metric, and the factor to ms
_PERCENTILES = {
    "ttft": ("time_to_first_token_ms", 1.0),
    "itl": ("inter_token_latency_ms", 1.0),
    "request_latency": ("request_latency", 1000.0),
}


def is_guidellm(data: object) -> bool:
    return _metrics(data) is not None


def figures(data: Mapping[str, Any]) -> dict[str, float]:
    metrics = _metrics(data)
    assert metrics is not None
    found: dict[str, float] = {}
    for column, tag in (
        ("request_throughput", "requests_per_second"),
        ("output_token_throughput", "output_tokens_per_second"),
    ):
        value = _successful(metrics, tag).get("mean")
        if is_number(value):
            found[column] = float(value)
    for column, (tag, factor) in _PERCENTILES.items():
        percentiles = _successful(metrics, tag).get("percentiles")
        for p in ("p50", "p90", "p99"):
            value = percentiles.get(p) if isinstance(percentiles, Mapping) else None
            if is_number(value):
                found[f"{column}_{p}_ms"] = float(value) * factor
    totals = metrics.get("request_totals")
    if isinstance(totals, Mapping):
        for column, key in (("requests_completed", "successful"), ("requests_failed", "errored")):
            if is_number(totals.get(key)):
                found[column] = float(totals[key])
    return found


def _metrics(data: object) -> Mapping[str, Any] | None:
    benchmarks = data.get("benchmarks") if isinstance(data, Mapping) else None
    first = benchmarks[0] if isinstance(benchmarks, list) and benchmarks else None
    metrics = first.get("metrics") if isinstance(first, Mapping) else None
    return metrics if isinstance(metrics, Mapping) and "requests_per_second" in metrics else None


def _successful(metrics: Mapping[str, Any], tag: str) -> Mapping[str, Any]:
    metric = metrics.get(tag)
    stats = metric.get("successful") if isinstance(metric, Mapping) else None
    return stats if isinstance(stats, Mapping) else {}
