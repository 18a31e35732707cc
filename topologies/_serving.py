"""What the vLLM, SGLang and TensorRT-LLM presets share: probes on an OpenAI server, checks of counts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import supervisor

from ._common import FRONTEND, HEAD_NODE, OPENAI_API, api_ports, preset_error

__all__ = [
    "LOAD_TIMEOUT_SECONDS",
    "METRICS",
    "ROUTER_STOP",
    "alive",
    "check_counts",
    "models_ready",
    "replica_urls",
    "router_frontend",
]

#: downloading and loading a 70B checkpoint takes tens of minutes; a stalled start still fails at the end
LOAD_TIMEOUT_SECONDS = 1800.0
#: proxies and routers hold no GPU memory and no request state worth draining for long
ROUTER_STOP = supervisor.StopPolicy("SIGTERM", 5.0)
#: the Prometheus endpoint on the API port (vLLM always, SGLang with --enable-metrics, llama.cpp with --metrics)
METRICS = "http://{host}:{port}/metrics"


def models_ready(served_model_name: str) -> supervisor.Probe:
    """``GET /v1/models`` lists the served name: the API server is up *and* the model is registered. The
    answer is parsed and the ids compared: a name JSON escapes (``a"b``, ``\\``, ``é`` as ``\\u00e9``)
    matches as it is served."""
    listed = {"data": [{"id": served_model_name}]}
    return supervisor.Probe(
        supervisor.HttpCheck("http://{host}:{port}/v1/models", status=200, json=listed),
        timeout_seconds=LOAD_TIMEOUT_SECONDS,
    )


def alive(path: str = "/health") -> supervisor.Probe:
    """Once ready, three failed health checks in a row (5 s apart) replace the replica."""
    return supervisor.Probe(supervisor.HttpCheck("http://{host}:{port}" + path, status=200), period_seconds=5.0)


def replica_urls(service: str, count: int, field: str = "url") -> list[str]:
    """``{svc.0.url}``, ``{svc.1.url}``, ...: each replica's own value, filled at plan time."""
    return [f"{{{service}.{index}.{field}}}" for index in range(count)]


def check_counts(preset: str, **counts: int) -> None:
    """Replica and parallelism counts are whole numbers of at least one."""
    for var, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise preset_error(preset, var, f"expected a whole number of at least 1, got {value!r}")


def router_frontend(
    command: list[str],
    port: int | None,
    *,
    ready_path: str = "/health",
    alive_path: str = "/health",
    env: Mapping[str, str] | None = None,
    depends_on: object = ("prefill", "decode"),
    extra_ports: Sequence[str] = (),
    metrics: str | None = None,
    api: Mapping[str, str] | None = None,
) -> supervisor.Service:
    """The proxy or router in front of disaggregated prefill and decode servers: the ``frontend`` (on a
    cluster on the head node, node 0); ``metrics``, its Prometheus endpoint if it has one; ``api``, its
    routes (default: ``/health`` and the OpenAI ones it forwards)."""
    return supervisor.Service(
        name=FRONTEND,
        command=command,
        ports=api_ports(port, *extra_ports),
        env=env or {},
        depends_on=depends_on,
        ready=supervisor.HttpCheck("http://{host}:{port}" + ready_path, status=200),
        alive=alive(alive_path),
        stop=ROUTER_STOP,
        restart=supervisor.RestartPolicy("on-failure"),
        placement=HEAD_NODE,
        metrics=metrics,
        api={"health": "/health", **OPENAI_API} if api is None else api,
    )
