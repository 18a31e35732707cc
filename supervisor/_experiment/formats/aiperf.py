"""aiperf's ``profile_export_aiperf.json`` (written under ``--artifact-dir``): one object per metric, each
with its ``unit`` and statistics (``avg``, ``p50``, ``p90``, ``p99``...); throughputs have only ``avg``.
Times are in ms already."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import is_number

__all__ = ["FILE_NAME", "figures", "is_aiperf"]

FILE_NAME = "profile_export_aiperf.json"

#: our percentile columns -> aiperf's metric tag
_PERCENTILES = {"ttft": "time_to_first_token", "itl": "inter_token_latency", "request_latency": "request_latency"}


def is_aiperf(data: object) -> bool:
    return (
        isinstance(data, Mapping) and "aiperf_version" in data and isinstance(data.get("request_throughput"), Mapping)
    )


def figures(data: Mapping[str, Any]) -> dict[str, float]:
    found: dict[str, float] = {}
    _put(found, "request_throughput", data, "request_throughput", "avg")
    _put(found, "output_token_throughput", data, "output_token_throughput", "avg")
    for column, tag in _PERCENTILES.items():
        for p in ("p50", "p90", "p99"):
            _put(found, f"{column}_{p}_ms", data, tag, p)
    # request_count counts the successful ones; errors are a metric of their own, present when any failed
    _put(found, "requests_completed", data, "request_count", "avg")
    _put(found, "requests_failed", data, "error_request_count", "avg")
    return found


def _put(found: dict[str, float], column: str, data: Mapping[str, Any], tag: str, stat: str) -> None:
    metric = data.get(tag)
    value = metric.get(stat) if isinstance(metric, Mapping) else None
    if is_number(value):
        found[column] = float(value)
