"""The servers' counters over a trial's measured window: requests, prompt tokens and generation tokens,
each the difference between the metrics snapshot taken before the client and the one after it.

Engines name these counters differently (the table below, one name per engine, the first a file has wins);
each replica's difference is taken on its own (a counter that went down, its process restarted, counts
from zero) and summed per service. A request passes several services (the frontend, then a prefill and a
decode worker), so the columns that stand for the whole topology, ``server_<counter>``, are the counts of
the service clients talk to, ``frontend``, where it has them, else of the last service in the file that
has them (the one nearest the clients); ``server_<service>_<counter>`` keeps each service's own."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import attrs

from .._host.promtext import sample_sums

__all__ = ["COUNTERS", "EndpointFile", "counter_deltas"]

#: counter -> the metric names engines give it (a histogram's ``_sum`` where that is the only total)
COUNTERS: Mapping[str, tuple[str, ...]] = {
    "requests": (
        "dynamo_frontend_requests_total",  # Dynamo's frontend, by endpoint and status
        "dynamo_component_requests_total",  # a Dynamo worker, by endpoint
        "vllm:request_success_total",  # by finished_reason
        "sglang:num_requests_total",
        "standin_requests_total",  # this project's stand-ins
    ),
    "prompt_tokens": (
        "dynamo_frontend_input_sequence_tokens_sum",
        "vllm:prompt_tokens_total",
        "sglang:prompt_tokens_total",
        "llamacpp:prompt_tokens_total",
    ),
    "generation_tokens": (
        "dynamo_frontend_output_tokens_total",
        "vllm:generation_tokens_total",
        "sglang:generation_tokens_total",
        "llamacpp:tokens_predicted_total",
        "standin_tokens_generated_total",
    ),
}
CLIENTS_SERVICE = "frontend"  #: every preset's service that clients talk to


@attrs.frozen
class EndpointFile:
    """One replica's saved metrics in a snapshot (``<replica>.prom``)."""

    replica: str
    service: str
    path: Path


def counter_deltas(
    before: Iterable[EndpointFile], after: Iterable[EndpointFile], services: Sequence[str]
) -> dict[str, float]:
    """``server_<counter>`` and ``server_<service>_<counter>`` for every counter some service exposes;
    ``services`` in the file's order. A replica missing from ``after`` adds nothing."""
    earlier = {f.replica: _counters(f.path) for f in before}
    per_service: dict[str, dict[str, float]] = {}
    for endpoint in after:
        now = _counters(endpoint.path)
        then = earlier.get(endpoint.replica, {})
        sums = per_service.setdefault(endpoint.service, {})
        for counter, value in now.items():
            start = then.get(counter, 0.0)
            sums[counter] = sums.get(counter, 0.0) + (value - start if value >= start else value)
    columns: dict[str, float] = {}
    nearest_first = [CLIENTS_SERVICE, *(s for s in reversed(services) if s != CLIENTS_SERVICE)]
    for counter in COUNTERS:
        source = next((s for s in nearest_first if counter in per_service.get(s, {})), None)
        if source is not None:
            columns[f"server_{counter}"] = per_service[source][counter]
    for service in services:
        for counter, value in per_service.get(service, {}).items():
            columns[f"server_{service}_{counter}"] = value
    return columns


def _counters(path: Path) -> dict[str, float]:
    try:
        sums = sample_sums(path.read_text(errors="replace"))
    except OSError:
        return {}
    found = {}
    for counter, names in COUNTERS.items():
        name = next((n for n in names if n in sums), None)
        if name is not None:
            found[counter] = sums[name]
    return found
