"""Presets for real LLM servers: typed builders returning ``supervisor.Topology``, and YAML twins.

``topologies.dynamo(engine="vllm", model="Qwen/Qwen3-0.6B", prefill=2, decode=2, tp=1)`` and
``supervisor run topologies/dynamo.yaml --set engine=vllm --set model=...`` build the same topology.
Every preset's client-facing service is ``frontend``; the common vars are in ``topologies/_common.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# The builders are bound here after their modules: ``topologies.vllm`` is the function even once
# ``topologies.vllm`` the module has been imported (the import system binds a submodule only on first load).
from .dynamo import dynamo
from .llamacpp import llamacpp
from .sglang import sglang
from .trtllm import trtllm
from .vajra import vajra
from .vllm import vllm

#: preset name -> its builder (``preset: NAME`` in a YAML file)
PRESETS: dict[str, Callable[..., Any]] = {
    "dynamo": dynamo,
    "llamacpp": llamacpp,
    "sglang": sglang,
    "trtllm": trtllm,
    "vajra": vajra,
    "vllm": vllm,
}

__all__ = ["PRESETS", "builder", "dynamo", "llamacpp", "sglang", "trtllm", "vajra", "vllm"]


def builder(name: str) -> Callable[..., Any]:
    """The builder of preset ``name``; ``KeyError`` for an unknown one."""
    return PRESETS[name]
