"""AMD GPUs through ``amdsmi`` (AMD SMI's Python library, shipped with ROCm): the same narrow protocol as NVML.

Imported only when a topology asks for GPUs on a node that has AMD GPUs and no NVIDIA ones (``gpu_visible``
chooses). Indices are HIP's: ``amdsmi_get_gpu_enumeration_info``'s ``hip_id`` where the library has it
(ROCm 6.4+), else amdsmi's own order, which follows the KFD topology as HIP does. Replicas are given their
GPUs as ``HIP_VISIBLE_DEVICES`` of those indices. XGMI (Infinity Fabric) links are what NVLink is to
NVIDIA GPUs: a replica of several GPUs prefers a set all joined by XGMI. A GPU in a partition mode other
than SPX/NPS1 shows HIP its partitions as GPUs of their own (``CPX``: one per XCD): like a GPU in MIG mode it
is never handed out whole.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

from .gpu_inventory import AMD, PLAN_ANYWAY_HINT, GpuDevice, GpuProcess, GpuUnavailable

__all__ = ["AmdSmiInventory"]

NO_AMDSMI_HINT = f"install ROCm's amdsmi Python package (/opt/rocm/share/amd_smi) / {PLAN_ANYWAY_HINT}"
_XGMI = 2  #: ``AmdSmiIoLinkType.XGMI`` (``AMDSMI_IOLINK_TYPE_XGMI``) where the enum is missing
_WHOLE = frozenset({"", "SPX", "NPS1", "N/A", "UNKNOWN"})  #: partition modes that leave the GPU whole


class AmdSmiInventory:
    """The real node, through amdsmi. ``open()`` initialises it once (per process) or raises
    ``GpuUnavailable`` saying why; every read after that queries the driver again."""

    description = "amdsmi"
    vendor = AMD

    def __init__(self, smi: Any) -> None:
        self._smi = smi
        handles = list(smi.amdsmi_get_processor_handles())
        self._handles: dict[int, Any] = {}
        for position, handle in enumerate(handles):
            self._handles[self._hip_index(handle, position)] = handle

    def _hip_index(self, handle: Any, position: int) -> int:
        with contextlib.suppress(Exception):  # older amdsmi: no enumeration info; its order is HIP's
            hip_id = self._smi.amdsmi_get_gpu_enumeration_info(handle).get("hip_id")
            if isinstance(hip_id, int) and hip_id >= 0:
                return hip_id
        return position

    @classmethod
    def open(cls, importer: Callable[[], Any] | None = None) -> AmdSmiInventory:
        try:
            smi = importer() if importer is not None else _import_amdsmi()
        except ImportError as exc:
            raise GpuUnavailable(
                f"amdsmi is not available: ROCm's amdsmi Python package is not installed ({exc})", hint=NO_AMDSMI_HINT
            ) from None
        global _opened
        if _opened is not None and _opened[0] is smi:  # one amdsmi_init per process, not one per plan
            return _opened[1]
        try:
            smi.amdsmi_init()
        except Exception as exc:  # AmdSmiLibraryException: no driver (amdgpu not loaded), no permission
            raise GpuUnavailable(f"amdsmi is not available: {exc or type(exc).__name__}") from None
        try:
            inventory = cls(smi)
        except Exception as exc:
            with contextlib.suppress(Exception):  # pairs the amdsmi_init above
                smi.amdsmi_shut_down()
            raise GpuUnavailable(f"amdsmi is not available: {exc or type(exc).__name__}") from None
        _opened = (smi, inventory)
        return inventory

    def devices(self) -> Sequence[GpuDevice]:
        smi = self._smi
        vram = smi.AmdSmiMemoryType.VRAM
        found = []
        for index, handle in sorted(self._handles.items()):
            found.append(
                GpuDevice(
                    index=index,
                    uuid=str(smi.amdsmi_get_gpu_device_uuid(handle)),
                    name=str(smi.amdsmi_get_gpu_asic_info(handle).get("market_name") or "AMD GPU"),
                    pci_bus_id=str(smi.amdsmi_get_gpu_device_bdf(handle)),
                    memory_total_bytes=int(smi.amdsmi_get_gpu_memory_total(handle, vram)),
                    memory_used_bytes=int(smi.amdsmi_get_gpu_memory_usage(handle, vram)),
                    partition=self._partition(handle),
                )
            )
        return found

    def _partition(self, handle: Any) -> str:
        """``CPX``, ``SPX/NPS4``...; empty for a whole GPU, or where partitions are not supported."""
        modes = []
        for query in ("amdsmi_get_gpu_compute_partition", "amdsmi_get_gpu_memory_partition"):
            with contextlib.suppress(Exception):  # not supported on this GPU or driver: whole
                modes.append(str(getattr(self._smi, query)(handle)).strip().upper())
        return "" if all(mode in _WHOLE for mode in modes) else "/".join(m for m in modes if m)

    def processes(self) -> Sequence[GpuProcess]:
        found: dict[tuple[int, int], GpuProcess] = {}
        for index, handle in self._handles.items():
            for info in self._running(handle):
                pid = int(info.get("pid", 0))
                if pid > 0:
                    found.setdefault((index, pid), GpuProcess(index, pid, _vram_of(info)))
        return list(found.values())

    def _running(self, handle: Any) -> list[dict[str, Any]]:
        """ROCm 6.1+ lists dicts; older amdsmi lists process handles, read with ``amdsmi_get_gpu_process_info``.
        Not supported (or not allowed) on this device: nothing to list."""
        try:
            listed = list(self._smi.amdsmi_get_gpu_process_list(handle))
        except Exception:
            return []
        infos = []
        for item in listed:
            if isinstance(item, dict):
                infos.append(item)
                continue
            with contextlib.suppress(Exception):
                infos.append(dict(self._smi.amdsmi_get_gpu_process_info(handle, item)))
        return infos

    def nvlink_peers(self, index: int) -> frozenset[int]:
        """The GPUs that ``index`` reaches over XGMI (one hop: the OAM boards' all-to-all links)."""
        smi = self._smi
        xgmi = getattr(getattr(smi, "AmdSmiIoLinkType", None), "XGMI", _XGMI)
        peers = set()
        mine = self._handles.get(index)
        for other, handle in self._handles.items():
            if other == index or mine is None:
                continue
            with contextlib.suppress(Exception):  # no link information: not a peer
                link = smi.amdsmi_topo_get_link_type(mine, handle)
                if int(link["type"]) == int(xgmi):
                    peers.add(other)
        return frozenset(peers)


_opened: tuple[Any, AmdSmiInventory] | None = None  #: amdsmi initialised once per process, kept open


def _import_amdsmi() -> Any:
    import amdsmi  # ROCm's package has no type hints (see [[tool.mypy.overrides]])

    return amdsmi


def _vram_of(info: dict[str, Any]) -> int | None:
    """VRAM held by one process: ``memory_usage.vram_mem`` (bytes), None where the driver does not tell."""
    usage = info.get("memory_usage")
    value = usage.get("vram_mem") if isinstance(usage, dict) else None
    return int(value) if isinstance(value, int) and value >= 0 else None
