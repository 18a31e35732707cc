"""The GPUs this supervisor was given: ``CUDA_VISIBLE_DEVICES`` of its own environment, read as CUDA reads it.

NVML lists every GPU of the node whatever that variable says, with its own indices. A supervisor started
inside a Slurm job step, a container or a shell on a shared box where the user was given GPUs 4-7 must plan
on those GPUs only, or its replicas would land on somebody else's. Indices in the variable are read in PCI
bus order (NVML's order, and CUDA's under ``CUDA_DEVICE_ORDER=PCI_BUS_ID``, which Slurm's numbering also
follows); ``GPU-<uuid>`` entries (a unique prefix is enough, as for CUDA) name a GPU by its UUID. As in
CUDA, the list ends at the first entry that names no GPU (``-1`` hides them all; so does an empty value);
``MIG-<uuid>`` entries name MIG instances, which this planner does not hand out, so they end it too.
Replicas still get NVML indices with ``CUDA_DEVICE_ORDER=PCI_BUS_ID``, which replaces the inherited value.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence

import attrs

from .gpu_inventory import GpuDevice, GpuInventory, GpuProcess, NvmlInventory, SimulatedInventory

__all__ = ["VisibleInventory", "open_inventory", "visible_indices"]

VISIBLE_ENV = "CUDA_VISIBLE_DEVICES"


def visible_indices(value: str, devices: Sequence[GpuDevice]) -> tuple[int, ...]:
    """The NVML indices that ``CUDA_VISIBLE_DEVICES=value`` makes visible, in the variable's order."""
    by_index = {d.index: d for d in devices}
    found: list[int] = []
    for raw in value.split(","):
        entry = raw.strip()
        index: int | None = None
        if entry.lstrip("+-").isdigit():
            number = int(entry)
            index = number if number in by_index else None
        elif entry.upper().startswith("GPU-") and len(entry) > len("GPU-"):
            named = [d.index for d in devices if d.uuid.upper().startswith(entry.upper())]
            index = named[0] if len(named) == 1 else None
        if index is None or index in found:  # CUDA: the list ends at the first entry naming no (new) GPU
            break
        found.append(index)
    return tuple(found)


@attrs.frozen
class VisibleInventory:
    """An inventory seen through ``CUDA_VISIBLE_DEVICES``: only the GPUs it names, NVLink among them.

    Processes are listed on every GPU: the release wait and the holders of a GPU need them all."""

    inner: GpuInventory
    visible: str  #: the variable's value, for messages

    @property
    def description(self) -> str:
        return f"{self.inner.description} ({VISIBLE_ENV}={self.visible})"

    @functools.cached_property
    def _allowed(self) -> frozenset[int]:
        """Read once: indices and UUIDs do not change while we run (planning asks for every GPU's peers)."""
        return frozenset(visible_indices(self.visible, self.inner.devices()))

    def devices(self) -> Sequence[GpuDevice]:
        return [d for d in self.inner.devices() if d.index in self._allowed]

    def processes(self) -> Sequence[GpuProcess]:
        return self.inner.processes()

    def nvlink_peers(self, index: int) -> frozenset[int]:
        return self.inner.nvlink_peers(index) & self._allowed


def open_inventory(gpus: GpuInventory | str | None, environ: Mapping[str, str] | None = None) -> GpuInventory:
    """The inventory to plan against: the one given, a simulated node (``"8x80GB"``), or NVML, seen through
    ``CUDA_VISIBLE_DEVICES`` of ``environ`` (this process's) when that is set: the GPUs we were given."""
    if isinstance(gpus, str):
        return SimulatedInventory.parse(gpus)
    if gpus is not None:
        return gpus
    nvml = NvmlInventory.open()
    visible = (os.environ if environ is None else environ).get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return nvml
    return VisibleInventory(nvml, visible)
