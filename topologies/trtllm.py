"""TensorRT-LLM: ``trtllm-serve MODEL`` alone, or context/generation servers behind ``trtllm-serve disaggregated``.

Flags as ``tensorrt_llm/commands/serve.py`` defines them (click, snake_case; checked 2026-11): ``--host
--port --tp_size --pp_size --ep_size --backend --extra_llm_api_options`` (alias ``--config``), and
``disaggregated -c CONFIG``. The disaggregated YAML (``hostname``, ``port``, ``backend``,
``context_servers``/``generation_servers`` with ``num_instances`` and ``urls``) and the per-server extra
options (``cache_transceiver_config.backend``; ``disable_overlap_scheduler`` on context servers) follow
``docs/source/features/disagg-serving.md`` and ``examples/disaggregated/README.md``. Phases are the
lines of a real 1.3 start (``[TRT-LLM] [I] ... Using LLM with PyTorch backend``, ``Run warmup with``,
``Creating CUDA graph instances``); trtllm-serve has no ``--served-model-name``: it serves MODEL.

The config files hold ports known only at plan time, and belong to one run: a ``config`` job writes them
into ``{run_dir}/trtllm/`` (``python -c``, their text in its recorded command line), and the servers start
once it completed. Nothing is written when the topology is only built or validated. The files are JSON,
which YAML readers (trtllm's included) read as YAML.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Literal

import supervisor

from ._common import (
    FRONTEND,
    ON_SUPERVISOR,
    OPENAI_API,
    Cluster,
    EngineProfile,
    api_ports,
    check_inputs,
    engine_env,
    engine_program,
    model_arg,
    preset_error,
)
from ._serving import LOAD_TIMEOUT_SECONDS, alive, check_counts, replica_urls, router_frontend

__all__ = ["PROFILE", "trtllm"]

PROFILE = EngineProfile(
    name="trtllm",
    # SIGTERM: the server stops its MPI/IPC executor workers; trtllm-serve's own cleanup of a child
    # waits 10 s for terminate and 10 s more for kill, so 30 s lets it finish before our SIGKILL.
    stop=supervisor.StopPolicy("SIGTERM", 30.0),
    fatal=(r"Failed to bind socket to", r"No GPU devices found on the node"),
    phases=(
        supervisor.Phase("init", r"Using LLM with PyTorch backend|TensorRT.LLM version"),
        supervisor.Phase("load_weights", r"for model weights|Loading safetensors weights|Loading weights concurrently"),
        supervisor.Phase("kv_cache", r"in memory usage profiling|paged KV cache"),
        supervisor.Phase("warmup", r"Run warmup with"),
        supervisor.Phase("cuda_graphs", r"Creating CUDA graph instances|CUDA graph warmup"),
        supervisor.Phase("api_server", r"Started server process|Uvicorn running on"),
    ),
    list_style="spread",
    # tensorrt_llm/serve/openai_server.py; its /metrics is JSON iteration statistics, not Prometheus text
    api={"health": "/health", **OPENAI_API, "version": "/version", "iteration_stats": "/metrics"},
)

_DIR = "{run_dir}/trtllm"
_WRITER = (
    "import pathlib, sys\n"
    "for path, text in zip(sys.argv[1::2], sys.argv[2::2]):\n"
    "    pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)\n"
    "    pathlib.Path(path).write_text(text)\n"
    "    print('wrote', path, flush=True)\n"
)


def trtllm(
    model: str,
    served_model_name: str | None = None,
    port: int | None = None,
    env_path: str | None = None,
    replicas: int = 1,
    tp: int = 1,
    mode: Literal["single", "disagg"] = "single",
    prefill: int = 1,
    decode: int = 1,
    cache_backend: str = "DEFAULT",
    llm_config: Mapping[str, object] | None = None,
    args: Mapping[str, object] | Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    cluster: Cluster = None,
) -> supervisor.Topology:
    """trtllm-serve servers; clients use ``frontend``. ``llm_config``: extra LLM-API options (YAML keys)."""
    check_counts("trtllm", replicas=replicas, tp=tp, prefill=prefill, decode=decode)
    check_inputs(
        "trtllm",
        port,
        values={"model": model, "served_model_name": served_model_name, "cache_backend": cache_backend},
        args=args,
    )
    gpus = _gpus_per_server(tp, args, llm_config)
    if served_model_name not in (None, model):
        raise preset_error("trtllm", "served_model_name", "trtllm-serve serves the model under MODEL; leave it unset")
    if mode == "single":
        if port is not None and replicas > 1:
            raise preset_error("trtllm", "port", "a fixed port needs replicas=1 (clients use {frontend.urls})")
        files: dict[str, Mapping[str, object]] = {f"{_DIR}/server.yaml": llm_config} if llm_config else {}
        extra = ["--extra_llm_api_options", f"{_DIR}/server.yaml"] if llm_config else []
        server = _server(FRONTEND, model, port, env_path, replicas, tp, gpus, args, env, extra, bool(files))
        return supervisor.Topology(name="trtllm", services=[*_config_job(files), server], cluster=cluster)
    if mode != "disagg":
        raise preset_error("trtllm", "mode", f"unknown mode {mode!r}", ("single", "disagg"))
    if replicas != 1:
        raise preset_error("trtllm", "replicas", "disagg mode counts servers with prefill= and decode=")
    transceiver = {"cache_transceiver_config": {"backend": cache_backend}}
    disagg = {
        "hostname": "@frontend.host@",
        "port": "@frontend.port@",
        "backend": "pytorch",
        "context_servers": {"num_instances": prefill, "urls": _addresses("prefill", prefill)},
        "generation_servers": {"num_instances": decode, "urls": _addresses("decode", decode)},
    }
    files = {
        f"{_DIR}/context.yaml": {"disable_overlap_scheduler": True, **transceiver, **(llm_config or {})},
        f"{_DIR}/generation.yaml": {**transceiver, **(llm_config or {})},
        f"{_DIR}/disagg.yaml": disagg,
    }
    servers = [
        _server(
            role, model, None, env_path, count, tp, gpus, args, env, ["--extra_llm_api_options", f"{_DIR}/{kind}.yaml"]
        )
        for role, count, kind in (("prefill", prefill, "context"), ("decode", decode, "generation"))
    ]
    frontend = router_frontend(
        [engine_program(env_path, "trtllm-serve"), "disaggregated", "-c", f"{_DIR}/disagg.yaml"],
        port,
        env=engine_env(env_path, env),
        depends_on={"config": "completed", "prefill": "ready", "decode": "ready"},
    )
    return supervisor.Topology(
        name="trtllm-disagg", services=[*_config_job(files), *servers, frontend], cluster=cluster
    )


def _server(
    service: str,
    model: str,
    port: int | None,
    env_path: str | None,
    replicas: int,
    tp: int,
    gpus: int,
    args: Mapping[str, object] | Sequence[str] | None,
    env: Mapping[str, str] | None,
    role_flags: list[str],
    after_config: bool = True,
) -> supervisor.Service:
    command = [
        engine_program(env_path, "trtllm-serve"), model_arg(model),
        "--host", "{host}", "--port", "{port}",
        "--backend", "pytorch",
        "--tp_size", str(tp),
    ]  # fmt: skip
    return PROFILE.service(
        name=service,
        command=[*command, *role_flags, *PROFILE.flags(_snake_flags(args))],
        ports=api_ports(port),
        replicas=replicas,
        env=engine_env(env_path, env),
        depends_on={"config": "completed"} if after_config else {},
        ready=supervisor.Probe(
            supervisor.HttpCheck("http://{host}:{port}/health", status=200), timeout_seconds=LOAD_TIMEOUT_SECONDS
        ),
        alive=alive(),
        restart=supervisor.RestartPolicy("on-failure"),
        gpus=supervisor.GpuRequest(count=gpus, vendor="nvidia"),  # TensorRT-LLM is CUDA only: refused on AMD
    )


#: trtllm-serve's parallel sizes besides tp, each a flag (both spellings, tensorrt_llm/commands/serve.py) and
#: an LLM-API key of the --extra_llm_api_options file, which overrides the flag
_RANKS = {"pp": ("pp_size", "pipeline_parallel_size"), "cp": ("cp_size", "context_parallel_size")}
_TP_NAMES = ("tp_size", "tensor_parallel_size")


def _gpus_per_server(
    tp: int, args: Mapping[str, object] | Sequence[str] | None, llm_config: Mapping[str, object] | None
) -> int:
    """A server runs tp x pp x cp ranks, one GPU each: a ``pp_size`` in ``args`` or ``llm_config`` asks for
    more GPUs than ``tp`` alone. A tp size there would contradict ``--tp_size {tp}``: refused."""
    given = _flag_values(args)
    options = dict(llm_config) if isinstance(llm_config, Mapping) else {}
    for name in _TP_NAMES:
        if name in given or name in options:
            raise preset_error("trtllm", "args" if name in given else "llm_config", f"set tp=, not {name}")
    gpus = tp
    for names in _RANKS.values():
        found = [("llm_config", name, options[name]) for name in names if name in options]
        found += [("args", name, given[name]) for name in names if name in given]
        if found:
            var, name, value = found[0]
            if isinstance(value, bool) or not str(value).isdigit() or int(str(value)) < 1:
                raise preset_error("trtllm", var, f"{name}: expected a whole number of at least 1, got {value!r}")
            gpus *= int(str(value))
    return gpus


def _flag_values(args: Mapping[str, object] | Sequence[str] | None) -> dict[str, object]:
    """The parallel-size flags in ``args`` (a dict, or raw ``--flag value`` / ``--flag=value`` args)."""
    wanted = {*_TP_NAMES, *(name for names in _RANKS.values() for name in names)}
    if isinstance(args, Mapping):
        return {str(key).lstrip("-"): value for key, value in args.items() if str(key).lstrip("-") in wanted}
    found: dict[str, object] = {}
    raw = [str(arg) for arg in args or ()]
    for index, arg in enumerate(raw):
        name, equals, value = arg.lstrip("-").partition("=")
        if arg.startswith("--") and name in wanted:
            found[name] = value if equals else (raw[index + 1] if index + 1 < len(raw) else "")
    return found


def _config_job(files: Mapping[str, Mapping[str, object]]) -> list[supervisor.Service]:
    """A job writing each file (JSON; ``@svc.field@`` become plan-time templates; a whole value that is a
    port, ``"@svc.port@"``, becomes a number) before the servers start."""
    if not files:
        return []
    command = ["{python}", "-c", _WRITER]
    for path, content in files.items():
        command += [path, _templated_json(content)]
    stop = supervisor.StopPolicy("SIGTERM", 2.0)
    return [supervisor.Service(name="config", command=command, stop=stop, placement=ON_SUPERVISOR)]


def _templated_json(content: Mapping[str, object]) -> str:
    text = json.dumps(content, indent=2).replace("{", "{{").replace("}", "}}")
    text = re.sub(r'"@([\w.]*port)@"', r"{\1}", text)  # a whole port value: a number once filled
    return re.sub(r"@([\w.]+)@", r"{\1}", text)


def _addresses(service: str, count: int) -> list[str]:
    """``host:port`` of each replica (templates as ``@...@`` until the JSON is written)."""
    hosts, ports = replica_urls(service, count, "host"), replica_urls(service, count, "port")
    return [_marked(host) + ":" + _marked(port) for host, port in zip(hosts, ports, strict=True)]


def _marked(template: str) -> str:
    return template.replace("{", "@").replace("}", "@")


def _snake_flags(args: Mapping[str, object] | Sequence[str] | None) -> Mapping[str, object] | Sequence[str] | None:
    """trtllm-serve's click flags are ``--snake_case``: keys are kept as written, not turned kebab."""
    if not isinstance(args, Mapping):
        return args
    return {(key if key.startswith("-") else "--" + key): value for key, value in args.items()}
