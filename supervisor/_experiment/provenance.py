"""Where a trial's figures were measured, as columns of its row: the engine's version (read from the package
metadata of the env the preset's ``env_path`` put first on PATH), and the model and driver of the GPUs the
trial's replicas were given (empty without GPUs). Read at each trial, so a sweep resumed on another node
records that node."""

from __future__ import annotations

import contextlib
import importlib.metadata
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .._host.gpu_inventory import GpuInventory
    from .._plan.plan import Plan

__all__ = ["ENGINE_DISTRIBUTIONS", "engine_versions", "gpu_columns", "trial_provenance"]

#: the distributions that are an engine, as pip names them; an env may hold several (Dynamo and vLLM)
ENGINE_DISTRIBUTIONS = ("ai-dynamo", "vllm", "sglang", "tensorrt-llm")
_ENGINES = frozenset(ENGINE_DISTRIBUTIONS)


def trial_provenance(plan: Plan, inventory: Callable[[], GpuInventory] | None = None) -> dict[str, Any]:
    """``engine_version``, ``gpu_model``, ``gpu_driver`` for the trial planned as ``plan``."""
    envs = sorted({r.env["VIRTUAL_ENV"] for s in plan.services for r in s.replicas if "VIRTUAL_ENV" in r.env})
    gpus = sorted({g for s in plan.services for r in s.replicas for g in r.gpus})
    return {"engine_version": engine_versions(Path(e) for e in envs), **gpu_columns(gpus, inventory)}


def engine_versions(envs: Iterable[Path]) -> str | None:
    """``ai-dynamo==1.6.1`` (several joined by spaces) from the envs' site-packages; None when none holds one."""
    found: dict[str, str] = {}
    for env in envs:
        paths = [str(p) for p in sorted(env.glob("lib/python*/site-packages"))]
        for dist in importlib.metadata.distributions(path=paths):
            name = dist.metadata["Name"]
            if name and name.lower().replace("_", "-") in _ENGINES:
                found.setdefault(name, dist.version)
    return " ".join(f"{name}=={version}" for name, version in sorted(found.items())) or None


def gpu_columns(gpus: Iterable[int], inventory: Callable[[], GpuInventory] | None = None) -> dict[str, str | None]:
    """``gpu_model`` (the given GPUs' names, each once) and ``gpu_driver``; both None without GPUs, or when
    the inventory cannot be read."""
    wanted = set(gpus)
    none: dict[str, str | None] = {"gpu_model": None, "gpu_driver": None}
    if not wanted:
        return none
    from .._errors import ConfigError
    from .._host.gpu_visible import open_inventory

    with contextlib.suppress(ConfigError):  # GpuUnavailable: the plan was made against a simulated node
        node = inventory() if inventory is not None else open_inventory(None)
        names = sorted({d.name for d in node.devices() if d.index in wanted})
        read = getattr(node, "driver_version", None)
        return {"gpu_model": ", ".join(names) or None, "gpu_driver": read() if callable(read) else None}
    return none
