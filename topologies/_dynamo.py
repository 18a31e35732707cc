"""What topovisor knows about NVIDIA Dynamo 1.6: its processes, flags, env, readiness and stop behaviour.

Measured on Dynamo 1.6.1 (../shared/ENGINES.md): the frontend's ``/health`` is 200 with zero workers, so it
is ready only when ``/v1/models/<name>/ready`` is 200 (every role registered); a worker's status server
(``DYN_SYSTEM_PORT``, a signed 16-bit number: below 32768) answers ``/health`` 503 forever unless
``DYN_SYSTEM_USE_ENDPOINT_HEALTH_STATUS`` names its endpoint; by default workers advertise the eth0
address, so every address is pinned to ``{host}`` (loopback on one machine, the node's address on a
cluster); SIGTERM drains and exits 0, and the frontend also exits 0 on its own when etcd is gone for
~30 s, which is why a clean exit restarts it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal
from urllib.parse import quote

import supervisor

from ._common import OPENAI_API, EngineProfile, literal, model_arg

__all__ = [
    "ENGINES",
    "FRONTEND_PROFILE",
    "LOOPBACK_ENV",
    "RESTART_ALWAYS",
    "STATUS_PORT_LIMIT",
    "WORKER_API",
    "Discovery",
    "Engine",
    "Role",
    "discovery_env",
    "frontend_ready",
    "frontend_ready_path",
    "nixl_env",
    "worker_command",
    "worker_env",
    "worker_profile",
]

Engine = Literal["vllm", "sglang", "trtllm", "mocker"]
Discovery = Literal["etcd", "file"]
Role = Literal["agg", "prefill", "decode"]
ENGINES: tuple[Engine, ...] = ("vllm", "sglang", "trtllm", "mocker")

#: DYN_SYSTEM_PORT is parsed as an i16: a port of 32768 or more makes the worker run without a status server
STATUS_PORT_LIMIT = 32768

#: pins every address a worker advertises or binds to its node's address (the default is the eth0
#: address): loopback on one machine, the address the other nodes reach it by on a cluster
LOOPBACK_ENV = {
    "DYN_TCP_RPC_HOST": "{host}",
    "DYN_EVENT_PLANE_HOST": "{host}",
    "DYN_TCP_RESPONSE_STREAM_HOST": "{host}",
}

RESTART_ALWAYS = supervisor.RestartPolicy(policy="always")
#: a worker's status server (``DYN_SYSTEM_PORT``, its first port): ``/health`` 200 once it registered
WORKER_API = {"health": "/health", "live": "/live", "metrics": "/metrics"}

#: the Rust runtime's lines, common to the frontend and every worker (colour codes sit around them)
_RUNTIME_PHASE = supervisor.Phase("runtime", r"Initializing KV store discovery backend|discovery backend")

FRONTEND_PROFILE = EngineProfile(
    name="dynamo.frontend",
    stop=supervisor.StopPolicy("SIGTERM", grace_seconds=10),  # drains in-flight streams, exits 0 in ~0.4 s
    fatal=(r"No module named '?dynamo",),  # the interpreter has no Dynamo (env_path unset or wrong)
    phases=(
        _RUNTIME_PHASE,
        supervisor.Phase("http", r"Starting HTTP\(S\) service"),
        supervisor.Phase("workers", r"worker detected|Adding worker set to model"),
    ),
    # its /health is 200 with no worker: ``model_ready`` (frontend_ready_path) is the one that waits for them
    api={"health": "/health", "live": "/live", **OPENAI_API, "metrics": "/metrics"},
)

_REGISTER = supervisor.Phase("register", r"Registering endpoint|register_llm|Registered model")
_WORKER_PHASES = {
    "mocker": (_RUNTIME_PHASE, supervisor.Phase("engine", r"Creating mocker engine")),
    "vllm": (
        _RUNTIME_PHASE,
        supervisor.Phase("engine", r"Initializing a V1 LLM engine|Initializing an LLM engine"),
        supervisor.Phase("weights", r"Starting to load model|Loading weights"),
        supervisor.Phase("memory_profiling", r"Memory profiling takes|Available KV cache memory"),
        supervisor.Phase("cuda_graphs", r"Capturing CUDA graph"),
        _REGISTER,
    ),
    "sglang": (
        _RUNTIME_PHASE,
        supervisor.Phase("weights", r"Load weight begin"),
        supervisor.Phase("kv_cache", r"KV Cache is allocated|Memory pool end"),
        supervisor.Phase("cuda_graphs", r"Capture cuda graph begin"),
        _REGISTER,
    ),
    "trtllm": (
        _RUNTIME_PHASE,
        supervisor.Phase("engine", r"TensorRT-LLM version|Initializing engine"),
        supervisor.Phase("weights", r"(?i)loading weights|load weights"),
        _REGISTER,
    ),
}

_NO_ENGINE = r"No module named '?(?:dynamo|vllm|sglang|tensorrt_llm)\b"  #: env_path unset or wrong: no restart
_WORKER_FATAL = {
    "mocker": (_NO_ENGINE,),
    "vllm": (_NO_ENGINE, r"ValueError: .*(?:tensor_parallel_size|max_model_len|No available memory)"),
    "sglang": (_NO_ENGINE, r"Not enough memory"),
    "trtllm": (_NO_ENGINE, r"(?i)executor worker .* died"),
}


#: Dynamo's trtllm example engine configs for a disaggregated worker, as --override-engine-args JSON
_TRTLLM_DISAGG = {
    "prefill": '{{"cache_transceiver_config":{{"backend":"DEFAULT"}},"disable_overlap_scheduler":true}}',
    "decode": '{{"cache_transceiver_config":{{"backend":"DEFAULT"}}}}',
}
#: the same settings as Dynamo's dynamic ``--trtllm.<path> value`` flags
_TRTLLM_DISAGG_DOTTED = {
    "prefill": ["--trtllm.cache_transceiver_config.backend", "DEFAULT", "--trtllm.disable_overlap_scheduler", "true"],
    "decode": ["--trtllm.cache_transceiver_config.backend", "DEFAULT"],
}
_TRTLLM_DYNAMIC = "--trtllm."


def worker_profile(engine: Engine) -> EngineProfile:
    """Real engines need time to free GPU memory after SIGTERM; the mocker drains and exits at once.

    Dynamo 1.6.1's sglang and trtllm workers shut down through ``dynamo/common/utils/graceful_shutdown.py``:
    unregister, sleep ``DYN_GRACEFUL_SHUTDOWN_GRACE_PERIOD_SECS`` (5 s), drain in-flight KV transfers (up to
    30 s), then the engine's cleanup: a 30 s grace killed a worker mid-transfer. 60 s, as Dynamo's own
    TRT-LLM launch scripts allow; vLLM workers stop through vLLM's own handler."""
    grace = {"mocker": 10.0, "vllm": 30.0}.get(engine, 60.0)
    return EngineProfile(
        name=f"dynamo.{engine}",
        stop=supervisor.StopPolicy("SIGTERM", grace_seconds=grace),
        fatal=_WORKER_FATAL[engine],
        phases=_WORKER_PHASES[engine],
        api=WORKER_API,
    )


def gpu_vendor(engine: Engine) -> str | None:
    """The only GPUs an engine's worker runs on: TensorRT-LLM is CUDA only (a plan on AMD GPUs refuses it);
    vLLM and SGLang run on NVIDIA and AMD (ROCm) GPUs alike."""
    return "nvidia" if engine == "trtllm" else None


def worker_command(
    python: str, engine: Engine, role: Role, model: str, served_model_name: str, tp: int, extra: Sequence[str] = ()
) -> list[str]:
    """``python -m dynamo.<engine>`` with the model, the served name, tensor parallelism and the role.

    The role flag is ``--disaggregation-mode prefill|decode`` for every backend (Dynamo's own flag for
    vLLM, TRT-LLM and the mocker; SGLang's native one). vLLM's prefill worker must name its KV connector
    (Dynamo 1.6 refuses to start without one), so both vLLM roles get NIXL's; an SGLang prefill worker
    gets its own bootstrap port, which decode workers learn through Dynamo, and both SGLang roles bind on
    ``--host {host}`` (SGLang's bootstrap server listens there, 127.0.0.1 by default; see ``nixl_env`` for
    the address advertised), as Dynamo's own ``launch/disagg.sh`` passes ``--host``. A TRT-LLM worker moves KV
    cache only with a ``cache_transceiver_config`` (TRT-LLM disables it otherwise), and a prefill-only one
    runs without the overlap scheduler, as Dynamo's own ``engine_configs/*/prefill.yaml`` and
    ``decode.yaml`` set them; they go in ``--override-engine-args`` (a user's own one replaces it), or,
    when the user's ``extra`` flags use Dynamo's dynamic ``--trtllm.<path> value`` form, as those flags:
    Dynamo 1.6.1 refuses both forms together (``dynamo/trtllm/args.py``: exit 1).
    """
    command = [python, "-m", f"dynamo.{engine}"]
    model, served_model_name = model_arg(model), literal(served_model_name)
    if engine == "mocker":
        command += ["--model-path", model, "--model-name", served_model_name]
    elif engine == "vllm":
        command += ["--model", model, "--served-model-name", served_model_name, "--tensor-parallel-size", str(tp)]
    elif engine == "sglang":
        command += ["--model-path", model, "--served-model-name", served_model_name, "--tp", str(tp)]
    else:  # trtllm
        command += ["--model", model, "--served-model-name", served_model_name, "--tensor-parallel-size", str(tp)]
    if role != "agg":
        command += ["--disaggregation-mode", role]
    if engine == "vllm" and role != "agg":
        command += ["--kv-transfer-config", '{{"kv_connector":"NixlConnector","kv_role":"kv_both"}}']
    if engine == "trtllm" and role != "agg":
        if any(arg.startswith(_TRTLLM_DYNAMIC) for arg in extra):
            command += _TRTLLM_DISAGG_DOTTED[role]  # before the user's: a later dotted flag wins
        else:
            command += ["--override-engine-args", _TRTLLM_DISAGG[role]]
    if engine == "sglang" and role != "agg":
        command += ["--disaggregation-transfer-backend", "nixl", "--host", "{host}"]
        if role == "prefill":
            command += ["--disaggregation-bootstrap-port", "{bootstrap}"]
    return command


def discovery_env(discovery: Discovery) -> dict[str, str]:
    """Where the frontend and workers find each other: etcd + NATS services, or files under the run dir."""
    if discovery == "etcd":
        return {
            "DYN_DISCOVERY_BACKEND": "etcd",
            "ETCD_ENDPOINTS": "http://{etcd.host}:{etcd.port}",
            "NATS_SERVER": "nats://{nats.host}:{nats.port}",
        }
    return {"DYN_DISCOVERY_BACKEND": "file", "DYN_FILE_KV": "{run_dir}/discovery"}


def worker_env(discovery: Discovery) -> dict[str, str]:
    """A worker's status server on its low ``status`` port, healthy once its ``generate`` endpoint serves."""
    return {
        **discovery_env(discovery),
        **LOOPBACK_ENV,
        "DYN_SYSTEM_HOST": "{host}",
        "DYN_SYSTEM_PORT": "{status}",
        "DYN_SYSTEM_USE_ENDPOINT_HEALTH_STATUS": '["generate"]',
    }


def nixl_env(engine: Engine, role: Role) -> dict[str, str]:
    """Where a disaggregated worker's KV transfer listens and what it advertises: ``{host}`` (loopback on
    one machine, the node's address on a cluster).

    vLLM: its NIXL side channel on ``{host}`` and its own ``nixl`` port. Left unset, ``dynamo.vllm``
    advertises the host's routable address (and fails without one) and every worker binds vLLM's default
    port 5600, so a second worker on the host cannot start; Dynamo's own launch scripts give each worker
    its own ``VLLM_NIXL_SIDE_CHANNEL_PORT``.

    SGLang: ``SGLANG_HOST_IP``. Left unset, Dynamo 1.6.1 (``dynamo/sglang/_disagg.py``) advertises the
    prefill worker's bootstrap server at SGLang's auto-detected routable address, while that server
    listens on ``--host`` only, so decode workers dialled an address nobody listened on; SGLang's NIXL
    transfer binds the same auto-detected address.
    """
    if role == "agg":
        return {}
    if engine == "vllm":
        return {"VLLM_NIXL_SIDE_CHANNEL_HOST": "{host}", "VLLM_NIXL_SIDE_CHANNEL_PORT": "{nixl}"}
    if engine == "sglang":
        return {"SGLANG_HOST_IP": "{host}"}
    return {}


def frontend_ready_path(served_model_name: str) -> str:
    """``/v1/models/<name>/ready``: 200 once every role the model needs (prefill and decode, or aggregated
    workers) has registered."""
    return f"/v1/models/{quote(served_model_name, safe='')}/ready"  # also turns template braces into %7B/%7D


def frontend_ready(served_model_name: str) -> supervisor.Probe:
    """The frontend is ready when the model is (``frontend_ready_path``), not when its HTTP server is."""
    return supervisor.Probe(supervisor.HttpCheck("http://{host}:{port}" + frontend_ready_path(served_model_name)))
