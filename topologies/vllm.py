"""vLLM: ``vllm serve`` as one server (tensor and data parallel), replicas, or disaggregated prefill/decode.

Flags, log lines and the KV-connector set-up follow vLLM's own docs and source (checked 2026-11):
``docs/cli/serve`` (``--host --port --served-model-name --tensor-parallel-size --data-parallel-size
--kv-transfer-config``), ``docs/features/nixl_connector_usage.md`` (``VLLM_NIXL_SIDE_CHANNEL_PORT`` unique
per instance on a host, ``kv_role`` ``kv_both`` in the same-host example, ``kv_producer``/``kv_consumer``
for the other connectors of ``docs/features/disagg_prefill.md``), and the startup lines of
``vllm/v1/worker/gpu_model_runner.py``, ``gpu_worker.py``, ``model_loader/default_loader.py`` and
``entrypoints/openai/api_server.py``.
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
    engine_program,
    literal,
    model_arg,
    preset_error,
)
from ._serving import (
    LOAD_TIMEOUT_SECONDS,
    METRICS,
    alive,
    check_counts,
    models_ready,
    replica_urls,
    router_frontend,
)

__all__ = ["PROFILE", "vllm"]

PROFILE = EngineProfile(
    name="vllm",
    # SIGTERM: the API server stops accepting, the engine core processes (one per DP rank, plus TP
    # workers) shut down and free their GPU memory; NCCL teardown of a TP group takes several seconds.
    # 30 s covers that; past it SIGKILL of the process group is safe (the driver frees the memory).
    stop=supervisor.StopPolicy("SIGTERM", 30.0),
    fatal=(
        r"Engine core initialization failed",
        r"No available memory for the cache blocks",
        r"is larger than the available KV cache memory",
        r"on startup is less than desired GPU memory utilization",
        r"are not supported for now\. Supported architectures",
    ),
    phases=(
        supervisor.Phase("load_weights", r"Starting to load model"),
        supervisor.Phase("profile_memory", r"Model loading took|Loading model weights took"),
        supervisor.Phase("kv_cache", r"Available KV cache memory|Memory profiling takes"),
        supervisor.Phase("cuda_graphs", r"Capturing CUDA graphs?|Capturing cudagraphs"),
        supervisor.Phase("api_server", r"Starting vLLM API server"),
    ),
    list_style="spread",
    # vllm/entrypoints/openai/api_server.py; /metrics is always on
    api={"health": "/health", **OPENAI_API, "metrics": "/metrics"},
)

#: connectors whose docs use one role for both sides; the proxy decides who prefills
_SYMMETRIC = ("NixlConnector",)
#: connectors whose prefill/decode hand-off is not the one ``topologies.pd_proxy`` speaks (prefill with
#: ``max_tokens=1`` and ``kv_transfer_params``, then decode), each with its own proxy in vLLM's examples:
#: P2pNcclConnector finds its peer in the request id (``___prefill_addr_IP:PORT___decode_addr_...``,
#: p2p_nccl_engine.py ``parse_request_id`` raises "does not contain hostname and port" otherwise);
#: MooncakeConnector's decode is told the prefill's bootstrap server (``bootstrap_server_host``/``_port``,
#: mooncake_connector_proxy.py) while both run at once; MoRIIOConnector's servers register over ZMQ with
#: moriio_toy_proxy_server.py, which hands out handshake and notify ports
_OTHER_PROXY = {
    "P2pNcclConnector": "its servers need vLLM's disagg_proxy_p2p_nccl_xpyd.py (peer addresses in the request id)",
    "MooncakeConnector": "its decode servers need the prefill's bootstrap server from mooncake_connector_proxy.py",
    "MoRIIOConnector": "its servers register with vLLM's moriio_toy_proxy_server.py over ZMQ",
}


def vllm(
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
    kv_connector: str = "NixlConnector",
    args: Mapping[str, object] | Sequence[str] | None = None,
    prefill_args: Mapping[str, object] | Sequence[str] | None = None,
    decode_args: Mapping[str, object] | Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    prefill_env: Mapping[str, str] | None = None,
    decode_env: Mapping[str, str] | None = None,
    cluster: Cluster = None,
) -> supervisor.Topology:
    """vLLM servers; clients use ``frontend`` (``{frontend.url}``; ``{frontend.urls}`` lists replicas).

    ``mode="single"``: ``replicas`` independent servers of ``tp`` x ``dp`` GPUs each. ``mode="disagg"``:
    ``prefill`` and ``decode`` servers joined by ``kv_connector`` behind ``topologies.pd_proxy``;
    ``prefill_env``/``decode_env`` go to one role (LMCache's ``LMCACHE_CONFIG_FILE`` differs per role).
    """
    check_counts("vllm", replicas=replicas, tp=tp, dp=dp, prefill=prefill, decode=decode)
    check_inputs(
        "vllm",
        port,
        values={"model": model, "served_model_name": served_model_name, "kv_connector": kv_connector},
        args=args,
        prefill_args=prefill_args,
        decode_args=decode_args,
    )
    name = served_model_name or model
    if mode == "single":
        if port is not None and replicas > 1:
            raise preset_error("vllm", "port", "a fixed port needs replicas=1 (clients use {frontend.urls})")
        server = _server(FRONTEND, model, name, port, env_path, replicas, tp, dp, args, env, [], {})
        return supervisor.Topology(name="vllm", services=[server], cluster=cluster)
    if mode != "disagg":
        raise preset_error("vllm", "mode", f"unknown mode {mode!r}", ("single", "disagg"))
    if replicas != 1:
        raise preset_error("vllm", "replicas", "disagg mode counts servers with prefill= and decode=")
    if dp != 1:
        raise preset_error("vllm", "dp", "disagg mode scales with prefill= and decode= replicas, not dp")
    if kv_connector in _OTHER_PROXY:
        problem = f"{kv_connector} cannot work behind topologies.pd_proxy: {_OTHER_PROXY[kv_connector]}"
        raise preset_error("vllm", "kv_connector", problem)
    symmetric = kv_connector in _SYMMETRIC
    services = []
    for role, count, role_args, kv_role, own_env in (
        ("prefill", prefill, prefill_args, "kv_both" if symmetric else "kv_producer", prefill_env),
        ("decode", decode, decode_args, "kv_both" if symmetric else "kv_consumer", decode_env),
    ):
        transfer = {"kv_connector": kv_connector, "kv_role": kv_role}
        flags = PROFILE.flags({"kv_transfer_config": transfer}) + PROFILE.flags(role_args)
        nixl = {"VLLM_NIXL_SIDE_CHANNEL_HOST": "{host}", "VLLM_NIXL_SIDE_CHANNEL_PORT": "{nixl}"}
        fixed = nixl if kv_connector == "NixlConnector" else {}
        ports = ["nixl"] if fixed else []
        role_env = {**(env or {}), **(own_env or {})}
        services.append(_server(role, model, name, None, env_path, count, tp, 1, args, role_env, flags, fixed, ports))
    proxy = [
        "{python}", "-m", "topologies.pd_proxy", "--host", "{host}", "--port", "{port}",
        *_each("--prefill", replica_urls("prefill", prefill)),
        *_each("--decode", replica_urls("decode", decode)),
    ]  # fmt: skip
    frontend = router_frontend(proxy, port)
    return supervisor.Topology(name="vllm-disagg", services=[*services, frontend], cluster=cluster)


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
    fixed_env: dict[str, str],
    extra_ports: Sequence[str] = (),
) -> supervisor.Service:
    command = [
        engine_program(env_path, "vllm"), "serve", model_arg(model),
        "--host", "{host}", "--port", "{port}",
        "--served-model-name", literal(name),
        "--tensor-parallel-size", str(tp),
    ]  # fmt: skip
    if dp > 1:
        command += ["--data-parallel-size", str(dp)]
    return PROFILE.service(
        name=service,
        command=[*command, *role_flags, *PROFILE.flags(args)],
        ports=api_ports(port, *extra_ports),
        replicas=replicas,
        env=engine_env(env_path, env, **fixed_env),
        ready=_health_ready() if _api_key(args, env) or _api_key(role_flags, None) else models_ready(name),
        alive=alive(),
        restart=supervisor.RestartPolicy("on-failure"),
        gpus=tp * dp,
        metrics=METRICS,
    )


def _api_key(args: Args, env: Mapping[str, str] | None) -> bool:
    """Whether the server wants a bearer token (``--api-key`` or ``VLLM_API_KEY``) on every ``/v1`` path."""
    if env and env.get("VLLM_API_KEY"):
        return True
    if isinstance(args, Mapping):
        return any(key in ("api_key", "--api-key") and value not in (None, False) for key, value in args.items())
    return any(str(item) == "--api-key" or str(item).startswith("--api-key=") for item in args or ())


def _health_ready() -> supervisor.Probe:
    """With an API key ``/v1/models`` answers 401 forever; ``/health`` is open, and vLLM serves HTTP only
    once the engine is built, so it is 200 once the model is loaded."""
    return supervisor.Probe(
        supervisor.HttpCheck("http://{host}:{port}/health", status=200), timeout_seconds=LOAD_TIMEOUT_SECONDS
    )


def _each(flag: str, values: list[str]) -> list[str]:
    return [item for value in values for item in (flag, value)]
