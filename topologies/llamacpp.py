"""``llamacpp``: llama.cpp's ``llama-server`` serving a GGUF file, one or more replicas.

    topo = topologies.llamacpp(model="/models/qwen3-0.6b-q8_0.gguf", replicas=2)
    supervisor run topologies/llamacpp.yaml --set model=/models/qwen3-0.6b-q8_0.gguf

The servers are the service ``frontend`` itself (a single-server preset has no router in front). With
``replicas > 1`` it is one service of N replicas, each its own process and port: ``{frontend.url}`` is the
first, ``{frontend.urls}`` all of them, comma-separated (``TOPOVISOR_FRONTEND_URLS`` for a ``-- CMD``),
so a client or benchmark spreads its requests over them; no load balancer is added.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import supervisor

from . import _llamacpp
from ._args import Args
from ._common import FRONTEND, Cluster, api_ports, check_inputs, engine_env, engine_program, preset_error

__all__ = ["llamacpp"]


def llamacpp(
    *,
    model: str,
    served_model_name: str | None = None,
    port: int | None = None,
    env_path: str | None = None,
    replicas: int = 1,
    tp: int = 0,
    llama_server: str = "llama-server",
    args: Args = None,
    env: Mapping[str, str] | None = None,
    cluster: Cluster = None,
) -> supervisor.Topology:
    """``llama_server`` (a program on PATH, in ``env_path``'s ``bin/``, or a path) serving the GGUF ``model``.

    ``tp``: GPUs per replica; 0 (the default) asks for none: llama.cpp runs on the CPU, or offloads to
    whatever device it finds. ``served_model_name`` (default: the file's name without ``.gguf``) is the
    ``model`` clients send. ``port`` fixes the API port (only with one replica). ``args``: extra flags.
    """
    for var, count, least in (("replicas", replicas, 1), ("tp", tp, 0)):
        if isinstance(count, bool) or not isinstance(count, int) or count < least:
            raise preset_error("llamacpp", var, f"expected a whole number of at least {least}, got {count!r}")
    check_inputs("llamacpp", port, values={"model": model, "served_model_name": served_model_name}, args=args)
    if port is not None and replicas > 1:
        raise preset_error("llamacpp", "port", f"a fixed port cannot be shared by {replicas} replicas; leave it unset")
    served = served_model_name or os.path.basename(model).removesuffix(".gguf")
    profile = _llamacpp.PROFILE
    server = profile.service(
        name=FRONTEND,
        command=[
            *_llamacpp.server_command(engine_program(env_path, llama_server), model, served),
            *profile.flags(args),
        ],
        ports=api_ports(port),
        replicas=replicas,
        env=engine_env(env_path, env),
        ready=_llamacpp.READY,
        restart=supervisor.RestartPolicy(policy="always"),  # a server that exits, even cleanly, is restarted
        gpus=tp or None,
        metrics="http://{host}:{port}/metrics",
    )
    return supervisor.Topology(name="llamacpp", services=[server], cluster=cluster)
