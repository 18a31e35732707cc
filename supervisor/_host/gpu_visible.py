"""The GPUs this supervisor was given: ``CUDA_VISIBLE_DEVICES`` of its own environment, read as CUDA reads it.

NVML lists every GPU of the node whatever that variable says, with its own indices. A supervisor started
inside a Slurm job step, a container or a shell on a shared box where the user was given GPUs 4-7 must plan
on those GPUs only, or its replicas would land on somebody else's. Indices in the variable are read in PCI
bus order (NVML's order, and CUDA's under ``CUDA_DEVICE_ORDER=PCI_BUS_ID``, which Slurm's numbering also
follows); ``GPU-<uuid>`` entries (a unique prefix is enough, as for CUDA) name a GPU by its UUID. As in
CUDA, the list ends at the first entry that names no GPU (``-1`` hides them all; so does an empty value);
``MIG-<uuid>`` entries name MIG instances, which this planner does not hand out, so they end it too.
Replicas still get NVML indices with ``CUDA_DEVICE_ORDER=PCI_BUS_ID``, which replaces the inherited value.

On AMD GPUs (``choose_vendor``) the supervisor's own ``ROCR_VISIBLE_DEVICES`` and then ``HIP_VISIBLE_DEVICES``
(or its alias ``CUDA_VISIBLE_DEVICES``) say which GPUs it was given, as ROCm applies them; replicas get
``HIP_VISIBLE_DEVICES`` of global indices and neither of the others (``replica_gpu_env``).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping, Sequence

import attrs

from .._errors import ConfigError
from .gpu_inventory import (
    AMD,
    NVIDIA,
    GpuDevice,
    GpuInventory,
    GpuProcess,
    NvmlInventory,
    SimulatedInventory,
    gpu_vendor,
)

__all__ = ["VisibleInventory", "choose_vendor", "open_inventory", "replica_gpu_env", "visible_indices"]

VISIBLE_ENV = "CUDA_VISIBLE_DEVICES"
HIP_ENV = "HIP_VISIBLE_DEVICES"
ROCR_ENV = "ROCR_VISIBLE_DEVICES"
VENDOR_ENV = "TOPOVISOR_GPU_VENDOR"  #: ``nvidia`` or ``amd``: whose GPUs a node with both is planned on
NVIDIA_DEVICES = ("/dev/nvidiactl", "/proc/driver/nvidia")  #: there when the NVIDIA driver is loaded
AMD_DEVICE = "/dev/kfd"  #: ROCm's compute device: there when the amdgpu driver serves AMD GPUs


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
    """An inventory seen through the visibility variables of the supervisor's environment: only the GPUs
    they name, NVLink (XGMI) among them. ``settings`` apply in order, each to the GPUs the one before left
    (ROCm: ``ROCR_VISIBLE_DEVICES``, then ``HIP_VISIBLE_DEVICES`` by position in its list).

    Processes are listed on every GPU: the release wait and the holders of a GPU need them all."""

    inner: GpuInventory
    settings: tuple[tuple[str, str], ...]  #: (variable, value), in the order the runtime applies them

    @property
    def description(self) -> str:
        return f"{self.inner.description} ({', '.join(f'{name}={value}' for name, value in self.settings)})"

    @property
    def vendor(self) -> str:
        return gpu_vendor(self.inner)

    def driver_version(self) -> str | None:
        """The inner inventory's (an optional method: a simulated node has no driver)."""
        read = getattr(self.inner, "driver_version", None)
        return read() if callable(read) else None

    @functools.cached_property
    def _allowed(self) -> frozenset[int]:
        """Read once: indices and UUIDs do not change while we run (planning asks for every GPU's peers)."""
        current = sorted(self.inner.devices(), key=lambda d: d.index)
        for position, (_, value) in enumerate(self.settings):
            # the first variable names the inventory's indices; the next ones, positions in what is left
            seen = current if position == 0 else [attrs.evolve(d, index=i) for i, d in enumerate(current)]
            by_index = {shown.index: device for shown, device in zip(seen, current, strict=True)}
            current = [by_index[index] for index in visible_indices(value, seen)]
        return frozenset(d.index for d in current)

    def devices(self) -> Sequence[GpuDevice]:
        return [d for d in self.inner.devices() if d.index in self._allowed]

    def processes(self) -> Sequence[GpuProcess]:
        return self.inner.processes()

    def nvlink_peers(self, index: int) -> frozenset[int]:
        return self.inner.nvlink_peers(index) & self._allowed


def choose_vendor(environ: Mapping[str, str], exists: Callable[[str], bool] = os.path.exists) -> str:
    """Whose library reads this node: ``TOPOVISOR_GPU_VENDOR`` (``nvidia`` or ``amd``) when set; else AMD on a
    node with AMD GPUs (``/dev/kfd``) and no NVIDIA driver, NVIDIA otherwise (also on a node with both)."""
    chosen = environ.get(VENDOR_ENV, "").strip().lower()
    if chosen in (NVIDIA, AMD):
        return chosen
    if chosen:
        raise ConfigError(f"{VENDOR_ENV}={chosen!r}: expected {NVIDIA} or {AMD}")
    nvidia = any(exists(path) for path in NVIDIA_DEVICES)
    return AMD if exists(AMD_DEVICE) and not nvidia else NVIDIA


def open_inventory(gpus: GpuInventory | str | None, environ: Mapping[str, str] | None = None) -> GpuInventory:
    """The inventory to plan against: the one given, a simulated node (``"8x80GB"``, ``"8xMI300X"``), or the
    node's own (NVML or amdsmi, ``choose_vendor``), seen through the visibility variables of ``environ``
    (this process's) when they are set: the GPUs we were given."""
    if isinstance(gpus, str):
        return SimulatedInventory.parse(gpus)
    if gpus is not None:
        return gpus
    env = os.environ if environ is None else environ
    inner: GpuInventory
    if choose_vendor(env) == AMD:
        from .gpu_amdsmi import AmdSmiInventory

        inner = AmdSmiInventory.open()
        device_env = HIP_ENV if HIP_ENV in env else VISIBLE_ENV  # HIP takes CUDA_VISIBLE_DEVICES as its alias
        names: tuple[str, ...] = (ROCR_ENV, device_env)
    else:
        inner = NvmlInventory.open()
        names = (VISIBLE_ENV,)
    settings = tuple((name, env[name]) for name in names if name in env)
    return VisibleInventory(inner, settings) if settings else inner


def replica_gpu_env(vendor: str, gpus: Sequence[int], own: Mapping[str, str]) -> tuple[dict[str, str], tuple[str, ...]]:
    """What a replica's environment gets for its GPUs, and which inherited variables it must not keep.

    NVIDIA: ``CUDA_VISIBLE_DEVICES`` (replacing an inherited one) and ``CUDA_DEVICE_ORDER=PCI_BUS_ID``.
    AMD: ``HIP_VISIBLE_DEVICES`` of the global indices, which vLLM and SGLang on ROCm read. HIP also reads
    ``CUDA_VISIBLE_DEVICES`` (an alias; vLLM copies HIP's value into it and refuses one that differs) and
    ``ROCR_VISIBLE_DEVICES`` (applied first, so that HIP's indices count within its list): inherited, either
    would disagree with ours, so the replica does not get them. A service whose ``env:`` (``own``) sets any
    of these maps its devices itself: it gets none of ours, and keeps what it inherits."""
    if not gpus:
        return {}, ()
    listed = ",".join(map(str, gpus))
    if vendor != AMD:
        return {VISIBLE_ENV: listed, "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}, ()
    if any(name in own for name in (HIP_ENV, ROCR_ENV, VISIBLE_ENV)):
        return {}, ()
    return {HIP_ENV: listed}, (VISIBLE_ENV, ROCR_ENV)
