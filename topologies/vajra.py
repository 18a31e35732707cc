"""Vajra: ``python -m vajra.entrypoints.openai.api_server`` as one server, or independent replicas.

Flags as vajra-nightly 0.1.dev2025060906 defines them (its flattened config classes: a nested field is
``--<snake_case(owning class)>_<field>``; the table below was read from ``vajra/entrypoints/{,openai/}config.py``
and ``vajra/config/{model,parallel,worker,inference_engine}_config.py`` of that version; see
``/work/shared/VAJRA.md``). The entry module moved between Vajra versions, so it is the var ``module``.

- GPUs: Vajra deletes ``CUDA_VISIBLE_DEVICES`` before CUDA starts and places its workers as Ray actors,
  so the GPUs we assign reach it as ``--inference_engine_config_global_resource_mapping``: physical ids
  (``{gpus.0}``...; ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` stays set, so CUDA numbers them as the planner does).
- Ray: Vajra calls ``ray.init()`` with no address, which joins ``RAY_ADDRESS``, else the cluster the last
  ``ray start`` recorded in Ray's temp dir, else starts a Ray of its own on random ports. Each replica gets
  its own: ``RAY_ADDRESS=local`` (Ray's ``canonicalize_bootstrap_address``: "local" = start a new local
  instance), so two replicas on a node never join each other's Ray, nor one someone started there, and
  an inherited ``RAY_ADDRESS`` is overridden. The temp dir stays Ray's default: its sockets must fit a
  107-byte Unix socket path, which a run dir often does not leave room for. A private single-node Ray
  has one node, this one: the mapping's node string is ``""`` (Vajra: any node), which needs no guess of
  the address Ray registers (it turns a node address of 127.0.0.1 into the outward one, so
  ``node:127.0.0.1`` would never exist on a machine with a network).
- Readiness: no ``/health``, no ``/metrics``; the model and KV cache load before the port opens, so
  ``GET /v1/models`` = 200 listing the model means ready. With ``--api_key`` every ``/v1`` route wants
  ``Authorization: Bearer KEY``, and so the probes send it (the key is a secret: hidden in the records).
- The served name is the model string (no rename flag): ``served_model_name`` other than ``model`` is refused.
- Stop: no signal code of Vajra's own; uvicorn handles SIGTERM and Ray's workers are its children, so the
  process group gets SIGTERM, a grace for Ray's teardown, then SIGKILL.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

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
    model_arg,
    preset_error,
)
from ._serving import LOAD_TIMEOUT_SECONDS, check_counts

__all__ = ["DEFAULT_MODULE", "PROFILE", "SOURCE_VERSION", "vajra"]

#: the Vajra version the flag names below were read from
SOURCE_VERSION = "vajra-nightly 0.1.dev2025060906"
#: its OpenAI server's entry module (``vajra/entrypoints/openai/api_server.py``)
DEFAULT_MODULE = "vajra.entrypoints.openai.api_server"
#: the flags the preset sets itself; in ``args`` they would contradict it
_OWN_FLAGS = {
    "host": "the server listens on {host}",
    "port": "set port=",
    "model_config_model": "set model=",
    "parallel_config_tensor_parallel_size": "set tp=",
    "parallel_config_pipeline_parallel_size": "set pp=",
    "inference_engine_config_global_resource_mapping": "the mapping is made from the GPUs the plan assigns",
}

PROFILE = EngineProfile(
    name="vajra",
    # SIGTERM: uvicorn stops serving; Ray's teardown of the workers is not documented, so 30 s of grace
    # before SIGKILL of the process group, which holds Ray's processes too (started by ray.init()).
    stop=supervisor.StopPolicy("SIGTERM", 30.0),
    fatal=(r"Address already in use",),
    # The lines of vajra/entrypoints/openai/api_server.py, engine/inference_engine.py, the replica
    # controller and worker/base_llm_worker.py; Rich prints them, wrapped at COLUMNS (set wide below).
    phases=(
        supervisor.Phase("config", r"Starting server with configuration"),
        supervisor.Phase("resources", r"Resource Allocation"),
        supervisor.Phase("load_weights", r"Initializing an LLM Controller"),
        supervisor.Phase("workers", r"Model initialized on worker"),
        supervisor.Phase("kv_cache", r"# GPU blocks:"),
        supervisor.Phase("api_server", r"Created OpenAIServingChat and OpenAIServingCompletion"),
    ),
    list_style="spread",  # Vajra's lists are space-separated values after one flag
    api=OPENAI_API,  # vajra/entrypoints/openai/api_server.py: no /health, no /metrics
)


def vajra(
    model: str,
    served_model_name: str | None = None,
    port: int | None = None,
    env_path: str | None = None,
    replicas: int = 1,
    tp: int = 1,
    pp: int = 1,
    module: str = DEFAULT_MODULE,
    args: Mapping[str, object] | Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    cluster: Cluster = None,
) -> supervisor.Topology:
    """Vajra servers, each its own process, port, GPUs and Ray; clients use ``frontend`` (``{frontend.urls}``
    lists the replicas). ``args``: extra flags as Vajra spells them (``{model_config_max_model_len: 4096,
    worker_config_gpu_memory_utilization: 0.8, api_key: KEY}``); ``module``: the entry module, for a Vajra
    newer than the nightly the flags were read from."""
    check_counts("vajra", replicas=replicas, tp=tp, pp=pp)
    check_inputs("vajra", port, values={"model": model, "module": module}, args=args)
    if served_model_name not in (None, model):
        raise preset_error(
            "vajra",
            "served_model_name",
            "Vajra serves the model under its model string (no rename flag); leave it unset",
        )
    if cluster is not None:
        raise preset_error(
            "vajra", "cluster", "not supported yet: Vajra needs physical GPU ids, which Slurm assigns per task"
        )
    if port is not None and replicas > 1:
        raise preset_error("vajra", "port", "a fixed port needs replicas=1 (clients use {frontend.urls})")
    extra = _vajra_flags(args)
    key = _api_key(extra)
    gpus = tp * pp
    command = [
        engine_python(env_path), "-m", module,
        "--host", "{host}", "--port", "{port}",
        "--model_config_model", model_arg(model),
        "--parallel_config_tensor_parallel_size", str(tp),
        "--parallel_config_pipeline_parallel_size", str(pp),
        "--inference_engine_config_global_resource_mapping", resource_mapping(gpus),
    ]  # fmt: skip
    ray = {"RAY_ADDRESS": "local", "COLUMNS": "240"}  # a Ray per replica; Rich lines unwrapped
    headers = {"Authorization": f"Bearer {key}"} if key is not None else None
    models = supervisor.HttpCheck(
        "http://{host}:{port}/v1/models", status=200, json={"data": [{"id": model}]}, headers=headers
    )
    server = PROFILE.service(
        name=FRONTEND,
        command=[*command, *extra],
        ports=api_ports(port),
        replicas=replicas,
        env=engine_env(env_path, env, **ray),
        ready=supervisor.Probe(models, timeout_seconds=LOAD_TIMEOUT_SECONDS),
        alive=supervisor.Probe(models, period_seconds=5.0),
        restart=supervisor.RestartPolicy("on-failure"),
        gpus=supervisor.GpuRequest(count=gpus, vendor="nvidia"),  # Vajra is CUDA only: refused on AMD GPUs
    )
    return supervisor.Topology(name="vajra", services=[server])


def resource_mapping(gpus: int) -> str:
    """Replica set entry 0 on this replica's assigned GPUs, as a command template: ``{"0": [["", 3],
    ["", 4]]}`` once ``{gpus.0}`` and ``{gpus.1}`` are filled (JSON braces doubled: they are literal)."""
    entries = ",".join(f'["",{{gpus.{index}}}]' for index in range(gpus))
    return '{{"0":[' + entries + "]}}"


def _vajra_flags(args: Args) -> list[str]:
    """``args`` as Vajra takes them: keys kept snake_case (``--model_config_dtype``), a bool as a value
    (``--x true`` / ``--x false``: Vajra's bools take one), lists spread, dicts JSON; a list of strings
    passes through."""
    if not isinstance(args, Mapping):
        flags = PROFILE.flags(args)
        named = {flag.partition("=")[0].lstrip("-") for flag in flags if flag.startswith("--")}
    else:
        named = {str(key).lstrip("-") for key in args}
        converted = {(key if key.startswith("-") else "--" + key): _bool_text(value) for key, value in args.items()}
        flags = PROFILE.flags(converted)
    for name in named & _OWN_FLAGS.keys():
        raise preset_error("vajra", "args", f"--{name}: {_OWN_FLAGS[name]}")
    return flags


def _bool_text(value: object) -> object:
    """Vajra parses a bool from its value (``true``, anything else False): ``True`` -> ``true``,
    ``False`` -> ``false`` (not a left-out flag, which would keep a default of True)."""
    return ("true" if value else "false") if isinstance(value, bool) else value


def _api_key(flags: Sequence[str]) -> str | None:
    """The ``--api_key`` value in the server's flags, if any: the probes must present it."""
    for index, flag in enumerate(flags):
        name, equals, value = flag.partition("=")
        if name == "--api_key":
            return value if equals else (flags[index + 1] if index + 1 < len(flags) else None)
    return None
