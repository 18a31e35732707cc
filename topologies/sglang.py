"""SGLang: ``python -m sglang.launch_server`` alone, or prefill/decode disaggregation behind ``sglang_router``.

Flags and lines as SGLang documents and logs them (checked 2026-11): ``docs/advanced_features/
server_arguments.md`` (``--model-path --host --port --served-model-name --tp-size --dp-size``),
``docs/advanced_features/pd_disaggregation.md`` (``--disaggregation-mode prefill|decode``,
``--disaggregation-transfer-backend mooncake|nixl``, ``--disaggregation-bootstrap-port``, default 8998, so
one per prefill server on a host), ``docs/advanced_features/router.md`` (``python -m
sglang_router.launch_router --pd-disaggregation --prefill URL BOOTSTRAP_PORT --decode URL``; ``/readiness``),
and the lines of ``srt/model_executor/model_runner.py`` and ``srt/entrypoints/http_server.py``. A server on
several nodes (``nodes_per_replica``) is ``docs/references/multi_node_deployment``'s: the same command on
each node with ``--dist-init-addr LEADER:PORT --nnodes N --node-rank R``, ``--tp-size`` counting every node's
GPUs; rank 0 serves HTTP.

Readiness is warmed up, not listening: ``/health`` answers before the server's warm-up request ran, so a
server is ready on "The server is fired up and ready to roll!" (printed after the warm-up) or, when the
log level hides that line, on ``GET /health_generate`` = 200 (a real one-token generation).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import supervisor

from ._args import Args
from ._common import (
    FRONTEND,
    OPENAI_API,
    Cluster,
    EngineProfile,
    api_ports,
    check_inputs,
    engine_env,
    engine_python,
    literal,
    model_arg,
    preset_error,
)
from ._serving import LOAD_TIMEOUT_SECONDS, METRICS, alive, check_counts, replica_urls, router_frontend

__all__ = ["MULTI_NODE_FLAGS", "PROFILE", "READY_LINE", "ROUTER_PROMETHEUS", "sglang"]

READY_LINE = "The server is fired up and ready to roll!"
#: one server over the nodes of its replica (one task per node): rank 0 at ``{leader_host}`` leads
MULTI_NODE_FLAGS = ("--dist-init-addr", "{leader_host}:{dist}", "--nnodes", "{nnodes}", "--node-rank", "{node_rank}")

#: the router's Prometheus exporter binds 29000 unless told (sgl-router ``router_args.py`` ``--prometheus-port``
#: default 29000; ``src/metrics.rs`` panics "failed to install Prometheus metrics exporter" when it is taken),
#: so two routers on a host, or anything else on 29000, kill it: each router gets a port of its own
ROUTER_PROMETHEUS = ("--prometheus-port", "{prometheus}", "--prometheus-host", "{host}")
#: and there it serves its Prometheus metrics (request counts and latencies per worker)
ROUTER_METRICS = "http://{host}:{prometheus}/metrics"

PROFILE = EngineProfile(
    name="sglang",
    # SIGTERM: launch_server kills its own process tree (tokenizer, scheduler per TP rank, detokenizer);
    # schedulers free GPU memory as they exit. 30 s leaves room for a TP group's NCCL teardown.
    stop=supervisor.StopPolicy("SIGTERM", 30.0),
    fatal=(
        r"Not enough memory\. Please try to increase --mem-fraction-static",
        r"Initialization failed\. warmup error",
    ),
    phases=(
        supervisor.Phase("dist_init", r"Init torch distributed begin"),
        supervisor.Phase("load_weights", r"Load weight begin"),
        supervisor.Phase("kv_cache", r"Load weight end"),
        supervisor.Phase("cuda_graphs", r"Capture cuda graph begin"),
        supervisor.Phase("warmup", r"Uvicorn running on"),
    ),
    list_style="spread",
    # sglang/srt/entrypoints/http_server.py: /health answers once the server is up, /health_generate
    # once a one-token generation succeeds; /generate is SGLang's native API
    api={
        "health": "/health",
        "health_generate": "/health_generate",
        **OPENAI_API,
        "generate": "/generate",
        "model_info": "/get_model_info",
        "flush_cache": "/flush_cache",
        "metrics": "/metrics",
    },
)


def sglang(
    model: str,
    served_model_name: str | None = None,
    port: int | None = None,
    env_path: str | None = None,
    replicas: int = 1,
    tp: int = 1,
    dp: int = 1,
    mode: Literal["single", "disagg"] = "single",
    prefill: int = 1,
    decode: int = 1,
    transfer_backend: str = "mooncake",
    args: Mapping[str, object] | Sequence[str] | None = None,
    prefill_args: Mapping[str, object] | Sequence[str] | None = None,
    decode_args: Mapping[str, object] | Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    prefill_env: Mapping[str, str] | None = None,
    decode_env: Mapping[str, str] | None = None,
    cluster: Cluster = None,
    nodes_per_replica: int = 1,
) -> supervisor.Topology:
    """SGLang servers; clients use ``frontend`` (the server itself, or the router in disagg mode).

    ``prefill_args``/``prefill_env`` and ``decode_args``/``decode_env`` go to one role in disagg mode.

    ``nodes_per_replica`` > 1 (on a cluster): each server spans that many nodes, ``tp`` x ``dp`` GPUs in
    all (``tp`` with ``--enable-dp-attention``), split evenly over them; each server's nodes are its own.
    Ignored, with a note, on one machine.
    """
    check_counts("sglang", replicas=replicas, tp=tp, dp=dp, prefill=prefill, decode=decode)
    check_counts("sglang", nodes_per_replica=nodes_per_replica)
    nodes = nodes_per_replica
    check_inputs(
        "sglang",
        port,
        values={"model": model, "served_model_name": served_model_name, "transfer_backend": transfer_backend},
        args=args,
        prefill_args=prefill_args,
        decode_args=decode_args,
    )
    name = served_model_name or model
    if mode == "single":
        if port is not None and replicas > 1:
            raise preset_error("sglang", "port", "a fixed port needs replicas=1 (clients use {frontend.urls})")
        server = _server(FRONTEND, model, name, port, env_path, replicas, tp, dp, args, env, [], nodes=nodes)
        return supervisor.Topology(name="sglang", services=[server], cluster=cluster)
    if mode != "disagg":
        raise preset_error("sglang", "mode", f"unknown mode {mode!r}", ("single", "disagg"))
    if replicas != 1:
        raise preset_error("sglang", "replicas", "disagg mode counts servers with prefill= and decode=")
    backend = ["--disaggregation-transfer-backend", transfer_backend]
    prefill_flags = ["--disaggregation-mode", "prefill", "--disaggregation-bootstrap-port", "{bootstrap}", *backend]
    decode_flags = ["--disaggregation-mode", "decode", *backend]
    servers = [
        _server("prefill", model, name, None, env_path, prefill, tp, dp, args, {**(env or {}), **(prefill_env or {})},
                prefill_flags + PROFILE.flags(prefill_args), ("bootstrap",), nodes=nodes),
        _server("decode", model, name, None, env_path, decode, tp, dp, args, {**(env or {}), **(decode_env or {})},
                decode_flags + PROFILE.flags(decode_args), nodes=nodes),
    ]  # fmt: skip
    router = [engine_python(env_path), "-m", "sglang_router.launch_router", "--pd-disaggregation"]
    for url, bootstrap in zip(
        replica_urls("prefill", prefill), replica_urls("prefill", prefill, "bootstrap"), strict=True
    ):
        router += ["--prefill", url, bootstrap]
    for url in replica_urls("decode", decode):
        router += ["--decode", url]
    router += ["--host", "{host}", "--port", "{port}", *ROUTER_PROMETHEUS]
    frontend = router_frontend(
        router,
        port,
        ready_path="/readiness",
        alive_path="/liveness",
        api={"health": "/health", "readiness": "/readiness", "liveness": "/liveness", **OPENAI_API},
        env=engine_env(env_path, env),
        extra_ports=("prometheus",),
        metrics=ROUTER_METRICS,
    )
    return supervisor.Topology(name="sglang-disagg", services=[*servers, frontend], cluster=cluster)


def _server(
    service: str,
    model: str,
    name: str,
    port: int | None,
    env_path: str | None,
    replicas: int,
    tp: int,
    dp: int,
    args: Args,
    env: Mapping[str, str] | None,
    role_flags: list[str],
    extra_ports: Sequence[str] = (),
    *,
    nodes: int = 1,
) -> supervisor.Service:
    command = [
        engine_python(env_path), "-m", "sglang.launch_server",
        "--model-path", model_arg(model),
        "--host", "{host}", "--port", "{port}",
        "--served-model-name", literal(name),
        "--tp-size", str(tp),
        "--enable-metrics",
    ]  # fmt: skip
    if dp > 1:
        command += ["--dp-size", str(dp)]
    flags = [*role_flags, *PROFILE.flags(args)]
    world = _gpus_per_server(tp, dp, "--enable-dp-attention" in flags)
    if world % nodes:
        what = f"tp = {tp} GPUs (dp attention)" if world == tp and dp > 1 else f"tp x dp = {world} GPUs"
        problem = f"{what} do not split evenly over {nodes} nodes"
        raise preset_error("sglang", "nodes_per_replica", problem)
    if nodes > 1:
        command += MULTI_NODE_FLAGS
        extra_ports = (*extra_ports, "dist")
    warmed_up = supervisor.AnyOf(
        [supervisor.LogCheck(READY_LINE), supervisor.HttpCheck("http://{host}:{port}/health_generate", status=200)]
    )
    # A disaggregated or multi-node server advertises SGLang's auto-detected routable address (eth0 here)
    # to its peers (KV transfer sessions, the bootstrap handshake, the multi-node rendezvous) unless
    # SGLANG_HOST_IP says otherwise; it must be the address the server is reached at: {host}.
    advertised = {"SGLANG_HOST_IP": "{host}"} if role_flags or nodes > 1 else {}
    return PROFILE.service(
        name=service,
        command=[*command, *flags],
        ports=api_ports(port, *extra_ports),
        replicas=replicas,
        env=engine_env(env_path, env, **advertised),
        ready=supervisor.Probe(warmed_up, timeout_seconds=LOAD_TIMEOUT_SECONDS),
        alive=alive(),
        restart=supervisor.RestartPolicy("on-failure"),
        gpus=world // nodes,  # per node on a cluster
        metrics=METRICS,
        placement=supervisor.Placement(nodes=nodes) if nodes > 1 else None,
    )


def _gpus_per_server(tp: int, dp: int, dp_attention: bool) -> int:
    """``--dp-size`` copies of a ``--tp-size`` group: tp x dp GPUs. With ``--enable-dp-attention`` the dp
    ranks split the one tp group's GPUs instead (attention data parallel, FFN tensor parallel: SGLang's
    server_args.py asserts ``tp_size % dp_size == 0``), so a server holds tp GPUs."""
    if not dp_attention:
        return tp * dp
    if tp % dp:
        raise preset_error(
            "sglang", "dp", f"--enable-dp-attention splits tp={tp} GPUs into dp groups: dp={dp} must divide tp"
        )
    return tp
