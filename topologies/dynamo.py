"""``dynamo``: an NVIDIA Dynamo deployment: etcd and NATS, prefill and decode workers, and the frontend.

    topo = topologies.dynamo(engine="vllm", model="Qwen/Qwen3-0.6B", prefill=2, decode=2, tp=1)
    supervisor run topologies/dynamo.yaml --set engine=vllm --set model=Qwen/Qwen3-0.6B

Services: ``etcd`` and ``nats`` (with ``discovery="etcd"``), ``prefill`` (absent when ``prefill=0``:
aggregated serving), ``decode`` and ``frontend`` (Dynamo's OpenAI-compatible HTTP server, the one clients
talk to). Workers start beside the frontend, not before it: the frontend is ready only once every role has
registered, so "all ready" means "a request can be served".
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import supervisor

from . import _dynamo
from ._args import Args
from ._common import (
    FRONTEND,
    HEAD_NODE,
    Cluster,
    api_ports,
    check_inputs,
    engine_env,
    engine_python,
    extra_flags,
    preset_error,
)
from ._dynamo import Discovery, Engine, Role
from ._infra import etcd_service, nats_service

__all__ = ["dynamo"]


def dynamo(
    *,
    model: str,
    engine: Engine = "vllm",
    served_model_name: str | None = None,
    port: int | None = None,
    env_path: str | None = None,
    prefill: int = 1,
    decode: int = 1,
    replicas: int | None = None,
    tp: int = 1,
    discovery: Discovery = "etcd",
    args: Args = None,
    prefill_args: Args = None,
    decode_args: Args = None,
    frontend_args: Args = None,
    env: Mapping[str, str] | None = None,
    prefill_env: Mapping[str, str] | None = None,
    decode_env: Mapping[str, str] | None = None,
    etcd: str = "etcd",
    nats_server: str = "nats-server",
    cluster: Cluster = None,
    planner: str = "off",
    namespace: str = "dynamo",
    prefill_min: int = 1,
    prefill_max: int = 8,
    decode_min: int = 1,
    decode_max: int = 8,
) -> supervisor.Topology:
    """A Dynamo deployment of ``model`` on ``engine`` (``mocker`` needs no GPU: a tokenizer directory will do).

    ``served_model_name``: what clients send as ``model``; by default the hub id, or the directory's name
    for a local path (Dynamo 1.6's ``/v1/models/<name>/ready`` cannot address a name starting with ``/``).

    ``prefill`` and ``decode`` are worker counts (``prefill=0``: aggregated workers only, named ``decode``;
    ``replicas`` is a synonym for ``decode``), each worker on ``tp`` GPUs (none for the mocker). ``args``
    go to every worker, ``prefill_args``/``decode_args`` to one role, ``frontend_args`` to the frontend;
    ``env`` to every service, ``prefill_env``/``decode_env`` to one role's workers.
    ``discovery="file"`` runs without etcd and NATS (workers and frontend share ``{run_dir}/discovery``).
    ``etcd``/``nats_server``: the programs (default: from PATH, as Debian's packages install them).
    ``cluster``: run on a Slurm allocation (``supervisor.SlurmCluster(nodes=4)``): etcd, NATS and the
    frontend on node 0, the workers round-robin over the nodes (a YAML file says ``cluster:``).
    ``planner="follow"``: a ``planner`` service (``_planner_follow.py``, the engine's Python) carries out the
    scaling decisions that Dynamo's Planner (``environment: virtual``) publishes for ``namespace`` (the
    workers' ``DYN_NAMESPACE``) through the run's own scale, within ``prefill_min``..``prefill_max`` and
    ``decode_min``..``decode_max``, and completes each once the new set is ready. Needs etcd discovery.
    """
    if engine not in _dynamo.ENGINES:
        raise preset_error("dynamo", "engine", f"unknown engine {engine!r}", _dynamo.ENGINES)
    if discovery not in ("etcd", "file"):
        raise preset_error("dynamo", "discovery", f"unknown backend {discovery!r}", ("etcd", "file"))
    if replicas is not None:
        if decode != 1 and decode != replicas:  # decode given too (1 is its default): which one is meant?
            problem = f"replicas={replicas!r} is a synonym for decode, which is {decode!r}: give one of them"
            raise preset_error("dynamo", "replicas", problem)
        decode = replicas
    for var, count, least in (("prefill", prefill, 0), ("decode", decode, 1), ("tp", tp, 1)):
        if isinstance(count, bool) or not isinstance(count, int) or count < least:
            raise preset_error("dynamo", var, f"expected a whole number of at least {least}, got {count!r}")
    check_inputs(
        "dynamo",
        port,
        values={"model": model, "served_model_name": served_model_name},
        args=args,
        prefill_args=prefill_args,
        decode_args=decode_args,
        frontend_args=frontend_args,
    )
    local = _is_local_path(model)
    served = served_model_name or (os.path.basename(os.path.normpath(model)) if local else model)
    if served.startswith("/"):  # Dynamo 1.6 answers 404 for any such name: readiness could never pass
        raise preset_error("dynamo", "served_model_name", f"{served!r}: Dynamo cannot serve a name starting with '/'")
    if engine in ("vllm", "sglang") and any(char.isspace() or char == "," for char in served):
        # dynamo.vllm/dynamo.sglang split --served-model-name on whitespace and commas (name + aliases):
        # the frontend would list only the first part, and its readiness on the whole name never passes
        raise preset_error(
            "dynamo", "served_model_name", f"{served!r}: dynamo.{engine} splits names at spaces and commas; pick one"
        )
    if planner == "run":
        raise preset_error("dynamo", "planner", _NO_PLANNER_RUN)
    if planner not in ("off", "follow"):
        raise preset_error("dynamo", "planner", f"unknown mode {planner!r}", ("off", "follow"))
    if planner != "off" and discovery != "etcd":
        raise preset_error("dynamo", "planner", "the Planner's decisions travel through etcd: use discovery=etcd")
    for var, bound in (("prefill_min", prefill_min), ("prefill_max", prefill_max), ("decode_min", decode_min),
                       ("decode_max", decode_max)):  # fmt: skip
        if isinstance(bound, bool) or not isinstance(bound, int) or bound < 0:
            raise preset_error("dynamo", var, f"expected a whole number of at least 0, got {bound!r}")
    if not isinstance(namespace, str) or not namespace or any(c.isspace() or c in "/{}" for c in namespace):
        raise preset_error("dynamo", "namespace", f"expected a plain name, got {namespace!r}")
    if namespace != "dynamo":  # the workers and frontend register under it; the Planner publishes under it
        env = {"DYN_NAMESPACE": namespace, **(env or {})}
    python = engine_python(env_path)
    infra: list[supervisor.Service] = []
    if discovery == "etcd":
        infra = [etcd_service(etcd), nats_service(nats_server)]
    needs = [supervisor.Dependency(service.name) for service in infra]
    fixed = {"HF_HUB_OFFLINE": "1"} if local else {}  # a local model never makes the hub client go online

    def worker(role: Role, count: int, role_args: Args, own_env: Mapping[str, str] | None) -> supervisor.Service:
        profile = _dynamo.worker_profile(engine)
        ports: list[object] = [supervisor.PortSpec("status", below=_dynamo.STATUS_PORT_LIMIT)]
        if engine == "sglang" and role == "prefill":
            ports.append("bootstrap")
        nixl = _dynamo.nixl_env(engine, role)
        if "VLLM_NIXL_SIDE_CHANNEL_PORT" in nixl:
            ports.append("nixl")
        extra = [*profile.flags(args), *profile.flags(role_args)]
        return profile.service(
            name="prefill" if role == "prefill" else "decode",
            command=[*_dynamo.worker_command(python, engine, role, model, served, tp, extra), *extra],
            ports=ports,
            replicas=count,
            depends_on=needs,
            env=engine_env(
                env_path, {**(env or {}), **(own_env or {})}, **_dynamo.worker_env(discovery), **nixl, **fixed
            ),
            ready=supervisor.HttpCheck("http://{host}:{status}/health"),
            metrics="http://{host}:{status}/metrics",  # the worker's status server
            restart=_dynamo.RESTART_ALWAYS,
            gpus=None if engine == "mocker" else supervisor.GpuRequest(count=tp, vendor=_dynamo.gpu_vendor(engine)),
        )

    workers = [worker("decode" if prefill else "agg", decode, decode_args, decode_env)]
    if prefill:
        workers.insert(0, worker("prefill", prefill, prefill_args, prefill_env))
    frontend = _dynamo.FRONTEND_PROFILE.service(
        name=FRONTEND,
        command=[
            python,
            "-m",
            "dynamo.frontend",
            "--http-host",
            "{host}",
            "--http-port",
            "{port}",
            *extra_flags(frontend_args),
        ],
        ports=api_ports(port),
        depends_on=needs,
        env=engine_env(env_path, env, **_dynamo.discovery_env(discovery), **_dynamo.LOOPBACK_ENV, **fixed),
        ready=_dynamo.frontend_ready(served),
        api={**_dynamo.FRONTEND_PROFILE.api, "model_ready": _dynamo.frontend_ready_path(served)},
        metrics="http://{host}:{port}/metrics",
        restart=_dynamo.RESTART_ALWAYS,  # a clean exit is a failure: it leaves by itself when etcd is gone
        placement=HEAD_NODE,
    )
    services = [*infra, *workers, frontend]
    if planner == "follow":
        bounds = [f"--prefill-min={prefill_min}", f"--prefill-max={prefill_max}",
                  f"--decode-min={decode_min}", f"--decode-max={decode_max}"]  # fmt: skip
        services.append(
            supervisor.Service(
                name="planner",
                command=[
                    python,
                    "-I",
                    _FOLLOWER,
                    "--socket",
                    "{run_dir}/control.sock",
                    "--namespace",
                    namespace,
                    *bounds,
                    *([] if prefill else ["--no-prefill"]),
                ],
                depends_on=needs,
                env=engine_env(env_path, env, **_dynamo.discovery_env(discovery), **_dynamo.LOOPBACK_ENV, **fixed),
                ready=supervisor.LogCheck("planner-follow: following the Planner's decisions"),
                stop=supervisor.StopPolicy("SIGINT", grace_seconds=5),
                restart=supervisor.RestartPolicy(policy="on-failure"),
                placement=HEAD_NODE,
            )
        )
    return supervisor.Topology(name=f"dynamo-{engine}", services=services, cluster=cluster)


#: why ``planner=run`` is refused: measured with Dynamo 1.6.1 as ``.ci/install-engines`` installs it
_NO_PLANNER_RUN = (
    "run is not supported: Dynamo 1.6.1's Planner (python -m dynamo.planner) fails at import where it was "
    "tried: it needs aisimulate_core (ai-dynamo's aisimulate==0.13.0, whose PyPI release only fetches its "
    "wheel from pypi.nvidia.com, out of this project's CI's reach) and scikit-learn (not declared by "
    "ai-dynamo); start the Planner yourself (environment: virtual, this run's namespace) beside planner=follow"
)

#: the follower program, run by the engine's Python with -I (its folder, holding dynamo.py, off sys.path)
_FOLLOWER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_planner_follow.py")


def _is_local_path(model: str) -> bool:
    """A directory (``/models/x``, ``./x``, ``~/x``) rather than a hub id (``Qwen/Qwen3-0.6B``)."""
    return model.startswith(("/", "./", "../", "~")) or os.path.isabs(model)
