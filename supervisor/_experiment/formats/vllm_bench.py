"""``vllm bench serve --save-result`` JSON (``--result-dir``/``--result-filename``; by default named
``<label>-<rate>qps-<model>-<date>.json``, so it is found by its keys): flat numbers, times in ms, the
percentiles asked by ``--metric-percentiles`` as ``p<N>_<metric>_ms`` (99 alone by default; the median is
always ``median_<metric>_ms``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import is_number

__all__ = ["figures", "is_vllm_bench"]

_KEYS = ("request_throughput", "output_throughput", "completed", "failed")
#: our percentile columns -> vLLM's metric name (``e2el``: end-to-end latency, with --percentile-metrics)
_PERCENTILES = {"ttft": "ttft", "itl": "itl", "request_latency": "e2el"}


def is_vllm_bench(data: object) -> bool:
    return isinstance(data, Mapping) and all(is_number(data.get(key)) for key in _KEYS)


def figures(data: Mapping[str, Any]) -> dict[str, float]:
    found: dict[str, float] = {}
    for column, key in (
        ("request_throughput", "request_throughput"), ("output_token_throughput", "output_throughput"),
        ("requests_completed", "completed"), ("requests_failed", "failed"),
    ):  # fmt: skip
        if is_number(data.get(key)):
            found[column] = float(data[key])
    for column, metric in _PERCENTILES.items():
        for p in ("50", "90", "99"):
            keys = [f"p{p}_{metric}_ms"] + ([f"median_{metric}_ms"] if p == "50" else [])
            value = next((data[k] for k in keys if is_number(data.get(k))), None)
            if value is not None:
                found[f"{column}_p{p}_ms"] = float(value)
    return found
