"""The client's own figures, read from the files the benchmark tools people use write into the trial's
folder: aiperf's ``profile_export_aiperf.json``, ``vllm bench serve --save-result`` JSON, guidellm's JSON
report, and the ``result.json`` any other client may write.

Each tool's numbers become the same columns (:data:`FIGURES`), in the same units, so that a report reads
alike whichever tool measured; a module per format knows one tool's file and nothing else."""

from __future__ import annotations

from typing import TypeGuard

__all__ = ["FIGURES", "is_number"]

#: the columns a tool's file is read into (each tool gives those it measures); rates per second, times in ms
FIGURES = (
    "request_throughput",  # completed requests per second over the benchmark
    "output_token_throughput",  # generated tokens per second over the benchmark
    "ttft_p50_ms", "ttft_p90_ms", "ttft_p99_ms",  # time to first token
    "itl_p50_ms", "itl_p90_ms", "itl_p99_ms",  # inter-token latency
    "request_latency_p50_ms", "request_latency_p90_ms", "request_latency_p99_ms",  # end to end, per request
    "requests_completed", "requests_failed",
)  # fmt: skip


def is_number(value: object) -> TypeGuard[float]:
    """A JSON number (a bool is not one, though Python counts it as an int)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)
