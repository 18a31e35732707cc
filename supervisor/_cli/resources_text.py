"""A replica's resources as table cells (CPU, MEM, GPU MEM): one wording for ``supervisor status`` and the
live table, from the JSON ``status`` answers (``ResourceUsage.to_json``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._units import format_size

__all__ = ["RESOURCE_HEADERS", "resource_cells"]

RESOURCE_HEADERS = ("CPU", "MEM", "GPU MEM")


def resource_cells(resources: Mapping[str, Any] | None) -> list[str]:
    """``["93%", "1.2 GiB", "71.0 GiB"]``; ``-`` where not sampled yet (or no GPU inventory)."""
    if not isinstance(resources, Mapping):
        return ["-", "-", "-"]
    percent, memory = resources.get("cpu_percent"), resources.get("memory_bytes")
    gpu = resources.get("gpu_memory_bytes")
    return [
        f"{percent:.0f}%" if isinstance(percent, (int, float)) else "-",
        format_size(memory) if isinstance(memory, int) else "-",
        format_size(gpu) if isinstance(gpu, int) else "-",
    ]
