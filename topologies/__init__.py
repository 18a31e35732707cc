"""Presets for real LLM servers: typed builders returning ``supervisor.Topology``, and YAML twins.

``topologies.dynamo(engine="vllm", model="Qwen/Qwen3-0.6B", prefill=2, decode=2, tp=1)`` and
``supervisor run topologies/dynamo.yaml --set engine=vllm --set model=...`` build the same topology.
Builders import lazily: ``import topologies`` costs nothing until one is used.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # each preset adds its builder here as it lands
    from .dynamo import dynamo as dynamo
    from .llamacpp import llamacpp as llamacpp
    from .sglang import sglang as sglang
    from .trtllm import trtllm as trtllm
    from .vllm import vllm as vllm

#: preset name -> the module holding its builder (a function of the same name)
PRESETS = {name: f"topologies.{name}" for name in ("dynamo", "llamacpp", "sglang", "trtllm", "vllm")}

__all__ = ["PRESETS", "builder", "dynamo", "llamacpp", "sglang", "trtllm", "vllm"]


def builder(name: str) -> Callable[..., Any]:
    """The builder of preset ``name``; ``KeyError`` for an unknown one."""
    module = importlib.import_module(PRESETS[name])
    found: Callable[..., Any] = getattr(module, name)
    return found


def __getattr__(name: str) -> Any:
    if name in PRESETS:
        return builder(name)
    raise AttributeError(f"module 'topologies' has no attribute {name!r}")
