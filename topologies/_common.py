"""What every preset shares: the common vars, where an engine's programs come from, and loopback-only env.

The contract (so a benchmark can swap engines without touching its client): every preset is a builder
returning ``supervisor.Topology`` whose client-facing service is named ``frontend``, taking the common
keyword arguments ``model``, ``served_model_name``, ``port``, ``env_path``, ``replicas``, ``tp``, ``args``,
``env`` and ``cluster`` (engine-specific ones beside them). Each engine's knowledge sits in an ``EngineProfile``.

Every address is a template: servers listen on ``{host}`` and clients call ``{svc.url}`` / ``{svc.host}``,
which are 127.0.0.1 on one machine and the node's address on a cluster, so one topology runs on both.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import attrs

import supervisor

from ._args import Args, ListStyle, engine_flags

__all__ = [
    "FRONTEND",
    "HEAD_NODE",
    "ON_SUPERVISOR",
    "OPENAI_API",
    "Cluster",
    "EngineProfile",
    "api_ports",
    "check_inputs",
    "engine_env",
    "engine_program",
    "engine_python",
    "extra_flags",
    "literal",
    "model_arg",
    "preset_error",
]

FRONTEND = "frontend"  #: the service clients talk to, in every preset

#: a builder's ``cluster=``: a Slurm allocation to run on (``supervisor.SlurmCluster(nodes=4)``), or None
Cluster = supervisor.Cluster | supervisor.SlurmCluster | None
#: on a cluster, the services every other one calls (etcd, NATS, a router or proxy in front) share node 0
#: of the allocation, the head node; the engines spread round-robin. On one machine it changes nothing.
HEAD_NODE = supervisor.Placement(node=0)
#: on a cluster, a job that only writes files into the run directory runs beside the supervisor
ON_SUPERVISOR = supervisor.Placement(local=True)
#: the OpenAI-compatible routes every engine's server here answers, as ``api`` names them
OPENAI_API = {"models": "/v1/models", "chat_completions": "/v1/chat/completions", "completions": "/v1/completions"}


@attrs.frozen
class EngineProfile:
    """One engine's behaviour, shared by its YAML preset and its Python builder."""

    name: str
    stop: supervisor.StopPolicy  #: signal and grace: model servers drain requests and free GPU memory
    fatal: tuple[str, ...] = ()  #: output that means a restart cannot help (beyond the built-in ones)
    phases: tuple[supervisor.Phase, ...] = ()  #: startup phases, in the order the engine logs them
    list_style: ListStyle = "spread"  #: how list-valued ``args`` become flags
    #: the server's routes (``Service.api``): health, models, chat completions... and its own
    api: Mapping[str, str] = attrs.field(factory=dict)

    def service(self, **fields: object) -> supervisor.Service:
        """A ``Service`` running this engine, with its stop policy, fatal patterns, phases and routes."""
        fields.setdefault("api", self.api)
        fields.setdefault("stop", self.stop)
        fields.setdefault("fatal", self.fatal)
        fields.setdefault("phases", self.phases)
        return supervisor.Service(**fields)  # type: ignore[arg-type]

    def flags(self, args: Args) -> list[str]:
        return extra_flags(args, self.list_style)


def extra_flags(args: Args, lists: ListStyle = "spread") -> list[str]:
    try:
        return engine_flags(args, lists=lists)
    except TypeError as exc:
        raise supervisor.ConfigError(str(exc)) from None


def literal(text: str) -> str:
    """A user's value (a path, a model name) as a template that means itself: ``{`` and ``}`` doubled."""
    return text.replace("{", "{{").replace("}", "}}")


def model_arg(model: str) -> str:
    """``model`` for an engine's command line: ``~`` expanded (no shell does it), braces kept literal."""
    return literal(_home(model) if model.startswith("~") else model)


def _home(path: str) -> str:
    """``~`` expanded; a path with a NUL byte is kept as written (``expanduser`` raises ValueError on
    ``~user\\0``), so the plan refuses it with its ConfigError naming the field."""
    return path if "\0" in path else os.path.expanduser(path)


def engine_program(env_path: str | None, program: str) -> str:
    """``program`` from the engine's env when one is given (``<env>/bin/program``), else from PATH."""
    if env_path is None or os.sep in program:
        return literal(program)
    return literal(os.path.join(_home(env_path), "bin", program))


def engine_python(env_path: str | None) -> str:
    """The interpreter that runs a Python engine: the env's own, else the one running the supervisor."""
    return "{python}" if env_path is None else engine_program(env_path, "python")


def engine_env(env_path: str | None, env: Mapping[str, str] | None, **fixed: str) -> dict[str, str]:
    """The env's ``bin/`` first on PATH (as ``activate`` does), ``fixed`` settings, then the user's ``env``."""
    result: dict[str, str] = {}
    if env_path is not None:
        root = _home(env_path)
        search = os.pathsep.join([os.path.join(root, "bin"), os.environ.get("PATH", os.defpath)])
        result["PATH"], result["VIRTUAL_ENV"] = literal(search), literal(root)
    result.update(fixed)
    result.update(env or {})
    return result


def api_ports(port: int | None, *others: str) -> list[object]:
    """The API port first (so ``{port}`` and ``{svc.url}`` mean it): fixed when given, else a free one."""
    first: object = "port" if port is None else {"port": port}
    return [first, *others]


def check_inputs(preset: str, port: object, *, values: Mapping[str, str | None] | None = None, **args: Args) -> None:
    """The API ``port`` (unset, or 1-65535), each ``values`` var that lands in the engine's argv as a
    positional or a flag's value (``model``, ``served_model_name``...), and each ``args``-like var, checked
    before anything is built, so a bad one is an error naming the preset and the var rather than a service
    field (or, worse, an engine that reads ``--model -x`` as two flags)."""
    if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535):
        raise preset_error(preset, "port", f"expected a port number 1-65535 (or unset for a free one), got {port!r}")
    for var, text in (values or {}).items():
        if text is not None and (not text.strip() or text.startswith("-")):
            raise preset_error(
                preset,
                var,
                f"{text!r} is no {var}: it is empty or starts with '-' (the engine would take it for a flag)",
            )
    for var, value in args.items():
        try:
            engine_flags(value)
        except TypeError as exc:
            raise preset_error(preset, var, str(exc).removeprefix("args: ")) from None


def preset_error(preset: str, var: str, problem: str, known: Sequence[str] = ()) -> supervisor.ConfigError:
    hint = f" (one of: {', '.join(known)})" if known else ""
    return supervisor.ConfigError(f"preset '{preset}', var '{var}': {problem}{hint}")
